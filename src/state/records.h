// What the controller remembers: jobs (the user's request, where it runs, how it ended) and
// nodes (what an agent registered and last reported). Plain values; the controller's event
// loop is their only writer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/fleet.h"
#include "core/job.h"
#include "core/status.h"
#include "sched/snapshot.h"
#include "telemetry/gpu_source.h"
#include "telemetry/host.h"

namespace gp {

enum class JobState : uint8_t { kQueued, kStarting, kRunning, kSucceeded, kFailed, kCancelled };
std::string_view JobStateName(JobState s);
Result<JobState> ParseJobState(std::string_view s);
inline bool IsTerminal(JobState s) {
  return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled;
}

// One attempt of one task: an attempt is an epoch; a report or a cancel for an older attempt
// than the job's current one is about work the server has already given up on.
struct TaskKey {
  uint64_t job = 0;
  int task = 0;
  int attempt = 0;
  auto operator<=>(const TaskKey&) const = default;
};

struct TaskRecord {
  std::string node;                  // node name (stable across restarts)
  TaskAllocation allocation;         // node id is the controller's current numbering
  std::optional<int> exit_code;
  std::optional<int> signal;
  bool started = false;
  bool stop_asked = false;           // its node was told to stop it (not stored: asking again is harmless)
};

// One placement of a job and how it ended.
struct AttemptRecord {
  int attempt = 0;
  std::vector<std::string> nodes;
  int64_t start_ms = 0;
  int64_t end_ms = 0;
  std::string outcome;               // "node n3 down", "lost", "exit 0", ...
};

struct JobRecord {
  JobSpec spec;                      // spec.id is the job id; submit_time is wall-clock ms
  std::vector<std::string> command;  // argv
  std::vector<std::pair<std::string, std::string>> env;
  std::string workdir;
  JobState state = JobState::kQueued;
  std::vector<TaskRecord> tasks;     // empty until placed
  std::optional<int> exit_code;      // the job's: first non-zero task exit, else 0
  std::optional<int> signal;
  int64_t start_ms = 0;              // when the last task reported running
  int64_t end_ms = 0;
  std::string message;               // why it waits, or why it ended
  bool cancel_requested = false;
  // Failover. `attempt` is the current placement's epoch (0 before the first). A job whose
  // placement failed through no fault of its own (its node died, a task was lost) goes back
  // to the queue until it has been retried `max_retries` times (-1: the server's default).
  int attempt = 0;
  int max_retries = -1;
  int failures = 0;                  // failovers that count against max_retries (not evictions)
  std::vector<AttemptRecord> attempts;
  bool failing_over = false;         // the current attempt is being stopped; requeue when it has
  int64_t fence_until_ms = 0;        // and not before its lease on a dead node has run out
  int64_t not_before_ms = 0;         // backoff: not placed again before this
  // GPU-time run so far, over every attempt, in GPU-milliseconds (thousandths of a GPU x ms
  // / 1000): what least-attained-service orders by.
  int64_t attained_gpu_ms = 0;
};

struct NodeRecord {
  Node spec;                         // inventory as registered (id = controller's numbering)
  std::string site;
  std::string provider;
  std::string agent_address;         // host the agent runs on (for MASTER_ADDR)
  bool draining = false;
  int64_t last_heartbeat_ms = 0;
  HostSample host;
  std::vector<GpuSample> gpus;
  std::string gpu_source;            // "nvml" or "simulated"
  std::string gpu_model;             // model name of its GPUs ("H100"), empty without GPUs
  std::vector<std::string> gpu_health;  // per GPU: "ok" or "quarantined: why" (as shown and stored)
  std::vector<std::string> gpu_check;   // per GPU: the latest self-test's result, "" if none
  // SHA-256 (hex) of the node's own credential, issued at its first registration; the journal
  // keeps it, the API never shows it.
  std::string credential_hash;
  int max_tasks = 0;  // tasks at once (0: no limit said)
};

}  // namespace gp
