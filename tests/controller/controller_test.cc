// The controller's job lifecycle without a network: agents are played by the test through
// Register and Heartbeat, the journal is in memory, and the clock is manual.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <set>

#include "agent/cgroup.h"
#include "controller/controller.h"
#include "core/units.h"
#include "wire/codec.h"

namespace gp {
namespace {

struct Scene {
  MemoryJournal journal;
  ManualClock clock{Millis{1'000'000}};
  std::unique_ptr<Controller> c = Make();

  std::unique_ptr<Controller> Make() {
    return std::make_unique<Controller>(Fleet{}, journal, clock, ControllerOptions{.checkpoint_root = "/ckpt"},
                                        std::move(*BuiltinRegistry().MakePolicy("fifo")));
  }
  void Join(const std::string& name, int gpus, Controller* ctl = nullptr) {
    auto sim = SimulatedGpuSource::Parse(std::to_string(gpus) + "xH100", name);
    RegisterRequest r{.name = name, .address = "10.0.0." + std::to_string(name.size()), .cpu_cores = 32,
                      .memory_mib = 256 * 1024, .gpu_source = "simulated", .gpus = *sim->Devices(),
                      .credential = credentials[name]};  // what the agent kept from its first registration
    auto reg = (ctl ? ctl : c.get())->Register(r);
    ASSERT_TRUE(reg) << reg.error().message();
    if (!reg->credential.empty()) credentials[name] = reg->credential;
  }
  std::map<std::string, std::string> credentials;
  JobId Submit(int gpus, int tasks = 1, std::vector<std::string> cmd = {"true"}) {
    JobRecord r;
    r.command = std::move(cmd);
    r.spec.gpus_per_task = gpus;
    r.spec.tasks = tasks;
    return *c->Submit(r);
  }
  HeartbeatReply Beat(const std::string& node, std::vector<TaskReport> tasks = {},
                      std::vector<TaskKey> running = {}) {
    return *c->Heartbeat(Heartbeat{.node = node, .tasks = std::move(tasks), .running = std::move(running)});
  }
  std::string Var(const TaskLaunch& l, const std::string& key) {
    for (const auto& [k, v] : l.env) {
      if (k == key) return v;
    }
    return "<unset>";
  }
};

TEST(ControllerTest, SubmitPlaceRunSucceed) {
  Scene e;
  e.Join("n1", 4);
  const JobId id = e.Submit(2);
  EXPECT_EQ(e.c->FindJob(id)->state, JobState::kQueued);
  EXPECT_EQ(e.journal.Load()->jobs.count(id.value()), 1u) << "durable before acknowledged";
  e.c->Tick();
  EXPECT_EQ(e.c->FindJob(id)->state, JobState::kStarting);
  HeartbeatReply r = e.Beat("n1");
  ASSERT_EQ(r.start.size(), 1u);
  EXPECT_EQ(e.Var(r.start[0], "CUDA_VISIBLE_DEVICES"), "0,1");
  EXPECT_EQ(e.Var(r.start[0], "GPUPOOL_JOB_ID"), std::to_string(id.value()));
  EXPECT_EQ(e.Var(r.start[0], "WORLD_SIZE"), "1");
  EXPECT_EQ(e.Var(r.start[0], "GPUPOOL_CHECKPOINT_DIR"), "/ckpt/" + std::to_string(id.value()));
  EXPECT_TRUE(e.Beat("n1", {}, {{id.value(), 0, 1}}).start.empty()) << "a launch is handed over once";
  e.Beat("n1", {{.job = id.value(), .task = 0, .attempt = 1, .started_ms = 5, .stdout_chunk = "hi\n"}}, {{id.value(), 0, 1}});
  EXPECT_EQ(e.c->FindJob(id)->state, JobState::kRunning);
  e.Beat("n1", {{.job = id.value(), .task = 0, .attempt = 1, .state = TaskReport::State::kExited, .exit_code = 0}});
  const JobRecord* j = e.c->FindJob(id);
  EXPECT_EQ(j->state, JobState::kSucceeded);
  EXPECT_EQ(j->exit_code, 0);
  auto stored = JobFromJson(e.journal.Load()->jobs.at(id.value()));
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->state, JobState::kSucceeded);
}

// The store fails as a pass places a job: nothing is handed to the agent, the job stays queued
// with its GPUs free (what a restart would find), no "placed" event survives, and the server
// accepts no more jobs and places none, saying why.
TEST(ControllerTest, AFailedStoreWriteLaunchesNothingAndStopsAcknowledging) {
  Scene e;
  e.Join("n1", 4);
  const JobId id = e.Submit(2);
  const uint64_t events = e.c->last_event_seq();
  e.journal.FailWrites(Status(StatusCode::kInternal, "disk I/O error"));
  e.c->Tick();
  EXPECT_EQ(e.c->FindJob(id)->state, JobState::kQueued);
  EXPECT_EQ(e.c->FindJob(id)->attempt, 0);
  EXPECT_EQ(e.c->last_event_seq(), events) << "the placed event went with the unstored plan";
  EXPECT_FALSE(e.c->store_error().ok());
  EXPECT_NE(e.c->store_error().message().find("disk I/O error"), std::string::npos);
  auto refused = e.c->Submit(JobRecord{.command = {"true"}});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), StatusCode::kUnavailable);
  e.journal.FailWrites(Status::Ok());
  e.c->Tick();
  EXPECT_EQ(e.c->FindJob(id)->state, JobState::kQueued) << "no pass runs once the store has failed";
  EXPECT_TRUE(e.Beat("n1").start.empty()) << "nothing was launched";
  EXPECT_NE(e.c->NodeJson("n1").find("\"free_gpus\":4"), std::string::npos) << "its GPUs were given back";
}

// Group commit: submissions staged in one loop turn are stored in one write, and none is
// acknowledged before it; a failed write acknowledges none, stores none, and numbers no event.
TEST(ControllerTest, SubmissionsOfOneTurnShareOneWriteAndWaitForIt) {
  Scene e;
  int batches = 0;
  e.c->on_staged = [&] { ++batches; };
  std::vector<Result<JobId>> acked;
  const int64_t writes = e.journal.job_writes();
  for (int i = 0; i < 50; ++i) {
    e.c->SubmitStaged(JobRecord{.command = {"true"}}, [&](Result<JobId> id) { acked.push_back(std::move(id)); });
  }
  EXPECT_TRUE(acked.empty()) << "nothing is acknowledged before it is stored";
  EXPECT_EQ(batches, 1) << "one commit asked for, for the whole turn";
  const uint64_t seq = e.c->last_event_seq();
  e.c->CommitSubmits();
  ASSERT_EQ(acked.size(), 50u);
  EXPECT_EQ(e.journal.job_writes(), writes + 1) << "one transaction for the 50";
  EXPECT_EQ(e.c->last_event_seq(), seq + 50) << "a job.submitted each, stored with them";
  for (size_t i = 0; i < acked.size(); ++i) {
    ASSERT_TRUE(acked[i]);
    EXPECT_EQ(acked[i]->value(), i + 1) << "ids in arrival order";
    EXPECT_EQ(e.c->FindJob(*acked[i])->state, JobState::kQueued);
  }
  // A bad one is refused at once and takes no id; the others of its turn are unaffected.
  acked.clear();
  e.c->SubmitStaged(JobRecord{.command = {"true"}, .workdir = "../escape"}, [&](Result<JobId> id) { acked.push_back(std::move(id)); });
  ASSERT_EQ(acked.size(), 1u);
  EXPECT_FALSE(acked[0]);
  // The store fails under a batch: none is acknowledged, none is kept, no event is numbered.
  acked.clear();
  for (int i = 0; i < 3; ++i) {
    e.c->SubmitStaged(JobRecord{.command = {"true"}}, [&](Result<JobId> id) { acked.push_back(std::move(id)); });
  }
  e.journal.FailWrites(Status(StatusCode::kInternal, "disk full"));
  const uint64_t before = e.c->last_event_seq();
  e.c->CommitSubmits();
  ASSERT_EQ(acked.size(), 3u);
  for (const auto& a : acked) EXPECT_FALSE(a);
  EXPECT_EQ(e.c->last_event_seq(), before);
  EXPECT_EQ(e.c->FindJob(JobId{51}), nullptr);
  EXPECT_FALSE(e.c->store_error().ok()) << "and the server stops acknowledging";
}

