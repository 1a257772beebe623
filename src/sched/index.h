// Free-GPU buckets: for each GPU model present, the nodes grouped by how many whole GPUs they
// have free, so that finding a node for a task visits only nodes that can fit it instead of
// scanning the fleet. Owned by one scheduling pass (not thread-safe).
//
// Buckets are append-only vectors with lazy deletion: when a node's free count changes, it is
// appended to its new bucket and its old entry goes stale; a visit skips entries whose node no
// longer has that count. Build is O(nodes); a change is O(1); a visit costs the entries seen.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "sched/registry.h"
#include "sched/snapshot.h"

namespace gp {

class FreeGpuIndex {
 public:
  void Build(const std::vector<NodeState>& nodes);
  // Call after nodes[pos]'s free GPUs changed.
  void Moved(const std::vector<NodeState>& nodes, uint32_t pos);

  // Visits each node that may fit `demand` among models in `mask`, once, in `order` (then by
  // position within a bucket); stops when visit(pos) returns false. CPU-only demands visit
  // every node; fractional ones visit partly used GPUs first.
  template <typename Visit>
  void ForEach(uint64_t mask, int gpus, bool fractional, CandidateOrder order,
               const std::vector<NodeState>& nodes, Visit&& visit);

 private:
  struct Slot {
    uint8_t bit = 0;
    std::array<std::vector<uint32_t>, kMaxGpusPerNode + 1> by_free;
    std::vector<uint32_t> partial;  // nodes with a GPU partly used
  };
  bool Seen(uint32_t pos);

  std::array<int8_t, 64> slot_of_bit_{};
  std::vector<Slot> slots_;
  std::vector<uint32_t> seen_;
  uint32_t epoch_ = 0;
};

template <typename Visit>
void FreeGpuIndex::ForEach(uint64_t mask, int gpus, bool fractional, CandidateOrder order,
                           const std::vector<NodeState>& nodes, Visit&& visit) {
  ++epoch_;
  const int lo = fractional ? 1 : gpus;
  if (fractional) {
    for (Slot& s : slots_) {
      if (!(mask >> s.bit & 1)) continue;
      for (size_t i = 0; i < s.partial.size(); ++i) {
        const uint32_t pos = s.partial[i];
        if (nodes[pos].LargestPartialFree() == 0 || Seen(pos)) continue;
        if (!visit(pos)) return;
      }
    }
  }
  for (int step = 0; step <= kMaxGpusPerNode - lo; ++step) {
    const int k = order == CandidateOrder::kTightestFirst ? lo + step : kMaxGpusPerNode - step;
    for (Slot& s : slots_) {
      if (!(mask >> s.bit & 1)) continue;
      const std::vector<uint32_t>& bucket = s.by_free[k];
      for (size_t i = 0; i < bucket.size(); ++i) {
        const uint32_t pos = bucket[i];
        if (nodes[pos].WholeFreeGpus() != k || Seen(pos)) continue;
        if (!visit(pos)) return;
      }
    }
  }
}

}  // namespace gp
