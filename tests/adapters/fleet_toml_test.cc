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
  ASSERT_EQ(f->offers.size(), 3u);
  EXPECT_EQ(f->offers[1].name, "cloud/cloud-west/H100x8/spot");
  EXPECT_EQ(f->offers[1].price_per_hour.value(), 8 * 1'600'000);
  EXPECT_EQ(f->offers[2].billing_increment.value(), 3'600'000);
  EXPECT_EQ(f->autoscale.max_per_hour.value(), 500'000'000);
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
      {"no nodes", "", "no [[nodes]] and no [[offer]]"},
      {"unknown section", "[[node]]\nname = \"n\"\n", "unknown section 'node'"},
      {"offer of an unknown provider", "[[offer]]\nprovider = \"q\"\nsite = \"s\"\ngpu_model = \"H100\"\n",
       "f.toml:5: [[offer]] #1: provider: unknown provider 'q'"},
      {"offer without a price", "[[offer]]\nprovider = \"p\"\nsite = \"s\"\ngpu_model = \"H100\"\n",
       "[[offer]] 'p/s/H100x8/on-demand': price: required: USD per node-hour (provider 'p' lists no on-demand price for H100)"},
      {"offer max below min",
       "[[offer]]\nprovider = \"p\"\nsite = \"s\"\ngpu_model = \"H100\"\nprice = 20\nmin_nodes = 3\nmax_nodes = 2\n",
       "f.toml:11: [[offer]] 'p/s/H100x8/on-demand': max_nodes: must be at least min_nodes (3)"},
      {"offer billing of zero", "[[offer]]\nprovider = \"p\"\nsite = \"s\"\ngpu_model = \"H100\"\nprice = 20\nbilling_increment = \"0s\"\n",
       "billing_increment: must be positive"},
      {"offer named twice",
       "[[offer]]\nprovider = \"p\"\nsite = \"s\"\ngpu_model = \"H100\"\nprice = 20\n"
       "[[offer]]\nprovider = \"p\"\nsite = \"s\"\ngpu_model = \"H100\"\nprice = 22\n",
       "f.toml:10: [[offer]] 'p/s/H100x8/on-demand': name: used by another offer"},
      {"offer's unknown field", "[[offer]]\nprovider = \"p\"\nsite = \"s\"\ngpu_model = \"H100\"\nprice = 20\nmax = 3\n",
       "max: unknown field"},
      {"autoscale's unknown field", "[[offer]]\nprovider = \"p\"\nsite = \"s\"\ngpu_model = \"H100\"\nprice = 20\n[autoscale]\ncap = 3\n",
       "[autoscale]: cap: unknown field"},
      {"a tenant's negative quota", "[[tenant]]\nname = \"llm\"\nquota = { H100 = -4 }\n" "[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\n",
       "f.toml:7: [[tenant]] 'llm': quota.H100: expected a whole number of GPUs, 0..1000000"},
      {"a tenant's absurd borrowing limit", "[[tenant]]\nname = \"llm\"\nborrow_limit = { H100 = 5000000 }\n" "[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\n",
       "[[tenant]] 'llm': borrow_limit.H100: expected a whole number of GPUs"},
      {"a tenant's weight", "[[tenant]]\nname = \"llm\"\nweight = 0\n" "[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\n", "f.toml:7: [[tenant]] 'llm': weight: must be 1..1000, got 0"},
      {"a tenant named twice", "[[tenant]]\nname = \"llm\"\n[[tenant]]\nname = \"llm\"\n" "[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\n",
       "f.toml:8: [[tenant]] 'llm': name: used by another [[tenant]]"},
      {"a cohort named like a tenant (no nesting, no cycle)",
       "[[tenant]]\nname = \"a\"\ncohort = \"b\"\n[[tenant]]\nname = \"b\"\ncohort = \"a\"\n" "[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\n",
       "f.toml: [[tenant]] 'a': cohort: 'b' is a tenant's name"},
      {"a tenant's bad name", "[[tenant]]\nname = \"Research Team\"\n" "[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\n", "[[tenant]] #1: name: 1 to 63 of a-z"},
      {"a tenant's unknown field", "[[tenant]]\nname = \"llm\"\nquotas = 3\n" "[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\n", "[[tenant]] 'llm': quotas: unknown field"},
      {"a priority class without a value", "[[priority_class]]\nname = \"high\"\n" "[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\n",
       "f.toml:5: [[priority_class]] 'high': value: required"},
      {"two priority classes of one value", "[[priority_class]]\nname = \"high\"\nvalue = 10\n[[priority_class]]\nname = \"top\"\nvalue = 10\n" "[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\n",
       "f.toml:10: [[priority_class]] 'top': value: used by [[priority_class]] 'high'"},
      {"a provider's quota", "[[provider]]\nname = \"q\"\nmax_gpus = -1\n[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\n",
       "[[provider]] 'q': max_gpus: must be 0..10000000, got -1"},
  };
  for (const Case& c : cases) {
    auto f = ParseFleetToml(head + c.body, "f.toml");
    ASSERT_FALSE(f.has_value()) << c.name;
    EXPECT_NE(f.error().message().find(c.want), std::string::npos) << c.name << ": got " << f.error().message();
  }
}

