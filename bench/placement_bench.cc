// Placement throughput of Schedule(): one pass over a backlog on a large idle fleet, and the
// cost of a pass as the fleet and the queue grow. Figures in docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <deque>

#include "core/fleet.h"
#include "core/rng.h"
#include "sched/queue.h"
#include "sched/registry.h"
#include "sched/schedule.h"

namespace gp {
namespace {

// A backlog shaped like Philly's: 70% 1 GPU, 12% 2, 10% 4, 6% 8, 2% gangs of 2 x 8.
struct Backlog {
  std::deque<JobSpec> specs;
  std::vector<PendingJob> pending;
};

Backlog MakeBacklog(const Fleet& fleet, int jobs) {
  Backlog b;
  SplitMix64 rng(7);
  for (int i = 0; i < jobs; ++i) {
    const uint64_t r = rng.Below(100);
    JobSpec s{.id = JobId{static_cast<uint64_t>(i + 1)}, .gpus_per_task = r < 70 ? 1 : r < 82 ? 2 : r < 92 ? 4 : 8,
              .submit_time = Millis{i}};
    if (r >= 98) s.tasks = 2;
    b.specs.push_back(s);
  }
  for (const JobSpec& s : b.specs) b.pending.push_back(*CompileJob(s, fleet));
  return b;
}

const Fleet& FleetOf(int nodes) {
  static std::map<int, Fleet> cache;
  auto it = cache.find(nodes);
  if (it == cache.end()) it = cache.emplace(nodes, *ParseFleetShorthand(std::to_string(nodes) + "x8xV100")).first;
  return it->second;
}

// 7 of 8 GPUs in use on every node: a busy fleet.
void BusyState(SchedState& st) {
  for (size_t i = 0; i < st.size(); ++i) {
    if (!st.Allocate(TaskAllocation{.node = NodeId{static_cast<uint32_t>(i)}, .gpu_mask = 0x7F}).ok()) std::abort();
  }
}

// args: nodes, queued jobs; label: policy
void RunPass(benchmark::State& state, const std::string& policy_name) {
  const Fleet& fleet = FleetOf(static_cast<int>(state.range(0)));
  const Backlog backlog = MakeBacklog(fleet, static_cast<int>(state.range(1)));
  const SchedState snap(fleet);
  const Policy policy = *BuiltinRegistry().MakePolicy(policy_name);
  int64_t placements = 0;
  for (auto _ : state) {
    SplitMix64 rng(1);
    const Plan plan = Schedule(snap, backlog.pending, policy, rng);
    placements += static_cast<int64_t>(plan.placements.size());
    benchmark::DoNotOptimize(plan);
  }
  state.counters["placements/s"] = benchmark::Counter(static_cast<double>(placements), benchmark::Counter::kIsRate);
  state.counters["placed/pass"] = static_cast<double>(placements) / static_cast<double>(state.iterations());
  state.counters["jobs/s"] = benchmark::Counter(static_cast<double>(state.range(1)) * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
}

void BM_Pass_Balanced(benchmark::State& s) { RunPass(s, "balanced"); }
void BM_Pass_Fifo(benchmark::State& s) { RunPass(s, "fifo"); }
void BM_Pass_LeastLoaded(benchmark::State& s) { RunPass(s, "least-loaded"); }
void BM_Pass_Spread(benchmark::State& s) { RunPass(s, "spread"); }
void BM_Pass_Cost(benchmark::State& s) { RunPass(s, "cost"); }

// The span form (a queue made for the pass, as a one-off placement does): the rows that the
// version before the kept state also has, for before/after in one run.
BENCHMARK(BM_Pass_Balanced)->Args({10'000, 100'000})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Pass_Fifo)->Args({10'000, 100'000})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Pass_LeastLoaded)->Args({10'000, 100'000})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Pass_Spread)->Args({10'000, 100'000})->Unit(benchmark::kMillisecond);
// Scaling with size: nodes x jobs together, then nodes alone (10,000 queued), then the queue
// alone (10,000 nodes).
BENCHMARK(BM_Pass_Balanced)->Args({1'000, 10'000})->Args({2'500, 25'000})->Args({5'000, 50'000})
    ->Args({20'000, 200'000})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Pass_Fifo)->Args({1'000, 10'000})->Args({2'500, 10'000})->Args({5'000, 10'000})->Args({10'000, 10'000})
    ->Args({20'000, 10'000})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Pass_Fifo)->Args({10'000, 1'000})->Args({10'000, 30'000})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Pass_Cost)->Args({1'000, 10'000})->Args({2'500, 25'000})->Unit(benchmark::kMillisecond);

