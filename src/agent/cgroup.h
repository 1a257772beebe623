// cgroup v2 CPU and memory limits for tasks, where the machine allows them: /sys/fs/cgroup must
// be a cgroup2 mount whose cpu and memory controllers the agent may enable for a "gpupool"
// subtree (root, or a delegated subtree). Elsewhere (cgroup v1, no permission) Detect() says why
// and the agent runs tasks without limits. Used from the agent's thread only.
#pragma once

#include <sys/types.h>

#include <string>

#include "core/quantity.h"
#include "core/status.h"

namespace gp {

// cpu.max for a share of CPU: 1.5 cores over a 100 ms period is "150000 100000"; 0 is "max".
std::string CpuMaxValue(MilliCpu cpu, int64_t period_us = 100'000);

class CgroupLimiter {
 public:
  static CgroupLimiter Detect(const std::string& root = "/sys/fs/cgroup");
  bool available() const { return available_; }
  const std::string& why_not() const { return why_not_; }
  // Moves `pid` into a new cgroup `name` with the limits (0 = no limit).
  Status Place(pid_t pid, const std::string& name, MilliCpu cpu, MiB memory) const;
  void Remove(const std::string& name) const;

 private:
  bool available_ = false;
  std::string why_not_;
  std::string base_;  // root/gpupool
};

}  // namespace gp