TEST(FleetFileTest, Tenants) {
  auto f = ParseFleetToml(
      "[[provider]]\nname = \"p\"\n[[site]]\nname = \"s\"\n[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\n"
      "[[tenant]]\nname = \"llm\"\nweight = 2\ncohort = \"research\"\nquota = { H100 = 64, A100 = 8 }\n"
      "borrow_limit = { H100 = 16 }\nlend_limit = { A100 = 4 }\norder = \"sjf\"\n[[tenant]]\nname = \"6214e9\"\n",
      "f.toml");
  ASSERT_TRUE(f) << f.error().message();
  ASSERT_EQ(f->tenants.size(), 2u);
  const TenantConfig& t = f->tenants[0];
  EXPECT_EQ(t.name, "llm");
  EXPECT_EQ(t.weight, 2);
  EXPECT_EQ(t.cohort, "research");
  EXPECT_EQ(t.order, "sjf");
  EXPECT_EQ(t.quota.at("H100").nominal, 64);
  EXPECT_EQ(t.quota.at("H100").borrow_limit, 16);
  EXPECT_FALSE(t.quota.at("H100").lend_limit);
  EXPECT_EQ(t.quota.at("A100").lend_limit, 4);
  EXPECT_EQ(f->tenants[1].name, "6214e9") << "Philly's virtual clusters are names too";
  EXPECT_EQ(f->tenants[1].weight, 1);
}

TEST(FleetFileTest, PriorityClasses) {
  auto f = ParseFleetToml(
      "[[provider]]\nname = \"p\"\n[[site]]\nname = \"s\"\n[[nodes]]\nname = \"n\"\nsite = \"s\"\nprovider = \"p\"\n"
      "[[priority_class]]\nname = \"high\"\nvalue = 1000\npreemptible = false\nmin_run = \"10m\"\n"
      "[[priority_class]]\nname = \"low\"\nvalue = -10\n",
      "f.toml");
  ASSERT_TRUE(f) << f.error().message();
  ASSERT_EQ(f->priority_classes.size(), 2u);
  const PriorityClass* high = f->FindPriorityClass("high");
  ASSERT_NE(high, nullptr);
  EXPECT_EQ(high->value, 1000);
  EXPECT_FALSE(high->preemptible);
  EXPECT_EQ(high->min_run, Millis{600'000});
  EXPECT_TRUE(f->FindPriorityClass("low")->preemptible);
  EXPECT_EQ(f->FindPriorityClass("none"), nullptr);
}

// Offers: what each field says, what it defaults to (the price from the provider's price per
// GPU-hour, the GPU memory from the catalog), and a fleet of offers alone (no nodes yet).
TEST(FleetFileTest, OffersAndTheirDefaults) {
  const std::string text = R"(
[[provider]]
name = "cloud"
kind = "cloud"
max_gpus = 64
prices = { H100 = { on-demand = 3.90, spot = 1.60 } }

[[site]]
name = "west"
region = "us-west-2"

[[offer]]
provider = "cloud"
site = "west"
gpu_model = "H100"
tier = "spot"
max_nodes = 4

[[offer]]
name = "west-h100-hourly"
provider = "cloud"
site = "west"
gpu_model = "H100"
gpus = 4
cpu_cores = 48
memory = "512GiB"
price = 14.00
min_nodes = 1
max_nodes = 8
boot_time = "90s"
billing_increment = "1h"
min_billed = "1h"
available = false

[autoscale]
max_usd_per_hour = 250
)";
  auto f = ParseFleetToml(text, "offers.toml");
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_TRUE(f->nodes.empty());
  ASSERT_EQ(f->offers.size(), 2u);
  const Offer& spot = f->offers[0];
  EXPECT_EQ(spot.name, "cloud/west/H100x8/spot");
  EXPECT_EQ(spot.gpus, 8);
  EXPECT_EQ(spot.tier, PriceTier::kSpot);
  EXPECT_EQ(spot.price_per_hour.value(), 8 * 1'600'000) << "the provider's spot price a GPU-hour, times 8";
  EXPECT_EQ(spot.price_per_gpu_hour().value(), 1'600'000);
  EXPECT_EQ(spot.gpu_memory.value(), f->model(spot.model).memory.value()) << "the catalog's";
  EXPECT_EQ(spot.cpu.value(), 64'000);
  EXPECT_EQ(spot.max_nodes, 4);
  EXPECT_TRUE(spot.available);
  const Offer& hourly = f->offers[1];
  EXPECT_EQ(hourly.name, "west-h100-hourly");
  EXPECT_EQ(hourly.gpus, 4);
  EXPECT_EQ(hourly.cpu.value(), 48'000);
  EXPECT_EQ(hourly.memory.value(), 512 * 1024);
  EXPECT_EQ(hourly.price_per_hour.value(), 14'000'000);
  EXPECT_EQ(hourly.min_nodes, 1);
  EXPECT_EQ(hourly.boot_time.value(), 90'000);
  EXPECT_EQ(hourly.billing_increment.value(), 3'600'000);
  EXPECT_EQ(hourly.min_billed.value(), 3'600'000);
  EXPECT_FALSE(hourly.available);
  EXPECT_EQ(f->providers[0].max_gpus, 64);
  EXPECT_EQ(f->autoscale.max_per_hour.value(), 250'000'000);
  EXPECT_TRUE(f->Validate().ok()) << f->Validate().message();
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