// The state owner's form, as the server and the simulator run it: the scheduling state and the
// queue are kept (jobs were added as they arrived), and a pass reads them. Every policy, at
// 10,000 nodes x 8 GPUs and 100,000 queued jobs.
// Passes over a kept queue until the benchmark has its measure; placements counted.
void PassesOver(benchmark::State& state, const SchedState& st, const std::vector<PendingJob>& pending, const Policy& policy) {
  JobQueue queue(*policy.queue);
  for (const PendingJob& p : pending) queue.Add(p);
  int64_t placements = 0;
  for (auto _ : state) {
    SplitMix64 rng(1);
    const Plan plan = Schedule(st, queue, policy, rng);
    placements += static_cast<int64_t>(plan.placements.size());
    benchmark::DoNotOptimize(plan);
  }
  state.counters["placements/s"] = benchmark::Counter(static_cast<double>(placements), benchmark::Counter::kIsRate);
  state.counters["placed/pass"] = static_cast<double>(placements) / static_cast<double>(state.iterations());
}

void RunKeptPass(benchmark::State& state, const std::string& policy_name) {
  const Fleet& fleet = FleetOf(static_cast<int>(state.range(0)));
  const Backlog backlog = MakeBacklog(fleet, static_cast<int>(state.range(1)));
  const SchedState st(fleet);
  PassesOver(state, st, backlog.pending, *BuiltinRegistry().MakePolicy(policy_name));
}
void BM_KeptPass(benchmark::State& s, const std::string& policy) { RunKeptPass(s, policy); }
BENCHMARK_CAPTURE(BM_KeptPass, balanced, std::string("balanced"))->Args({10'000, 100'000})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_KeptPass, fifo, std::string("fifo"))->Args({10'000, 100'000})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_KeptPass, priority, std::string("priority"))->Args({10'000, 100'000})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_KeptPass, sjf, std::string("sjf"))->Args({10'000, 100'000})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_KeptPass, las, std::string("las"))->Args({10'000, 100'000})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_KeptPass, least_loaded, std::string("least-loaded"))->Args({10'000, 100'000})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_KeptPass, spread, std::string("spread"))->Args({10'000, 100'000})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_KeptPass, cost, std::string("cost"))->Args({10'000, 100'000})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_KeptPass, data_local, std::string("data-local"))->Args({10'000, 100'000})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_KeptPass, random, std::string("random"))->Args({10'000, 100'000})->Unit(benchmark::kMillisecond);
// The kept pass as a function of the nodes (10,000 queued) and of the queue (10,000 nodes), and
// of both together (queue = 10 x nodes): the rows the span form above has, as the owner runs them.
BENCHMARK_CAPTURE(BM_KeptPass, fifo, std::string("fifo"))->Args({1'000, 10'000})->Args({2'500, 10'000})->Args({5'000, 10'000})
    ->Args({10'000, 10'000})->Args({20'000, 10'000})->Args({10'000, 1'000})->Args({10'000, 30'000})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_KeptPass, balanced, std::string("balanced"))->Args({1'000, 10'000})->Args({2'500, 25'000})
    ->Args({5'000, 50'000})->Args({20'000, 200'000})->Unit(benchmark::kMillisecond);
