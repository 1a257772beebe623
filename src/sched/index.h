// Free-GPU buckets: for each GPU model present, the nodes grouped by how many whole GPUs they
// have free, so that finding a node for a task visits only nodes that can fit it instead of
// scanning the fleet. Owned by one scheduling pass (not thread-safe).
//
// Each node sits in exactly one bucket (and, if a GPU of it is partly used, in its model's
// partial list); it knows its position there, so a move is a swap-with-last removal and an
// append: O(1). The order within a bucket is the order of arrival, deterministic for the same
// inputs. Build is O(nodes); a visit costs the entries it looks at.
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

  // Visits each node that may fit a task of `gpus` GPUs among models in `mask`, once, in
  // `order`; stops when visit(pos) returns false. CPU-only demands visit every node; fractional
  // ones visit nodes with partly used GPUs first. `visit` must not change the index.
  template <typename Visit>
  void ForEach(uint64_t mask, int gpus, bool fractional, CandidateOrder order, Visit&& visit);

 private:
  static constexpr uint32_t kNone = UINT32_MAX;
  struct Slot {
    uint8_t bit = 0;
    std::array<std::vector<uint32_t>, kMaxGpusPerNode + 1> by_free;
    std::vector<uint32_t> partial;  // nodes with a GPU partly used
  };
  struct Where {
    int8_t slot = -1;
    int8_t bucket = -1;
    uint32_t at = kNone;          // position in its bucket
    uint32_t partial_at = kNone;  // position in the partial list, or kNone
  };
  static void RemoveAt(std::vector<uint32_t>& v, uint32_t at, std::vector<Where>& where, bool partial);
  bool Seen(uint32_t pos);

  std::array<int8_t, 64> slot_of_bit_{};
  std::vector<Slot> slots_;
  std::vector<Where> where_;
  std::vector<uint32_t> seen_;
  uint32_t epoch_ = 0;
};

template <typename Visit>
void FreeGpuIndex::ForEach(uint64_t mask, int gpus, bool fractional, CandidateOrder order, Visit&& visit) {
  ++epoch_;
  const int lo = fractional ? 1 : gpus;
  if (fractional) {
    for (const Slot& s : slots_) {
      if (!(mask >> s.bit & 1)) continue;
      for (uint32_t pos : s.partial) {
        Seen(pos);
        if (!visit(pos)) return;
      }
    }
  }
  for (int step = 0; step <= kMaxGpusPerNode - lo; ++step) {
    const int k = order == CandidateOrder::kTightestFirst ? lo + step : kMaxGpusPerNode - step;
    for (const Slot& s : slots_) {
      if (!(mask >> s.bit & 1)) continue;
      for (uint32_t pos : s.by_free[static_cast<size_t>(k)]) {
        if (fractional && Seen(pos)) continue;
        if (!visit(pos)) return;
      }
    }
  }
}

}  // namespace gp
