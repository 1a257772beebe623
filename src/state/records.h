// What the controller remembers: jobs (the user's request, where it runs, how it ended) and
// nodes (what an agent registered and last reported). Plain values; the controller's event
// loop is their only writer.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/box.h"
#include "core/fleet.h"
#include "core/job.h"
#include "core/status.h"
#include "sched/snapshot.h"
#include "telemetry/gpu_source.h"
#include "telemetry/host.h"

namespace gp {

// kTimedOut: stopped at its time limit (Slurm's TIMEOUT); the last, so that existing stored
// states keep their numbers.
enum class JobState : uint8_t { kQueued, kStarting, kRunning, kSucceeded, kFailed, kCancelled, kTimedOut };
std::string_view JobStateName(JobState s);
Result<JobState> ParseJobState(std::string_view s);
inline bool IsTerminal(JobState s) {
  return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled || s == JobState::kTimedOut;
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

// A job array (Slurm's --array): one request and one stored record for many elements that
// differ only in their index. "0-9999%64": indexes 0..9999, at most 64 running at once;
// "1,3,10-20:5": a list of ranges with steps. Elements are expanded lazily: an element gets a
// record of its own only when the scheduler may consider it (at most `max_running` live at
// once, and a window of queued ones), so a 100,000-element array costs one record until it runs.
// Element k (0-based position in the index list) has job id = the array's id + 1 + k.
struct IndexRange {
  int64_t first = 0;
  int64_t last = 0;
  int64_t step = 1;
  int64_t size() const { return (last - first) / step + 1; }
  auto operator<=>(const IndexRange&) const = default;
};
struct ArraySpec {
  std::vector<IndexRange> ranges;
  int max_running = 0;  // %N: elements live (placed or running) at once; 0: no limit
  int64_t size() const;
  // The index of the element at `position` (0-based), and the position of an index (nullopt:
  // not in the array).
  int64_t IndexAt(int64_t position) const;
  std::optional<int64_t> PositionOf(int64_t index) const;
  int64_t min_index() const;
  int64_t max_index() const;
  std::string ToString() const;  // "0-9999%64"
  bool operator==(const ArraySpec&) const = default;
};
inline constexpr int64_t kMaxArraySize = 1'000'000;
// "0-9999%64", "1,3,10-20:5", "7": the error names what is wrong.
Result<ArraySpec> ParseArraySpec(std::string_view text);

// One placement of a job and how it ended.
struct AttemptRecord {
  int attempt = 0;
  std::vector<std::string> nodes;
  int64_t start_ms = 0;
  int64_t end_ms = 0;
  std::string outcome;               // "node n3 down", "lost", "exit 0", ...
};

// An array's own progress (only its record has one): how many positions have records
// (0..expanded-1), how many were cancelled before they had one, positions not yet passed whose
// element was cancelled, and its elements by state (materialized ones; rebuilt on recovery,
// not stored).
struct ArrayProgress {
  int64_t expanded = 0;            // positions passed: 0..expanded-1 have records or were skipped
  int64_t skipped = 0;             // positions passed without a record (cancelled first)
  std::set<int64_t> early_cancel;  // positions not yet passed whose element was cancelled
  std::array<int64_t, 6> element_counts{};
};

// An oci job's container (JobSpec::driver): its root file system, a directory on the node, or
// an image the node unpacks with its operator's tool (gpupool agent --oci-unpack); and whether
// that root is mounted read-only.
struct ContainerSpec {
  std::string image;
  std::string rootfs;
  bool read_only = false;
};

// Slurm's --dependency: a job that waits for others. afterok: they all succeeded; afterany:
// they all ended; afternotok: they all ended without succeeding (failed, cancelled, timed
// out). A dependency that can no longer be met (afterok on a job that failed) ends the job,
// cancelled, saying which and why.
enum class DependencyKind : uint8_t { kAfterOk, kAfterAny, kAfterNotOk };
struct Dependency {
  DependencyKind kind = DependencyKind::kAfterOk;
  uint64_t job = 0;
  bool operator==(const Dependency&) const = default;
};

// What few jobs have, in one box: their secrets (`submit --secret`: name -> the value sealed
// by SecretBox, never the value itself; the server opens them only to hand a task its
// environment), and an oci job's container.
struct JobExtras {
  std::vector<std::pair<std::string, std::string>> secrets;
  std::optional<ContainerSpec> container;
  std::vector<Dependency> after;
  // Slurm's singleton: it starts only once every job of its tenant with its name submitted
  // before it has ended.
  bool singleton = false;
  bool has_dependencies() const { return singleton || !after.empty(); }
};


// Slurm's --dependency text, "afterok:12:13,afterany:14,singleton" (a comma is "and"; "?" for
// "or" is not taken), into `extras`; the error names what is wrong. And back.
Status ParseDependencies(std::string_view text, JobExtras& extras);
std::string DependencyText(const JobExtras& extras);

// A job as the server keeps it. The server holds one per job in memory (100,000 at fleet
// scale): what few jobs have is boxed (Box: a pointer when absent), and the small fields sit
// together, so a record and its map node fit jemalloc's 512-byte class (a test checks the size).
struct JobRecord {
  JobSpec spec;                      // spec.id is the job id; submit_time is wall-clock ms
  std::vector<std::string> command;  // argv
  std::vector<std::pair<std::string, std::string>> env;
  std::string workdir;
  JobState state = JobState::kQueued;
  JobState counted = JobState::kQueued;  // an element: the state its array counted it in (not stored)
  bool cancel_requested = false;
  bool timed_out = false;            // its time limit passed: its tasks are being stopped
  bool failing_over = false;         // the current attempt is being stopped; requeue when it has
  bool priority_unset = false;       // submitted without a priority: its tenant's default class applies (not stored)
  // Failover. `attempt` is the current placement's epoch (0 before the first). A job whose
  // placement failed through no fault of its own (its node died, a task was lost) goes back
  // to the queue until it has been retried `max_retries` times (-1: the server's default).
  int attempt = 0;
  int max_retries = -1;
  int failures = 0;                  // failovers that count against max_retries (not evictions)
  uint32_t array_index = 0;          // an element's index in its array (at most 4,000,000,000); here: no padding
  std::vector<TaskRecord> tasks;     // empty until placed
  std::optional<int> exit_code;      // the job's: first non-zero task exit, else 0
  std::optional<int> signal;
  int64_t start_ms = 0;              // when the last task reported running
  int64_t end_ms = 0;
  std::string message;               // why it waits, or why it ended
  std::vector<AttemptRecord> attempts;
  int64_t fence_until_ms = 0;        // and not before its lease on a dead node has run out
  int64_t not_before_ms = 0;         // backoff: not placed again before this
  // GPU-time run so far, over every attempt, in GPU-milliseconds (thousandths of a GPU x ms
  // / 1000): what least-attained-service orders by.
  int64_t attained_gpu_ms = 0;

  // An array's own record: its elements (`array`) and its progress. The array's state follows
  // its elements: queued until one is placed, running while any is, then succeeded when all
  // did, else failed (or cancelled).
  Box<ArraySpec> array;
  Box<ArrayProgress> progress;
  Box<JobExtras> extras;             // few jobs have any
  // An element's: its array's id (0: not an element), and its index (array_index, above).
  uint64_t array_of = 0;
  bool is_array() const { return array.has_value(); }
  // The array's progress (made on first change); a record that is no array reads zeros.
  ArrayProgress& arr() { return progress.ensure(); }
  const ArrayProgress& arr() const { return progress.value_or_default(); }
};

struct NodeRecord {
  Node spec;                         // as registered (id = controller's numbering); the server keeps its GPUs in the fleet
  std::string site;
  std::string provider;
  std::string agent_address;         // host the agent runs on (for MASTER_ADDR)
  bool draining = false;
  int64_t last_heartbeat_ms = 0;
  HostSample host;
  std::vector<KeptGpuSample> gpus;   // the latest sample of each GPU
  std::string gpu_source;            // "nvml" or "simulated"
  std::string gpu_model;             // model name of its GPUs ("H100"), empty without GPUs
  std::vector<std::string> gpu_health;  // per GPU: "ok" or "quarantined: why" (as shown and stored)
  std::vector<std::string> gpu_check;   // per GPU: the latest self-test's result, "" if none
  // SHA-256 (hex) of the node's own credential, issued at its first registration; the journal
  // keeps it, the API never shows it.
  std::string credential_hash;
  // The serials (hex) of the client certificates issued to the node that are in force, newest
  // last: at most two (the one in use, and the one a rotation has just issued).
  std::vector<std::string> cert_serials;
  std::vector<std::string> drivers;  // as registered ("process", "oci"); empty: process only
  int max_tasks = 0;  // tasks at once (0: no limit said)
  std::string claim;  // the claim it was acquired for from a provider ("" for a node someone else started)
  std::string offer;  // the offer that claim bought it from (its price and billing)
  bool released = false;  // given back to its provider: no longer listed, not watched (kept for its history)
};

}  // namespace gp
