#include "sched/reason.h"

#include <fmt/format.h>

#include "core/units.h"

namespace gp {

std::string_view ReasonName(ReasonCode code) {
  switch (code) {
    case ReasonCode::kGpuModel: return "gpu-model";
    case ReasonCode::kGpuMemory: return "gpu-memory";
    case ReasonCode::kPriceCeiling: return "price-ceiling";
    case ReasonCode::kUnhealthy: return "unhealthy";
    case ReasonCode::kDraining: return "draining";
    case ReasonCode::kGpuCount: return "gpu-count";
    case ReasonCode::kGpuShare: return "gpu-share";
    case ReasonCode::kCpu: return "cpu";
    case ReasonCode::kMemory: return "memory";
    case ReasonCode::kGangSize: return "gang-size";
    case ReasonCode::kClusterGpus: return "cluster-gpus";
    case ReasonCode::kTaskSlots: return "task-slots";
    case ReasonCode::kQuota: return "quota";
    case ReasonCode::kDriver: return "driver";
    case ReasonCode::kCount: break;
  }
  return "?";
}

std::string DescribeReason(const Reason& r, const Fleet& fleet, const PendingJob& job) {
  switch (r.code) {
    case ReasonCode::kGpuModel: {
      std::string has = r.available == kNoGpuModelBit || r.available >= static_cast<int64_t>(fleet.models.size())
                            ? std::string("no GPU")
                            : fleet.models[static_cast<size_t>(r.available)].name;
      std::string wants;
      for (const std::string& m : job.spec->gpu_models) wants += (wants.empty() ? "" : " or ") + m;
      if (job.spec->gpus_per_task > 0 && wants.empty()) wants = "a GPU";
      return fmt::format("GPU model: node has {}, job wants {}", has, wants);
    }
    case ReasonCode::kGpuMemory:
      return fmt::format("GPU memory: asked {} MiB per GPU, node's GPUs have {} MiB", r.asked, r.available);
    case ReasonCode::kPriceCeiling:
      return fmt::format("price: ceiling {}/GPU-h, node costs {}/GPU-h", FormatUsd(MicroUsd{r.asked}),
                         FormatUsd(MicroUsd{r.available}));
    case ReasonCode::kUnhealthy:
      return fmt::format("node is {}", r.available == 1 ? "suspect" : "unhealthy");
    case ReasonCode::kDraining: return "node is draining";
    case ReasonCode::kGpuCount:
      return fmt::format("GPUs: asked {}, free {} of {}", r.asked, r.available, r.capacity);
    case ReasonCode::kGpuShare:
      return fmt::format("GPU share: asked {}/1000 of a GPU, largest free part {}/1000", r.asked, r.available);
    case ReasonCode::kCpu:
      return fmt::format("CPU: asked {:.1f} cores, free {:.1f} of {:.1f}", static_cast<double>(r.asked) / 1000,
                         static_cast<double>(r.available) / 1000, static_cast<double>(r.capacity) / 1000);
    case ReasonCode::kMemory:
      return fmt::format("memory: asked {} MiB, free {} of {} MiB", r.asked, r.available, r.capacity);
    case ReasonCode::kGangSize:
      return fmt::format("gang: {} tasks must start together, only {} fit at once", r.asked, r.available);
    case ReasonCode::kClusterGpus:
      return fmt::format("cluster: asked {:g} GPUs in all, {:g} free of {:g}", static_cast<double>(r.asked) / 1000,
                         static_cast<double>(r.available) / 1000, static_cast<double>(r.capacity) / 1000);
    case ReasonCode::kTaskSlots:
      return fmt::format("tasks: the node runs at most {} at once (its CPUs and process limit), {} free", r.capacity, r.available);
    case ReasonCode::kDriver: {
      std::string offers;
      for (int d = 0; d < kDriverCount; ++d) {
        if (r.available >> d & 1) offers += std::string(offers.empty() ? "" : ", ") + std::string(DriverName(static_cast<Driver>(d)));
      }
      return fmt::format("driver: the job runs with {}, the node offers {}", DriverName(static_cast<Driver>(r.asked)),
                         offers.empty() ? "none" : offers);
    }
    case ReasonCode::kQuota: {
      const std::string model = r.model >= 0 && r.model < static_cast<int64_t>(fleet.models.size())
                                    ? fleet.models[static_cast<size_t>(r.model)].name
                                    : std::string("GPU");
      return fmt::format("quota: tenant {} asks {:g} {}, may take {:g} more (quota {:g})",
                         job.spec->tenant.empty() ? "-" : job.spec->tenant, static_cast<double>(r.asked) / 1000, model,
                         static_cast<double>(r.available) / 1000, static_cast<double>(r.capacity) / 1000);
    }
    case ReasonCode::kCount: break;
  }
  return "?";
}

}  // namespace gp
