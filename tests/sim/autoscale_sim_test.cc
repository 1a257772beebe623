// The simulator's autoscaling (`gpupool sim --autoscale`): the live pool's decisions
// (sched/provision.h) on a virtual clock. Scenes worked out by hand, and invariants over
// random traces (rapidcheck).
#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <fmt/format.h>

#include "adapters/fleet_loader.h"
#include "sched/provision.h"
#include "sim/capacity.h"
#include "sim/engine.h"
#include "sim_fixtures.h"

namespace gp {
namespace {

using testing::Job;
using testing::P;

// Offers: (name, tier, GPUs, price per node-hour, billing increment, min billed, boot, extra).
Fleet Offers(const std::string& offers, const std::string& provider_extra = "") {
  const std::string text = fmt::format(R"(
[[provider]]
name = "c"
kind = "cloud"
provisioner = "local"
{}

[[site]]
name = "s"
{})",
                                       provider_extra, offers);
  auto f = ParseFleetToml(text, "test.toml");
  EXPECT_TRUE(f) << (f ? "" : f.error().message());
  return f ? std::move(*f) : Fleet{};
}

std::string Offer(const std::string& name, int gpus, double price, const std::string& billing, const std::string& min_billed,
                  const std::string& tier = "on-demand", int max_nodes = 16) {
  return fmt::format(R"(
[[offer]]
name = "{}"
provider = "c"
site = "s"
gpu_model = "V100"
gpus = {}
tier = "{}"
price = {}
max_nodes = {}
boot_time = "100s"
billing_increment = "{}"
min_billed = "{}"
)",
                     name, gpus, tier, price, max_nodes, billing, min_billed);
}

SimOptions Scaled(SimAutoscale a = {}) {
  a.boot_jitter = 0;
  return SimOptions{.autoscale = a};
}

// No node to begin with; one offer of 4-GPU nodes at $4/h, per second after 60 s; boot 100 s.
// A (t=0, 2 GPUs, 1000 s) and B (t=0, 2 GPUs, 1000 s) share one node bought at t=1 (the batch
// second), up at 101; both run 101..1101. The node idles from 1101 and goes at 1161 (60 s
// idle; per-second billing: no reason to keep it). Billed 1160 s: $4 x 1160 / 3600.
TEST(AutoscaleSimTest, BuysOneNodeForTwoJobsAndReleasesIt) {
  const Fleet fleet = Offers(Offer("x4", 4, 4.0, "1s", "60s"));
  const Trace trace{.jobs = {Job("A", 0, 1000, 2), Job("B", 0, 1000, 2)}};
  auto r = RunSimulation(fleet, trace, P("fifo"), Scaled());
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_TRUE(r->autoscale);
  const AutoscaleResult& a = *r->autoscale;
  EXPECT_EQ(r->finished, 2);
  EXPECT_EQ(a.nodes_bought, 1);
  EXPECT_EQ(r->per_job[0].start.value(), 101'000);
  EXPECT_DOUBLE_EQ(r->avg_queue_s, 101);
  EXPECT_EQ(a.spent.value(), BilledCost(fleet.offers[0], Millis{1'160'000}).value());
  EXPECT_NEAR(a.gpu_hours_bought, 4 * 1160.0 / 3600, 1e-9);
  EXPECT_NEAR(a.gpu_hours_used, 4 * 1000.0 / 3600, 1e-9);
  EXPECT_NEAR(a.idle_billed_gpu_hours, 4 * 160.0 / 3600, 1e-9);
  ASSERT_FALSE(a.nodes.empty());
  EXPECT_EQ(a.nodes.back().nodes[0], 0) << "nothing held at the end";
  EXPECT_EQ(a.nodes_peak, 1);
  // Lower bound: 4 GPU-hours x 1000 s at $1 a GPU-hour.
  EXPECT_EQ(a.lower_bound.value(), 1'111'111);
}

// Billed by the hour: a job at t=0 (100 s) and another at t=1800 (100 s). Billing-aware, the
// node bought for the first is kept (its hour is paid) and runs the second at once; released
// in the last tenth of its hour. Released at once, the second job buys and boots a second
// node and the pool pays two hours.
TEST(AutoscaleSimTest, BillingAwareReleaseKeepsAPaidHour) {
  const Fleet fleet = Offers(Offer("hourly", 1, 3.0, "1h", "1h"));
  const Trace trace{.jobs = {Job("A", 0, 100, 1), Job("B", 1800, 100, 1)}};
  const struct {
    bool billing_aware;
    int64_t bought;
    double queue_b;
    int64_t dollars;
  } cases[] = {{true, 1, 0, 3'000'000}, {false, 2, 101, 6'000'000}};
  for (const auto& c : cases) {
    SimAutoscale a;
    a.billing_aware = c.billing_aware;
    auto r = RunSimulation(fleet, trace, P("fifo"), Scaled(a));
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->autoscale->nodes_bought, c.bought) << c.billing_aware;
    EXPECT_DOUBLE_EQ(static_cast<double>((r->per_job[1].start - r->per_job[1].submit).value()) / 1000, c.queue_b) << c.billing_aware;
    EXPECT_EQ(r->autoscale->spent.value(), c.dollars) << c.billing_aware;
  }
}

