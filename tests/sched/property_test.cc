// Properties that must hold for any fleet, any queue and any policy:
//   1. every placement applies with Allocate() on the state it was planned on, in order, so no
//      GPU is given twice and no node goes over capacity (Allocate re-checks each figure);
//   2. a gang is all or nothing: a placed job has exactly `tasks` tasks of `gpus_per_task` GPUs;
//   3. one decision per pending job, "placed" exactly for the placed ones;
//   4. the same inputs and seed give the same plan.
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <bit>

#include "core/rng.h"
#include "fixtures.h"

namespace gp {
namespace {

struct Scenario {
  Fleet fleet;
  std::deque<JobSpec> specs;
  std::vector<PendingJob> pending;
  SchedState snap;
};

Scenario MakeScenario() {
  Scenario sc;
  sc.fleet.providers.push_back({.name = "p"});
  sc.fleet.sites.push_back({.name = "s"});
  const char* models[] = {"V100", "A100", "H100"};
  const int groups = *rc::gen::inRange(1, 5);
  for (int g = 0; g < groups; ++g) {
    NodeGroupSpec spec{.name_prefix = "g" + std::to_string(g), .count = *rc::gen::inRange(1, 6),
                       .gpus = *rc::gen::element(0, 1, 2, 4, 8), .gpu_model = models[*rc::gen::inRange(0, 3)],
                       .cpu = MilliCpu{*rc::gen::inRange(4, 65) * 1000}, .memory = MiB{*rc::gen::inRange(8, 257) * 1024}};
    RC_ASSERT(AddNodeGroup(sc.fleet, spec).ok());
  }
  sc.snap = SchedState(sc.fleet);
  // Some GPUs already busy or partly shared.
  for (uint32_t id = 0; id < sc.snap.size(); ++id) {
    sc.snap.Update(NodeId{id}, [](NodeState& n) {
      for (int i = 0; i < n.gpu_count; ++i) n.gpu_free[i] = static_cast<int16_t>(*rc::gen::element(0, 1000, 1000, 500));
      if (*rc::gen::inRange(0, 10) == 0) n.health = Health::kUnhealthy;
    });
  }
  const int jobs = *rc::gen::inRange(1, 40);
  for (int j = 0; j < jobs; ++j) {
    JobSpec s{.id = JobId{static_cast<uint64_t>(j + 1)}, .tasks = *rc::gen::element(1, 1, 2, 3),
              .gpus_per_task = *rc::gen::element(0, 1, 1, 2, 4, 8), .priority = *rc::gen::inRange(0, 3),
              .submit_time = Millis{*rc::gen::inRange(0, 20)}};
    if (s.gpus_per_task == 1 && *rc::gen::inRange(0, 3) == 0) s.gpu_share = GpuMilli{*rc::gen::inRange(1, 1001)};
    if (*rc::gen::inRange(0, 4) == 0) s.gpu_models = {models[*rc::gen::inRange(0, 3)]};
    s.cpu_per_task = MilliCpu{*rc::gen::inRange(0, 17) * 1000};
    s.memory_per_task = MiB{*rc::gen::inRange(0, 65) * 1024};
    if (*rc::gen::inRange(0, 2) == 0) s.estimated_duration = Millis{*rc::gen::inRange(1, 1000)};
    sc.specs.push_back(s);
  }
  for (const JobSpec& s : sc.specs) sc.pending.push_back(*CompileJob(s, sc.fleet));
  return sc;
}

bool SamePlan(const Plan& a, const Plan& b) {
  if (a.placements.size() != b.placements.size() || a.decisions.size() != b.decisions.size()) return false;
  for (size_t i = 0; i < a.placements.size(); ++i) {
    if (a.placements[i].job != b.placements[i].job) return false;
    for (size_t t = 0; t < a.placements[i].tasks.size(); ++t) {
      const auto& x = a.placements[i].tasks[t];
      const auto& y = b.placements[i].tasks[t];
      if (x.node != y.node || x.gpu_mask != y.gpu_mask || x.share != y.share) return false;
    }
  }
  for (size_t i = 0; i < a.decisions.size(); ++i) {
    if (a.decisions[i].job != b.decisions[i].job || a.decisions[i].outcome != b.decisions[i].outcome) return false;
  }
  return true;
}

RC_GTEST_PROP(SchedulerProperties, PlansAreSoundAndDeterministic, ()) {
  Scenario sc = MakeScenario();
  std::vector<std::string> names;
  for (const auto& e : BuiltinRegistry().Policies()) names.push_back(e.name);
  const Policy policy = testing::MakePolicy(*rc::gen::elementOf(names));
  const uint64_t seed = *rc::gen::arbitrary<uint64_t>();
  SplitMix64 rng(seed);
  const Plan plan = Schedule(sc.snap, sc.pending, policy, rng);

  SchedState applied = sc.snap;
  std::set<uint64_t> placed;
  for (const Placement& p : plan.placements) {
    const JobSpec& spec = sc.specs[p.job.value() - 1];
    RC_ASSERT(placed.insert(p.job.value()).second);
    RC_ASSERT(static_cast<int>(p.tasks.size()) == spec.tasks);
    for (const TaskAllocation& t : p.tasks) {
      RC_ASSERT(std::popcount(t.gpu_mask) == (spec.gpu_share < kWholeGpu ? 1 : spec.gpus_per_task));
      RC_ASSERT(sc.snap.node(t.node).health == Health::kHealthy);
      RC_ASSERT(applied.Allocate(t).ok());
    }
  }
  for (const NodeState& n : applied.nodes()) {
    RC_ASSERT(n.cpu_free.value() >= 0);
    RC_ASSERT(n.memory_free.value() >= 0);
    for (int i = 0; i < n.gpu_count; ++i) RC_ASSERT(n.gpu_free[i] >= 0);
  }
  RC_ASSERT(plan.decisions.size() == sc.pending.size());
  for (const Decision& d : plan.decisions) {
    RC_ASSERT((d.outcome == Outcome::kPlaced) == (placed.count(d.job.value()) == 1));
    if (d.outcome != Outcome::kPlaced) RC_ASSERT(!d.reasons().empty());
  }
  SplitMix64 again(seed);
  RC_ASSERT(SamePlan(plan, Schedule(sc.snap, sc.pending, policy, again)));
}

// A capped pass (a live server's: at most N placements a turn of its loop) followed by more,
// each on the state the last one left, places the same jobs in the same order on the same
// GPUs as one pass without a cap, for every policy.
RC_GTEST_PROP(SchedulerProperties, CappedPassesAddUpToOneUncappedPass, ()) {
  Scenario sc = MakeScenario();
  std::vector<std::string> names;
  for (const auto& e : BuiltinRegistry().Policies()) names.push_back(e.name);
  const Policy policy = testing::MakePolicy(*rc::gen::elementOf(names));
  const uint64_t seed = *rc::gen::arbitrary<uint64_t>();
  const size_t cap = *rc::gen::inRange<size_t>(1, 6);
  auto run = [&](size_t max) {
    SchedState state = sc.snap;
    JobQueue queue(*policy.queue);
    for (const PendingJob& p : sc.pending) queue.Add(p);
    SplitMix64 rng(seed);
    std::vector<Placement> all;
    for (int round = 0; round < 100; ++round) {
      const Plan plan = Schedule(state, queue, policy, rng, max);
      for (const Placement& p : plan.placements) {
        for (const TaskAllocation& t : p.tasks) RC_ASSERT(state.Allocate(t).ok());
        queue.Remove(p.job);
        all.push_back(p);
      }
      for (const Stopped& st : plan.stopped) queue.Block(st.cls, state.generation(), st.decision);
      if (max == 0) RC_ASSERT(!plan.capped);
      if (!plan.capped) break;
      RC_ASSERT(plan.placements.size() == max);
    }
    return all;
  };
  const std::vector<Placement> once = run(0);
  const std::vector<Placement> capped = run(cap);
  RC_ASSERT(once.size() == capped.size());
  for (size_t i = 0; i < once.size(); ++i) {
    RC_ASSERT(once[i].job == capped[i].job);
    for (size_t t = 0; t < once[i].tasks.size(); ++t) {
      RC_ASSERT(once[i].tasks[t].node == capped[i].tasks[t].node);
      RC_ASSERT(once[i].tasks[t].gpu_mask == capped[i].tasks[t].gpu_mask);
    }
  }
}

// Allocate then Release restores a node exactly, load included.
RC_GTEST_PROP(SchedulerProperties, ReleaseUndoesAllocate, ()) {
  Scenario sc = MakeScenario();
  const NodeState before = sc.snap.nodes()[0];
  NodeState n = before;
  const TaskAllocation a{.node = n.id, .gpu_mask = static_cast<uint16_t>(n.WholeFreeMask() & 0b101),
                         .cpu = MilliCpu{std::min<int64_t>(n.cpu_free.value(), 1500)}};
  RC_ASSERT(Allocate(n, a).ok());
  RC_ASSERT(Release(n, a).ok());
  RC_ASSERT(n.gpu_free == before.gpu_free);
  RC_ASSERT(n.cpu_free == before.cpu_free);
  RC_ASSERT(n.load.gpu == before.load.gpu);
  RC_ASSERT(n.load.cpu == before.load.cpu);
  RC_ASSERT(!Release(n, a).ok() || a.gpu_mask == 0);  // a second release is refused
}

}  // namespace
}  // namespace gp

