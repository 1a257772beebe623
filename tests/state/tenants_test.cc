// Tenants in the scheduling core, through the state owner (ClusterState), which the live server
// and the simulator share:
//   - quota admission case by case (nominal quota, borrowing from a cohort within the borrowing
//     limit and the lenders' lending limits), with the numbers in the reason;
//   - properties over random tenants and jobs: a tenant never holds more than its quota plus
//     what it may borrow; a borrow never takes more than the cohort's lenders may lend (each
//     within its lending limit); each tenant's jobs start in its own queue order;
//   - fair share and DRF: two tenants of weights 1 and 2 keeping a pool busy get GPU-time 1:2.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <map>

#include "sched/fixtures.h"
#include "sched/registry.h"
#include "state/cluster_state.h"

namespace gp {
namespace {

using testing::MakePolicy;

struct Quiet final : ClusterListener {
  void JobChanged(const JobRecord&, std::string_view) override {}
  bool StopTask(const JobRecord&, int, int) override { return true; }
};

struct Pool {
  Fleet fleet;
  Quiet quiet;
  std::unique_ptr<ClusterState> cs;
  Millis now{1'000};
  explicit Pool(const std::string& shorthand, const std::string& policy = "fifo", ClusterOptions o = {})
      : fleet(*ParseFleetShorthand(shorthand)) {
    cs = std::make_unique<ClusterState>(fleet, MakePolicy(policy), o, quiet);
  }
  JobId Submit(const std::string& tenant, int tasks, int gpus, JobSpec extra = {}) {
    extra.id = JobId{cs->next_id()};
    extra.tenant = tenant;
    extra.tasks = tasks;
    extra.gpus_per_task = gpus;
    if (extra.submit_time.value() == 0) extra.submit_time = now;
    cs->Accept(JobRecord{.spec = extra});
    return JobId{cs->next_id() - 1};
  }
  const JobRecord& Job(JobId id) { return *cs->Find(id); }
  bool Placed(JobId id) { return Job(id).state != JobState::kQueued; }
  void End(JobId id) {
    JobRecord& j = *cs->Find(id);
    for (size_t t = 0; t < j.tasks.size(); ++t) cs->TaskStarted(j, static_cast<int>(t), now, now);
    for (size_t t = 0; t < j.tasks.size(); ++t) cs->TaskEnded(j, static_cast<int>(t), 0, std::nullopt, "", now);
  }
  // Held now by a tenant, whole GPUs of the fleet's first model.
  double Used(const std::string& tenant) {
    auto t = cs->tenants().Find(tenant);
    return t ? static_cast<double>(cs->tenants().used(*t, 0)) / 1000 : 0;
  }
};

QuotaLimits Q(int64_t nominal, std::optional<int64_t> borrow = std::nullopt, std::optional<int64_t> lend = std::nullopt) {
  return QuotaLimits{.nominal = nominal, .borrow_limit = borrow, .lend_limit = lend};
}

// --- admission, case by case ---

struct QuotaCase {
  const char* name;
  std::vector<TenantConfig> tenants;
  std::vector<std::pair<std::string, int>> running;  // placed first, in order, 1 task of N GPUs
  std::pair<std::string, int> asks;
  bool placed;
  std::string message;  // a part of the waiting job's message
};

TEST(QuotaAdmission, CaseByCase) {
  // 4 nodes of 8 H100: 32 GPUs, more than any quota below, so quota alone decides.
  const std::vector<QuotaCase> cases = {
      {"within its nominal quota", {{.name = "llm", .quota = {{"H100", Q(16)}}}}, {{"llm", 8}}, {"llm", 8}, true, ""},
      {"over its quota, in no cohort: waits",
       {{.name = "llm", .quota = {{"H100", Q(16)}}}},
       {{"llm", 8}, {"llm", 8}},
       {"llm", 8},
       false,
       "quota: llm uses 16 of 16 H100 and asks 8; it is in no cohort, so it cannot borrow"},
      {"borrows what an idle cohort member lends",
       {{.name = "llm", .cohort = "research", .quota = {{"H100", Q(8)}}},
        {.name = "vision", .cohort = "research", .quota = {{"H100", Q(8)}}}},
       {{"llm", 8}},
       {"llm", 8},
       true,
       ""},
      {"the cohort's lender is busy: waits, saying who uses what",
       {{.name = "llm", .cohort = "research", .quota = {{"H100", Q(8)}}},
        {.name = "vision", .cohort = "research", .quota = {{"H100", Q(8)}}}},
       {{"llm", 8}, {"vision", 4}, {"vision", 4}},
       {"llm", 1},
       false,
       "quota: llm uses 8 of 8 H100 and asks 1; cohort research can lend 0 (vision uses 8 of its 8)"},
      {"borrowing stops at its borrowing limit",
       {{.name = "llm", .cohort = "research", .quota = {{"H100", Q(8, 4)}}},
        {.name = "vision", .cohort = "research", .quota = {{"H100", Q(16)}}}},
       {{"llm", 8}, {"llm", 4}},
       {"llm", 1},
       false,
       "quota: llm uses 12 of 8 H100 (4 borrowed) and asks 1; it may borrow 0 more (limit 4)"},
      {"a lender lends no more than its lending limit",
       {{.name = "llm", .cohort = "research", .quota = {{"H100", Q(8)}}},
        {.name = "vision", .cohort = "research", .quota = {{"H100", Q(16, std::nullopt, 4)}}}},
       {{"llm", 8}, {"llm", 4}},
       {"llm", 1},
       false,
       "cohort research can lend 0 (vision uses 0 of its 16, lends at most 4)"},
      {"a lender taking back its own quota is admitted, whatever was lent",
       {{.name = "llm", .cohort = "research", .quota = {{"H100", Q(8)}}},
        {.name = "vision", .cohort = "research", .quota = {{"H100", Q(8)}}}},
       {{"llm", 8}, {"llm", 8}},
       {"vision", 8},
       true,
       ""},
      {"no quota for a model is a quota of 0: only borrowed",
       {{.name = "llm", .quota = {{"A100", Q(8)}}}},
       {},
       {"llm", 1},
       false,
       "quota: llm uses 0 of 0 H100 and asks 1"},
      {"a tenant with no quota and no cohort is unlimited",
       {{.name = "llm", .quota = {{"H100", Q(8)}}}},
       {{"other", 8}, {"other", 8}, {"other", 8}},
       {"other", 8},
       true,
       ""},
  };
  for (const QuotaCase& c : cases) {
    SCOPED_TRACE(c.name);
    Pool p("4x8xH100");
    ASSERT_TRUE(p.cs->ConfigureTenants(c.tenants).ok());
    for (const auto& [tenant, gpus] : c.running) {
      const JobId id = p.Submit(tenant, 1, gpus);
      p.cs->Pass(p.now);
      ASSERT_TRUE(p.Placed(id)) << tenant << " " << gpus << ": " << p.cs->MessageOf(p.Job(id));
    }
    const JobId id = p.Submit(c.asks.first, 1, c.asks.second);
    p.cs->Pass(p.now);
    EXPECT_EQ(p.Placed(id), c.placed) << p.cs->MessageOf(p.Job(id));
    if (!c.message.empty()) {
      EXPECT_NE(std::string(p.cs->MessageOf(p.Job(id))).find(c.message), std::string::npos) << p.cs->MessageOf(p.Job(id));
    }
  }
}

// The example, with its arithmetic: llm (64 H100) and vision (32) share cohort
// research. vision uses its 32: it can lend 0. llm uses 60 and asks 8: 60 + 8 = 68 > 64, and
// borrowing 4 needs 4 the cohort does not have, so it waits. When vision's jobs end, llm
// borrows: 68 - 64 = 4 of vision's 32.
TEST(QuotaAdmission, WaitsWithTheNumbersThenBorrowsWhenTheLenderIsIdle) {
  Pool p("16x8xH100");
  ASSERT_TRUE(p.cs->ConfigureTenants({{.name = "llm", .cohort = "research", .quota = {{"H100", Q(64)}}},
                                      {.name = "vision", .cohort = "research", .quota = {{"H100", Q(32)}}}})
                  .ok());
  std::vector<JobId> vision;
  for (int i = 0; i < 4; ++i) vision.push_back(p.Submit("vision", 1, 8));
  for (int i = 0; i < 7; ++i) p.Submit("llm", 1, 8);
  p.Submit("llm", 1, 4);  // llm: 7 x 8 + 4 = 60
  p.cs->Pass(p.now);
  EXPECT_EQ(p.Used("llm"), 60);
  EXPECT_EQ(p.Used("vision"), 32);
  const JobId big = p.Submit("llm", 1, 8);
  p.cs->Pass(p.now);
  ASSERT_FALSE(p.Placed(big));
  EXPECT_EQ(p.cs->MessageOf(p.Job(big)),
            "waiting: quota: llm uses 60 of 64 H100 and asks 8; cohort research can lend 0 (vision uses 32 of its 32)");
  const auto d = p.cs->ExplainQueued(big);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->outcome, Outcome::kNotNow);
  for (JobId v : vision) p.End(v);
  p.cs->Pass(p.now);
  ASSERT_TRUE(p.Placed(big));
  EXPECT_EQ(p.Used("llm"), 68);
  const auto rows = p.cs->tenants().Rows(p.fleet);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].name, "llm");
  EXPECT_EQ(rows[0].models.at(0).borrowed, 4000);
  EXPECT_EQ(rows[1].models.at(0).lent, 4000);
}

