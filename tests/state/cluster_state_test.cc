// ClusterState: the job lifecycle as table-driven cases, and properties through random
// sequences of submits, passes, starts, completions, node failures and recoveries, stops and
// cancels:
//   1. no GPU is given twice and no node goes over capacity: the tasks that have not ended,
//      summed per node, fit it, and the scheduling state's free figures are exactly what they
//      leave;
//   2. gangs are all or nothing: a placed job has all its tasks, each of its full shape;
//   3. every accepted job ends in exactly one terminal state, and nothing happens to it after.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <bit>
#include <deque>
#include <map>
#include <tuple>

#include "sched/registry.h"
#include "state/cluster_state.h"

namespace gp {
namespace {

Policy MakePolicy(const std::string& name) {
  auto p = BuiltinRegistry().MakePolicy(name);
  if (!p) throw std::runtime_error(p.error().message());
  return std::move(*p);
}

bool TerminalEvent(const std::string& e) { return e == "succeeded" || e == "failed" || e == "cancelled"; }

// Hears every event; a task to stop is either never handed over (it ends at once) or stopped
// later, when the test says its agent did.
struct Recorder final : ClusterListener {
  std::map<uint64_t, std::vector<std::string>> events;
  bool stop_at_once = true;
  std::vector<TaskKey> to_stop;
  void JobChanged(const JobRecord& j, std::string_view what) override { events[j.spec.id.value()].emplace_back(what); }
  bool StopTask(const JobRecord& j, int task, int) override {
    if (stop_at_once) return true;
    to_stop.push_back(TaskKey{j.spec.id.value(), task, j.attempt});
    return false;
  }
};

struct Pool {
  Fleet fleet;
  Recorder rec;
  std::unique_ptr<ClusterState> cs;
  Millis now{1'000};
  Pool(const std::string& shorthand, ClusterOptions o = {}, const std::string& policy = "fifo")
      : fleet(*ParseFleetShorthand(shorthand)) {
    cs = std::make_unique<ClusterState>(fleet, MakePolicy(policy), o, rec);
  }
  JobId Submit(int tasks, int gpus, int max_retries = -1) {
    JobRecord r{.spec = JobSpec{.id = JobId{cs->next_id()}, .tasks = tasks, .gpus_per_task = gpus}, .max_retries = max_retries};
    cs->Accept(std::move(r));
    return JobId{cs->next_id() - 1};
  }
  JobRecord& Job(JobId id) { return *cs->Find(id); }
  void StartAll(JobId id) {
    for (size_t t = 0; t < Job(id).tasks.size(); ++t) cs->TaskStarted(Job(id), static_cast<int>(t), now, now);
  }
  void EndAll(JobId id, int code) {
    for (size_t t = 0; t < Job(id).tasks.size(); ++t) cs->TaskEnded(Job(id), static_cast<int>(t), code, std::nullopt, "", now);
  }
  void FailNode(NodeId n) {
    cs->sched().Update(n, [](NodeState& s) { s.health = Health::kUnhealthy; });
    cs->FailJobsOn(n, -1, "node down", now, true, -1, now);
  }
};

// --- the lifecycle, case by case ---

struct LifecycleCase {
  const char* name;
  std::function<void(Pool&, JobId)> act;
  JobState state;
  std::vector<std::string> events;  // after "placed" (or from the start when not placed)
};

// The server keeps one record per job (100,000 at fleet scale) in a std::map: the record with
// the map's node (libstdc++: 32 bytes of links and colour, the 8-byte key) must stay within
// jemalloc's 512-byte size class, or every job costs 640 bytes. Box keeps what few jobs have
// (an array's spec and progress, a data set) a pointer wide; its copies are deep.
TEST(JobRecordTest, FitsTheAllocatorsSizeClassAndBoxesCopyDeep) {
  EXPECT_LE(32 + sizeof(uint64_t) + sizeof(JobRecord), 512u) << "sizeof(JobRecord) = " << sizeof(JobRecord);
  JobRecord a{.array = *ParseArraySpec("0-9%2")};
  a.arr().expanded = 3;
  JobRecord copy = a;
  copy.arr().expanded = 7;
  copy.array->max_running = 5;
  EXPECT_EQ(a.arr().expanded, 3) << "a copy's progress is its own";
  EXPECT_EQ(a.array->max_running, 2);
  const JobRecord plain;
  EXPECT_FALSE(plain.array);
  EXPECT_FALSE(plain.progress);
  EXPECT_EQ(plain.arr().expanded, 0) << "a record that is no array reads zeros";
  JobRecord moved = std::move(copy);
  EXPECT_EQ(moved.arr().expanded, 7);
}

TEST(ClusterStateLifecycle, EachPathEndsInItsOneState) {
  const std::vector<LifecycleCase> cases = {
      {"runs and succeeds", [](Pool& p, JobId j) { p.StartAll(j); p.EndAll(j, 0); }, JobState::kSucceeded,
       {"placed", "started", "succeeded"}},
      {"a task exits non-zero: the gang stops, the job fails",
       [](Pool& p, JobId j) {
         p.StartAll(j);
         p.cs->TaskEnded(p.Job(j), 0, 3, std::nullopt, "", p.now);
       },
       JobState::kFailed, {"placed", "started", "failed"}},
      {"cancelled while running", [](Pool& p, JobId j) { p.StartAll(j); ASSERT_TRUE(p.cs->Cancel(j, p.now).ok()); },
       JobState::kCancelled, {"placed", "started", "cancelled"}},
      {"its node fails: requeued and placed again, then succeeds",
       [](Pool& p, JobId j) {
         p.StartAll(j);
         const NodeId n = p.Job(j).tasks[0].allocation.node;
         p.FailNode(n);
         p.cs->RequeueReady(p.now);
         p.cs->sched().Update(n, [](NodeState& s) { s.health = Health::kHealthy; });
         (void)p.cs->Pass(p.now);
         p.StartAll(j);
         p.EndAll(j, 0);
       },
       JobState::kSucceeded, {"placed", "started", "failing_over", "requeued", "placed", "started", "succeeded"}},
      {"past its retry limit it gives up",
       [](Pool& p, JobId j) {
         for (int k = 0; k < 2; ++k) {
           p.StartAll(j);
           p.FailNode(p.Job(j).tasks[0].allocation.node);
           p.cs->RequeueReady(p.now);
           for (uint32_t n = 0; n < p.cs->sched().size(); ++n) {
             p.cs->sched().Update(NodeId{n}, [](NodeState& s) { s.health = Health::kHealthy; });
           }
           p.now = p.now + Millis{120'000};  // past any backoff
           (void)p.cs->Pass(p.now);
         }
       },
       JobState::kFailed, {"placed", "started", "failing_over", "requeued", "placed", "started", "failing_over", "failed"}},
  };
  for (const LifecycleCase& c : cases) {
    SCOPED_TRACE(c.name);
    Pool p("2x8xH100");
    const JobId j = p.Submit(2, 4, /*max_retries=*/1);
    (void)p.cs->Pass(p.now);
    c.act(p, j);
    EXPECT_EQ(p.Job(j).state, c.state) << p.Job(j).message;
    EXPECT_EQ(p.rec.events[j.value()], c.events);
    EXPECT_EQ(p.cs->sched().free_gpu_milli(), p.cs->sched().total_gpu_milli()) << "everything is given back";
  }
}

// A time limit (Slurm's --time): the job runs; at start + limit its tasks are asked to stop
// (the agent sends SIGTERM, then SIGKILL after its grace); when they end, the job is timed out,
// not failed, and its GPUs are free. A job that ends before its limit is untouched, and a
// limit counts from the attempt's start (a requeued job gets its full limit again).
TEST(ClusterStateLifecycle, ATimeLimitStopsTheJobAndItEndsTimedOut) {
  Pool p("1x2xV100");
  p.rec.stop_at_once = false;
  JobRecord r{.spec = JobSpec{.id = JobId{p.cs->next_id()}, .tasks = 1, .gpus_per_task = 2, .time_limit = Millis{60'000}}};
  p.cs->Accept(std::move(r));
  const JobId id{p.cs->next_id() - 1};
  p.cs->Pass(p.now);
  p.StartAll(id);
  p.cs->EnforceTimeLimits(p.now + Millis{59'999});
  EXPECT_TRUE(p.rec.to_stop.empty()) << "not before its limit";
  p.cs->EnforceTimeLimits(p.now + Millis{60'000});
  ASSERT_EQ(p.rec.to_stop.size(), 1u) << "at its limit, its task is stopped";
  EXPECT_TRUE(p.Job(id).timed_out);
  EXPECT_NE(p.Job(id).message.find("time limit 1m00s reached"), std::string::npos) << p.Job(id).message;
  p.cs->EnforceTimeLimits(p.now + Millis{70'000});
  EXPECT_EQ(p.rec.to_stop.size(), 1u) << "asked once";
  p.cs->TaskEnded(p.Job(id), 0, std::nullopt, 15, "", p.now + Millis{61'000});  // SIGTERM
  EXPECT_EQ(p.Job(id).state, JobState::kTimedOut);
  EXPECT_EQ(JobStateName(p.Job(id).state), "timed-out");
  EXPECT_EQ(p.rec.events[id.value()].back(), "timed-out");
  EXPECT_EQ(p.cs->sched().free_gpu_milli(), 2'000) << "its GPUs are back";
  // One that ends in time is untouched by its deadline.
  JobRecord quick{.spec = JobSpec{.id = JobId{p.cs->next_id()}, .tasks = 1, .gpus_per_task = 1, .time_limit = Millis{60'000}}};
  p.cs->Accept(std::move(quick));
  const JobId q{p.cs->next_id() - 1};
  p.cs->Pass(p.now);
  p.StartAll(q);
  p.EndAll(q, 0);
  p.cs->EnforceTimeLimits(p.now + Millis{600'000});
  EXPECT_EQ(p.Job(q).state, JobState::kSucceeded);
}

TEST(ClusterStateLifecycle, CancelledWhileQueuedNeverRuns) {
  Pool p("1x8xH100");
  const JobId big = p.Submit(1, 8);
  const JobId waits = p.Submit(1, 8);
  (void)p.cs->Pass(p.now);
  ASSERT_EQ(p.Job(waits).state, JobState::kQueued);
  ASSERT_TRUE(p.cs->Cancel(waits, p.now).ok());
  EXPECT_EQ(p.Job(waits).state, JobState::kCancelled);
  EXPECT_FALSE(p.cs->Cancel(waits, p.now).ok()) << "a finished job cannot be cancelled again";
  p.StartAll(big);
  p.EndAll(big, 0);
  EXPECT_TRUE(p.cs->Pass(p.now).placed.empty()) << "the cancelled job is not placed when room frees";
}

TEST(ClusterStateLifecycle, WhatNeverFitsIsRefusedOnAFixedFleetAndWaitsOnALiveOne) {
  for (NeverFits never : {NeverFits::kRefuse, NeverFits::kWait}) {
    Pool p("2x8xH100", ClusterOptions{.never = never});
    const JobId j = p.Submit(3, 8);  // 24 GPUs of 16
    const auto pass = p.cs->Pass(p.now);
    EXPECT_EQ(p.Job(j).state, never == NeverFits::kRefuse ? JobState::kFailed : JobState::kQueued);
    EXPECT_EQ(pass.refused.size(), never == NeverFits::kRefuse ? 1u : 0u);
  }
}

TEST(ClusterStateLifecycle, AttainedServiceCountsEveryAttempt) {
  Pool p("2x8xH100");
  const JobId j = p.Submit(1, 2);
  (void)p.cs->Pass(p.now);
  p.StartAll(j);
  p.now = p.now + Millis{10'000};
  p.FailNode(p.Job(j).tasks[0].allocation.node);
  p.cs->RequeueReady(p.now);
  EXPECT_EQ(p.Job(j).attained_gpu_ms, 2 * 1000 * 10'000 / 1000) << "2 GPUs for 10 s";
  (void)p.cs->Pass(p.now);
  p.StartAll(j);
  p.now = p.now + Millis{5'000};
  p.EndAll(j, 0);
  EXPECT_EQ(p.Job(j).attained_gpu_ms, 2 * 15'000);
}

TEST(ClusterStateLifecycle, LaterRetriesBackOff) {
  Pool p("1x8xH100", ClusterOptions{.max_retries = 5, .backoff = Millis{1'000}});
  const JobId j = p.Submit(1, 8);
  for (int k = 1; k <= 3; ++k) {
    auto pass = p.cs->Pass(p.now);
    ASSERT_EQ(pass.placed.size(), 1u) << "attempt " << k;
    p.StartAll(j);
    p.FailNode(NodeId{0});
    p.cs->RequeueReady(p.now);
    p.cs->sched().Update(NodeId{0}, [](NodeState& s) { s.health = Health::kHealthy; });
    const int64_t wait = k == 1 ? 0 : 1'000 << (k - 2);
    EXPECT_EQ(p.Job(j).not_before_ms, wait ? p.now.value() + wait : 0) << "failure " << k;
    if (wait) {
      EXPECT_TRUE(p.cs->Pass(p.now).placed.empty()) << "not before its backoff ends";
      p.now = p.now + Millis{wait};
    }
  }
}

// --- arrays ---

TEST(ArraySpecTest, Table) {
  struct Case {
    const char* text;
    int64_t size;
    int max_running;
    std::vector<int64_t> first_indexes;  // IndexAt(0..)
    const char* error;                   // part of the message, or nullptr
  };
  const std::vector<Case> cases = {
      {"0-9999%64", 10000, 64, {0, 1, 2}, nullptr},
      {"7", 1, 0, {7}, nullptr},
      {"1,3,10-20:5", 5, 0, {1, 3, 10, 15, 20}, nullptr},
      {"0-10:4%2", 3, 2, {0, 4, 8}, nullptr},
      {"5-2", 0, 0, {}, "ends before it starts"},
      {"", 0, 0, {}, "no indexes"},
      {"1-3,2", 0, 0, {}, "index 2 is named twice"},
      {"0-9%0", 0, 0, {}, "limit after %"},
      {"a-b", 0, 0, {}, "not an index"},
      {"0-1:0", 0, 0, {}, "step"},
      {"-1", 0, 0, {}, "not an index"},
      {"0-1000000", 0, 0, {}, "more than 1000000"},
  };
  for (const Case& c : cases) {
    auto a = ParseArraySpec(c.text);
    if (c.error) {
      ASSERT_FALSE(a) << c.text;
      EXPECT_NE(a.error().message().find(c.error), std::string::npos) << c.text << ": " << a.error().message();
      continue;
    }
    ASSERT_TRUE(a) << c.text << ": " << a.error().message();
    EXPECT_EQ(a->size(), c.size) << c.text;
    EXPECT_EQ(a->max_running, c.max_running) << c.text;
    for (size_t i = 0; i < c.first_indexes.size(); ++i) {
      EXPECT_EQ(a->IndexAt(static_cast<int64_t>(i)), c.first_indexes[i]) << c.text;
      EXPECT_EQ(a->PositionOf(c.first_indexes[i]), static_cast<int64_t>(i)) << c.text;
    }
    auto again = ParseArraySpec(a->ToString());  // the stored form reads back the same
    ASSERT_TRUE(again) << a->ToString();
    EXPECT_EQ(*again, *a) << c.text;
  }
}

JobId SubmitArray(Pool& p, const std::string& spec, int gpus) {
  JobRecord r{.spec = JobSpec{.id = JobId{p.cs->next_id()}, .tasks = 1, .gpus_per_task = gpus}, .array = *ParseArraySpec(spec)};
  const JobId id = r.spec.id;
  p.cs->Accept(std::move(r));
  return id;
}

// %N bounds the live elements; each runs once; the array follows them to its end.
TEST(ClusterStateArrays, MaxRunningBoundsLiveElementsAndTheArrayFollowsThem) {
  Pool p("2x8xH100");
  const JobId a = SubmitArray(p, "0-19%3", 1);
  EXPECT_EQ(p.cs->next_id(), a.value() + 21);  // its elements' ids are reserved
  std::set<int64_t> ran;
  for (int round = 0; round < 40 && !IsTerminal(p.Job(a).state); ++round) {
    (void)p.cs->Pass(p.now);
    int live = 0;
    std::vector<JobId> running;
    for (const auto& [id, j] : p.cs->jobs()) {
      if (j.array_of != a.value() || IsTerminal(j.state)) continue;
      live += j.state != JobState::kQueued;
      if (j.state == JobState::kStarting) running.push_back(JobId{id});
    }
    EXPECT_LE(live, 3);
    for (JobId id : running) {
      p.StartAll(id);
      EXPECT_EQ(p.Job(a).state, JobState::kRunning);
      EXPECT_TRUE(ran.insert(p.Job(id).array_index).second) << "index ran twice";
      p.EndAll(id, 0);
    }
  }
  EXPECT_EQ(p.Job(a).state, JobState::kSucceeded);
  EXPECT_EQ(ran.size(), 20u);
  EXPECT_EQ(p.Job(a).arr().element_counts[static_cast<size_t>(JobState::kSucceeded)], 20);
  EXPECT_EQ(p.rec.events[a.value()], (std::vector<std::string>{"started", "succeeded"}));
}

// An element cancelled before it was expanded never gets a record; cancelling the array stops
// the rest, and the array ends cancelled once its running elements have.
TEST(ClusterStateArrays, CancelOneElementThenTheWholeArray) {
  Pool p("1x8xH100");
  const JobId a = SubmitArray(p, "0-99%2", 1);
  (void)p.cs->Pass(p.now);
  ASSERT_TRUE(p.cs->CancelElement(a, 50, p.now).ok());
  EXPECT_FALSE(p.cs->CancelElement(a, 500, p.now).ok());  // no such index
  ASSERT_TRUE(p.cs->Cancel(a, p.now).ok());
  EXPECT_EQ(p.Job(a).state, JobState::kCancelled);
  int records = 0;
  for (const auto& [id, j] : p.cs->jobs()) records += j.array_of == a.value();
  EXPECT_EQ(records, 2);  // the two that had been expanded, and no more
  EXPECT_EQ(p.Job(a).arr().skipped, 98);
  (void)p.cs->Pass(p.now);
  for (const auto& [id, j] : p.cs->jobs()) EXPECT_TRUE(IsTerminal(j.state)) << id;
}

// A failed element fails the array, once all have ended.
TEST(ClusterStateArrays, OneFailedElementFailsTheArray) {
  Pool p("1x8xH100");
  const JobId a = SubmitArray(p, "1,3,5", 1);
  (void)p.cs->Pass(p.now);
  int code = 0;
  for (const auto& [id, j] : std::map<uint64_t, JobRecord>(p.cs->jobs())) {
    if (j.array_of != a.value()) continue;
    p.StartAll(JobId{id});
    p.EndAll(JobId{id}, code++);
  }
  EXPECT_EQ(p.Job(a).state, JobState::kFailed);
  EXPECT_NE(p.Job(a).message.find("2 of 3 elements failed"), std::string::npos) << p.Job(a).message;
}

// --- properties ---

void CheckInvariants(const Pool& p) {
  const ClusterState& cs = *p.cs;
  const SchedState& st = cs.sched();
  RC_ASSERT(cs.inconsistencies() == 0);
  std::vector<std::array<int, kMaxGpusPerNode>> used(st.size());
  std::vector<int64_t> cpu(st.size()), mem(st.size());
  for (const auto& [id, j] : cs.jobs()) {
    const std::vector<std::string>& ev = p.rec.events.count(id) ? p.rec.events.at(id) : std::vector<std::string>{};
    int terminal = 0;
    for (size_t k = 0; k < ev.size(); ++k) {
      if (TerminalEvent(ev[k])) {
        ++terminal;
        if (k + 1 != ev.size()) {
          for (const std::string& e : ev) RC_LOG() << e << " ";
          RC_LOG() << "\n";
        }
        RC_ASSERT(k + 1 == ev.size());  // nothing after the end
      }
    }
    RC_ASSERT(terminal == (IsTerminal(j.state) ? 1 : 0));
    RC_ASSERT(cs.unfinished().count(id) == (IsTerminal(j.state) ? 0u : 1u));  // the index of live work
    RC_ASSERT(cs.queued().count(id) == (j.state == JobState::kQueued ? 1u : 0u));
    if (!j.array && (j.state == JobState::kStarting || j.state == JobState::kRunning)) {
      // All or nothing: every task of the gang, each of the job's full shape.
      RC_ASSERT(static_cast<int>(j.tasks.size()) == j.spec.tasks);
      for (const TaskRecord& t : j.tasks) RC_ASSERT(std::popcount(t.allocation.gpu_mask) == j.spec.gpus_per_task);
    }
    if (IsTerminal(j.state) || j.state == JobState::kQueued) continue;
    for (const TaskRecord& t : j.tasks) {
      if (t.exit_code || t.signal) continue;
      const uint32_t n = t.allocation.node.value();
      for (int g = 0; g < kMaxGpusPerNode; ++g) {
        if (t.allocation.gpu_mask >> g & 1) used[n][static_cast<size_t>(g)] += static_cast<int>(t.allocation.share.value());
      }
      cpu[n] += t.allocation.cpu.value();
      mem[n] += t.allocation.memory.value();
    }
  }
  // Arrays: their counts are their elements' states, their state follows from them, and no
  // more are live than %N allows.
  for (const auto& [id, a] : cs.jobs()) {
    if (!a.array) continue;
    std::array<int64_t, 6> counts{};
    for (auto it = cs.jobs().upper_bound(id); it != cs.jobs().end() && it->first <= id + static_cast<uint64_t>(a.array->size()); ++it) {
      RC_ASSERT(it->second.array_of == id);
      ++counts[static_cast<size_t>(it->second.state)];
    }
    RC_ASSERT(counts == a.arr().element_counts);
    const auto n = [&](JobState s) { return counts[static_cast<size_t>(s)]; };
    const int64_t live = n(JobState::kQueued) + n(JobState::kStarting) + n(JobState::kRunning);
    if (a.array->max_running > 0) RC_ASSERT(live <= a.array->max_running);
    RC_ASSERT(a.arr().expanded <= a.array->size());
    const int64_t done = n(JobState::kSucceeded) + n(JobState::kFailed) + n(JobState::kCancelled) + a.arr().skipped;
    if (done == a.array->size()) {
      RC_ASSERT(IsTerminal(a.state));
    } else if (n(JobState::kStarting) + n(JobState::kRunning) > 0) {
      RC_ASSERT(a.state == JobState::kRunning);
    } else {
      RC_ASSERT(a.state == JobState::kQueued);
    }
  }
  for (uint32_t n = 0; n < st.size(); ++n) {
    const NodeState& s = st.node(NodeId{n});
    for (int g = 0; g < s.gpu_count; ++g) {
      RC_ASSERT(used[n][static_cast<size_t>(g)] <= 1000);  // no GPU given twice (or past whole)
      RC_ASSERT(s.gpu_free[static_cast<size_t>(g)] == 1000 - used[n][static_cast<size_t>(g)]);
    }
    RC_ASSERT(cpu[n] <= s.cpu_total.value());
    RC_ASSERT(mem[n] <= s.memory_total.value());
    RC_ASSERT(s.cpu_free.value() == s.cpu_total.value() - cpu[n]);
    RC_ASSERT(s.memory_free.value() == s.memory_total.value() - mem[n]);
  }
}

JobRecord RandomJob(uint64_t id) {
  JobSpec s{.id = JobId{id}, .tasks = *rc::gen::element(1, 1, 2, 3), .gpus_per_task = *rc::gen::element(0, 1, 1, 2, 4, 8),
            .submit_time = Millis{static_cast<int64_t>(id)}};
  if (s.gpus_per_task == 1 && *rc::gen::inRange(0, 3) == 0) s.gpu_share = GpuMilli{*rc::gen::element(250, 500, 750)};
  if (*rc::gen::inRange(0, 4) == 0) s.gpu_models = {*rc::gen::element(std::string("V100"), std::string("H100"))};
  s.cpu_per_task = MilliCpu{*rc::gen::inRange(0, 9) * 1000};
  s.memory_per_task = MiB{*rc::gen::inRange(0, 33) * 1024};
  return JobRecord{.spec = s, .max_retries = *rc::gen::element(-1, 0, 1, 5)};
}

RC_GTEST_PROP(ClusterStateProperties, RandomLivesKeepEveryInvariant, ()) {
  const std::string shorthand = *rc::gen::element(std::string("3x8xH100"), std::string("4x4xV100"), std::string("2x8xH100"));
  const NeverFits never = *rc::gen::element(NeverFits::kWait, NeverFits::kRefuse);
  const std::string policy = *rc::gen::element(std::string("fifo"), std::string("best-fit"), std::string("las"),
                                               std::string("balanced"), std::string("spread"));
  Pool p(shorthand, ClusterOptions{.seed = 7, .max_retries = 2, .backoff = Millis{500}, .never = never}, policy);
  p.rec.stop_at_once = *rc::gen::arbitrary<bool>();
  const int steps = *rc::gen::inRange(10, 120);
  auto pick = [&](auto pred) -> JobRecord* {
    std::vector<JobRecord*> v;
    for (const auto& [id, j] : p.cs->jobs()) {
      if (pred(j)) v.push_back(p.cs->Find(JobId{id}));
    }
    return v.empty() ? nullptr : v[static_cast<size_t>(*rc::gen::inRange<int>(0, static_cast<int>(v.size())))];
  };
  auto deliver_stops = [&] {
    for (const TaskKey& k : std::exchange(p.rec.to_stop, {})) {
      JobRecord* j = p.cs->Find(JobId{k.job});
      if (j && j->attempt == k.attempt) p.cs->TaskEnded(*j, k.task, std::nullopt, 15, "", p.now);
    }
  };
  for (int step = 0; step < steps; ++step) {
    switch (*rc::gen::inRange(0, 9)) {
      case 0:
      case 1: {
        JobRecord r = RandomJob(p.cs->next_id());
        if (*rc::gen::inRange(0, 4) == 0) {
          const int size = *rc::gen::inRange(1, 12);
          r.array = *ParseArraySpec(fmt::format("0-{}%{}", size - 1, *rc::gen::inRange(1, 4)));
          if (*rc::gen::arbitrary<bool>()) r.array->max_running = 0;
        }
        p.cs->Accept(std::move(r));
        break;
      }
      case 2: (void)p.cs->Pass(p.now); break;
      case 3:
        if (JobRecord* j = pick([](const JobRecord& r) { return r.state == JobState::kStarting && !r.failing_over; })) {
          for (size_t t = 0; t < j->tasks.size(); ++t) p.cs->TaskStarted(*j, static_cast<int>(t), p.now, p.now);
        }
        break;
      case 4:
        if (JobRecord* j = pick([](const JobRecord& r) { return r.state == JobState::kRunning && !r.failing_over; })) {
          const int code = *rc::gen::element(0, 0, 0, 1);
          for (size_t t = 0; t < j->tasks.size(); ++t) p.cs->TaskEnded(*j, static_cast<int>(t), code, std::nullopt, "", p.now);
        }
        break;
      case 5: {
        const NodeId n{static_cast<uint32_t>(*rc::gen::inRange<int>(0, static_cast<int>(p.cs->sched().size())))};
        if (p.cs->sched().node(n).health == Health::kUnhealthy) {
          p.cs->sched().Update(n, [](NodeState& s) { s.health = Health::kHealthy; });
        } else {
          p.FailNode(n);
        }
        break;
      }
      case 6:
        if (JobRecord* j = pick([](const JobRecord& r) { return !IsTerminal(r.state); })) {
          if (j->array && *rc::gen::arbitrary<bool>()) {
            (void)p.cs->CancelElement(j->spec.id, *rc::gen::inRange<int64_t>(0, j->array->size()), p.now);
          } else {
            (void)p.cs->Cancel(j->spec.id, p.now);
          }
        }
        break;
      case 7: deliver_stops(); break;
      case 8:
        p.now = p.now + Millis{*rc::gen::inRange(1, 3'000)};
        p.cs->RequeueReady(p.now);
        break;
    }
    CheckInvariants(p);
  }
  // Drain: every node back, every stop delivered, everything left run to its end.
  for (uint32_t n = 0; n < p.cs->sched().size(); ++n) {
    p.cs->sched().Update(NodeId{n}, [](NodeState& s) { s.health = Health::kHealthy; });
  }
  for (int round = 0; round < 400; ++round) {
    deliver_stops();
    p.now = p.now + Millis{60'000};
    p.cs->RequeueReady(p.now);
    (void)p.cs->Pass(p.now);
    bool live = false;
    for (const auto& [id, j] : p.cs->jobs()) {
      JobRecord& r = *p.cs->Find(JobId{id});
      if (IsTerminal(r.state)) continue;
      live = true;
      if (r.state == JobState::kQueued && round > 200) (void)p.cs->Cancel(r.spec.id, p.now);  // waits for ever
      if (r.failing_over) continue;
      for (size_t t = 0; t < r.tasks.size(); ++t) p.cs->TaskStarted(r, static_cast<int>(t), p.now, p.now);
      for (size_t t = 0; t < r.tasks.size(); ++t) p.cs->TaskEnded(r, static_cast<int>(t), 0, std::nullopt, "", p.now);
    }
    CheckInvariants(p);
    if (!live) break;
  }
  for (const auto& [id, j] : p.cs->jobs()) {
    if (!IsTerminal(j.state)) {
      RC_LOG() << "job " << id << " " << JobStateName(j.state) << " failing_over=" << j.failing_over << " tasks=" << j.tasks.size()
               << " message=" << j.message << "\n";
      for (const TaskRecord& t : j.tasks) RC_LOG() << "  task started=" << t.started << " ended=" << (t.exit_code || t.signal) << "\n";
    }
    RC_ASSERT(IsTerminal(j.state));  // each once (CheckInvariants)
  }
  RC_ASSERT(p.cs->sched().free_gpu_milli() == p.cs->sched().total_gpu_milli());
}

}  // namespace
}  // namespace gp
