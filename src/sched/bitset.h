// A set of node positions as a two-level bitset: one bit per node, and one summary bit per word
// that says whether the word has any bit set. Insert and erase are O(1); visiting the members
// goes in position (node id) order and skips 4,096 empty positions per summary word, so the
// order never depends on the history of inserts and erases. Value type; not thread-safe.
#pragma once

#include <bit>
#include <cstdint>
#include <vector>

namespace gp {

class NodeBitset {
 public:
  // Grows to hold positions below `n` (never shrinks; existing bits stay).
  void Reserve(size_t n) {
    const size_t words = (n + 63) / 64;
    if (words > words_.size()) {
      words_.resize(words, 0);
      summary_.resize((words + 63) / 64, 0);
    }
  }
  void Set(uint32_t i) {
    uint64_t& w = words_[i / 64];
    if (!(w >> (i % 64) & 1)) ++count_;
    w |= uint64_t{1} << (i % 64);
    summary_[i / 4096] |= uint64_t{1} << (i / 64 % 64);
  }
  void Reset(uint32_t i) {
    uint64_t& w = words_[i / 64];
    if (w >> (i % 64) & 1) --count_;
    w &= ~(uint64_t{1} << (i % 64));
    if (w == 0) summary_[i / 4096] &= ~(uint64_t{1} << (i / 64 % 64));
  }
  bool Test(uint32_t i) const { return i / 64 < words_.size() && (words_[i / 64] >> (i % 64) & 1); }
  int count() const { return count_; }
  bool empty() const { return count_ == 0; }
  size_t words() const { return words_.size(); }
  size_t summaries() const { return summary_.size(); }
  uint64_t word(size_t w) const { return w < words_.size() ? words_[w] : 0; }
  uint64_t summary(size_t s) const { return s < summary_.size() ? summary_[s] : 0; }

 private:
  std::vector<uint64_t> words_;
  std::vector<uint64_t> summary_;
  int count_ = 0;
};

// Visits, in position order, every i with (base(i) and not hidden(i)) or extra(i): a base set
// seen through an overlay that hides the positions it has copies of and adds their current
// membership. `hidden` and `extra` may be null. Stops when visit(i) returns false; returns
// whether it ran to the end.
template <typename Visit>
bool ForEachMerged(const NodeBitset& base, const NodeBitset* hidden, const NodeBitset* extra, Visit&& visit) {
  if (base.empty() && (!extra || extra->empty())) return true;
  if (hidden && hidden->empty()) hidden = nullptr;
  size_t summaries = base.summaries();
  if (extra && extra->summaries() > summaries) summaries = extra->summaries();
  for (size_t s = 0; s < summaries; ++s) {
    uint64_t sum = base.summary(s) | (extra ? extra->summary(s) : 0);
    while (sum != 0) {
      const size_t w = s * 64 + static_cast<size_t>(std::countr_zero(sum));
      sum &= sum - 1;
      uint64_t bits = base.word(w);
      if (hidden) bits &= ~hidden->word(w);
      if (extra) bits |= extra->word(w);
      while (bits != 0) {
        const uint32_t i = static_cast<uint32_t>(w * 64 + static_cast<size_t>(std::countr_zero(bits)));
        bits &= bits - 1;
        if (!visit(i)) return false;
      }
    }
  }
  return true;
}

}  // namespace gp
