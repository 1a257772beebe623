// Built-in queue orders. Each maps a pending job to a key; smaller goes first, ties by job id.
#include <limits>

#include "sched/registry.h"

namespace gp {
namespace {

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

class Fifo final : public QueueOrder {
 public:
  QueueKey Key(const PendingJob& j) const override { return {j.spec->submit_time.value(), 0, 0}; }
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

// Tiresias' discretised two-queue least-attained-service: jobs that have had less than
// kLasThreshold of GPU-time come first; within a queue, FIFO. A job that has had 2 GPUs for
// 40 minutes has 80 GPU-minutes and sits in the second queue.
class LeastAttained final : public QueueOrder {
 public:
  static constexpr int64_t kLasThresholdMs = 3'600'000;  // one GPU-hour
  QueueKey Key(const PendingJob& j) const override {
    return {j.attained.value() >= kLasThresholdMs ? 1 : 0, j.spec->submit_time.value(), 0};
  }
};

}  // namespace

void RegisterQueueOrders(Registry& r) {
  r.AddQueueOrder("fifo", "first come, first served (by submit time)",
                  Registry::Of<QueueOrder, Fifo>());
  r.AddQueueOrder("priority", "highest priority first, then FIFO",
                  Registry::Of<QueueOrder, ByPriority>());
  r.AddQueueOrder("sjf", "shortest estimated duration first; unknown durations last",
                  Registry::Of<QueueOrder, ShortestFirst>());
  r.AddQueueOrder("las", "Tiresias two-queue least attained service (threshold 1 GPU-hour), FIFO within",
                  Registry::Of<QueueOrder, LeastAttained>());
}

}  // namespace gp
