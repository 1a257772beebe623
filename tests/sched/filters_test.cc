// Table-driven: each filter on one node, with the numbers its Reason carries.
#include <gtest/gtest.h>

#include "fixtures.h"

namespace gp {
namespace {

using testing::Jobs;
using testing::Uniform;

struct FilterCase {
  std::string name;
  std::function<void(JobSpec&)> job;
  std::function<void(NodeState&)> node;
  std::optional<ReasonCode> want;
  int64_t asked = 0, available = 0, capacity = 0;
};

TEST(FiltersTest, Table) {
  const Fleet fleet = Uniform(1, 8, "A100");  // A100: 80 GiB, list price $1.80
  const FilterCase cases[] = {
      {"fits", [](JobSpec& j) { j.gpus_per_task = 8; }, [](NodeState&) {}, std::nullopt},
      {"too few free GPUs", [](JobSpec& j) { j.gpus_per_task = 4; },
       [](NodeState& n) { n.gpu_free[0] = n.gpu_free[1] = n.gpu_free[2] = n.gpu_free[3] = n.gpu_free[4] = 0; },
       ReasonCode::kGpuCount, 4, 3, 8},
      {"wrong model", [](JobSpec& j) { j.gpu_models = {"H100"}; }, [](NodeState&) {}, ReasonCode::kGpuModel, 0, 0, 0},
      {"gpu memory", [](JobSpec& j) { j.min_gpu_memory = MiB{100 * 1024}; }, [](NodeState&) {},
       ReasonCode::kGpuMemory, 100 * 1024, 80 * 1024, 80 * 1024},
      {"price ceiling", [](JobSpec& j) { j.max_price_per_gpu_hour = MicroUsd{1'000'000}; }, [](NodeState&) {},
       ReasonCode::kPriceCeiling, 1'000'000, 1'800'000, 0},
      {"cpu", [](JobSpec& j) { j.cpu_per_task = MilliCpu{80'000}; }, [](NodeState& n) { n.cpu_free = MilliCpu{16'000}; },
       ReasonCode::kCpu, 80'000, 16'000, 64'000},
      {"memory", [](JobSpec& j) { j.memory_per_task = MiB{1 << 20}; }, [](NodeState&) {}, ReasonCode::kMemory,
       1 << 20, 512 * 1024, 512 * 1024},
      {"unhealthy", [](JobSpec&) {}, [](NodeState& n) { n.health = Health::kUnhealthy; }, ReasonCode::kUnhealthy, 0, 2, 0},
      {"draining", [](JobSpec&) {}, [](NodeState& n) { n.schedulability = Schedulability::kDraining; },
       ReasonCode::kDraining},
      {"share fits a partly used GPU", [](JobSpec& j) { j.gpu_share = GpuMilli{300}; },
       [](NodeState& n) { n.gpu_free.fill(0); n.gpu_free[5] = 400; }, std::nullopt},
      {"share too big", [](JobSpec& j) { j.gpu_share = GpuMilli{500}; },
       [](NodeState& n) { n.gpu_free.fill(0); n.gpu_free[5] = 400; }, ReasonCode::kGpuShare, 500, 400, 1000},
      {"cpu-only job ignores GPUs", [](JobSpec& j) { j.gpus_per_task = 0; j.gpu_models = {"H100"}; },
       [](NodeState& n) { n.gpu_free.fill(0); }, std::nullopt},
      {"oci job on a node that offers only process", [](JobSpec& j) { j.driver = Driver::kOci; },
       [](NodeState& n) { n.drivers = 1; }, ReasonCode::kDriver, 1, 1, 0},
      {"oci job on a node that offers both", [](JobSpec& j) { j.driver = Driver::kOci; }, [](NodeState& n) { n.drivers = 3; },
       std::nullopt},
      {"process job on an oci-only node", [](JobSpec&) {}, [](NodeState& n) { n.drivers = 2; }, ReasonCode::kDriver, 0, 2, 0},
  };
  const Policy policy = testing::MakePolicy("fifo");
  for (const FilterCase& c : cases) {
    Jobs jobs(fleet);
    JobSpec spec;
    c.job(spec);
    const PendingJob& job = jobs.Add(spec);
    NodeState node = MakeNodeState(fleet, fleet.nodes[0]);
    c.node(node);
    std::optional<Reason> got;
    for (const auto& f : policy.filters) {
      if ((got = f->Check(job, DemandOf(spec), node))) break;
    }
    ASSERT_EQ(got.has_value(), c.want.has_value()) << c.name;
    if (!got) continue;
    EXPECT_EQ(got->code, *c.want) << c.name;
    EXPECT_EQ(got->asked, c.asked) << c.name;
    EXPECT_EQ(got->available, c.available) << c.name;
    EXPECT_EQ(got->capacity, c.capacity) << c.name;
    EXPECT_FALSE(DescribeReason(*got, fleet, job).empty());
  }
}

TEST(ReasonTest, DescriptionsCarryTheNumbers) {
  const Fleet fleet = Uniform(1, 8);
  Jobs jobs(fleet);
  const PendingJob& job = jobs.Add({.gpus_per_task = 4, .gpu_models = {"H100", "A100"}});
  EXPECT_EQ(DescribeReason({ReasonCode::kGpuCount, 4, 2, 8}, fleet, job), "GPUs: asked 4, free 2 of 8");
  EXPECT_EQ(DescribeReason({ReasonCode::kGpuModel, 0, 0, 0}, fleet, job),
            "GPU model: node has V100, job wants H100 or A100");
  EXPECT_EQ(DescribeReason({ReasonCode::kCpu, 8000, 2500, 64000}, fleet, job), "CPU: asked 8.0 cores, free 2.5 of 64.0");
  EXPECT_EQ(DescribeReason({ReasonCode::kDriver, 1, 1, 0}, fleet, job), "driver: the job runs with oci, the node offers process");
}

struct QueueCase {
  std::string policy;
  std::vector<int> want;  // job ids in order
};

TEST(QueueOrderTest, Table) {
  const Fleet fleet = Uniform(1, 8);
  Jobs jobs(fleet);
  // id: submit, priority, estimate, attained
  jobs.Add({.priority = 0, .estimated_duration = Millis{500}, .submit_time = Millis{10}});         // 1
  jobs.Add({.priority = 5, .estimated_duration = Millis{100}, .submit_time = Millis{20}});         // 2
  jobs.Add({.priority = 5, .submit_time = Millis{5}});                                             // 3: no estimate
  jobs.Add({.priority = 1, .estimated_duration = Millis{100}, .submit_time = Millis{20}}).attained = Millis{7'200'000};  // 4
  const QueueCase cases[] = {
      {"fifo", {3, 1, 2, 4}},      // by submit; 2 and 4 tie at 20: lower id first
      {"priority", {3, 2, 4, 1}},  // 5, 5 (3 earlier), 1, 0
      {"sjf", {2, 4, 1, 3}},       // 100, 100 (tie: submit, then id), 500, none last
      {"las", {3, 1, 2, 4}},       // job 4 has 2 GPU-hours: second queue
  };
  const auto pending = jobs.pending();
  for (const QueueCase& c : cases) {
    const Policy p = testing::MakePolicy(c.policy);
    std::vector<int> got;
    for (size_t i : QueueOrderOf(pending, p)) got.push_back(static_cast<int>(pending[i].spec->id.value()));
    EXPECT_EQ(got, c.want) << c.policy;
  }
}

TEST(RegistryTest, UnknownNamesListWhatIsKnown) {
  auto p = BuiltinRegistry().MakePolicy("fastest");
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message().find("least-loaded"), std::string::npos);
  auto q = BuiltinRegistry().MakePolicy("lottery/fifo");
  ASSERT_FALSE(q);
  EXPECT_NE(q.error().message().find("unknown queue order 'lottery'"), std::string::npos);
  auto composed = BuiltinRegistry().MakePolicy("sjf/cost");
  ASSERT_TRUE(composed);
  EXPECT_EQ(composed->queue_name, "sjf");
  EXPECT_EQ(composed->scorers.front().name, "cost");
}

}  // namespace
}  // namespace gp
