// Why a node cannot take a task, with the numbers: what was asked, what is available, and the
// node's capacity. Every filter answers with one of these, so `gpupool explain` and
// `place --explain` can say "GPUs: asked 4, free 2 of 8" rather than "no".
// Value types; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/fleet.h"
#include "sched/pending.h"

namespace gp {

enum class ReasonCode : uint8_t {
  kGpuModel,       // asked: -, available: the node's model id (or 63 for none)
  kGpuMemory,      // MiB per GPU
  kPriceCeiling,   // micro-USD per GPU-hour: asked = ceiling, available = node's price
  kUnhealthy,      // available: Health value
  kDraining,
  kGpuCount,       // whole GPUs: asked, free, total
  kGpuShare,       // thousandths of one GPU: asked, largest free part, 1000
  kCpu,            // millicores
  kMemory,         // MiB
  kGangSize,       // tasks: asked, tasks that fit, -
  kClusterGpus,    // whole cluster, thousandths of GPUs: asked in all, free, total
  kTaskSlots,      // tasks at once on the node: asked 1, free slots, slots
  kQuota,          // the tenant's quota, thousandths of a GPU of `model`: asked, it may take, nominal
  kDriver,         // asked: the job's Driver, available: the node's drivers (bit mask)
  kCount
};
inline constexpr int kReasonCodeCount = static_cast<int>(ReasonCode::kCount);

struct Reason {
  ReasonCode code = ReasonCode::kGpuCount;
  int64_t asked = 0;
  int64_t available = 0;
  int64_t capacity = 0;
  int16_t model = -1;  // kQuota: the GPU model's bit
};

// Short stable name, e.g. "gpu-count".
std::string_view ReasonName(ReasonCode code);
// One line with the numbers, e.g. "GPUs: asked 4, free 2 of 8".
std::string DescribeReason(const Reason& r, const Fleet& fleet, const PendingJob& job);

}  // namespace gp
