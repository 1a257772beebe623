// Planning capacity for a backlog: PlanCapacity over J waiting jobs and O offers (seeded, a
// mix of shapes: 1 to 8 GPUs a task, a tenth of them gangs of 2 x 8, some bound to a model, a
// price or on-demand only; offers from 4 providers at 20 sites in 5 regions, 4 models, 1 to 8
// GPUs a node, on-demand and spot; the third argument: the percentage of jobs whose data set
// lives at a site, 1 GiB to 1 TiB, which makes the cheapest offer theirs alone). The target: 10,000 jobs over 2,000 offers in under 1 s
// p99 on one core (the `max` of 20 repetitions stands for it). Figures in docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <fmt/format.h>

#include <algorithm>
#include <random>
#include <vector>

#include "core/units.h"
#include "sched/provision.h"

namespace gp {
namespace {

Fleet OfferFleet(int offers, std::mt19937_64& rng) {
  Fleet f;
  for (int p = 0; p < 4; ++p) {
    f.providers.push_back(Provider{.id = ProviderId{static_cast<uint32_t>(p)}, .name = fmt::format("p{}", p), .max_gpus = 20'000});
  }
  for (int s = 0; s < 20; ++s) {
    f.sites.push_back(Site{.id = SiteId{static_cast<uint32_t>(s)}, .name = fmt::format("s{}", s), .region = fmt::format("r{}", s % 5)});
  }
  const char* models[] = {"H100", "A100", "L4", "H200"};
  const int gpus[] = {1, 2, 4, 8};
  for (int i = 0; i < offers; ++i) {
    const GpuModelId m = *f.InternModel(models[rng() % 4]);
    const int g = gpus[rng() % 4];
    const bool spot = rng() % 3 == 0;
    f.offers.push_back(Offer{.name = fmt::format("o{}", i), .provider = ProviderId{static_cast<uint32_t>(rng() % 4)},
                             .site = SiteId{static_cast<uint32_t>(rng() % 20)}, .model = m, .gpus = g,
                             .gpu_memory = f.model(m).memory, .cpu = MilliCpu{g * 8000}, .memory = MiB{g * 65536},
                             .tier = spot ? PriceTier::kSpot : PriceTier::kOnDemand,
                             .price_per_hour = MicroUsd{static_cast<int64_t>(g) * (500'000 + static_cast<int64_t>(rng() % 4'000'000))},
                             .max_nodes = static_cast<int>(1 + rng() % 40), .available = rng() % 20 != 0});
  }
  f.autoscale.max_per_hour = UsdToMicro(200'000);
  return f;
}

std::vector<CapacityDemand> Backlog(int jobs, int data_percent, std::mt19937_64& rng) {
  std::vector<CapacityDemand> out;
  const int gpus[] = {1, 1, 2, 4, 8};
  for (int j = 0; j < jobs; ++j) {
    CapacityDemand d{.job = JobId{static_cast<uint64_t>(j + 1)}, .gpus_per_task = gpus[rng() % 5]};
    if (rng() % 10 == 0) {
      d.tasks = 2;
      d.gpus_per_task = 8;
    }
    if (rng() % 5 == 0) d.models = {GpuModelId{static_cast<uint8_t>(rng() % 4)}};
    if (rng() % 10 == 0) d.max_price_per_gpu_hour = MicroUsd{2'000'000};
    d.spot_ok = rng() % 5 != 0;
    if (static_cast<int>(rng() % 100) < data_percent) {
      d.data_site = SiteId{static_cast<uint32_t>(rng() % 20)};
      d.data_size = Bytes{int64_t{1} << (30 + rng() % 11)};
      d.expected_run = Millis{static_cast<int64_t>(1 + rng() % 10) * 3'600'000};
    }
    out.push_back(std::move(d));
  }
  return out;
}

void BM_PlanCapacity(benchmark::State& state) {
  std::mt19937_64 rng(42);
  const Fleet fleet = OfferFleet(static_cast<int>(state.range(1)), rng);
  const std::vector<CapacityDemand> jobs = Backlog(static_cast<int>(state.range(0)), static_cast<int>(state.range(2)), rng);
  size_t nodes = 0;
  size_t unmet = 0;
  for (auto _ : state) {
    const ProvisionPlan p = PlanCapacity(fleet, ProvisionInput{.demands = jobs});
    nodes = p.create.size();
    unmet = p.unmet.size();
    benchmark::DoNotOptimize(p.create.data());
  }
  state.counters["nodes_planned"] = static_cast<double>(nodes);
  state.counters["jobs_unmet"] = static_cast<double>(unmet);
}
BENCHMARK(BM_PlanCapacity)
    ->Args({1'000, 200, 0})
    ->Args({10'000, 2'000, 0})
    ->Args({10'000, 2'000, 10})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1)
    ->Repetitions(20)
    ->ComputeStatistics("max", [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); });

}  // namespace
}  // namespace gp
