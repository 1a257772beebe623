// Small fleets and jobs for the scheduler's tests.
#pragma once

#include <deque>
#include <string>

#include "core/fleet.h"
#include "sched/pending.h"
#include "sched/registry.h"
#include "sched/schedule.h"
#include "sched/sched_state.h"

namespace gp::testing {

// n nodes of g GPUs of `model`, one site, one provider; names node-1..n.
inline Fleet Uniform(int n, int g, const std::string& model = "V100") { return *ParseFleetShorthand(std::to_string(n) + "x" + std::to_string(g) + (g ? "x" + model : "")); }

// Owns JobSpecs so that PendingJobs can point at them.
class Jobs {
 public:
  explicit Jobs(const Fleet& fleet) : fleet_(fleet) {}
  PendingJob& Add(JobSpec spec) {
    if (spec.id.value() == 0) spec.id = JobId{specs_.size() + 1};
    specs_.push_back(std::move(spec));
    auto p = CompileJob(specs_.back(), fleet_);
    if (!p) throw std::runtime_error(p.error().message());
    pending_.push_back(*p);
    return pending_.back();
  }
  std::vector<PendingJob> pending() const { return {pending_.begin(), pending_.end()}; }

 private:
  const Fleet& fleet_;
  std::deque<JobSpec> specs_;
  std::deque<PendingJob> pending_;
};

inline Policy MakePolicy(const std::string& name) {
  auto p = BuiltinRegistry().MakePolicy(name);
  if (!p) throw std::runtime_error(p.error().message());
  return std::move(*p);
}

// Uses `gpus` whole GPUs of node `i` (lowest indices first).
inline void Occupy(SchedState& s, uint32_t i, int gpus) {
  const TaskAllocation a{.node = NodeId{i}, .gpu_mask = static_cast<uint16_t>((1u << gpus) - 1)};
  if (!s.Allocate(a).ok()) throw std::runtime_error("occupy failed");
}

}  // namespace gp::testing
