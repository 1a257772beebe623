// The per-attempt supervisor (Slurm's slurmstepd, Nomad's executor): a small process between
// the agent and a task. It runs the task in a process group of its own and stops it when the
// attempt's lease runs out: the agent renews the lease (touches a file) after every heartbeat
// the server answers, so a dead, hung or cut-off agent stops renewing, and the task stops
// itself within the lease even with no agent left to kill it. On SIGTERM it passes the signal
// on, waits `grace`, then kills the group. It exits as the task did (same code, same signal).
#pragma once

#include <string>
#include <vector>

namespace gp {

struct SuperviseOptions {
  std::string lease_file;
  std::string status_file;  // written when the task ends: "exit N" or "signal S" (for an agent
                            // that restarted meanwhile and cannot wait for it)
  int lease_ms = 2500;
  int grace_ms = 5000;
  // The unprivileged user the task runs as (the supervisor stays as it is, to keep its files
  // out of the task's reach); -1: as the supervisor's own user.
  int uid = -1;
  int gid = -1;
  // Run once the task has ended, whatever ended it (its output discarded): for a container,
  // `runc kill` of what runc may have left running when it was itself killed.
  std::vector<std::string> after;
  // cgroup directories the supervisor joins before it starts the task (its limits: nothing the
  // task does escapes them).
  std::vector<std::string> cgroups;
};
// The status file's text: "exit N" or "signal S", then " lost" when the lease ran out (the
// attempt was stopped for want of word from the server, not by its own doing).

// Runs argv[0] with argv; returns only on error (otherwise it exits as the task did).
int Supervise(const SuperviseOptions& o, const std::vector<std::string>& argv);

}  // namespace gp
