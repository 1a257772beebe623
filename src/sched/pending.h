// A job as the scheduler sees it: the user's JobSpec compiled against one fleet (model names
// to a bit mask, the data set's site to an id) plus what the state owner knows of its history.
// The JobSpec is owned by the caller and must outlive the PendingJob.
#pragma once

#include <cstdint>
#include <optional>

#include "core/fleet.h"
#include "core/job.h"

namespace gp {

using TenantIndex = uint32_t;  // a tenant in the scheduler's book (sched/tenants.h); 0: none

struct PendingJob {
  const JobSpec* spec = nullptr;
  uint64_t model_mask = 0;          // bit m: GPU model m allowed; bit 63: nodes with no GPU
  std::optional<SiteId> data_site;
  Millis attained{0};               // GPU-time already received (for least-attained-service)
  TenantIndex tenant = 0;           // set by the state owner from spec->tenant
};

// The GPU models the job names that the fleet does not have (for messages).
std::vector<std::string> UnknownModels(const JobSpec& spec, const Fleet& fleet);

// Fails (naming the field) when the spec is out of range or its data site is unknown. A GPU
// model the fleet lacks is not an error: the job is compiled and the scheduler answers "never".
Result<PendingJob> CompileJob(const JobSpec& spec, const Fleet& fleet);

}  // namespace gp
