#include "sched/schedule.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <unordered_map>

#include "core/models.h"
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

// Whether the classes of node could hold every task of the job at once, whatever is in use.
bool FitsClasses(const std::map<CapacityKey, int>& classes, const PendingJob& job, const TaskDemand& d) {
  int64_t tasks = 0;
  for (const auto& [c, count] : classes) {
    if (!(job.model_mask >> c.model_bit & 1)) continue;
    if (d.gpus > 0 && c.gpu_memory < job.spec->min_gpu_memory.value()) continue;
    const auto& ceiling = job.spec->max_price_per_gpu_hour;
    if (d.gpus > 0 && ceiling && c.price > ceiling->value()) continue;
    int64_t fit = job.spec->tasks;
    if (d.gpus > 0) fit = std::min<int64_t>(fit, d.share < kWholeGpu ? c.gpu_count * (1000 / d.share.value()) : c.gpu_count / d.gpus);
    if (d.cpu.value() > 0) fit = std::min(fit, c.cpu_total / d.cpu.value());
    if (d.memory.value() > 0) fit = std::min(fit, c.memory_total / d.memory.value());
    tasks += fit * count;
    if (tasks >= job.spec->tasks) return true;
  }
  return false;
}

std::optional<Reason> FirstRejection(const Policy& policy, const PendingJob& job, const TaskDemand& d, const NodeState& n,
                                     const TenantView& view) {
  for (const auto& f : policy.filters) {
    if (auto r = f->Check(job, d, n)) return r;
  }
  for (const auto& a : policy.admissions) {
    if (auto r = a->Check(job, d, n, view)) return r;
  }
  return std::nullopt;
}

// Whether every admission stage could ever admit the job (else it never runs).
bool EverAdmitted(const Policy& policy, const PendingJob& job, const TenantView& view) {
  return std::all_of(policy.admissions.begin(), policy.admissions.end(),
                     [&](const auto& a) { return a->Ever(job, view); });
}

TenantView ViewOf(const SchedState& st, const TenantPassUse& pass) {
  return TenantView{.book = st.tenants(), .pass = pass, .total_gpu_milli = st.total_gpu_milli(), .total_cpu = st.total_cpu(),
                    .total_memory = st.total_memory()};
}

// Reason counts, most nodes first, then by reason code; with kGangSize when some nodes passed.
std::shared_ptr<const std::vector<ReasonCount>> Tallied(const std::array<ReasonCount, kReasonCodeCount>& counts,
                                                        int passing, int tasks) {
  std::vector<ReasonCount> reasons;
  for (const ReasonCount& c : counts) {
    if (c.nodes > 0) reasons.push_back(c);
  }
  if (passing > 0) {
    // Some nodes fit one task, but not enough of them for the whole gang at once.
    reasons.push_back({Reason{ReasonCode::kGangSize, tasks, passing, 0}, passing});
  }
  // A quota refusal comes first whatever its count: those nodes would take the task but for the
  // tenant's quota, so the quota is what the job waits for.
  std::stable_sort(reasons.begin(), reasons.end(), [](const ReasonCount& a, const ReasonCount& b) {
    const bool qa = a.example.code == ReasonCode::kQuota, qb = b.example.code == ReasonCode::kQuota;
    return qa != qb ? qa : a.nodes > b.nodes;
  });
  return std::make_shared<const std::vector<ReasonCount>>(std::move(reasons));
}

void Count(std::array<ReasonCount, kReasonCodeCount>& counts, const Reason& r, int nodes = 1) {
  ReasonCount& c = counts[static_cast<size_t>(r.code)];
  if (c.nodes == 0) c.example = r;
  c.nodes += nodes;
}

// One pass over the state. The nodes it changes are copies (copies_), and the free-GPU index
// is seen through an overlay of those copies: the state itself is never written.
class Pass {
 public:
  Pass(const SchedState& st, const Policy& policy, Rng& rng)
      : st_(st), policy_(policy), rng_(rng), view_(ViewOf(st, pass_use_)), overlay_(st.index()),
        free_gpu_milli_(st.free_gpu_milli()), max_price_(st.max_price()) {
    slot_order_.slots = st.index().ordered();
    if (policy.order == CandidateOrder::kCheapestFirst) {
      const auto& slots = st.index().slots();
      std::stable_sort(slot_order_.slots.begin(), slot_order_.slots.end(), [&](int32_t a, int32_t b) {
        return slots[static_cast<size_t>(a)].key.price < slots[static_cast<size_t>(b)].key.price;
      });
      for (int32_t s : slot_order_.slots) slot_order_.rank.push_back(slots[static_cast<size_t>(s)].key.price);
    }
    // What is held for jobs that preempted (their victims are stopping) is taken, as far as it
    // is free now; the rest is still the victims'.
    for (const auto& [id, tasks] : st.reservations()) {
      for (const TaskAllocation& a : tasks) {
        if (a.node.value() >= st.size()) continue;
        const TaskAllocation part = FreePart(Node(a.node.value()), a);
        if (part.gpu_mask == 0 && part.cpu.value() == 0 && part.memory.value() == 0) continue;
        NodeState& n = Touch(a.node.value());
        if (!Allocate(n, part).ok()) continue;  // no task slot left: nothing more to hold
        free_gpu_milli_ -= std::popcount(part.gpu_mask) * part.share.value();
        overlay_.Place(a.node.value(), n);
      }
    }
  }

