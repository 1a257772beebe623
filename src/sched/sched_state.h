// The scheduler's state of the cluster, kept current by deltas: a node joins, changes (health,
// draining, quarantine, telemetry, price), gets an allocation or gives one back, and the state
// updates that node, the free-GPU index and the cluster totals in O(1) (O(log classes) when a
// node's class changes). Nothing is rebuilt per pass. Schedule() reads it through a per-pass
// overlay and never writes it; the state owner (state/ClusterState, for the server and the
// simulator alike) applies each plan with Allocate(), which re-checks every figure.
//
// Generation numbers, as the Kubernetes scheduler cache keeps them: every change bumps the
// state's generation and stamps the node; a change that can let more work fit ("improved":
// resources freed, a node healthy again or undrained, a GPU back in service, a node joined)
// also stamps the node's GPU model, so an owner can tell whether a job that waited since
// generation g could fit now (ImprovedSince) without looking at it again.
//
// Not thread-safe; one owner.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <set>
#include <vector>

#include "core/fleet.h"
#include "core/job.h"
#include "core/status.h"
#include "sched/index.h"
#include "sched/pending.h"
#include "sched/snapshot.h"
#include "sched/tenants.h"

namespace gp {

// What FitsFleet reads of a node: the properties that do not change with use. Nodes with the
// same figures form one class, so the admission check costs O(classes), not O(nodes).
// A job that holds resources, as preemption sees it: what it holds where, how it stands
// against others and whether it may be preempted now. The state owner keeps one per placed
// job (SchedState::AddRunning and the calls after it).
struct RunningJob {
  const JobSpec* spec = nullptr;          // the owner's, outliving the entry
  TenantIndex tenant = 0;                 // as the scheduler sees it (0: no quota, no share)
  std::vector<TaskAllocation> tasks;      // its allocations not yet given back
  Millis since{0};                        // placed (then started running): its run, for min_run and lost work
  Millis attained{0};                     // GPU-ms before this attempt (least-attained-service)
  int64_t gpu_milli = 0;                  // thousandths of a GPU it holds in all
  bool preemptible = true;                // its priority class's
  Millis min_run{0};                      // its priority class's: run before it may be preempted
  bool stopping = false;                  // being stopped (failover, cancel, time limit, preemption): not a victim
  int64_t end_ms = -1;                    // when it is expected to end: since + its time limit, else its
                                          // estimated duration; -1: unknown (backfill's reservations)
};
// When a job placed at `since` is expected to end: its time limit, else its estimated duration
// (-1: neither).
int64_t ExpectedEnd(const JobSpec& spec, Millis since);

struct CapacityKey {
  uint8_t model_bit = kNoGpuModelBit;
  uint8_t gpu_count = 0;
  int64_t gpu_memory = 0;
  int64_t price = 0;
  int64_t cpu_total = 0;
  int64_t memory_total = 0;
  auto operator<=>(const CapacityKey&) const = default;
};

class SchedState {
 public:
  SchedState() = default;
  // Every node of the fleet free and healthy; load from its measured utilisation where given.
  // The fleet must outlive the state.
  explicit SchedState(const Fleet& fleet);

  const Fleet& fleet() const { return *fleet_; }
  // The owner's fleet moved (or grows as nodes join): the state reads node specs from it.
  void set_fleet(const Fleet& fleet) { fleet_ = &fleet; }

  const std::vector<NodeState>& nodes() const { return nodes_; }
  const NodeState& node(NodeId id) const { return nodes_[id.value()]; }
  size_t size() const { return nodes_.size(); }
  bool empty() const { return nodes_.empty(); }

  // A node joins; its id must be size().
  void AddNode(NodeState node);
  // Any change to a node other than through Allocate/Release (health, draining, quarantine,
  // load, price, task slots); the node is re-indexed and the totals follow.
  template <typename Change>
  void Update(NodeId id, Change&& change) {
    NodeState before = nodes_[id.value()];
    change(nodes_[id.value()]);
    Changed(id, before);
  }
  // Reserves the allocation after re-checking every GPU, CPU and memory figure; on failure
  // changes nothing and says which figure did not fit.
  [[nodiscard]] Status Allocate(const TaskAllocation& a);
  // Gives the allocation back; fails (changing nothing) if it would free more than is used.
  [[nodiscard]] Status Release(const TaskAllocation& a);

