#include "sched/schedule.h"

#include <algorithm>
#include <bit>
#include <limits>
#include <unordered_map>

#include "sched/index.h"

namespace gp {

std::string_view OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kPlaced: return "placed";
    case Outcome::kNotNow: return "not-now";
    case Outcome::kNever: return "never";
  }
  return "?";
}

const std::vector<ReasonCount>& Decision::reasons() const {
  static const std::vector<ReasonCount> kNone;
  return reason_set ? *reason_set : kNone;
}

TaskDemand DemandOf(const JobSpec& s) {
  return TaskDemand{.gpus = s.gpus_per_task, .share = s.gpu_share, .cpu = s.cpu_per_task,
                    .memory = s.memory_per_task};
}

std::vector<size_t> QueueOrderOf(std::span<const PendingJob> pending, const Policy& policy) {
  std::vector<std::pair<QueueKey, size_t>> keyed;
  keyed.reserve(pending.size());
  for (size_t i = 0; i < pending.size(); ++i) keyed.emplace_back(policy.queue->Key(pending[i]), i);
  auto less = [&](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first < b.first;
    const JobId ia = pending[a.second].spec->id;
    const JobId ib = pending[b.second].spec->id;
    return ia != ib ? ia < ib : a.second < b.second;
  };
  if (!std::is_sorted(keyed.begin(), keyed.end(), less)) std::sort(keyed.begin(), keyed.end(), less);
  std::vector<size_t> order;
  order.reserve(keyed.size());
  for (const auto& k : keyed) order.push_back(k.second);
  return order;
}

namespace {

MicroUsd MaxPrice(const std::vector<NodeState>& nodes) {
  MicroUsd m{0};
  for (const NodeState& n : nodes) m = std::max(m, n.price);
  return m;
}

// Which GPUs of the node a task gets. Whole GPUs, NVLink-aware and greedy: the first GPU is,
// for a 1-GPU task, the free one with the fewest free NVLink peers (use up loose GPUs, keep
// connected groups whole) and, for a multi-GPU task, the one with the most (start inside a free
// group); each next GPU is the free one with the most NVLink peers among those chosen. Ties go
// to the lowest index. A share: the GPU with the least free part that still fits (packing
// shares), lowest index on ties.
uint16_t PickGpus(const NodeState& n, const Node& spec, const TaskDemand& d) {
  if (d.gpus == 0) return 0;
  if (d.share < kWholeGpu) {
    int best = -1;
    for (int i = 0; i < n.gpu_count; ++i) {
      if (n.quarantined >> i & 1) continue;
      if (n.gpu_free[i] >= d.share.value() && (best < 0 || n.gpu_free[i] < n.gpu_free[best])) best = i;
    }
    return best < 0 ? 0 : static_cast<uint16_t>(1u << best);
  }
  const uint16_t free = n.WholeFreeMask();
  auto peers_in = [&](int i, uint16_t set) {
    return std::popcount(static_cast<uint16_t>(spec.gpus[i].nvlink_peers & set));
  };
  uint16_t chosen = 0;
  for (int k = 0; k < d.gpus; ++k) {
    int best = -1;
    int best_key = 0;
    for (int i = 0; i < n.gpu_count; ++i) {
      if (!(free >> i & 1) || (chosen >> i & 1)) continue;
      int key = k > 0 ? peers_in(i, chosen) : peers_in(i, free);
      if (k == 0 && d.gpus == 1) key = -key;
      if (best < 0 || key > best_key) {
        best = i;
        best_key = key;
      }
    }
    if (best < 0) return 0;
    chosen = static_cast<uint16_t>(chosen | (1u << best));
  }
  return chosen;
}

struct ShapeKey {
  uint64_t mask;
  int64_t cpu, memory, gpu_memory, price;
  int32_t gpus, share, tasks;
  bool operator==(const ShapeKey&) const = default;
};
struct ShapeHash {
  size_t operator()(const ShapeKey& k) const {
    uint64_t h = k.mask * 0x9E3779B97F4A7C15ULL;
    for (int64_t v : {k.cpu, k.memory, k.gpu_memory, k.price, int64_t{k.gpus}, int64_t{k.share}, int64_t{k.tasks}}) {
      h = (h ^ static_cast<uint64_t>(v)) * 0x100000001B3ULL;
    }
    return static_cast<size_t>(h);
  }
};

bool FitsNodes(const std::vector<NodeState>& nodes, const PendingJob& job, const TaskDemand& d) {
  int64_t tasks = 0;
  for (const NodeState& n : nodes) {
    if (!(job.model_mask >> n.model_bit & 1)) continue;
    if (d.gpus > 0 && n.gpu_memory < job.spec->min_gpu_memory) continue;
    const auto& ceiling = job.spec->max_price_per_gpu_hour;
    if (d.gpus > 0 && ceiling && n.price > *ceiling) continue;
    int64_t fit = job.spec->tasks;
    if (d.gpus > 0) fit = std::min<int64_t>(fit, d.share < kWholeGpu ? n.gpu_count * (1000 / d.share.value()) : n.gpu_count / d.gpus);
    if (d.cpu.value() > 0) fit = std::min(fit, n.cpu_total.value() / d.cpu.value());
    if (d.memory.value() > 0) fit = std::min(fit, n.memory_total.value() / d.memory.value());
    tasks += fit;
    if (tasks >= job.spec->tasks) return true;
  }
  return false;
}

class Pass {
 public:
  Pass(const ClusterSnapshot& snap, const Policy& policy, Rng& rng)
      : snap_(snap), policy_(policy), rng_(rng), nodes_(snap.nodes) {
    index_.Build(nodes_);
    max_price_ = MaxPrice(nodes_);
    for (const NodeState& n : nodes_) {
      for (int i = 0; i < n.gpu_count; ++i) free_gpu_milli_ += n.gpu_free[i];
      total_gpu_milli_ += n.gpu_count * kWholeGpu.value();
    }
  }