// A journal that makes writes durable later (as SqliteJournal's syncer does): the test says
// when each handed-over write becomes durable, or fails.
class LaterJournal final : public Journal {
 public:
  Status PutJobs(const std::vector<std::pair<uint64_t, std::string>>& jobs, const Events& events) override {
    return mem.PutJobs(jobs, events);
  }
  void PutJobsLater(std::vector<std::pair<uint64_t, std::string>> jobs, Events events, WriteDone done) override {
    written.push_back(jobs.size());
    (void)mem.PutJobs(jobs, events);
    later.push_back(std::move(done));
  }
  Status PutNode(std::string_view name, std::string_view json, const Events& events) override { return mem.PutNode(name, json, events); }
  Status PutEvents(const Events& events) override { return mem.PutEvents(events); }
  Status PutMeta(std::string_view key, std::string_view value) override { return mem.PutMeta(key, value); }
  Result<JournalContents> Load() override { return mem.Load(); }
  Result<Events> EventsAfter(uint64_t after, size_t limit) override { return mem.EventsAfter(after, limit); }
  Status PruneEvents(uint64_t up_to) override { return mem.PruneEvents(up_to); }
  Status PutUsage(const std::vector<UsageRecord>& rows) override { return mem.PutUsage(rows); }
  Result<std::vector<UsageTotal>> UsageTotals(int64_t since, const std::vector<std::string>& by) override { return mem.UsageTotals(since, by); }
  void Durable(Status s = Status::Ok()) {
    WriteDone d = std::move(later.front());
    later.pop_front();
    d(std::move(s));
  }
  MemoryJournal mem;
  std::vector<size_t> written;     // rows of each write handed over
  std::deque<WriteDone> later;     // not yet durable
};

// Submissions written but not yet durable are not acknowledged, and do not hold up the next
// turn's: each turn's batch is written at once, and each is acknowledged (and queued) when its
// own write is durable, in order. A write that fails acknowledges its batch with the error
// and stops the server acknowledging; what was durable before stays.
TEST(ControllerTest, SubmissionsAreAcknowledgedWhenTheirWriteIsDurable) {
  LaterJournal journal;
  ManualClock clock{Millis{1'000'000}};
  Controller c(Fleet{}, journal, clock, ControllerOptions{.checkpoint_root = "/ckpt"}, std::move(*BuiltinRegistry().MakePolicy("fifo")));
  std::vector<std::function<void()>> deferred;
  c.defer = [&](std::function<void()> fn) { deferred.push_back(std::move(fn)); };
  auto run_deferred = [&] {
    auto fns = std::move(deferred);
    deferred.clear();
    for (auto& fn : fns) fn();
  };
  std::vector<uint64_t> acked;
  std::vector<std::string> refused;
  auto submit = [&] {
    c.SubmitStaged(JobRecord{.command = {"true"}}, [&](Result<JobId> id) {
      if (id) {
        acked.push_back(id->value());
      } else {
        refused.push_back(id.error().message());
      }
    });
  };
  // Turn 1: three submissions; turn 2, while turn 1's write is not yet durable: two more.
  for (int i = 0; i < 3; ++i) submit();
  c.CommitSubmits();
  for (int i = 0; i < 2; ++i) submit();
  c.CommitSubmits();
  EXPECT_EQ(journal.written, (std::vector<size_t>{3, 2})) << "turn 2 is written without waiting for turn 1's fsync";
  run_deferred();
  EXPECT_TRUE(acked.empty()) << "nothing acknowledged before its write is durable";
  EXPECT_EQ(c.FindJob(JobId{1}), nullptr) << "nor queued";
  journal.Durable();
  EXPECT_TRUE(acked.empty()) << "the outcome reaches the loop through defer, never on the journal's thread";
  run_deferred();
  EXPECT_EQ(acked, (std::vector<uint64_t>{1, 2, 3}));
  ASSERT_NE(c.FindJob(JobId{3}), nullptr);
  EXPECT_EQ(c.FindJob(JobId{3})->state, JobState::kQueued);
  // Turn 2's write fails: its two are refused with the store's error; the three stay.
  journal.Durable(Status(StatusCode::kInternal, "fdatasync: I/O error"));
  run_deferred();
  EXPECT_EQ(acked.size(), 3u);
  ASSERT_EQ(refused.size(), 2u);
  EXPECT_NE(refused[0].find("fdatasync: I/O error"), std::string::npos) << refused[0];
  EXPECT_EQ(c.FindJob(JobId{4}), nullptr);
  EXPECT_FALSE(c.store_error().ok());
  submit();
  c.CommitSubmits();
  EXPECT_EQ(refused.size(), 3u) << "a failed store acknowledges nothing more";
  EXPECT_TRUE(journal.later.empty()) << "and writes nothing more";
}

// A heartbeat held by the server (queued, or held at its header under back-pressure) is the
// server's wait, not the node's silence: however long it is held, the node is not declared
// down. If the held request's connection dies before it is handled, the hold is released and
// a node that has really gone is declared down as usual.
TEST(ControllerTest, AHeldHeartbeatIsNotSilenceUntilItsConnectionDies) {
  Scene e;
  e.Join("a", 4);
  for (int i = 0; i < 10; ++i) {
    e.clock.Advance(Millis{500});
    e.Beat("a");
    e.c->Tick();
  }
  e.c->HoldingHeartbeat("a", /*arrived=*/true);
  for (int i = 0; i < 100; ++i) {  // 10 s held
    e.clock.Advance(Millis{100});
    e.c->Tick();
  }
  EXPECT_EQ(e.c->NodeCondition("a"), "ready") << "a held heartbeat is the server's wait";
  e.c->HoldReleased("a");  // its connection died while held
  int64_t silent = 0;
  while (e.c->NodeCondition("a") != "down" && silent < 10'000) {
    e.clock.Advance(Millis{50});
    silent += 50;
    e.c->Tick();
  }
  EXPECT_LE(silent, 2000) << "once released, the node's silence counts: down within 2 s";
}