  int64_t total_gpu_milli() const { return st_.total_gpu_milli(); }
  // The tenants as this pass sees them (with its own placements).
  const TenantView& view() const { return view_; }
  // Thousandths of a GPU free in the whole cluster, as this pass sees it.
  int64_t free_gpu_milli() const { return free_gpu_milli_; }

  // Places every task of the job or none. Returns the allocations, or nullopt.
  std::optional<std::vector<TaskAllocation>> PlaceJob(const PendingJob& job) {
    const TaskDemand d = DemandOf(*job.spec);
    const SlotOrder& order = SlotOrderFor(job);
    std::vector<TaskAllocation> done;
    std::vector<NodeId> gang;
    done.reserve(static_cast<size_t>(job.spec->tasks));
    for (int t = 0; t < job.spec->tasks; ++t) {
      std::optional<TaskAllocation> a = PlaceTask(job, d, gang, order);
      if (!a) {
        for (auto it = done.rbegin(); it != done.rend(); ++it) Undo(*it, job.tenant);
        return std::nullopt;
      }
      done.push_back(*a);
      if (std::find(gang.begin(), gang.end(), a->node) == gang.end()) gang.push_back(a->node);
    }
    return done;
  }

  // The cheapest victims that make room for the job, and where it then runs (FindPreemption).
  std::optional<Preemption> Preempt(const PendingJob& job, Millis now);

  // Backfill: when and where the job could start as the running jobs end by their expected
  // ends (the overlay is left as it was), with the earlier reservations held throughout.
  std::optional<Reservation> Reserve(const PendingJob& job, Millis now);
  void AddReservation(Reservation r) { reservations_.push_back(std::move(r)); }
  const std::vector<Reservation>& reservations() const { return reservations_; }
  // Holds what is free now of every reservation that starts after `after_ms` and before
  // `until_ms` (-1: whenever); Unhold gives it back. Whether anything was held.
  bool Hold(int64_t after_ms, int64_t until_ms);
  void Unhold();

  // Why the job (which just failed to place) waits: its first task judged on every candidate
  // the index offers; the nodes it passes over counted under the index's own reason.
  Decision Explain(const PendingJob& job) const;
  // Inconsistencies the pass found (a bug if ever any).
  std::vector<Status>& internal() { return internal_; }

 private:
  const NodeState& Node(uint32_t pos) const {
    if (overlay_.Hides(pos)) return copies_.find(pos)->second;
    return st_.nodes()[pos];
  }
  NodeState& Touch(uint32_t pos) { return copies_.try_emplace(pos, st_.nodes()[pos]).first->second; }

  // The slots in the order this job's candidates are visited.
  // Nearest first: by the time to bring the job's data to the class's site through its NIC
  // (a job without data: all one rank, so the tightest node comes first, as for packing).
  const SlotOrder& SlotOrderFor(const PendingJob& job) {
    if (policy_.order != CandidateOrder::kNearestFirst || !job.data_site || !job.spec->data) return slot_order_;
    const auto& slots = st_.index().slots();
    std::vector<std::pair<int64_t, int32_t>> keyed;
    keyed.reserve(slot_order_.slots.size());
    for (int32_t s : slot_order_.slots) {
      const SlotKey& k = slots[static_cast<size_t>(s)].key;
      const TransferEstimate e = EstimateTransfer(job.spec->data->size, st_.fleet().PathBetween(*job.data_site, SiteId{k.site}),
                                                  BitsPerSecond{k.nic});
      keyed.emplace_back(e.time.value(), s);
    }
    std::stable_sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    nearest_.slots.clear();
    nearest_.rank.clear();
    for (const auto& [t, s] : keyed) {
      nearest_.slots.push_back(s);
      nearest_.rank.push_back(t);
    }
    return nearest_;
  }