  // Thousandths of a GPU free (quarantined GPUs count as not free) and in all.
  int64_t free_gpu_milli() const { return free_gpu_milli_; }
  int64_t total_gpu_milli() const { return total_gpu_milli_; }
  MicroUsd max_price() const;  // the highest GPU-hour price of any node

  uint64_t generation() const { return generation_; }
  uint64_t node_generation(NodeId id) const { return node_gen_[id.value()]; }
  // The latest generation at which a node of a model in `mask` improved.
  uint64_t ImprovedSince(uint64_t mask) const;

  // The tenants' quotas, usage and decayed usage (the owner charges every allocation).
  TenantBook& tenants() { return tenants_; }
  const TenantBook& tenants() const { return tenants_; }
  // CPU (millicores) and memory (MiB) of every node, for dominant shares.
  int64_t total_cpu() const { return total_cpu_; }
  int64_t total_memory() const { return total_memory_; }

  // --- what runs (for preemption) and what is held for a job that preempted ---
  // A job was placed (its allocations already made with Allocate). Replaces an older entry.
  void AddRunning(JobId id, RunningJob job);
  // One of its allocations was given back (Release); the entry goes with its last.
  void RunningReleased(JobId id, const TaskAllocation& a);
  void RunningStarted(JobId id, Millis at);
  void RunningStopping(JobId id);
  const std::map<uint64_t, RunningJob>& running() const { return running_; }
  // Running jobs with an expected end, by it (then id): what backfill walks to find when a
  // waiting job could start.
  const std::set<std::pair<int64_t, uint64_t>>& ends() const { return ends_; }
  const RunningJob* FindRunning(JobId id) const;
  // Jobs with an allocation on the node, in id order.
  const std::vector<uint64_t>& RunningOn(NodeId node) const;
  // Held for a job that preempted others (a nominated reservation): a pass treats what is free
  // of these allocations as taken, so that no one else starts on them while the victims stop.
  void Reserve(JobId id, std::vector<TaskAllocation> tasks) { reservations_[id.value()] = std::move(tasks); }
  void Unreserve(JobId id) { reservations_.erase(id.value()); }
  const std::map<uint64_t, std::vector<TaskAllocation>>& reservations() const { return reservations_; }

  const FreeGpuIndex& index() const { return index_; }
  const std::map<CapacityKey, int>& capacities() const { return capacities_; }

 private:
  void Changed(NodeId id, const NodeState& before);
  static int64_t FreeMilli(const NodeState& n);
  static CapacityKey CapacityOf(const NodeState& n);

  const Fleet* fleet_ = nullptr;
  std::vector<NodeState> nodes_;
  std::vector<uint64_t> node_gen_;
  FreeGpuIndex index_;
  std::map<CapacityKey, int> capacities_;
  std::map<int64_t, int> prices_;  // GPU-hour price -> nodes with GPUs at it
  std::array<uint64_t, 64> improved_{};
  int64_t free_gpu_milli_ = 0;
  int64_t total_gpu_milli_ = 0;
  int64_t total_cpu_ = 0;
  int64_t total_memory_ = 0;
  uint64_t generation_ = 0;
  TenantBook tenants_;
  std::map<uint64_t, RunningJob> running_;
  std::vector<std::vector<uint64_t>> running_on_;
  std::set<std::pair<int64_t, uint64_t>> ends_;
  std::map<uint64_t, std::vector<TaskAllocation>> reservations_;
};

// Whether `after` can fit nothing that `before` could not (every free figure the same or less,
// no better health, no GPU back): a change that is not an improvement.
bool NoBetter(const NodeState& after, const NodeState& before);

// The part of an allocation that is free on the node now (its GPUs that are free, as much CPU
// and memory as is free): what a reservation holds of it while the rest is still in use.
TaskAllocation FreePart(const NodeState& n, const TaskAllocation& a);

}  // namespace gp
