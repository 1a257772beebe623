// Backfill and preemption in the simulator (the same ClusterState and core as the live pool):
//   - the scene: a 16-GPU job at the head of a busy queue on 2 x 8 GPUs, with a stream of short
//     1-GPU jobs behind it. Strict FIFO without backfill leaves the free GPUs idle until the big
//     job can start; skip-ahead FIFO fills them but starves the big job; EASY backfill starts
//     the big job exactly at its reservation and runs the short jobs that end before it in the
//     hole. The utilisation of each is compared.
//   - property: with exact estimates, no job starts later than its first reservation (nothing
//     backfilled delays it), for EASY and conservative backfill over random traces.
//   - preemption: las with preemption lets a short job in ahead of a long one that has run.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include "sim/engine.h"
#include "sim_fixtures.h"

namespace gp {
namespace {

using testing::Job;

Policy WithBackfill(const std::string& name, const std::string& backfill) {
  Policy p = testing::P(name);
  p.backfill = *ParseBackfill(backfill);
  return p;
}

// 12 x 1 GPU for 600 s at t=0 (12 of 16 GPUs busy); BIG (16 GPUs, 300 s) at t=10; then a 1-GPU
// job of 100 s every 20 s from t=20 to t=1180.
// The share of the fleet's GPU-time busy in [0, until): from the report's timeline (each point
// holds from its time until the next).
double BusyBefore(const SimReport& r, Millis until, int gpus) {
  double busy = 0;
  for (size_t k = 0; k < r.timeline.size(); ++k) {
    const int64_t from = r.timeline[k].t.value();
    const int64_t to = std::min(until.value(), k + 1 < r.timeline.size() ? r.timeline[k + 1].t.value() : until.value());
    if (to > from) busy += r.timeline[k].busy_gpus * static_cast<double>(to - from);
  }
  return busy / (static_cast<double>(gpus) * static_cast<double>(until.value()));
}

Trace Scene() {
  Trace t;
  for (int k = 0; k < 12; ++k) t.jobs.push_back(Job("long", 0, 600, 1));
  t.jobs.push_back(Job("BIG", 10, 300, 16));
  for (int k = 0; k < 60; ++k) t.jobs.push_back(Job("short", 20 + 20 * k, 100, 1));
  return t;
}

TEST(Backfill, TheBigJobStartsAtItsReservationAndTheHoleIsFilled) {
  const Fleet fleet = *ParseFleetShorthand("2x8xH100");
  const Trace trace = Scene();
  const size_t big = 12;
  auto strict = RunSimulation(fleet, trace, testing::P("fifo-strict/fifo"), {});
  auto skip = RunSimulation(fleet, trace, testing::P("fifo"), {});
  auto easy = RunSimulation(fleet, trace, WithBackfill("fifo-strict/fifo", "easy"), {});
  auto easy_skip = RunSimulation(fleet, trace, WithBackfill("fifo", "easy"), {});
  ASSERT_TRUE(strict && skip && easy && easy_skip);
  // Without backfill (strict): BIG starts when the long jobs end, and nothing runs in the hole.
  EXPECT_EQ(strict->per_job[big].start.value(), 600'000);
  for (size_t k = big + 1; k < trace.jobs.size(); ++k) EXPECT_GE(strict->per_job[k].start.value(), 900'000);
  // Skip-ahead without reservations: the short jobs keep the 4 free GPUs (and more) busy, and
  // BIG waits past 600 s.
  EXPECT_GT(skip->per_job[big].start.value(), 600'000);
  // EASY: BIG reserved at 600 s and started then; short jobs ending by 600 s ran in the hole.
  for (const auto* r : {&*easy, &*easy_skip}) {
    EXPECT_EQ(r->per_job[big].reserved.value(), 600'000);
    EXPECT_EQ(r->per_job[big].start.value(), 600'000);
    int in_hole = 0;
    for (size_t k = big + 1; k < trace.jobs.size(); ++k) {
      const SimJobResult& j = r->per_job[k];
      if (j.start.value() < 600'000) {
        ++in_hole;
        EXPECT_LE(j.finish.value(), 600'000) << "job " << k << " ran into BIG's reservation";
      }
    }
    EXPECT_GE(in_hole, 20) << "the 4 free GPUs took the short jobs that end before 600 s";
  }
  // Utilisation while BIG waited (the first 600 s): 12 of 16 GPUs without backfill, nearly all with.
  const double u_strict = BusyBefore(*strict, Millis{600'000}, 16);
  const double u_easy = BusyBefore(*easy, Millis{600'000}, 16);
  const double u_skip = BusyBefore(*skip, Millis{600'000}, 16);
  EXPECT_NEAR(u_strict, 12.0 / 16, 0.01);
  EXPECT_GT(u_easy, u_strict + 0.15);
  EXPECT_LT(easy->avg_jct_s, strict->avg_jct_s);
  fmt::print("GPUs busy over the first 600 s: fifo-strict {:.3f}, fifo-strict + easy backfill {:.3f}, fifo (skip-ahead) "
             "{:.3f}; overall {:.3f}, {:.3f}, {:.3f}; BIG starts at {} s, {} s, {} s; average JCT {:.1f} s, {:.1f} s, {:.1f} s\n",
             u_strict, u_easy, u_skip, strict->gpu_utilization, easy->gpu_utilization, skip->gpu_utilization,
             strict->per_job[big].start.value() / 1000, easy->per_job[big].start.value() / 1000,
             skip->per_job[big].start.value() / 1000, strict->avg_jct_s, easy->avg_jct_s, skip->avg_jct_s);
}

TEST(Backfill, OffIsTheSameAsBefore) {
  const Fleet fleet = *ParseFleetShorthand("2x8xH100");
  const Trace trace = Scene();
  auto a = RunSimulation(fleet, trace, testing::P("fifo"), {});
  auto b = RunSimulation(fleet, trace, WithBackfill("fifo", "off"), {});
  ASSERT_TRUE(a && b);
  for (size_t k = 0; k < trace.jobs.size(); ++k) EXPECT_EQ(a->per_job[k].start, b->per_job[k].start);
}

RC_GTEST_PROP(BackfillProperty, NoJobStartsAfterItsFirstReservation, ()) {
  const int nodes = *rc::gen::inRange(1, 4);
  const Fleet fleet = *ParseFleetShorthand(fmt::format("{}x8xH100", nodes));
  Trace trace;
  const int jobs = *rc::gen::inRange(5, 40);
  for (int k = 0; k < jobs; ++k) {
    const int gpus = *rc::gen::element(1, 1, 2, 4, 8, 16);
    trace.jobs.push_back(Job("j", *rc::gen::inRange(0, 2'000), *rc::gen::inRange(1, 1'000), std::min(gpus, 8 * nodes)));
  }
  const std::string mode = *rc::gen::element<std::string>("easy", "conservative", "3");
  const std::string order = *rc::gen::element<std::string>("fifo-strict/fifo", "fifo");
  auto r = RunSimulation(fleet, trace, WithBackfill(order, mode), {});
  RC_ASSERT(r.has_value());
  int reserved = 0;
  for (const SimJobResult& j : r->per_job) {
    RC_ASSERT(j.outcome == Outcome::kPlaced);
    if (j.reserved.value() < 0) continue;
    ++reserved;
    if (j.start.value() > j.reserved.value()) {
      fmt::print(stderr, "case {} {} nodes {}\n", order, mode, nodes);
      for (size_t k = 0; k < trace.jobs.size(); ++k) {
        fmt::print(stderr, "job {}: submit {} dur {} gpus {} -> start {} finish {} reserved {}\n", k + 1, trace.jobs[k].submit.value(),
                   trace.jobs[k].duration.value(), trace.jobs[k].gpus, r->per_job[k].start.value(), r->per_job[k].finish.value(),
                   r->per_job[k].reserved.value());
      }
    }
    RC_ASSERT(j.start.value() <= j.reserved.value());
  }
  RC_TAG(reserved > 0 ? "with reservations" : "none reserved");
}

// las:100 on one 1-GPU node: LONG (t=0, 1000 s) runs; SHORT (t=200, 50 s) arrives when LONG has
// 200 GPU-s, past the 100 GPU-s threshold: LONG is in the lower queue. Without preemption SHORT
// waits for LONG (ends 1050); with it, SHORT preempts LONG at 200 and ends at 250, and LONG
// resumes with its progress kept, ending at 1050.
TEST(Preemption, LasPreemptsARunningJobOfALowerQueue) {
  const Fleet fleet = *ParseFleetShorthand("1x1xH100");
  const Trace trace{.jobs = {Job("LONG", 0, 1000, 1), Job("SHORT", 200, 50, 1)}};
  Policy off = testing::P("las:100/fifo");
  Policy on = testing::P("las:100/fifo");
  on.preemption.priority = true;
  auto a = RunSimulation(fleet, trace, off, {});
  auto b = RunSimulation(fleet, trace, on, {});
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->per_job[1].finish.value(), 1'050'000);
  EXPECT_EQ(a->preemptions, 0);
  EXPECT_EQ(b->per_job[1].start.value(), 200'000);
  EXPECT_EQ(b->per_job[1].finish.value(), 250'000);
  EXPECT_EQ(b->per_job[0].finish.value(), 1'050'000) << "LONG kept its 200 s of progress";
  EXPECT_EQ(b->preemptions, 1);
}

// Demotion fires at the exact crossing time (as in Tiresias): LONG (t=0, 1000 s) runs on the one
// GPU; SHORT (t=50, 50 s) arrives while LONG, with 50 GPU-s, is still in the first queue of
// las:100, so it waits (equal standing). At t=100 LONG crosses 100 GPU-s and is demoted: SHORT
// preempts it then (not at LONG's end), runs 100..150, and LONG ends at 1050.
TEST(Preemption, LasDemotesAtTheCrossingTime) {
  const Fleet fleet = *ParseFleetShorthand("1x1xH100");
  const Trace trace{.jobs = {Job("LONG", 0, 1000, 1), Job("SHORT", 50, 50, 1)}};
  Policy on = testing::P("las:100/fifo");
  on.preemption.priority = true;
  auto r = RunSimulation(fleet, trace, on, {});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->per_job[1].start.value(), 100'000);
  EXPECT_EQ(r->per_job[1].finish.value(), 150'000);
  EXPECT_EQ(r->per_job[0].finish.value(), 1'050'000);
  EXPECT_EQ(r->preemptions, 1);
}

}  // namespace
}  // namespace gp
