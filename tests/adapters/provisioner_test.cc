// The `exec` provisioner contract against a provider program kept in tests/providers (a fake
// cloud in a JSON file): every verb, idempotent creates and deletes, error classes and scopes,
// and a program that breaks the contract (hangs, answers garbage, fails) named in the error.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "adapters/provisioner.h"
#include "adapters/run_program.h"
#include "core/units.h"

namespace gp {
namespace {

class FakeCloud : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("gpupool-fake-cloud-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    state_ = dir_ / "cloud.json";
    std::filesystem::remove(state_);
    fleet_.providers.push_back(Provider{.id = ProviderId{0}, .name = "cloud"});
    fleet_.sites.push_back(Site{.id = SiteId{0}, .name = "west", .region = "us-west"});
    const GpuModelId m = *fleet_.InternModel("H100");
    offer_ = Offer{.name = "cloud/west/H100x8/spot", .provider = ProviderId{0}, .site = SiteId{0}, .model = m, .gpus = 8,
                   .tier = PriceTier::kSpot, .price_per_hour = UsdToMicro(12.8), .max_nodes = 4};
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Provisioner> Make(Millis deadline = Millis{10'000}) {
    return MakeExecProvisioner({"python3", std::string(GP_SOURCE_DIR) + "/tests/providers/fake_cloud.py", "--state", state_.string()},
                               deadline, [this](const std::string& line) { log_.push_back(line); });
  }
  nlohmann::json State() const {
    std::ifstream f(state_);
    return nlohmann::json::parse(f);
  }
  void Steer(const nlohmann::json& patch) {
    nlohmann::json s = std::filesystem::exists(state_) ? State() : nlohmann::json::object();
    s.update(patch);
    std::ofstream(state_) << s.dump();
  }
  CreateRequest Request(const std::string& claim, int count) const {
    return CreateRequest{.claim = claim, .offer = &offer_, .offer_site = "west", .offer_model = "H100", .count = count,
                         .server = "127.0.0.1:7070", .join_token = "join-secret"};
  }

  std::filesystem::path dir_, state_;
  Fleet fleet_;
  Offer offer_;
  std::vector<std::string> log_;
};

TEST_F(FakeCloud, EveryVerbAndIdempotence) {
  auto p = Make();
  auto d = p->Describe();
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->max_parallel_creates, 2);
  EXPECT_EQ(d->billing, "per second");
  ASSERT_FALSE(log_.empty());
  EXPECT_NE(log_[0].find("describe: describing the fake cloud"), std::string::npos) << log_[0];

  const CreateOutcome a = p->Create(Request("claim-1", 2));
  ASSERT_FALSE(a.error) << a.error->message;
  ASSERT_EQ(a.instances.size(), 2u);
  EXPECT_EQ(a.instances[0].claim, "claim-1");
  EXPECT_EQ(a.instances[0].offer, "cloud/west/H100x8/spot");
  EXPECT_EQ(State()["instances"][a.instances[0].id]["token"], "join-secret") << "what a new node needs to join";
  const CreateOutcome again = p->Create(Request("claim-1", 2));
  ASSERT_FALSE(again.error);
  ASSERT_EQ(again.instances.size(), 2u);
  EXPECT_EQ(again.instances[1].id, a.instances[1].id) << "the same claim: the same instances, none bought twice";

  auto listed = p->List();
  ASSERT_TRUE(listed) << listed.error().message();
  EXPECT_EQ(listed->size(), 2u);
  Steer({{"interruptions", {{a.instances[0].id, 1'796'294'892'000}}}});
  auto events = p->Events();
  ASSERT_TRUE(events) << events.error().message();
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].instance, a.instances[0].id);
  EXPECT_EQ((*events)[0].deadline_ms, 1'796'294'892'000);

  EXPECT_TRUE(p->Delete({a.instances[0].id, a.instances[1].id}).ok());
  EXPECT_TRUE(p->Delete({a.instances[0].id}).ok()) << "not found is success";
  listed = p->List();
  ASSERT_TRUE(listed);
  EXPECT_TRUE(listed->empty());
}