  std::optional<TaskAllocation> PlaceTask(const PendingJob& job, const TaskDemand& d, std::span<const NodeId> gang,
                                          const SlotOrder& order) {
    const ScoreContext ctx{.fleet = st_.fleet(), .rng = rng_, .gang_nodes = gang, .max_price = max_price_};
    int64_t best = -1;
    double best_score = -std::numeric_limits<double>::infinity();
    int feasible = 0;
    const int limit = policy_.candidate_limit;
    auto consider = [&](uint32_t pos) {
      const NodeState& n = Node(pos);
      for (const auto& f : policy_.filters) {
        if (f->Check(job, d, n)) return true;
      }
      for (const auto& adm : policy_.admissions) {
        if (adm->Check(job, d, n, view_)) return true;
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
      ForEachCandidate(st_.index(), overlay_, job.model_mask, d.gpus, d.share < kWholeGpu, policy_.order, order, consider);
    }
    if (best < 0) return std::nullopt;
    const auto pos = static_cast<uint32_t>(best);
    NodeState& n = Touch(pos);
    TaskAllocation a{.node = n.id, .gpu_mask = PickGpus(n, st_.fleet().node(n.id), d), .share = d.share, .cpu = d.cpu,
                     .memory = d.memory};
    if (Status s = Allocate(n, a); !s.ok()) {
      // The filters passed the node and Allocate refuses it: a bug, reported as one (the job is
      // not placed, and the owner counts and reports the inconsistency; never a plain "not now").
      internal_.push_back(Status(StatusCode::kInternal, fmt::format("job {}: node {} passed every filter, but Allocate refused: {}",
                                                                    job.spec->id.value(), n.id.value(), s.message())));
      return std::nullopt;
    }
    free_gpu_milli_ -= std::popcount(a.gpu_mask) * a.share.value();
    overlay_.Place(pos, n);
    pass_use_.Add(st_.tenants(), job.tenant, n.model_bit, UseOf(a), +1);
    return a;
  }

  // A running job's use, off (-1) or back on (+1) the tenants' books of this pass.
  void ChargeTasks(const std::vector<TaskAllocation>& tasks, TenantIndex tenant, int sign) {
    for (const TaskAllocation& a : tasks) pass_use_.Add(st_.tenants(), tenant, st_.node(a.node).model_bit, UseOf(a), sign);
  }
  void ChargeRunning(const RunningJob& r, int sign) { ChargeTasks(r.tasks, r.tenant, sign); }

 public:
  // This pass's placements, with their expected ends (backfill counts them as running).
  struct PassPlaced {
    uint64_t id;
    int64_t end;
    TenantIndex tenant;
    std::vector<TaskAllocation> tasks;
  };
  void Placed(const PendingJob& job, const std::vector<TaskAllocation>& tasks, Millis now) {
    placed_.push_back(PassPlaced{job.spec->id.value(), ExpectedEnd(*job.spec, now), job.tenant, tasks});
  }

 private:

  void Undo(const TaskAllocation& a, TenantIndex tenant) {
    NodeState& n = Touch(a.node.value());
    if (Status s = Release(n, a); !s.ok()) {  // undoing this pass's own Allocate cannot fail
      internal_.push_back(Status(StatusCode::kInternal, fmt::format("node {}: undoing a placement of this pass failed: {}",
                                                                    a.node.value(), s.message())));
      return;
    }
    free_gpu_milli_ += std::popcount(a.gpu_mask) * a.share.value();
    overlay_.Place(a.node.value(), n);
    pass_use_.Add(st_.tenants(), tenant, n.model_bit, UseOf(a), -1);
  }

  const SchedState& st_;
  const Policy& policy_;
  Rng& rng_;
  TenantPassUse pass_use_;
  TenantView view_;
  IndexOverlay overlay_;
  std::unordered_map<uint32_t, NodeState> copies_;
  int64_t free_gpu_milli_ = 0;
  MicroUsd max_price_{0};
  SlotOrder slot_order_;
  SlotOrder nearest_;
  std::vector<Status> internal_;
  std::vector<Reservation> reservations_;
  std::vector<TaskAllocation> held_;  // parts of reservations held now
  std::vector<PassPlaced> placed_;    // under backfill only
};

bool Pass::Hold(int64_t after_ms, int64_t until_ms) {
  for (const Reservation& r : reservations_) {
    if (r.start.value() <= after_ms) continue;                    // already in place (Reserve's walk)
    if (until_ms >= 0 && until_ms <= r.start.value()) continue;  // it ends before this one starts
    for (const TaskAllocation& a : r.tasks) {
      const TaskAllocation part = FreePart(Node(a.node.value()), a);
      if (part.gpu_mask == 0 && part.cpu.value() == 0 && part.memory.value() == 0) continue;
      NodeState& n = Touch(a.node.value());
      if (!Allocate(n, part).ok()) continue;
      free_gpu_milli_ -= std::popcount(part.gpu_mask) * part.share.value();
      overlay_.Place(a.node.value(), n);
      held_.push_back(part);
    }
  }
  return !held_.empty();
}

void Pass::Unhold() {
  for (auto it = held_.rbegin(); it != held_.rend(); ++it) {
    NodeState& n = Touch(it->node.value());
    if (Status s = Release(n, *it); !s.ok()) {
      internal_.push_back(Status(StatusCode::kInternal, fmt::format("backfill: a held part on node {} does not release: {}",
                                                                    it->node.value(), s.message())));
      continue;
    }
    free_gpu_milli_ += std::popcount(it->gpu_mask) * it->share.value();
    overlay_.Place(it->node.value(), n);
  }
  held_.clear();
}

std::optional<Reservation> Pass::Reserve(const PendingJob& job, Millis now) {
  const JobSpec& s = *job.spec;
  const int64_t need = static_cast<int64_t>(s.tasks) * s.gpus_per_task * s.gpu_share.value();
  const int64_t length = ExpectedEnd(s, Millis{0});  // -1: unknown
  // What happens, in order: running jobs end (by their expected ends; this pass's placements
  // too; an overdue one is taken to end now), earlier reservations start and end. At one
  // instant, ends come before starts.
  struct Event {
    int64_t at;
    int kind;  // 0: ends (its GPUs come free), 1: a reservation starts (takes its GPUs)
    uint64_t id;
    const std::vector<TaskAllocation>* tasks;
    TenantIndex tenant;
    bool operator<(const Event& o) const { return std::tie(at, kind, id) < std::tie(o.at, o.kind, o.id); }
  };
  std::vector<Event> mine;
  for (const PassPlaced& p : placed_) {
    if (p.end >= 0) mine.push_back(Event{std::max(p.end, now.value()), 0, p.id, &p.tasks, p.tenant});
  }
  for (const Reservation& r : reservations_) {
    mine.push_back(Event{r.start.value(), 1, r.job.value(), &r.tasks, r.tenant});
    if (r.end.value() >= 0) mine.push_back(Event{r.end.value(), 0, r.job.value(), &r.tasks, r.tenant});
  }
  std::sort(mine.begin(), mine.end());
  const auto& ends = st_.ends();
  auto it = ends.begin();
  size_t m = 0;
  auto next = [&]() -> std::optional<Event> {
    for (; it != ends.end(); ++it) {
      if (const RunningJob* r = st_.FindRunning(JobId{it->second})) {
        const Event e{std::max(it->first, now.value()), 0, it->second, &r->tasks, r->tenant};
        if (m < mine.size() && mine[m] < e) return mine[m++];
        ++it;
        return e;
      }
    }
    if (m < mine.size()) return mine[m++];
    return std::nullopt;
  };
  struct Done {
    const Event e;
    std::vector<TaskAllocation> tasks;  // what was released (kind 0) or taken (kind 1)
  };
  std::vector<Done> done;
  std::optional<Reservation> out;
  int tries = 0;
  std::optional<Event> e = next();
  while (e && tries < policy_.backfill.max_tries) {
    const int64_t t = e->at;
    for (; e && e->at == t; e = next()) {
      std::vector<TaskAllocation> changed;
      for (const TaskAllocation& a : *e->tasks) {
        NodeState& n = Touch(a.node.value());
        if (!(e->kind == 0 ? Release(n, a) : Allocate(n, a)).ok()) continue;
        free_gpu_milli_ += (e->kind == 0 ? 1 : -1) * std::popcount(a.gpu_mask) * a.share.value();
        overlay_.Place(a.node.value(), n);
        changed.push_back(a);
      }
      ChargeTasks(changed, e->tenant, e->kind == 0 ? -1 : +1);
      done.push_back(Done{*e, std::move(changed)});
    }
    if (free_gpu_milli_ < need) continue;
    ++tries;
    // Held: the reservations still to start that it would overlap, running from t.
    Hold(t, length < 0 ? -1 : t + length);
    if (auto tasks = PlaceJob(job)) {
      out = Reservation{.job = s.id, .start = Millis{t}, .end = Millis{length < 0 ? -1 : t + length}, .tasks = *tasks,
                        .tenant = job.tenant};
      for (auto a = tasks->rbegin(); a != tasks->rend(); ++a) Undo(*a, job.tenant);
    }
    Unhold();
    if (out) break;
  }
  // The overlay as it was.
  for (auto d = done.rbegin(); d != done.rend(); ++d) {
    std::vector<TaskAllocation> back;
    for (const TaskAllocation& a : d->tasks) {
      NodeState& n = Touch(a.node.value());
      if (Status st = d->e.kind == 0 ? Allocate(n, a) : Release(n, a); !st.ok()) {
        internal_.push_back(Status(StatusCode::kInternal, fmt::format("backfill: job {}'s allocation on node {} does not "
                                                                      "return: {}", d->e.id, a.node.value(), st.message())));
        continue;
      }
      free_gpu_milli_ += (d->e.kind == 0 ? -1 : 1) * std::popcount(a.gpu_mask) * a.share.value();
      overlay_.Place(a.node.value(), n);
      back.push_back(a);
    }
    ChargeTasks(back, d->e.tenant, d->e.kind == 0 ? +1 : -1);
  }
  return out;
}

std::optional<Preemption> Pass::Preempt(const PendingJob& job, Millis now) {
  const PreemptionRules& rules = policy_.preemption;
  if (!rules.any()) return std::nullopt;
  const TaskDemand d = DemandOf(*job.spec);
  const TenantBook& book = st_.tenants();
  const int64_t standing = policy_.queue->Standing(job);
  const int64_t need = static_cast<int64_t>(job.spec->tasks) * d.gpus * d.share.value();
  // The running jobs that may be preempted now, and how each stands: judged as the nodes they
  // run on are tried (the search need not walk every running job).
  struct Candidate {
    const RunningJob* r;
    int64_t standing;
    int64_t run_ms;
  };
  std::unordered_map<uint64_t, Candidate> cands;
  std::unordered_map<uint64_t, bool> judged;
  const bool may_reclaim = rules.reclaim && book.limited(job.tenant) && book.cohort(job.tenant) >= 0;
  auto candidate = [&](uint64_t id) -> bool {
    auto [j, fresh] = judged.try_emplace(id, false);
    if (!fresh) return j->second;
    const RunningJob* r = st_.FindRunning(JobId{id});
    // A job placed at this very instant is never a victim (it has not run).
    if (!r || r->stopping || !r->preemptible || r->tasks.empty() || r->since.value() >= now.value()) return false;
    const int64_t run = std::max<int64_t>(0, now.value() - r->since.value());
    if (run < r->min_run.value()) return false;
    const PendingJob as{.spec = r->spec, .attained = Millis{r->attained.value() + r->gpu_milli * run / 1000}, .tenant = r->tenant};
    const int64_t s = policy_.queue->Standing(as);
    const bool lower = rules.priority && s < standing;
    const bool other = may_reclaim && r->tenant != job.tenant && book.cohort(r->tenant) == book.cohort(job.tenant);
    if (!lower && !other) return false;
    cands.emplace(id, Candidate{r, s, run});
    return j->second = true;
  };
  // Whether the candidate may go to make room on a node of this model, as things stand in this
  // pass (a borrower stops being one as its jobs go): it stands lower and is of the job's own
  // tenant, or of one with no quota of its own, or of one that borrows the model; or the job's
  // tenant reclaims, within its nominal quota, from a borrower of its cohort.
  auto eligible = [&](const Candidate& c, uint8_t m) {
    const TenantIndex t = c.r->tenant;
    const bool borrows = book.limited(t) && book.Borrowed(t, m, &pass_use_) > 0;
    if (rules.priority && c.standing < standing && (t == job.tenant || !book.limited(t) || borrows)) return true;
    return may_reclaim && t != job.tenant && book.cohort(t) == book.cohort(job.tenant) && borrows &&
           book.Used(job.tenant, m, &pass_use_) + need <= book.Nominal(job.tenant, m);
  };
  auto reclaimed = [&](const Candidate& c) { return !(rules.priority && c.standing < standing); };
  // The least valuable first: lowest standing, fewest GPUs, least run lost, then id.
  auto cheaper = [&](uint64_t a, uint64_t b) {
    const Candidate& x = cands.at(a);
    const Candidate& y = cands.at(b);
    if (x.standing != y.standing) return x.standing < y.standing;
    if (x.r->gpu_milli != y.r->gpu_milli) return x.r->gpu_milli < y.r->gpu_milli;
    if (x.run_ms != y.run_ms) return x.run_ms < y.run_ms;
    return a < b;
  };
  Preemption out{.job = job.spec->id};
  std::set<uint64_t> gone;
  std::vector<NodeId> gang;
  const SlotOrder& order = SlotOrderFor(job);
  for (int t = 0; t < job.spec->tasks; ++t) {
    std::optional<TaskAllocation> a = PlaceTask(job, d, gang, order);
    if (!a) {
      // The node where the fewest jobs (then GPUs, then run time) make room for this task.
      struct Cost {
        size_t jobs = SIZE_MAX;
        int64_t gpu_milli = 0, run_ms = 0;
        auto operator<=>(const Cost&) const = default;
      };
      Cost best;
      std::vector<uint64_t> best_set;
      int feasible = 0;
      for (uint32_t pos = 0; pos < st_.size() && feasible < rules.node_limit; ++pos) {
        const NodeState& at = Node(pos);
        if (!(job.model_mask >> at.model_bit & 1) || at.gpu_count < d.gpus || st_.RunningOn(at.id).empty()) continue;
        std::vector<uint64_t> here;
        for (uint64_t id : st_.RunningOn(at.id)) {
          if (!gone.count(id) && candidate(id)) here.push_back(id);
        }
        if (here.empty()) continue;
        NodeState copy = at;
        std::sort(here.begin(), here.end(), cheaper);
        auto release = [&](uint64_t id, int sign) {
          const RunningJob& r = *cands.at(id).r;
          for (const TaskAllocation& x : r.tasks) {
            if (x.node != copy.id) continue;
            if (!(sign < 0 ? Release(copy, x) : Allocate(copy, x)).ok()) return false;
          }
          ChargeRunning(r, sign);
          return true;
        };
        std::vector<uint64_t> taken;
        bool fits = false;
        for (uint64_t id : here) {
          if (!eligible(cands.at(id), copy.model_bit) || !release(id, -1)) continue;
          taken.push_back(id);
          if (!FirstRejection(policy_, job, d, copy, view_)) {
            fits = true;
            break;
          }
        }
        if (fits) {
          // Spare every victim that is not needed, the most valuable first.
          for (size_t k = taken.size(); k-- > 0;) {
            if (!release(taken[k], +1)) continue;
            if (!FirstRejection(policy_, job, d, copy, view_)) {
              taken.erase(taken.begin() + static_cast<ptrdiff_t>(k));
            } else if (!release(taken[k], -1)) {
              fits = false;  // cannot happen: it was released from this very copy
            }
          }
        }
        for (uint64_t id : taken) ChargeRunning(*cands.at(id).r, +1);
        if (!fits) continue;
        ++feasible;
        Cost c{.jobs = taken.size()};
        for (uint64_t id : taken) {
          c.gpu_milli += cands.at(id).r->gpu_milli;
          c.run_ms += cands.at(id).run_ms;
        }
        if (c < best) {
          best = c;
          best_set = std::move(taken);
        }
      }
      if (best.jobs == SIZE_MAX) return std::nullopt;
      // Every task of each victim goes (a gang whole), on every node.
      for (uint64_t id : best_set) {
        const Candidate& c = cands.at(id);
        for (const TaskAllocation& x : c.r->tasks) {
          NodeState& n = Touch(x.node.value());
          if (Status s = Release(n, x); !s.ok()) {
            internal_.push_back(Status(StatusCode::kInternal, fmt::format("preemption: job {}'s allocation on node {} "
                                                                          "does not release: {}", id, x.node.value(), s.message())));
            return std::nullopt;
          }
          free_gpu_milli_ += std::popcount(x.gpu_mask) * x.share.value();
          overlay_.Place(x.node.value(), n);
        }
        ChargeRunning(*c.r, -1);
        gone.insert(id);
        out.victims.push_back(Victim{.job = JobId{id}, .reclaim = reclaimed(c)});
      }
      a = PlaceTask(job, d, gang, order);
      if (!a) return std::nullopt;
    }
    out.tasks.push_back(*a);
    if (std::find(gang.begin(), gang.end(), a->node) == gang.end()) gang.push_back(a->node);
  }
  if (out.victims.empty()) return std::nullopt;  // it fits without: the next pass places it
  return out;
}

Decision Pass::Explain(const PendingJob& job) const {
  const TaskDemand d = DemandOf(*job.spec);
  const bool fractional = d.share < kWholeGpu;
  std::array<ReasonCount, kReasonCodeCount> counts{};
  int passing = 0;
  int visited = 0;
  ForEachCandidate(st_.index(), overlay_, job.model_mask, d.gpus, fractional, CandidateOrder::kTightestFirst,
                   SlotOrder{.slots = st_.index().ordered()}, [&](uint32_t pos) {
                     ++visited;
                     if (auto r = FirstRejection(policy_, job, d, Node(pos), view_)) {
                       Count(counts, *r);
                     } else {
                       ++passing;
                     }
                     return true;
                   });
  // The nodes the index passed over: another model, or too few free GPUs (or no partly free one).
  const auto& slots = st_.index().slots();
  int allowed = 0;
  int32_t other_model = -1;
  for (int32_t s : st_.index().ordered()) {
    if (job.model_mask >> slots[static_cast<size_t>(s)].key.model_bit & 1) {
      allowed += slots[static_cast<size_t>(s)].nodes;
    } else if (other_model < 0 && slots[static_cast<size_t>(s)].nodes > 0) {
      other_model = s;
    }
  }
  if (const int too_few = allowed - visited; too_few > 0) {
    // The example: a node with the most free GPUs among those passed over.
    std::optional<Reason> example;
    const int lo = fractional ? 1 : d.gpus;
    for (int k = lo - 1; k >= 0 && !example; --k) {
      for (int32_t s : st_.index().ordered()) {
        if (!(job.model_mask >> slots[static_cast<size_t>(s)].key.model_bit & 1)) continue;
        ForEachMerged(slots[static_cast<size_t>(s)].by_free[static_cast<size_t>(k)], overlay_.hidden(), overlay_.Bucket(s, k),
                      [&](uint32_t pos) {
                        const NodeState& n = Node(pos);
                        if (fractional && overlay_.InPartial(pos)) return true;
                        example = fractional ? Reason{ReasonCode::kGpuShare, d.share.value(), 0, kWholeGpu.value()}
                                             : Reason{ReasonCode::kGpuCount, d.gpus, n.WholeFreeGpus(), n.gpu_count};
                        return false;
                      });
        if (example) break;
      }
    }
    if (!example) example = Reason{ReasonCode::kGpuCount, d.gpus, 0, 0};
    Count(counts, *example, too_few);
  }
  if (const int others = static_cast<int>(st_.size()) - allowed; others > 0 && other_model >= 0) {
    Count(counts, Reason{ReasonCode::kGpuModel, 0, slots[static_cast<size_t>(other_model)].key.model_bit, 0}, others);
  }
  const bool ever = FitsClasses(st_.capacities(), job, d) && EverAdmitted(policy_, job, view_);
  return Decision{.job = job.spec->id, .outcome = ever ? Outcome::kNotNow : Outcome::kNever,
                  .reason_set = Tallied(counts, passing, job.spec->tasks)};
}

}  // namespace

