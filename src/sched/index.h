// The free-GPU index, kept current by the scheduling state (sched/sched_state.h) as nodes join,
// change, get and give back resources, never rebuilt for a pass. Nodes are grouped into slots
// by their static class (GPU model, GPU count, price, site, NIC: a fleet has few distinct ones),
// and within a slot into buckets by how many whole GPUs they have free, plus a list of those
// with a GPU partly used. Each bucket is a NodeBitset, so placing a node is O(1), a visit goes
// in node-id order, and the order never depends on the history of changes: a decision replays
// from (state, seed).
//
// A scheduling pass does not write this index: it sees it through an IndexOverlay holding the
// few nodes the pass has touched (as Nomad's plan does), and ForEachCandidate merges the two
// word by word. Not thread-safe; one owner.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <unordered_map>
#include <vector>

#include "sched/bitset.h"
#include "sched/registry.h"
#include "sched/snapshot.h"

namespace gp {

// The static class of a node: what the scorers of price and place read, and what the index
// groups by. Ordered, so slots are visited in an order that depends only on what they are.
struct SlotKey {
  uint8_t model_bit = kNoGpuModelBit;
  uint8_t gpu_count = 0;
  int64_t price = 0;
  uint32_t site = 0;
  int64_t nic = 0;
  auto operator<=>(const SlotKey&) const = default;
};
SlotKey SlotKeyOf(const NodeState& n);
// Whole GPUs free (the bucket) and whether a GPU is partly used.
int BucketOf(const NodeState& n);
bool PartialOf(const NodeState& n);

class FreeGpuIndex {
 public:
  static constexpr int kBuckets = kMaxGpusPerNode + 1;
  struct Slot {
    SlotKey key;
    std::array<NodeBitset, kBuckets> by_free;
    NodeBitset partial;
    int nodes = 0;
  };
  struct Where {
    int32_t slot = -1;
    int8_t bucket = -1;
    bool partial = false;
  };

  // Puts node `pos` where its state says: a node that joins, or one whose free GPUs or class
  // changed. O(1), and O(log slots) when its class changes.
  void Place(uint32_t pos, const NodeState& n);

  const std::vector<Slot>& slots() const { return slots_; }
  // Slot indices in key order (model first).
  const std::vector<int32_t>& ordered() const { return ordered_; }
  const Where& where(uint32_t pos) const { return where_[pos]; }
  size_t size() const { return where_.size(); }
  // The number of node positions the bitsets hold.
  size_t capacity() const { return capacity_; }

 private:
  int32_t SlotFor(const SlotKey& key);

  std::vector<Slot> slots_;
  std::vector<int32_t> ordered_;
  std::map<SlotKey, int32_t> by_key_;
  std::vector<Where> where_;
  size_t capacity_ = 0;
};

// What one pass changed, seen over the index: the nodes it holds copies of are hidden in the
// base and present in the overlay's own bitsets where their copies now belong. Sized lazily:
// a pass that touches one node allocates a few bitsets, not one per slot.
class IndexOverlay {
 public:
  explicit IndexOverlay(const FreeGpuIndex& base) : base_(base) {}

  // Node `pos` (a copy the pass now owns) is where `n` says. The first call hides it in the base.
  void Place(uint32_t pos, const NodeState& n);
  bool Hides(uint32_t pos) const { return hidden_.Test(pos); }
  const NodeBitset* hidden() const { return hidden_.empty() ? nullptr : &hidden_; }
  const NodeBitset* Bucket(int32_t slot, int k) const;
  const NodeBitset* Partial(int32_t slot) const;
  // Whether the node (as the pass sees it) is in its slot's partial list.
  bool InPartial(uint32_t pos) const;

 private:
  struct Delta {
    std::array<NodeBitset, FreeGpuIndex::kBuckets> by_free;
    NodeBitset partial;
  };
  struct Here {
    int8_t bucket = -1;
    bool partial = false;
  };
  Delta& DeltaOf(int32_t slot);
  NodeBitset& Sized(NodeBitset& b);

  const FreeGpuIndex& base_;
  NodeBitset hidden_;
  std::vector<std::unique_ptr<Delta>> deltas_;  // by slot, allocated on first use
  std::unordered_map<uint32_t, Here> here_;             // the overlay's nodes
};

// The order in which a pass visits the index's slots (node classes): `slots` in visiting
// order, `rank` per entry, ascending (price, or data transfer time); empty: all one rank.
struct SlotOrder {
  std::vector<int32_t> slots;
  std::vector<int64_t> rank;
};

// Visits each node that may fit a task of `gpus` GPUs (a share when `fractional`) among models
// in `mask`, as the pass sees the index, once, in the policy's order: by slot rank (one rank
// for kTightestFirst / kEmptiestFirst; price for kCheapestFirst, transfer time for
// kNearestFirst), then by free whole GPUs (most first for kEmptiestFirst, else fewest), then
// in slot order, then by node id. CPU-only demands start at bucket 0; fractional ones visit
// nodes with a partly used GPU first. Stops when visit(pos) returns false.
template <typename Visit>
void ForEachCandidate(const FreeGpuIndex& index, const IndexOverlay& overlay, uint64_t mask, int gpus, bool fractional,
                      CandidateOrder order, const SlotOrder& so, Visit&& visit) {
  const auto& slots = index.slots();
  const int lo = fractional ? 1 : gpus;
  bool go = true;
  auto in_partial = [&](uint32_t pos) { return overlay.InPartial(pos); };
  auto bucket = [&](int32_t s, int k) {
    return ForEachMerged(slots[static_cast<size_t>(s)].by_free[static_cast<size_t>(k)], overlay.hidden(),
                         overlay.Bucket(s, k), [&](uint32_t pos) {
                           if (fractional && in_partial(pos)) return true;  // seen in the partial pass
                           return go = visit(pos);
                         }) && go;
  };
  auto allowed = [&](int32_t s) { return mask >> slots[static_cast<size_t>(s)].key.model_bit & 1; };
  if (fractional) {
    for (int32_t s : so.slots) {
      if (!allowed(s)) continue;
      if (!ForEachMerged(slots[static_cast<size_t>(s)].partial, overlay.hidden(), overlay.Partial(s),
                         [&](uint32_t pos) { return go = visit(pos); }) || !go) {
        return;
      }
    }
  }
  const size_t n = so.slots.size();
  for (size_t i = 0; i < n;) {
    size_t j = so.rank.empty() ? n : i + 1;
    while (j < n && so.rank[j] == so.rank[i]) ++j;  // one rank: [i, j)
    for (int step = 0; step <= kMaxGpusPerNode - lo; ++step) {
      const int k = order == CandidateOrder::kEmptiestFirst ? kMaxGpusPerNode - step : lo + step;
      for (size_t x = i; x < j; ++x) {
        if (allowed(so.slots[x]) && !bucket(so.slots[x], k)) return;
      }
    }
    i = j;
  }
}

}  // namespace gp
