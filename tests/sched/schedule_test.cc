// Narrative tests of Schedule(): each sets a scene, says what a user expects, and checks it.
#include <gtest/gtest.h>

#include <bit>

#include "core/rng.h"
#include "fixtures.h"

namespace gp {
namespace {

using testing::Jobs;
using testing::MakePolicy;
using testing::Occupy;
using testing::Uniform;

Plan RunPolicy(const SchedState& s, const std::vector<PendingJob>& p, const std::string& policy, uint64_t seed = 1) {
  const Policy pol = MakePolicy(policy);
  SplitMix64 rng(seed);
  return Schedule(s, p, pol, rng);
}

// Three 8-GPU nodes with 2, 4 and 8 GPUs free. A 2-GPU job under best-fit goes where it leaves
// the least free (node-1, filling it); under spread where it leaves the most (node-3).
TEST(ScheduleTest, BestFitPacksSpreadSpreads) {
  const Fleet fleet = Uniform(3, 8);
  SchedState s(fleet);
  Occupy(s, 0, 6);
  Occupy(s, 1, 4);
  Jobs jobs(fleet);
  jobs.Add({.gpus_per_task = 2});
  const Plan packed = RunPolicy(s, jobs.pending(), "fifo");
  ASSERT_EQ(packed.placements.size(), 1u);
  EXPECT_EQ(packed.placements[0].tasks[0].node, NodeId{0});
  EXPECT_EQ(packed.placements[0].tasks[0].gpu_mask, 0b11000000) << "the two free GPUs, 6 and 7";
  const Plan spread = RunPolicy(s, jobs.pending(), "spread");
  EXPECT_EQ(spread.placements[0].tasks[0].node, NodeId{2});
}

// First fit (Tiresias' placement): three 4-GPU nodes with 1, 4 and 2 GPUs free. A 2-GPU job
// goes to the first node in id order that fits (node 1), where best fit fills node 2.
TEST(ScheduleTest, FirstFitTakesTheLowestIdThatFits) {
  const Fleet fleet = Uniform(3, 4);
  SchedState s(fleet);
  Occupy(s, 0, 3);
  Occupy(s, 2, 2);
  Jobs jobs(fleet);
  jobs.Add({.gpus_per_task = 2});
  EXPECT_EQ(RunPolicy(s, jobs.pending(), "first-fit").placements.at(0).tasks[0].node, NodeId{1});
  EXPECT_EQ(RunPolicy(s, jobs.pending(), "fifo").placements.at(0).tasks[0].node, NodeId{2});
}

// Skip-ahead FIFO and strict FIFO: one 4-GPU node with 2 GPUs in use; job 1 (first) asks 4,
// job 2 asks 1. `fifo` passes over job 1 and starts job 2; `fifo-strict` starts nothing until
// job 1 can (head of line), in this pass and in the next one on the same state.
TEST(ScheduleTest, StrictFifoStartsNothingAheadOfTheFirstJob) {
  const Fleet fleet = Uniform(1, 4);
  SchedState s(fleet);
  Occupy(s, 0, 2);
  Jobs jobs(fleet);
  jobs.Add({.gpus_per_task = 4, .submit_time = Millis{1}});
  jobs.Add({.gpus_per_task = 1, .submit_time = Millis{2}});
  EXPECT_EQ(RunPolicy(s, jobs.pending(), "fifo").placements.size(), 1u);
  EXPECT_EQ(RunPolicy(s, jobs.pending(), "fifo-strict/fifo").placements.size(), 0u);
  // The kept queue, as the state owner runs it: the head's class is blocked after it failed,
  // and the next pass still starts nothing behind it.
  const Policy strict = MakePolicy("fifo-strict/fifo");
  JobQueue queue(*strict.queue);
  for (const PendingJob& p : jobs.pending()) queue.Add(p);
  SplitMix64 rng(1);
  const Plan first = Schedule(s, queue, strict, rng);
  ASSERT_EQ(first.stopped.size(), 1u);
  queue.Block(first.stopped[0].cls, s.generation(), first.stopped[0].decision);
  EXPECT_EQ(Schedule(s, queue, strict, rng).placements.size(), 0u);
}

// Tiresias' thresholds as parameters: las:3250:7200 has three queues (below 3,250 GPU-s, below
// 7,200, the rest); plain las two (below 3,600).
TEST(QueueOrderTest, LasQueuesByThresholds) {
  const Fleet fleet = Uniform(1, 8);
  Jobs jobs(fleet);
  const Policy three = MakePolicy("las:3250:7200/fifo");
  const Policy two = MakePolicy("las");
  const struct {
    int64_t attained_s;
    int64_t three, two;
  } cases[] = {{0, 0, 0}, {3'249, 0, 0}, {3'250, 1, 0}, {3'600, 1, 1}, {7'199, 1, 1}, {7'200, 2, 1}, {100'000, 2, 1}};
  for (const auto& c : cases) {
    PendingJob& p = jobs.Add({});
    p.attained = Millis{c.attained_s * 1000};
    EXPECT_EQ(three.queue->Key(p)[0], c.three) << c.attained_s;
    EXPECT_EQ(two.queue->Key(p)[0], c.two) << c.attained_s;
  }
  for (const char* bad : {"las:abc/fifo", "las:7200:3250/fifo", "las:0/fifo", "las:/fifo"}) {
    auto p = BuiltinRegistry().MakePolicy(bad);
    ASSERT_FALSE(p) << bad;
    EXPECT_NE(p.error().message().find("increasing thresholds in GPU-seconds"), std::string::npos) << p.error().message();
  }
  auto none = BuiltinRegistry().MakePolicy("fifo:3/fifo");
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message().find("takes no arguments"), std::string::npos) << none.error().message();
}

// The seed article's section 4.2: loads 1.8, 1.6, 1.4, 0.8; the task goes to node 4.
TEST(ScheduleTest, LeastLoadedChoosesSeedNodeFour) {
  Fleet fleet = Uniform(4, 8);
  const int usage[4][3] = {{600, 400, 800}, {400, 600, 600}, {200, 800, 400}, {300, 300, 200}};
  for (int i = 0; i < 4; ++i) {
    fleet.nodes[i].measured = Utilisation{PerMille{usage[i][0]}, PerMille{usage[i][1]}, PerMille{usage[i][2]}};
  }
  const SchedState s(fleet);
  Jobs jobs(fleet);
  jobs.Add({.gpus_per_task = 1});
  const Plan plan = RunPolicy(s, jobs.pending(), "least-loaded");
  ASSERT_EQ(plan.placements.size(), 1u);
  EXPECT_EQ(plan.placements[0].tasks[0].node, NodeId{3});
  // And --explain shows L for every node.
  SplitMix64 rng(1);
  const auto evals = EvaluateNodes(s, jobs.pending()[0], MakePolicy("least-loaded"), rng);
  const double want_l[] = {1.8, 1.6, 1.4, 0.8};
  for (int i = 0; i < 4; ++i) {
    double l = -1;
    for (const ScoreTerm& t : evals[i].terms) {
      if (t.name == "L") l = t.value;
    }
    EXPECT_NEAR(l, want_l[i], 1e-9) << "node " << i + 1;
  }
}

// Least-loaded must see what the pass itself placed: four 1-GPU jobs on four idle 2-GPU nodes
// go one per node, not all onto the first "least loaded" node.
TEST(ScheduleTest, LeastLoadedCountsItsOwnPlacements) {
  const Fleet fleet = Uniform(4, 2);
  Jobs jobs(fleet);
  for (int i = 0; i < 4; ++i) jobs.Add({.gpus_per_task = 1});
  const Plan plan = RunPolicy(SchedState(fleet), jobs.pending(), "least-loaded");
  ASSERT_EQ(plan.placements.size(), 4u);
  std::set<NodeId> nodes;
  for (const Placement& p : plan.placements) nodes.insert(p.tasks[0].node);
  EXPECT_EQ(nodes.size(), 4u);
}

// Nodes with 4, 4 and 1 GPUs free (9). A gang of 3 tasks x 3 GPUs (9) places two tasks and
// then finds no node for the third, so none of its tasks may keep GPUs: the 4-GPU job queued
// behind it must still find a node with 4 free.
TEST(ScheduleTest, GangIsAllOrNothing) {
  const Fleet fleet = Uniform(3, 8);
  SchedState s(fleet);
  Occupy(s, 0, 4);
  Occupy(s, 1, 4);
  Occupy(s, 2, 7);
  Jobs jobs(fleet);
  jobs.Add({.tasks = 3, .gpus_per_task = 3, .submit_time = Millis{0}});
  jobs.Add({.gpus_per_task = 4, .submit_time = Millis{1}});
  const Plan plan = RunPolicy(s, jobs.pending(), "fifo");
  ASSERT_EQ(plan.placements.size(), 1u);
  EXPECT_EQ(plan.placements[0].job, JobId{2});
  const Decision& gang = plan.decisions[0];
  EXPECT_EQ(gang.outcome, Outcome::kNotNow) << "3 x 3 fits the fleet once GPUs free";
  ASSERT_FALSE(gang.reasons().empty());
  EXPECT_EQ(gang.reasons()[0].example.code, ReasonCode::kGangSize);
  EXPECT_EQ(gang.reasons()[0].example.available, 2) << "two nodes could take one task each";
}

TEST(ScheduleTest, GangSpansNodesAndPrefersOneNodeWhenItFits) {
  const Fleet fleet = Uniform(4, 8);
  Jobs jobs(fleet);
  jobs.Add({.tasks = 2, .gpus_per_task = 8});
  jobs.Add({.tasks = 2, .gpus_per_task = 2});
  const Plan plan = RunPolicy(SchedState(fleet), jobs.pending(), "fifo");
  ASSERT_EQ(plan.placements.size(), 2u);
  const auto& big = plan.placements[0].tasks;
  ASSERT_EQ(big.size(), 2u);
  EXPECT_NE(big[0].node, big[1].node);
  EXPECT_EQ(big[0].gpu_mask, 0xFF);
  const auto& small = plan.placements[1].tasks;
  EXPECT_EQ(small[0].node, small[1].node) << "gang-locality keeps the small gang together";
  EXPECT_EQ(small[0].gpu_mask & small[1].gpu_mask, 0) << "different GPUs";
}

// Three 8-GPU nodes, one GPU busy on each (21 of 24 free).
TEST(ScheduleTest, NeverVersusNotNow) {
  const Fleet fleet = Uniform(3, 8);
  SchedState s(fleet);
  for (uint32_t i = 0; i < 3; ++i) Occupy(s, i, 1);
  Jobs jobs(fleet);
  jobs.Add({.gpus_per_task = 16});                        // larger than any node
  jobs.Add({.gpus_per_task = 8});                         // fits an empty node; none is empty
  jobs.Add({.gpus_per_task = 1, .gpu_models = {"H100"}});  // no such model here
  jobs.Add({.tasks = 4, .gpus_per_task = 8});             // 32 GPUs on a 24-GPU fleet
  jobs.Add({.tasks = 3, .gpus_per_task = 8});             // 24: all of it, once it frees
  const Plan plan = RunPolicy(s, jobs.pending(), "fifo");
  EXPECT_TRUE(plan.placements.empty());
  ASSERT_EQ(plan.decisions.size(), 5u);
  EXPECT_EQ(plan.decisions[0].outcome, Outcome::kNever);
  EXPECT_EQ(plan.decisions[0].reasons()[0].example.code, ReasonCode::kGpuCount);
  EXPECT_EQ(plan.decisions[0].reasons()[0].nodes, 3);
  EXPECT_EQ(plan.decisions[1].outcome, Outcome::kNotNow);
  EXPECT_EQ(plan.decisions[1].reasons()[0].example.asked, 8);
  EXPECT_EQ(plan.decisions[1].reasons()[0].example.available, 7);
  EXPECT_EQ(plan.decisions[2].outcome, Outcome::kNever);
  EXPECT_EQ(plan.decisions[2].reasons()[0].example.code, ReasonCode::kGpuModel);
  // Too big for what is free in the whole cluster: not searched, one cluster-wide reason.
  EXPECT_EQ(plan.decisions[3].outcome, Outcome::kNever);
  const Reason& cluster = plan.decisions[3].reasons()[0].example;
  EXPECT_EQ(cluster.code, ReasonCode::kClusterGpus);
  EXPECT_EQ(cluster.asked, 32'000);
  EXPECT_EQ(cluster.available, 21'000);
  EXPECT_EQ(cluster.capacity, 24'000);
  EXPECT_EQ(plan.decisions[4].outcome, Outcome::kNotNow);
  EXPECT_EQ(plan.searched, 3);
}

TEST(ScheduleTest, FitsFleetIsTheAdmissionCheck) {
  const Fleet fleet = Uniform(3, 8);
  SchedState s(fleet);
  for (uint32_t i = 0; i < 3; ++i) Occupy(s, i, 8);  // all busy: admission ignores use
  Jobs jobs(fleet);
  EXPECT_FALSE(FitsFleet(s, jobs.Add({.gpus_per_task = 16})));
  EXPECT_FALSE(FitsFleet(s, jobs.Add({.tasks = 4, .gpus_per_task = 8})));
  EXPECT_FALSE(FitsFleet(s, jobs.Add({.gpus_per_task = 1, .gpu_models = {"H100"}})));
  EXPECT_TRUE(FitsFleet(s, jobs.Add({.tasks = 3, .gpus_per_task = 8})));
  EXPECT_TRUE(FitsFleet(s, jobs.Add({.tasks = 12, .gpus_per_task = 2})));
  EXPECT_FALSE(FitsFleet(s, jobs.Add({.tasks = 13, .gpus_per_task = 2, .cpu_per_task = MilliCpu{16'000}})))
      << "64 cores per node hold 4 such tasks: 12 in all";
}

// Shares of one GPU pack onto the GPU with the least room that still fits.
TEST(ScheduleTest, GpuSharesPack) {
  const Fleet fleet = Uniform(1, 2);
  Jobs jobs(fleet);
  jobs.Add({.gpu_share = GpuMilli{600}});
  jobs.Add({.gpu_share = GpuMilli{300}});
  jobs.Add({.gpu_share = GpuMilli{300}});
  const Plan plan = RunPolicy(SchedState(fleet), jobs.pending(), "fifo");
  ASSERT_EQ(plan.placements.size(), 3u);
  EXPECT_EQ(plan.placements[0].tasks[0].gpu_mask, 0b01);
  EXPECT_EQ(plan.placements[1].tasks[0].gpu_mask, 0b01) << "600 + 300 on GPU 0";
  EXPECT_EQ(plan.placements[2].tasks[0].gpu_mask, 0b10) << "GPU 0 has only 100 left";
}

// NVLink pairs (0-1, 2-3, ...), GPU 0 busy. A 1-GPU task takes the lonely GPU 1 and keeps whole
// pairs free; a 2-GPU task takes a connected pair.
TEST(ScheduleTest, GpuChoiceFollowsNvLink) {
  Fleet fleet;
  fleet.providers.push_back({.name = "p"});
  fleet.sites.push_back({.name = "s"});
  ASSERT_TRUE(AddNodeGroup(fleet, {.gpus = 8, .gpu_model = "A100", .nvlink = NodeGroupSpec::NvLink::kPairs}).ok());
  SchedState s(fleet);
  Occupy(s, 0, 1);
  Jobs jobs(fleet);
  jobs.Add({.gpus_per_task = 1});
  EXPECT_EQ(RunPolicy(s, jobs.pending(), "fifo").placements[0].tasks[0].gpu_mask, 0b10);
  Jobs pair(fleet);
  pair.Add({.gpus_per_task = 2});
  EXPECT_EQ(RunPolicy(s, pair.pending(), "fifo").placements[0].tasks[0].gpu_mask, 0b1100);
}

// Three providers' nodes: the cost policy takes the cheapest; a price ceiling rules some out.
TEST(ScheduleTest, CostAndPriceCeiling) {
  Fleet fleet;
  const GpuModelId h100 = *fleet.InternModel("H100");
  const double prices[] = {3.90, 1.40, 2.20};
  for (uint32_t p = 0; p < 3; ++p) {
    fleet.providers.push_back({.id = ProviderId{p}, .name = "p" + std::to_string(p),
                               .prices = {{h100, PriceTier::kOnDemand, MicroUsd{static_cast<int64_t>(prices[p] * 1e6)}}}});
  }
  fleet.sites.push_back({.name = "s"});
  for (uint32_t p = 0; p < 3; ++p) {
    ASSERT_TRUE(AddNodeGroup(fleet, {.name_prefix = "n" + std::to_string(p), .gpus = 8, .gpu_model = "H100",
                                     .provider = ProviderId{p}}).ok());
  }
  Jobs jobs(fleet);
  jobs.Add({.gpus_per_task = 1});
  EXPECT_EQ(RunPolicy(SchedState(fleet), jobs.pending(), "cost").placements[0].tasks[0].node, NodeId{1});
  Jobs capped(fleet);
  capped.Add({.gpus_per_task = 1, .max_price_per_gpu_hour = MicroUsd{1'000'000}});
  const Plan none = RunPolicy(SchedState(fleet), capped.pending(), "fifo");
  ASSERT_TRUE(none.placements.empty());
  EXPECT_EQ(none.decisions[0].outcome, Outcome::kNever) << "no node will ever cost $1.00";
  EXPECT_EQ(none.decisions[0].reasons()[0].example.code, ReasonCode::kPriceCeiling);
}

// 500 GB of data at site "b". Across the default 1 Gbit/s WAN that is over an hour; on site it
// is bounded by the node's 100 Gbit/s NIC (40 s). data-local picks the node at "b".
TEST(ScheduleTest, DataLocalFollowsTheData) {
  Fleet fleet;
  fleet.providers.push_back({.name = "p"});
  fleet.sites.push_back({.id = SiteId{0}, .name = "a", .location = {40, -74}});
  fleet.sites.push_back({.id = SiteId{1}, .name = "b", .location = {50, 8}});
  ASSERT_TRUE(AddNodeGroup(fleet, {.name_prefix = "a", .count = 2, .gpus = 8, .gpu_model = "V100", .site = SiteId{0}}).ok());
  ASSERT_TRUE(AddNodeGroup(fleet, {.name_prefix = "b", .count = 1, .gpus = 8, .gpu_model = "V100", .site = SiteId{1}}).ok());
  Jobs jobs(fleet);
  jobs.Add({.gpus_per_task = 1, .data = DataSet{.site = "b", .size = Bytes{500'000'000'000}}});
  EXPECT_EQ(RunPolicy(SchedState(fleet), jobs.pending(), "data-local").placements[0].tasks[0].node, NodeId{2});
  EXPECT_EQ(RunPolicy(SchedState(fleet), jobs.pending(), "fifo").placements[0].tasks[0].node, NodeId{0})
      << "a policy that ignores data takes the first node";
}

TEST(ScheduleTest, UnhealthyAndDrainingNodesAreSkipped) {
  const Fleet fleet = Uniform(3, 8);
  SchedState s(fleet);
  s.Update(NodeId{0}, [](NodeState& n) { n.health = Health::kUnhealthy; });
  s.Update(NodeId{1}, [](NodeState& n) { n.schedulability = Schedulability::kDraining; });
  Jobs jobs(fleet);
  jobs.Add({.gpus_per_task = 1});
  EXPECT_EQ(RunPolicy(s, jobs.pending(), "fifo").placements[0].tasks[0].node, NodeId{2});
  s.Update(NodeId{2}, [](NodeState& n) { n.health = Health::kSuspect; });
  const Plan none = RunPolicy(s, jobs.pending(), "fifo");
  ASSERT_TRUE(none.placements.empty());
  EXPECT_EQ(none.decisions[0].outcome, Outcome::kNotNow) << "nodes can recover";
}

TEST(ScheduleTest, RandomPolicyIsSeeded) {
  const Fleet fleet = Uniform(50, 8);
  Jobs jobs(fleet);
  for (int i = 0; i < 20; ++i) jobs.Add({.gpus_per_task = 1 + i % 3});
  auto nodes_of = [&](uint64_t seed) {
    std::vector<uint32_t> v;
    for (const Placement& p : RunPolicy(SchedState(fleet), jobs.pending(), "random", seed).placements) {
      v.push_back(p.tasks[0].node.value());
    }
    return v;
  };
  EXPECT_EQ(nodes_of(7), nodes_of(7));
  EXPECT_NE(nodes_of(7), nodes_of(8));
}

}  // namespace
}  // namespace gp

namespace gp {
namespace {

// A node that passes every filter and that Allocate refuses is a bug, and the plan says so: the
// job is not placed, and plan.internal names it (never a plain "not placed"). Made here with a
// policy that runs no CPU filter, so a task asking more CPU than a node has gets that far.
TEST(ScheduleTest, AnInconsistencyIsReportedNotPassedOffAsNotPlaced) {
  const Fleet fleet = testing::Uniform(2, 8);
  SchedState s(fleet);
  testing::Jobs jobs(fleet);
  jobs.Add({.gpus_per_task = 1, .cpu_per_task = MilliCpu{1'000'000}, .submit_time = Millis{0}});
  Policy policy = testing::MakePolicy("fifo");
  for (size_t i = 0; i < policy.filter_names.size(); ++i) {
    if (policy.filter_names[i] == "cpu") {
      policy.filters.erase(policy.filters.begin() + static_cast<long>(i));
      policy.filter_names.erase(policy.filter_names.begin() + static_cast<long>(i));
      break;
    }
  }
  SplitMix64 rng(1);
  const Plan plan = Schedule(s, jobs.pending(), policy, rng);
  EXPECT_TRUE(plan.placements.empty());
  ASSERT_FALSE(plan.internal.empty());
  EXPECT_NE(plan.internal[0].message().find("passed every filter, but Allocate refused"), std::string::npos)
      << plan.internal[0].message();
  // With every filter, the same job is simply not placed, for its reason, and nothing is wrong.
  SplitMix64 rng2(1);
  const Plan fine = Schedule(s, jobs.pending(), testing::MakePolicy("fifo"), rng2);
  EXPECT_TRUE(fine.internal.empty());
  EXPECT_EQ(fine.decisions[0].reasons()[0].example.code, ReasonCode::kCpu);
}

}  // namespace
}  // namespace gp
