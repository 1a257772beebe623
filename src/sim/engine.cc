#include "sim/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <bit>
#include <queue>
#include <set>

#include "core/models.h"
#include "state/cluster_state.h"

namespace gp {

std::pair<int, int> SplitGang(int gpus, int max_gpus_per_node) {
  if (gpus <= max_gpus_per_node || max_gpus_per_node <= 0) return {1, gpus};
  for (int t = 2; t <= gpus; ++t) {
    if (gpus % t == 0 && gpus / t <= max_gpus_per_node) return {t, gpus / t};
  }
  return {gpus, 1};
}

namespace {

struct SimJob {
  JobSpec spec;
  std::vector<std::pair<GpuModelId, Millis>> duration_by_model;
  Millis duration{0};
  std::vector<TaskAllocation> tasks;  // while running
  // Under failures: the share of its work done and kept (0..1), which placement this is (a
  // completion event of an older one is stale), and the current placement's start and the
  // run time of the whole job on its GPU model.
  double progress = 0;
  int epoch = 0;
  Millis attempt_start{0};
  Millis full_run{0};
};

struct Completion {
  Millis at;
  size_t job;
  int epoch = 0;
  bool operator>(const Completion& o) const { return at != o.at ? at > o.at : job > o.job; }
};

// A node failing (or a spot node reclaimed), or coming back.
struct Fault {
  Millis at;
  uint32_t node;
  enum Kind : uint8_t { kFail, kReclaim, kRepair, kRepairReclaimed, kGpuXid, kGpuRepair } kind;
  int gpu = -1;  // for kGpuXid and kGpuRepair
  bool operator>(const Fault& o) const {
    if (at != o.at) return at > o.at;
    if (node != o.node) return node > o.node;
    return kind != o.kind ? kind > o.kind : gpu > o.gpu;
  }
};

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(std::max<size_t>(rank, 1) - 1), v.end());
  return v[std::max<size_t>(rank, 1) - 1];
}

// The engine's part in the ClusterState's changes: events go to the --events log (if any);
// a task told to stop ends at once (no agent stands between).
class SimListener final : public ClusterListener {
 public:
  explicit SimListener(const SimOptions& o) : options_(o) {}
  void JobChanged(const JobRecord& j, std::string_view what) override {
    if (options_.on_event) options_.on_event(now_, fmt::format("job.{}", what), fmt::format("job/{}", j.spec.id.value()), JobEventData(j, what));
  }
  bool StopTask(const JobRecord&, int, int) override { return true; }
  Millis now_{0};

 private:
  const SimOptions& options_;
};

// Another instance of the policy (made from the built-in plugins, as every policy is).
Policy ClonePolicy(const Policy& p) {
  auto made = BuiltinRegistry().MakePolicy(Registry::RecipeOf(p));
  return made ? std::move(*made) : Policy{};
}

class Engine {
 public:
  Engine(const Fleet& fleet, const Policy& policy, const SimOptions& options)
      : fleet_(fleet), policy_(policy), options_(options), listener_(options),
        cluster_(fleet, ClonePolicy(policy), ClusterOptions{.seed = options.seed, .max_retries = INT32_MAX,
                                                           .backoff = Millis{0}, .never = NeverFits::kRefuse},
                 listener_),
        state_(cluster_.sched()) {
    for (const Node& n : fleet.nodes) max_gpus_ = std::max(max_gpus_, static_cast<int>(n.gpus.size()));
    for (const Node& n : fleet.nodes) total_gpu_milli_ += static_cast<int64_t>(n.gpus.size()) * 1000;
  }

  Status Load(const Trace& trace);
  Result<SimReport> Run();

 private:
  void Integrate(Millis until);
  Status StartPlacements(const std::vector<JobId>& placed, Millis now);
  void Released(size_t i);
  void ScheduleFault(uint32_t node, Fault::Kind kind, Millis after_time, int gpu = -1);
  // Jobs with a task on `node` (on GPU `gpu` only, when >= 0) lose their work since the last
  // checkpoint and wait again. Returns whether any job was hit.
  Result<bool> FailJobs(uint32_t node, int gpu, Millis now);
  Status OnFault(const Fault& f, Millis now);
  MicroUsd CostOf(const SimJob& j, Millis elapsed) const;

  const Fleet& fleet_;
  const Policy& policy_;
  const SimOptions& options_;
  SimListener listener_;
  ClusterState cluster_;
  SchedState& state_;
  int max_gpus_ = 0;
  int64_t total_gpu_milli_ = 0;

