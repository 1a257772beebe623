// One node as the scheduler sees it: what is free and how loaded it is. The scheduling state
// (sched/sched_state.h) holds one per node and keeps them current; a pass works on copies of
// the few it touches. Allocate/Release are the one place that changes a node's free resources,
// used by the pass's copies and by the state alike, so that both count the same way. Value
// types; not thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "core/fleet.h"
#include "core/quantity.h"
#include "core/status.h"

namespace gp {

enum class Health : uint8_t { kHealthy, kSuspect, kUnhealthy };
enum class Schedulability : uint8_t { kSchedulable, kDraining };

struct NodeState {
  NodeId id;
  uint8_t model_bit = kNoGpuModelBit;  // GpuModelId value, or kNoGpuModelBit for no GPUs
  uint8_t gpu_count = 0;
  uint8_t drivers = 0xff;              // bit d: the node runs Driver d (every one, unless the node said)
  MiB gpu_memory{0};
  SiteId site;
  MicroUsd price{0};                   // per GPU-hour
  BitsPerSecond nic{0};
  std::array<int16_t, kMaxGpusPerNode> gpu_free{};  // free thousandths of each GPU
  MilliCpu cpu_total{0};
  MilliCpu cpu_free{0};
  MiB memory_total{0};
  MiB memory_free{0};
  Utilisation load;                    // telemetry, plus what this pass has placed
  Health health = Health::kHealthy;
  Schedulability schedulability = Schedulability::kSchedulable;
  uint16_t quarantined = 0;            // bit i: GPU i is out of service (counts as not free)
  // Tasks the node can run at once (each with its supervisor), from its CPUs and process limit;
  // 0: no limit (the simulator's nodes). `tasks` is how many it runs now.
  uint16_t task_slots = 0;
  uint16_t tasks = 0;

  int WholeFreeGpus() const;
  uint16_t WholeFreeMask() const;
  // The largest free part of any partly used GPU (0 when none is partly used).
  int16_t LargestPartialFree() const;
};

// One node's state, all free (for a node that joins a live cluster).
NodeState MakeNodeState(const Fleet& fleet, const Node& node);

// One task's share of one node.
struct TaskAllocation {
  NodeId node;
  uint16_t gpu_mask = 0;               // bit i: GPU index i
  GpuMilli share = kWholeGpu;          // of each GPU in the mask
  MilliCpu cpu{0};
  MiB memory{0};
};

// Reserves the allocation on the node after re-checking every GPU, CPU and memory figure; on
// failure changes nothing and says which figure did not fit. Adds the projected load.
[[nodiscard]] Status Allocate(NodeState& node, const TaskAllocation& a);
// Gives the allocation back; fails (changing nothing) if it would free more than is used.
[[nodiscard]] Status Release(NodeState& node, const TaskAllocation& a);

}  // namespace gp