// A server whose loop is behind in reading does not blame the nodes for it. A node found
// silent past the threshold is judged again two turns of the loop later: a heartbeat handled
// in between (read, its handler queued behind the tick) clears it, and so does a heartbeat
// waiting unread on its connection (node_speaking). Only a node with neither goes down, and
// a node whose heartbeat waited is declared down once it is truly silent after that.
TEST(ControllerTest, AHeartbeatWaitingUnreadIsNotSilence) {
  Scene e;
  std::vector<std::function<void()>> deferred;
  e.c->defer = [&](std::function<void()> fn) { deferred.push_back(std::move(fn)); };
  auto run_deferred = [&] {
    while (!deferred.empty()) {
      auto fns = std::move(deferred);
      deferred.clear();
      for (auto& fn : fns) fn();
    }
  };
  std::set<std::string> speaking;
  std::vector<std::string> asked;
  e.c->node_speaking = [&](const std::string& node) {
    asked.push_back(node);
    return speaking.count(node) > 0;
  };
  for (const char* n : {"a", "b", "c"}) e.Join(n, 4);
  for (int i = 0; i < 10; ++i) {
    e.clock.Advance(Millis{500});
    for (const char* n : {"a", "b", "c"}) e.Beat(n);
    e.c->Tick();
    run_deferred();
  }
  // Ten seconds without a heartbeat read from any of them.
  e.clock.Advance(Millis{10'000});
  e.c->Tick();
  for (const char* n : {"a", "b", "c"}) EXPECT_NE(e.c->NodeCondition(n), "down") << n << ": not before the end of the turn";
  e.Beat("a");         // a's heartbeat was read and handled in the same turn, behind the tick
  speaking = {"b"};    // b's waits in its socket, unread
  run_deferred();
  EXPECT_EQ(e.c->NodeCondition("a"), "ready");
  EXPECT_NE(e.c->NodeCondition("b"), "down") << "its heartbeat has arrived: the server is behind, not b";
  EXPECT_EQ(e.c->NodeCondition("c"), "down") << "silent, nothing waiting: down";
  EXPECT_EQ(std::count(asked.begin(), asked.end(), "a"), 1) << "a node heard meanwhile is asked about once, at the tick";
  EXPECT_EQ(e.c->stats().unheard, 1);
  // b's heartbeat is never read after all (its connection went quiet): from the moment it was
  // found waiting, its silence counts again, and b goes down within the usual time.
  speaking.clear();
  int64_t silent = 0;
  while (e.c->NodeCondition("b") != "down" && silent < 10'000) {
    e.clock.Advance(Millis{50});
    silent += 50;
    e.c->Tick();
    run_deferred();
  }
  EXPECT_LE(silent, 2000) << "b down within 2 s of the check that found its heartbeat waiting";
  EXPECT_GE(silent, 1000) << "and not before its silence has reached the threshold again";
}

// Every node's series once per node, every GPU's once per GPU (with dcgm-exporter's labels),
// each family under one HELP and TYPE; without the GPUs' series (a fleet past the server's
// limit) the nodes' stay and the exposition says the GPUs' are left out.
TEST(ControllerTest, NodeAndGpuSeriesAreWrittenOncePerNodeAndGpu) {
  Scene e;
  e.Join("a", 2);
  e.Join("b\"q", 4);  // a name that must be escaped in a label value
  e.Beat("a");
  e.Beat("b\"q");
  auto count = [](const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  };
  std::string all;
  e.c->WriteNodeMetrics(all, true);
  EXPECT_EQ(count(all, "\nDCGM_FI_DEV_GPU_UTIL{"), 6u) << all;
  EXPECT_EQ(count(all, "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"), 1u);
  EXPECT_EQ(count(all, "DCGM_FI_DEV_FB_FREE{gpu=\"3\",UUID=\""), 1u) << "b's fourth GPU";
  EXPECT_EQ(count(all, "device=\"nvidia1\",modelName=\"H100\",Hostname=\"a\"}"), 4u)
      << "a's second GPU in utilisation, memory used, free and XID (no power or temperature reported)";
  EXPECT_EQ(count(all, "Hostname=\"b\\\"q\"}"), 16u) << "the quote escaped, in 4 series of 4 GPUs";
  for (const char* node_series : {"gpupool_node_cpu_busy_ratio{", "gpupool_node_load_l{", "gpupool_node_gpus_free{"}) {
    EXPECT_EQ(count(all, std::string("\n") + node_series), 2u) << node_series;
  }
  EXPECT_NE(all.find("gpupool_node_gpus_free{node=\"a\"} 2\n"), std::string::npos) << all;
  EXPECT_NE(all.find("gpupool_metrics_gpu_series 1\n"), std::string::npos);
  std::string nodes_only;
  e.c->WriteNodeMetrics(nodes_only, false);
  EXPECT_EQ(nodes_only.find("\nDCGM_FI_DEV"), std::string::npos);
  EXPECT_EQ(count(nodes_only, "\ngpupool_node_load_r{"), 2u);
  EXPECT_NE(nodes_only.find("gpupool_metrics_gpu_series 0\n"), std::string::npos);
}

// A gang over two 8-GPU nodes: torchrun's variables, then one task fails with 2 and the other
// is told to stop; the job fails with the first failure's code.
TEST(ControllerTest, GangEnvAndFailure) {
  Scene e;
  e.Join("a", 8);
  e.Join("b", 8);
  const JobId id = e.Submit(8, 2);
  e.c->Tick();
  const HeartbeatReply ra = e.Beat("a");
  const HeartbeatReply rb = e.Beat("b");
  ASSERT_EQ(ra.start.size() + rb.start.size(), 2u);
  const TaskLaunch& t0 = ra.start.size() == 1 && ra.start[0].task == 0 ? ra.start[0] : rb.start[0];
  const TaskLaunch& t1 = ra.start.size() == 1 && ra.start[0].task == 1 ? ra.start[0] : rb.start[0];
  EXPECT_EQ(e.Var(t0, "RANK"), "0");
  EXPECT_EQ(e.Var(t1, "RANK"), "1");
  EXPECT_EQ(e.Var(t1, "WORLD_SIZE"), "2");
  EXPECT_EQ(e.Var(t1, "LOCAL_RANK"), "0");
  EXPECT_EQ(e.Var(t0, "MASTER_ADDR"), e.Var(t1, "MASTER_ADDR"));
  EXPECT_EQ(e.Var(t0, "MASTER_PORT"), e.Var(t1, "MASTER_PORT"));
  const std::string node0 = e.c->FindJob(id)->tasks[0].node;
  const std::string node1 = e.c->FindJob(id)->tasks[1].node;
  e.Beat(node0, {{.job = id.value(), .task = 0, .attempt = 1}}, {{id.value(), 0, 1}});
  e.Beat(node1, {{.job = id.value(), .task = 1, .attempt = 1}}, {{id.value(), 1, 1}});
  const HeartbeatReply after = e.Beat(node1, {{.job = id.value(), .task = 1, .attempt = 1, .state = TaskReport::State::kExited, .exit_code = 2}});
  const HeartbeatReply other = e.Beat(node0, {}, {{id.value(), 0, 1}});
  ASSERT_EQ(other.cancel.size(), 1u) << "the surviving task is stopped";
  EXPECT_EQ(other.cancel[0], (TaskKey{id.value(), 0, 1}));
  e.Beat(node0, {{.job = id.value(), .task = 0, .attempt = 1, .state = TaskReport::State::kExited, .exit_code = 143, .signal = 15}});
  EXPECT_EQ(e.c->FindJob(id)->state, JobState::kFailed);
  EXPECT_EQ(e.c->FindJob(id)->exit_code, 2);
}

TEST(ControllerTest, CancelQueuedAndRunning) {
  Scene e;
  e.Join("n", 1);
  const JobId running = e.Submit(1);
  const JobId queued = e.Submit(1);
  e.c->Tick();
  e.Beat("n");
  e.Beat("n", {{.job = running.value(), .task = 0, .attempt = 1}}, {{running.value(), 0, 1}});
  ASSERT_TRUE(e.c->Cancel(queued).ok());
  EXPECT_EQ(e.c->FindJob(queued)->state, JobState::kCancelled);
  ASSERT_TRUE(e.c->Cancel(running).ok());
  const HeartbeatReply r = e.Beat("n", {}, {{running.value(), 0, 1}});
  ASSERT_EQ(r.cancel.size(), 1u);
  e.Beat("n", {{.job = running.value(), .task = 0, .attempt = 1, .state = TaskReport::State::kExited, .exit_code = 143, .signal = 15}});
  EXPECT_EQ(e.c->FindJob(running)->state, JobState::kCancelled);
  EXPECT_FALSE(e.c->Cancel(running).ok()) << "cancelling an ended job is refused";
  EXPECT_EQ(e.c->Cancel(JobId{999}).code(), StatusCode::kNotFound);
}

// A restart: the new controller reads the journal, holds the running job's GPUs again, and
// the agent's report adopts it without a second launch.
// A node says how many tasks it can run at once (its CPUs and process limit); CPU-only tasks,
// which ask no GPU, fill those slots and no more. Worked example: a node of 4 slots; a job of 3
// tasks takes 3, a second of 3 waits (1 free) until the first ends, and a gang of 6 can never
// start on it (the explanation says why, with the numbers).
TEST(ControllerTest, TaskSlotsBoundTasksPerNode) {
  Scene e;
  RegisterRequest r{.name = "small", .cpu_cores = 2, .memory_mib = 4096, .gpu_source = "simulated", .max_tasks = 4};
  ASSERT_TRUE(e.c->Register(r));
  const JobId first = e.Submit(0, 3);
  const JobId second = e.Submit(0, 3);
  const JobId wide = e.Submit(0, 6);
  e.c->Tick();
  EXPECT_EQ(e.c->FindJob(first)->state, JobState::kStarting);
  EXPECT_EQ(e.c->FindJob(second)->state, JobState::kQueued) << "3 more would make 6 on a node of 4 slots";
  EXPECT_EQ(e.c->FindJob(wide)->state, JobState::kQueued);
  EXPECT_NE(e.c->Explain(second).find("3 tasks must start together, only 1 fit at once"), std::string::npos) << e.c->Explain(second);
  // What the API shows of each waiting job: its class's reason, kept once per class.
  EXPECT_EQ(e.c->MessageOf(*e.c->FindJob(second)).substr(0, 9), "waiting: ") << e.c->MessageOf(*e.c->FindJob(second));
  (void)e.Beat("small", {{.job = first.value(), .task = 0, .attempt = 1}, {.job = first.value(), .task = 1, .attempt = 1},
                         {.job = first.value(), .task = 2, .attempt = 1}});
  std::vector<TaskReport> ends;
  for (int t = 0; t < 3; ++t) {
    ends.push_back({.job = first.value(), .task = t, .attempt = 1, .state = TaskReport::State::kExited, .exit_code = 0});
  }
  (void)e.Beat("small", ends);
  e.c->Tick();
  EXPECT_EQ(e.c->FindJob(first)->state, JobState::kSucceeded);
  EXPECT_EQ(e.c->FindJob(second)->state, JobState::kStarting) << "the slots came back";
  EXPECT_EQ(e.c->FindJob(wide)->state, JobState::kQueued) << "6 tasks never fit 4 slots";
}

// The server's own loop stalled (a slow disk, a swapped process) for 3 s: no heartbeat could be
// read meanwhile, so the silence is the server's. With stall forgiveness on (the live server:
// a gap of over 700 ms between ticks), no node is declared down for it; with it off (as on
// a manual clock whose jumps mean real silence), the same 3 s finds the node down.
TEST(ControllerTest, ImplausibleGpuMemoryIsRefused) {
  Scene e;
  auto sim = SimulatedGpuSource::Parse("2xH100", "liar");
  auto devices = *sim->Devices();
  devices[1].memory = MiB{512 * 1024};  // an "H100" of 512 GiB
  auto reg = e.c->Register(RegisterRequest{.name = "liar", .gpu_source = "simulated", .gpus = devices});
  ASSERT_FALSE(reg);
  EXPECT_NE(reg.error().message().find("gpus[1]: 524288 MiB is more than a H100 has"), std::string::npos) << reg.error().message();
  EXPECT_EQ(e.c->FindNode("liar"), nullptr) << "nothing of it was kept";
}

TEST(ControllerTest, AServerStallIsNotTheNodesSilence) {
  for (const bool forgive : {false, true}) {
    MemoryJournal journal;
    ManualClock clock{Millis{1'000'000}};
    Controller c(Fleet{}, journal, clock, ControllerOptions{.checkpoint_root = "/ckpt", .stall = forgive ? Millis{700} : Millis{0}},
                 std::move(*BuiltinRegistry().MakePolicy("fifo")));
    auto sim = SimulatedGpuSource::Parse("1xH100", "a");
    ASSERT_TRUE(c.Register(RegisterRequest{.name = "a", .gpu_source = "simulated", .gpus = *sim->Devices()}));
    for (int i = 0; i < 10; ++i) {
      clock.Advance(Millis{500});
      ASSERT_TRUE(c.Heartbeat(Heartbeat{.node = "a"}));
      (void)c.TakeWork("a");
      c.Tick();
    }
    clock.Advance(Millis{3'000});  // no tick, no request: the loop was stuck
    c.Tick();
    EXPECT_EQ(c.NodeCondition("a") == "down", !forgive) << (forgive ? "a stall was blamed on the node" : "silence went unseen");
    EXPECT_EQ(c.stats().stalls, forgive ? 1 : 0);
  }
}

// Fair share remembers across a restart: a tenant's decayed usage is stored every minute (and
// when the server stops) and restored, decaying from when it was stored. With the default
// half-life (7 days), 2 GPUs held for 10 minutes are about 1,199.4 GPU-s: 2 x 600 s less the
// decay over those 10 minutes (a factor of 2^(-600/604800) on average).
TEST(ControllerTest, DecayedUsageSurvivesARestart) {
  Scene e;
  e.Join("n", 4);
  ASSERT_TRUE(e.c->access().CreateTenant(Tenant{.name = "llm"}, 0));
  ASSERT_TRUE(e.c->ApplyTenants().ok());
  JobRecord r;
  r.command = {"sleep", "1000"};
  r.spec.gpus_per_task = 2;
  r.spec.tenant = "llm";
  const JobId id = *e.c->Submit(r);
  e.c->Tick();
  e.Beat("n");
  e.Beat("n", {{.job = id.value(), .task = 0, .attempt = 1, .started_ms = e.clock.Now().value()}}, {{id.value(), 0, 1}});
  e.clock.Advance(Millis{600'000});
  e.c->Tick();  // a minute or more since the last save: stored
  const TenantIndex t = *e.c->tenant_book().Find("llm");
  const double held = e.c->tenant_book().decayed(t);
  EXPECT_NEAR(held, 1'199'400, 200) << "GPU-ms";
  ASSERT_TRUE(e.journal.Load()->meta.count("fairshare/llm"));
  e.clock.Advance(Millis{1'000});
  auto restarted = e.Make();
  ASSERT_TRUE(restarted->Recover().ok());
  const TenantIndex again = *restarted->tenant_book().Find("llm");
  EXPECT_NEAR(restarted->tenant_book().decayed(again), held, 1) << "restored as stored";
  EXPECT_EQ(restarted->tenant_book().decayed_as_of(again), e.clock.Now().value() - 1'000);
}

TEST(ControllerTest, RecoverAdoptsRunningJobs) {
  Scene e;
  e.Join("n", 2);
  const JobId a = e.Submit(2);
  const JobId b = e.Submit(1);
  e.c->Tick();
  e.Beat("n");
  e.Beat("n", {{.job = a.value(), .task = 0, .attempt = 1}}, {{a.value(), 0, 1}});
  // The node's inventory is kept once (the fleet's copy): its view and its stored record show
  // every GPU with its UUID, before a restart and after.
  auto uuids = [&] {
    const nlohmann::json v = nlohmann::json::parse(e.c->NodeJson("n"));
    std::vector<std::string> out;
    for (const auto& g : v["gpus"]) out.push_back(g["uuid"]);
    return out;
  };
  const std::vector<std::string> before = uuids();
  ASSERT_EQ(before.size(), 2u);
  EXPECT_FALSE(before[0].empty());
  EXPECT_NE(before[0], before[1]);
  auto restarted = e.Make();
  ASSERT_TRUE(restarted->Recover().ok());
  e.c = std::move(restarted);
  EXPECT_EQ(uuids(), before) << "recovered from the stored record";
  EXPECT_EQ(e.c->FindJob(a)->state, JobState::kRunning);
  EXPECT_EQ(e.c->FindJob(b)->state, JobState::kQueued);
  {
    auto sim = SimulatedGpuSource::Parse("4xH100", "n");
    auto again = e.c->Register(RegisterRequest{.name = "n", .address = "10.0.0.1", .cpu_cores = 32, .memory_mib = 256 * 1024,
                                               .gpu_source = "simulated", .gpus = *sim->Devices(), .credential = e.credentials["n"]});
    ASSERT_FALSE(again) << "its inventory cannot change under running work";
    EXPECT_NE(again.error().message().find("registered with 2 GPUs, now 4"), std::string::npos) << again.error().message();
  }
  e.Join("n", 2);  // the agent registers again after the server restarted
  e.c->Tick();
  HeartbeatReply r = e.Beat("n", {}, {{a.value(), 0, 1}});
  EXPECT_TRUE(r.start.empty()) << "job b waits: job a still holds both GPUs; job a is not relaunched";
  e.Beat("n", {{.job = a.value(), .task = 0, .attempt = 1, .state = TaskReport::State::kExited, .exit_code = 0}});
  e.c->Tick();
  r = e.Beat("n");
  ASSERT_EQ(r.start.size(), 1u);
  EXPECT_EQ(r.start[0].job, b.value());
}

// A task the agent was given but no longer runs is lost: no fault of the job's, so the job
// goes back to the queue (attempt 2) rather than failing.
TEST(ControllerTest, LostTaskFailsOver) {
  Scene e;
  e.Join("n", 1);
  const JobId id = e.Submit(1);
  e.c->Tick();
  e.Beat("n");          // the launch is delivered...
  e.Beat("n", {}, {});  // ...but the next heartbeat does not list it: lost
  e.c->Tick();
  const JobRecord* j = e.c->FindJob(id);
  ASSERT_EQ(j->attempts.size(), 1u);
  EXPECT_NE(j->attempts[0].outcome.find("lost"), std::string::npos);
  EXPECT_EQ(j->state, JobState::kStarting) << "placed again at once (first retry, no backoff)";
  EXPECT_EQ(j->attempt, 2);
  const HeartbeatReply r = e.Beat("n");
  ASSERT_EQ(r.start.size(), 1u);
  EXPECT_EQ(r.start[0].attempt, 2);
}

// The node falls silent: suspect, then down (phi accrual on the manual clock); its job waits
// out the lease, then moves, whole, to the other node. The dead node's old attempt, if its
// agent comes back, is told to stop.
TEST(ControllerTest, DeadNodeJobMovesAfterTheLease) {
  Scene e;
  e.Join("a", 2);
  e.Join("b", 2);
  const JobId id = e.Submit(2);
  e.c->Tick();
  const std::string first = e.c->FindJob(id)->tasks[0].node;
  const std::string other = first == "a" ? "b" : "a";
  e.Beat(first);
  e.Beat(first, {{.job = id.value(), .task = 0, .attempt = 1}}, {{id.value(), 0, 1}});
  // 500 ms heartbeats from both nodes for a while, then `first` goes quiet.
  for (int i = 0; i < 10; ++i) {
    e.clock.Advance(Millis{500});
    e.Beat(first, {}, {{id.value(), 0, 1}});
    e.Beat(other);
    e.c->Tick();
  }
  int64_t silent = 0;
  while (e.c->NodeCondition(first) != "down" && silent < 10'000) {
    e.clock.Advance(Millis{50});
    silent += 50;
    if (silent % 500 == 0) e.Beat(other);
    e.c->Tick();
    if (e.c->NodeCondition(first) == "suspect") {
      EXPECT_EQ(e.c->FindJob(id)->state, JobState::kRunning) << "suspect is not down: the job stays";
    }
  }
  EXPECT_GE(silent, 1000);
  EXPECT_LE(silent, 2000) << "declared down within 2 s";
  if (silent < 1800) {
    EXPECT_TRUE(e.c->FindJob(id)->failing_over) << "down before the lease ends: waiting it out";
  }
  // Not placed again before the lease (1.8 s after the server last answered it) has run out.
  while (silent < 1800) {
    EXPECT_NE(e.c->FindJob(id)->state, JobState::kQueued);
    EXPECT_TRUE(e.Beat(other).start.empty()) << "no second attempt while the first may still run";
    e.clock.Advance(Millis{50});
    silent += 50;
    e.c->Tick();
  }
  e.c->Tick();
  const HeartbeatReply r = e.Beat(other);
  ASSERT_EQ(r.start.size(), 1u);
  EXPECT_EQ(r.start[0].attempt, 2);
  EXPECT_EQ(e.c->FindJob(id)->tasks[0].node, other);
  EXPECT_EQ(e.c->FindJob(id)->attempts.back().outcome.find("attempt 1 failed: node " + first + " down"), 0u);
  EXPECT_EQ(e.Var(r.start[0], "GPUPOOL_ATTEMPT"), "2");
  // The first node's agent was only cut off; it comes back still running attempt 1.
  const HeartbeatReply back = e.Beat(first, {}, {{id.value(), 0, 1}});
  ASSERT_EQ(back.cancel.size(), 1u);
  EXPECT_EQ(back.cancel[0], (TaskKey{id.value(), 0, 1}));
}

TEST(ControllerTest, RetryLimit) {
  Scene e;
  e.Join("n", 1);
  JobRecord r;
  r.command = {"true"};
  r.max_retries = 1;
  const JobId id = *e.c->Submit(r);
  e.c->Tick();
  for (int attempt = 1; attempt <= 2; ++attempt) {
    EXPECT_EQ(e.c->FindJob(id)->attempt, attempt);
    e.Beat("n");
    e.Beat("n", {}, {});  // lost again
    e.c->Tick();          // requeued (the first retry has no backoff) and placed again, or given up
  }
  EXPECT_EQ(e.c->FindJob(id)->state, JobState::kFailed);
  EXPECT_NE(e.c->FindJob(id)->message.find("gave up after 2 failed attempts"), std::string::npos);
}

// drain --evict: the running job gets SIGTERM (a cancel), then goes back to the queue and to
// the other node; an eviction is not a failure, so the retry budget is untouched.
TEST(ControllerTest, DrainEvictMovesRunningJobs) {
  Scene e;
  e.Join("a", 1);
  e.Join("b", 1);
  const JobId id = e.Submit(1);
  e.c->Tick();
  const std::string first = e.c->FindJob(id)->tasks[0].node;
  const std::string other = first == "a" ? "b" : "a";
  e.Beat(first);
  e.Beat(first, {{.job = id.value(), .task = 0, .attempt = 1}}, {{id.value(), 0, 1}});
  ASSERT_TRUE(e.c->Evict(first).ok());
  const HeartbeatReply r = e.Beat(first, {}, {{id.value(), 0, 1}});
  ASSERT_EQ(r.cancel.size(), 1u);
  e.Beat(first, {{.job = id.value(), .task = 0, .attempt = 1, .state = TaskReport::State::kExited, .exit_code = 143, .signal = 15}});
  e.c->Tick();
  const JobRecord* j = e.c->FindJob(id);
  EXPECT_EQ(j->attempt, 2);
  EXPECT_EQ(j->tasks[0].node, other);
  EXPECT_EQ(j->failures, 0);
  EXPECT_NE(j->attempts.back().outcome.find("evicted"), std::string::npos);
  EXPECT_EQ(e.c->NodeCondition(first), "draining");
}

// XID 79 on the GPU a job runs on: that GPU alone goes out of service, and the job moves to
// another GPU (here on the same node). XID 13 is the application's own fault: the GPU stays.
TEST(ControllerTest, XidQuarantinesOneGpu) {
  Scene e;
  e.Join("n", 2);
  const JobId id = e.Submit(1);
  e.c->Tick();
  e.Beat("n");
  e.Beat("n", {{.job = id.value(), .task = 0, .attempt = 1}}, {{id.value(), 0, 1}});
  const uint16_t first = e.c->FindJob(id)->tasks[0].allocation.gpu_mask;
  const int gpu = first == 1 ? 0 : 1;
  EXPECT_NE(e.c->GpuXid("n", gpu, 13)->find("stays in service"), std::string::npos);
  EXPECT_FALSE(e.c->FindJob(id)->failing_over);
  EXPECT_NE(e.c->GpuXid("n", gpu, 79)->find("quarantined: XID 79"), std::string::npos);
  EXPECT_TRUE(e.c->FindJob(id)->failing_over);
  const HeartbeatReply stop = e.Beat("n", {}, {{id.value(), 0, 1}});
  ASSERT_EQ(stop.cancel.size(), 1u);
  e.Beat("n", {{.job = id.value(), .task = 0, .attempt = 1, .state = TaskReport::State::kExited, .exit_code = 143, .signal = 15}});
  e.c->Tick();
  const JobRecord* j = e.c->FindJob(id);
  EXPECT_EQ(j->attempt, 2);
  EXPECT_NE(j->tasks[0].allocation.gpu_mask, first) << "placed on the other GPU";
  EXPECT_NE(e.c->NodeJson("n").find("quarantined: XID 79"), std::string::npos);
  // A third job cannot have the quarantined GPU; after undrain it can.
  const JobId more = e.Submit(1);
  e.c->Tick();
  EXPECT_EQ(e.c->FindJob(more)->state, JobState::kQueued);
  ASSERT_TRUE(e.c->UndrainGpu("n", gpu).ok());
  e.c->Tick();
  EXPECT_EQ(e.c->FindJob(more)->state, JobState::kStarting);
  EXPECT_EQ(e.c->GpuXid("n", 7, 79).error().code(), StatusCode::kInvalidArgument);
}

// A requeued job whose backoff ends between ticks is placed on a later tick even when nothing
// else happens in the cluster (regression: the pass that skipped it used to forget it).
TEST(ControllerTest, BackoffEndsOnAQuietCluster) {
  Scene e;
  e.Join("n", 1);
  JobRecord r;
  r.command = {"true"};
  const JobId id = *e.c->Submit(r);
  e.c->Tick();
  e.Beat("n");
  e.Beat("n", {}, {});  // lost: first failover, straight back
  e.c->Tick();
  e.Beat("n");
  e.Beat("n", {}, {});  // lost again: the second retry waits 1 s
  e.c->Tick();
  EXPECT_EQ(e.c->FindJob(id)->state, JobState::kQueued);
  for (int i = 0; i < 15 && e.c->FindJob(id)->state == JobState::kQueued; ++i) {
    e.clock.Advance(Millis{100});
    e.Beat("n");  // a quiet node: heartbeats, nothing else
    e.c->Tick();
  }
  EXPECT_EQ(e.c->FindJob(id)->state, JobState::kStarting);
  EXPECT_EQ(e.c->FindJob(id)->attempt, 3);
}

// An XID the agent saw through NVML arrives in a heartbeat's GPU sample: the same
// classification as the API. Rising uncorrected ECC errors quarantine too (the first count
// seen is a baseline).
TEST(ControllerTest, XidsAndEccFromHeartbeats) {
  Scene e;
  e.Join("n", 4);
  auto beat = [&](int gpu, std::vector<int> xids, int64_t ecc) {
    std::vector<GpuSample> g(4);
    for (int i = 0; i < 4; ++i) g[static_cast<size_t>(i)] = GpuSample{.index = i, .ecc_uncorrected = 7};
    g[static_cast<size_t>(gpu)].xids = std::move(xids);
    g[static_cast<size_t>(gpu)].ecc_uncorrected = ecc;
    (void)e.c->Heartbeat(Heartbeat{.node = "n", .gpus = g});
  };
  beat(1, {}, 7);     // baseline: 7 uncorrected errors from before
  beat(1, {13}, 7);   // an application fault: nothing quarantined
  EXPECT_EQ(e.c->NodeJson("n").find("quarantined"), std::string::npos);
  beat(2, {79}, 7);   // fallen off the bus
  EXPECT_NE(e.c->NodeJson("n").find("quarantined: XID 79"), std::string::npos);
  beat(3, {}, 9);     // ECC rose from 7 to 9
  EXPECT_NE(e.c->NodeJson("n").find("uncorrected ECC errors rose from 7 to 9"), std::string::npos);
  const JobId id = e.Submit(3);
  e.c->Tick();
  EXPECT_EQ(e.c->FindJob(id)->state, JobState::kQueued) << "2 of 4 GPUs in service";
}

// The health check: a quarantined GPU that reports clean telemetry for the probation period
// (10 min by default) is self-tested by its agent; a new fault during probation restarts it;
// a pass returns it to service, a failure starts the probation again.
TEST(ControllerTest, QuarantinedGpuIsSelfTestedAfterCleanProbation) {
  Scene e;
  e.Join("n", 2);
  std::vector<int> asked;
  auto beat = [&](std::vector<int> xids_on_1, std::vector<GpuSelfTest> results = {}) {
    std::vector<GpuSample> g = {GpuSample{.index = 0}, GpuSample{.index = 1, .xids = std::move(xids_on_1)}};
    auto r = e.c->Heartbeat(Heartbeat{.node = "n", .gpus = g, .selftests = std::move(results)});
    asked.insert(asked.end(), r->selftest.begin(), r->selftest.end());
  };
  auto quarantined = [&] { return e.c->NodeJson("n").find("quarantined") != std::string::npos; };
  ASSERT_TRUE(e.c->GpuXid("n", 1, 79));
  auto minutes = [&](int m) {
    for (int i = 0; i < m * 2; ++i) {
      e.clock.Advance(Millis{30'000});
      beat({});
      e.c->Tick();
    }
  };
  minutes(6);
  beat({79});  // at fault again six minutes in: probation starts over
  minutes(6);
  EXPECT_TRUE(asked.empty()) << "12 min in, but only 6 clean: no self-test yet";
  minutes(4);
  EXPECT_EQ(asked, std::vector<int>{1}) << "10 clean minutes: GPU 1 is self-tested";
  minutes(1);
  EXPECT_EQ(asked, (std::vector<int>{1, 1})) << "no answer within a minute: asked again";
  EXPECT_TRUE(quarantined()) << "it stays out until the test passes";
  beat({}, {GpuSelfTest{.gpu = 1, .passed = false, .detail = "kernel: 12 of 100 results wrong"}});
  EXPECT_TRUE(quarantined());
  EXPECT_NE(e.c->NodeJson("n").find("failed: kernel: 12 of 100 results wrong"), std::string::npos) << e.c->NodeJson("n");
  asked.clear();
  minutes(9);
  EXPECT_TRUE(asked.empty()) << "a failed test starts the probation over";
  minutes(1);
  ASSERT_EQ(asked, std::vector<int>{1});
  beat({}, {GpuSelfTest{.gpu = 1, .passed = true, .detail = "ok"}});
  EXPECT_FALSE(quarantined()) << "a pass puts it back: " << e.c->NodeJson("n");
  EXPECT_NE(e.c->NodeJson("n").find("\"check\":\"passed: ok\""), std::string::npos);
}

TEST(ControllerTest, GpuCheckOnDemandOnlyForQuarantinedGpus) {
  Scene e;
  e.Join("n", 2);
  EXPECT_EQ(e.c->CheckGpu("n", 0).code(), StatusCode::kFailedPrecondition) << "in service: a job may be on it";
  EXPECT_EQ(e.c->CheckGpu("n", 5).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e.c->CheckGpu("m", 0).code(), StatusCode::kNotFound);
  ASSERT_TRUE(e.c->GpuXid("n", 0, 48));  // double-bit ECC: quarantined
  ASSERT_TRUE(e.c->CheckGpu("n", 0).ok());
  EXPECT_TRUE(e.c->HasWork("n")) << "a parked heartbeat is answered at once";
  EXPECT_EQ(e.Beat("n").selftest, std::vector<int>{0});
  EXPECT_TRUE(e.Beat("n").selftest.empty()) << "asked once";
}

// Carried checkpoints are fenced like everything else: only the job's current attempt may
// store one; an attempt the server has given up on, or a finished job, is refused.
// An upload as the server holds it: a file (the HTTP layer spools the body there).
std::filesystem::path Blob(const std::string& text) {
  static int n = 0;
  const auto p = std::filesystem::temp_directory_path() / fmt::format("gp-blob-{}-{}", getpid(), ++n);
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

TEST(ControllerTest, CarriedCheckpointsAreFencedByAttempt) {
  MemoryJournal journal;
  ManualClock clock{Millis{1'000'000}};
  const auto store = std::filesystem::temp_directory_path() / fmt::format("gp-ckpt-{}", getpid());
  Controller c(Fleet{}, journal, clock, ControllerOptions{.checkpoint_store = store},
               std::move(*BuiltinRegistry().MakePolicy("fifo")));
  for (const char* n : {"a", "b"}) {
    auto sim = SimulatedGpuSource::Parse("1xH100", n);
    ASSERT_TRUE(c.Register(RegisterRequest{.name = n, .gpu_source = "simulated", .gpus = *sim->Devices()}));
  }
  JobRecord r;
  r.command = {"train"};
  r.spec.gpus_per_task = 1;
  const JobId id = *c.Submit(r);
  c.Tick();
  const std::string first = c.FindJob(id)->tasks[0].node;
  HeartbeatReply l = *c.Heartbeat(Heartbeat{.node = first});
  ASSERT_EQ(l.start.size(), 1u);
  EXPECT_TRUE(l.start[0].carry_checkpoint) << "no shared root: the agent carries the directory";
  for (const auto& [k, v] : l.start[0].env) EXPECT_NE(k, "GPUPOOL_CHECKPOINT_DIR") << "the agent sets it, to a directory of its own";
  (void)c.Heartbeat(Heartbeat{.node = first, .tasks = {{.job = id.value(), .task = 0, .attempt = 1}}, .running = {{id.value(), 0, 1}}});
  const std::string other = first == "a" ? "b" : "a";
  EXPECT_EQ(c.StoreCheckpoint(other, id, 0, 1, Blob("forged")).code(), StatusCode::kPermissionDenied)
      << "another node may not write this node's attempt's checkpoint";
  EXPECT_EQ(c.MayFetchCheckpoint(other, id, 0).code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(c.MayFetchCheckpoint(first, id, 0).ok());
  EXPECT_TRUE(c.StoreCheckpoint(first, id, 0, 1, Blob("v1")).ok());
  EXPECT_EQ(c.StoreCheckpoint(first, id, 0, 2, Blob("future")).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.StoreCheckpoint(first, id, 3, 1, Blob("no such task")).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.StoreCheckpoint(first, JobId{99}, 0, 1, Blob("x")).code(), StatusCode::kNotFound);
  // The job moves (its node is drained with eviction): attempt 2 elsewhere.
  ASSERT_TRUE(c.Evict(first).ok());
  (void)c.Heartbeat(Heartbeat{.node = first, .tasks = {{.job = id.value(), .task = 0, .attempt = 1,
                                                         .state = TaskReport::State::kExited, .exit_code = 143, .signal = 15}}});
  c.Tick();
  ASSERT_EQ(c.FindJob(id)->attempt, 2);
  EXPECT_EQ(c.StoreCheckpoint(first, id, 0, 1, Blob("stale")).code(), StatusCode::kFailedPrecondition) << "attempt 1 is fenced off";
  std::ifstream in(c.CheckpointPath(id, 0));
  std::string kept((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(kept, "v1") << "the stale write did not replace the checkpoint";
  const std::string second = c.FindJob(id)->tasks[0].node;
  EXPECT_TRUE(c.StoreCheckpoint(second, id, 0, 2, Blob("v2")).ok());
  // It succeeds: its carried checkpoints are removed, and late writes refused.
  (void)c.Heartbeat(Heartbeat{.node = second});
  (void)c.Heartbeat(Heartbeat{.node = second, .tasks = {{.job = id.value(), .task = 0, .attempt = 2,
                                                          .state = TaskReport::State::kExited, .exit_code = 0}}});
  EXPECT_EQ(c.FindJob(id)->state, JobState::kSucceeded);
  EXPECT_FALSE(std::filesystem::exists(c.CheckpointPath(id, 0)));
  EXPECT_EQ(c.StoreCheckpoint(second, id, 0, 2, Blob("late")).code(), StatusCode::kFailedPrecondition);
  std::filesystem::remove_all(store);
}

// Every state change is an event, numbered in order and stored with the change (the outbox);
// events of changes that write nothing durable (a node turning suspect) are flushed by Tick.
TEST(ControllerTest, StateChangesAreNumberedEvents) {
  Scene e;
  e.Join("a", 1);
  e.Join("b", 1);
  const JobId id = e.Submit(1);
  e.c->Tick();
  const std::string first = e.c->FindJob(id)->tasks[0].node;
  const std::string other = first == "a" ? "b" : "a";
  e.Beat(first);
  e.Beat(first, {{.job = id.value(), .task = 0, .attempt = 1}}, {{id.value(), 0, 1}});
  ASSERT_TRUE(e.c->GpuXid(first, 0, 79));  // quarantined: the job moves
  e.Beat(first, {{.job = id.value(), .task = 0, .attempt = 1, .state = TaskReport::State::kExited, .exit_code = 143, .signal = 15}});
  e.c->Tick();
  e.Beat(other);
  e.Beat(other, {{.job = id.value(), .task = 0, .attempt = 2, .state = TaskReport::State::kExited, .exit_code = 0}});
  for (int i = 0; i < 20; ++i) {  // `other` falls silent: suspect, then down
    e.clock.Advance(Millis{100});
    e.Beat(first);
    e.c->Tick();
  }
  auto events = e.c->EventsAfter(0, 1000);
  ASSERT_TRUE(events);
  std::vector<std::string> got;
  for (size_t i = 0; i < events->size(); ++i) {
    EXPECT_EQ((*events)[i].seq, i + 1) << "numbered from 1 without a gap";
    got.push_back((*events)[i].type + " " + (*events)[i].subject);
  }
  const std::vector<std::string> want = {
      "node.joined node/a", "node.joined node/b", "job.submitted job/1", "job.placed job/1", "job.started job/1",
      fmt::format("gpu.quarantined node/{}/gpu/0", first), "job.failing_over job/1", "job.requeued job/1",
      "job.placed job/1", "job.started job/1", "job.succeeded job/1", fmt::format("node.suspect node/{}", other), fmt::format("node.down node/{}", other)};
  EXPECT_EQ(got, want);
  EXPECT_EQ(e.c->last_event_seq(), want.size());
  EXPECT_EQ(e.c->EventsAfter(10, 1000)->size(), 3u);
  EXPECT_NE((*events)[10].data.find("\"exit_code\":0"), std::string::npos) << (*events)[10].data;
  // A new controller on the same journal goes on numbering where the last one stopped.
  e.c = e.Make();
  ASSERT_TRUE(e.c->Recover().ok());
  e.Submit(0);
  EXPECT_EQ(e.c->last_event_seq(), want.size() + 1);
}

// Retention: the store keeps the last N events, pruning a tenth of N at a time, and never
// an event a sink has not delivered.
TEST(ControllerTest, EventRetentionKeepsTheLastAndWhatSinksStillNeed) {
  MemoryJournal journal;
  ManualClock clock{Millis{1'000'000}};
  Controller c(Fleet{}, journal, clock, ControllerOptions{.checkpoint_root = "/ckpt", .events_retain = 20},
               std::move(*BuiltinRegistry().MakePolicy("fifo")));
  uint64_t delivered = 2;
  c.sinks_delivered = [&] { return delivered; };
  auto submit = [&](int n) {
    for (int i = 0; i < n; ++i) {
      JobRecord r;
      r.command = {"true"};
      ASSERT_TRUE(c.Submit(r));
    }
    c.Tick();
  };
  submit(22);
  EXPECT_EQ(c.first_event_seq(), 1u) << "22 <= 20 + 2: not yet";
  submit(1);
  EXPECT_EQ(c.first_event_seq(), 3u) << "would prune up to 3, but the sink has delivered only up to 2";
  EXPECT_EQ(c.EventsAfter(0, 100)->front().seq, 3u);
  delivered = 100;
  submit(1);  // 24 events, 22 kept
  EXPECT_EQ(c.first_event_seq(), 3u) << "nothing more until the step is reached again";
  submit(2);
  EXPECT_EQ(c.first_event_seq(), 7u);
  EXPECT_EQ(c.EventsAfter(0, 100)->size(), 20u);
  EXPECT_EQ(c.last_event_seq(), 26u);
}

TEST(CodecTest, SubmitIsStrictAndRecordsRoundTrip) {
  EXPECT_NE(ParseSubmitRequest(R"({"command":["x"],"gpus":1,"colour":"red"})").error().message().find("unknown field 'colour'"),
            std::string::npos);
  EXPECT_NE(ParseSubmitRequest(R"({"command":"x","gpus":17})").error().message().find("field 'gpus': must be 0..16, got 17"),
            std::string::npos);
  EXPECT_NE(ParseSubmitRequest(R"({"command":["x"],"memory":"lots"})").error().message().find("field 'memory'"),
            std::string::npos);
  auto ok = ParseSubmitRequest(
      R"({"command":["python","train.py"],"gpus":2,"tasks":4,"gpu_model":"H100","memory":"16GiB","cpu":4.5,)"
      R"("priority":3,"tenant":"vision","data":{"site":"dc","size":"2TB"},"duration":"3h","max_price":2.5,"env":{"A":"1"}})");
  ASSERT_TRUE(ok) << ok.error().message();
  ok->spec.id = JobId{7};
  ok->state = JobState::kRunning;
  ok->tasks.push_back(TaskRecord{.node = "n", .allocation = {.gpu_mask = 0b1100}});
  auto back = JobFromJson(JobToJson(*ok));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(JobToJson(*back), JobToJson(*ok));
  EXPECT_EQ(back->spec.cpu_per_task.value(), 4500);
  EXPECT_EQ(back->spec.data->size.value(), 2'000'000'000'000);
}

TEST(CgroupTest, CpuMaxAndDetection) {
  EXPECT_EQ(CpuMaxValue(MilliCpu{1500}), "150000 100000");
  EXPECT_EQ(CpuMaxValue(MilliCpu{250}), "25000 100000");
  EXPECT_EQ(CpuMaxValue(MilliCpu{0}), "max 100000");
  const CgroupLimiter none = CgroupLimiter::Detect("/nonexistent");
  EXPECT_FALSE(none.available());
  EXPECT_NE(none.why_not().find("/nonexistent"), std::string::npos);
}

// On a cgroup v1 host as root (this project's machines): a task's cgroups get their limits in
// each hierarchy, the GPUs not given are denied in the devices one, and a process that joins
// them is in them; Remove takes them away.
TEST(CgroupTest, V1LimitsAndDeviceRulesWhereTheHostHasThem) {
  struct statfs fs {};
  if (geteuid() != 0 || statfs("/sys/fs/cgroup/memory", &fs) != 0 || static_cast<long>(fs.f_type) != 0x27e0eb) {
    GTEST_SKIP() << "needs root and a cgroup v1 memory hierarchy";
  }
  const std::string scope = "test-" + std::to_string(getpid());
  const CgroupLimiter c = CgroupLimiter::Detect("/sys/fs/cgroup", scope);
  ASSERT_TRUE(c.available()) << c.why_not();
  EXPECT_TRUE(c.v1());
  auto dirs = c.Prepare("task-1", CgroupLimits{.cpu = MilliCpu{1500}, .memory = MiB{64}, .pids = 32, .deny_devices = {"c 1:7 rwm"}});
  ASSERT_TRUE(dirs) << dirs.error().message();
  auto read = [](const std::string& f) {
    std::ifstream in(f);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return all;
  };
  const std::string base = "/sys/fs/cgroup/{}/gpupool/" + scope + "/task-1/";
  auto at = [&](const char* ctrl, const char* file) { return fmt::format(fmt::runtime(base), ctrl) + file; };
  EXPECT_EQ(read(at("memory", "memory.limit_in_bytes")), std::to_string(64 << 20) + "\n");
  EXPECT_EQ(read(at("cpu", "cpu.cfs_quota_us")), "150000\n");
  if (std::filesystem::exists(at("pids", "pids.max"))) {
    EXPECT_EQ(read(at("pids", "pids.max")), "32\n");
  }
  // A child joins them, as the supervisor does, and is in them: the denied node (/dev/full)
  // will not open, /dev/null still does.
  const bool devices = std::filesystem::exists(at("devices", "devices.deny"));
  const pid_t child = fork();
  if (child == 0) {
    if (!CgroupLimiter::Join(*dirs).ok()) _exit(1);
    const int full = open("/dev/full", O_RDONLY);
    const int full_errno = errno;
    const int null = open("/dev/null", O_RDONLY);
    if (null < 0) _exit(2);
    if (devices && (full >= 0 || full_errno != EPERM)) _exit(3);
    std::ifstream mine("/proc/self/cgroup");
    std::string all((std::istreambuf_iterator<char>(mine)), std::istreambuf_iterator<char>());
    _exit(all.find("gpupool/test-") != std::string::npos ? 0 : 4);
  }
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: cannot join; 2: /dev/null refused; 3: /dev/full opened; 4: not in the cgroup";
  c.Remove("task-1");
  EXPECT_FALSE(std::filesystem::exists(fmt::format(fmt::runtime(base), "memory")));
  for (const char* ctrl : {"cpu", "memory", "pids", "devices"}) {
    rmdir(fmt::format("/sys/fs/cgroup/{}/gpupool/{}", ctrl, scope).c_str());
  }
}

}  // namespace
}  // namespace gp

namespace gp {
namespace {

// Listings page newest first with a cursor and filter on the server; the queued ones come from
// the queue's own index, and every way of asking agrees with filtering the whole table.
TEST(ControllerTest, ListingsPageAndFilterAsTheWholeTableWould) {
  Scene e;
  e.Join("n1", 4);
  std::vector<JobId> ids;
  for (int i = 0; i < 12; ++i) ids.push_back(e.Submit(i % 3 == 0 ? 4 : 1));
  e.c->Tick();  // some placed, the rest wait
  auto brute = [&](std::optional<JobState> st, uint64_t before, size_t limit) {
    std::vector<uint64_t> out;
    for (auto it = ids.rbegin(); it != ids.rend() && out.size() < limit; ++it) {
      const JobRecord* j = e.c->FindJob(*it);
      if ((before == 0 || it->value() < before) && (!st || j->state == *st)) out.push_back(it->value());
    }
    return out;
  };
  // One ends, one runs: every state has members.
  const JobRecord* first = e.c->FindJob(ids[0]);
  ASSERT_EQ(first->state, JobState::kStarting);
  (void)e.Beat("n1", {{.job = ids[0].value(), .task = 0, .attempt = 1, .state = TaskReport::State::kExited, .exit_code = 0}});
  e.c->Tick();
  for (std::optional<JobState> st : {std::optional<JobState>{}, std::optional<JobState>{JobState::kQueued},
                                     std::optional<JobState>{JobState::kStarting}, std::optional<JobState>{JobState::kRunning},
                                     std::optional<JobState>{JobState::kSucceeded}}) {
    for (uint64_t before : {uint64_t{0}, uint64_t{11}, uint64_t{5}}) {
      for (size_t limit : {size_t{2}, size_t{100}}) {
        std::vector<uint64_t> got;
        for (const JobRecord* j : e.c->ListJobs(JobFilter{.state = st, .limit = limit, .before = before})) {
          got.push_back(j->spec.id.value());
        }
        EXPECT_EQ(got, brute(st, before, limit)) << "state " << (st ? JobStateName(*st) : "any") << " before " << before
                                                 << " limit " << limit;
      }
    }
  }
  ASSERT_FALSE(e.c->ListJobs(JobFilter{.state = JobState::kQueued}).empty()) << "the scene has waiting jobs";
}

// An array is one entry in a listing (its elements passed over in one step), its elements
// are listed on request, ID_INDEX names one, and a restart recovers the array with its counts
// and goes on expanding it: every index is launched exactly once, across the restart.
TEST(ControllerTest, ArraysListRecoverAndLaunchEachIndexOnce) {
  Scene e;
  e.Join("n1", 4);
  const JobId before = e.Submit(1);
  JobRecord r;
  r.command = {"true"};
  r.spec.gpus_per_task = 1;
  r.array = *ParseArraySpec("0-9%3");
  const JobId arr = *e.c->Submit(r);
  const JobId after = e.Submit(4);  // waits behind the array's elements on a 4-GPU node
  EXPECT_EQ(after.value(), arr.value() + 11) << "the elements' ids follow the array's";
  EXPECT_EQ(*e.c->ResolveJob(fmt::format("{}_7", arr.value())), JobId{arr.value() + 8});
  EXPECT_FALSE(e.c->ResolveJob(fmt::format("{}_70", arr.value())));
  EXPECT_FALSE(e.c->ResolveJob(fmt::format("{}_1", before.value())));
  // SLURM_ARRAY_TASK_ID -> the attempts launched (a launch never reported running is handed
  // over again after a restart; an agent starts an attempt once however often it is given).
  std::map<std::string, std::set<TaskKey>> launched;
  std::vector<TaskReport> reports;
  std::vector<TaskKey> running;
  auto beat = [&] {
    e.c->Tick();
    HeartbeatReply reply = e.Beat("n1", std::exchange(reports, {}), running);
    for (const TaskLaunch& l : reply.start) {
      if (e.Var(l, "GPUPOOL_ARRAY_JOB_ID") == std::to_string(arr.value())) {
        launched[e.Var(l, "SLURM_ARRAY_TASK_ID")].insert({l.job, l.task, l.attempt});
        EXPECT_EQ(e.Var(l, "SLURM_ARRAY_TASK_COUNT"), "10");
        EXPECT_EQ(e.Var(l, "GPUPOOL_ARRAY_INDEX"), e.Var(l, "SLURM_ARRAY_TASK_ID"));
      }
      if (std::find(running.begin(), running.end(), TaskKey{l.job, l.task, l.attempt}) != running.end()) continue;
      running.push_back({l.job, l.task, l.attempt});
      // Reported running with the next beat, as an agent does (a task never reported running
      // is handed over again after a restart, and an agent ignores the repeat).
      reports.push_back({.job = l.job, .task = l.task, .attempt = l.attempt, .started_ms = 1});
    }
  };
  auto finish_one = [&] {
    if (running.empty()) return;
    const TaskKey k = running.front();
    running.erase(running.begin());
    reports.push_back({.job = k.job, .task = k.task, .attempt = k.attempt, .state = TaskReport::State::kExited, .exit_code = 0});
  };
  beat();
  beat();
  auto ids = [&](const JobFilter& f) {
    std::vector<uint64_t> out;
    for (const JobRecord* j : e.c->ListJobs(f)) out.push_back(j->spec.id.value());
    return out;
  };
  EXPECT_EQ(ids({}), (std::vector<uint64_t>{after.value(), arr.value(), before.value()}));
  EXPECT_EQ(ids({.state = JobState::kRunning}), (std::vector<uint64_t>{arr.value(), before.value()}));
  EXPECT_EQ(ids({.state = JobState::kRunning, .expand = true}).size(), 4u + 1) << "the array, its 3 elements, the job before";
  EXPECT_EQ(ids({.state = JobState::kQueued}), (std::vector<uint64_t>{after.value()}));
  EXPECT_EQ(ids({.limit = 1, .before = after.value()}), (std::vector<uint64_t>{arr.value()})) << "the cursor pages past the array";
  EXPECT_EQ(ids({.array = arr.value()}).size(), 3u) << "%3: three elements expanded, the rest wait without records";
  for (int i = 0; i < 4; ++i) {
    finish_one();
    beat();
  }
  const auto counts = e.c->FindJob(arr)->arr().element_counts;
  auto restarted = e.Make();
  ASSERT_TRUE(restarted->Recover().ok());
  e.c = std::move(restarted);
  EXPECT_EQ(e.c->FindJob(arr)->arr().element_counts, counts) << "the counts are rebuilt from the elements";
  EXPECT_EQ(e.c->FindJob(arr)->state, JobState::kRunning);
  e.Join("n1", 4);
  for (int i = 0; i < 40 && !IsTerminal(e.c->FindJob(after)->state); ++i) {
    finish_one();
    beat();
  }
  EXPECT_EQ(e.c->FindJob(arr)->state, JobState::kSucceeded);
  EXPECT_EQ(e.c->FindJob(after)->state, JobState::kSucceeded);
  ASSERT_EQ(launched.size(), 10u);
  for (const auto& [index, attempts] : launched) EXPECT_EQ(attempts.size(), 1u) << "index " << index;
}

// Usage: an attempt's GPU time from its start to its end, at its node's price, kept in the
// store; the offer an acquired node came from sets its price and tier.
TEST(ControllerTest, UsageRecordsEachAttemptsGpuTimeAtItsNodesPrice) {
  Scene e;
  e.Join("n1", 4);
  const JobId id = e.Submit(2);
  e.c->Tick();
  e.Beat("n1");
  const int64_t start = e.clock.Now().value();
  e.Beat("n1", {{.job = id.value(), .task = 0, .attempt = 1, .started_ms = start}}, {{id.value(), 0, 1}});
  e.clock.Advance(Millis{3'600'000});
  e.Beat("n1", {{.job = id.value(), .task = 0, .attempt = 1, .state = TaskReport::State::kExited, .exit_code = 0}});
  ASSERT_EQ(e.c->FindJob(id)->state, JobState::kSucceeded);
  EXPECT_EQ(e.c->UsedGpuMs("n1"), 2 * 3'600'000);
  auto t = e.c->UsageTotals(0, {"node", "kind"});
  ASSERT_TRUE(t) << t.error().message();
  ASSERT_EQ(t->size(), 1u);
  EXPECT_EQ((*t)[0].key, (std::vector<std::string>{"n1", "job"}));
  EXPECT_EQ((*t)[0].gpu_ms, 2 * 3'600'000);
  const int64_t price = e.c->fleet().PricePerGpuHour(e.c->fleet().nodes[0]).value();
  ASSERT_GT(price, 0);
  EXPECT_EQ((*t)[0].usd_micro, 2 * price) << "two GPU-hours at the node's price";
  EXPECT_TRUE(e.c->SetNodeOffer("n1", "cloud/west/H100x4").ok());
  EXPECT_EQ(e.c->FindNode("n1")->offer, "cloud/west/H100x4");
  EXPECT_FALSE(e.c->SetNodeOffer("nope", "x").ok());
}

// Offers a provider states at run time join the fleet's, or update theirs; errors name the
// offer and what is wrong.
TEST(ControllerTest, MergeOffersAddsUpdatesAndRefuses) {
  Fleet f;
  f.providers.push_back(Provider{.id = ProviderId{0}, .name = "cloud"});
  f.providers.push_back(Provider{.id = ProviderId{1}, .name = "other"});
  f.sites.push_back(Site{.id = SiteId{0}, .name = "west", .region = "w"});
  const GpuModelId h100 = *f.InternModel("H100");
  f.offers.push_back(Offer{.name = "file-offer", .provider = ProviderId{1}, .site = SiteId{0}, .model = h100, .gpus = 8,
                           .price_per_hour = UsdToMicro(20), .max_nodes = 2});
  MemoryJournal journal;
  ManualClock clock{Millis{1'000}};
  Controller c(std::move(f), journal, clock, ControllerOptions{}, std::move(*BuiltinRegistry().MakePolicy("fifo")));
  auto stated = [](std::string name, std::string site, int gpus, double price) {
    return Controller::StatedOffer{.offer = Offer{.name = std::move(name), .gpus = gpus, .price_per_hour = UsdToMicro(price), .max_nodes = 4},
                                   .site = std::move(site), .gpu_model = "A100"};
  };
  ASSERT_TRUE(c.MergeOffers(ProviderId{0}, {stated("rt", "west", 4, 6.0)}).ok());
  ASSERT_EQ(c.fleet().offers.size(), 2u);
  const Offer& rt = c.fleet().offers[1];
  EXPECT_EQ(rt.provider.value(), 0u);
  EXPECT_EQ(c.fleet().model(rt.model).name, "A100");
  EXPECT_EQ(rt.cpu.value(), 32'000) << "defaults: 8 cores and 64 GiB a GPU";
  EXPECT_GT(rt.gpu_memory.value(), 0) << "the model's memory";
  ASSERT_TRUE(c.MergeOffers(ProviderId{0}, {stated("rt", "west", 4, 4.5)}).ok());
  EXPECT_EQ(c.fleet().offers.size(), 2u) << "updated, not added";
  EXPECT_EQ(c.fleet().offers[1].price_per_hour.value(), UsdToMicro(4.5).value());
  const struct {
    Controller::StatedOffer offer;
    std::string error;
  } bad[] = {
      {stated("x", "east", 4, 1), "offer 'x': site 'east' is not in the fleet"},
      {stated("rt", "west", 8, 1), "offer 'rt': its shape (site, model, GPUs) may not change"},
      {stated("file-offer", "west", 8, 1), "offer 'file-offer': already an offer of provider 'other'"},
  };
  for (const auto& b : bad) {
    const Status s = c.MergeOffers(ProviderId{0}, {b.offer});
    EXPECT_NE(s.message().find(b.error), std::string::npos) << s.message();
  }
  EXPECT_EQ(c.fleet().offers.size(), 2u);
}

}  // namespace
}  // namespace gp
