// Launch preparation: what an agent is told to start for each task of a placed job (command,
// environment, GPUs, CPU and memory). A pure function of the job record: no I/O, no state.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "state/records.h"
#include "wire/codec.h"

namespace gp {

struct LaunchContext {
  std::string master_address;            // the agent address of task 0's node (MASTER_ADDR)
  std::filesystem::path checkpoint_root;  // shared checkpoint storage; empty: checkpoints are carried
  const ArraySpec* array = nullptr;       // an array element's array
  // Opens a sealed secret for the task's environment (the server's SecretBox); none: a job
  // with secrets gets none of them (and says so on the server's stderr).
  std::function<Result<std::string>(std::string_view)> open_secret;
  std::string user;  // the job's tenant's unix user ("": the agent's own choice)
};

// Whether a task of the job's current attempt still waits to be launched: neither started nor
// ended.
inline bool AwaitsLaunch(const TaskRecord& t) { return !t.started && !t.exit_code && !t.signal; }

// Task `task`'s launch (nullopt when it does not await one, or there is no such task). It gets
// CUDA_VISIBLE_DEVICES (and
// NVIDIA_VISIBLE_DEVICES) of its GPUs, GPUPOOL_JOB_ID, _JOB_NAME, _TASK_INDEX, _ATTEMPT, _NODE,
// _GPUS, GPUPOOL_CHECKPOINT_DIR (or carry_checkpoint), and the torch.distributed variables RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT. An array element also gets
// GPUPOOL_ARRAY_JOB_ID and GPUPOOL_ARRAY_INDEX, and Slurm's SLURM_ARRAY_JOB_ID,
// SLURM_ARRAY_TASK_ID, _TASK_MIN, _TASK_MAX, _TASK_COUNT (and _TASK_STEP for one stepped
// range), so that existing array scripts run unchanged. The server prepares it when the agent
// takes it, not when the job is placed.
std::optional<TaskLaunch> PrepareLaunch(const JobRecord& job, int task, const LaunchContext& ctx);

// "0,2,3": the GPU indices of a mask.
std::string GpuList(uint32_t gpu_mask);

}  // namespace gp
