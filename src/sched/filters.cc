// Built-in filters, cheapest and most static first. Each answers nullopt or a Reason with the
// numbers (asked, available, capacity).
#include <bit>

#include "sched/registry.h"

namespace gp {
namespace {

class HealthFilter final : public Filter {
 public:
  std::optional<Reason> Check(const PendingJob&, const TaskDemand&, const NodeState& n) const override {
    if (n.health == Health::kHealthy) return std::nullopt;
    return Reason{ReasonCode::kUnhealthy, 0, static_cast<int64_t>(n.health), 0};
  }
};

class DrainingFilter final : public Filter {
 public:
  std::optional<Reason> Check(const PendingJob&, const TaskDemand&, const NodeState& n) const override {
    if (n.schedulability == Schedulability::kSchedulable) return std::nullopt;
    return Reason{ReasonCode::kDraining, 0, 0, 0};
  }
};

// A task that needs GPUs needs a node whose model the job allows. A CPU-only task runs anywhere
// its mask allows (the mask of a CPU-only job allows every node).
class GpuModelFilter final : public Filter {
 public:
  std::optional<Reason> Check(const PendingJob& j, const TaskDemand&, const NodeState& n) const override {
    if (j.model_mask >> n.model_bit & 1) return std::nullopt;
    return Reason{ReasonCode::kGpuModel, 0, n.model_bit, 0};
  }
};

class GpuMemoryFilter final : public Filter {
 public:
  std::optional<Reason> Check(const PendingJob& j, const TaskDemand& d, const NodeState& n) const override {
    if (d.gpus == 0 || n.gpu_memory >= j.spec->min_gpu_memory) return std::nullopt;
    return Reason{ReasonCode::kGpuMemory, j.spec->min_gpu_memory.value(), n.gpu_memory.value(), n.gpu_memory.value()};
  }
};

class PriceFilter final : public Filter {
 public:
  std::optional<Reason> Check(const PendingJob& j, const TaskDemand& d, const NodeState& n) const override {
    const auto& ceiling = j.spec->max_price_per_gpu_hour;
    if (d.gpus == 0 || !ceiling || n.price <= *ceiling) return std::nullopt;
    return Reason{ReasonCode::kPriceCeiling, ceiling->value(), n.price.value(), 0};
  }
};

class GpuCountFilter final : public Filter {
 public:
  std::optional<Reason> Check(const PendingJob&, const TaskDemand& d, const NodeState& n) const override {
    if (d.gpus == 0) return std::nullopt;
    if (d.share < kWholeGpu) {
      int16_t best = 0;
      for (int i = 0; i < n.gpu_count; ++i) {
        if (!(n.quarantined >> i & 1)) best = std::max(best, n.gpu_free[i]);
      }
      if (best >= d.share.value()) return std::nullopt;
      return Reason{ReasonCode::kGpuShare, d.share.value(), best, kWholeGpu.value()};
    }
    const int free = n.WholeFreeGpus();
    if (free >= d.gpus) return std::nullopt;
    return Reason{ReasonCode::kGpuCount, d.gpus, free, n.gpu_count};
  }
};

class CpuFilter final : public Filter {
 public:
  std::optional<Reason> Check(const PendingJob&, const TaskDemand& d, const NodeState& n) const override {
    if (d.cpu <= n.cpu_free) return std::nullopt;
    return Reason{ReasonCode::kCpu, d.cpu.value(), n.cpu_free.value(), n.cpu_total.value()};
  }
};

class MemoryFilter final : public Filter {
 public:
  std::optional<Reason> Check(const PendingJob&, const TaskDemand& d, const NodeState& n) const override {
    if (d.memory <= n.memory_free) return std::nullopt;
    return Reason{ReasonCode::kMemory, d.memory.value(), n.memory_free.value(), n.memory_total.value()};
  }
};

// A node runs as many tasks at once as its CPUs and process limit allow (each task is a
// process group and a supervisor): 300 CPU-only tasks do not all land on one 2-core node.
class TaskSlotFilter final : public Filter {
 public:
  std::optional<Reason> Check(const PendingJob&, const TaskDemand&, const NodeState& n) const override {
    if (n.task_slots == 0 || n.tasks < n.task_slots) return std::nullopt;
    return Reason{ReasonCode::kTaskSlots, 1, n.task_slots - n.tasks, n.task_slots};
  }
};

// The node runs the job's driver (process groups, or OCI containers).
class DriverFilter final : public Filter {
 public:
  std::optional<Reason> Check(const PendingJob& j, const TaskDemand&, const NodeState& n) const override {
    const int d = static_cast<int>(j.spec->driver);
    if (n.drivers >> d & 1) return std::nullopt;
    return Reason{ReasonCode::kDriver, d, n.drivers, 0};
  }
};

}  // namespace

void RegisterFilters(Registry& r) {
  r.AddFilter("health", "the node is healthy (F_i = 1)", Registry::Of<Filter, HealthFilter>());
  r.AddFilter("draining", "the node is not draining", Registry::Of<Filter, DrainingFilter>());
  r.AddFilter("driver", "the node runs the job's driver (process, or oci containers)", Registry::Of<Filter, DriverFilter>());
  r.AddFilter("gpu-model", "the node's GPU model is one the job allows", Registry::Of<Filter, GpuModelFilter>());
  r.AddFilter("gpu-memory", "each GPU has at least the job's minimum memory", Registry::Of<Filter, GpuMemoryFilter>());
  r.AddFilter("price-ceiling", "the node's GPU-hour price is within the job's ceiling", Registry::Of<Filter, PriceFilter>());
  r.AddFilter("gpu-count", "enough free GPUs (or a large enough free share of one)", Registry::Of<Filter, GpuCountFilter>());
  r.AddFilter("cpu", "enough free CPU", Registry::Of<Filter, CpuFilter>());
  r.AddFilter("memory", "enough free memory", Registry::Of<Filter, MemoryFilter>());
  r.AddFilter("task-slots", "the node runs fewer tasks than its CPUs and process limit allow", Registry::Of<Filter, TaskSlotFilter>());
}

}  // namespace gp