TEST(QuotaAdmission, ConfigurationErrorsNameTheField) {
  Pool p("2x8xH100");
  const std::vector<std::pair<TenantConfig, std::string>> bad = {
      {{.name = "llm", .quota = {{"H100", Q(-1)}}}, "tenant llm: quota H100: nominal must be 0..1000000 GPUs, got -1"},
      {{.name = "llm", .quota = {{"H100", Q(8, 2'000'000)}}}, "borrow limit must be 0..1000000 GPUs, got 2000000"},
      {{.name = "llm", .weight = 0}, "tenant llm: weight must be 1..1000, got 0"},
      {{.name = "Bad Name"}, "tenant name"},
      {{.name = "llm", .cohort = "llm"}, "cannot be its own cohort"},
      {{.name = "llm", .order = "random"}, "tenant llm: order: unknown queue order 'random'"},
  };
  ASSERT_TRUE(p.cs->ConfigureTenants({{.name = "keep", .quota = {{"H100", Q(4)}}}}).ok());
  for (const auto& [cfg, want] : bad) {
    const Status s = p.cs->ConfigureTenants({cfg});
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find(want), std::string::npos) << s.message();
  }
  // A cohort named as a tenant would nest groups (and could loop): refused.
  const Status nest = p.cs->ConfigureTenants({{.name = "a", .cohort = "b"}, {.name = "b", .cohort = "a"}});
  EXPECT_NE(nest.message().find("cohort 'b' is a tenant's name"), std::string::npos) << nest.message();
  // Nothing already accepted was lost: keep's quota still holds.
  const JobId id = p.Submit("keep", 1, 8);
  p.cs->Pass(p.now);
  EXPECT_FALSE(p.Placed(id)) << "keep's quota of 4 still holds";
}