  std::vector<SimJob> jobs_;
  std::vector<size_t> arrival_order_;
  std::vector<SimJobResult> results_;
  std::priority_queue<Completion, std::vector<Completion>, std::greater<>> running_;
  std::priority_queue<Fault, std::vector<Fault>, std::greater<>> faults_;
  std::set<size_t> running_jobs_;
  std::vector<char> node_down_;
  SplitMix64 fault_rng_{0};
  int64_t failures_ = 0;
  int64_t node_failures_ = 0;
  int64_t gpu_failures_ = 0;
  double lost_gpu_milli_ms_ = 0;

  // Integrals over time, in milli-GPU x ms.
  Millis last_{0};
  int64_t busy_milli_ = 0;
  int waiting_gpu_jobs_ = 0;
  double busy_integral_ = 0;
  double free_integral_ = 0;
  double free_while_waiting_ = 0;
  int64_t passes_ = 0;
  std::vector<TimelinePoint> timeline_;
  size_t done_ = 0;
};

Status Engine::Load(const Trace& trace) {
  jobs_.reserve(trace.jobs.size());
  for (size_t i = 0; i < trace.jobs.size(); ++i) {
    const TraceJob& t = trace.jobs[i];
    const auto [tasks, per_task] = t.tasks > 0 ? std::pair<int, int>{t.tasks, t.gpus / t.tasks} : SplitGang(t.gpus, max_gpus_);
    SimJob j;
    j.spec = JobSpec{.id = JobId{i + 1}, .name = t.name, .tasks = tasks, .gpus_per_task = per_task,
                     .gpu_share = t.gpu_share, .gpu_models = t.gpu_models,
                     .cpu_per_task = MilliCpu{t.cpu.value() / tasks},
                     .memory_per_task = MiB{t.memory.value() / tasks}, .priority = t.priority,
                     .estimated_duration = t.duration, .submit_time = t.submit};
    j.duration = t.duration;
    for (const auto& [model, d] : t.duration_by_model) {
      if (auto m = fleet_.FindModel(model)) j.duration_by_model.emplace_back(*m, d);
    }
    if (per_task > kMaxGpusPerNode) j.spec.gpus_per_task = kMaxGpusPerNode + 1;  // refused below
    jobs_.push_back(std::move(j));
    results_.push_back(SimJobResult{.id = JobId{i + 1}, .name = t.name, .line = t.line, .gpus = t.gpus,
                                    .tasks = tasks, .submit = t.submit});
  }
  for (size_t i = 0; i < jobs_.size(); ++i) {
    // Admission, as the cluster state judges it: out of the scheduler's range (say 17 GPUs on
    // one node) or never able to run on this fleet: refused, counted, never stopping the run.
    if (!cluster_.Admit(jobs_[i].spec).ok()) {
      results_[i].outcome = Outcome::kNever;
      continue;
    }
    arrival_order_.push_back(i);
  }
  std::stable_sort(arrival_order_.begin(), arrival_order_.end(),
                   [&](size_t a, size_t b) { return jobs_[a].spec.submit_time < jobs_[b].spec.submit_time; });
  return Status::Ok();
}

void Engine::Integrate(Millis until) {
  const double dt = static_cast<double>((until - last_).value());
  const double free = static_cast<double>(total_gpu_milli_ - busy_milli_);
  busy_integral_ += static_cast<double>(busy_milli_) * dt;
  free_integral_ += free * dt;
  if (waiting_gpu_jobs_ > 0) free_while_waiting_ += free * dt;
  last_ = until;
}

Status Engine::StartPlacements(const std::vector<JobId>& placed, Millis now) {
  for (JobId id : placed) {
    const size_t i = id.value() - 1;
    SimJob& j = jobs_[i];
    const JobRecord* rec = cluster_.Find(id);
    if (!rec) return Status(StatusCode::kInternal, fmt::format("placed job {} is not in the cluster state", id.value()));
    struct {
      std::vector<TaskAllocation> tasks;
    } p;
    for (const TaskRecord& t : rec->tasks) {
      p.tasks.push_back(t.allocation);
      busy_milli_ += std::popcount(t.allocation.gpu_mask) * t.allocation.share.value();
    }
    j.tasks = p.tasks;
    // No agent stands between: every task starts as it is placed.
    for (size_t t = 0; t < rec->tasks.size(); ++t) cluster_.TaskStarted(*cluster_.Find(id), static_cast<int>(t), now, now);
    const Node& first = fleet_.node(p.tasks.front().node);
    Millis full = j.duration;
    if (auto m = first.gpu_model()) {
      for (const auto& [model, d] : j.duration_by_model) {
        if (model == *m) full = d;
      }
    }
    const Millis run{static_cast<int64_t>(std::llround(static_cast<double>(full.value()) * (1.0 - j.progress)))};
    j.full_run = full;
    j.attempt_start = now;
    ++j.epoch;
    SimJobResult& r = results_[i];
    r.outcome = Outcome::kPlaced;
    if (r.start.value() < 0) r.start = now;
    r.finish = now + run;
    r.first_node = first.id;
    if (j.spec.gpus_per_task > 0) --waiting_gpu_jobs_;
    running_.push({r.finish, i, j.epoch});
    running_jobs_.insert(i);
  }
  return Status::Ok();
}

