// ClusterState: the single owner of jobs and of the scheduler's view of nodes, for the live
// server and the simulator alike. It is the only code that changes a job's state: it queues
// jobs, runs a scheduling pass and applies the plan (Allocate re-checks every node), starts,
// ends, fails over, requeues (with backoff and a retry limit) and cancels them, keeps each job's
// attained service (GPU-time run, for `las`), and tells its listener of every change as a typed
// event. The controller is the I/O around it (journal, agents, API, wall clock); the simulator's
// engine is a virtual clock and a trace around it. Same inputs, same events.
//
// No clock, no I/O: every call that needs the time is given `now`. Not thread-safe; one owner.
#pragma once

#include <absl/container/btree_set.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <tuple>
#include <vector>

#include "core/rng.h"
#include "sched/queue.h"
#include "sched/registry.h"
#include "sched/schedule.h"
#include "state/records.h"

namespace gp {

enum class NeverFits : uint8_t {
  kWait,    // the live pool: the fleet may grow; the job waits, saying why
  kRefuse,  // the simulator: the fleet is fixed; the job fails at once
};

struct ClusterOptions {
  uint64_t seed = 1;
  int max_retries = 3;          // failovers per job, unless the job says otherwise
  Millis backoff{1'000};        // before the 2nd retry; doubles each time, at most backoff_max
  Millis backoff_max{60'000};
  NeverFits never = NeverFits::kWait;
  // Placements per pass at most (0: no limit); a capped pass says `more` and the owner passes
  // again (the live server, so that one turn of its loop stays short).
  size_t max_placements_per_pass = 0;
  // A preempted job's grace between SIGTERM and SIGKILL, to checkpoint (-1: the agent's own).
  int preempt_grace_ms = -1;
  // A waiting job whose search for victims found none is searched again after this long (or
  // at once when a pass judges its class afresh).
  Millis preempt_retry{1'000};
};

// What the owner hears of: each change of a job (the event type: "submitted", "placed",
// "started", "failing_over", "requeued", "succeeded", "failed", "cancelled"), and each task it
// must stop on its node (the live pool asks the agent; the simulator ends it at once).
class ClusterListener {
 public:
  virtual ~ClusterListener() = default;
  virtual void JobChanged(const JobRecord& job, std::string_view what) = 0;
  // Stop the task. Return true when it was never handed to its node (it ends here, now).
  virtual bool StopTask(const JobRecord& job, int task, int grace_ms) = 0;
  // An attempt whose tasks all ran has ended at `now` (it held its GPUs from job.start_ms):
  // what it used, for the owner's usage records.
  virtual void AttemptUsed(const JobRecord& job, Millis now) {
    (void)job;
    (void)now;
  }
};

class ClusterState {
 public:
  ClusterState(const Fleet& fleet, Policy policy, ClusterOptions options, ClusterListener& listener);

  // --- nodes (the scheduler's view; identities and agents are the owner's) ---
  SchedState& sched() { return sched_; }
  const SchedState& sched() const { return sched_; }
  const Policy& policy() const { return policy_; }
  // The task attempts placed on the node that have not ended.
  // Live work's indexes are B-trees (about 10 bytes an entry, not std::set's 48: at 100,000
  // jobs that is 4 MB, not 19). Their iterators do not survive a change to the set: a caller
  // that changes the state while walking one copies it first.
  using IdSet = absl::btree_set<uint64_t>;
  using TaskSet = absl::btree_set<TaskKey>;
  const TaskSet& TasksOn(NodeId node) const;

  // --- jobs ---
  uint64_t next_id() const { return next_id_; }
  // Admission: the job's spec is in the scheduler's range and, on a fixed fleet
  // (NeverFits::kRefuse), some node class could ever hold it (FitsFleet, O(node classes)); the
  // error names the field or says why it never fits. A live pool's fleet may grow: there a job
  // that does not fit yet waits, with the reason.
  Status Admit(const JobSpec& spec) const;
  // A job submitted without a priority gets its tenant's default priority class. Then its time
  // limit: a job without one gets its tenant's default, else its priority class's, else the
  // smaller maximum; one above its tenant's or its class's maximum is refused, naming it.
  // Before Admit, on the spec to be stored.
  Status Limit(JobSpec& spec, bool priority_unset = false) const;
  // The priority class whose value is this priority (classes have distinct values), or nullptr.
  const PriorityClass* ClassOf(int priority) const;
  // A job enters the queue (its id set: next_id() for a new one). Emits nothing: the owner
  // emits "submitted" before it stores the job, and calls this once it is stored.
  void Accept(JobRecord job);
  // A stored job on recovery: queued, failing over or placed (its allocations held again; a
  // task whose node is gone or full is marked lost). `node_of` maps a task's node name.
  void Restore(JobRecord job, const std::function<std::optional<NodeId>(const std::string&)>& node_of);
  const JobRecord* Find(JobId id) const;
  JobRecord* Find(JobId id);
  // Job arrays: the id of the element of `array` with `index` (it may not be expanded yet:
  // Find says), or nullopt when the job is no array or has no such index.
  std::optional<JobId> ElementId(JobId array, int64_t index) const;
  // Dependencies (Slurm's --dependency): every job named exists (an error naming the first that
  // does not). A queued job whose dependencies are not met yet is held out of the queue (its
  // message says for what); once they are it joins the queue; once they can no longer be it
  // ends, cancelled, saying why. Releases are judged at the start of each Pass.
  Status CheckDependencies(const JobRecord& job) const;
  bool held(JobId id) const { return held_.count(id.value()) > 0; }
  // Cancels one element of an array, with a record or not yet expanded (then it never is).
  Status CancelElement(JobId array, int64_t index, Millis now);
  // After Restore of every stored job: each array counts its elements again (O(jobs), once).
  void RecountArrays();
  // How many queued elements of one array have records at once (the rest wait unexpanded).
  static constexpr int64_t kArrayWindow = 16'384;
  const std::map<uint64_t, JobRecord>& jobs() const { return jobs_; }
  const IdSet& queued() const { return queued_; }
  // Jobs not yet ended (queued, starting, running), by id: what a listing of live work walks.
  const IdSet& unfinished() const { return unfinished_; }
  // The stand-in decision of a waiting job (its shape's), or nullptr when no pass has judged it.
  const Decision* DecisionOf(JobId id) const { return queue_.DecisionOf(id); }
  // What to say of the job: for a waiting job its class's reason ("waiting: GPUs: asked 8,
  // free 2 of 8"), kept once per class (O(1) a pass, however many jobs wait); else its own.
  std::string_view MessageOf(const JobRecord& j) const;
  // A reason in words, for the job; a quota's with every number of its tenant and cohort.
  std::string Describe(const Reason& r, const JobRecord& j) const;

  // --- tenants ---
  // Every tenant's weight, cohort, quotas and own queue order at once (a tenant not named has
  // no quota, weight 1); what waits is keyed and judged again. Errors name the tenant and field;
  // nothing changes on error.
  Status ConfigureTenants(const std::vector<TenantConfig>& tenants);
  const TenantBook& tenants() const { return sched_.tenants(); }
  // A tenant's decayed usage as stored (on recovery), and every tenant's brought to `now`.
  void RestoreDecayed(const std::string& tenant, double gpu_ms, Millis as_of) {
    sched_.tenants().RestoreDecayed(sched_.tenants().Intern(tenant), gpu_ms, as_of);
  }
  void AdvanceTenants(Millis now) { sched_.tenants().AdvanceTo(now); }
  // Fair share's half-life for decayed usage.
  void set_half_life(Millis h) { sched_.tenants().set_half_life(h); }

  // --- the pass ---
  struct PassResult {
    bool ran = false;                // false: no waiting job was looked at
    std::vector<JobId> placed;       // applied (every node re-checked), in plan order
    std::vector<JobId> refused;      // never fit (NeverFits::kRefuse)
    size_t looked_at = 0;            // jobs the pass took from the queue
    bool waiting_on_backoff = false; // some job waits for its backoff: call again later
    bool more = false;               // capped (max_placements_per_pass): pass again soon
    // What placing each job changed, to Unplace it: its message and start before.
    struct Undo {
      JobId job;
      std::string message;
      int64_t start_ms = 0;
    };
    std::vector<Undo> undo;
    // Jobs preempted in this pass (they are stopping; the simulator's have stopped and wait
    // again), and the jobs they make room for.
    std::vector<JobId> preempted;
    std::vector<JobId> preempted_by;  // each one's preemptor, in the same order
    std::vector<JobId> preemptors;
    std::vector<Reservation> reservations;  // backfill's, made by this pass
  };
  // Jobs whose backoff has ended join the queue; one Schedule() over it; the plan applied.
  // Cheap to call often: classes blocked since they last failed are not looked at until a
  // node they may use improves.
  PassResult Pass(Millis now);
  // A pass's placements that the owner could not store: back to the queue as they were.
  void Unplace(const PassResult& pass);
  // What would become of a job with `spec` submitted now, nothing changed (a dry run): where
  // the pass would place it (nullopt: nowhere now) and every node's judgement. O(nodes).
  struct DryRunResult {
    std::optional<std::vector<TaskAllocation>> tasks;
    Decision decision;
  };
  Result<DryRunResult> DryRun(const JobSpec& spec) const;
  // Every node judged for a waiting job, as the state stands now (O(nodes): for `explain`);
  // nullopt when the job is not waiting.
  std::optional<Decision> ExplainQueued(JobId id) const;

  // --- a job's life ---
  // A task reported running (at `started`); all running: the job is.
  void TaskStarted(JobRecord& j, int task, Millis started, Millis now);
  // A task ended with a code or a signal (neither: lost), `why` when it did not run its course.
  // A failure stops the rest of a gang; the job ends when every task has.
  void TaskEnded(JobRecord& j, int task, std::optional<int> code, std::optional<int> signal, const std::string& why,
                 Millis now);
  // The current attempt failed through no fault of the job's: stop its tasks and requeue it
  // (whole) once every task has ended and `fence_until` has passed. `counts`: against the retry
  // limit (an eviction does not). `grace_ms` < 0: the agent's own grace.
  void FailOver(JobRecord& j, const std::string& why, Millis fence_until, bool counts, int grace_ms, Millis now);
  // Jobs that preempted others and wait for them to stop, with what is held for each.
  struct Nomination {
    std::vector<TaskAllocation> tasks;
    std::vector<JobId> victims;
    Millis at{0};
  };
  const std::map<uint64_t, Nomination>& nominated() const { return nominated_; }
  // A nomination as stored (the owner keeps one per job that preempted), after Restore of every
  // job: the job waits for its victims again, holding what it was promised. Refused (and the
  // job waits in the queue as any other) when the job no longer waits, a node is unknown, or a
  // victim was not stored as stopping (a crash came between the two writes).
  Status RestoreNomination(JobId id, const std::vector<std::pair<std::string, TaskAllocation>>& tasks,
                           const std::vector<JobId>& victims,
                           const std::function<std::optional<NodeId>(const std::string&)>& node_of);
  // Backfill: the reservations of the last pass (where and when each job expects to start).
  const Reservation* ReservationOf(JobId id) const {
    auto it = reservations_.find(id.value());
    return it == reservations_.end() ? nullptr : &it->second;
  }
  // The task was lost (its lease ran out, its agent no longer runs it): fail over, then end it.
  void TaskLost(JobRecord& j, int task, const std::string& why, const std::string& how, Millis now);
  // Jobs failing over whose tasks have all ended (those on down nodes end here: their leases
  // ran out) and whose fence has passed go back to the queue, or give up past the limit.
  void RequeueReady(Millis now);
  Status Cancel(JobId id, Millis now);
  // Every job with a task on the node (on GPU `gpu` only, when >= 0) fails over.
  void FailJobsOn(NodeId node, int gpu, const std::string& why, Millis fence_until, bool counts, int grace_ms,
                  Millis now);

  // Running jobs past their time limit are stopped (SIGTERM, SIGKILL after the grace) and end
  // as timed out. O(log jobs with a limit) per job stopped; the owner calls it every tick.
  void EnforceTimeLimits(Millis now);

  // Jobs changed since the last call (to store), in id order.
  std::vector<uint64_t> TakeChanged();
  int64_t placed_total() const { return placed_total_; }
  int64_t failovers_total() const { return failovers_total_; }
  int64_t preemptions_total() const { return preemptions_total_; }
  // Inconsistencies found: a release the state refused (a double free), a plan's node that
  // refused its allocation, a node that passed every filter and that Allocate refused. A bug if
  // ever > 0; the last one says what it was.
  int64_t inconsistencies() const { return inconsistencies_; }
  const Status& last_inconsistency() const { return last_inconsistency_; }

 private:
  enum class Verdict { kMet, kWait, kNever };
  // Whether the job's dependencies are met now; `why` says what it waits for, or why never.
  Verdict Judge(const JobRecord& j, std::string& why) const;
  // A queued job with dependencies not met: held (true), or ended for good (true); else false.
  bool Hold(JobRecord& j, Millis now);
  // The jobs held for those that ended since the last call, judged again.
  void ReleaseDependents(Millis now);
  void Changed(const JobRecord& j, std::string_view what);
  // The job ends in `state` (terminal) at `now`, out of the queue if it waited: every end.
  void End(JobRecord& j, JobState state, Millis now);
  void TrackTask(NodeId node, const TaskKey& key);
  void Inconsistent(const Status& s);
  void Touch(const JobRecord& j) { changed_.insert(j.spec.id.value()); }
  // Compiled and queued (or failed, naming the field, at `now`).
  void Enqueue(JobRecord& j, Millis now);
  void ReleaseTask(JobRecord& j, int task, std::optional<Millis> now);
  // The tenant's books follow each allocation (+1) and release (-1) at `now` (nullopt: a
  // recovery or an undo, no time passing).
  void Charge(const JobRecord& j, const TaskAllocation& a, int sign, std::optional<Millis> now);
  // The tenant the scheduler sees a job as: its own under a share order or a quota, else 0.
  TenantIndex SchedTenant(const std::string& tenant);
  // The same for a tenant already known (0 for one never seen), without interning it.
  TenantIndex SchedTenantOf(const std::string& tenant) const;
  void Requeue(JobRecord& j, Millis now);
  // Stops the current attempt (every task, with the grace) and requeues it once all have ended.
  void StopAttempt(JobRecord& j, std::string message, std::string_view event, Millis fence_until, bool counts, int grace_ms,
                   Millis now);
  // The job holds these allocations now (made with sched_.Allocate): it is placed.
  void Place(JobRecord& j, const std::vector<TaskAllocation>& tasks, Millis now, PassResult& out);
  // Jobs that preempted and whose victims have all stopped start where they were promised.
  void SettleNominations(Millis now, PassResult& out);
  // Waiting jobs that the pass could not place look for victims (policy.preemption).
  void Preempt(const Plan& plan, Millis now, PassResult& out);
  // A priority class's preemption settings for a job (by its priority's value).
  RunningJob RunningOf(const JobRecord& j, Millis since) const;
  void FinishIfDone(JobRecord& j, Millis now);
  void StopTask(JobRecord& j, int task, int grace_ms, Millis now);
  void AddAttained(JobRecord& j, Millis now);
  // A running job with a time limit is watched for its deadline.
  void Watch(const JobRecord& j);
  void ApplyDecisions(const Plan& plan, Millis now, PassResult& out);
  // Arrays: records for the elements the scheduler may consider now (within max_running and
  // the window); an element's change counted by its array, whose state follows its elements.
  bool Expand(Millis now);  // true: it stopped at the pass's cap with more to expand
  void CountElement(JobRecord& e, int64_t at_ms);
  void FollowElements(JobRecord& a, int64_t at_ms);
  Status CancelArray(JobRecord& a, Millis now);

  Policy policy_;
  ClusterOptions options_;
  ClusterListener& listener_;
  SplitMix64 rng_;
  SchedState sched_;
  JobQueue queue_;
  std::map<uint64_t, JobRecord> jobs_;  // by id: ordered, so listings are stable
  IdSet queued_;                        // state kQueued (in the queue, or waiting for backoff)
  IdSet held_;                          // queued, held until their dependencies are met
  std::unordered_map<uint64_t, std::vector<uint64_t>> dependents_;  // job -> held jobs that wait for it
  std::map<std::pair<std::string, std::string>, std::set<uint64_t>> singletons_;  // (tenant, name) -> held singletons
  std::vector<uint64_t> ended_with_dependents_;  // ended since the last ReleaseDependents
  std::set<std::pair<int64_t, uint64_t>> backoff_;  // (not before, job): queued, not yet placeable
  std::set<uint64_t> failing_;          // failing_over
  std::set<std::tuple<int64_t, uint64_t, int>> deadlines_;  // (time limit reached at, job, attempt)
  IdSet unfinished_;                    // not terminal
  std::set<uint64_t> arrays_;           // arrays with elements not yet expanded
  std::vector<TaskSet> on_node_;
  std::set<uint64_t> changed_;
  std::unordered_map<int64_t, std::string> class_message_;
  std::map<std::string, std::unique_ptr<QueueOrder>> tenant_orders_;
  std::map<uint64_t, Nomination> nominated_;
  std::map<uint64_t, Reservation> reservations_;
  std::unordered_map<uint64_t, int64_t> preempt_tried_;  // job -> when its last search found no victims
  uint64_t next_id_ = 1;
  size_t models_seen_ = 0;  // the fleet's GPU models when the queue was last compiled
  int64_t placed_total_ = 0;
  int64_t failovers_total_ = 0;
  int64_t preemptions_total_ = 0;
  int64_t inconsistencies_ = 0;
  Status last_inconsistency_;
};

// A job event's data as the live pool stores it and `gpupool sim --events` writes it (the
// fields of docs/events.md): id, name, tenant, state, attempt, shape, message, exit code, and
// where each task runs.
std::string JobEventData(const JobRecord& j, std::string_view what);

}  // namespace gp
