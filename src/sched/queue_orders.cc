// Built-in queue orders. Each maps a pending job to a key; smaller goes first, ties by job id.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <vector>

#include "sched/registry.h"

namespace gp {
namespace {

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

class Fifo final : public QueueOrder {
 public:
  QueueKey Key(const PendingJob& j) const override { return {j.spec->submit_time.value(), 0, 0}; }
};

// FIFO without skipping ahead: the first waiting job starts before any behind it.
class StrictFifo final : public QueueOrder {
 public:
  QueueKey Key(const PendingJob& j) const override { return {j.spec->submit_time.value(), 0, 0}; }
  bool HeadOfLine() const override { return true; }
};

class ByPriority final : public QueueOrder {
 public:
  QueueKey Key(const PendingJob& j) const override {
    return {-static_cast<int64_t>(j.spec->priority), j.spec->submit_time.value(), 0};
  }
};

// Shortest job first by the user's estimate; jobs without one go after all that have one.
class ShortestFirst final : public QueueOrder {
 public:
  QueueKey Key(const PendingJob& j) const override {
    const auto& d = j.spec->estimated_duration;
    return {d ? d->value() : kNever, j.spec->submit_time.value(), 0};
  }
};

// Tiresias' discretised least-attained-service: queue k holds the jobs whose attained GPU-time
// is at least threshold k-1 and below threshold k; lower queues first, FIFO within. `las` has
// one threshold, one GPU-hour (two queues, as Tiresias' paper); `las:3250:7200` has Tiresias'
// code's dlas-gpu thresholds in GPU-seconds (three queues). A job that has had 2 GPUs for 40
// minutes has 4,800 GPU-seconds: the second queue of `las`, the second of `las:3250:7200`.
class LeastAttained final : public QueueOrder {
 public:
  explicit LeastAttained(std::vector<int64_t> thresholds_ms) : thresholds_ms_(std::move(thresholds_ms)) {}
  QueueKey Key(const PendingJob& j) const override { return {Level(j), j.spec->submit_time.value(), 0}; }
  // A job of a higher queue (less attained) preempts one of a lower queue, as in Tiresias.
  int64_t Standing(const PendingJob& j) const override { return -Level(j); }
  std::string_view StandingName() const override { return "queue"; }
  std::optional<int64_t> NextStandingChange(const PendingJob& j) const override {
    const auto next = std::upper_bound(thresholds_ms_.begin(), thresholds_ms_.end(), j.attained.value());
    if (next == thresholds_ms_.end()) return std::nullopt;
    return *next;
  }

 private:
  int64_t Level(const PendingJob& j) const {
    return std::upper_bound(thresholds_ms_.begin(), thresholds_ms_.end(), j.attained.value()) - thresholds_ms_.begin();
  }
  std::vector<int64_t> thresholds_ms_;  // GPU-ms, increasing
};

// "3250:7200": increasing thresholds in GPU-seconds.
Result<std::unique_ptr<QueueOrder>> MakeLas(std::string_view args) {
  if (args.empty()) return std::unique_ptr<QueueOrder>(std::make_unique<LeastAttained>(std::vector<int64_t>{3'600'000}));
  std::vector<int64_t> ms;
  size_t start = 0;
  while (start <= args.size()) {
    const size_t colon = std::min(args.find(':', start), args.size());
    const std::string_view part = args.substr(start, colon - start);
    int64_t s = 0;
    const auto r = std::from_chars(part.data(), part.data() + part.size(), s);
    if (part.empty() || r.ec != std::errc() || r.ptr != part.data() + part.size() || s <= 0 || s > 1'000'000'000 ||
        (!ms.empty() && s * 1000 <= ms.back()) || ms.size() >= 16) {
      return InvalidArgument(fmt::format("las: '{}': expected up to 16 increasing thresholds in GPU-seconds, e.g. las:3250:7200",
                                         args.substr(0, 80)));
    }
    ms.push_back(s * 1000);
    start = colon + 1;
  }
  return std::unique_ptr<QueueOrder>(std::make_unique<LeastAttained>(std::move(ms)));
}

}  // namespace

void RegisterQueueOrders(Registry& r) {
  r.AddQueueOrder("fifo", "first come, first served (by submit time)",
                  Registry::Of<QueueOrder, Fifo>());
  r.AddQueueOrder("priority", "highest priority first, then FIFO",
                  Registry::Of<QueueOrder, ByPriority>());
  r.AddQueueOrder("sjf", "shortest estimated duration first; unknown durations last",
                  Registry::Of<QueueOrder, ShortestFirst>());
  r.AddQueueOrder("fifo-strict", "first come, first served, head of line: nothing starts ahead of the first waiting job",
                  Registry::Of<QueueOrder, StrictFifo>());
  r.AddQueueOrder("las",
                  "Tiresias' discretised least attained service, FIFO within a queue; las = one threshold of 1 GPU-hour "
                  "(two queues), las:T1:T2:... thresholds in GPU-seconds (las:3250:7200 is Tiresias' dlas-gpu)",
                  [] { return std::move(*MakeLas("")); }, MakeLas);
}

}  // namespace gp