MicroUsd Engine::CostOf(const SimJob& j, Millis elapsed) const {
  MicroUsd c{0};
  for (const TaskAllocation& a : j.tasks) {
    c += GpuCost(state_.node(a.node).price, GpuMilli{std::popcount(a.gpu_mask) * a.share.value()}, elapsed);
  }
  return c;
}

// The job's tasks have ended (ClusterState released their allocations): the engine's own
// accounting follows.
void Engine::Released(size_t i) {
  SimJob& j = jobs_[i];
  for (const TaskAllocation& a : j.tasks) busy_milli_ -= std::popcount(a.gpu_mask) * a.share.value();
  j.tasks.clear();
  running_jobs_.erase(i);
}

// Exponential time to the next failure of this node, from the failure generator.
void Engine::ScheduleFault(uint32_t node, Fault::Kind kind, Millis after, int gpu) {
  const FailureModel& m = *options_.failures;
  const Millis mean = kind == Fault::kReclaim ? m.spot_mtbf : (kind == Fault::kGpuXid ? m.gpu_xid_mtbf : m.node_mtbf);
  if (mean.value() <= 0) return;
  const double u = fault_rng_.Unit();
  const auto gap = static_cast<int64_t>(-static_cast<double>(mean.value()) * std::log1p(-u));
  faults_.push({after + Millis{std::max<int64_t>(1, gap)}, node, kind, gpu});
}

Result<bool> Engine::FailJobs(uint32_t node, int gpu, Millis now) {
  bool hit = false;
  const std::vector<size_t> victims(running_jobs_.begin(), running_jobs_.end());
  for (size_t i : victims) {
    SimJob& j = jobs_[i];
    bool here = false;
    for (const TaskAllocation& a : j.tasks) {
      here = here || (a.node.value() == node && (gpu < 0 || (a.gpu_mask >> gpu & 1)));
    }
    if (!here) continue;
    hit = true;
    const int64_t elapsed = (now - j.attempt_start).value();
    const int64_t ckpt = options_.checkpoint_interval.value();
    const int64_t kept = options_.recovery == Recovery::kCheckpoint && ckpt > 0 ? elapsed / ckpt * ckpt : 0;
    int64_t gpu_milli = 0;
    for (const TaskAllocation& a : j.tasks) gpu_milli += std::popcount(a.gpu_mask) * a.share.value();
    lost_gpu_milli_ms_ += static_cast<double>(gpu_milli) * static_cast<double>(elapsed - kept);
    results_[i].cost += CostOf(j, Millis{elapsed});
    if (j.full_run.value() > 0) {
      j.progress = std::min(0.999999, j.progress + static_cast<double>(kept) / static_cast<double>(j.full_run.value()));
    }
    JobRecord* rec = cluster_.Find(JobId{i + 1});
    if (!rec) return Error(StatusCode::kInternal, fmt::format("running job {} is not in the cluster state", i + 1));
    cluster_.FailOver(*rec, gpu >= 0 ? fmt::format("GPU {} of node {} failed", gpu, fleet_.nodes[node].name)
                                     : fmt::format("node {} failed", fleet_.nodes[node].name),
                      now, /*counts=*/true, -1, now);
    Released(i);
    ++j.epoch;  // its completion event is now stale
    if (j.spec.gpus_per_task > 0) ++waiting_gpu_jobs_;
  }
  cluster_.RequeueReady(now);  // every task ended at once: no agent, no lease to wait out
  return hit;
}

