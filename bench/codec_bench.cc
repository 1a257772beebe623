// What the server spends writing the messages it writes at fleet rates: a job's row (stored at
// every change of state; 100,000 jobs started means 200,000 rows), a heartbeat's answer with
// eight launches (one per GPU of a node), and an agent's heartbeat with its telemetry. Figures
// in docs/benchmarks.md (before: a value tree dumped; after: text written directly).
#include <benchmark/benchmark.h>

#include <string>

#include "telemetry/gpu_source.h"
#include "wire/codec.h"

namespace gp {
namespace {

JobRecord RunningElement() {
  JobRecord r;
  r.spec.id = JobId{123'457};
  r.spec.name = "storm-3";
  r.spec.tenant = "default";
  r.spec.gpus_per_task = 1;
  r.spec.estimated_duration = Millis{60'000};
  r.spec.submit_time = Millis{1'796'294'892'345};
  r.state = JobState::kRunning;
  r.command = {"python", "train.py", "--epochs", "3"};
  r.env = {{"WANDB_PROJECT", "storm"}, {"NCCL_DEBUG", "WARN"}};
  r.workdir = "/home/alice/run";
  r.start_ms = 1'796'294'893'001;
  r.attempt = 1;
  r.tasks.push_back(TaskRecord{.node = "hollow-5262", .allocation = {.gpu_mask = 0x10}, .started = true});
  r.array_of = 10'002;
  r.array_index = 3'455;
  return r;
}

// Times `write` (a function giving the message's text) and reports the text's size.
template <typename Write>
void Measure(benchmark::State& state, Write&& write) {
  size_t bytes = 0;
  for (auto _ : state) {
    const std::string text = write();
    bytes = text.size();
    benchmark::DoNotOptimize(text.data());
  }
  state.counters["bytes"] = static_cast<double>(bytes);
}

void BM_JobToJson(benchmark::State& state) {
  const JobRecord r = RunningElement();
  Measure(state, [&] { return JobToJson(r); });
}
BENCHMARK(BM_JobToJson)->Unit(benchmark::kMicrosecond);

void BM_ReplyToJson_8Launches(benchmark::State& state) {
  HeartbeatReply reply;
  for (int g = 0; g < 8; ++g) {
    TaskLaunch t{.job = 123'457u + static_cast<uint64_t>(g), .task = 0, .attempt = 1, .command = {"python", "train.py"},
                 .workdir = "/home/alice/run", .gpu_mask = static_cast<uint16_t>(1 << g), .cpu = MilliCpu{4000}, .memory = MiB{65536}};
    t.env = {{"GPUPOOL_JOB_ID", std::to_string(t.job)}, {"GPUPOOL_TASK", "0"}, {"GPUPOOL_ATTEMPT", "1"},
             {"CUDA_VISIBLE_DEVICES", std::to_string(g)}, {"GPUPOOL_ARRAY_INDEX", "3455"}, {"SLURM_ARRAY_TASK_ID", "3455"},
             {"RANK", "0"}, {"WORLD_SIZE", "1"}, {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"}};
    reply.start.push_back(std::move(t));
  }
  Measure(state, [&] { return ReplyToJson(reply); });
}
BENCHMARK(BM_ReplyToJson_8Launches)->Unit(benchmark::kMicrosecond);

void BM_HeartbeatToJson_8Gpus(benchmark::State& state) {
  auto sim = SimulatedGpuSource::Parse("8xH100", "n1");
  if (!sim) state.SkipWithError("no simulated GPUs");
  Heartbeat h{.node = "hollow-5262", .host = HostSample{.cpu_cores = 64, .cpu_busy = PerMille{350}}, .gpus = *sim->Sample()};
  for (int i = 0; i < 8; ++i) h.running.push_back(TaskKey{123'457u + static_cast<uint64_t>(i), 0, 1});
  Measure(state, [&] { return HeartbeatToJson(h); });
}
BENCHMARK(BM_HeartbeatToJson_8Gpus)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace gp
