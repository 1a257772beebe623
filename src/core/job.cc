#include "core/job.h"

#include <fmt/format.h>

#include "core/fleet.h"

namespace gp {

std::string_view DriverName(Driver d) { return d == Driver::kOci ? "oci" : "process"; }

std::optional<Driver> ParseDriver(std::string_view name) {
  if (name == "process") return Driver::kProcess;
  if (name == "oci") return Driver::kOci;
  return std::nullopt;
}

Status ValidateJobSpec(const JobSpec& s) {
  auto bad = [](std::string m) { return Status(StatusCode::kInvalidArgument, std::move(m)); };
  if (s.tasks < 1 || s.tasks > kMaxTasksPerJob) {
    return bad(fmt::format("tasks must be 1..{}, got {}", kMaxTasksPerJob, s.tasks));
  }
  if (s.gpus_per_task < 0 || s.gpus_per_task > kMaxGpusPerNode) {
    return bad(fmt::format("gpus_per_task must be 0..{}, got {}", kMaxGpusPerNode, s.gpus_per_task));
  }
  if (s.gpu_share.value() < 1 || s.gpu_share.value() > 1000) {
    return bad(fmt::format("gpu_share must be 1..1000 (thousandths of a GPU), got {}", s.gpu_share.value()));
  }
  if (s.gpu_share < kWholeGpu && s.gpus_per_task != 1) {
    return bad(fmt::format("a GPU share below 1000 needs exactly 1 GPU per task, got {}", s.gpus_per_task));
  }
  if (s.cpu_per_task.value() < 0) return bad("cpu_per_task must not be negative");
  if (s.memory_per_task.value() < 0) return bad("memory_per_task must not be negative");
  if (s.min_gpu_memory.value() < 0) return bad("min_gpu_memory must not be negative");
  if (s.estimated_duration && s.estimated_duration->value() < 0) return bad("estimated_duration must not be negative");
  if (s.time_limit.value() != 0 && (s.time_limit.value() < 1'000 || s.time_limit.value() > 366LL * 86'400'000)) {
    return bad("time limit must be 1s..366 days");
  }
  if (s.max_price_per_gpu_hour && s.max_price_per_gpu_hour->value() < 0) return bad("max_price must not be negative");
  if (s.data && s.data->size.value() < 0) return bad("data size must not be negative");
  return Status::Ok();
}

}  // namespace gp