// A node fails (or is reclaimed): every job with a task there loses the work since its last
// checkpoint (all of it under kRestart), gives back its GPUs everywhere, and waits again.
Status Engine::OnFault(const Fault& f, Millis now) {
  const NodeId id{f.node};
  const Millis repair = options_.failures ? options_.failures->node_repair : Millis{3'600'000};
  switch (f.kind) {
    case Fault::kRepair:
    case Fault::kRepairReclaimed:
      node_down_[f.node] = 0;
      state_.Update(id, [](NodeState& n) { n.health = Health::kHealthy; });
      if (options_.failures) ScheduleFault(f.node, f.kind == Fault::kRepair ? Fault::kFail : Fault::kReclaim, now);
      return Status::Ok();
    case Fault::kGpuRepair:
      state_.Update(id, [&](NodeState& n) { n.quarantined = static_cast<uint16_t>(n.quarantined & ~(1u << f.gpu)); });
      ScheduleFault(f.node, Fault::kGpuXid, now, f.gpu);
      return Status::Ok();
    case Fault::kGpuXid: {
      // A fatal XID: that GPU alone goes out (as the live pool quarantines it) until repaired.
      state_.Update(id, [&](NodeState& n) { n.quarantined = static_cast<uint16_t>(n.quarantined | (1u << f.gpu)); });
      ++gpu_failures_;
      auto hit = FailJobs(f.node, f.gpu, now);
      if (!hit) return hit.error();
      if (*hit) ++failures_;
      faults_.push({now + repair, f.node, Fault::kGpuRepair, f.gpu});
      return Status::Ok();
    }
    case Fault::kFail:
    case Fault::kReclaim: {
      if (node_down_[f.node]) return Status::Ok();
      node_down_[f.node] = 1;
      state_.Update(id, [](NodeState& n) { n.health = Health::kUnhealthy; });
      ++node_failures_;
      auto hit = FailJobs(f.node, -1, now);
      if (!hit) return hit.error();
      if (*hit) ++failures_;
      faults_.push({now + repair, f.node, f.kind == Fault::kReclaim ? Fault::kRepairReclaimed : Fault::kRepair});
      return Status::Ok();
    }
  }
  return Status::Ok();
}

