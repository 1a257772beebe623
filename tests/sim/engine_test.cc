// The simulator's arithmetic on scenes small enough to work out by hand, and its invariants on
// the full Philly trace.
#include <gtest/gtest.h>

#include "adapters/fleet_loader.h"
#include "sim/engine.h"
#include "state/journal.h"
#include "wire/codec.h"

#include <fmt/format.h>
#include <map>
#include <nlohmann/json.hpp>
#include "sim_fixtures.h"

namespace gp {
namespace {

using testing::Job;
using testing::P;

TEST(SplitGangTest, Table) {
  const struct {
    int gpus, max, tasks, per;
  } cases[] = {{1, 8, 1, 1}, {8, 8, 1, 8}, {16, 8, 2, 8}, {128, 8, 16, 8}, {12, 8, 2, 6}, {11, 8, 11, 1}, {4, 0, 1, 4}};
  for (const auto& c : cases) {
    EXPECT_EQ(SplitGang(c.gpus, c.max), std::make_pair(c.tasks, c.per)) << c.gpus << " on " << c.max;
  }
}

// One node of 4 GPUs. A (t=0, 2 GPUs, 100 s) starts at once. B (t=0, 4 GPUs, 50 s) waits for A:
// it starts at 100 and ends at 150.
//   JCT: A 100, B 150 -> average 125, median 100 (nearest rank), p99 150.
//   Queueing: A 0, B 100 -> average 50. Makespan 150.
//   Busy GPU-time: 2 x 100 + 4 x 50 = 400 of 4 x 150 = 600 -> utilisation 0.6667.
//   Free GPU-time: 2 GPUs x 100 s, all of it while B waited -> fragmentation 1.0.
//   Cost at the V100 list price $0.90/GPU-h: 400 GPU-s = 0.1111 GPU-h -> $0.10.
TEST(EngineTest, HandWorkedScene) {
  const Fleet fleet = *ParseFleetShorthand("1x4xV100");
  const Trace trace{.jobs = {Job("A", 0, 100, 2), Job("B", 0, 50, 4)}};
  auto r = RunSimulation(fleet, trace, P("fifo"), {});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->finished, 2);
  EXPECT_DOUBLE_EQ(r->avg_jct_s, 125);
  EXPECT_DOUBLE_EQ(r->p50_jct_s, 100);
  EXPECT_DOUBLE_EQ(r->p99_jct_s, 150);
  EXPECT_DOUBLE_EQ(r->avg_queue_s, 50);
  EXPECT_DOUBLE_EQ(r->makespan_s, 150);
  EXPECT_NEAR(r->gpu_utilization, 400.0 / 600.0, 1e-9);
  EXPECT_DOUBLE_EQ(r->fragmentation, 1.0);
  EXPECT_EQ(r->cost.value(), 100'000);  // 0.9e6 * 400,000 milli-GPU-s... = $0.10
  EXPECT_EQ(r->per_job[1].start.value(), 100'000);
}

// SJF lets the short job pass: on one 1-GPU node, L (t=0, 100 s) runs; then at t=1 S1 (50 s) and
// at t=2 S2 (10 s) wait. FIFO runs S1 then S2; SJF runs S2 first.
TEST(EngineTest, QueueOrderChangesWhoWaits) {
  const Fleet fleet = *ParseFleetShorthand("1x1xV100");
  const Trace trace{.jobs = {Job("L", 0, 100, 1), Job("S1", 1, 50, 1), Job("S2", 2, 10, 1)}};
  auto fifo = RunSimulation(fleet, trace, P("fifo"), {});
  auto sjf = RunSimulation(fleet, trace, P("sjf"), {});
  ASSERT_TRUE(fifo && sjf);
  EXPECT_EQ(fifo->per_job[1].start.value(), 100'000);
  EXPECT_EQ(fifo->per_job[2].start.value(), 150'000);
  EXPECT_EQ(sjf->per_job[2].start.value(), 100'000);
  EXPECT_EQ(sjf->per_job[1].start.value(), 110'000);
  // Average JCT: FIFO (100 + 149 + 158) / 3; SJF (100 + 159 + 108) / 3.
  EXPECT_NEAR(fifo->avg_jct_s, 407.0 / 3, 1e-9);
  EXPECT_NEAR(sjf->avg_jct_s, 367.0 / 3, 1e-9);
}

TEST(EngineTest, TooBigAndUnknownModelAreRefusedNotLost) {
  const Fleet fleet = *ParseFleetShorthand("2x8xV100");
  Trace trace{.jobs = {Job("ok", 0, 10, 8), Job("huge", 0, 10, 64), Job("h100", 0, 10, 1)}};
  trace.jobs[2].gpu_models = {"H100"};
  auto r = RunSimulation(fleet, trace, P("fifo"), {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->finished, 1);
  EXPECT_EQ(r->unschedulable, 2);
  EXPECT_EQ(r->per_job[1].outcome, Outcome::kNever);
  EXPECT_EQ(r->per_job[2].outcome, Outcome::kNever);
}

// A Gavel job runs as long as the model it lands on makes it.
TEST(EngineTest, RunTimeFollowsTheGpuModel) {
  Fleet fleet;
  fleet.providers.push_back({.name = "p"});
  fleet.sites.push_back({.name = "s"});
  ASSERT_TRUE(AddNodeGroup(fleet, {.name_prefix = "k", .gpus = 1, .gpu_model = "K80"}).ok());
  TraceJob j = Job("J", 0, 100, 1);
  j.duration_by_model = {{"V100", Millis{100'000}}, {"K80", Millis{500'000}}};
  auto r = RunSimulation(fleet, Trace{.jobs = {j}}, P("fifo"), {});
  ASSERT_TRUE(r);
  EXPECT_DOUBLE_EQ(r->avg_jct_s, 500);
}

// The full Philly trace: every job finishes (the largest, 128 GPUs, fits 16 nodes), and busy
// GPU-time equals the trace's own sum of duration x GPUs.
TEST(EngineTest, FullPhillyConservesGpuTime) {
  auto trace = ReadTrace(testing::Traces() + "/pollux-philly/philly.csv", "", {});
  ASSERT_TRUE(trace);
  const Fleet fleet = *ParseFleetShorthand("256x8xV100");
  auto r = RunSimulation(fleet, *trace, P("fifo"), {});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->finished, 82'247);
  EXPECT_EQ(r->unschedulable, 0);
  double gpu_seconds = 0;
  for (const TraceJob& j : trace->jobs) gpu_seconds += static_cast<double>(j.duration.value()) / 1000.0 * j.gpus;
  EXPECT_NEAR(r->gpu_utilization * 2048 * r->makespan_s, gpu_seconds, gpu_seconds * 1e-9);
  for (const SimJobResult& j : r->per_job) {
    ASSERT_GE(j.start, j.submit);
    ASSERT_GE(j.finish, j.start);
  }
}

// One node, one GPU, one 10-hour job; the node fails 4.5 h in and is repaired in 1 h.
//   restart:    all 4.5 h are lost; it runs again from 5.5 h for 10 h: JCT 15.5 h, 4.5 GPU-h lost.
//   checkpoint: hourly checkpoints keep 4 h; 6 h remain from 5.5 h: JCT 11.5 h, 0.5 GPU-h lost.
TEST(EngineTest, FailureRecoveryStrategies) {
  const Fleet fleet = *ParseFleetShorthand("1x1xV100");
  const Trace trace{.jobs = {Job("long", 0, 36'000, 1)}};
  SimOptions restart{.failures = FailureModel{.node_repair = Millis{3'600'000}},
                     .scripted_failures = {{Millis{16'200'000}, NodeId{0}}}};
  SimOptions checkpoint = restart;
  checkpoint.recovery = Recovery::kCheckpoint;
  checkpoint.checkpoint_interval = Millis{3'600'000};
  auto r = RunSimulation(fleet, trace, P("fifo"), restart);
  auto c = RunSimulation(fleet, trace, P("fifo"), checkpoint);
  ASSERT_TRUE(r && c);
  EXPECT_EQ(r->failures, 1);
  EXPECT_DOUBLE_EQ(r->avg_jct_s, 15.5 * 3600);
  EXPECT_DOUBLE_EQ(r->lost_gpu_hours, 4.5);
  EXPECT_DOUBLE_EQ(c->avg_jct_s, 11.5 * 3600);
  EXPECT_DOUBLE_EQ(c->lost_gpu_hours, 0.5);
  EXPECT_EQ(r->recovery, "restart");
  EXPECT_EQ(c->recovery, "checkpoint");
  // Cost counts the GPU-time used, lost work included: 14.5 h vs 10.5 h at $0.90.
  EXPECT_EQ(r->cost.value(), 13'050'000);
  EXPECT_EQ(c->cost.value(), 9'450'000);
}

// Random failures on a real trace: same seed, same bytes; and checkpointing keeps work.
TEST(EngineTest, RandomFailuresOnATrace) {
  auto trace = ReadTrace(testing::Traces() + "/tiresias/60_job.csv", "", {});
  ASSERT_TRUE(trace);
  const Fleet fleet = *ParseFleetShorthand("4x4xV100");
  SimOptions o{.seed = 3, .failures = FailureModel{.node_mtbf = Millis{1'800'000}, .node_repair = Millis{600'000},
                                                   .gpu_xid_mtbf = Millis{7'200'000}}};
  auto a = RunSimulation(fleet, *trace, P("fifo"), o);
  auto b = RunSimulation(fleet, *trace, P("fifo"), o);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(FormatReportJson(*a), FormatReportJson(*b));
  EXPECT_EQ(a->finished, 60) << "every job finishes despite failures";
  EXPECT_GT(a->node_failures, 0);
  EXPECT_GT(a->gpu_failures, 0);
  EXPECT_GE(a->node_failures + a->gpu_failures, a->failures);
}

TEST(EngineTest, SameSeedSameBytes) {
  auto trace = ReadTrace(testing::Traces() + "/tiresias/60_job.csv", "", {});
  ASSERT_TRUE(trace);
  const Fleet fleet = *ParseFleetShorthand("4x4xV100");
  for (const char* policy : {"fifo", "random", "las", "least-loaded"}) {
    auto a = RunSimulation(fleet, *trace, P(policy), {.seed = 42});
    auto b = RunSimulation(fleet, *trace, P(policy), {.seed = 42});
    ASSERT_TRUE(a && b);
    EXPECT_EQ(FormatReportJson(*a), FormatReportJson(*b)) << policy;
    EXPECT_EQ(FormatJobsCsv(*a, fleet), FormatJobsCsv(*b, fleet)) << policy;
  }
}

}  // namespace
}  // namespace gp

namespace gp {
namespace {

// The simulator speaks the live pool's language: its --events log, read back as a trace (the
// reader a live pool's log goes through), replays to the same schedule: every job on the same
// nodes and GPUs, at the same times.
TEST(EngineTest, ItsEventLogReplaysToTheSameSchedule) {
  const Fleet fleet = *ParseFleetShorthand("4x8xV100");
  auto trace = ReadTrace(testing::Traces() + "/pollux-philly/philly.csv", "", {});
  ASSERT_TRUE(trace) << trace.error().message();
  trace->jobs.resize(400);
  auto run = [&](const Trace& t, std::string* log, std::map<std::string, std::string>* placed) {
    SimOptions o;
    uint64_t seq = 0;
    int64_t t0 = -1;  // the first submission: a log's times count from there
    o.on_event = [&](Millis at, const std::string& type, const std::string& subject, const std::string& data) {
      const std::string line = EventToCloudEvent(EventRecord{.seq = ++seq, .time_ms = at.value(), .type = type, .subject = subject, .data = data}, "sim");
      if (log) *log += line + "\n";
      if (t0 < 0) t0 = at.value();
      if (type == "job.placed") {
        const auto d = nlohmann::json::parse(data);
        (*placed)[d["name"].get<std::string>()] += fmt::format("{}@{} {}; ", d["nodes"].dump(), at.value() - t0, d["gpus"].dump());
      }
    };
    return RunSimulation(fleet, t, P("fifo"), o);
  };
  std::string log;
  std::map<std::string, std::string> first, second;
  auto a = run(*trace, &log, &first);
  ASSERT_TRUE(a) << a.error().message();
  auto again = ReadTrace(testing::WriteTemp("sim-events.ndjson", log), "", {});
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->format, "events");
  auto b = run(*again, nullptr, &second);
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(b->finished, a->finished);
  EXPECT_DOUBLE_EQ(b->avg_jct_s, a->avg_jct_s);
  EXPECT_DOUBLE_EQ(b->makespan_s, a->makespan_s);
  EXPECT_EQ(second, first) << "every job on the same nodes and GPUs at the same time";
}

// Max-min fair division and the fairness figures, by hand.
TEST(FairnessTest, WaterFillAndJain) {
  const struct {
    std::vector<double> asked;
    double total;
    std::vector<double> want;
  } fills[] = {
      {{10, 10}, 10, {5, 5}},
      {{2, 10}, 10, {2, 8}},        // the small asker gets all it asked; the rest goes to the other
      {{2, 3, 100}, 30, {2, 3, 25}},
      {{0, 4}, 4, {0, 4}},
      {{5, 5}, 20, {5, 5}},         // more than asked: each gets what it asked
  };
  for (const auto& f : fills) EXPECT_EQ(WaterFill(f.asked, f.total), f.want) << f.total;
  // Weighted: 12 among {10, 10} with weights {1, 2} is 4 and 8; when the heavier one asks
  // only 3 (its part would be 8), it gets 3 and the other the remaining 9 (it asked 10).
  EXPECT_EQ(WaterFill({10, 10}, 12, {1, 2}), (std::vector<double>{4, 8}));
  EXPECT_EQ(WaterFill({10, 3}, 12, {1, 2}), (std::vector<double>{9, 3}));
  EXPECT_EQ(WaterFill({1, 100, 100}, 31, {1, 1, 2}), (std::vector<double>{1, 10, 20}));
  const Fairness fair = FairnessOf({5, 5}, {5, 5});
  EXPECT_DOUBLE_EQ(fair.jain, 1.0);
  EXPECT_DOUBLE_EQ(fair.max_deviation, 0.0);
  const Fairness hog = FairnessOf({10, 0}, {5, 5});  // one had it all: 1/n
  EXPECT_DOUBLE_EQ(hog.jain, 0.5);
  EXPECT_DOUBLE_EQ(hog.max_deviation, 0.5);
}

// Two tenants on one 1-GPU node, fifo: A submits ten 1-hour jobs at once, B one job a minute
// later. B waits nine hours behind A's backlog: the windows in which B waited judge fifo
// unfair; per tenant, jobs and GPU-hours add up.
TEST(FairnessTest, FifoLetsAFloodingTenantTakeTheNode) {
  const Fleet fleet = *ParseFleetShorthand("1x1xV100");
  Trace trace;
  for (int i = 0; i < 10; ++i) {
    trace.jobs.push_back(Job("a", 0, 3600, 1));
    trace.jobs.back().tenant = "a";
  }
  trace.jobs.push_back(Job("b", 60, 3600, 1));
  trace.jobs.back().tenant = "b";
  auto r = RunSimulation(fleet, trace, P("fifo"), {});
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->tenants.size(), 2u);
  EXPECT_EQ(r->tenants[0].name, "a");
  EXPECT_EQ(r->tenants[0].jobs, 10);
  EXPECT_NEAR(r->tenants[0].gpu_hours, 10, 1e-9);
  EXPECT_NEAR(r->tenants[1].gpu_hours, 1, 1e-9);
  EXPECT_NEAR(r->tenants[1].avg_queue_s, 10 * 3600 - 60, 1e-6);
  EXPECT_GE(r->fairness.windows, 8);
  EXPECT_NEAR(r->fairness.jain, 0.5, 0.05) << "A held the node while B waited: one tenant had it all";
  EXPECT_GT(r->fairness.max_deviation, 0.4);
  ASSERT_FALSE(r->tenant_shares.empty());
  EXPECT_DOUBLE_EQ(r->tenant_shares.front().shares[0], 1.0);
  // One tenant: no per-tenant report.
  Trace one{.jobs = {Job("x", 0, 10, 1)}};
  auto single = RunSimulation(fleet, one, P("fifo"), {});
  ASSERT_TRUE(single);
  EXPECT_TRUE(single->tenants.empty());
}

// The simulator's fair share: tenants a (weight 1) and b (weight 2), [[tenant]] tables as a
// fleet file gives them, keep 16 GPUs busy with 1-GPU jobs of 60 s (each submits 1,000 at
// once). Under fairshare (half-life 10 min) each 10-minute window gives a 1/3 and b 2/3 of
// the GPU-time, within 10% of each share; fifo gives the node to whoever submitted first.
TEST(FairnessTest, FairShareGivesWeightedSharesWindowByWindow) {
  const Fleet fleet = *ParseFleetShorthand("2x8xV100");
  Trace trace;
  for (int i = 0; i < 1'000; ++i) {
    for (const char* t : {"a", "b"}) {
      trace.jobs.push_back(Job(t, 0, 60, 1));
      trace.jobs.back().tenant = t;
    }
  }
  SimOptions o{.fairness_window = Millis{600'000},
               .tenants = {{.name = "a", .weight = 1}, {.name = "b", .weight = 2}},
               .half_life = Millis{600'000}};
  auto r = RunSimulation(fleet, trace, P("fairshare/fifo"), o);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->tenants.size(), 2u);
  // Windows while both wait: from the second (the first warms the decayed usage up) until a's
  // or b's backlog runs out (b's 1,000 jobs at 2/3 of 16 GPUs a minute: about 94 minutes).
  int judged = 0;
  for (size_t w = 1; w + 1 < r->tenant_shares.size() && r->tenant_shares[w].t < Millis{5'400'000}; ++w) {
    const auto& shares = r->tenant_shares[w].shares;
    EXPECT_NEAR(shares[0], 1.0 / 3, 0.1 / 3) << "window " << w;
    EXPECT_NEAR(shares[1], 2.0 / 3, 0.2 / 3) << "window " << w;
    ++judged;
  }
  EXPECT_GE(judged, 7);
  EXPECT_GT(r->fairness.jain, 0.95) << "judged against the weighted entitlement (the first window and the tail included)";
  auto fifo = RunSimulation(fleet, trace, P("fifo"), o);
  ASSERT_TRUE(fifo);
  EXPECT_LT(fifo->fairness.jain, 0.95) << "fifo: alternate submissions, equal shares, not 1:2";
}

// Time limits in the simulator: tenant a's jobs get its default limit of 30 s; a 60 s job is
// stopped at 30 s (its GPUs free then, so b's job waiting behind it starts at 30 s), a 10 s
// job finishes; b has no limit.
TEST(FairnessTest, TimeLimitsStopJobsAtTheirLimit) {
  const Fleet fleet = *ParseFleetShorthand("1x1xV100");
  Trace trace{.jobs = {Job("long", 0, 60, 1), Job("short", 0, 10, 1), Job("b", 1, 60, 1)}};
  trace.jobs[0].tenant = trace.jobs[1].tenant = "a";
  trace.jobs[2].tenant = "b";
  SimOptions o{.tenants = {{.name = "a", .default_time = Millis{30'000}}}};
  auto r = RunSimulation(fleet, trace, P("fifo"), o);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->per_job[0].finish, Millis{30'000}) << "stopped at its limit";
  EXPECT_EQ(r->per_job[1].start, Millis{30'000});
  EXPECT_EQ(r->per_job[1].finish, Millis{40'000}) << "within its limit: its own duration";
  EXPECT_EQ(r->per_job[2].start, Millis{40'000});
  EXPECT_EQ(r->per_job[2].finish, Millis{100'000}) << "b has no limit";
  EXPECT_EQ(r->timed_out, 1);
}

// Equal quotas: each of the trace's tenants gets the same part of each model in one cohort;
// a job above what its tenant could ever hold (its quota plus all the others') never runs.
TEST(FairnessTest, EqualQuotasLendIdleShares) {
  const Fleet fleet = *ParseFleetShorthand("2x8xV100");
  Trace trace;
  for (int i = 0; i < 4; ++i) {
    trace.jobs.push_back(Job("a", 0, 600, 4));
    trace.jobs.back().tenant = "a";
  }
  trace.jobs.push_back(Job("b", 1, 600, 4));
  trace.jobs.back().tenant = "b";
  SimOptions o{.equal_quotas = true};
  auto r = RunSimulation(fleet, trace, P("fifo"), o);
  ASSERT_TRUE(r) << r.error().message();
  // a's quota is 8, b's 8: a borrows b's idle 8 at 0 s (four 4-GPU jobs on 16 GPUs); b's job
  // at 1 s finds its quota lent and waits until a's jobs end at 600 s (no preemption yet).
  EXPECT_EQ(r->per_job[0].start, Millis{0});
  EXPECT_EQ(r->per_job[3].start, Millis{0});
  EXPECT_EQ(r->per_job[4].start, Millis{600'000});
  // A tenant of its own whose 16 GPUs are all it and no one else could hold.
  SimOptions lone{.tenants = {{.name = "a", .quota = {{"V100", QuotaLimits{.nominal = 8}}}}}};
  Trace big{.jobs = {Job("big", 0, 10, 16)}};
  big.jobs[0].tenant = "a";
  big.jobs.push_back(Job("other", 0, 10, 1));
  auto refused = RunSimulation(fleet, big, P("fifo"), lone);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->per_job[0].outcome, Outcome::kNever);
  EXPECT_EQ(refused->per_job[1].outcome, Outcome::kPlaced);
}

}  // namespace
}  // namespace gp
