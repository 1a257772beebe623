// Built-in scorers. Each returns a score in [0, 1], higher better; a policy sums them with
// weights. Explain() exposes the raw terms for `place --explain`.
#include <algorithm>
#include <cmath>

#include "core/models.h"
#include "sched/registry.h"

namespace gp {
namespace {

// The seed's load model on live telemetry (plus what this pass already placed):
// R = cpu + gpu + memory fractions, L = R / U; score = 1 - L / 3, so the least-loaded node wins.
// Seed 4.2: L = 1.8, 1.6, 1.4, 0.8 -> scores 0.40, 0.47, 0.53, 0.73: node 4.
class LeastLoaded final : public Scorer {
 public:
  double Score(const PendingJob&, const TaskDemand&, const NodeState& n, const ScoreContext&) const override {
    return 1.0 - std::clamp(ComputeLoad(n.load).l, 0.0, 3.0) / 3.0;
  }
  void Explain(const PendingJob&, const TaskDemand&, const NodeState& n, const ScoreContext&,
               std::vector<ScoreTerm>& out) const override {
    const LoadTerms t = ComputeLoad(n.load);
    out.push_back({"cpu", static_cast<double>(n.load.cpu.value()) / 1000});
    out.push_back({"gpu", static_cast<double>(n.load.gpu.value()) / 1000});
    out.push_back({"mem", static_cast<double>(n.load.memory.value()) / 1000});
    out.push_back({"R", t.r});
    out.push_back({"L", t.l});
  }
};

// Fraction of the node's GPUs (CPU for a CPU-only task) still free after the task lands.
double FreeAfter(const TaskDemand& d, const NodeState& n) {
  if (d.gpus > 0 && n.gpu_count > 0) {
    const double used = d.share < kWholeGpu ? static_cast<double>(d.share.value()) / 1000.0 : d.gpus;
    double free = 0;
    for (int i = 0; i < n.gpu_count; ++i) free += n.gpu_free[i] / 1000.0;
    return std::max(0.0, free - used) / n.gpu_count;
  }
  if (n.cpu_total.value() <= 0) return 0;
  return static_cast<double>((n.cpu_free - d.cpu).value()) / static_cast<double>(n.cpu_total.value());
}

// Packing against fragmentation: the fuller the node after placement, the better. A CPU-only
// task scores half on a GPU node, so CPU work leaves GPU nodes to GPU work.
class BestFit final : public Scorer {
 public:
  double Score(const PendingJob&, const TaskDemand& d, const NodeState& n, const ScoreContext&) const override {
    const double s = 1.0 - FreeAfter(d, n);
    return (d.gpus == 0 && n.gpu_count > 0) ? s / 2 : s;
  }
  void Explain(const PendingJob&, const TaskDemand& d, const NodeState& n, const ScoreContext&,
               std::vector<ScoreTerm>& out) const override {
    out.push_back({"free_after", FreeAfter(d, n)});
  }
};

class Spread final : public Scorer {
 public:
  double Score(const PendingJob&, const TaskDemand& d, const NodeState& n, const ScoreContext&) const override {
    return FreeAfter(d, n);
  }
};

// Cheaper GPU-hours score higher: 1 - price / the fleet's highest price.
class Cost final : public Scorer {
 public:
  double Score(const PendingJob&, const TaskDemand& d, const NodeState& n, const ScoreContext& c) const override {
    if (d.gpus == 0 || c.max_price.value() <= 0) return 1.0;
    return 1.0 - static_cast<double>(n.price.value()) / static_cast<double>(c.max_price.value());
  }
  void Explain(const PendingJob&, const TaskDemand&, const NodeState& n, const ScoreContext&,
               std::vector<ScoreTerm>& out) const override {
    out.push_back({"usd_per_gpu_h", static_cast<double>(n.price.value()) / kMicroUsdPerUsd});
  }
};

TransferEstimate TransferFor(const PendingJob& j, const NodeState& n, const ScoreContext& c) {
  if (!j.data_site || !j.spec->data) return {};
  return EstimateTransfer(j.spec->data->size, c.fleet.PathBetween(*j.data_site, n.site), n.nic);
}

// Time to bring the job's data to the node: score = 1 / (1 + T / 60 s), so data already on
// site scores near 1, a minute away 0.5, ten minutes away 0.09.
class TransferTime final : public Scorer {
 public:
  double Score(const PendingJob& j, const TaskDemand&, const NodeState& n, const ScoreContext& c) const override {
    const double t = static_cast<double>(TransferFor(j, n, c).time.value()) / 1e6;
    return 1.0 / (1.0 + t / 60.0);
  }
  void Explain(const PendingJob& j, const TaskDemand&, const NodeState& n, const ScoreContext& c,
               std::vector<ScoreTerm>& out) const override {
    const TransferEstimate e = TransferFor(j, n, c);
    out.push_back({"transfer_s", static_cast<double>(e.time.value()) / 1e6});
    out.push_back({"egress_usd", static_cast<double>(e.egress_cost.value()) / kMicroUsdPerUsd});
  }
};

// Tasks of one gang prefer nodes that already hold a task of it (fewer network hops).
class GangLocality final : public Scorer {
 public:
  double Score(const PendingJob&, const TaskDemand&, const NodeState& n, const ScoreContext& c) const override {
    return std::find(c.gang_nodes.begin(), c.gang_nodes.end(), n.id) != c.gang_nodes.end() ? 1.0 : 0.0;
  }
};

// First fit: the lowest node id wins (with every feasible node scored: the first in id order
// that fits), the placement Tiresias' simulator uses.
class FirstFit final : public Scorer {
 public:
  double Score(const PendingJob&, const TaskDemand&, const NodeState& n, const ScoreContext& c) const override {
    return 1.0 - static_cast<double>(n.id.value()) / (static_cast<double>(c.fleet.nodes.size()) + 1.0);
  }
};

// A seeded random score: the baseline a researcher compares against.
class RandomScore final : public Scorer {
 public:
  double Score(const PendingJob&, const TaskDemand&, const NodeState&, const ScoreContext& c) const override {
    return c.rng.Unit();
  }
};

}  // namespace

void RegisterScorers(Registry& r) {
  r.AddScorer("least-loaded", "the seed's L = R / U from live telemetry; lower load wins", Registry::Of<Scorer, LeastLoaded>());
  r.AddScorer("best-fit", "fullest node after placement (packing, against fragmentation)", Registry::Of<Scorer, BestFit>());
  r.AddScorer("spread", "emptiest node after placement", Registry::Of<Scorer, Spread>());
  r.AddScorer("cost", "cheaper GPU-hour wins", Registry::Of<Scorer, Cost>());
  r.AddScorer("transfer-time", "shorter time to move the job's data to the node wins", Registry::Of<Scorer, TransferTime>());
  r.AddScorer("gang-locality", "nodes already holding a task of the same gang win", Registry::Of<Scorer, GangLocality>());
  r.AddScorer("random", "seeded random (a baseline)", Registry::Of<Scorer, RandomScore>());
  r.AddScorer("first-fit", "the lowest node id that fits (Tiresias' placement)", Registry::Of<Scorer, FirstFit>());
}

}  // namespace gp
