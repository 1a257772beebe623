#include "sched/index.h"

namespace gp {

void FreeGpuIndex::Build(const std::vector<NodeState>& nodes) {
  slot_of_bit_.fill(-1);
  slots_.clear();
  seen_.assign(nodes.size(), 0);
  epoch_ = 0;
  for (uint32_t pos = 0; pos < nodes.size(); ++pos) {
    const uint8_t bit = nodes[pos].model_bit;
    if (slot_of_bit_[bit] < 0) {
      slot_of_bit_[bit] = static_cast<int8_t>(slots_.size());
      slots_.push_back(Slot{.bit = bit});
    }
    Moved(nodes, pos);
  }
}

void FreeGpuIndex::Moved(const std::vector<NodeState>& nodes, uint32_t pos) {
  const NodeState& n = nodes[pos];
  Slot& s = slots_[static_cast<size_t>(slot_of_bit_[n.model_bit])];
  s.by_free[static_cast<size_t>(n.WholeFreeGpus())].push_back(pos);
  if (n.LargestPartialFree() > 0) s.partial.push_back(pos);
}

bool FreeGpuIndex::Seen(uint32_t pos) {
  if (seen_[pos] == epoch_) return true;
  seen_[pos] = epoch_;
  return false;
}

}  // namespace gp
