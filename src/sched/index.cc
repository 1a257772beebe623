#include "sched/index.h"

#include <algorithm>

namespace gp {

SlotKey SlotKeyOf(const NodeState& n) {
  return SlotKey{.model_bit = n.model_bit, .gpu_count = n.gpu_count, .price = n.price.value(), .site = n.site.value(),
                 .nic = n.nic.value()};
}

int BucketOf(const NodeState& n) { return n.WholeFreeGpus(); }
bool PartialOf(const NodeState& n) { return n.LargestPartialFree() > 0; }

int32_t FreeGpuIndex::SlotFor(const SlotKey& key) {
  auto it = by_key_.find(key);
  if (it != by_key_.end()) return it->second;
  const auto s = static_cast<int32_t>(slots_.size());
  slots_.push_back(Slot{.key = key});
  Slot& slot = slots_.back();
  for (NodeBitset& b : slot.by_free) b.Reserve(capacity_);
  slot.partial.Reserve(capacity_);
  by_key_.emplace(key, s);
  ordered_.clear();
  for (const auto& [k, i] : by_key_) ordered_.push_back(i);
  return s;
}

void FreeGpuIndex::Place(uint32_t pos, const NodeState& n) {
  if (pos >= where_.size()) where_.resize(pos + 1);
  if (pos >= capacity_) {
    // Grow every bitset geometrically, so nodes joining one by one cost O(1) amortised.
    capacity_ = std::max<size_t>({pos + 1, capacity_ * 2, 64});
    for (Slot& s : slots_) {
      for (NodeBitset& b : s.by_free) b.Reserve(capacity_);
      s.partial.Reserve(capacity_);
    }
  }
  Where& w = where_[pos];
  const int32_t slot = SlotFor(SlotKeyOf(n));
  const auto bucket = static_cast<int8_t>(BucketOf(n));
  const bool partial = PartialOf(n);
  if (w.slot == slot && w.bucket == bucket && w.partial == partial) return;
  if (w.slot >= 0) {
    Slot& old = slots_[static_cast<size_t>(w.slot)];
    old.by_free[static_cast<size_t>(w.bucket)].Reset(pos);
    old.partial.Reset(pos);
    --old.nodes;
  }
  Slot& s = slots_[static_cast<size_t>(slot)];
  s.by_free[static_cast<size_t>(bucket)].Set(pos);
  if (partial) s.partial.Set(pos);
  ++s.nodes;
  w = Where{.slot = slot, .bucket = bucket, .partial = partial};
}

IndexOverlay::Delta& IndexOverlay::DeltaOf(int32_t slot) {
  if (deltas_.size() <= static_cast<size_t>(slot)) deltas_.resize(static_cast<size_t>(slot) + 1);
  auto& d = deltas_[static_cast<size_t>(slot)];
  if (!d) d = std::make_unique<Delta>();
  return *d;
}

NodeBitset& IndexOverlay::Sized(NodeBitset& b) {
  b.Reserve(base_.capacity());
  return b;
}

void IndexOverlay::Place(uint32_t pos, const NodeState& n) {
  // A pass changes only free resources, never a node's class: its slot stays the base's.
  const int32_t slot = base_.where(pos).slot;
  Delta& d = DeltaOf(slot);
  auto [it, fresh] = here_.try_emplace(pos);
  if (fresh) Sized(hidden_).Set(pos);
  Here& h = it->second;
  if (h.bucket >= 0) Sized(d.by_free[static_cast<size_t>(h.bucket)]).Reset(pos);
  if (h.partial) Sized(d.partial).Reset(pos);
  h.bucket = static_cast<int8_t>(BucketOf(n));
  h.partial = PartialOf(n);
  Sized(d.by_free[static_cast<size_t>(h.bucket)]).Set(pos);
  if (h.partial) Sized(d.partial).Set(pos);
}

const NodeBitset* IndexOverlay::Bucket(int32_t slot, int k) const {
  if (static_cast<size_t>(slot) >= deltas_.size() || !deltas_[static_cast<size_t>(slot)]) return nullptr;
  return &deltas_[static_cast<size_t>(slot)]->by_free[static_cast<size_t>(k)];
}

const NodeBitset* IndexOverlay::Partial(int32_t slot) const {
  if (static_cast<size_t>(slot) >= deltas_.size() || !deltas_[static_cast<size_t>(slot)]) return nullptr;
  return &deltas_[static_cast<size_t>(slot)]->partial;
}

bool IndexOverlay::InPartial(uint32_t pos) const {
  if (hidden_.Test(pos)) return here_.at(pos).partial;
  return base_.where(pos).partial;
}

}  // namespace gp