// Tenants: the kept pass with the jobs spread round-robin over T tenants, each with an equal
// quota of the fleet's V100s in one cohort (so the quota stage judges every candidate and
// borrowing is computed over the cohort), under plain fifo and under the share orders.
// args: nodes, queued jobs, tenants.
void RunTenantPass(benchmark::State& state, const std::string& policy_name) {
  const Fleet& fleet = FleetOf(static_cast<int>(state.range(0)));
  Backlog backlog = MakeBacklog(fleet, static_cast<int>(state.range(1)));
  const int tenants = static_cast<int>(state.range(2));
  SchedState st(fleet);
  std::vector<TenantConfig> configs;
  for (int t = 0; t < tenants; ++t) {
    configs.push_back(TenantConfig{.name = "t" + std::to_string(t), .weight = 1 + t % 3, .cohort = "all",
                                   .quota = {{"V100", QuotaLimits{.nominal = state.range(0) * 8 / tenants}}}});
  }
  if (!st.tenants().Configure(configs, fleet).ok()) std::abort();
  for (size_t i = 0; i < backlog.pending.size(); ++i) {
    backlog.specs[i].tenant = "t" + std::to_string(i % static_cast<size_t>(tenants));
    backlog.pending[i].tenant = st.tenants().Intern(backlog.specs[i].tenant);
  }
  PassesOver(state, st, backlog.pending, *BuiltinRegistry().MakePolicy(policy_name));
}
void BM_TenantPass(benchmark::State& s, const std::string& policy) { RunTenantPass(s, policy); }
BENCHMARK_CAPTURE(BM_TenantPass, fifo_quota, std::string("fifo"))->Args({10'000, 100'000, 20})->Args({10'000, 100'000, 200})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TenantPass, fairshare, std::string("fairshare/fifo"))->Args({10'000, 100'000, 20})
    ->Args({10'000, 100'000, 200})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TenantPass, drf, std::string("drf/fifo"))->Args({10'000, 100'000, 20})->Args({10'000, 100'000, 200})
    ->Unit(benchmark::kMillisecond);

// A pass over a long queue on a full fleet: every class blocked since its last failure, nothing
// improved. It looks at no job (the cost of a pass in which nothing changed).
void BM_KeptPassNothingChanged(benchmark::State& state) {
  const Fleet& fleet = FleetOf(static_cast<int>(state.range(0)));
  const Backlog backlog = MakeBacklog(fleet, static_cast<int>(state.range(1)));
  SchedState st(fleet);
  BusyState(st);
  const Policy policy = *BuiltinRegistry().MakePolicy("fifo");
  JobQueue queue(*policy.queue);
  for (const PendingJob& p : backlog.pending) queue.Add(p);
  SplitMix64 first(1);
  const Plan blocked = Schedule(st, queue, policy, first);
  for (const Stopped& s : blocked.stopped) queue.Block(s.cls, st.generation(), s.decision);
  int64_t looked = 0;
  for (auto _ : state) {
    SplitMix64 rng(1);
    const Plan plan = Schedule(st, queue, policy, rng);
    looked += plan.looked_at;
    benchmark::DoNotOptimize(plan);
  }
  state.counters["looked_at/pass"] = static_cast<double>(looked) / static_cast<double>(state.iterations());
}

// One job arriving at a busy fleet (7 of 8 GPUs in use on every node): the latency of a pass
// of one. The span form builds a queue of one; the kept form is what the state owner runs.
void BM_SingleArrival(benchmark::State& state) {
  const Fleet& fleet = FleetOf(static_cast<int>(state.range(0)));
  SchedState snap(fleet);
  BusyState(snap);
  const Backlog one = MakeBacklog(fleet, 1);
  const Policy policy = *BuiltinRegistry().MakePolicy("balanced");
  for (auto _ : state) {
    SplitMix64 rng(1);
    benchmark::DoNotOptimize(Schedule(snap, one.pending, policy, rng));
  }
}
BENCHMARK(BM_SingleArrival)->Arg(1'000)->Arg(10'000)->Unit(benchmark::kMicrosecond);

