// What one heartbeat costs the server, at fleet size: parsing its body (the codec; host sample
// and 8 GPU samples, no task changes) and handling it (Controller::Heartbeat: liveness,
// telemetry into the scheduling state, GPU health checks, task reports), on a controller with N
// registered nodes (in-memory journal, manual clock). Figures in docs/benchmarks.md: the base
// line for making heartbeats cheap at 10,000 nodes.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "controller/controller.h"
#include "core/clock.h"
#include "telemetry/gpu_source.h"
#include "observe/metrics.h"
#include "wire/codec.h"

namespace gp {
namespace {

struct Pool {
  MemoryJournal journal;
  ManualClock clock{Millis{1'000'000}};
  std::unique_ptr<Controller> c;
  std::vector<Heartbeat> beats;
};

std::unique_ptr<Pool> MakePool(int nodes) {
  auto p = std::make_unique<Pool>();
  p->c = std::make_unique<Controller>(Fleet{}, p->journal, p->clock, ControllerOptions{.checkpoint_root = "/ckpt"},
                                      std::move(*BuiltinRegistry().MakePolicy("fifo")));
  for (int i = 0; i < nodes; ++i) {
    const std::string name = "node-" + std::to_string(i);
    auto sim = SimulatedGpuSource::Parse("8xH100", name);
    if (!sim) std::abort();
    RegisterRequest r{.name = name, .address = "10.0.0.1", .cpu_cores = 64, .memory_mib = 1024 * 1024,
                      .gpu_source = "simulated", .gpus = *sim->Devices()};
    if (!p->c->Register(r)) std::abort();
    Heartbeat h{.node = name};
    h.host = HostSample{.cpu_cores = 64, .cpu_busy = PerMille{350}};
    h.host.memory.total = MiB{1024 * 1024};
    h.host.memory.available = MiB{700 * 1024};
    h.gpus = *sim->Sample();
    p->beats.push_back(std::move(h));
  }
  return p;
}

void BM_HeartbeatParse(benchmark::State& state) {
  auto p = MakePool(1);
  const std::string body = HeartbeatToJson(p->beats[0]);
  for (auto _ : state) benchmark::DoNotOptimize(ParseHeartbeat(body));
  state.counters["bytes"] = static_cast<double>(body.size());
}
BENCHMARK(BM_HeartbeatParse)->Unit(benchmark::kMicrosecond);

// A heartbeat with nothing new (the telemetry is sent once per sample, not with every poll):
// the node's name, its running attempts and the wait, as a hollow or an idle agent sends it.
void BM_HeartbeatParseQuiet(benchmark::State& state) {
  auto p = MakePool(1);
  Heartbeat h = p->beats[0];
  h.telemetry = false;
  for (int t = 0; t < 8; ++t) h.running.push_back(TaskKey{static_cast<uint64_t>(1000 + t), 0, 1});
  h.wait_ms = 1000;
  const std::string body = HeartbeatToJson(h);
  for (auto _ : state) benchmark::DoNotOptimize(ParseHeartbeat(body));
  state.counters["bytes"] = static_cast<double>(body.size());
}
BENCHMARK(BM_HeartbeatParseQuiet)->Unit(benchmark::kMicrosecond);

void BM_HeartbeatHandleQuiet(benchmark::State& state) {
  auto p = MakePool(static_cast<int>(state.range(0)));
  for (Heartbeat& h : p->beats) h.telemetry = false;
  size_t i = 0;
  for (auto _ : state) {
    p->clock.Advance(Millis{1});
    benchmark::DoNotOptimize(p->c->Heartbeat(p->beats[i]));
    i = (i + 1) % p->beats.size();
  }
}
BENCHMARK(BM_HeartbeatHandleQuiet)->Arg(100)->Arg(1'000)->Arg(10'000)->Unit(benchmark::kMicrosecond);

void BM_HeartbeatHandle(benchmark::State& state) {
  auto p = MakePool(static_cast<int>(state.range(0)));
  size_t i = 0;
  for (auto _ : state) {
    p->clock.Advance(Millis{1});
    benchmark::DoNotOptimize(p->c->Heartbeat(p->beats[i]));
    i = (i + 1) % p->beats.size();
  }
}
BENCHMARK(BM_HeartbeatHandle)->Arg(100)->Arg(1'000)->Arg(10'000)->Unit(benchmark::kMicrosecond);

// A scrape of the server's /metrics: the fleet's series, and every node's (7 a node) and, with
// the second argument 1, every GPU's (6 a GPU, 8 GPUs a node), written as Prometheus text on
// the server's loop. The server writes the GPUs' series up to --metrics-gpu-series-nodes
// (1,000 by default).
void BM_MetricsScrape(benchmark::State& state) {
  auto p = MakePool(static_cast<int>(state.range(0)));
  for (const Heartbeat& h : p->beats) (void)p->c->Heartbeat(h);
  size_t bytes = 0;
  for (auto _ : state) {
    Families out;
    p->c->CollectMetrics(out);
    std::string text = SerializeText(out);
    p->c->WriteNodeMetrics(text, state.range(1) != 0);
    bytes = text.size();
    benchmark::DoNotOptimize(text.data());
  }
  state.counters["bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_MetricsScrape)->Args({1'000, 1})->Args({10'000, 1})->Args({10'000, 0})->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace gp
