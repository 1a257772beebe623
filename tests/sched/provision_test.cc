// The capacity planner: table-driven cases for each rule (cheapest feasible offer, the job's
// terms, packing, nodes already booting, limits, blocked scopes, gangs in one site) and
// properties over random fleets of offers and random waiting jobs.
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/units.h"
#include "sched/provision.h"

namespace gp {
namespace {

struct OfferSpec {
  std::string provider;
  std::string site;
  std::string model;
  int gpus = 8;
  std::string tier = "on-demand";
  double usd_per_hour = 8;
  int max_nodes = 4;
  bool available = true;
};

// Two providers (cloud, partner), three sites (a and b in region r1, c in r2).
Fleet MakeFleet(const std::vector<OfferSpec>& offers, int cloud_quota_gpus = 0, double cap_usd = 0) {
  Fleet f;
  f.providers.push_back(Provider{.id = ProviderId{0}, .name = "cloud", .max_gpus = cloud_quota_gpus});
  f.providers.push_back(Provider{.id = ProviderId{1}, .name = "partner"});
  for (const char* s : {"a", "b", "c"}) {
    f.sites.push_back(Site{.id = SiteId{static_cast<uint32_t>(f.sites.size())}, .name = s, .region = s[0] == 'c' ? "r2" : "r1"});
  }
  for (const OfferSpec& o : offers) {
    const GpuModelId m = *f.InternModel(o.model);
    f.offers.push_back(Offer{.name = fmt::format("{}/{}/{}x{}/{}/{}", o.provider, o.site, o.model, o.gpus, o.tier, f.offers.size()),
                             .provider = *f.FindProvider(o.provider), .site = *f.FindSite(o.site), .model = m, .gpus = o.gpus,
                             .gpu_memory = f.model(m).memory, .cpu = MilliCpu{o.gpus * 8000}, .memory = MiB{o.gpus * 65536},
                             .tier = *ParsePriceTier(o.tier), .price_per_hour = UsdToMicro(o.usd_per_hour),
                             .max_nodes = o.max_nodes, .available = o.available});
  }
  f.autoscale.max_per_hour = UsdToMicro(cap_usd);
  if (!offers.empty()) {
    EXPECT_TRUE(f.Validate().ok()) << f.Validate().message();
  }
  return f;
}

CapacityDemand Job(uint64_t id, int gpus, int tasks = 1) {
  return CapacityDemand{.job = JobId{id}, .tasks = tasks, .gpus_per_task = gpus};
}

// The plan as text: "offer-index:job,job offer-index:job | booting:job | unmet:job(why)".
std::string Show(const ProvisionPlan& p) {
  std::string out;
  for (const auto& n : p.create) {
    out += fmt::format("{}{}:", out.empty() ? "" : " ", n.offer);
    for (size_t i = 0; i < n.jobs.size(); ++i) out += fmt::format("{}{}", i ? "," : "", n.jobs[i].value());
  }
  if (!p.on_booting.empty()) {
    out += " | booting:";
    for (size_t i = 0; i < p.on_booting.size(); ++i) out += fmt::format("{}{}", i ? "," : "", p.on_booting[i].value());
  }
  for (const auto& [job, why] : p.unmet) out += fmt::format(" | unmet:{}({})", job.value(), why);
  return out;
}

struct Case {
  std::string what;
  std::vector<OfferSpec> offers;
  std::vector<CapacityDemand> jobs;
  std::string want;
  std::vector<BootingNode> booting = {};
  std::vector<OfferHeld> held = {};
  int quota = 0;
  double cap = 0;
  std::vector<uint8_t> buyable = {};
};

TEST(ProvisionTest, Table) {
  CapacityDemand a100_only = Job(1, 8);
  CapacityDemand cheap_only = Job(1, 8);
  cheap_only.max_price_per_gpu_hour = UsdToMicro(1.5);
  CapacityDemand no_spot = Job(1, 8);
  no_spot.spot_ok = false;
  CapacityDemand big_memory = Job(1, 8);
  big_memory.min_gpu_memory = MiB{100 * 1024};
  const std::vector<Case> cases = {
      {"the cheapest offer per GPU-hour", {{"cloud", "a", "H100", 8, "on-demand", 24}, {"partner", "b", "H100", 8, "on-demand", 16}},
       {Job(1, 8)}, "1:1"},
      {"packing: four 2-GPU jobs on one 8-GPU node, the fifth on a second",
       {{"cloud", "a", "H100", 8, "on-demand", 16}},
       {Job(1, 2), Job(2, 2), Job(3, 2), Job(4, 2), Job(5, 2)}, "0:1,2,3,4 0:5"},
      {"largest first: the 6-GPU job opens the node, the 2-GPU one fills it",
       {{"cloud", "a", "H100", 8, "on-demand", 16}}, {Job(1, 2), Job(2, 6)}, "0:2,1"},
      {"a node that is booting takes the job: nothing bought twice",
       {{"cloud", "a", "H100", 8, "on-demand", 16}}, {Job(1, 4), Job(2, 4), Job(3, 4)}, "0:3 | booting:1,2",
       {BootingNode{.offer = 0, .free_gpus = 8, .free_cpu = MilliCpu{64000}, .free_memory = MiB{1 << 19}}}},
      {"the job's model", {{"cloud", "a", "H100", 8, "on-demand", 16}, {"cloud", "a", "A100", 8, "on-demand", 24}},
       {[&] { CapacityDemand d = Job(1, 8); d.models = {GpuModelId{1}}; return d; }()}, "1:1"},
      {"the job's price cap", {{"cloud", "a", "H100", 8, "on-demand", 16}, {"partner", "a", "L4", 8, "on-demand", 8}},
       {cheap_only}, "1:1"},
      {"a price cap no offer meets", {{"cloud", "a", "H100", 8, "on-demand", 16}}, {cheap_only},
       " | unmet:1(no offer costs at most $1.50 a GPU-hour)"},
      {"no spot for a job that does not allow it",
       {{"cloud", "a", "H100", 8, "spot", 6}, {"cloud", "a", "H100", 8, "on-demand", 16}}, {no_spot, Job(2, 8)}, "1:1 0:2"},
      {"GPU memory", {{"cloud", "a", "A100", 8, "on-demand", 8}, {"cloud", "a", "H200", 8, "on-demand", 30}}, {big_memory}, "1:1"},
      {"too many GPUs a task", {{"cloud", "a", "H100", 8, "on-demand", 16}}, {Job(1, 16)}, " | unmet:1(no offer has 16 GPUs a node)"},
      {"an unavailable offer is passed over",
       {{"cloud", "a", "H100", 8, "on-demand", 8, 4, false}, {"cloud", "b", "H100", 8, "on-demand", 16}}, {Job(1, 8)}, "1:1"},
      {"an offer's maximum, counting nodes held", {{"cloud", "a", "H100", 8, "on-demand", 16, 3}},
       {Job(1, 8), Job(2, 8), Job(3, 8)}, "0:1 | unmet:2(offer cloud/a/H100x8/on-demand/0: at its maximum of 3 nodes) | unmet:3(offer cloud/a/H100x8/on-demand/0: at its maximum of 3 nodes)",
       {}, {OfferHeld{.running = 1, .booting = 1}}},
      {"the provider's quota, then the next provider",
       {{"cloud", "a", "H100", 8, "on-demand", 16}, {"partner", "a", "H100", 8, "on-demand", 20}}, {Job(1, 8), Job(2, 8)},
       "0:1 1:2", {}, {}, 8},
      {"the spending cap", {{"cloud", "a", "H100", 8, "on-demand", 16}}, {Job(1, 8), Job(2, 8)},
       "0:1 | unmet:2(the spending cap of $20.00 an hour is reached)", {}, {}, 0, 20},
      {"a gang in one site: the cheap site holds one node, so both go where two fit",
       {{"cloud", "a", "H100", 8, "on-demand", 16, 1}, {"cloud", "b", "H100", 8, "on-demand", 20}}, {Job(1, 8, 2), Job(2, 8)},
       "1:1 1:1 0:2"},
      {"a gang packed onto one node when its tasks fit", {{"cloud", "a", "H100", 8, "on-demand", 16}}, {Job(1, 4, 2)}, "0:1"},
      {"a gang no site can hold", {{"cloud", "a", "H100", 8, "on-demand", 16, 1}, {"cloud", "b", "H100", 8, "on-demand", 20, 1}},
       {Job(1, 8, 2)}, " | unmet:1(a gang of 2 tasks fits no one site: offer cloud/a/H100x8/on-demand/0: at its maximum of 1 nodes)"},
      {"no offers", {}, {Job(1, 1)}, " | unmet:1(the fleet has no offers)"},
      {"an offer the pool may not buy is passed over (its provider has no provisioner)",
       {{"cloud", "a", "H100", 8, "on-demand", 8}, {"partner", "a", "H100", 8, "on-demand", 16}}, {Job(1, 8)}, "1:1", {}, {}, 0, 0,
       {0, 1}},
      {"and named when it is the only one that fits", {{"cloud", "a", "H100", 8, "on-demand", 8}}, {Job(1, 8)},
       " | unmet:1(the offers that fit are not the pool's to buy (their provider has no provisioner))", {}, {}, 0, 0, {0}},
  };
  for (const Case& c : cases) {
    const Fleet fleet = MakeFleet(c.offers, c.quota, c.cap);
    const ProvisionPlan p =
        PlanCapacity(fleet, ProvisionInput{.demands = c.jobs, .held = c.held, .booting = c.booting, .buyable = c.buyable});
    EXPECT_EQ(Show(p), c.want) << c.what;
  }
}

// A capacity error blocks its scope until its time is up: the offer itself, its site, its
// region, or its whole provider; the next feasible offer outside the scope is chosen at once.
// A job whose data lives at a site: the cheapest offer counts the copy (its time at the
// offer's price, and the link's egress) against the run (the job's estimate, else an hour).
// Site a: $8.00 an hour; site c: $7.50, over a 1 Gbps link from a at $0.09 a GB.
TEST(ProvisionTest, DataSetTransferAndEgressWeighOnTheOffer) {
  Fleet f = MakeFleet({{.provider = "cloud", .site = "a", .model = "H100", .usd_per_hour = 8.0},
                       {.provider = "cloud", .site = "c", .model = "H100", .usd_per_hour = 7.5}});
  f.links.push_back(Link{.a = SiteId{0}, .b = SiteId{2}, .bandwidth = BitsPerSecond{1'000'000'000}, .egress_per_gb = MicroUsd{90'000}});
  const struct {
    std::optional<std::string> data_site;
    int64_t gib;
    int64_t run_h;
    size_t want;  // offer index
  } cases[] = {
      {std::nullopt, 0, 0, 1},   // no data: the cheaper site
      {"a", 1, 0, 1},            // 1 GiB: 9 s and $0.10 to copy; c still cheaper
      {"a", 1024, 0, 0},         // 1 TiB: 2.4 h and $99 to copy; a wins
      {"a", 1024, 1000, 1},      // ... unless the run is long enough to earn it back
      {"c", 1024, 0, 1},         // the data is at the cheaper site already
  };
  for (const auto& c : cases) {
    CapacityDemand d = Job(1, 8);
    if (c.data_site) d.data_site = f.FindSite(*c.data_site);
    d.data_size = Bytes{c.gib << 30};
    d.expected_run = Millis{c.run_h * 3'600'000};
    const ProvisionPlan p = PlanCapacity(f, ProvisionInput{.demands = std::span(&d, 1)});
    ASSERT_EQ(p.create.size(), 1u) << Show(p);
    EXPECT_EQ(p.create[0].offer, c.want) << (c.data_site ? *c.data_site : "-") << " " << c.gib << " GiB, " << c.run_h << " h";
  }
}

// Which offers a waiting job could use (its idle nodes are kept for it): shape by shape.
TEST(ProvisionTest, OffersWantedByWaitingJobs) {
  Fleet f = MakeFleet({{.provider = "cloud", .site = "a", .model = "H100", .gpus = 8},
                       {.provider = "cloud", .site = "a", .model = "L4", .gpus = 2},
                       {.provider = "cloud", .site = "b", .model = "H100", .gpus = 8, .tier = "spot"}});
  const GpuModelId h100 = *f.FindModel("H100");
  CapacityDemand any = Job(1, 2), big = Job(2, 4), h100_only = Job(3, 1), on_demand = Job(4, 8);
  h100_only.models = {h100};
  on_demand.spot_ok = false;
  const struct {
    std::vector<CapacityDemand> demands;
    std::vector<uint8_t> want;
  } cases[] = {
      {{}, {0, 0, 0}},
      {{any}, {1, 1, 1}},
      {{big}, {1, 0, 1}},
      {{h100_only}, {1, 0, 1}},
      {{on_demand}, {1, 0, 0}},
      {{on_demand, big, big}, {1, 0, 1}},
  };
  for (const auto& c : cases) EXPECT_EQ(OffersWanted(f, c.demands), c.want) << c.demands.size();
  EXPECT_TRUE(OfferCanTake(f.offers[0], big));
  EXPECT_FALSE(OfferCanTake(f.offers[1], big));
}

TEST(ProvisionTest, BlockedScopesArePassedOverUntilTheirTimeIsUp) {
  const Fleet fleet = MakeFleet({{"cloud", "a", "H100", 8, "spot", 8},        // 0: cheapest
                                 {"cloud", "b", "H100", 8, "on-demand", 12},  // 1: same region r1
                                 {"cloud", "c", "H100", 8, "on-demand", 14},  // 2: region r2
                                 {"partner", "a", "H100", 8, "on-demand", 20}});
  const std::vector<CapacityDemand> jobs = {Job(1, 8)};
  struct Row {
    Scope scope;
    std::string want;
  };
  for (const Row& r : std::vector<Row>{{Scope::kOffer, "1:1"}, {Scope::kSite, "1:1"}, {Scope::kRegion, "2:1"}, {Scope::kProvider, "3:1"}}) {
    Blocklist b;
    b.Block(fleet, 0, r.scope, Millis{60'000});
    EXPECT_EQ(Show(PlanCapacity(fleet, ProvisionInput{.demands = jobs, .blocked = &b, .now = Millis{59'999}})), r.want) << ScopeName(r.scope);
    EXPECT_EQ(Show(PlanCapacity(fleet, ProvisionInput{.demands = jobs, .blocked = &b, .now = Millis{60'000}})), "0:1")
        << ScopeName(r.scope) << ": its time is up";
    ASSERT_EQ(b.Active(Millis{1}).size(), 1u);
    EXPECT_TRUE(b.Active(Millis{60'000}).empty());
  }
  Blocklist site_a;
  site_a.Block(fleet, 0, Scope::kSite, Millis{60'000});
  EXPECT_TRUE(site_a.Blocked(fleet, 3, Millis{0})) << "the partner's offer is at the blocked site too";
}

TEST(ProvisionTest, BilledTimeAndCost) {
  struct Row {
    const char* what;
    int64_t increment_ms, min_ms, age_ms, billed_ms;
  };
  const Row rows[] = {
      {"per second, inside the minute", 1'000, 60'000, 10'000, 60'000},
      {"per second, past the minute", 1'000, 60'000, 61'500, 62'000},
      {"hourly, one minute in", 3'600'000, 3'600'000, 60'000, 3'600'000},
      {"hourly, 61 minutes in: two hours", 3'600'000, 3'600'000, 3'660'000, 7'200'000},
      {"hourly, exactly one hour", 3'600'000, 0, 3'600'000, 3'600'000},
      {"just created, no minimum: one increment", 3'600'000, 0, 0, 3'600'000},
  };
  for (const Row& r : rows) {
    const Offer o{.price_per_hour = UsdToMicro(36), .billing_increment = Millis{r.increment_ms}, .min_billed = Millis{r.min_ms}};
    EXPECT_EQ(BilledTime(o, Millis{r.age_ms}).value(), r.billed_ms) << r.what;
    EXPECT_EQ(BilledCost(o, Millis{r.age_ms}).value(), r.billed_ms * 10) << r.what << ": $36 an hour is 10 micro-USD a ms";
  }
  const Offer monthly{.price_per_hour = UsdToMicro(100'000), .billing_increment = Millis{int64_t{720} * 3'600'000}};
  EXPECT_EQ(BilledCost(monthly, Millis{int64_t{5} * 365 * 24 * 3'600'000}).value(), UsdToMicro(100'000).value() * 720 * 61)
      << "five years of a monthly price: no overflow";
}

// Giving nodes back: after the idle time, never below an offer's minimum, and only in the last
// moments of the billed period; the nodes idle longest go first.
TEST(ProvisionTest, ReleaseIsIdleAwareMinimumAwareAndBillingAware) {
  Fleet fleet = MakeFleet({{"cloud", "a", "H100", 8, "on-demand", 16}, {"partner", "b", "H100", 8, "on-demand", 16}});
  fleet.offers[0].billing_increment = Millis{1'000};  // per second, 60 s minimum
  fleet.offers[1].billing_increment = Millis{3'600'000};  // hourly
  fleet.offers[1].min_billed = Millis{3'600'000};
  const Millis idle_after{120'000};
  const int64_t t0 = 1'000'000'000;
  auto at = [&](int64_t ms) { return Millis{t0 + ms}; };
  struct Row {
    const char* what;
    std::vector<AcquiredNode> nodes;
    int64_t now;
    int min_nodes;
    std::vector<size_t> released;
    std::string first_kept_why;
  };
  const std::vector<Row> rows = {
      {"per second: idle long enough, released at once", {{0, at(0), at(10'000)}}, 200'000, 0, {0}, ""},
      {"idle too briefly", {{0, at(0), at(150'000)}}, 200'000, 0, {}, "idle for 50.000s of 2m00s"},
      {"busy nodes are not looked at", {{0, at(0), std::nullopt}}, 900'000, 0, {}, ""},
      {"the offer's minimum", {{0, at(0), at(10'000)}, {0, at(0), std::nullopt}}, 200'000, 2, {},
       "keeps offer cloud/a/H100x8/on-demand/0 at its minimum of 2 nodes"},
      {"hourly, 20 minutes into its hour: kept", {{1, at(0), at(0)}}, 1'200'000, 0, {},
       "billed for 40m00s more; released in the last 5m00s of it"},
      {"hourly, 56 minutes in: released", {{1, at(0), at(0)}}, 3'360'000, 0, {0}, ""},
      {"the longest idle first, down to the minimum",
       {{0, at(0), at(30'000)}, {0, at(0), at(10'000)}, {0, at(0), at(20'000)}}, 300'000, 1, {1, 2}, "keeps offer"},
  };
  for (const Row& r : rows) {
    fleet.offers[0].min_nodes = r.min_nodes;
    fleet.offers[1].min_nodes = 0;
    const ReleasePlan p = PlanRelease(fleet, r.nodes, idle_after, at(r.now));
    EXPECT_EQ(p.release, r.released) << r.what;
    if (!r.first_kept_why.empty()) {
      ASSERT_FALSE(p.kept.empty()) << r.what;
      EXPECT_NE(p.kept[0].why.find(r.first_kept_why), std::string::npos) << r.what << ": " << p.kept[0].why;
    }
  }
  const ReleasePlan hourly = PlanRelease(fleet, std::vector<AcquiredNode>{{1, at(0), at(0)}}, idle_after, at(1'200'000));
  ASSERT_EQ(hourly.kept.size(), 1u);
  EXPECT_EQ(hourly.kept[0].until.value(), t0 + 3'600'000 - 300'000) << "looked at again 5 minutes before its next hour";
}

// Over random offers and jobs: no offer past its room, no provider past its quota, the cap
// kept, every task on a node of an offer that fits it with room for it, a gang in one site,
// every job either planned or said why not, and the same input always gives the same plan.
RC_GTEST_PROP(ProvisionProperty, PlansKeepEveryLimitAndFitEveryTask, ()) {
  const char* models[] = {"H100", "A100", "L4"};
  const char* sites[] = {"a", "b", "c"};
  const char* tiers[] = {"on-demand", "spot"};
  std::vector<OfferSpec> specs;
  const int n_offers = *rc::gen::inRange(0, 12);
  for (int i = 0; i < n_offers; ++i) {
    specs.push_back(OfferSpec{.provider = *rc::gen::element<std::string>("cloud", "partner"),
                              .site = sites[*rc::gen::inRange(0, 3)], .model = models[*rc::gen::inRange(0, 3)],
                              .gpus = *rc::gen::element(1, 2, 4, 8), .tier = tiers[*rc::gen::inRange(0, 2)],
                              .usd_per_hour = static_cast<double>(*rc::gen::inRange(1, 40)), .max_nodes = *rc::gen::inRange(0, 5),
                              .available = *rc::gen::inRange(0, 10) > 0});
  }
  const int quota = *rc::gen::element(0, 8, 24);
  const int cap = *rc::gen::element(0, 30, 100);
  const Fleet fleet = MakeFleet(specs, quota, cap);
  std::vector<CapacityDemand> jobs;
  const int n_jobs = *rc::gen::inRange(0, 30);
  for (int j = 0; j < n_jobs; ++j) {
    CapacityDemand d = Job(static_cast<uint64_t>(j + 1), *rc::gen::element(1, 2, 4, 8), *rc::gen::element(1, 1, 1, 2, 3));
    if (*rc::gen::inRange(0, 4) == 0) d.models = {GpuModelId{static_cast<uint8_t>(*rc::gen::inRange(0, 3))}};
    d.spot_ok = *rc::gen::inRange(0, 3) > 0;
    if (*rc::gen::inRange(0, 4) == 0) d.max_price_per_gpu_hour = UsdToMicro(*rc::gen::inRange(1, 6));
    jobs.push_back(d);
  }
  std::vector<OfferHeld> held;
  for (size_t i = 0; i < fleet.offers.size(); ++i) held.push_back(OfferHeld{.running = *rc::gen::inRange(0, 2)});
  const ProvisionInput in{.demands = jobs, .held = held};
  const ProvisionPlan p = PlanCapacity(fleet, in);
  RC_ASSERT(Show(PlanCapacity(fleet, in)) == Show(p));

  const std::vector<int> counts = p.CountByOffer(fleet.offers.size());
  std::map<uint32_t, int> provider_gpus;
  int64_t hourly = 0;
  for (size_t i = 0; i < fleet.offers.size(); ++i) {
    const Offer& o = fleet.offers[i];
    RC_ASSERT(counts[i] <= std::max(0, o.max_nodes - held[i].running));
    if (counts[i] > 0) RC_ASSERT(o.available);
    provider_gpus[o.provider.value()] += (counts[i] + held[i].running) * o.gpus;
    hourly += counts[i] * o.price_per_hour.value();
  }
  RC_ASSERT(hourly == p.added_per_hour.value());
  if (cap > 0) RC_ASSERT(hourly <= UsdToMicro(static_cast<double>(cap)).value());
  // The quota binds only what the plan adds: nodes already held may exceed it.
  if (quota > 0 && counts != std::vector<int>(fleet.offers.size(), 0)) {
    int added_cloud = 0;
    int held_cloud = 0;
    for (size_t i = 0; i < fleet.offers.size(); ++i) {
      if (fleet.offers[i].provider.value() != 0) continue;
      added_cloud += counts[i] * fleet.offers[i].gpus;
      held_cloud += held[i].running * fleet.offers[i].gpus;
    }
    const bool within = added_cloud == 0 || added_cloud + held_cloud <= quota;
    RC_ASSERT(within);
  }

  // Replay the plan: each job's tasks onto its nodes, first fit, within each node's GPUs.
  std::vector<int> free;
  for (const auto& n : p.create) free.push_back(fleet.offers[n.offer].gpus);
  std::set<uint64_t> planned;
  std::map<uint64_t, std::vector<size_t>> nodes_of;
  for (size_t k = 0; k < p.create.size(); ++k) {
    RC_ASSERT(!p.create[k].jobs.empty());  // nothing bought for no job
    for (JobId j : p.create[k].jobs) nodes_of[j.value()].push_back(k);
  }
  for (const CapacityDemand& d : jobs) {
    const bool unmet = std::any_of(p.unmet.begin(), p.unmet.end(), [&](const auto& u) { return u.first == d.job; });
    const bool made = nodes_of.count(d.job.value()) > 0;
    RC_ASSERT(unmet != made);  // said why, or planned; never both, never neither
    if (!made) continue;
    std::set<uint32_t> job_sites;
    for (size_t k : nodes_of[d.job.value()]) {
      const Offer& o = fleet.offers[p.create[k].offer];
      job_sites.insert(o.site.value());
      RC_ASSERT(o.gpus >= d.gpus_per_task);
      // (Each condition whole: RC_ASSERT's capture does not short-circuit.)
      const bool model_ok = d.models.empty() || d.models[0] == o.model;
      const bool tier_ok = d.spot_ok || o.tier != PriceTier::kSpot;
      const bool price_ok = !d.max_price_per_gpu_hour || o.price_per_gpu_hour() <= *d.max_price_per_gpu_hour;
      RC_ASSERT(model_ok);
      RC_ASSERT(tier_ok);
      RC_ASSERT(price_ok);
    }
    RC_ASSERT(job_sites.size() == 1u);  // a gang in one site
  }
  // Capacity: the GPUs each new node's jobs take fit it (tasks of one job may share a node).
  std::vector<int> used(p.create.size(), 0);
  for (const CapacityDemand& d : jobs) {
    auto it = nodes_of.find(d.job.value());
    if (it == nodes_of.end()) continue;
    // Its tasks went to its nodes; at least one task on each, all tasks somewhere.
    RC_ASSERT(static_cast<int>(it->second.size()) <= d.tasks);
    for (size_t k : it->second) used[k] += d.gpus_per_task;
  }
  for (size_t k = 0; k < p.create.size(); ++k) RC_ASSERT(used[k] <= free[k]);
}

}  // namespace
}  // namespace gp