Plan Schedule(const SchedState& state, const JobQueue& queue, const Policy& policy, Rng& rng, size_t max_placements,
              Millis now) {
  Plan plan;
  Pass pass(state, policy, rng);
  using It = std::set<JobQueue::Entry>::const_iterator;
  struct Head {
    It at;
    uint32_t cls;
  };
  // The classes' heads, earliest in queue order on top; one heap per tenant under a share
  // order (the tenant of the smallest rank goes next), else one heap for all.
  auto later = [](const Head& a, const Head& b) { return *b.at < *a.at; };
  struct Group {
    TenantIndex tenant = 0;
    std::vector<Head> heap;
    double rank = 0;
  };
  std::vector<Group> groups;
  std::unordered_map<TenantIndex, size_t> group_of;
  const auto& classes = queue.classes();
  // Strict head of line (no share order): the pass ends at the first job that cannot start,
  // and a blocked class is looked at too, so that nothing behind it is placed.
  // Under backfill, reservations replace the halt, and every class is looked at (the first
  // jobs that cannot start must get their reservations every pass).
  const bool backfill = policy.backfill.depth > 0;
  const bool head_of_line = policy.queue->HeadOfLine() && !policy.share && !backfill;
  for (uint32_t c = 0; c < classes.size(); ++c) {
    const JobQueue::Class& k = classes[c];
    if (k.jobs.empty()) continue;
    // Blocked since it last failed, and nothing it could use has improved: it fails again.
    if (!head_of_line && !backfill && k.blocked_at > 0 && state.ImprovedSince(k.shape.mask) <= k.blocked_at) continue;
    const TenantIndex t = policy.share ? k.shape.tenant : 0;
    auto [g, fresh] = group_of.try_emplace(t, groups.size());
    if (fresh) groups.push_back(Group{.tenant = t});
    groups[g->second].heap.push_back(Head{k.jobs.begin(), c});
  }
  const TenantBook& book = state.tenants();
  for (Group& g : groups) {
    std::make_heap(g.heap.begin(), g.heap.end(), later);
    if (policy.share) g.rank = policy.share->Rank(g.tenant, pass.view());
  }
  // The groups with heads, the next first: the smallest rank, ties by tenant name (O(log
  // tenants) a placement: only the group that placed changes its rank).
  auto before = [&](size_t a, size_t b) {
    const Group& x = groups[a];
    const Group& y = groups[b];
    if (x.rank != y.rank) return x.rank < y.rank;
    if (x.tenant != y.tenant) return book.name(x.tenant) < book.name(y.tenant);
    return a < b;
  };
  std::set<size_t, decltype(before)> ready(before);
  for (size_t i = 0; i < groups.size(); ++i) {
    if (!groups[i].heap.empty()) ready.insert(i);
  }
  auto next_group = [&]() -> int64_t { return ready.empty() ? -1 : static_cast<int64_t>(*ready.begin()); };
  bool halted = false;  // head of line: the first job could not start
  bool held = false;  // the job being looked at was tried with reservations held
  auto stop = [&](uint32_t cls, Decision d) {
    plan.decisions.push_back(d);
    plan.stopped.push_back(Stopped{.cls = cls, .decision = std::move(d), .held = held});
    halted = head_of_line;
  };
  for (int64_t gi = next_group(); gi >= 0 && !halted; gi = next_group()) {
    if (max_placements > 0 && plan.placements.size() >= max_placements) {
      plan.capped = true;  // the rest is not judged now: nothing is blocked for it
      break;
    }
    Group& group = groups[static_cast<size_t>(gi)];
    auto& heads = group.heap;
    std::pop_heap(heads.begin(), heads.end(), later);
    Head h = heads.back();
    heads.pop_back();
    // The group leaves the ready set when it has no head left; its rank (the set's order)
    // changes only when it places, below.
    auto leave_if_done = [&] {
      if (heads.empty()) ready.erase(static_cast<size_t>(gi));
    };
    const PendingJob& job = h.at->job;
    const JobSpec& s = *job.spec;
    ++plan.looked_at;
    // Behind a reservation: what it holds is taken, unless this job is expected to end first.
    held = backfill && !pass.reservations().empty() && pass.Hold(INT64_MIN, ExpectedEnd(s, now));
    const int64_t need = static_cast<int64_t>(s.tasks) * s.gpus_per_task * s.gpu_share.value();
    // The first jobs that cannot start get reservations (backfill), with what they wait for.
    auto reserve = [&] {
      if (!backfill || static_cast<int>(pass.reservations().size()) >= policy.backfill.depth) return;
      if (auto r = pass.Reserve(job, now)) {
        plan.reservations.push_back(*r);
        pass.AddReservation(std::move(*r));
      }
    };
    // A job that got a reservation does not stop its class: the next job of the same shape
    // is looked at too (it may get the next reservation, or be held out of this one).
    auto reserve_and_go_on = [&] {
      const size_t had = plan.reservations.size();
      reserve();
      if (plan.reservations.size() > had && std::next(h.at) != classes[h.cls].jobs.end()) {
        heads.push_back(Head{std::next(h.at), h.cls});
        std::push_heap(heads.begin(), heads.end(), later);
      }
    };
    if (need > pass.free_gpu_milli()) {
      // Too big for what is free in the whole cluster: not searched; within a pass free GPUs
      // only shrink, so the rest of the class is too big as well.
      const Reason r{ReasonCode::kClusterGpus, need, pass.free_gpu_milli(), pass.total_gpu_milli()};
      if (held) pass.Unhold();
      stop(h.cls, Decision{.job = s.id, .outcome = need > pass.total_gpu_milli() ? Outcome::kNever : Outcome::kNotNow,
                           .reason_set = std::make_shared<const std::vector<ReasonCount>>(
                               std::vector<ReasonCount>{{r, static_cast<int>(state.size())}})});
      if (need <= pass.total_gpu_milli()) reserve_and_go_on();
      leave_if_done();
      continue;
    }
    ++plan.searched;
    auto placed = pass.PlaceJob(job);
    if (placed) {
      if (held) pass.Unhold();
    }
    if (auto tasks = std::move(placed)) {
      if (backfill) pass.Placed(job, *tasks, now);
      plan.placements.push_back(Placement{.job = s.id, .tasks = std::move(*tasks)});
      plan.decisions.push_back(Decision{.job = s.id, .outcome = Outcome::kPlaced});
      ready.erase(static_cast<size_t>(gi));  // out while its rank changes
      if (++h.at != classes[h.cls].jobs.end()) {
        heads.push_back(h);
        std::push_heap(heads.begin(), heads.end(), later);
      }
      if (policy.share) group.rank = policy.share->Rank(group.tenant, pass.view());
      if (!heads.empty()) ready.insert(static_cast<size_t>(gi));
      continue;
    }
    Decision why = pass.Explain(job);
    if (held) pass.Unhold();
    stop(h.cls, std::move(why));
    if (plan.stopped.back().decision.outcome == Outcome::kNotNow) reserve_and_go_on();
    leave_if_done();
  }
  plan.internal = std::move(pass.internal());
  return plan;
}

