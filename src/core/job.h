// What a user asks for: a job of `tasks` tasks, each wanting `gpus_per_task` GPUs (a gang when
// tasks > 1: all tasks start together or none does), with constraints and hints. Fleet-neutral:
// GPU models and the data set's site are names, resolved against a fleet by the scheduler.
// A value type; safe to copy between threads.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/box.h"
#include "core/ids.h"
#include "core/quantity.h"
#include "core/status.h"

namespace gp {

struct DataSet {
  std::string site;  // where the data lives
  Bytes size{0};
};

// How a job's tasks run on their nodes: process groups under the supervisor (the default), or
// OCI containers (runc, a root file system, namespaces and cgroup limits, GPUs the CDI way).
// A node runs the drivers it offers (NodeState::drivers); the scheduler's `driver` filter
// places a job only where its driver is.
enum class Driver : uint8_t { kProcess = 0, kOci = 1 };
inline constexpr int kDriverCount = 2;
std::string_view DriverName(Driver d);
std::optional<Driver> ParseDriver(std::string_view name);

struct JobSpec {
  JobId id;
  std::string name;
  int tasks = 1;
  int gpus_per_task = 1;
  GpuMilli gpu_share = kWholeGpu;        // of each GPU; below 1000 only with 1 GPU per task
  std::vector<std::string> gpu_models;   // allowed models; empty = any
  MiB min_gpu_memory{0};
  MilliCpu cpu_per_task{0};
  MiB memory_per_task{0};
  int priority = 0;                      // higher first under the priority queue order
  Driver driver = Driver::kProcess;      // (in the padding after priority)
  std::string tenant;
  Box<DataSet> data;                     // where its data lives (few jobs say)
  std::optional<Millis> estimated_duration;
  // Slurm's --time: stopped (SIGTERM, then SIGKILL after the grace) this long after it started
  // running, and ended as timed out. 0: none (a plain value: a job record must stay within its
  // allocator size class, see cluster_state_test).
  Millis time_limit{0};
  std::optional<MicroUsd> max_price_per_gpu_hour;
  Millis submit_time{0};

  int total_gpus() const { return tasks * gpus_per_task; }
};

inline constexpr int kMaxTasksPerJob = 4096;

// Checks ranges; the message names the field ("gpus_per_task must be 0..16, got 17").
Status ValidateJobSpec(const JobSpec& spec);

}  // namespace gp
