#include "core/models.h"

#include <gtest/gtest.h>

namespace gp {
namespace {

// Seed article, section 4.2: four nodes, R = CPU + GPU + memory, L = R / 1.
TEST(LoadModelTest, SeedSection42) {
  struct Row {
    int cpu, gpu, mem;
    double want_r;
  };
  const Row rows[] = {{600, 400, 800, 1.8}, {400, 600, 600, 1.6}, {200, 800, 400, 1.4}, {300, 300, 200, 0.8}};
  for (const Row& r : rows) {
    const LoadTerms t = ComputeLoad({PerMille{r.cpu}, PerMille{r.gpu}, PerMille{r.mem}});
    EXPECT_DOUBLE_EQ(t.r, r.want_r);
    EXPECT_DOUBLE_EQ(t.l, r.want_r) << "U = 1, so L = R";
  }
}

TEST(LoadModelTest, CapacityDividesLoad) {
  // R = 0.5 + 0.5 + 0.2 = 1.2 on a node whose available capacity U is 2: L = 0.6.
  const LoadTerms t = ComputeLoad({PerMille{500}, PerMille{500}, PerMille{200}, PerMille{2000}});
  EXPECT_DOUBLE_EQ(t.r, 1.2);
  EXPECT_DOUBLE_EQ(t.l, 0.6);
}

TEST(TransferModelTest, HundredGigabytesOverTenGigabitsAcrossHundredKm) {
  // 100 GB = 8e11 bits; at 1e10 bit/s that is 80 s. Light in fibre covers 100 km in
  // 100 / 200,000 s = 0.5 ms. T = 80 s + 0.5 ms = 80,000,500 us.
  const NetworkPath path{.bandwidth = BitsPerSecond{10'000'000'000}, .latency = FibreLatency(100.0),
                         .egress_per_gb = MicroUsd{20'000}};
  const TransferEstimate e = EstimateTransfer(Bytes{100'000'000'000}, path, BitsPerSecond{0});
  EXPECT_EQ(FibreLatency(100.0).value(), 500);
  EXPECT_EQ(e.time.value(), 80'000'500);
  // Egress: 100 GB x $0.02 = $2.00.
  EXPECT_EQ(e.egress_cost.value(), 2'000'000);
}

TEST(TransferModelTest, SlowerNicIsTheBottleneck) {
  // Same 100 GB, but the node's NIC is 1 Gbit/s: 800 s of payload.
  const NetworkPath path{.bandwidth = BitsPerSecond{10'000'000'000}, .latency = Micros{0}};
  EXPECT_EQ(EstimateTransfer(Bytes{100'000'000'000}, path, BitsPerSecond{1'000'000'000}).time.value(), 800'000'000);
}

TEST(GeoTest, OneDegreeOfLatitude) {
  // 2 * pi * 6371 km / 360 = 111.19 km.
  EXPECT_NEAR(DistanceKm({0, 0}, {1, 0}), 111.19, 0.01);
  EXPECT_DOUBLE_EQ(DistanceKm({10, 20}, {10, 20}), 0.0);
}

TEST(CostModelTest, PriceTimesGpusTimesHours) {
  // $3.00/GPU-h x 8 GPUs x 1.5 h = $36.00.
  EXPECT_EQ(GpuCost(MicroUsd{3'000'000}, GpuMilli{8000}, Millis{5'400'000}).value(), 36'000'000);
  // A 0.46 share of one GPU for 1 h at $1.00: $0.46.
  EXPECT_EQ(GpuCost(MicroUsd{1'000'000}, GpuMilli{460}, Millis{3'600'000}).value(), 460'000);
}

}  // namespace
}  // namespace gp