Plan Schedule(const SchedState& state, std::span<const PendingJob> pending, const Policy& policy, Rng& rng) {
  JobQueue queue(*policy.queue);
  for (const PendingJob& p : pending) queue.Add(p);
  Plan plan = Schedule(state, queue, policy, rng);
  // One decision per pending job, in queue order: placed, or its class's.
  std::unordered_map<uint64_t, const Decision*> by_job;
  for (const Decision& d : plan.decisions) {
    if (d.outcome == Outcome::kPlaced) by_job[d.job.value()] = &d;
  }
  std::vector<const Decision*> by_class(queue.classes().size(), nullptr);
  for (const Stopped& st : plan.stopped) by_class[st.cls] = &st.decision;
  std::vector<Decision> all;
  all.reserve(pending.size());
  for (size_t i : QueueOrderOf(pending, policy)) {
    const PendingJob& p = pending[i];
    if (auto it = by_job.find(p.spec->id.value()); it != by_job.end()) {
      all.push_back(*it->second);
      continue;
    }
    const Decision* d = nullptr;
    for (uint32_t c = 0; c < queue.classes().size() && !d; ++c) {
      if (queue.classes()[c].shape == ShapeOf(p)) d = by_class[c];
    }
    all.push_back(Decision{.job = p.spec->id, .outcome = d ? d->outcome : Outcome::kNotNow,
                           .reason_set = d ? d->reason_set : nullptr});
  }
  plan.decisions = std::move(all);
  return plan;
}

