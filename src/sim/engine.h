// The discrete-event simulator: replays a trace through the very Schedule() the server uses,
// on a virtual clock. Events are arrivals and completions; after all events of one instant the
// scheduler runs once, and its plan is applied with Allocate() (which re-checks every node),
// exactly as the live state owner does. Single-threaded; deterministic for (fleet, trace,
// policy, seed).
//
// Trace jobs become JobSpecs here: a job of G GPUs on a fleet whose largest node has M GPUs
// runs as one task if G <= M, else as a gang of T tasks, T the smallest divisor of G with
// G / T <= M (128 GPUs on 8-GPU nodes: 16 x 8; 12: 2 x 6). The estimated duration is the true
// one (an oracle, as in the SJF literature). A job's run time is its trace duration for the
// model it lands on, when the trace gives one per model.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/fleet.h"
#include "sched/registry.h"
#include "sched/schedule.h"
#include "sim/trace.h"

namespace gp {

enum class Recovery : uint8_t {
  kRestart,     // a job hit by a failure starts again from the beginning
  kCheckpoint,  // it resumes from its last checkpoint (every checkpoint_interval of run time)
};

struct SimOptions {
  uint64_t seed = 1;
  // Failures: when set, nodes fail (and spot nodes are reclaimed) as the model says, with
  // exponential times between events drawn from a generator seeded by `seed`.
  std::optional<FailureModel> failures;
  Recovery recovery = Recovery::kRestart;
  Millis checkpoint_interval{1'800'000};
  // Failures at given times, in addition to (or instead of) the random ones: for tests.
  std::vector<std::pair<Millis, NodeId>> scripted_failures;
  // Called now and then with (jobs finished or refused, total jobs).
  std::function<void(size_t, size_t)> progress;
  // Called with every event of the simulated pool, as the live pool stores it (type such as
  // "job.placed", subject "job/ID", data: the JSON object of docs/events.md), at simulated time.
  std::function<void(Millis at, const std::string& type, const std::string& subject, const std::string& data)> on_event;
};

struct SimJobResult {
  JobId id;
  std::string name;
  int line = 0;
  int gpus = 0;
  int tasks = 1;
  Outcome outcome = Outcome::kNotNow;  // kPlaced: ran; kNever: refused
  Millis submit{0};
  Millis start{-1};
  Millis finish{-1};
  NodeId first_node;
  MicroUsd cost{0};
};

// The cluster between two scheduling instants: from `t` on, `queued` jobs waited and `busy_gpus`
// GPUs were held (fractions count as parts).
struct TimelinePoint {
  Millis t{0};
  int32_t queued = 0;
  double busy_gpus = 0;
};

struct SimReport {
  std::string policy;
  uint64_t seed = 0;
  int64_t jobs = 0;
  int64_t finished = 0;
  int64_t unschedulable = 0;   // refused as "never" (too big for the fleet, unknown model, ...)
  double avg_jct_s = 0;        // over finished jobs: finish - submit
  double p50_jct_s = 0;
  double p99_jct_s = 0;
  double avg_queue_s = 0;      // start - submit
  double makespan_s = 0;       // last finish - first submit
  double gpu_utilization = 0;  // busy GPU-time / (GPUs x makespan)
  double fragmentation = 0;    // free GPU-time while a GPU job waited / all free GPU-time
  MicroUsd cost{0};            // sum of price x GPUs x run time
  int64_t passes = 0;          // scheduling passes run
  int64_t failures = 0;        // node failures and spot reclaims that hit at least one job
  int64_t node_failures = 0;   // all node failures and reclaims
  int64_t gpu_failures = 0;    // fatal XIDs (one GPU out at a time)
  double lost_gpu_hours = 0;   // GPU-time thrown away by failures (not kept by a checkpoint)
  std::string recovery;        // "restart" or "checkpoint" when failures were simulated
  std::vector<SimJobResult> per_job;  // in trace order
  int64_t total_gpus = 0;
  std::vector<TimelinePoint> timeline;  // one point per instant whose state differs from the last
};

// The (tasks, GPUs per task) split described above.
std::pair<int, int> SplitGang(int gpus, int max_gpus_per_node);

Result<SimReport> RunSimulation(const Fleet& fleet, const Trace& trace, const Policy& policy,
                                const SimOptions& options);

// Output formats. All deterministic: the same report gives the same bytes.
std::string FormatReportTable(const SimReport& r);
std::string FormatReportJson(const SimReport& r);   // one object, fields as documented
std::string FormatReportCsv(const SimReport& r);    // header + one row
std::string FormatJobsCsv(const SimReport& r, const Fleet& fleet);

}  // namespace gp
