// Simulation speed: whole traces replayed through Schedule(). Reports jobs simulated per second
// and the process's peak resident memory after the run.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cstdlib>

#include "core/fleet.h"
#include "sim/engine.h"

namespace gp {
namespace {

std::string Traces() {
  const char* env = std::getenv("GPUPOOL_TRACES");
  return env && *env ? env : GP_TRACES_DEFAULT;
}

double PeakRssMiB() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

void RunTrace(benchmark::State& state, const std::string& path, const std::string& fleet_spec, const std::string& policy_name) {
  auto trace = ReadTrace(Traces() + "/" + path, "", {});
  if (!trace) {
    state.SkipWithError(trace.error().message().c_str());
    return;
  }
  const Fleet fleet = *ParseFleetShorthand(fleet_spec);
  const Policy policy = *BuiltinRegistry().MakePolicy(policy_name);
  for (auto _ : state) {
    auto r = RunSimulation(fleet, *trace, policy, {.seed = 1});
    benchmark::DoNotOptimize(r);
  }
  state.counters["jobs/s"] = benchmark::Counter(static_cast<double>(trace->jobs.size()) * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
  state.counters["peak_rss_MiB"] = PeakRssMiB();
}

void BM_Sim_PhillyFull_Fifo(benchmark::State& s) { RunTrace(s, "pollux-philly/philly.csv", "256x8xV100", "fifo"); }
void BM_Sim_PhillyFull_Balanced(benchmark::State& s) { RunTrace(s, "pollux-philly/philly.csv", "256x8xV100", "balanced"); }
// A loaded cluster (queues form): the same trace on 64 nodes.
void BM_Sim_PhillyFull_Fifo_512Gpus(benchmark::State& s) { RunTrace(s, "pollux-philly/philly.csv", "64x8xV100", "fifo"); }
void BM_Sim_Alibaba_Default(benchmark::State& s) {
  RunTrace(s, "alibaba-gpu-v2023/csv/openb_pod_list_default.csv", "200x8xV100", "fifo");
}
void BM_Sim_Shockwave_900(benchmark::State& s) {
  RunTrace(s, "shockwave/traces/900_0.2_5_100_5_15_0,0.5,0.5_0.6,0.3,0.09,0.01_multigpu_dynamic.trace", "16x4xV100", "fifo");
}

BENCHMARK(BM_Sim_PhillyFull_Fifo)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_Sim_PhillyFull_Balanced)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_Sim_PhillyFull_Fifo_512Gpus)->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK(BM_Sim_Alibaba_Default)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_Sim_Shockwave_900)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
}  // namespace gp