// A tenant's time limits, as Slurm's partition DefaultTime and MaxTime: a job without a limit
// gets the default (or the maximum when no default); one above the maximum is refused, naming
// both; a job of a tenant without limits keeps what it gave.
TEST(QuotaAdmission, TenantTimeLimits) {
  Pool p("1x8xH100");
  ASSERT_TRUE(p.cs->ConfigureTenants({{.name = "llm", .default_time = Millis{3'600'000}, .max_time = Millis{86'400'000}},
                                      {.name = "batch", .max_time = Millis{7'200'000}}})
                  .ok());
  const struct {
    const char* tenant;
    int64_t asked_ms;
    int64_t want_ms;  // -1: refused
  } cases[] = {{"llm", 0, 3'600'000}, {"llm", 600'000, 600'000}, {"llm", 86'400'000, 86'400'000}, {"llm", 90'000'000, -1},
               {"batch", 0, 7'200'000}, {"batch", 7'200'001, -1}, {"other", 0, 0}, {"other", 90'000'000, 90'000'000}};
  for (const auto& c : cases) {
    JobSpec s{.tenant = c.tenant, .time_limit = Millis{c.asked_ms}};
    const Status st = p.cs->Limit(s);
    if (c.want_ms < 0) {
      EXPECT_FALSE(st.ok()) << c.tenant << " " << c.asked_ms;
      EXPECT_NE(st.message().find(fmt::format("is over tenant {}'s maximum", c.tenant)), std::string::npos) << st.message();
    } else {
      EXPECT_TRUE(st.ok()) << st.message();
      EXPECT_EQ(s.time_limit.value(), c.want_ms) << c.tenant << " " << c.asked_ms;
    }
  }
  const Status bad = p.cs->ConfigureTenants({{.name = "x", .default_time = Millis{7'200'000}, .max_time = Millis{3'600'000}}});
  EXPECT_NE(bad.message().find("default time is above its max time"), std::string::npos) << bad.message();
}