std::optional<Preemption> FindPreemption(const SchedState& state, const PendingJob& job, const Policy& policy, Millis now,
                                         Rng& rng) {
  Pass pass(state, policy, rng);
  return pass.Preempt(job, now);
}

bool FitsFleet(const SchedState& state, const PendingJob& job) {
  return FitsClasses(state.capacities(), job, DemandOf(*job.spec));
}

Decision ExplainJob(const SchedState& state, const PendingJob& job, const Policy& policy) {
  const TaskDemand d = DemandOf(*job.spec);
  std::array<ReasonCount, kReasonCodeCount> counts{};
  int passing = 0;
  const TenantPassUse none;
  const TenantView view = ViewOf(state, none);
  for (const NodeState& n : state.nodes()) {
    if (auto r = FirstRejection(policy, job, d, n, view)) {
      Count(counts, *r);
    } else {
      ++passing;
    }
  }
  const bool ever = FitsClasses(state.capacities(), job, d) && EverAdmitted(policy, job, view);
  return Decision{.job = job.spec->id, .outcome = ever ? Outcome::kNotNow : Outcome::kNever,
                  .reason_set = Tallied(counts, passing, job.spec->tasks)};
}

std::vector<NodeEvaluation> EvaluateNodes(const SchedState& state, const PendingJob& job, const Policy& policy, Rng& rng) {
  const TaskDemand d = DemandOf(*job.spec);
  const ScoreContext ctx{.fleet = state.fleet(), .rng = rng, .gang_nodes = {}, .max_price = state.max_price()};
  const TenantPassUse none;
  const TenantView view = ViewOf(state, none);
  std::vector<NodeEvaluation> out;
  for (const NodeState& n : state.nodes()) {
    NodeEvaluation e{.node = n.id, .rejected = FirstRejection(policy, job, d, n, view)};
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
