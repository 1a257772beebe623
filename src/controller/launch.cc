#include "controller/launch.h"

#include <fmt/format.h>

#include <map>

namespace gp {

std::string GpuList(uint32_t gpu_mask) {
  std::string out;
  for (int g = 0; g < kMaxGpusPerNode; ++g) {
    if (gpu_mask >> g & 1) out += (out.empty() ? "" : ",") + std::to_string(g);
  }
  return out;
}

std::optional<TaskLaunch> PrepareLaunch(const JobRecord& j, int i, const LaunchContext& ctx) {
  if (i < 0 || i >= static_cast<int>(j.tasks.size())) return std::nullopt;
  const int world = static_cast<int>(j.tasks.size());
  const TaskRecord& t = j.tasks[static_cast<size_t>(i)];
  if (!AwaitsLaunch(t)) return std::nullopt;
  const std::string gpus = GpuList(t.allocation.gpu_mask);
  TaskLaunch l{.job = j.spec.id.value(), .task = i, .attempt = j.attempt, .command = j.command, .env = j.env, .workdir = j.workdir,
               .gpu_mask = t.allocation.gpu_mask, .cpu = t.allocation.cpu, .memory = t.allocation.memory};
  l.user = ctx.user;
  if (j.spec.driver == Driver::kOci && j.extras && j.extras->container) {
    const ContainerSpec& c = *j.extras->container;
    l.driver = std::string(DriverName(j.spec.driver));
    l.image = c.image;
    l.rootfs = c.rootfs;
    l.read_only_root = c.read_only;
  }
  l.env.reserve(l.env.size() + 24);
  auto set = [&](const char* k, std::string v) { l.env.emplace_back(k, std::move(v)); };
  set("CUDA_VISIBLE_DEVICES", gpus);
  set("NVIDIA_VISIBLE_DEVICES", gpus.empty() ? "void" : gpus);
  set("CUDA_DEVICE_ORDER", "PCI_BUS_ID");  // index order = NVML's, as the agent reported them
  set("GPUPOOL_JOB_ID", std::to_string(j.spec.id.value()));
  set("GPUPOOL_JOB_NAME", j.spec.name);
  set("GPUPOOL_TASK_INDEX", std::to_string(i));
  set("GPUPOOL_ATTEMPT", std::to_string(j.attempt));
  if (!ctx.checkpoint_root.empty()) {
    set("GPUPOOL_CHECKPOINT_DIR", (ctx.checkpoint_root / std::to_string(j.spec.id.value())).string());
  } else {
    l.carry_checkpoint = true;  // the agent sets GPUPOOL_CHECKPOINT_DIR to a directory of its own
  }
  set("GPUPOOL_NODE", t.node);
  {
    // Every task's node, in task order (what `gpupool sbatch` gives as SLURM_JOB_NODELIST).
    std::string nodes;
    for (const TaskRecord& other : j.tasks) nodes += (nodes.empty() ? "" : ",") + other.node;
    set("GPUPOOL_NODES", std::move(nodes));
  }
  set("GPUPOOL_GPUS", gpus);
  set("RANK", std::to_string(i));
  set("WORLD_SIZE", std::to_string(world));
  int local = 0;
  int local_world = 0;
  for (int k = 0; k < world; ++k) {
    const bool same = j.tasks[static_cast<size_t>(k)].node == t.node;
    local += same && k < i;
    local_world += same;
  }
  set("LOCAL_RANK", std::to_string(local));
  set("LOCAL_WORLD_SIZE", std::to_string(local_world));
  if (j.extras) {
    for (const auto& [name, sealed] : j.extras->secrets) {
      auto value = ctx.open_secret ? ctx.open_secret(sealed) : Result<std::string>(Error(StatusCode::kFailedPrecondition, "no key"));
      if (value) {
        l.env.emplace_back(name, std::move(*value));
      } else {
        fmt::print(stderr, "gpupool server: job {}: secret {} not given to its task: {}\n", j.spec.id.value(), name,
                   value.error().message());
      }
    }
  }
  set("MASTER_ADDR", ctx.master_address.empty() ? "127.0.0.1" : ctx.master_address);
  set("MASTER_PORT", std::to_string(20000 + j.spec.id.value() % 20000));
  if (j.array_of != 0) {
    const std::string parent = std::to_string(j.array_of);
    const std::string index = std::to_string(j.array_index);
    set("GPUPOOL_ARRAY_JOB_ID", parent);
    set("GPUPOOL_ARRAY_INDEX", index);
    set("SLURM_ARRAY_JOB_ID", parent);
    set("SLURM_ARRAY_TASK_ID", index);
    if (ctx.array) {
      set("SLURM_ARRAY_TASK_MIN", std::to_string(ctx.array->min_index()));
      set("SLURM_ARRAY_TASK_MAX", std::to_string(ctx.array->max_index()));
      set("SLURM_ARRAY_TASK_COUNT", std::to_string(ctx.array->size()));
      if (ctx.array->ranges.size() == 1) set("SLURM_ARRAY_TASK_STEP", std::to_string(ctx.array->ranges.front().step));
    }
  }
  return l;
}

}  // namespace gp