  int64_t total_gpu_milli() const { return total_gpu_milli_; }

  // Thousandths of a GPU free in the whole working copy.
  int64_t free_gpu_milli() const { return free_gpu_milli_; }

  // Places every task of the job or none. Returns the allocations, or nullopt.
  std::optional<std::vector<TaskAllocation>> PlaceJob(const PendingJob& job) {
    const TaskDemand d = DemandOf(*job.spec);
    std::vector<TaskAllocation> done;
    std::vector<NodeId> gang;
    done.reserve(static_cast<size_t>(job.spec->tasks));
    for (int t = 0; t < job.spec->tasks; ++t) {
      std::optional<TaskAllocation> a = PlaceTask(job, d, gang);
      if (!a) {
        for (auto it = done.rbegin(); it != done.rend(); ++it) Undo(*it);
        return std::nullopt;
      }
      done.push_back(*a);
      if (std::find(gang.begin(), gang.end(), a->node) == gang.end()) gang.push_back(a->node);
    }
    return done;
  }

  Decision Explain(const PendingJob& job) const;

 private:
  std::optional<TaskAllocation> PlaceTask(const PendingJob& job, const TaskDemand& d,
                                          std::span<const NodeId> gang) {
    const ScoreContext ctx{.fleet = *snap_.fleet, .rng = rng_, .gang_nodes = gang, .max_price = max_price_};
    int64_t best = -1;
    double best_score = -std::numeric_limits<double>::infinity();
    int feasible = 0;
    const int limit = policy_.candidate_limit;
    auto consider = [&](uint32_t pos) {
      const NodeState& n = nodes_[pos];
      for (const auto& f : policy_.filters) {
        if (f->Check(job, d, n)) return true;
      }
      double score = 0;
      for (const WeightedScorer& s : policy_.scorers) score += s.weight * s.scorer->Score(job, d, n, ctx);
      if (score > best_score || (score == best_score && pos < best)) {
        best = pos;
        best_score = score;
      }
      ++feasible;
      return limit == 0 || feasible < limit;
    };
    for (NodeId id : gang) consider(id.value());
    if (limit == 0 || feasible < limit) {
      index_.ForEach(job.model_mask, d.gpus, d.share < kWholeGpu, policy_.order, consider);
    }
    if (best < 0) return std::nullopt;
    NodeState& n = nodes_[static_cast<size_t>(best)];
    TaskAllocation a{.node = n.id, .gpu_mask = PickGpus(n, snap_.fleet->node(n.id), d),
                     .share = d.share, .cpu = d.cpu, .memory = d.memory};
    if (!Allocate(n, a).ok()) return std::nullopt;  // a filter and Allocate disagree: refuse
    free_gpu_milli_ -= std::popcount(a.gpu_mask) * a.share.value();
    index_.Moved(nodes_, static_cast<uint32_t>(best));
    return a;
  }

  void Undo(const TaskAllocation& a) {
    NodeState& n = nodes_[a.node.value()];
    (void)Release(n, a);  // undoing our own Allocate cannot fail
    free_gpu_milli_ += std::popcount(a.gpu_mask) * a.share.value();
    index_.Moved(nodes_, a.node.value());
  }

