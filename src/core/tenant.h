// A tenant's share of the pool as configured: its weight, its cohort, its quota per GPU model
// (Kueue's nominal quota, borrowing limit and lending limit) and its own queue order. Plain
// data, read from a fleet file's [[tenant]] tables (the simulator) or the tenant records an
// admin makes (the live pool); the scheduler's book (sched/tenants.h) applies it.
// Value types; thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "core/quantity.h"
#include "core/status.h"

namespace gp {

struct QuotaLimits {
  int64_t nominal = 0;                  // whole GPUs
  std::optional<int64_t> borrow_limit;  // GPUs above nominal at most; none: no limit
  std::optional<int64_t> lend_limit;    // GPUs of its quota others may use at most; none: all
};

inline constexpr int64_t kMaxQuotaGpus = 1'000'000;

// A priority by name, as Kubernetes' PriorityClass and Slurm's QOS: `gpupool submit --priority
// high` is the class's value. Whether a job of the class may be preempted, and how long it
// runs before it may be (ClusterState finds a job's class by its priority's value).
struct PriorityClass {
  std::string name;
  int value = 0;            // -1,000,000..1,000,000; higher first under the priority order
  bool preemptible = true;
  Millis min_run{0};        // run time before it may be preempted (against thrash)
  // Time limits of its jobs (Slurm's QOS MaxWall): a job without --time gets default_time when
  // its tenant gives none; none may ask more than max_time (nor more than its tenant's). 0: none.
  Millis default_time{0};
  Millis max_time{0};
};

struct TenantConfig {
  std::string name;
  int weight = 1;                             // 1..1000
  std::string cohort;                         // "" none
  std::map<std::string, QuotaLimits> quota;   // by GPU model name
  std::string order;                          // its own queue order ("" the policy's)
  // Time limits (Slurm's partition DefaultTime and MaxTime): a job without --time gets
  // default_time (else max_time); one asking more than max_time is refused. 0: none.
  Millis default_time{0};
  Millis max_time{0};
  // The priority class of its jobs that give no priority (Kubernetes' globalDefault, per
  // tenant); "" none.
  std::string priority;
};

// Checks one tenant's figures; errors name the field ("tenant llm: quota H100: borrow limit
// must be 0..1000000 GPUs, got -1").
Status ValidateTenantConfig(const TenantConfig& t);
// A tenant or cohort name, as a Kubernetes namespace's (an RFC 1123 label): 1 to 63 of a-z,
// 0-9 and '-', starting and ending with a letter or digit (Philly's virtual clusters: "6214e9").
bool ValidTenantName(std::string_view name);

}  // namespace gp