namespace gp {
namespace {

// The state kept by deltas equals the state rebuilt from its nodes: after every step of a
// random sequence of allocations, releases, health and drain changes, quarantines and load
// updates, each node's bucket and partial flag, the free and total GPU figures, the highest
// price and the node classes agree with a SchedState built afresh from the same node states,
// and a pass gives the same plan on both.
RC_GTEST_PROP(SchedStateProperties, DeltasMatchARebuild, ()) {
  Scenario sc = MakeScenario();
  SchedState& live = sc.snap;
  std::vector<TaskAllocation> held;
  const int steps = *rc::gen::inRange(1, 60);
  for (int step = 0; step < steps; ++step) {
    const uint32_t id = *rc::gen::inRange<uint32_t>(0, static_cast<uint32_t>(live.size()));
    const NodeState& n = live.node(NodeId{id});
    switch (*rc::gen::inRange(0, 6)) {
      case 0: {  // allocate some free whole GPUs, or a share of one
        const uint16_t free = n.WholeFreeMask();
        TaskAllocation a{.node = NodeId{id}, .gpu_mask = static_cast<uint16_t>(free & *rc::gen::inRange<uint16_t>(0, 0xFFFF)),
                         .cpu = MilliCpu{std::min<int64_t>(n.cpu_free.value(), 1000)}};
        if (a.gpu_mask != 0 && *rc::gen::inRange(0, 3) == 0) {
          a.gpu_mask = static_cast<uint16_t>(a.gpu_mask & -a.gpu_mask);
          a.share = GpuMilli{*rc::gen::inRange(1, 1000)};
        }
        if (live.Allocate(a).ok()) held.push_back(a);
        break;
      }
      case 1:
        if (!held.empty()) {
          const size_t k = *rc::gen::inRange<size_t>(0, held.size());
          RC_ASSERT(live.Release(held[k]).ok());
          held.erase(held.begin() + static_cast<long>(k));
        }
        break;
      case 2:
        live.Update(NodeId{id}, [&](NodeState& s) { s.health = static_cast<Health>(*rc::gen::inRange(0, 3)); });
        break;
      case 3:
        live.Update(NodeId{id}, [&](NodeState& s) {
          s.schedulability = *rc::gen::arbitrary<bool>() ? Schedulability::kDraining : Schedulability::kSchedulable;
        });
        break;
      case 4:
        live.Update(NodeId{id}, [&](NodeState& s) { s.quarantined = static_cast<uint16_t>(*rc::gen::inRange(0, 4)); });
        break;
      default:
        live.Update(NodeId{id}, [&](NodeState& s) { s.load.cpu = PerMille{*rc::gen::inRange(0, 1000)}; });
        break;
    }
    SchedState rebuilt;
    rebuilt.set_fleet(sc.fleet);
    for (const NodeState& s : live.nodes()) rebuilt.AddNode(s);
    RC_ASSERT(rebuilt.free_gpu_milli() == live.free_gpu_milli());
    RC_ASSERT(rebuilt.total_gpu_milli() == live.total_gpu_milli());
    RC_ASSERT(rebuilt.max_price() == live.max_price());
    RC_ASSERT(rebuilt.capacities() == live.capacities());
    for (uint32_t i = 0; i < live.size(); ++i) {
      const auto& a = live.index().where(i);
      const auto& b = rebuilt.index().where(i);
      RC_ASSERT(live.index().slots()[static_cast<size_t>(a.slot)].key == rebuilt.index().slots()[static_cast<size_t>(b.slot)].key);
      RC_ASSERT(a.bucket == b.bucket);
      RC_ASSERT(a.partial == b.partial);
      RC_ASSERT(live.index().slots()[static_cast<size_t>(a.slot)].by_free[static_cast<size_t>(a.bucket)].Test(i));
    }
  }
  const Policy policy = testing::MakePolicy("fifo");
  SchedState rebuilt;
  rebuilt.set_fleet(sc.fleet);
  for (const NodeState& s : live.nodes()) rebuilt.AddNode(s);
  SplitMix64 r1(5), r2(5);
  RC_ASSERT(SamePlan(Schedule(live, sc.pending, policy, r1), Schedule(rebuilt, sc.pending, policy, r2)));
}

// A pass never writes the state: the same pass twice on it gives the same plan, and the
// state's generation and figures are what they were.
RC_GTEST_PROP(SchedStateProperties, APassLeavesTheStateAsItWas, ()) {
  Scenario sc = MakeScenario();
  const uint64_t gen = sc.snap.generation();
  const int64_t free = sc.snap.free_gpu_milli();
  const std::vector<NodeState> before = sc.snap.nodes();
  SplitMix64 r1(3);
  const Plan a = Schedule(sc.snap, sc.pending, testing::MakePolicy("balanced"), r1);
  RC_ASSERT(sc.snap.generation() == gen);
  RC_ASSERT(sc.snap.free_gpu_milli() == free);
  for (size_t i = 0; i < before.size(); ++i) RC_ASSERT(sc.snap.nodes()[i].gpu_free == before[i].gpu_free);
  SplitMix64 r2(3);
  RC_ASSERT(SamePlan(a, Schedule(sc.snap, sc.pending, testing::MakePolicy("balanced"), r2)));
}

}  // namespace
}  // namespace gp