// The cheapest offer is stocked out (the provider's local.stockout names it): each create
// there is refused and blocks it; the node comes from the next offer.
TEST(AutoscaleSimTest, StockoutFailsOverToTheNextOffer) {
  const Fleet fleet = Offers(Offer("cheap", 1, 1.0, "1s", "60s") + Offer("dear", 1, 2.0, "1s", "60s"),
                             R"(local = { stockout = ["cheap"] })");
  const Trace trace{.jobs = {Job("A", 0, 100, 1), Job("B", 500, 100, 1)}};
  auto r = RunSimulation(fleet, trace, P("fifo"), Scaled());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->finished, 2);
  // Each purchase asks the cheapest offer first: A's at t=1, and B's at t=501 (the block of
  // 3 minutes has run out, and A's node was released at 261).
  EXPECT_EQ(r->autoscale->stockouts, 2);
  for (const SimJobResult& j : r->per_job) EXPECT_EQ(r->acquired_node_names.at(j.first_node.value()).rfind("dear-", 0), 0u);
  // A waits the batch second and one boot: the refusal costs no extra time.
  EXPECT_EQ(r->per_job[0].start.value(), 101'000);
}

// A spot node is taken back mid-job: the job keeps its last checkpoint, the spot offer is
// blocked, and the replacement is on-demand.
TEST(AutoscaleSimTest, SpotReclaimResumesOnOnDemand) {
  const Fleet fleet = Offers(Offer("spot", 1, 1.0, "1s", "60s", "spot") + Offer("od", 1, 3.0, "1s", "60s"));
  const Trace trace{.jobs = {Job("long", 0, 40'000, 1)}};
  SimAutoscale a;
  a.spot_mtbf = Millis{3'600'000};
  SimOptions o = Scaled(a);
  o.recovery = Recovery::kCheckpoint;
  o.checkpoint_interval = Millis{600'000};
  auto r = RunSimulation(fleet, trace, P("fifo"), o);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->finished, 1);
  EXPECT_GE(r->autoscale->reclaims, 1);
  // After a reclaim the job ran on: the on-demand offer (spot blocked), or spot again later.
  bool od = false;
  for (const OfferNodesPoint& p : r->autoscale->nodes) od = od || p.nodes[1] > 0;
  EXPECT_TRUE(od) << "the replacement came from on-demand";
  // Checkpoints kept all but at most 10 minutes per reclaim.
  EXPECT_LE(r->lost_gpu_hours, static_cast<double>(r->autoscale->reclaims) * 600.0 / 3600 + 1e-9);
}

TEST(AutoscaleSimTest, SameSeedSameReport) {
  const Fleet fleet = Offers(Offer("spot", 8, 7.0, "1s", "60s", "spot") + Offer("od", 8, 20.0, "1s", "60s") +
                             Offer("hourly", 4, 8.0, "1h", "4h"));
  Trace trace;
  for (int i = 0; i < 300; ++i) trace.jobs.push_back(Job("j", i * 37 % 5000, 200 + i * 91 % 3000, 1 << (i % 4)));
  SimAutoscale a;
  a.stockout = 0.2;
  a.spot_mtbf = Millis{7'200'000};
  SimOptions o{.seed = 9, .autoscale = a};
  auto r1 = RunSimulation(fleet, trace, P("fifo"), o);
  auto r2 = RunSimulation(fleet, trace, P("fifo"), o);
  ASSERT_TRUE(r1 && r2);
  EXPECT_EQ(FormatReportJson(*r1), FormatReportJson(*r2));
  EXPECT_GT(r1->autoscale->stockouts, 0);
  o.seed = 10;
  auto r3 = RunSimulation(fleet, trace, P("fifo"), o);
  ASSERT_TRUE(r3);
  EXPECT_NE(FormatReportJson(*r1), FormatReportJson(*r3)) << "the seed drives stockouts, boots and reclaims";
}

// An idle node is kept only while a waiting job could run on its offer: B waits for the one
// L4 node (C holds it for 5,000 s); the H100 node A used goes once idle, not when B runs.
TEST(AutoscaleSimTest, IdleNodesGoUnlessAWaitingJobCouldUseThem) {
  const Fleet fleet = Offers(Offer("h100", 1, 2.0, "1s", "60s", "on-demand", 1) +
                             R"(
[[offer]]
name = "l4"
provider = "c"
site = "s"
gpu_model = "L4"
gpus = 1
price = 0.5
max_nodes = 1
boot_time = "100s"
)");
  TraceJob a = Job("A", 0, 100, 1), c = Job("C", 0, 5000, 1), b = Job("B", 10, 100, 1);
  a.gpu_models = {"V100"};
  c.gpu_models = {"L4"};
  b.gpu_models = {"L4"};
  const Trace trace{.jobs = {a, c, b}};
  auto r = RunSimulation(fleet, trace, P("fifo"), Scaled());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->finished, 3);
  Millis h100_gone{-1};
  for (const OfferNodesPoint& p : r->autoscale->nodes) {
    if (p.nodes[0] == 0 && p.t.value() > 0 && h100_gone.value() < 0) h100_gone = p.t;
  }
  EXPECT_EQ(h100_gone.value(), 261'000) << "A ends at 201; 60 s idle; B cannot use it";
  EXPECT_GT(r->per_job[2].start.value(), 5'000'000) << "B waited for C's L4 node";
}

// A job no node or offer could hold is refused, counted, and the rest run.
TEST(AutoscaleSimTest, TooBigForEveryOfferIsRefused) {
  const Fleet fleet = Offers(Offer("x4", 4, 4.0, "1s", "60s", "on-demand", 2));
  const Trace trace{.jobs = {Job("fits", 0, 100, 4), Job("gang", 0, 100, 8), Job("never", 0, 100, 64)}};
  auto r = RunSimulation(fleet, trace, P("fifo"), Scaled());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->finished, 2);
  EXPECT_EQ(r->unschedulable, 1);
  EXPECT_EQ(r->per_job[2].outcome, Outcome::kNever);
}

// Whatever the trace: every job that can run runs; the pool ends holding nothing; it pays at
// least for what jobs used (bought >= used, spent >= lower bound); nodes never exceed an
// offer's maximum.
RC_GTEST_PROP(AutoscaleSimProperty, Invariants, ()) {
  const Fleet fleet = Offers(Offer("spot", 8, 7.0, "1s", "60s", "spot", 3) + Offer("od", 8, 20.0, "1s", "60s", "on-demand", 4) +
                             Offer("hourly", 4, 8.0, "1h", "4h", "on-demand", 3));
  const int n = *rc::gen::inRange(1, 60);
  Trace trace;
  for (int i = 0; i < n; ++i) {
    const int gpus = *rc::gen::element(1, 2, 4, 8, 16);
    trace.jobs.push_back(Job("j", *rc::gen::inRange(0, 20'000), *rc::gen::inRange(1, 8'000), gpus));
  }
  SimAutoscale a;
  a.billing_aware = *rc::gen::arbitrary<bool>();
  a.stockout = *rc::gen::element(0.0, 0.3);
  a.spot_mtbf = Millis{*rc::gen::element<int64_t>(0, 3'600'000)};
  SimOptions o{.seed = *rc::gen::inRange<uint64_t>(1, 1000), .autoscale = a};
  auto r = RunSimulation(fleet, trace, P("fifo"), o);
  RC_ASSERT(r.has_value());
  RC_ASSERT(r->finished == n);
  const AutoscaleResult& s = *r->autoscale;
  for (int32_t held : s.nodes.back().nodes) RC_ASSERT(held == 0);
  for (const OfferNodesPoint& p : s.nodes) {
    for (size_t k = 0; k < p.nodes.size(); ++k) RC_ASSERT(p.nodes[k] <= fleet.offers[k].max_nodes);
  }
  RC_ASSERT(s.gpu_hours_bought + 1e-9 >= s.gpu_hours_used);
  RC_ASSERT(s.spent.value() >= s.lower_bound.value());
}

TEST(CapacityCompareTest, DemandPercentileIsTimeWeighted) {
  // 0..100 s: 1 GPU; 100..400 s: 3 GPUs (1 + 2); 400..500: 2 GPUs.
  const Trace trace{.jobs = {Job("a", 0, 400, 1), Job("b", 100, 400, 2)}};
  const struct {
    double p, gpus;
  } cases[] = {{0.1, 1}, {0.2, 1}, {0.25, 2}, {0.5, 3}, {0.95, 3}, {1.0, 3}};
  for (const auto& c : cases) EXPECT_EQ(DemandPercentile(trace, c.p), c.gpus) << c.p;
  EXPECT_EQ(DemandPercentile(Trace{}, 0.5), 0);
}

TEST(CapacityCompareTest, StaticOfferIsTheCheapestThatIsNotSpotAndHoldsTheFleet) {
  const Fleet fleet = Offers(Offer("spot", 8, 7.0, "1s", "60s", "spot") + Offer("od", 8, 20.0, "1s", "60s", "on-demand", 64) +
                             Offer("small", 8, 12.0, "720h", "720h", "reserved", 4));
  const struct {
    std::string name;
    int gpus;
    std::optional<std::string> want;
  } cases[] = {{"", 16, "small"}, {"", 100, "od"}, {"", 10'000, "small"}, {"od", 16, "od"}, {"nope", 16, std::nullopt}};
  for (const auto& c : cases) {
    auto o = StaticOffer(fleet, c.name, c.gpus);
    EXPECT_EQ(o ? std::optional<std::string>(fleet.offers[*o].name) : std::nullopt, c.want) << c.name << " " << c.gpus;
  }
  const Fleet f = StaticFleet(fleet, 1, 3);
  EXPECT_EQ(f.nodes.size(), 3u);
  EXPECT_TRUE(f.offers.empty());
  EXPECT_EQ(f.TotalGpus(), 24);
}

}  // namespace
}  // namespace gp
