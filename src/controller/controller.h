// The controller: the I/O around the live pool's ClusterState. The cluster state owns jobs and
// the scheduler's view of nodes and is the only code that changes a job (the simulator runs the
// same one); the controller gives it the wall clock, stores what it changed (durably, before
// acknowledging or handing any task to an agent), keeps the node registry (identities,
// credentials, liveness, GPU health), hands placements to agents through their heartbeats and
// turns their reports into calls on the cluster state.
//
// Files: controller.cc (jobs, the loop, storage, explain), controller_nodes.cc (the node
// registry and agents' heartbeats), controller_gpus.cc (GPU health), controller_metrics.cc;
// launch preparation is a pure function (launch.h); file I/O is behind LogStore and
// CheckpointStore (stores.h).
//
// Threading: every method runs on the server's one event-loop thread; nothing here locks.
#pragma once

#include <absl/container/btree_map.h>

#include <array>
#include <deque>
#include <set>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/fleet.h"
#include "core/rng.h"
#include "sched/registry.h"
#include "health/failure_detector.h"
#include "observe/metrics.h"
#include "controller/access.h"
#include "controller/launch.h"
#include "controller/stores.h"
#include "sched/schedule.h"
#include "state/cluster_state.h"
#include "state/journal.h"
#include "state/records.h"
#include "wire/codec.h"