// Preemption's search (FindPreemption) on a full fleet: every GPU of every node runs a 1-GPU
// job of priority 0 (8 x nodes running jobs, run times spread over an hour), and a job of
// priority 10 that fits nowhere asks for victims. args: nodes, the job's tasks, GPUs a task.
void BM_PreemptSearch(benchmark::State& state) {
  const Fleet& fleet = FleetOf(static_cast<int>(state.range(0)));
  SchedState st(fleet);
  std::deque<JobSpec> specs;
  SplitMix64 rng(3);
  uint64_t id = 1;
  for (size_t n = 0; n < st.size(); ++n) {
    for (int g = 0; g < 8; ++g) {
      const TaskAllocation a{.node = NodeId{static_cast<uint32_t>(n)}, .gpu_mask = static_cast<uint16_t>(1u << g)};
      if (!st.Allocate(a).ok()) std::abort();
      specs.push_back(JobSpec{.id = JobId{id}, .submit_time = Millis{0}});
      st.AddRunning(JobId{id}, RunningJob{.spec = &specs.back(), .tasks = {a},
                                          .since = Millis{static_cast<int64_t>(rng.Below(3'600'000))}});
      ++id;
    }
  }
  Policy policy = *BuiltinRegistry().MakePolicy("priority");
  policy.preemption.priority = true;
  const JobSpec high{.id = JobId{id}, .tasks = static_cast<int>(state.range(1)), .gpus_per_task = static_cast<int>(state.range(2)),
                     .priority = 10, .submit_time = Millis{3'600'000}};
  auto job = CompileJob(high, fleet);
  int64_t victims = 0;
  for (auto _ : state) {
    SplitMix64 r(1);
    auto p = FindPreemption(st, *job, policy, Millis{3'600'000}, r);
    if (!p) std::abort();
    victims += static_cast<int64_t>(p->victims.size());
  }
  state.counters["victims"] = static_cast<double>(victims) / static_cast<double>(state.iterations());
  state.counters["running"] = static_cast<double>(st.running().size());
}
// A pass with backfill (and the preemption searches a pass may add): every node of 8 GPUs runs
// 7 1-GPU jobs with time limits (1 to 24 h, started over the last hour: 7 x nodes running jobs
// with expected ends), and the queue holds jobs of 1 to 8 GPUs (MakeBacklog) with limits. The
// free GPU of each node takes a 1-GPU job; the first larger jobs get reservations, the rest are
// tried with them held. args: nodes, queued jobs, reservations (0: backfill off); the label
// says whether the preemption searches of one pass (up to 8, the jobs it could not place, of priority 1 over
// running jobs of 0: every queued job stands above every running one) are included.
void RunBackfillPass(benchmark::State& state, bool preempt) {
  const Fleet& fleet = FleetOf(static_cast<int>(state.range(0)));
  Backlog backlog = MakeBacklog(fleet, static_cast<int>(state.range(1)));
  SplitMix64 rng(5);
  for (size_t i = 0; i < backlog.specs.size(); ++i) {
    backlog.specs[i].time_limit = Millis{static_cast<int64_t>(600'000 + rng.Below(7'200'000))};
    backlog.specs[i].priority = preempt ? 1 : 0;
    backlog.specs[i].submit_time = Millis{3'600'000 + static_cast<int64_t>(i)};
  }
  SchedState st(fleet);
  std::deque<JobSpec> running;
  uint64_t id = 1'000'000'000;
  for (size_t n = 0; n < st.size(); ++n) {
    for (int g = 0; g < 7; ++g) {
      const TaskAllocation a{.node = NodeId{static_cast<uint32_t>(n)}, .gpu_mask = static_cast<uint16_t>(1u << g)};
      if (!st.Allocate(a).ok()) std::abort();
      running.push_back(JobSpec{.id = JobId{id}, .time_limit = Millis{static_cast<int64_t>(3'600'000 * (1 + rng.Below(24)))}});
      st.AddRunning(JobId{id}, RunningJob{.spec = &running.back(), .tasks = {a},
                                          .since = Millis{static_cast<int64_t>(rng.Below(3'600'000))}});
      ++id;
    }
  }
  Policy policy = *BuiltinRegistry().MakePolicy("fifo");
  policy.backfill.depth = static_cast<int>(state.range(2));
  policy.preemption.priority = preempt;
  JobQueue queue(*policy.queue);
  for (const PendingJob& p : backlog.pending) queue.Add(p);
  const Millis now{3'600'000};
  int64_t placed = 0, reserved = 0, victims = 0;
  for (auto _ : state) {
    SplitMix64 r(1);
    const Plan plan = Schedule(st, queue, policy, r, 0, now);
    placed += static_cast<int64_t>(plan.placements.size());
    reserved += static_cast<int64_t>(plan.reservations.size());
    if (preempt) {
      int searched = 0;
      for (const Stopped& sp : plan.stopped) {
        if (searched >= policy.preemption.max_per_pass) break;
        const PendingJob* p = nullptr;
        for (const JobQueue::Entry& e : queue.classes()[sp.cls].jobs) {
          if (e.id == sp.decision.job) p = &e.job;
          break;
        }
        if (!p) continue;
        ++searched;
        if (auto f = FindPreemption(st, *p, policy, now, r)) victims += static_cast<int64_t>(f->victims.size());
      }
    }
    benchmark::DoNotOptimize(plan);
  }
  const auto it = static_cast<double>(state.iterations());
  state.counters["placed/pass"] = static_cast<double>(placed) / it;
  state.counters["reservations/pass"] = static_cast<double>(reserved) / it;
  if (preempt) state.counters["victims/pass"] = static_cast<double>(victims) / it;
}
void BM_BackfillPass(benchmark::State& s) { RunBackfillPass(s, false); }
void BM_BackfillPreemptPass(benchmark::State& s) { RunBackfillPass(s, true); }
BENCHMARK(BM_BackfillPass)->Args({10'000, 100'000, 0})->Args({10'000, 100'000, 1})->Args({10'000, 100'000, 64})
    ->Args({10'000, 1'000, 1})->Args({10'000, 10'000, 1})->Args({10'000, 30'000, 1})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BackfillPreemptPass)->Args({10'000, 100'000, 1})->Args({10'000, 100'000, 64})->Unit(benchmark::kMillisecond);

BENCHMARK(BM_PreemptSearch)->Args({1'000, 1, 1})->Args({1'000, 2, 8})->Args({10'000, 1, 1})->Args({10'000, 2, 8})
    ->Args({10'000, 16, 8})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_KeptPassNothingChanged)->Args({10'000, 100'000})->Unit(benchmark::kMicrosecond);

void BM_SingleArrivalKept(benchmark::State& state, const std::string& policy_name) {
  const Fleet& fleet = FleetOf(static_cast<int>(state.range(0)));
  SchedState st(fleet);
  BusyState(st);
  const Backlog one = MakeBacklog(fleet, 1);
  const Policy policy = *BuiltinRegistry().MakePolicy(policy_name);
  JobQueue queue(*policy.queue);
  queue.Add(one.pending.front());
  for (auto _ : state) {
    SplitMix64 rng(1);
    benchmark::DoNotOptimize(Schedule(st, queue, policy, rng));
  }
}
BENCHMARK_CAPTURE(BM_SingleArrivalKept, balanced, std::string("balanced"))->Arg(1'000)->Arg(10'000)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_SingleArrivalKept, fifo, std::string("fifo"))->Arg(10'000)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_SingleArrivalKept, least_loaded, std::string("least-loaded"))->Arg(10'000)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_SingleArrivalKept, cost, std::string("cost"))->Arg(10'000)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_SingleArrivalKept, data_local, std::string("data-local"))->Arg(10'000)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_SingleArrivalKept, spread, std::string("spread"))->Arg(10'000)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace gp