TEST_F(FakeCloud, CapacityAndQuotaErrorsCarryTheirClassAndScope) {
  auto p = Make();
  Steer({{"stockout", {"cloud/west/H100x8/spot"}}});
  const CreateOutcome s = p->Create(Request("claim-2", 1));
  ASSERT_TRUE(s.error);
  EXPECT_EQ(s.error->error_class, ProvisionErrorClass::kCapacity);
  EXPECT_EQ(s.error->scope, Scope::kSite) << "a zone's stockout blocks the zone";
  EXPECT_EQ(s.error->retry_after.value_or(Millis{0}).value(), 300'000);
  EXPECT_NE(s.error->message.find("no H100 left in west"), std::string::npos);
  EXPECT_TRUE(s.instances.empty());
  Steer({{"stockout", nlohmann::json::array()}, {"quota_gpus", 8}});
  EXPECT_FALSE(p->Create(Request("claim-3", 1)).error);
  const CreateOutcome q = p->Create(Request("claim-4", 1));
  ASSERT_TRUE(q.error);
  EXPECT_EQ(q.error->error_class, ProvisionErrorClass::kQuota);
  EXPECT_EQ(q.error->scope, Scope::kProvider);
}

// The `offers` verb: what the provider offers at run time, by names, with defaults for what
// it leaves out; an offer that breaks the contract is refused, naming the offer and field.
TEST_F(FakeCloud, OffersStatedAtRunTime) {
  auto p = Make();
  auto none = p->Offers();
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_TRUE(none->empty());
  Steer({{"offers", {{{"name", "west-a100"}, {"site", "west"}, {"gpu_model", "A100"}, {"gpus", 4}, {"tier", "spot"},
                      {"price_per_hour", 5.2}, {"max_nodes", 3}, {"available", false}}}}});
  auto got = p->Offers();
  ASSERT_TRUE(got) << got.error().message();
  ASSERT_EQ(got->size(), 1u);
  const ProviderOffer& o = (*got)[0];
  EXPECT_EQ(o.name, "west-a100");
  EXPECT_EQ(o.site, "west");
  EXPECT_EQ(o.gpus, 4);
  EXPECT_EQ(o.tier, "spot");
  EXPECT_DOUBLE_EQ(o.price_per_hour, 5.2);
  EXPECT_EQ(o.max_nodes, 3);
  EXPECT_FALSE(o.available);
  EXPECT_EQ(o.boot_time_s, 120) << "a default";
  const struct {
    nlohmann::json offer;
    std::string error;
  } bad[] = {
      {{{"name", "x"}, {"site", "west"}, {"gpu_model", "A100"}, {"price_per_hour", 1}}, "'offers[x].gpus': required"},
      {{{"name", "x"}, {"site", "west"}, {"gpu_model", "A100"}, {"gpus", 99}, {"price_per_hour", 1}}, "'offers[x].gpus': expected a number 1..16"},
      {{{"name", "x"}, {"site", "west"}, {"gpu_model", "A100"}, {"gpus", 1}}, "'offers[x].price_per_hour': required"},
      {{{"site", "west"}, {"gpu_model", "A100"}, {"gpus", 1}, {"price_per_hour", 1}}, "'name': required"},
  };
  for (const auto& b : bad) {
    Steer({{"offers", nlohmann::json::array({b.offer})}});
    auto r = p->Offers();
    ASSERT_FALSE(r) << b.offer.dump();
    EXPECT_NE(r.error().message().find("offers: the answer breaks the contract: " + b.error), std::string::npos) << r.error().message();
  }
}

TEST_F(FakeCloud, AProgramThatBreaksTheContractIsNamedNeverTrusted) {
  Steer({{"garbage", true}});
  auto p = Make();
  auto l = p->List();
  ASSERT_FALSE(l);
  EXPECT_NE(l.error().message().find("list: the answer is not a JSON object: 'certainly not json"), std::string::npos)
      << l.error().message();
  const CreateOutcome c = p->Create(Request("claim-5", 1));
  ASSERT_TRUE(c.error);
  EXPECT_EQ(c.error->error_class, ProvisionErrorClass::kTransient) << "unreadable: nothing known created; list tells later";

  Steer({{"garbage", false}, {"hang", true}});
  auto slow = Make(Millis{1'500});
  auto d = slow->Describe();
  ASSERT_FALSE(d);
  EXPECT_NE(d.error().message().find("python3 fake_cloud.py describe: no answer within 1.500s (killed)"), std::string::npos) << d.error().message();

  auto missing = MakeExecProvisioner({"/nonexistent/provider-program"}, Millis{5'000}, nullptr);
  auto m = missing->List();
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message().find("cannot run '/nonexistent/provider-program'"), std::string::npos) << m.error().message();
}

// The local provisioner: instances are processes in sessions of their own (here a stand-in
// for the agent), recorded in its directory so that a new provisioner (a restarted server)
// lists what still runs; creates are idempotent on the claim; stockouts, a quota and spot
// reclaims with notice, all seeded.
TEST_F(FakeCloud, LocalInstancesAreProcessesThatOutliveTheirProvisioner) {
  LocalProvisionerOptions o{.dir = dir_ / "local", .gpupool = std::string(GP_SOURCE_DIR) + "/tests/providers/fake_agent.sh",
                            .seed = 7, .stockout_offers = {"cloud/west/A100x8/on-demand"}, .quota_gpus = 24,
                            .spot_mtbf = Millis{1}, .notice = Millis{60'000}};
  auto p = MakeLocalProvisioner(o);
  Offer demand = offer_;
  demand.tier = PriceTier::kOnDemand;
  demand.name = "cloud/west/H100x8/on-demand";
  CreateRequest r = Request("claim-a", 2);
  r.offer = &demand;
  const CreateOutcome a = p->Create(r);
  ASSERT_FALSE(a.error) << a.error->message;
  ASSERT_EQ(a.instances.size(), 2u);
  EXPECT_EQ(a.instances[0].id, "local-1");
  const CreateOutcome again = p->Create(r);
  ASSERT_EQ(again.instances.size(), 2u);
  EXPECT_EQ(again.instances[1].id, "local-2") << "the same claim: the same instances";
  auto running = [&](Provisioner& q) {
    int n = 0;
    auto l = q.List();
    EXPECT_TRUE(l) << (l ? "" : l.error().message());
    if (l) {
      for (const Instance& i : *l) n += i.state == "running";
    }
    return n;
  };
  for (int i = 0; i < 100 && running(*p) < 2; ++i) usleep(20'000);
  EXPECT_EQ(running(*p), 2);
  {
    auto restarted = MakeLocalProvisioner(o);  // a new server: the instances are still there
    EXPECT_EQ(running(*restarted), 2);
  }

  Offer a100 = demand;
  a100.name = "cloud/west/A100x8/on-demand";
  CreateRequest stock = Request("claim-b", 1);
  stock.offer = &a100;
  const CreateOutcome s = p->Create(stock);
  ASSERT_TRUE(s.error);
  EXPECT_EQ(s.error->error_class, ProvisionErrorClass::kCapacity);
  EXPECT_EQ(s.error->scope, Scope::kOffer) << "one type's stockout blocks that offer, not the site";
  CreateRequest over = Request("claim-c", 2);
  over.offer = &demand;
  const CreateOutcome q = p->Create(over);
  ASSERT_TRUE(q.error) << "16 held + 16 more is past the quota of 24";
  EXPECT_EQ(q.error->error_class, ProvisionErrorClass::kQuota);

  CreateRequest spot = Request("claim-d", 1);  // offer_ is spot: reclaimed after ~1 ms, told 60 s ahead
  const CreateOutcome sp = p->Create(spot);
  ASSERT_FALSE(sp.error) << sp.error->message;
  auto events = p->Events();
  ASSERT_TRUE(events);
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].instance, sp.instances[0].id);
  usleep(50'000);
  auto after = p->List();
  ASSERT_TRUE(after);
  for (const Instance& i : *after) {
    if (i.id == sp.instances[0].id) {
      EXPECT_EQ(i.state, "terminated") << "reclaimed at its deadline";
    }
  }

  EXPECT_TRUE(p->Delete({"local-1", "local-2", sp.instances[0].id}).ok());
  EXPECT_EQ(running(*p), 0);
  auto left = p->List();
  ASSERT_TRUE(left);
  EXPECT_TRUE(left->empty()) << "nothing left behind";
}

// The runner itself: input in, output and status out, a hung program killed at its deadline
// with what it had printed, and output past the limit cut.
TEST(RunProgramTest, InputOutputStatusDeadline) {
  auto r = RunProgram({"sh", "-c", "cat; echo err >&2; exit 3"}, "hello", Millis{5'000});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->out, "hello");
  EXPECT_EQ(r->err, "err\n");
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_FALSE(r->timed_out);
  auto slow = RunProgram({"sh", "-c", "echo started; sleep 30"}, "", Millis{300});
  ASSERT_TRUE(slow);
  EXPECT_TRUE(slow->timed_out);
  EXPECT_EQ(slow->out, "started\n");
  EXPECT_EQ(slow->signal, 9);
  auto big = RunProgram({"sh", "-c", "head -c 100000 /dev/zero"}, "", Millis{5'000}, 1000);
  ASSERT_TRUE(big);
  EXPECT_EQ(big->out.size(), 1000u);
  EXPECT_TRUE(big->out_truncated);
  EXPECT_FALSE(RunProgram({"no-such-program-anywhere"}, "", Millis{1'000}));
}

}  // namespace
}  // namespace gp
