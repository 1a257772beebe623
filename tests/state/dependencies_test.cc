// Slurm's dependencies in the state owner the server and the simulator share: table-driven
// cases of what each kind waits for and when it can never be met, a chain run in order, the
// singleton, and, as a property, that whatever happens to the jobs depended on, no dependent
// ever starts before its dependencies are met, and none waits forever once they cannot be.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <map>

#include "sched/registry.h"
#include "state/cluster_state.h"

namespace gp {
namespace {

struct Listener final : ClusterListener {
  std::vector<std::pair<uint64_t, std::string>> log;  // (job, what), in order
  void JobChanged(const JobRecord& j, std::string_view what) override { log.emplace_back(j.spec.id.value(), std::string(what)); }
  bool StopTask(const JobRecord&, int, int) override { return true; }
};

struct Pool {
  Fleet fleet = *ParseFleetShorthand("2x4xH100");
  Listener listener;
  std::unique_ptr<ClusterState> cs;
  Millis now{1'000};
  Pool() {
    auto p = BuiltinRegistry().MakePolicy("fifo");
    cs = std::make_unique<ClusterState>(fleet, std::move(*p), ClusterOptions{}, listener);
  }
  JobId Submit(const std::string& dependency = "", const std::string& name = "job", int gpus = 1) {
    JobRecord r{.spec = JobSpec{.id = JobId{cs->next_id()}, .name = name, .gpus_per_task = gpus, .submit_time = now}};
    if (!dependency.empty()) {
      JobExtras e;
      EXPECT_TRUE(ParseDependencies(dependency, e).ok()) << dependency;
      r.extras = std::move(e);
      EXPECT_TRUE(cs->CheckDependencies(r).ok());
    }
    cs->Accept(std::move(r));
    return JobId{cs->next_id() - 1};
  }
  JobRecord& Job(JobId id) { return *cs->Find(id); }
  void Pass() {
    now = now + Millis{1'000};
    cs->Pass(now);
    for (auto& [id, j] : const_cast<std::map<uint64_t, JobRecord>&>(cs->jobs())) {
      if (j.state != JobState::kStarting) continue;
      for (size_t t = 0; t < j.tasks.size(); ++t) cs->TaskStarted(j, static_cast<int>(t), now, now);
    }
  }
  void End(JobId id, int code) {
    JobRecord& j = Job(id);
    for (size_t t = 0; t < j.tasks.size(); ++t) cs->TaskEnded(j, static_cast<int>(t), code, std::nullopt, "", now);
  }
};

struct Case {
  const char* name;
  const char* dependency;
  // What happens to job 1 (the one depended on): 0 succeeds, 1 fails, -1 cancelled while queued.
  int first;
  JobState want;          // the dependent's state after
  const char* message;    // part of its message ("" any)
};

TEST(DependenciesTest, EachKindWaitsForItsOutcomeAndEndsWhenItCannotBeMet) {
  const Case cases[] = {
      {"afterok, it succeeded", "afterok:1", 0, JobState::kSucceeded, ""},
      {"afterok, it failed", "afterok:1", 1, JobState::kCancelled, "can never be met: job 1 failed"},
      {"afterok, it was cancelled", "afterok:1", -1, JobState::kCancelled, "afterok:1 can never be met: job 1 cancelled"},
      {"afterany, it failed", "afterany:1", 1, JobState::kSucceeded, ""},
      {"afterany, it was cancelled", "afterany:1", -1, JobState::kSucceeded, ""},
      {"afternotok, it failed", "afternotok:1", 1, JobState::kSucceeded, ""},
      {"afternotok, it succeeded", "afternotok:1", 0, JobState::kCancelled, "afternotok:1 can never be met: job 1 succeeded"},
  };
  for (const Case& c : cases) {
    Pool p;
    const JobId first = p.Submit("", "first", c.first < 0 ? 16 : 1);  // 16 GPUs wait (2x4): cancelled while queued
    const JobId second = p.Submit(c.dependency);
    p.Pass();
    EXPECT_EQ(p.Job(second).state, JobState::kQueued) << c.name << ": it waits while job 1 has not ended";
    EXPECT_TRUE(p.cs->held(second)) << c.name;
    EXPECT_NE(p.Job(second).message.find("waiting for its dependencies"), std::string::npos) << c.name;
    if (c.first < 0) {
      ASSERT_TRUE(p.cs->Cancel(first, p.now).ok());
    } else {
      ASSERT_EQ(p.Job(first).state, JobState::kRunning) << c.name;
      p.End(first, c.first);
    }
    p.Pass();
    if (p.Job(second).state == JobState::kRunning) p.End(second, 0);
    EXPECT_EQ(p.Job(second).state, c.want) << c.name << ": " << p.Job(second).message;
    EXPECT_NE(p.Job(second).message.find(c.message), std::string::npos) << c.name << ": " << p.Job(second).message;
    EXPECT_FALSE(p.cs->held(second)) << c.name;
  }
}

// A, then B afterok A, then C afterany B: in order; with A failing, B ends saying why and C
// runs after it. A dependency already out of reach at submission ends the job at once.
TEST(DependenciesTest, AChainRunsInOrder) {
  for (const int a_code : {0, 1}) {
    Pool p;
    const JobId a = p.Submit();
    const JobId b = p.Submit("afterok:1");
    const JobId c = p.Submit("afterany:2");
    p.Pass();
    EXPECT_EQ(p.Job(a).state, JobState::kRunning);
    EXPECT_EQ(p.Job(b).state, JobState::kQueued);
    EXPECT_EQ(p.Job(c).state, JobState::kQueued);
    p.End(a, a_code);
    p.Pass();
    if (a_code == 0) {
      EXPECT_EQ(p.Job(b).state, JobState::kRunning);
      EXPECT_EQ(p.Job(c).state, JobState::kQueued) << "C waits for B";
      p.End(b, 0);
      p.Pass();
    } else {
      EXPECT_EQ(p.Job(b).state, JobState::kCancelled);
      EXPECT_EQ(p.Job(b).message, "its dependency afterok:1 can never be met: job 1 failed");
    }
    p.Pass();
    EXPECT_EQ(p.Job(c).state, JobState::kRunning) << "C runs once B has ended, however it ended";
    // Never before its dependencies: the order of the events says so.
    size_t b_end = 0, c_start = 0;
    for (size_t i = 0; i < p.listener.log.size(); ++i) {
      const auto& [id, what] = p.listener.log[i];
      if (id == b.value() && (what == "succeeded" || what == "cancelled")) b_end = i;
      if (id == c.value() && what == "placed") c_start = i;
    }
    EXPECT_LT(b_end, c_start);
  }
  Pool p;
  const JobId a = p.Submit();
  p.Pass();
  p.End(a, 1);
  const JobId late = p.Submit("afterok:1");
  EXPECT_EQ(p.Job(late).state, JobState::kCancelled) << "already out of reach when submitted";
  JobRecord unknown{.spec = JobSpec{.id = JobId{p.cs->next_id()}, .gpus_per_task = 1}};
  unknown.extras = JobExtras{.after = {Dependency{.kind = DependencyKind::kAfterOk, .job = 99}}};
  Status s = p.cs->CheckDependencies(unknown);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("there is no job 99"), std::string::npos) << s.message();
}

TEST(DependenciesTest, SingletonsOfANameRunOneAtATimeInSubmissionOrder) {
  Pool p;
  const JobId one = p.Submit("singleton", "nightly");
  const JobId two = p.Submit("singleton", "nightly");
  const JobId three = p.Submit("singleton", "nightly");
  const JobId other = p.Submit("singleton", "other");
  p.Pass();
  EXPECT_EQ(p.Job(one).state, JobState::kRunning);
  EXPECT_EQ(p.Job(two).state, JobState::kQueued);
  EXPECT_EQ(p.Job(three).state, JobState::kQueued);
  EXPECT_EQ(p.Job(other).state, JobState::kRunning) << "another name is not held";
  p.End(one, 1);  // however it ends
  p.Pass();
  EXPECT_EQ(p.Job(two).state, JobState::kRunning);
  EXPECT_EQ(p.Job(three).state, JobState::kQueued) << "the third waits for the second";
  p.End(two, 0);
  p.Pass();
  EXPECT_EQ(p.Job(three).state, JobState::kRunning);
}

TEST(DependenciesTest, TextRoundTripsAndBadTextNamesTheField) {
  for (const char* text : {"afterok:1", "afterok:1:2,afterany:3", "afternotok:7,singleton", "singleton"}) {
    JobExtras e;
    ASSERT_TRUE(ParseDependencies(text, e).ok()) << text;
    EXPECT_EQ(DependencyText(e), text);
  }
  for (const char* bad : {"after:1", "afterok", "afterok:x", "afterok:0", "afterok:1?afterany:2", "afterok:1,,"}) {
    JobExtras e;
    Status s = ParseDependencies(bad, e);
    EXPECT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.message().find("dependency"), std::string::npos) << s.message();
  }
}

// Whatever outcomes the depended-on jobs have, in whatever order they end: a dependent starts
// only once every dependency is met, and ends cancelled exactly when one can never be.
RC_GTEST_PROP(DependenciesProperty, NoDependentStartsEarlyOrWaitsForever, ()) {
  Pool p;
  const int n = *rc::gen::inRange(1, 5);
  std::vector<JobId> roots;
  for (int i = 0; i < n; ++i) roots.push_back(p.Submit());
  struct Dep {
    JobId id;
    std::vector<std::pair<DependencyKind, int>> on;
  };
  std::vector<Dep> deps;
  const int m = *rc::gen::inRange(1, 6);
  for (int i = 0; i < m; ++i) {
    const int k = *rc::gen::inRange(1, n + 1);
    std::string text;
    Dep d;
    for (int x = 0; x < k; ++x) {
      const auto kind = *rc::gen::element(DependencyKind::kAfterOk, DependencyKind::kAfterAny, DependencyKind::kAfterNotOk);
      const int root = *rc::gen::inRange(0, n);
      d.on.emplace_back(kind, root);
      const char* name = kind == DependencyKind::kAfterOk ? "afterok" : kind == DependencyKind::kAfterAny ? "afterany" : "afternotok";
      text += fmt::format("{}{}:{}", text.empty() ? "" : ",", name, roots[static_cast<size_t>(root)].value());
    }
    d.id = p.Submit(text);
    deps.push_back(d);
  }
  p.Pass();
  std::vector<int> order(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  for (int i = n - 1; i > 0; --i) std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(*rc::gen::inRange(0, i + 1))]);
  std::map<int, int> codes;
  for (int r : order) {
    for (const Dep& d : deps) {
      // Before this root ends: a dependent that runs has every dependency met already.
      if (p.Job(d.id).state != JobState::kRunning) continue;
      for (const auto& [kind, root] : d.on) {
        RC_ASSERT(codes.count(root) > 0);
        RC_ASSERT(kind != DependencyKind::kAfterOk || codes[root] == 0);
        RC_ASSERT(kind != DependencyKind::kAfterNotOk || codes[root] != 0);
      }
    }
    const int code = *rc::gen::element(0, 1);
    codes[r] = code;
    p.End(roots[static_cast<size_t>(r)], code);
    p.Pass();
  }
  for (const Dep& d : deps) {
    bool met = true;
    for (const auto& [kind, root] : d.on) {
      met = met && !(kind == DependencyKind::kAfterOk && codes[root] != 0) && !(kind == DependencyKind::kAfterNotOk && codes[root] == 0);
    }
    const JobState s = p.Job(d.id).state;
    RC_ASSERT(!p.cs->held(d.id));
    const bool right = met ? (s == JobState::kRunning || s == JobState::kQueued) : s == JobState::kCancelled;
    RC_ASSERT(right);
  }
}

}  // namespace
}  // namespace gp