  const ClusterSnapshot& snap_;
  const Policy& policy_;
  Rng& rng_;
  std::vector<NodeState> nodes_;
  FreeGpuIndex index_;
  MicroUsd max_price_{0};
  int64_t free_gpu_milli_ = 0;
  int64_t total_gpu_milli_ = 0;
};

Decision Pass::Explain(const PendingJob& job) const {
  const TaskDemand d = DemandOf(*job.spec);
  Decision out{.job = job.spec->id};
  std::array<ReasonCount, kReasonCodeCount> counts{};
  int passing = 0;
  for (const NodeState& n : nodes_) {
    std::optional<Reason> r;
    for (const auto& f : policy_.filters) {
      if ((r = f->Check(job, d, n))) break;
    }
    if (!r) {
      ++passing;
      continue;
    }
    ReasonCount& c = counts[static_cast<size_t>(r->code)];
    if (c.nodes++ == 0) c.example = *r;
  }
  std::vector<ReasonCount> reasons;
  for (const ReasonCount& c : counts) {
    if (c.nodes > 0) reasons.push_back(c);
  }
  if (passing > 0) {
    // Some nodes fit one task, but not enough of them for the whole gang at once.
    reasons.push_back({Reason{ReasonCode::kGangSize, job.spec->tasks, passing, 0}, passing});
  }
  std::stable_sort(reasons.begin(), reasons.end(),
                   [](const ReasonCount& a, const ReasonCount& b) { return a.nodes > b.nodes; });
  out.reason_set = std::make_shared<const std::vector<ReasonCount>>(std::move(reasons));
  out.outcome = FitsNodes(nodes_, job, d) ? Outcome::kNotNow : Outcome::kNever;
  return out;
}

}  // namespace

Plan Schedule(const ClusterSnapshot& snapshot, std::span<const PendingJob> pending,
              const Policy& policy, Rng& rng) {
  Plan plan;
  plan.decisions.reserve(pending.size());
  Pass pass(snapshot, policy, rng);
  // Within one pass resources only shrink, so a job shape that failed once fails again: reuse
  // its decision rather than search again (Kubernetes' equivalence classes).
  std::unordered_map<ShapeKey, size_t, ShapeHash> failed;
  // Jobs too big for what is free in the whole cluster, by GPUs needed; cleared on a placement
  // (the free figure in their reason changes).
  std::unordered_map<int64_t, size_t> too_big;
  for (size_t i : QueueOrderOf(pending, policy)) {
    const PendingJob& job = pending[i];
    const JobSpec& s = *job.spec;
    const int64_t need = static_cast<int64_t>(s.tasks) * s.gpus_per_task * s.gpu_share.value();
    if (need > pass.free_gpu_milli()) {
      auto [it, fresh] = too_big.try_emplace(need, plan.decisions.size());
      if (fresh) {
        const Reason r{ReasonCode::kClusterGpus, need, pass.free_gpu_milli(), pass.total_gpu_milli()};
        plan.decisions.push_back(Decision{
            .job = s.id, .outcome = need > pass.total_gpu_milli() ? Outcome::kNever : Outcome::kNotNow,
            .reason_set = std::make_shared<const std::vector<ReasonCount>>(
                std::vector<ReasonCount>{{r, static_cast<int>(snapshot.nodes.size())}})});
      } else {
        const Decision& same = plan.decisions[it->second];
        plan.decisions.push_back(Decision{.job = s.id, .outcome = same.outcome, .reason_set = same.reason_set});
      }
      continue;
    }
    ++plan.searched;
    const ShapeKey key{job.model_mask, s.cpu_per_task.value(), s.memory_per_task.value(),
                       s.min_gpu_memory.value(),
                       s.max_price_per_gpu_hour ? s.max_price_per_gpu_hour->value() : -1,
                       s.gpus_per_task, static_cast<int32_t>(s.gpu_share.value()), s.tasks};
    if (auto it = failed.find(key); it != failed.end()) {
      const Decision& same = plan.decisions[it->second];
      plan.decisions.push_back(Decision{.job = s.id, .outcome = same.outcome, .reason_set = same.reason_set});
      continue;
    }
    if (auto tasks = pass.PlaceJob(job)) {
      plan.placements.push_back(Placement{.job = s.id, .tasks = std::move(*tasks)});
      too_big.clear();
      plan.decisions.push_back(Decision{.job = s.id, .outcome = Outcome::kPlaced});
      continue;
    }
    failed.emplace(key, plan.decisions.size());
    plan.decisions.push_back(pass.Explain(job));
  }
  return plan;
}

bool FitsFleet(const ClusterSnapshot& snapshot, const PendingJob& job) {
  return FitsNodes(snapshot.nodes, job, DemandOf(*job.spec));
}

std::vector<NodeEvaluation> EvaluateNodes(const ClusterSnapshot& snapshot, const PendingJob& job,
                                          const Policy& policy, Rng& rng) {
  const TaskDemand d = DemandOf(*job.spec);
  const ScoreContext ctx{.fleet = *snapshot.fleet, .rng = rng, .gang_nodes = {},
                         .max_price = MaxPrice(snapshot.nodes)};
  std::vector<NodeEvaluation> out;
  for (const NodeState& n : snapshot.nodes) {
    NodeEvaluation e{.node = n.id};
    for (const auto& f : policy.filters) {
      if ((e.rejected = f->Check(job, d, n))) break;
    }
    for (const WeightedScorer& s : policy.scorers) {
      s.scorer->Explain(job, d, n, ctx, e.terms);
      const double score = s.scorer->Score(job, d, n, ctx);
      e.terms.push_back({s.name, score});
      e.total += s.weight * score;
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace gp
