// The contract every registered policy keeps, whatever its queue order or scorers.
#include <gtest/gtest.h>

#include <bit>

#include "core/rng.h"
#include "fixtures.h"

namespace gp {
namespace {

using testing::Jobs;
using testing::Uniform;

class PolicyContract : public ::testing::TestWithParam<std::string> {
 protected:
  Plan RunPolicy(const SchedState& s, const std::vector<PendingJob>& p, uint64_t seed = 3) {
    const Policy policy = testing::MakePolicy(GetParam());
    SplitMix64 rng(seed);
    return Schedule(s, p, policy, rng);
  }
};

TEST_P(PolicyContract, PlacesAFeasibleJobOnAnIdleFleet) {
  const Fleet fleet = Uniform(3, 4);
  Jobs jobs(fleet);
  jobs.Add({.tasks = 2, .gpus_per_task = 3});
  const Plan plan = RunPolicy(SchedState(fleet), jobs.pending());
  ASSERT_EQ(plan.placements.size(), 1u);
  ASSERT_EQ(plan.placements[0].tasks.size(), 2u);
  for (const TaskAllocation& t : plan.placements[0].tasks) EXPECT_EQ(std::popcount(t.gpu_mask), 3);
  EXPECT_EQ(plan.decisions[0].outcome, Outcome::kPlaced);
}

// Ten 1-GPU jobs on 8 GPUs: exactly eight start, each on its own GPU; two wait.
TEST_P(PolicyContract, NeverGivesMoreThanThereIs) {
  const Fleet fleet = Uniform(2, 4);
  Jobs jobs(fleet);
  for (int i = 0; i < 10; ++i) jobs.Add({.gpus_per_task = 1, .priority = i % 3, .submit_time = Millis{i}});
  const Plan plan = RunPolicy(SchedState(fleet), jobs.pending());
  ASSERT_EQ(plan.placements.size(), 8u);
  std::set<std::pair<uint32_t, uint16_t>> gpus;
  for (const Placement& p : plan.placements) gpus.insert({p.tasks[0].node.value(), p.tasks[0].gpu_mask});
  EXPECT_EQ(gpus.size(), 8u);
  int waiting = 0;
  for (const Decision& d : plan.decisions) waiting += d.outcome == Outcome::kNotNow;
  EXPECT_EQ(waiting, 2);
}

TEST_P(PolicyContract, RefusesWhatCanNeverFit) {
  const Fleet fleet = Uniform(2, 4);
  Jobs jobs(fleet);
  jobs.Add({.gpus_per_task = 1, .gpu_models = {"TPU"}});
  const Plan plan = RunPolicy(SchedState(fleet), jobs.pending());
  EXPECT_TRUE(plan.placements.empty());
  EXPECT_EQ(plan.decisions[0].outcome, Outcome::kNever);
}

TEST_P(PolicyContract, SameInputsSamePlan) {
  const Fleet fleet = Uniform(16, 8);
  SchedState s(fleet);
  for (uint32_t i = 0; i < 16; i += 3) testing::Occupy(s, i, static_cast<int>(i % 8));
  Jobs jobs(fleet);
  for (int i = 0; i < 40; ++i) jobs.Add({.tasks = 1 + i % 2, .gpus_per_task = 1 + i % 4, .submit_time = Millis{i % 7}});
  const Plan a = RunPolicy(s, jobs.pending(), 11);
  const Plan b = RunPolicy(s, jobs.pending(), 11);
  ASSERT_EQ(a.placements.size(), b.placements.size());
  for (size_t i = 0; i < a.placements.size(); ++i) {
    EXPECT_EQ(a.placements[i].job, b.placements[i].job);
    for (size_t t = 0; t < a.placements[i].tasks.size(); ++t) {
      EXPECT_EQ(a.placements[i].tasks[t].node, b.placements[i].tasks[t].node);
      EXPECT_EQ(a.placements[i].tasks[t].gpu_mask, b.placements[i].tasks[t].gpu_mask);
    }
  }
}

std::vector<std::string> AllPolicies() {
  std::vector<std::string> names;
  for (const auto& e : BuiltinRegistry().Policies()) names.push_back(e.name);
  names.push_back("las/spread");
  names.push_back("sjf/cost");
  return names;
}

INSTANTIATE_TEST_SUITE_P(Every, PolicyContract, ::testing::ValuesIn(AllPolicies()),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           std::string n = param_info.param;
                           for (char& c : n) if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return n;
                         });

}  // namespace
}  // namespace gp