// Priority classes with time limits (Slurm's QOS MaxWall) and a tenant's default class: a job
// that gives no priority gets its tenant's class; its time limit is its tenant's default, else
// its class's, else the smaller maximum; a limit above either maximum is refused, naming it.
TEST(QuotaAdmission, ClassTimeLimitsAndATenantsDefaultClass) {
  Fleet fleet = *ParseFleetShorthand("1x8xH100");
  fleet.priority_classes = {{.name = "batch", .value = 10, .default_time = Millis{600'000}, .max_time = Millis{3'600'000}},
                            {.name = "urgent", .value = 100, .max_time = Millis{1'800'000}}};
  Quiet quiet;
  ClusterState cs(fleet, MakePolicy("fifo"), {}, quiet);
  ASSERT_TRUE(cs.ConfigureTenants({{.name = "research", .priority = "batch"},
                                   {.name = "ops", .max_time = Millis{900'000}, .priority = "urgent"}})
                  .ok());
  const struct {
    const char* tenant;
    int priority;
    bool unset;
    int64_t asked_ms;
    int want_priority;
    int64_t want_ms;  // -1: refused
    const char* refusal;
  } cases[] = {
      {"research", 0, true, 0, 10, 600'000, ""},              // its default class, the class's default time
      {"research", 100, false, 0, 100, 1'800'000, ""},        // a class given wins; no default: the class's max
      {"research", 0, true, 3'600'000, 10, 3'600'000, ""},    // at the class's max
      {"research", 0, true, 3'600'001, 10, -1, "over priority class batch's maximum"},
      {"ops", 0, true, 0, 100, 900'000, ""},                  // the smaller max (tenant 15m, class 30m)
      {"ops", 0, true, 1'000'000, 100, -1, "over tenant ops's maximum"},
      {"other", 0, true, 0, 0, 0, ""},                        // no tenant default, no class: unchanged
      {"other", 10, false, 0, 10, 600'000, ""},               // a class by value gives its default
  };
  for (const auto& c : cases) {
    JobSpec s{.priority = c.priority, .tenant = c.tenant, .time_limit = Millis{c.asked_ms}};
    const Status st = cs.Limit(s, c.unset);
    SCOPED_TRACE(fmt::format("{} priority {} asked {}", c.tenant, c.priority, c.asked_ms));
    EXPECT_EQ(s.priority, c.want_priority);
    if (c.want_ms < 0) {
      EXPECT_NE(st.message().find(c.refusal), std::string::npos) << st.message();
    } else {
      EXPECT_TRUE(st.ok()) << st.message();
      EXPECT_EQ(s.time_limit.value(), c.want_ms);
    }
  }
}

// On a fixed fleet (the simulator) a job above what its tenant could ever hold is refused.
TEST(QuotaAdmission, AFixedFleetRefusesWhatTheQuotaNeverAllows) {
  Pool p("4x8xH100", "fifo", ClusterOptions{.never = NeverFits::kRefuse});
  ASSERT_TRUE(p.cs->ConfigureTenants({{.name = "a", .cohort = "c", .quota = {{"H100", Q(8, 4)}}},
                                      {.name = "b", .cohort = "c", .quota = {{"H100", Q(8)}}}})
                  .ok());
  const Status s = p.cs->Admit(JobSpec{.tasks = 2, .gpus_per_task = 8, .tenant = "a"});
  EXPECT_NE(s.message().find("more than tenant a could ever hold under its quota and what its cohort could lend (12)"),
            std::string::npos)
      << s.message();
  EXPECT_TRUE(p.cs->Admit(JobSpec{.tasks = 1, .gpus_per_task = 8, .tenant = "a"}).ok());
}

// --- properties ---

// A tenant's figures of model 0 from the rows `gpupool tenants` shows.
std::map<std::string, TenantModelRow> RowsOf(const ClusterState& cs, const Fleet& fleet) {
  std::map<std::string, TenantModelRow> out;
  for (const TenantRow& r : cs.tenants().Rows(fleet)) {
    for (const TenantModelRow& m : r.models) {
      if (m.model == fleet.models[0].name) out[r.name] = m;
    }
  }
  return out;
}

RC_GTEST_PROP(QuotaProperty, NeverAboveQuotaPlusBorrowNorLentAboveTheLendersLimits, ()) {
  const int nodes = *rc::gen::inRange(2, 7);
  Pool p(fmt::format("{}x8xH100", nodes), "fifo", ClusterOptions{.max_placements_per_pass = 1});
  const int n_tenants = *rc::gen::inRange(2, 5);
  std::vector<TenantConfig> tenants;
  for (int i = 0; i < n_tenants; ++i) {
    TenantConfig t{.name = fmt::format("t{}", i), .cohort = *rc::gen::element<std::string>("", "c1", "c1", "c2")};
    QuotaLimits q{.nominal = *rc::gen::inRange(0, 17)};
    if (*rc::gen::arbitrary<bool>()) q.borrow_limit = *rc::gen::inRange(0, 9);
    if (*rc::gen::arbitrary<bool>()) q.lend_limit = *rc::gen::inRange(0, 9);
    t.quota["H100"] = q;
    tenants.push_back(t);
  }
  RC_ASSERT(p.cs->ConfigureTenants(tenants).ok());
  std::vector<JobId> live;
  const int steps = *rc::gen::inRange(20, 80);
  for (int step = 0; step < steps; ++step) {
    const int what = *rc::gen::inRange(0, 10);
    if (what < 5) {
      live.push_back(p.Submit(fmt::format("t{}", *rc::gen::inRange(0, n_tenants)), *rc::gen::inRange(1, 3),
                              *rc::gen::element(1, 2, 4, 8)));
    } else if (what < 7 && !live.empty()) {
      const size_t i = static_cast<size_t>(*rc::gen::inRange<int>(0, static_cast<int>(live.size())));
      if (p.Placed(live[i]) && !IsTerminal(p.Job(live[i]).state)) p.End(live[i]);
    }
    const auto before = RowsOf(*p.cs, p.fleet);
    p.cs->Pass(p.now);  // one placement at most: any new borrowing is this pass's one job
    const auto after = RowsOf(*p.cs, p.fleet);
    std::map<std::string, int64_t> borrowed, free;
    bool borrowed_more = false;
    std::string borrower_cohort;
    for (const TenantConfig& t : tenants) {
      const TenantModelRow& r = after.at(t.name);
      const auto& q = t.quota.at("H100");
      // 1. Never above nominal + borrowing limit.
      if (q.borrow_limit) RC_ASSERT(r.used <= (q.nominal + *q.borrow_limit) * 1000);
      // Borrowing needs a cohort.
      if (t.cohort.empty()) RC_ASSERT(r.borrowed == 0);
      // Lent is never above the lending limit nor the nominal quota.
      RC_ASSERT(r.lent <= q.nominal * 1000);
      if (q.lend_limit) RC_ASSERT(r.lent <= *q.lend_limit * 1000);
      const int64_t was = before.count(t.name) ? before.at(t.name).borrowed : 0;
      if (r.borrowed > was) {
        borrowed_more = true;
        borrower_cohort = t.cohort;
      }
    }
    // 2. A borrow admitted now is covered by what the cohort's lenders may lend: the sum of
    // the members' borrowing is within the sum of their free lendable parts, each at most
    // min(lending limit, nominal - used), so the lending can be attributed within every limit.
    if (borrowed_more) {
      int64_t total_borrowed = 0, total_free = 0;
      for (const TenantConfig& t : tenants) {
        if (t.cohort != borrower_cohort) continue;
        const TenantModelRow& r = after.at(t.name);
        const auto& q = t.quota.at("H100");
        const int64_t lendable = std::min(q.lend_limit.value_or(q.nominal), q.nominal) * 1000;
        total_borrowed += r.borrowed;
        total_free += std::max<int64_t>(0, std::min(lendable, q.nominal * 1000 - r.used));
      }
      RC_ASSERT(total_borrowed <= total_free);
    }
  }
}

// Each tenant's jobs start in its own order: one GPU, one job at a time; every job submitted at
// once, with random priorities, durations and submit times; tenants with random orders.
RC_GTEST_PROP(QuotaProperty, EachTenantsJobsStartInItsOwnOrder, ()) {
  const std::string share = *rc::gen::element<std::string>("fairshare", "drf");
  Pool p("1x1xH100", share + "/fifo");
  const std::vector<std::string> orders = {"fifo", "priority", "sjf"};
  std::vector<TenantConfig> tenants;
  for (int i = 0; i < 3; ++i) {
    tenants.push_back(TenantConfig{.name = fmt::format("t{}", i), .weight = *rc::gen::inRange(1, 4),
                                   .order = orders[static_cast<size_t>(*rc::gen::inRange(0, 3))]});
  }
  RC_ASSERT(p.cs->ConfigureTenants(tenants).ok());
  std::map<std::string, std::vector<JobId>> submitted;
  const int n = *rc::gen::inRange(5, 30);
  for (int k = 0; k < n; ++k) {
    const std::string t = fmt::format("t{}", *rc::gen::inRange(0, 3));
    JobSpec extra{.priority = *rc::gen::inRange(0, 4), .submit_time = Millis{*rc::gen::inRange(1, 50) * 1000}};
    if (*rc::gen::arbitrary<bool>()) extra.estimated_duration = Millis{*rc::gen::inRange(1, 10) * 60'000};
    submitted[t].push_back(p.Submit(t, 1, 1, extra));
  }
  std::map<std::string, std::vector<JobId>> started;
  for (int k = 0; k < n; ++k) {
    p.now = p.now + Millis{1'000};
    p.cs->Pass(p.now);
    std::optional<JobId> ran;
    for (const auto& [t, ids] : submitted) {
      for (JobId id : ids) {
        if (p.Job(id).state == JobState::kStarting) ran = id;
      }
    }
    RC_ASSERT(ran.has_value());
    started[p.Job(*ran).spec.tenant].push_back(*ran);
    p.End(*ran);
  }
  for (const TenantConfig& t : tenants) {
    auto order = BuiltinRegistry().MakeQueueOrder(t.order);
    RC_ASSERT(order.has_value());
    std::vector<JobId> want = submitted[t.name];
    auto key = [&](JobId id) {
      auto c = CompileJob(p.Job(id).spec, p.fleet);
      return std::pair((*order)->Key(*c), id);
    };
    std::sort(want.begin(), want.end(), [&](JobId a, JobId b) { return key(a) < key(b); });
    RC_ASSERT(started[t.name] == want);
  }
}

// --- fair share ---

// Two tenants of weights 1 and 2 keep a 12-GPU pool saturated with 1-GPU jobs of 10 s; each
// second, jobs that have run 10 s end and a pass runs. Over 200..1,200 s, after the warm-up, a
// gets 1/3 of the GPU-time and b 2/3, within 10% of each entitled share.
void ExpectShares(const std::string& policy) {
  Pool p("3x4xH100", policy);
  p.cs->set_half_life(Millis{60'000});
  ASSERT_TRUE(p.cs->ConfigureTenants({{.name = "a", .weight = 1}, {.name = "b", .weight = 2}}).ok());
  std::map<std::string, int64_t> gpu_ms;
  std::map<uint64_t, int64_t> ends;  // job -> when it ends
  for (int k = 0; k < 1'000; ++k) {  // more than either runs in 1,200 s: both always wait
    p.Submit("a", 1, 1);
    p.Submit("b", 1, 1);
  }
  for (int64_t s = 1; s <= 1'200; ++s) {
    p.now = Millis{s * 1'000};
    for (auto it = ends.begin(); it != ends.end();) {
      if (it->second <= p.now.value()) {
        p.End(JobId{it->first});
        it = ends.erase(it);
      } else {
        ++it;
      }
    }
    for (JobId id : p.cs->Pass(p.now).placed) ends[id.value()] = p.now.value() + 10'000;
    if (s > 200) {
      for (const auto& [id, end] : ends) gpu_ms[p.Job(JobId{id}).spec.tenant] += 1'000;
    }
  }
  const double total = static_cast<double>(gpu_ms["a"] + gpu_ms["b"]);
  EXPECT_GT(total, 0.95 * 12 * 1'000 * 1'000) << "the pool stays busy";
  const double a = static_cast<double>(gpu_ms["a"]) / total;
  const double b = static_cast<double>(gpu_ms["b"]) / total;
  EXPECT_NEAR(a, 1.0 / 3, 0.1 / 3) << policy << ": a's share " << a;
  EXPECT_NEAR(b, 2.0 / 3, 0.2 / 3) << policy << ": b's share " << b;
}

TEST(FairShare, WeightsOneAndTwoGetOneThirdAndTwoThirds) { ExpectShares("fairshare/fifo"); }
TEST(FairShare, DrfWeightsOneAndTwoGetOneThirdAndTwoThirds) { ExpectShares("drf/fifo"); }

// Without a share order the queue is one FIFO for all: the tenant that submitted first takes
// the pool (the contrast that shows the share order does the work above).
TEST(FairShare, FifoIgnoresWeights) {
  Pool p("1x4xH100", "fifo");
  ASSERT_TRUE(p.cs->ConfigureTenants({{.name = "a", .weight = 1}, {.name = "b", .weight = 2}}).ok());
  for (int k = 0; k < 4; ++k) p.Submit("a", 1, 1);
  for (int k = 0; k < 4; ++k) p.Submit("b", 1, 1);
  p.cs->Pass(p.now);
  EXPECT_EQ(p.Used("a"), 4);
  EXPECT_EQ(p.Used("b"), 0);
}

// Decayed usage, with the arithmetic: 2 GPUs held for one half-life (60 s) accrue
// 2 x 60 s / ln 2 x (1 - 1/2) = 86.56 GPU-s; one more half-life idle halves it: 43.28 GPU-s.
TEST(FairShare, DecayedUsageHalvesEachHalfLife) {
  Pool p("1x4xH100", "fairshare/fifo");
  p.cs->set_half_life(Millis{60'000});
  ASSERT_TRUE(p.cs->ConfigureTenants({{.name = "a"}}).ok());
  p.now = Millis{0};
  const JobId id = p.Submit("a", 1, 2);
  p.cs->Pass(p.now);
  ASSERT_TRUE(p.Placed(id));
  p.now = Millis{60'000};
  p.End(id);
  const TenantIndex a = *p.cs->tenants().Find("a");
  EXPECT_NEAR(p.cs->tenants().decayed(a), 86'561.7, 1);
  p.now = Millis{120'000};
  p.Submit("a", 1, 1);
  p.cs->Pass(p.now);  // advances every tenant to now first
  EXPECT_NEAR(p.cs->tenants().decayed(a), 43'280.9, 1);
}

}  // namespace
}  // namespace gp