namespace gp {

struct ControllerOptions {
  std::string policy = "balanced";
  uint64_t seed = 1;
  std::filesystem::path log_dir;       // job logs: log_dir/JOB/task-N.{stdout,stderr}
  PhiOptions detector;                 // when a silent node is suspect, then down
  // An attempt's lease: its agent renews it with every heartbeat, and a task whose lease runs
  // out stops itself (agent/supervisor). A job on a dead node is placed again only after that.
  Millis lease{1'800};
  int max_retries = 3;                 // failovers per job, unless the job says otherwise
  Millis backoff{1'000};               // before the 2nd retry; doubles each time, at most 60 s
  // Every attempt of job J gets GPUPOOL_CHECKPOINT_DIR=checkpoint_root/J, the same directory
  // each time, so a job that checkpoints there resumes where it left off after a failover.
  // It must be storage every node sees (shared). Empty: the pool carries checkpoints itself:
  // each task checkpoints to a directory on its node, which its agent ships to the server
  // (kept under checkpoint_store) and unpacks on the next attempt's node before it starts.
  std::filesystem::path checkpoint_root;
  std::filesystem::path checkpoint_store;
  // The health check of a quarantined GPU: once it has reported telemetry for this long with
  // no new XID and no rise in uncorrected ECC errors, its agent runs an active self-test on it
  // (agent/selftest.h); a pass returns it to service, a failure starts its probation again.
  // Zero: only `gpupool gpu undrain` brings it back.
  Millis gpu_probation{600'000};
  // A node.telemetry event per node this often (host and GPU samples); zero: none.
  Millis telemetry_events{0};
  // How many events the store keeps (older ones are deleted, never one a sink has not
  // delivered); zero: all.
  uint64_t events_retain = 1'000'000;
  // The largest carried checkpoint, for both sides: the server refuses a bigger upload, and
  // agents learn the limit at registration and refuse to pack one past it.
  int64_t checkpoint_max_bytes = int64_t{1} << 30;
  // A gap this long between two ticks means the server itself stalled (a slow disk, a swapped
  // process): the silence of that gap is the server's, not the nodes', and is not counted.
  // Zero: off (a manual clock's jumps are not stalls).
  Millis stall{0};
  // Fair share: the half-life of each tenant's decayed GPU usage.
  Millis fair_share_half_life{7LL * 24 * 3'600'000};
  // A preempted job's grace between SIGTERM and SIGKILL (-1: the agent's own).
  int preempt_grace_ms = -1;
  // Heartbeats: an idle agent's interval is at least `heartbeat_base`, and grows with the fleet
  // so that all nodes together send about `heartbeat_rate` per second (as Nomad sizes its
  // heartbeat TTLs), but never past the lease less `heartbeat_margin` (each answer renews the
  // tasks' leases) nor past `heartbeat_max`.
  Millis heartbeat_base{500};
  int64_t heartbeat_rate = 10'000;
  Millis heartbeat_margin{800};
  Millis heartbeat_max{2'000};
  // Placements per pass at most, so that one turn of the loop stays short under a storm (the
  // rest follow in the next pass, queued behind what arrived meanwhile); 0: no limit.
  size_t max_placements_per_pass = 512;
  // Absolute directories a job may name as its workdir (and those below them); none by default:
  // a job runs in its task's own directory, and a relative workdir is inside it.
  std::vector<std::filesystem::path> allow_workdir;
  // Seals a submitted job's secrets, and opens them for a task's environment (the server's
  // SecretBox); none: jobs with secrets are refused.
  std::function<std::string(std::string_view)> seal_secret;
  std::function<Result<std::string>(std::string_view)> open_secret;
  // The leadership this controller works in (with several servers on etcd: the leader key's
  // create revision; 0: one server). Every answer to an agent carries it, and an agent acts on
  // no answer from an older one.
  uint64_t epoch = 0;
};

struct JobFilter {
  std::optional<JobState> state;
  std::string tenant;
  std::string node;
  size_t limit = 1000;
  uint64_t before = 0;  // paging cursor: only jobs with ids below this (0: from the newest)
  bool expand = false;  // arrays' elements each on their own (else an array is one entry)
  uint64_t array = 0;   // only this array's elements (those with records)
};

// Per-GPU texts that are nearly always empty (why a GPU is out of service, its last self-test):
// kept only for the GPUs that have one, not 16 strings for every node.
class GpuTexts {
 public:
  const std::string& operator[](size_t gpu) const;
  void set(size_t gpu, std::string text);  // "" removes it
  size_t count() const { return texts_.size(); }

 private:
  std::vector<std::pair<size_t, std::string>> texts_;
};

class Controller {
 public:
  // `base` gives providers, sites, links and prices; nodes join as agents register.
  Controller(Fleet base, Journal& journal, const Clock& clock, ControllerOptions options, Policy policy);

  // Reloads every job and node from the journal; running jobs wait for their agents to report.
  Status Recover();

  // --- the API ---
  // Validates, stores durably, queues. The returned id is acknowledged. For a journal that
  // answers at once (MemoryJournal: tests); the server uses SubmitStaged.
  Result<JobId> Submit(JobRecord request);
  // Group commit: validates and stages the submission (an error answers `done` at once). The
  // staged submissions are stored together by CommitSubmits, in one transaction with one fsync,
  // and each `done` gets its id only once that write is durable (or why it failed).
  void SubmitStaged(JobRecord request, std::function<void(Result<JobId>)> done);
  void CommitSubmits();
  // Called when a batch starts (its first submission is staged): the API commits at the end of
  // the loop turn, so every submission that arrived in that turn shares the write.
  std::function<void()> on_staged;
  // Runs a function on the loop's thread, later (the journal's writer thread hands back its
  // outcomes through it). Unset: the journal must answer at once (MemoryJournal does).
  std::function<void(std::function<void()>)> defer;
  const JobRecord* FindJob(JobId id) const;
  // "17" or an array element "17_42" (array 17, index 42): the job id it names. An element may
  // have no record yet (not expanded: FindJob says nullptr, PendingElement describes it).
  Result<JobId> ResolveJob(std::string_view text) const;
  // An array element without a record: its array's view of it (queued or cancelled), or
  // nullopt when `id` is no such element.
  std::optional<JobRecord> PendingElement(JobId id) const;
  // What the API says of a job: a waiting job's reason (its class's), else its own message.
  std::string_view MessageOf(const JobRecord& j) const { return cluster_.MessageOf(j); }
  std::vector<const JobRecord*> ListJobs(const JobFilter& f) const;
  Status Cancel(JobId id);
  Status SetDraining(const std::string& node, bool draining);
  // Drain and move the node's running jobs elsewhere: their tasks get SIGTERM (then SIGKILL
  // after the agent's grace) and the jobs go back to the queue. Not counted as failures.
  Status Evict(const std::string& node);
  // A provider reclaims the node (spot capacity) with `notice`: it is drained, and its jobs get
  // SIGTERM with the notice as their grace (time to checkpoint), then move elsewhere.
  Status Reclaim(const std::string& node, Millis notice);
  // A GPU error reported for (or injected on) a GPU, classified by health/gpu_health.h: a fault
  // of the GPU quarantines that GPU alone and moves its jobs elsewhere.
  Result<std::string> GpuXid(const std::string& node, int gpu, int xid);
  Status UndrainGpu(const std::string& node, int gpu);
  // Asks the GPU's agent to self-test it now (quarantined GPUs only: a test must not share the
  // GPU with a job); a pass returns it to service.
  Status CheckGpu(const std::string& node, int gpu);
  // A task's checkpoint archive from its agent. Only the job's current attempt may write it
  // (an attempt the server has given up on is fenced off); stored whole (written, then renamed).
  // `node` is the caller's own node (its credential said so); `archive` a file the server holds,
  // moved into the store (renamed), never copied through memory.
  Status StoreCheckpoint(const std::string& node, JobId id, int task, int attempt, const std::filesystem::path& archive);
  // Whether `node` may fetch the checkpoint: only the node that runs the job's current attempt
  // of that task (the one about to restore it).
  Status MayFetchCheckpoint(const std::string& node, JobId id, int task) const;
  std::filesystem::path CheckpointPath(JobId id, int task) const;
  const NodeRecord* FindNode(const std::string& name) const;
  std::vector<std::string> NodeNames() const;
  // Node names in order, from after `after` (exclusive; "" from the first), at most `limit`,
  // only those of `provider` and `site` when given: O(log nodes + what is looked at).
  std::vector<std::string> NodeNames(const std::string& provider, const std::string& site, const std::string& after,
                                     size_t limit) const;
  // The fleet by provider and site, as the dashboard shows it before a group is opened: per
  // group its nodes by condition, GPUs, free GPUs, mean GPU utilisation and models, as JSON.
  // O(nodes) (the records are read, nothing is serialised per node).
  std::string NodeGroupsJson() const;
  std::string NodeJson(const std::string& name) const;
  // Why a job waits: the last pass's decision, per reason with node counts and numbers.
  std::string Explain(JobId id) const;
  // A submission checked as a real one is, and where it would land now, without storing it
  // (POST /v1/jobs?dry_run=1, `gpupool run --dry-run`): {"dry_run", "job", "placement", "explain"}.
  Result<std::string> DryRun(JobRecord r);
  // The offer an acquired node was bought from (the autoscaler says so when it joins): its
  // price and billing are the node's in usage records. Stored with the node.
  Status SetNodeOffer(const std::string& node, const std::string& offer);
  // The node was given back to its provider (the autoscaler released it): it leaves the
  // listings, groups and counts, and its silence is no longer a failure. Stored. An agent that
  // registers under the name again brings it back.
  Status NodeReleased(const std::string& node);
  // GPU-milliseconds jobs have used on `node` since this server started (the autoscaler's
  // idle time of a node is its billed time less this, over the node's life).
  int64_t UsedGpuMs(const std::string& node) const;
  // What each tenant holds and waits with now: GPUs in use by model (a share of a GPU counts
  // as its part), jobs running (or starting) and queued. O(unfinished jobs).
  struct TenantUse {
    std::map<std::string, double> gpus;  // model -> GPUs in use
    int running = 0;
    int queued = 0;
  };
  std::map<std::string, TenantUse> TenantsInUse() const;
  // Usage records not yet written are written (every tick); the totals since a time.
  void FlushUsage();
  void AddUsage(UsageRecord r) { usage_pending_.push_back(std::move(r)); }
  Result<std::vector<UsageTotal>> UsageTotals(int64_t since_ms, const std::vector<std::string>& by);
  // What a waiting job waits for from the autoscaler (set by it; "" when nothing).
  std::function<std::string(JobId)> explain_capacity;
  const Fleet& fleet() const { return fleet_; }
  // The injected clock's time (the wall clock in the server): what the Api and the autoscaler
  // date tokens, usage and records with.
  Millis Now() const { return clock_.Now(); }
  // Tenants and their tokens (loaded from the store by Recover).
  // Whether the scheduler would take these tenants (cohort names, queue orders), changing nothing.
  Status CheckTenants(const std::vector<TenantConfig>& tenants) const;
  // The access records' tenants (quotas, cohorts, weights, orders) applied to the scheduler.
  Status ApplyTenants();
  // Each tenant's decayed usage into the store (every minute, and when the server stops).
  void SaveDecayedUsage(Millis now);
  // For explain: the tenant's quota and use per model, weight, decayed usage and rank ("" none).
  std::string TenantStanding(const std::string& tenant) const;
  const TenantBook& tenant_book() const { return cluster_.tenants(); }
  Access& access() { return access_; }
  const Access& access() const { return access_; }
  // Offers provider `provider` states at run time (its `offers` verb; adapters/provisioner.h
  // ProviderOffer, passed here field by field as an Offer and names): an offer of a known name
  // is updated (price, availability, limits, boot and billing), a new one is added (offers are
  // never removed: claims refer to them by position). Its site must be in the fleet; the
  // error names the offer and the field.
  struct StatedOffer {
    Offer offer;  // provider, site and model unset: from the names below
    std::string site;
    std::string gpu_model;
  };
  Status MergeOffers(ProviderId provider, const std::vector<StatedOffer>& offers);
  size_t node_count() const { return nodes_.size(); }  // registered, down ones too

  // --- for acquiring capacity (controller/autoscaler.h) ---
  // Queued jobs a pass has looked at and could not place, not waiting out a backoff: what new
  // capacity could take. O(queued).
  std::vector<const JobRecord*> WaitingForCapacity() const;
  // Nodes acquired for a claim: name, claim, whether any task runs there, whether it is down.
  struct ClaimedNode {
    std::string name;
    std::string claim;
    bool busy = false;
    bool down = false;
    bool draining = false;
  };
  std::vector<ClaimedNode> ClaimedNodes() const;
  // An event of another part of the server (the autoscaler's), stored with the next write.
  void Announce(std::string type, std::string subject, std::string data);
  const Policy& policy() const { return cluster_.policy(); }
  Millis lease() const { return options_.lease; }
  uint64_t epoch() const { return options_.epoch; }
  // Seals the secrets of a submission just parsed (their values as given): refused when this
  // server keeps no secrets key.
  Status SealSecrets(JobRecord& r) const;
  // The idle heartbeat interval for the fleet's size now (ControllerOptions::heartbeat_*); O(1).
  Millis heartbeat_interval() const;
  // The API holds this node's heartbeat (queued, or a long poll): it is waiting on the server,
  // not silent. `arrived`: it has just come in (the node spoke now).
  // A held heartbeat that will not be handled (its connection ended): from now on the node's
  // silence is its own again.
  void HoldReleased(const std::string& node);
  void HoldingHeartbeat(const std::string& node, bool arrived = false);
  std::filesystem::path LogPath(JobId id, int task, std::string_view stream) const;

  // --- agents ---
  // Registration with the join token. A new name gets a credential of its own (returned once;
  // the server keeps its hash). A known name is given back only to the agent that proves it is
  // that node (its stored credential), or taken over when the node is down; a second agent
  // with a live node's name is refused with an error naming both.
  struct Registration {
    std::string node;
    std::string credential;  // new: the agent stores it; empty: keep the one you have
  };
  Result<Registration> Register(const RegisterRequest& r);
  // The node whose credential this is; nullopt when it is nobody's.
  std::optional<std::string> NodeOfCredential(std::string_view credential) const;
  // Client certificates (mutual TLS). The server signs them (the API); the controller keeps
  // which are in force for each node (NodeRecord::cert_serials), in the store.
  Status RecordNodeCertificate(const std::string& node, const std::string& serial);
  // "" when the certificate `serial` is one of `node`'s in force, else why not. The first use
  // of the newest retires the one before it (a rotation is over).
  std::string NodeCertificateRefused(const std::string& node, const std::string& serial);
  // Revokes every certificate of the node (an event names who did it); the agent must register
  // again, with the join token and its credential, for a new one.
  Status RevokeNodeCertificates(const std::string& node);
  // Applies the agent's news and returns what it should start and stop now. The API has checked
  // that the caller's credential is h.node's; reports about other nodes' attempts are ignored.
  Result<HeartbeatReply> Heartbeat(const gp::Heartbeat& h);
  // Group commit for agents' news, as for submissions: applied at once, stored with the other
  // heartbeats of this loop turn (CommitHeartbeats, one write), and each `done` answered once
  // that write is durable: an agent never hears its report acknowledged before it is stored.
  // on_staged is called when a batch starts. Heartbeat() is both at once.
  void HeartbeatStaged(const gp::Heartbeat& h, std::function<void(Result<HeartbeatReply>)> done);
  void CommitHeartbeats();
  int64_t checkpoint_max_bytes() const { return options_.checkpoint_max_bytes; }
  bool HasWork(const std::string& node) const;
  // What the node should start and stop now (its outbox, emptied).
  HeartbeatReply TakeWork(const std::string& node);

  // --- the loop ---
  // Marks silent nodes down, requeues what failed over, and runs a pass (which looks only at
  // what something changed for).
  void Tick();
  // What a request that changed something needs at once: requeues whose fence passed, then a
  // pass, without judging every node's liveness (the periodic Tick does that).
  void Schedule();
  // Called (on the loop thread) when a node's outbox gets work, so a parked heartbeat can answer.
  std::function<void(const std::string& node)> on_work;
  // Whether the node's next heartbeat has reached the server and waits unread (its bytes in the
  // connection's buffer): a node that looks silent only because the server's loop is behind in
  // reading is not declared down. Unset: no such knowledge (a silent node is down).
  std::function<bool(const std::string& node)> node_speaking;
  // Called when a pass stopped at its cap with more to place: run Schedule again soon.
  std::function<void()> on_more;

  struct Stats {
    int64_t passes = 0;
    int64_t placed = 0;             // the cluster state's counts, filled in by stats()
    int64_t failovers = 0;
    int64_t stalls = 0;             // ticks after which the server forgave a stall of its own
    int64_t unheard = 0;            // nodes found silent whose next heartbeat waited unread: not declared down
    int64_t log_bytes_dropped = 0;  // output agents dropped (jobs writing faster than shipping)
    int64_t inconsistencies = 0;    // releases the scheduling state refused (a bug if ever > 0)
    int64_t submit_commits = 0;     // writes that stored submissions (each one or more of them)
  };
  // Ok, or why the store failed (then Submit refuses and no pass runs).
  const Status& store_error() const { return store_error_; }
  std::function<void(const Status&)> on_store_error;
  // Called after each scheduling pass with its wall time (the decision latency), the jobs it
  // looked at (a class that stays blocked is not looked at) and the jobs it placed.
  std::function<void(double seconds, size_t looked_at, size_t placed)> on_pass;
  // Called when a node is declared down, with the silence that it took (the detection time).
  std::function<void(const std::string& node, double seconds)> on_down;
  // A node acquired from a provider registered, carrying its claim (Register).
  std::function<void(const std::string& node, const std::string& claim)> on_joined;
  // The loop itself stalled this long between two ticks (nobody was blamed for the silence).
  std::function<void(int64_t gap_ms)> on_stall;
  // The fleet's and the scheduler's series as they stand (docs/observability.md): per-GPU
  // DCGM series and node load for every node, jobs by state, nodes by state, the queue by
  // tenant and wait reason, and counters. Cost: O(nodes x GPUs + live jobs + finished jobs).
  // The fleet's and the scheduler's series (a few dozen), and apart from them, written as text,
  // every node's and GPU's (O(nodes x GPUs): 10,000 nodes of 8 GPUs are 550,000 lines).
  void CollectMetrics(Families& out) const;
  // `gpus`: with every GPU's series too (else only the nodes'; gpupool_metrics_gpu_series says which).
  void WriteNodeMetrics(std::string& text, bool gpus = true) const;

  // --- events (docs/events.md) ---
  // Stored events after `after`, oldest first (what GET /v1/events and the sinks deliver).
  Result<Events> EventsAfter(uint64_t after, size_t limit) const { return journal_.EventsAfter(after, limit); }
  uint64_t last_event_seq() const { return next_event_seq_ - 1; }
  // The oldest event still stored (events before it were pruned; 1 when none were).
  uint64_t first_event_seq() const { return first_event_seq_; }
  // The lowest number every sink has delivered up to (pruning stops there); unset: no sinks.
  std::function<uint64_t()> sinks_delivered;
  // Writes the events that no state change has carried yet (a node turning suspect changes
  // nothing durable). The API calls it after every request and tick.
  void FlushEvents();
  // Who makes the changes now: the API sets it around a user's request ({"kind": "admin"}, or a
  // tenant's token: its tenant, id, name and role; never a secret), "" for the pool's own. Every
  // event emitted meanwhile carries it as "actor" (an audit trail: `gpupool events --actor`).
  void set_actor(std::string actor) { actor_ = std::move(actor); }
  // An event about a change made outside the cluster state (tenants, tokens), stored with the
  // next write (the API flushes after every request).
  void Emit(std::string type, std::string subject, std::string data);
  std::function<void()> on_events;  // new events are in the store

  // What a node's detector says now ("ready", "suspect", "down", "draining").
  std::string NodeCondition(const std::string& name) const;
  Stats stats() const;

 private:
  // What the cluster state tells the controller: each job change becomes an event (and a
  // finished job's carried checkpoints are discarded); each task to stop is taken back from
  // its node's outbox, or asked of its agent.
  void StoreNomination(const JobRecord& j);
  std::set<uint64_t> stored_nominations_;  // jobs whose preemption's hold is in the store

  class Listener final : public ClusterListener {
   public:
    explicit Listener(Controller& c) : c_(c) {}
    void JobChanged(const JobRecord& j, std::string_view what) override;
    bool StopTask(const JobRecord& j, int task, int grace_ms) override;
    void AttemptUsed(const JobRecord& j, Millis now) override;

   private:
    Controller& c_;
  };

  struct GpuFacts {
    std::array<int64_t, kMaxGpusPerNode> last_fault_ms{};   // its latest fault (probation counts from here)
    std::array<int64_t, kMaxGpusPerNode> check_asked_ms{};  // a self-test asked for, not yet answered
    std::array<int, kMaxGpusPerNode> last_xid{};            // the latest XID reported (0: none)
    // Last uncorrected ECC count seen per GPU; -1 until the first report (a baseline: errors
    // from before the agent started are history, a rise afterwards is news).
    std::array<int64_t, kMaxGpusPerNode> ecc = [] {
      std::array<int64_t, kMaxGpusPerNode> a{};
      a.fill(-1);
      return a;
    }();
  };
  struct NodeSlot {
    NodeRecord record;
    // Tasks placed here and not yet handed to the agent: their launches (command, environment)
    // are prepared when the agent takes them (TakeWork), so a storm of placements holds keys,
    // not launches.
    std::vector<TaskKey> launches;
    std::vector<TaskKey> cancels;
    std::map<TaskKey, int> cancel_grace;  // grace for particular cancels (a reclaim notice)
    std::set<TaskKey> delivered;  // launches handed to the agent, not yet seen running
    bool down = false;
    bool suspect = false;
    bool judged_down = false;  // found silent past the threshold; confirmed (or not) at the end of the turn
    PhiAccrualDetector detector;
    int64_t lease_granted_ms = 0;  // when the server last answered a heartbeat (renewing leases)
    GpuTexts quarantine;  // why each GPU is out of service ("" = in)
    GpuTexts last_check;                                    // the latest self-test's result
    std::vector<int> selftests;   // self-tests to ask for in the next reply
    // What the server remembers of the node's GPUs' faults: made when the first fact comes (an
    // XID, an ECC count, a fault, a self-test asked), so a node whose GPUs never report one
    // (simulated ones) carries a pointer, not 448 bytes.
    Box<GpuFacts> facts;
    GpuFacts& gpu_facts() { return facts.ensure(); }
    const GpuFacts& gpu_facts() const { return facts.value_or_default(); }
  };

  // What a submission must be (workdir, data site) and what the server fills in.
  Status Validate(JobRecord& r);
  struct Staged {
    JobRecord record;
    std::function<void(Result<JobId>)> done;
    std::string actor;  // who submitted it (its job.submitted event is emitted at the commit)
  };
  // Stores every job the cluster state changed since the last store, in one write with the
  // pending events.
  Status StoreChanged();
  // The cluster state's changed jobs as rows to store (and any inconsistency it found, reported).
  std::vector<std::pair<uint64_t, std::string>> TakeChangedRows();
  // The same write, made durable by the journal later (PutJobsLater); `then` runs on the loop
  // with the outcome (a failure has already stopped the server acknowledging).
  void StoreChangedLater(std::function<void(const Status&)> then);
  void OnLoop(std::function<void()> fn);  // through `defer`, or now when there is none
  void TickOnce();
  void Pass();
  // Adds an event to those the next write carries (data: a JSON object's text).
  // Runs one journal write with the pending events; they are cleared only if it succeeds.
  Status WriteWithEvents(const std::function<Status(const Events&)>& put);
  Status PersistNode(const NodeSlot& slot);
  NodeRecord Shown(const NodeSlot& slot) const;  // the record with its GPUs' health filled in
  void AskSelfTest(NodeSlot& slot, int gpu);
  void SelfTested(NodeSlot& slot, const GpuSelfTest& result);
  // What a heartbeat says of the node's GPUs: XIDs, ECC counts, self-test results, probation.
  void GpuReports(NodeSlot& slot, const gp::Heartbeat& h);
  Result<NodeId> AddOrUpdateNode(const RegisterRequest& r);
  // Puts the job's tasks not yet started in their nodes' outboxes.
  void Launch(const JobRecord& job);
  LaunchContext ContextOf(const JobRecord& job) const;  // what a launch needs beyond the job
  // The server stalled: no node is blamed for the silence it caused.
  void ForgiveStall(int64_t gap_ms);
  void NodeDown(NodeSlot& slot);
  // The nodes a tick found silent, judged again after `turns` more turns of the loop
  // (heartbeats read meanwhile count; each turn through `defer`), each declared down unless
  // its heartbeat waits unread on its connection (node_speaking).
  void ConfirmDown(std::vector<NodeId> silent, int turns);
  Status MoveJobsOff(const std::string& node, const std::string& why, int grace_ms);
  void Quarantine(NodeSlot& slot, int gpu, const std::string& why);
  // A journal write failed: from now on the controller acknowledges and places nothing (the
  // last durable state is what a restart recovers), and says why (store_error, on_store_error).
  void StoreFailed(const Status& s);
  // A state change the scheduling state refused (it would double-free): counted and reported.
  void Inconsistent(const Status& s);
  void RefreshNodeState(NodeId id);
  void FillNodeState(const NodeSlot& slot, NodeState& st) const;
  NodeSlot* SlotByName(const std::string& name);
  // The node's GPUs (index, model, memory, UUID, NVLink peers): the fleet's copy, the only one.
  const std::vector<Gpu>& GpusOf(const NodeSlot& slot) const { return fleet_.nodes[slot.record.spec.id.value()].gpus; }
  const NodeSlot* SlotByName(const std::string& name) const;

  Fleet fleet_;  // grows as nodes join; the cluster state reads node specs from it
  Journal& journal_;
  Access access_{journal_};
  std::vector<UsageRecord> usage_pending_;
  std::map<std::string, int64_t> used_gpu_ms_;  // by node
  const Clock& clock_;
  ControllerOptions options_;
  std::unique_ptr<LogStore> logs_;
  std::unique_ptr<CheckpointStore> checkpoints_;
  Listener listener_{*this};
  ClusterState cluster_;
  std::deque<NodeSlot> nodes_;          // by NodeId (a deque: no doubling of slots as the fleet grows)
  // By name (ordered: listings page by name) and by the SHA-256 of the node's credential:
  // B-trees, about half std::map's bytes an entry.
  absl::btree_map<std::string, NodeId> node_ids_;
  absl::btree_map<std::string, NodeId> by_credential_;
  int64_t last_tick_ms_ = 0;
  Stats stats_;
  int64_t inconsistencies_seen_ = 0;  // the cluster state's, already reported
  Status store_error_;
  Events pending_events_;
  uint64_t next_event_seq_ = 1;
  uint64_t first_event_seq_ = 1;
  int64_t last_telemetry_event_ms_ = 0;
  int64_t last_fairshare_saved_ms_ = 0;
  std::vector<Staged> staged_;   // submissions of this loop turn, not yet stored
  void FinishSubmits(std::vector<Staged> batch, const Status& written);
  struct Unnumber {  // what a failed write of submissions gives back
    uint64_t seq_before = 0;
    Events earlier;  // events pending before the batch, written with it
  };
  struct StagedBeat {
    std::string node;
    std::function<void(Result<HeartbeatReply>)> done;
  };
  std::vector<StagedBeat> staged_beats_;  // heartbeats of this loop turn, applied, not yet stored
  Status ApplyHeartbeat(const gp::Heartbeat& h);
  uint64_t next_submit_id_ = 1;  // ids given to staged submissions
  std::string actor_;            // set_actor
};

}  // namespace gp
