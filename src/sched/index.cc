#include "sched/index.h"

namespace gp {

void FreeGpuIndex::Build(const std::vector<NodeState>& nodes) {
  slot_of_bit_.fill(-1);
  slots_.clear();
  where_.assign(nodes.size(), Where{});
  seen_.assign(nodes.size(), 0);
  epoch_ = 0;
  for (uint32_t pos = 0; pos < nodes.size(); ++pos) {
    const uint8_t bit = nodes[pos].model_bit;
    if (slot_of_bit_[bit] < 0) {
      slot_of_bit_[bit] = static_cast<int8_t>(slots_.size());
      slots_.push_back(Slot{.bit = bit});
    }
    where_[pos].slot = slot_of_bit_[bit];
    Moved(nodes, pos);
  }
}

void FreeGpuIndex::RemoveAt(std::vector<uint32_t>& v, uint32_t at, std::vector<Where>& where, bool partial) {
  const uint32_t last = v.back();
  v[at] = last;
  (partial ? where[last].partial_at : where[last].at) = at;
  v.pop_back();
}

void FreeGpuIndex::Moved(const std::vector<NodeState>& nodes, uint32_t pos) {
  const NodeState& n = nodes[pos];
  Where& w = where_[pos];
  Slot& s = slots_[static_cast<size_t>(w.slot)];
  const int8_t k = static_cast<int8_t>(n.WholeFreeGpus());
  if (k != w.bucket) {
    if (w.bucket >= 0) RemoveAt(s.by_free[static_cast<size_t>(w.bucket)], w.at, where_, false);
    auto& bucket = s.by_free[static_cast<size_t>(k)];
    where_[pos].bucket = k;
    where_[pos].at = static_cast<uint32_t>(bucket.size());
    bucket.push_back(pos);
  }
  const bool partial = n.LargestPartialFree() > 0;
  if (partial && where_[pos].partial_at == kNone) {
    where_[pos].partial_at = static_cast<uint32_t>(s.partial.size());
    s.partial.push_back(pos);
  } else if (!partial && where_[pos].partial_at != kNone) {
    RemoveAt(s.partial, where_[pos].partial_at, where_, true);
    where_[pos].partial_at = kNone;
  }
}

bool FreeGpuIndex::Seen(uint32_t pos) {
  if (seen_[pos] == epoch_) return true;
  seen_[pos] = epoch_;
  return false;
}

}  // namespace gp
