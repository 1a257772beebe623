// How far a candidate limit lands from the exact best: for every policy that scores at most
// `candidate_limit` feasible nodes per task, the same placements made with the limit lifted
// (every feasible node scored), on a mixed fleet of 2,000 nodes (two GPU models, four
// providers with different prices, four sites, random use and live load), 1,000 one-task jobs
// (some with data sets at a site). Counters: exact_pct (placements whose score equals the
// exact best), gap_mean and gap_max (exact best score minus the chosen node's, in the policy's
// own weighted score), and score_range (best minus worst feasible score, for scale). Figures in
// docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <deque>
#include <map>

#include "core/fleet.h"
#include "core/rng.h"
#include "sched/registry.h"
#include "sched/schedule.h"

namespace gp {
namespace {

struct Scene {
  Fleet fleet;
  SchedState state;
  std::deque<JobSpec> specs;
  std::vector<PendingJob> jobs;
};

const Scene& MixedScene() {
  static Scene* scene = [] {
    auto* sc = new Scene;
    Fleet& f = sc->fleet;
    const GpuModelId h100 = *f.InternModel("H100");
    const GpuModelId a100 = *f.InternModel("A100");
    const double h[] = {3.90, 2.49, 2.20, 4.10};
    const double a[] = {1.80, 1.29, 1.10, 2.05};
    for (uint32_t p = 0; p < 4; ++p) {
      f.providers.push_back({.id = ProviderId{p}, .name = "p" + std::to_string(p),
                             .prices = {{h100, PriceTier::kOnDemand, MicroUsd{static_cast<int64_t>(h[p] * 1e6)}},
                                        {a100, PriceTier::kOnDemand, MicroUsd{static_cast<int64_t>(a[p] * 1e6)}}}});
    }
    const double loc[][2] = {{40, -74}, {37, -122}, {50, 8}, {35, 139}};
    for (uint32_t s = 0; s < 4; ++s) {
      f.sites.push_back({.id = SiteId{s}, .name = "s" + std::to_string(s), .location = {loc[s][0], loc[s][1]}});
    }
    SplitMix64 rng(11);
    for (int g = 0; g < 40; ++g) {
      const bool big = g % 2 == 0;
      const Status st = AddNodeGroup(f, {.name_prefix = "g" + std::to_string(g), .count = 50, .gpus = big ? 8 : 4,
                                         .gpu_model = g % 3 == 0 ? "A100" : "H100",
                                         .nic = BitsPerSecond{big ? 100'000'000'000 : 25'000'000'000},
                                         .site = SiteId{static_cast<uint32_t>(g % 4)},
                                         .provider = ProviderId{static_cast<uint32_t>(g / 4 % 4)}});
      if (!st.ok()) std::abort();
    }
    sc->state = SchedState(f);
    for (uint32_t i = 0; i < sc->state.size(); ++i) {
      const NodeState& n = sc->state.nodes()[i];
      const int used = static_cast<int>(rng.Below(static_cast<uint64_t>(n.gpu_count) + 1));
      if (used > 0 && !sc->state.Allocate({.node = NodeId{i}, .gpu_mask = static_cast<uint16_t>((1u << used) - 1)}).ok()) std::abort();
      sc->state.Update(NodeId{i}, [&](NodeState& s) {
        s.load.cpu = PerMille{static_cast<int64_t>(rng.Below(1000))};
        s.load.memory = PerMille{static_cast<int64_t>(rng.Below(1000))};
      });
    }
    for (int j = 0; j < 1000; ++j) {
      JobSpec s{.id = JobId{static_cast<uint64_t>(j + 1)}, .gpus_per_task = 1 << rng.Below(4)};
      if (rng.Below(2) == 0) {
        s.data = DataSet{.site = "s" + std::to_string(rng.Below(4)), .size = Bytes{static_cast<int64_t>(rng.Below(500)) * 1'000'000'000}};
      }
      sc->specs.push_back(s);
    }
    for (const JobSpec& s : sc->specs) sc->jobs.push_back(*CompileJob(s, f));
    return sc;
  }();
  return *scene;
}

void BM_CandidateLimitGap(benchmark::State& state, const std::string& name) {
  const Scene& sc = MixedScene();
  const Policy limited = *BuiltinRegistry().MakePolicy(name);
  Policy exact = *BuiltinRegistry().MakePolicy(name);
  exact.candidate_limit = 0;
  int64_t same = 0, placed = 0;
  double gap_sum = 0, gap_max = 0, range_sum = 0;
  for (auto _ : state) {
    for (const PendingJob& job : sc.jobs) {
      const std::vector<PendingJob> one{job};
      SplitMix64 r1(1), r2(1), r3(1);
      const Plan a = Schedule(sc.state, one, limited, r1);
      const Plan b = Schedule(sc.state, one, exact, r2);
      if (a.placements.empty() || b.placements.empty()) continue;
      std::map<uint32_t, double> total;
      double lo = 1e300, hi = -1e300;
      for (const NodeEvaluation& e : EvaluateNodes(sc.state, job, exact, r3)) {
        if (e.rejected) continue;
        total[e.node.value()] = e.total;
        lo = std::min(lo, e.total);
        hi = std::max(hi, e.total);
      }
      const double gap = total[b.placements[0].tasks[0].node.value()] - total[a.placements[0].tasks[0].node.value()];
      ++placed;
      same += gap <= 1e-12;
      gap_sum += gap;
      gap_max = std::max(gap_max, gap);
      range_sum += hi - lo;
    }
  }
  state.counters["exact_pct"] = placed ? 100.0 * static_cast<double>(same) / static_cast<double>(placed) : 0;
  state.counters["gap_mean"] = placed ? gap_sum / static_cast<double>(placed) : 0;
  state.counters["gap_max"] = gap_max;
  state.counters["score_range"] = placed ? range_sum / static_cast<double>(placed) : 0;
  state.counters["limit"] = limited.candidate_limit;
}

// Every policy with a limit, but random (its scores are draws: no best to land near).
BENCHMARK_CAPTURE(BM_CandidateLimitGap, balanced, std::string("balanced"))->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CandidateLimitGap, fifo, std::string("fifo"))->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CandidateLimitGap, least_loaded, std::string("least-loaded"))->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CandidateLimitGap, spread, std::string("spread"))->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CandidateLimitGap, cost, std::string("cost"))->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_CandidateLimitGap, data_local, std::string("data-local"))->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace gp
