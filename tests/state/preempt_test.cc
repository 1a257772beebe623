// Preemption in the scheduling core, through the state owner (ClusterState) that the live
// server and the simulator share:
//   - case by case: priority preemption takes exactly as many jobs as needed (the test finds
//     the minimum by brute force), never of equal or higher priority, never a job of a
//     non-preemptible class or younger than its class's min_run; a gang goes whole; reclaim
//     within a cohort takes back only what the borrower borrows and only as far as the
//     lender needs; with preemption off nothing is stopped;
//   - properties over random pools: every victim stands below the job (outside reclaim), every
//     task of every victim is stopped (no gang partly evicted), no victim is younger than its
//     min_run, the job starts where it was promised, what is held for it is not taken by
//     another job while its victims stop, and the events tell it all (preempted, requeued;
//     preempting, placed).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <set>

#include "sched/fixtures.h"
#include "sched/registry.h"
#include "state/cluster_state.h"

namespace gp {
namespace {

// Records what happens; tasks stop at once (as in the simulator) unless `hold` is set, when
// they keep running until the test ends them (as an agent's do, during their grace).
struct Listener final : ClusterListener {
  std::vector<std::pair<uint64_t, std::string>> events;
  bool hold = false;
  std::vector<std::pair<uint64_t, int>> stops;
  void JobChanged(const JobRecord& j, std::string_view what) override { events.emplace_back(j.spec.id.value(), what); }
  bool StopTask(const JobRecord& j, int task, int) override {
    stops.emplace_back(j.spec.id.value(), task);
    return !hold;
  }
};

struct Pool {
  Fleet fleet;
  Listener listener;
  std::unique_ptr<ClusterState> cs;
  Millis now{1'000};
  Pool(const std::string& shorthand, const std::string& rules, const std::string& policy = "priority",
       std::vector<PriorityClass> classes = {})
      : fleet(*ParseFleetShorthand(shorthand)) {
    fleet.priority_classes = std::move(classes);
    Policy p = testing::MakePolicy(policy);
    p.preemption = *ParsePreemption(rules);
    p.preemption.max_per_pass = 64;
    cs = std::make_unique<ClusterState>(fleet, std::move(p), ClusterOptions{}, listener);
  }
  JobId Submit(int tasks, int gpus, int priority = 0, const std::string& tenant = "") {
    JobSpec s{.id = JobId{cs->next_id()}, .tasks = tasks, .gpus_per_task = gpus, .priority = priority, .tenant = tenant,
              .submit_time = now};
    cs->Accept(JobRecord{.spec = s});
    return s.id;
  }
  ClusterState::PassResult Pass() {
    auto r = cs->Pass(now);
    for (JobId id : r.placed) Start(id);
    return r;
  }
  void Start(JobId id) {
    JobRecord& j = *cs->Find(id);
    for (size_t t = 0; t < j.tasks.size(); ++t) cs->TaskStarted(j, static_cast<int>(t), now, now);
  }
  const JobRecord& Job(JobId id) { return *cs->Find(id); }
  // `n` 1-GPU jobs of priority 0 placed; a second later a 1-task job of `gpus` GPUs and
  // priority 10 arrives and a pass runs: the job and that pass.
  std::pair<JobId, ClusterState::PassResult> FillThenAsk(int n, int gpus) {
    for (int k = 0; k < n; ++k) Submit(1, 1, 0);
    Pass();
    now += Millis{1'000};
    const JobId high = Submit(1, gpus, 10);
    return {high, Pass()};
  }
  bool Running(JobId id) { return Job(id).state == JobState::kRunning || Job(id).state == JobState::kStarting; }
};

// The fewest 1-GPU jobs whose removal frees `tasks` nodes of all their GPUs, by brute force
// over every choice of nodes (each node's cost: the jobs on it).
int MinimumVictims(const std::vector<int>& jobs_on_node, int tasks) {
  const int n = static_cast<int>(jobs_on_node.size());
  int best = INT32_MAX;
  for (uint32_t mask = 0; mask < (1u << n); ++mask) {
    if (std::popcount(mask) != tasks) continue;
    int sum = 0;
    for (int i = 0; i < n; ++i) {
      if (mask >> i & 1) sum += jobs_on_node[static_cast<size_t>(i)];
    }
    best = std::min(best, sum);
  }
  return best;
}

struct FillCase {
  const char* name;
  std::vector<int> busy;  // 1-GPU low-priority jobs on each 8-GPU node
  int tasks, gpus;        // the high-priority job
};

TEST(Preemption, TakesExactlyAsManyJobsAsNeeded) {
  const std::vector<FillCase> cases = {
      {"full pool, 2 x 8 gang", {8, 8, 8, 8}, 2, 8},
      {"two nodes less busy", {8, 6, 8, 7}, 2, 8},
      {"one 8-GPU task, one node nearly free", {8, 8, 1, 8}, 1, 8},
      {"a 4-GPU task needs 2 of 8 on a busy node, 0 where 4 are free", {8, 4, 8, 8}, 1, 4},
      {"3 x 8 over 5 nodes", {8, 5, 8, 3, 7}, 3, 8},
  };
  for (const FillCase& c : cases) {
    SCOPED_TRACE(c.name);
    Pool pool(fmt::format("{}x8xH100", c.busy.size()), "priority");
    std::vector<JobId> low;
    // Fill each node with its count of 1-GPU jobs: a pass packs them; fillers beyond are cancelled.
    std::vector<JobId> fillers;
    for (int k = 0; k < 8 * static_cast<int>(c.busy.size()); ++k) fillers.push_back(pool.Submit(1, 1));
    pool.Pass();
    std::vector<int> on_node(c.busy.size(), 0);
    for (JobId id : fillers) {
      const size_t node = pool.Job(id).tasks.at(0).allocation.node.value();
      if (on_node[node] < c.busy[node]) {
        ++on_node[node];
        low.push_back(id);
      } else {
        ASSERT_TRUE(pool.cs->Cancel(id, pool.now).ok());
      }
    }
    ASSERT_EQ(on_node, c.busy);
    pool.now += Millis{60'000};
    const JobId high = pool.Submit(c.tasks, c.gpus, 100);
    const auto r = pool.Pass();
    const int expected = MinimumVictims(c.busy, c.tasks) - (c.gpus < 8 ? 0 : 0);
    if (c.gpus == 8) {
      EXPECT_EQ(static_cast<int>(r.preempted.size()), expected);
    } else {
      // A 4-GPU task: the node with 4 free needs none.
      EXPECT_TRUE(r.preempted.empty());
    }
    EXPECT_TRUE(pool.Running(high)) << pool.Job(high).message;
    for (JobId v : r.preempted) {
      const JobRecord& j = pool.Job(v);
      EXPECT_EQ(j.state, JobState::kQueued) << "a victim waits again";
      EXPECT_EQ(j.failures, 0) << "a preemption is no failure";
      ASSERT_FALSE(j.attempts.empty());
      EXPECT_NE(j.attempts.back().outcome.find(fmt::format("preempted by job {}", high.value())), std::string::npos)
          << j.attempts.back().outcome;
    }
  }
}

TEST(Preemption, NeverTakesEqualOrHigherPriorityNorProtectedJobs) {
  const std::vector<PriorityClass> classes = {{.name = "low", .value = 0},
                                              {.name = "keep", .value = 1, .preemptible = false},
                                              {.name = "settled", .value = 2, .min_run = Millis{600'000}},
                                              {.name = "high", .value = 10}};
  struct Case {
    const char* name;
    int victim_priority;
    int64_t ran_ms;
    bool preempted;
  };
  const std::vector<Case> cases = {
      {"lower, preemptible", 0, 60'000, true},
      {"equal priority", 10, 60'000, false},
      {"higher priority", 11, 60'000, false},
      {"not preemptible", 1, 60'000, false},
      {"younger than min_run", 2, 599'000, false},
      {"past min_run", 2, 600'000, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Pool pool("1x8xH100", "priority", "priority", classes);
    const JobId victim = pool.Submit(1, 8, c.victim_priority);
    pool.Pass();
    ASSERT_TRUE(pool.Running(victim));
    pool.now += Millis{c.ran_ms};
    const JobId high = pool.Submit(1, 8, 10);
    const auto r = pool.Pass();
    EXPECT_EQ(!r.preempted.empty(), c.preempted);
    EXPECT_EQ(pool.Running(high), c.preempted);
    EXPECT_EQ(pool.Running(victim), !c.preempted);
  }
}

TEST(Preemption, OffStopsNothing) {
  Pool pool("1x8xH100", "off");
  const JobId low = pool.Submit(1, 8, 0);
  pool.Pass();
  const JobId high = pool.Submit(1, 8, 100);
  const auto r = pool.Pass();
  EXPECT_TRUE(r.preempted.empty());
  EXPECT_TRUE(pool.Running(low));
  EXPECT_FALSE(pool.Running(high));
}

TEST(Preemption, AGangGoesWholeAndItsOtherNodeServesToo) {
  // A 2 x 5 low gang over two nodes (5 GPUs on each, the other 3 busy with 1-GPU jobs of
  // priority 5): an 8-GPU job of priority 3 may take only the gang (priority 0), which frees 5
  // on each node: not enough on one, so nothing is stopped. One of priority 6 needs a whole
  // node: the gang's task there and the 3 small jobs; the gang's task on the other node stops
  // with it.
  Pool pool("2x8xH100", "priority");
  const JobId gang = pool.Submit(2, 5, 0);
  pool.Pass();
  ASSERT_TRUE(pool.Running(gang));
  std::vector<JobId> small;
  for (int k = 0; k < 6; ++k) small.push_back(pool.Submit(1, 1, 5));
  pool.Pass();
  pool.now += Millis{1'000};
  const JobId mid = pool.Submit(1, 8, 3);
  auto r = pool.Pass();
  EXPECT_TRUE(r.preempted.empty()) << "the gang frees 5 on each node, never 8 on one";
  EXPECT_TRUE(pool.Running(gang));
  ASSERT_TRUE(pool.cs->Cancel(mid, pool.now).ok());
  const JobId high = pool.Submit(1, 8, 6);
  r = pool.Pass();
  ASSERT_TRUE(pool.Running(high)) << pool.Job(high).message;
  // On its node: the gang's task and the 4 small jobs there; the gang's other task stops too.
  EXPECT_EQ(r.preempted.size(), 4u);
  EXPECT_EQ(pool.Job(gang).state, JobState::kQueued);
  const auto gang_stops = std::count_if(pool.listener.stops.begin(), pool.listener.stops.end(),
                                        [&](const auto& s) { return s.first == gang.value(); });
  EXPECT_EQ(gang_stops, 2) << "both tasks of the gang";
}

TEST(Preemption, ReclaimTakesBackOnlyWhatIsBorrowedAndNeeded) {
  // a and b have 8 H100 each in cohort lab (16 in all). b fills all 16 with 1-GPU jobs while a is
  // idle: it borrows 8. a asks 3: 3 of b's jobs go. a asks 6 more (9 > its 8): only 5 more go,
  // and the 6th job waits (a would exceed its quota: reclaim stops at nominal).
  struct Case {
    const char* name;
    std::string rules;
    int asks;
    int expect_preempted;
    int expect_running_a;
  };
  const std::vector<Case> cases = {
      {"reclaim 3", "reclaim", 3, 3, 3},
      {"reclaim all 8 a is owed", "reclaim", 8, 8, 8},
      {"beyond a's quota: only its 8", "reclaim", 10, 8, 8},
      {"reclaim off", "priority", 3, 0, 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Pool pool("2x8xH100", c.rules);
    const std::vector<TenantConfig> tenants = {
        {.name = "a", .cohort = "lab", .quota = {{"H100", QuotaLimits{.nominal = 8}}}},
        {.name = "b", .cohort = "lab", .quota = {{"H100", QuotaLimits{.nominal = 8}}}}};
    ASSERT_TRUE(pool.cs->ConfigureTenants(tenants).ok());
    std::vector<JobId> b;
    for (int k = 0; k < 16; ++k) b.push_back(pool.Submit(1, 1, 0, "b"));
    pool.Pass();
    for (JobId id : b) ASSERT_TRUE(pool.Running(id));
    pool.now += Millis{1'000};
    std::vector<JobId> a;
    for (int k = 0; k < c.asks; ++k) a.push_back(pool.Submit(1, 1, 0, "a"));
    const int preempted = static_cast<int>(pool.Pass().preempted.size());
    EXPECT_EQ(preempted, c.expect_preempted);
    EXPECT_EQ(std::count_if(a.begin(), a.end(), [&](JobId id) { return pool.Running(id); }), c.expect_running_a);
    const auto t = *pool.cs->tenants().Find("b");
    EXPECT_GE(pool.cs->tenants().used(t, 0), 8'000) << "b keeps at least its own quota";
  }
}

TEST(Preemption, WhatIsHeldForTheJobIsNotTakenWhileItsVictimsStop) {
  // The victims keep running through their grace (an agent's): the freed GPUs are the job's.
  Pool pool("1x8xH100", "priority");
  pool.listener.hold = true;
  const auto [high, r] = pool.FillThenAsk(8, 4);
  ASSERT_EQ(r.preempted.size(), 4u);
  EXPECT_FALSE(pool.Running(high)) << "its victims have not stopped yet";
  // Two victims stop; a small job of higher priority than the rest arrives: the two free GPUs
  // are held for `high`, so it waits (nothing else is free) though it could preempt none either.
  for (size_t k = 0; k < 2; ++k) {
    JobRecord& v = *pool.cs->Find(r.preempted[k]);
    pool.cs->TaskEnded(v, 0, std::nullopt, 15, "", pool.now);
  }
  pool.cs->RequeueReady(pool.now);
  const JobId other = pool.Submit(1, 1, 0);
  pool.Pass();
  EXPECT_FALSE(pool.Running(other)) << "it took a GPU held for job " << high.value();
  EXPECT_FALSE(pool.Running(high));
  for (size_t k = 2; k < 4; ++k) {
    JobRecord& v = *pool.cs->Find(r.preempted[k]);
    pool.cs->TaskEnded(v, 0, std::nullopt, 15, "", pool.now);
  }
  pool.cs->RequeueReady(pool.now);
  pool.Pass();
  EXPECT_TRUE(pool.Running(high)) << pool.Job(high).message;
  EXPECT_EQ(pool.cs->preemptions_total(), 4);
  EXPECT_EQ(pool.cs->failovers_total(), 0);
}

// A restart while the victims stop: the owner stores each nomination and gives it back after
// every job is restored; the job keeps its hold and starts where it was promised, and nobody
// else is preempted. A nomination whose victims were not stored as stopping is refused.
TEST(Preemption, ANominationSurvivesARestart) {
  Pool pool("2x8xH100", "priority");
  pool.listener.hold = true;
  const auto [high, r] = pool.FillThenAsk(16, 8);
  ASSERT_EQ(r.preempted.size(), 8u);
  const ClusterState::Nomination promised = pool.cs->nominated().at(high.value());
  std::vector<std::pair<std::string, TaskAllocation>> stored;
  for (const TaskAllocation& a : promised.tasks) stored.emplace_back(pool.fleet.node(a.node).name, a);
  auto node_of = [&](const std::string& name) -> std::optional<NodeId> {
    for (const Node& n : pool.fleet.nodes) {
      if (n.name == name) return n.id;
    }
    return std::nullopt;
  };
  // The restart: a new state from the stored records (each with a listener that outlives it).
  std::deque<Listener> listeners;
  auto restart = [&](const std::vector<JobId>& victims, bool victims_stored_stopping) {
    Listener& quiet = listeners.emplace_back();
    quiet.hold = true;
    Policy policy = testing::MakePolicy("priority");
    policy.preemption.priority = true;
    auto cs = std::make_unique<ClusterState>(pool.fleet, std::move(policy), ClusterOptions{}, quiet);
    for (const auto& [id, j] : pool.cs->jobs()) {
      JobRecord copy = j;
      if (!victims_stored_stopping) copy.failing_over = false;
      cs->Restore(std::move(copy), node_of);
    }
    Status s = cs->RestoreNomination(high, stored, victims, node_of);
    return std::make_pair(std::move(cs), s);
  };
  auto [bad, refused] = restart(promised.victims, false);
  EXPECT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("was not stored as stopping"), std::string::npos) << refused.message();
  auto [cs, s] = restart(promised.victims, true);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(cs->nominated().count(high.value()), 1u);
  // Nothing else starts on what is held, and the job waits for no new victims.
  const auto again = cs->Pass(pool.now);
  EXPECT_TRUE(again.preempted.empty());
  // The victims stop: the job starts exactly where it was promised.
  for (JobId v : promised.victims) {
    JobRecord& vr = *cs->Find(v);
    for (size_t t = 0; t < vr.tasks.size(); ++t) cs->TaskEnded(vr, static_cast<int>(t), std::nullopt, 15, "", pool.now);
  }
  cs->RequeueReady(pool.now);
  cs->Pass(pool.now);
  const JobRecord& j = *cs->Find(high);
  ASSERT_EQ(j.state, JobState::kStarting);
  EXPECT_EQ(j.tasks[0].allocation.node, promised.tasks[0].node);
  EXPECT_EQ(j.tasks[0].allocation.gpu_mask, promised.tasks[0].gpu_mask);
}

// --- properties ---

RC_GTEST_PROP(PreemptionProperty, VictimsAreWholeLowerAndOldEnough, ()) {
  const int nodes = *rc::gen::inRange(1, 5);
  const std::vector<PriorityClass> classes = {{.name = "p0", .value = 0},
                                              {.name = "p1", .value = 1, .min_run = Millis{30'000}},
                                              {.name = "p2", .value = 2, .preemptible = false},
                                              {.name = "p3", .value = 3}};
  Pool pool(fmt::format("{}x8xH100", nodes), "priority", "priority", classes);
  pool.listener.hold = *rc::gen::arbitrary<bool>();
  const int jobs = *rc::gen::inRange(2 * nodes, 8 * nodes);
  for (int k = 0; k < jobs; ++k) {
    const int gpus = *rc::gen::element(1, 2, 4, 8);
    const int tasks = *rc::gen::inRange(1, std::min(nodes, 2) + 1);
    pool.Submit(tasks, gpus, *rc::gen::inRange(0, 4));
    pool.now += Millis{*rc::gen::inRange(0, 20'000)};
    pool.Pass();
  }
  const Millis at = pool.now;
  const int priority = *rc::gen::inRange(1, 5);
  const JobId job = pool.Submit(*rc::gen::inRange(1, nodes + 1), *rc::gen::element(1, 4, 8), priority);
  // What each job held before the pass.
  std::map<uint64_t, JobRecord> before;
  for (const auto& [id, j] : pool.cs->jobs()) before.emplace(id, j);
  const auto r = pool.cs->Pass(at);
  RC_TAG(r.preempted.empty() ? "no victims" : pool.listener.hold ? "victims, stopping in their grace" : "victims, stopped at once");
  RC_ASSERT(r.preempted_by.size() == r.preempted.size());
  for (size_t k = 0; k < r.preempted.size(); ++k) {
    const JobId v = r.preempted[k];
    const JobRecord& was = before.at(v.value());
    RC_ASSERT(was.spec.priority < before.at(r.preempted_by[k].value()).spec.priority);
    RC_ASSERT(was.spec.priority != 2);
    if (was.spec.priority == 1) RC_ASSERT(at.value() - was.start_ms >= 30'000);
    // Every task of the victim was told to stop (or had ended): no gang partly evicted.
    for (size_t t = 0; t < was.tasks.size(); ++t) {
      const bool told = std::find(pool.listener.stops.begin(), pool.listener.stops.end(),
                                  std::pair<uint64_t, int>{v.value(), static_cast<int>(t)}) != pool.listener.stops.end();
      RC_ASSERT(told || was.tasks[t].exit_code || was.tasks[t].signal);
    }
  }
  // Every victim's story is in its events: preempted, then (once stopped) requeued; the
  // preemptor's: preempting, then placed once they have all stopped.
  auto events_of = [&](JobId id) {
    std::vector<std::string> out;
    for (const auto& [j, what] : pool.listener.events) {
      if (j == id.value()) out.push_back(what);
    }
    return out;
  };
  for (size_t k = 0; k < r.preempted.size(); ++k) {
    const auto ev = events_of(r.preempted[k]);
    const auto p = std::find(ev.begin(), ev.end(), "preempted");
    RC_ASSERT(p != ev.end());
    if (!pool.listener.hold) RC_ASSERT(std::find(p, ev.end(), "requeued") != ev.end());
    const auto by = events_of(r.preempted_by[k]);
    const auto q = std::find(by.begin(), by.end(), "preempting");
    RC_ASSERT(q != by.end());
    if (!pool.listener.hold) RC_ASSERT(std::find(q, by.end(), "placed") != by.end());
  }
  // Running jobs not chosen keep running.
  for (const auto& [id, was] : before) {
    if (std::find(r.preempted.begin(), r.preempted.end(), JobId{id}) != r.preempted.end()) continue;
    if (was.state == JobState::kRunning) RC_ASSERT(pool.cs->Find(JobId{id})->state == JobState::kRunning);
  }
  // Other waiting jobs may have preempted too; what follows is about `job`'s own.
  if (std::find(r.preemptors.begin(), r.preemptors.end(), job) != r.preemptors.end()) {
    const auto& promised = pool.cs->nominated();
    if (pool.listener.hold) {
      RC_ASSERT(promised.count(job.value()) == 1u);
      // While the victims stop, no pass gives another job what is held for `job`.
      const JobId other = pool.Submit(1, 1, 0);
      pool.cs->Pass(at);
      if (pool.cs->Find(other)->state != JobState::kQueued) {
        const TaskAllocation& got = pool.cs->Find(other)->tasks[0].allocation;
        for (const TaskAllocation& held : promised.at(job.value()).tasks) {
          RC_ASSERT(!(held.node == got.node && (held.gpu_mask & got.gpu_mask)));
        }
      }
      // Once they have stopped, it starts where it was promised.
      const std::vector<TaskAllocation> where = promised.at(job.value()).tasks;
      for (JobId v : r.preempted) {
        JobRecord& vr = *pool.cs->Find(v);
        for (size_t t = 0; t < vr.tasks.size(); ++t) pool.cs->TaskEnded(vr, static_cast<int>(t), std::nullopt, 15, "", at);
      }
      pool.cs->RequeueReady(at);
      pool.cs->Pass(at);
      const JobRecord& j = *pool.cs->Find(job);
      RC_ASSERT(j.state == JobState::kStarting);
      for (size_t t = 0; t < where.size(); ++t) {
        RC_ASSERT(j.tasks[t].allocation.node == where[t].node);
        RC_ASSERT(j.tasks[t].allocation.gpu_mask == where[t].gpu_mask);
      }
    } else {
      RC_ASSERT(pool.cs->Find(job)->state == JobState::kStarting);
    }
  }
  RC_ASSERT(pool.cs->inconsistencies() == 0);
}

}  // namespace
}  // namespace gp
