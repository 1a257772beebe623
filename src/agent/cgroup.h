// cgroup limits for the process driver's tasks, where the machine allows them: CPU, memory and
// process count, and on cgroup v1 the devices a task may open (the GPUs it was not given are
// denied; v2 would need an eBPF program per cgroup, not done). cgroup v2: /sys/fs/cgroup is a
// cgroup2 mount whose cpu, memory and pids controllers the agent may enable for a "gpupool"
// subtree. cgroup v1 (hybrid, as on this project's machines): the cpu, memory, pids and devices
// hierarchies under /sys/fs/cgroup/<controller>. The agent makes a task's cgroups, with their
// limits, before the task starts, and its supervisor joins them before it starts the task, so
// nothing the task does escapes them. Elsewhere (no permission, no cgroup mount) Detect() says
// why and tasks run without limits. Used from the agent's thread only.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "core/quantity.h"
#include "core/status.h"

namespace gp {

// cpu.max for a share of CPU: 1.5 cores over a 100 ms period is "150000 100000"; 0 is "max".
std::string CpuMaxValue(MilliCpu cpu, int64_t period_us = 100'000);

struct CgroupLimits {
  MilliCpu cpu{0};     // 0: none
  MiB memory{0};       // 0: none
  int64_t pids = 0;    // processes and threads at once; 0: none
  // Device rules to deny ("c 195:1 rwm"): the GPUs the task was not given (cgroup v1 only).
  std::vector<std::string> deny_devices;
};

class CgroupLimiter {
 public:
  // `scope` keeps the cgroups of several agents on one machine apart (gpupool/<scope>/<task>).
  static CgroupLimiter Detect(const std::string& root = "/sys/fs/cgroup", const std::string& scope = "");
  bool available() const { return available_; }
  const std::string& why_not() const { return why_not_; }
  bool v1() const { return v1_; }
  bool devices() const { return v1_; }  // device rules are applied
  // Makes the cgroups of task `name` with `limits`; returns the directories a process joins
  // (writes its pid to cgroup.procs) to be under them.
  Result<std::vector<std::string>> Prepare(const std::string& name, const CgroupLimits& limits) const;
  void Remove(const std::string& name) const;
  // How often the kernel killed a process of task `name` for its memory limit (read before Remove).
  int64_t OomKills(const std::string& name) const;
  // Moves the calling process into `dirs` (the supervisor, before it starts the task).
  static Status Join(const std::vector<std::string>& dirs);

 private:
  bool available_ = false;
  bool v1_ = false;
  std::string why_not_;
  // v2: one base, root/gpupool[/scope]; v1: one per controller, root/<controller>/gpupool[/scope].
  std::vector<std::pair<std::string, std::string>> bases_;  // controller ("" for v2), base directory
};

}  // namespace gp
