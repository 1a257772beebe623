#include "core/fleet.h"

#include <gtest/gtest.h>

namespace gp {
namespace {

TEST(FleetShorthandTest, Table) {
  struct Case {
    const char* text;
    int nodes, gpus_per_node;
    const char* model;  // nullptr: expect an error
  };
  const Case cases[] = {
      {"256x8xV100", 256, 8, "V100"}, {"1x1xh100", 1, 1, "H100"}, {"4x0", 4, 0, ""},
      {"0x8xV100", 0, 0, nullptr},    {"2x17xA100", 0, 0, nullptr}, {"2x8", 0, 0, nullptr},
      {"axbxc", 0, 0, nullptr},
      // The fleet fuzzer's find: 769,702 nodes of 11 GPUs took gigabytes; a fleet holds at most
      // 100,000 nodes.
      {"769702x11x0cpu_cores", 0, 0, nullptr}, {"100001x8xH100", 0, 0, nullptr}, {"100000x0", 100'000, 0, ""},
  };
  for (const Case& c : cases) {
    auto f = ParseFleetShorthand(c.text);
    if (!c.model) {
      EXPECT_FALSE(f.has_value()) << c.text;
      if (!f) {
        EXPECT_NE(f.error().message().find("256x8xV100"), std::string::npos) << "the error shows the form";
      }
      continue;
    }
    ASSERT_TRUE(f.has_value()) << c.text << ": " << f.error().message();
    EXPECT_EQ(static_cast<int>(f->nodes.size()), c.nodes);
    EXPECT_EQ(f->TotalGpus(), c.nodes * c.gpus_per_node);
    if (c.gpus_per_node > 0) {
      EXPECT_EQ(f->model(*f->nodes[0].gpu_model()).name, c.model);
    }
    EXPECT_TRUE(f->Validate().ok());
  }
}

TEST(FleetTest, GroupsTogetherStayWithinTheNodeLimit) {
  Fleet f;
  f.providers.push_back(Provider{.id = ProviderId{0}, .name = "p"});
  f.sites.push_back(Site{.id = SiteId{0}, .name = "s", .region = "r"});
  ASSERT_TRUE(AddNodeGroup(f, NodeGroupSpec{.name_prefix = "a", .count = 60'000}).ok());
  const Status s = AddNodeGroup(f, NodeGroupSpec{.name_prefix = "b", .count = 60'000});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("at most 100000 nodes; 60000 more would make 120000"), std::string::npos) << s.message();
  EXPECT_EQ(f.nodes.size(), 60'000u) << "the refused group added nothing";
}

TEST(FleetTest, CatalogFillsGpuDetails) {
  auto f = ParseFleetShorthand("1x8xH100");
  ASSERT_TRUE(f);
  const Gpu& g = f->nodes[0].gpus[3];
  EXPECT_EQ(g.index, 3);
  EXPECT_EQ(g.memory.value(), 80 * 1024);
  EXPECT_EQ(g.compute_capability, 90);
  EXPECT_EQ(g.nvlink_peers, 0xFF & ~(1 << 3)) << "all-to-all NVLink by default";
}

Fleet TwoProviderFleet() {
  Fleet f;
  const GpuModelId h100 = *f.InternModel("H100");
  f.providers.push_back({.id = ProviderId{0}, .name = "own",
                         .prices = {{h100, PriceTier::kOnDemand, MicroUsd{2'000'000}},
                                    {h100, PriceTier::kSpot, MicroUsd{800'000}}}});
  f.providers.push_back({.id = ProviderId{1}, .name = "bare"});
  f.sites.push_back({.id = SiteId{0}, .name = "a", .location = {0, 0}});
  f.sites.push_back({.id = SiteId{1}, .name = "b", .location = {0, 1}});
  f.sites.push_back({.id = SiteId{2}, .name = "c", .location = {1, 0}});
  f.links.push_back({.a = SiteId{1}, .b = SiteId{0}, .bandwidth = BitsPerSecond{40'000'000'000},
                     .latency = Micros{7000}, .egress_per_gb = MicroUsd{10'000}});
  for (auto [provider, tier] : {std::pair{0u, PriceTier::kSpot}, {0u, PriceTier::kReserved}, {1u, PriceTier::kOnDemand}}) {
    EXPECT_TRUE(AddNodeGroup(f, {.name_prefix = "n" + std::to_string(f.nodes.size()), .gpus = 8, .gpu_model = "H100",
                                 .site = SiteId{0}, .provider = ProviderId{provider}, .tier = tier}).ok());
  }
  return f;
}

TEST(FleetTest, PriceFallsBackFromTierToOnDemandToListPrice) {
  const Fleet f = TwoProviderFleet();
  EXPECT_EQ(f.PricePerGpuHour(f.nodes[0]).value(), 800'000) << "spot price given";
  EXPECT_EQ(f.PricePerGpuHour(f.nodes[1]).value(), 2'000'000) << "no reserved price: on-demand";
  EXPECT_EQ(f.PricePerGpuHour(f.nodes[2]).value(), 3'000'000) << "no price at all: catalog list price";
}

TEST(FleetTest, PathUsesLinkEitherWayElseDistance) {
  const Fleet f = TwoProviderFleet();
  const NetworkPath ab = f.PathBetween(SiteId{0}, SiteId{1});
  EXPECT_EQ(ab.bandwidth.value(), 40'000'000'000);
  EXPECT_EQ(ab.latency.value(), 7000);
  EXPECT_EQ(f.PathBetween(SiteId{1}, SiteId{0}).egress_per_gb.value(), 10'000);
  const NetworkPath ac = f.PathBetween(SiteId{0}, SiteId{2});  // no link: default WAN, ~111 km
  EXPECT_EQ(ac.bandwidth, kDefaultWanBandwidth);
  EXPECT_NEAR(static_cast<double>(ac.latency.value()), 556, 1);  // 111.19 km / 200,000 km/s
  EXPECT_TRUE(f.PathBetween(SiteId{2}, SiteId{2}).same_site);
}

TEST(FleetTest, ValidateNamesTheProblem) {
  Fleet f = TwoProviderFleet();
  f.nodes[1].name = f.nodes[0].name;
  EXPECT_NE(f.Validate().message().find("used twice"), std::string::npos);
  f = TwoProviderFleet();
  f.nodes[0].gpus[2].model = *f.InternModel("A100");
  EXPECT_NE(f.Validate().message().find("mixes GPU models H100 and A100"), std::string::npos);
  f = TwoProviderFleet();
  f.links[0].bandwidth = BitsPerSecond{0};
  EXPECT_NE(f.Validate().message().find("bandwidth must be positive"), std::string::npos);
}

}  // namespace
}  // namespace gp
