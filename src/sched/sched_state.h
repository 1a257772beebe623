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
#include <vector>

#include "core/fleet.h"
#include "core/status.h"
#include "sched/index.h"
#include "sched/snapshot.h"
#include "sched/tenants.h"

namespace gp {

// What FitsFleet reads of a node: the properties that do not change with use. Nodes with the
// same figures form one class, so the admission check costs O(classes), not O(nodes).
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
};

// Whether `after` can fit nothing that `before` could not (every free figure the same or less,
// no better health, no GPU back): a change that is not an improvement.
bool NoBetter(const NodeState& after, const NodeState& before);

}  // namespace gp
