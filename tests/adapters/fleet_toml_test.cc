#include <gtest/gtest.h>

#include "adapters/fleet_loader.h"

namespace gp {
namespace {

std::string Example(const char* name) { return std::string(GP_SOURCE_DIR) + "/examples/fleets/" + name; }

TEST(FleetFileTest, MixedExample) {
  auto f = LoadFleet(Example("mixed.toml"));
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_EQ(f->providers.size(), 3u);
  EXPECT_GE(f->sites.size(), 2u);
  EXPECT_GE(f->models.size(), 3u);
  EXPECT_EQ(f->links.size(), 3u);
  const Node& spot = f->node(*f->FindNode("west-h100-spot-1"));
  EXPECT_EQ(spot.tier, PriceTier::kSpot);
  EXPECT_EQ(f->PricePerGpuHour(spot).value(), 1'600'000);
  const Node& eu = f->node(*f->FindNode("eu-a100-3"));
  EXPECT_EQ(eu.gpus[0].memory.value(), 40 * 1024) << "gpu_memory overrides the catalog's 80 GiB";
  EXPECT_EQ(f->PathBetween(*f->FindSite("dc-east"), *f->FindSite("partner-eu")).latency.value(), 85'000);
}

TEST(FleetFileTest, UniformAndSeedExamples) {
  auto u = LoadFleet(Example("uniform-256x8.toml"));
  ASSERT_TRUE(u) << u.error().message();
  EXPECT_EQ(u->TotalGpus(), 2048);
  auto s = LoadFleet(Example("seed-4-nodes.toml"));
  ASSERT_TRUE(s) << s.error().message();
  ASSERT_EQ(s->nodes.size(), 4u);
  EXPECT_EQ(s->nodes[0].name, "node-1") << "a group of one keeps its exact name";
  ASSERT_TRUE(s->nodes[3].measured.has_value());
  EXPECT_EQ(s->nodes[3].measured->cpu.value(), 300);
}

// Each bad file gets an error that names the line and the field.
TEST(FleetFileTest, BadFilesNameLineAndField) {
  const std::string head =
      "[[provider]]\nname = \"p\"\n[[site]]\nname = \"s\"\n";  // lines 1-4
  struct Case {
    const char* name;
    std::string body;
    const char* want;
  };
  const Case cases[] = {
      {"too many gpus", "[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\ngpus = 20\ngpu_model = \"V100\"\n",
       "f.toml:9: [[nodes]] 'n': gpus: must be 0..16, got 20"},
      {"unknown field", "[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\ngpu = 2\n", "f.toml:9: [[nodes]] 'n': gpu: unknown field"},
      {"unknown site", "[[nodes]]\nname = \"n\"\nsite = \"x\"\nprovider = \"p\"\n", "site: unknown site 'x'"},
      {"bad bandwidth", "[[site]]\nname = \"t\"\n[[link]]\nsites = [\"s\", \"t\"]\nbandwidth = \"fast\"\n",
       "f.toml:9: [[link]] #1: bandwidth: 'fast'"},
      {"syntax", "[[nodes]\nname = 1\n", "f.toml:5:"},
      {"bad tier", "[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\ntier = \"cheap\"\n", "unknown price tier 'cheap'"},
      {"gpus without model", "[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\ngpus = 2\n", "gpu_model: required"},
      {"no nodes", "", "no [[nodes]]"},
      {"unknown section", "[[node]]\nname = \"n\"\n", "unknown section 'node'"},
  };
  for (const Case& c : cases) {
    auto f = ParseFleetToml(head + c.body, "f.toml");
    ASSERT_FALSE(f.has_value()) << c.name;
    EXPECT_NE(f.error().message().find(c.want), std::string::npos) << c.name << ": got " << f.error().message();
  }
}

TEST(FleetFileTest, ShorthandAndMissingFile) {
  auto f = LoadFleet("4x8xA100");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->TotalGpus(), 32);
  auto missing = LoadFleet("/nonexistent/fleet.toml");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("/nonexistent/fleet.toml: cannot open"), std::string::npos);
}

TEST(FleetFileTest, NodeListCsv) {
  auto f = ParseFleetNodeCsv("sn,cpu_milli,memory_mib,gpu,model\na,64000,262144,2,P100\nb,32000,1024,0,\n", "n.csv");
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_EQ(f->nodes.size(), 2u);
  EXPECT_EQ(f->nodes[0].name, "a");
  EXPECT_EQ(f->nodes[0].cpu.value(), 64000);
  EXPECT_FALSE(f->nodes[1].gpu_model().has_value());
  auto bad = ParseFleetNodeCsv("sn,cpu_milli,memory_mib,gpu,model\na,64000,x,2,P100\n", "n.csv");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message(), "n.csv:2: memory_mib: 'x' is not a whole number");
}

}  // namespace
}  // namespace gp