Result<SimReport> Engine::Run() {
  node_down_.assign(state_.size(), 0);
  fault_rng_ = SplitMix64(options_.seed * 0x9E3779B97F4A7C15ULL + 0x5EED);
  if (options_.failures) {
    for (uint32_t n = 0; n < state_.size(); ++n) {
      ScheduleFault(n, Fault::kFail, Millis{0});
      if (fleet_.nodes[n].tier == PriceTier::kSpot) ScheduleFault(n, Fault::kReclaim, Millis{0});
      for (int g = 0; g < state_.nodes()[n].gpu_count; ++g) ScheduleFault(n, Fault::kGpuXid, Millis{0}, g);
    }
  }
  for (const auto& [at, node] : options_.scripted_failures) faults_.push({at, node.value(), Fault::kFail});
  size_t next = 0;  // into arrival_order_
  const size_t total = jobs_.size();
  if (!arrival_order_.empty()) last_ = jobs_[arrival_order_.front()].spec.submit_time;
  // Faults go on for ever; the replay ends when no job is left to arrive, run or wait.
  while (next < arrival_order_.size() || !running_.empty() || (!cluster_.queued().empty() && !faults_.empty())) {
    Millis now{INT64_MAX};
    if (next < arrival_order_.size()) now = jobs_[arrival_order_[next]].spec.submit_time;
    if (!running_.empty()) now = std::min(now, running_.top().at);
    if (!faults_.empty()) now = std::min(now, faults_.top().at);
    listener_.now_ = now;
    // The state since the last instant, for the timeline (a point only when it changed).
    const TimelinePoint point{last_, static_cast<int32_t>(cluster_.queued().size()), static_cast<double>(busy_milli_) / 1000.0};
    if (!timeline_.empty() && timeline_.back().t == point.t) timeline_.pop_back();  // held for no time
    if (timeline_.empty() || timeline_.back().queued != point.queued || timeline_.back().busy_gpus != point.busy_gpus) {
      timeline_.push_back(point);
    }
    Integrate(now);
    bool freed = false;
    while (!running_.empty() && running_.top().at == now) {
      const Completion c = running_.top();
      running_.pop();
      SimJob& j = jobs_[c.job];
      if (c.epoch != j.epoch) continue;  // that placement was lost to a failure
      results_[c.job].cost += CostOf(j, now - j.attempt_start);
      JobRecord* rec = cluster_.Find(JobId{c.job + 1});
      if (!rec) return Error(StatusCode::kInternal, fmt::format("finished job {} is not in the cluster state", c.job + 1));
      for (size_t t = 0; t < rec->tasks.size(); ++t) cluster_.TaskEnded(*rec, static_cast<int>(t), 0, std::nullopt, "", now);
      Released(c.job);
      freed = true;
      ++done_;
    }
    while (!faults_.empty() && faults_.top().at == now) {
      const Fault f = faults_.top();
      faults_.pop();
      if (Status s = OnFault(f, now); !s.ok()) return tl::unexpected(s);
      freed = true;
    }
    bool arrived = false;
    while (next < arrival_order_.size() && jobs_[arrival_order_[next]].spec.submit_time == now) {
      const size_t i = arrival_order_[next++];
      JobRecord rec{.spec = jobs_[i].spec};
      if (options_.on_event) {
        options_.on_event(now, "job.submitted", fmt::format("job/{}", i + 1), JobEventData(rec, "submitted"));
      }
      cluster_.Accept(std::move(rec));
      arrived = true;
      if (jobs_[i].spec.gpus_per_task > 0) ++waiting_gpu_jobs_;
    }
    // Nothing freed and nothing arrived: the jobs that waited then still cannot fit. (Within a
    // pass the queue passes over the classes that failed before and have had nothing freed.)
    if (cluster_.queued().empty() || !(freed || arrived)) continue;
    ++passes_;
    const ClusterState::PassResult pass = cluster_.Pass(now);
    if (Status s = StartPlacements(pass.placed, now); !s.ok()) return tl::unexpected(s);
    for (JobId id : pass.refused) {
      const size_t i = id.value() - 1;
      results_[i].outcome = Outcome::kNever;
      if (jobs_[i].spec.gpus_per_task > 0) --waiting_gpu_jobs_;
      ++done_;
    }
    if (options_.progress && (passes_ & 1023) == 0) options_.progress(done_, total);
  }
  if (options_.progress) options_.progress(total, total);

  SimReport r{.policy = policy_.name, .seed = options_.seed, .jobs = static_cast<int64_t>(total), .passes = passes_,
              .failures = failures_, .node_failures = node_failures_, .gpu_failures = gpu_failures_,
              .lost_gpu_hours = lost_gpu_milli_ms_ / 1000.0 / 3'600'000.0};
  if (options_.failures || !options_.scripted_failures.empty()) {
    r.recovery = options_.recovery == Recovery::kCheckpoint ? "checkpoint" : "restart";
  }
  std::vector<double> jct;
  double queue_sum = 0;
  Millis first{INT64_MAX};
  Millis last{0};
  for (const SimJobResult& j : results_) {
    first = std::min(first, j.submit);
    if (j.outcome == Outcome::kNever) {
      ++r.unschedulable;
      continue;
    }
    if (j.outcome != Outcome::kPlaced) continue;  // still waiting when events ran out
    ++r.finished;
    jct.push_back(static_cast<double>((j.finish - j.submit).value()) / 1000.0);
    queue_sum += static_cast<double>((j.start - j.submit).value()) / 1000.0;
    last = std::max(last, j.finish);
    r.cost += j.cost;
  }
  if (!jct.empty()) {
    double sum = 0;
    for (double v : jct) sum += v;
    r.avg_jct_s = sum / static_cast<double>(jct.size());
    r.avg_queue_s = queue_sum / static_cast<double>(jct.size());
    r.p50_jct_s = Percentile(jct, 0.50);
    r.p99_jct_s = Percentile(jct, 0.99);
    r.makespan_s = static_cast<double>((last - first).value()) / 1000.0;
  }
  const double capacity = static_cast<double>(total_gpu_milli_) * r.makespan_s * 1000.0;
  r.gpu_utilization = capacity > 0 ? busy_integral_ / capacity : 0;
  r.fragmentation = free_integral_ > 0 ? free_while_waiting_ / free_integral_ : 0;
  r.per_job = std::move(results_);
  r.total_gpus = total_gpu_milli_ / 1000;
  timeline_.push_back(TimelinePoint{last_, static_cast<int32_t>(cluster_.queued().size()), static_cast<double>(busy_milli_) / 1000.0});
  r.timeline = std::move(timeline_);
  return r;
}

}  // namespace

Result<SimReport> RunSimulation(const Fleet& fleet, const Trace& trace, const Policy& policy,
                                const SimOptions& options) {
  Engine e(fleet, policy, options);
  if (Status s = e.Load(trace); !s.ok()) return tl::unexpected(s);
  return e.Run();
}

}  // namespace gp
