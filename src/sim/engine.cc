#include "sim/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <bit>
#include <map>
#include <queue>
#include <set>

#include "core/models.h"
#include "sched/provision.h"
#include "sched/snapshot.h"
#include "state/cluster_state.h"

namespace gp {

std::vector<double> WaterFill(const std::vector<double>& demands, double total, const std::vector<double>& weights) {
  std::vector<double> out(demands.size(), 0);
  auto w = [&](size_t i) { return i < weights.size() && weights[i] > 0 ? weights[i] : 1.0; };
  std::vector<size_t> order(demands.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  // The smallest demand per unit of weight is met first.
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const double da = demands[a] / w(a), db = demands[b] / w(b);
    return da != db ? da < db : a < b;
  });
  double weight_left = 0;
  for (size_t i = 0; i < order.size(); ++i) weight_left += w(i);
  double left = total;
  for (size_t k = 0; k < order.size(); ++k) {
    const size_t i = order[k];
    const double level = left / weight_left * w(i);  // its weighted part of what is left
    const double give = std::min(std::max(0.0, demands[i]), level);
    out[i] = give;
    left -= give;
    weight_left -= w(i);
  }
  return out;
}

Fairness FairnessOf(const std::vector<double>& used, const std::vector<double>& entitled) {
  Fairness f;
  double sum = 0, sq = 0, total = 0;
  size_t n = 0;
  for (size_t i = 0; i < used.size(); ++i) total += used[i];
  for (size_t i = 0; i < used.size(); ++i) {
    if (entitled[i] <= 0) continue;
    const double x = used[i] / entitled[i];
    sum += x;
    sq += x * x;
    ++n;
    if (total > 0) f.max_deviation = std::max(f.max_deviation, std::abs(used[i] - entitled[i]) / total);
  }
  f.jain = sq > 0 ? sum * sum / (static_cast<double>(n) * sq) : 1;
  return f;
}

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
  bool fails = false;                      // ends failed (the trace says it did)
  std::optional<JobExtras> dependencies;   // held until met (Slurm's --dependency)
};

struct Completion {
  Millis at;
  size_t job;
  int epoch = 0;
  bool operator>(const Completion& o) const { return at != o.at ? at > o.at : job > o.job; }
};

// A node failing (or a spot node reclaimed), or coming back.
// Acquiring capacity: a plan is due, a node has booted, an idle node is looked at for release,
// a spot node is reclaimed. `gen` tells a stale event (the node was released since).
struct ScaleEvent {
  Millis at;
  enum Kind : uint8_t { kBooted, kReclaim, kPlan, kCheck } kind;
  uint32_t node = 0;
  uint32_t gen = 0;
  bool alive = true;  // keeps the run going (a boot, a release check of a node that may go)
  bool operator>(const ScaleEvent& o) const { return std::tuple(at, kind, node, gen) > std::tuple(o.at, o.kind, o.node, o.gen); }
};

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
    if (j.state == JobState::kTimedOut && what == "timed-out") ++timed_out;
    // A job its dependencies ended before it ran (the engine counts it done).
    if (j.state == JobState::kCancelled && j.tasks.empty()) cancelled.push_back(j.spec.id);
    if (options_.on_event) options_.on_event(now_, fmt::format("job.{}", what), fmt::format("job/{}", j.spec.id.value()), JobEventData(j, what));
  }
  bool StopTask(const JobRecord&, int, int) override { return true; }
  Millis now_{0};
  int64_t timed_out = 0;  // jobs stopped at their time limit
  std::vector<JobId> cancelled;

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
        cluster_(fleet_, ClonePolicy(policy), ClusterOptions{.seed = options.seed, .max_retries = INT32_MAX, .backoff = Millis{0},
                                                            .never = options.autoscale ? NeverFits::kWait : NeverFits::kRefuse},
                 listener_),
        state_(cluster_.sched()) {
    for (const Node& n : fleet.nodes) max_gpus_ = std::max(max_gpus_, static_cast<int>(n.gpus.size()));
    for (const Node& n : fleet.nodes) total_gpu_milli_ += static_cast<int64_t>(n.gpus.size()) * 1000;
    if (options.autoscale) {
      for (const Offer& o : fleet.offers) max_gpus_ = std::max(max_gpus_, o.gpus);
      static_nodes_ = fleet.nodes.size();
      held_.resize(static_nodes_);
      spare_.resize(fleet.offers.size());
      offer_nodes_.assign(fleet.offers.size(), 0);
      named_.assign(fleet.offers.size(), 0);
      buyable_.assign(fleet.offers.size(), 1);
      always_out_.assign(fleet.offers.size(), 0);
      for (size_t o = 0; o < fleet.offers.size(); ++o) {
        const Provider& p = fleet.provider(fleet.offers[o].provider);
        for (const std::string& name : p.provisioner.stockout) always_out_[o] |= name == fleet.offers[o].name;
      }
      scale_rng_ = SplitMix64(options.seed * 0xD1B54A32D192ED03ULL + 0xA5CA1E);
    }
  }

  Status Load(const Trace& trace);
  Result<SimReport> Run();

 private:
  // The fleet file's tenants, and equal quotas for the trace's others (SimOptions).
  Status ConfigureTenants();
  void Integrate(Millis until);
  Status StartPlacements(const std::vector<JobId>& placed, Millis now);
  void Released(size_t i, Millis now);
  // Jobs their dependencies ended before they ran: done, and counted as cancelled.
  void TakeCancelled();
  void TenantMoves(size_t i, int wait, int run);
  void TenantIntegrate(Millis until);
  void CloseWindow(Millis end);
  // Acquiring capacity (options_.autoscale).
  Status Admit(const JobSpec& spec) const;
  void Plan(Millis now);
  // What the waiting jobs ask of new capacity. O(queued jobs).
  std::vector<CapacityDemand> QueuedDemands() const {
    std::vector<CapacityDemand> out;
    for (uint64_t id : cluster_.queued()) {
      if (auto d = CapacityDemandOf(fleet_, cluster_.Find(JobId{id})->spec)) out.push_back(std::move(*d));
    }
    return out;
  }
  void Buy(size_t offer, Millis now);
  void Booted(uint32_t node, Millis now);
  void Check(uint32_t node, Millis now);
  void Release(uint32_t node, Millis now);
  void Idle(uint32_t node, Millis now);
  void NodesChanged(Millis now);
  void PushScale(ScaleEvent e) {
    if (e.kind == ScaleEvent::kPlan || e.kind == ScaleEvent::kReclaim) e.alive = false;
    if (e.alive) ++alive_scale_;
    scale_.push(e);
  }
  void ScheduleFault(uint32_t node, Fault::Kind kind, Millis after_time, int gpu = -1);
  // Jobs with a task on `node` (on GPU `gpu` only, when >= 0) lose their work since the last
  // checkpoint and wait again. Returns whether any job was hit.
  Result<bool> FailJobs(uint32_t node, int gpu, Millis now);
  // Under least-attained-service with preemption, a running job is demoted when its attained
  // service crosses a threshold (Tiresias): a wake-up at that instant, so that a pass may let a
  // job of a higher queue preempt it then, not at the next arrival or completion.
  void WakeAtNextDemotion(size_t i, Millis now);
  // A job the pass preempted (the cluster state has stopped and requeued it): it checkpointed
  // at SIGTERM, so it keeps all its progress, and gives back its GPUs.
  void Preempted(size_t i, Millis now);
  Status OnFault(const Fault& f, Millis now);
  MicroUsd CostOf(const SimJob& j, Millis elapsed) const;

  Fleet fleet_;  // its own copy: acquired nodes join it
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
  std::priority_queue<Completion, std::vector<Completion>, std::greater<>> demotions_;  // (at, job, epoch)
  std::set<size_t> running_jobs_;
  std::vector<char> node_down_;
  SplitMix64 fault_rng_{0};
  int64_t failures_ = 0;
  int64_t preemptions_ = 0;
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
  double capacity_integral_ = 0;  // GPUs held x time (milli-GPU x ms), for utilisation under autoscaling

  // Tenants (traces that say whose jobs are whose; empty when there is one tenant or none).
  std::vector<std::string> tenant_names_;
  std::vector<double> tenant_weights_;  // from the tenants' configuration (1 when none)
  std::vector<size_t> tenant_of_;            // per job
  std::vector<int64_t> tenant_busy_, tenant_wait_;  // milli-GPUs now
  std::vector<double> win_used_, win_asked_;        // this window, milli-GPU x ms
  double win_waited_ = 0;
  double jain_sum_ = 0, jain_weight_ = 0, max_deviation_ = 0;
  int64_t contended_windows_ = 0;
  std::vector<TenantSharePoint> tenant_shares_;

  // Acquired nodes, by node id (static nodes: offer -1).
  struct Held {
    int offer = -1;
    Millis created{0};
    bool held = false;
    bool up = false;
    uint32_t gen = 0;        // a new one per purchase: events of an earlier holding are stale
    uint32_t idle_gen = 0;   // a new one each time the node starts or stops being idle
    std::optional<Millis> idle_since;
    int tasks = 0;           // tasks running on it
  };
  size_t static_nodes_ = 0;
  std::vector<Held> held_;
  std::vector<std::vector<uint32_t>> spare_;  // per offer: released nodes, to hold again
  std::vector<int32_t> offer_nodes_;          // per offer: held now
  std::vector<int> named_;                    // per offer: nodes made (for their names)
  std::vector<uint8_t> buyable_;
  std::vector<uint8_t> always_out_;           // the provider's local.stockout names it
  std::priority_queue<ScaleEvent, std::vector<ScaleEvent>, std::greater<>> scale_;
  int64_t alive_scale_ = 0;                   // boots and checks pending (plans and reclaims do not keep the run going)
  std::multiset<Millis> plans_;               // plans due
  // A plan at `at`, unless one is due by then already.
  void PlanAt(Millis at) {
    if (!plans_.empty() && *plans_.begin() <= at) return;
    plans_.insert(at);
    PushScale({at, ScaleEvent::kPlan});
  }
  int idle_plans_ = 0;                        // plans in a row that bought nothing
  Blocklist blocked_;
  SplitMix64 scale_rng_{0};
  AutoscaleResult as_;
  double acquired_busy_ = 0;                  // milli-GPU x ms of jobs on acquired nodes
  int64_t acquired_busy_milli_ = 0;
  std::vector<double> lower_bound_gpu_ms_;    // per job: GPU-ms x price (micro-USD per GPU-hour)
};

// On a fixed fleet, the cluster state's admission; with offers to buy from, a job is refused
// only when neither a node of the fleet nor any offer could ever hold it.
Status Engine::Admit(const JobSpec& spec) const {
  if (!options_.autoscale) return cluster_.Admit(spec);
  if (Status s = cluster_.Admit(spec); !s.ok()) return s;  // out of the scheduler's range
  auto p = CompileJob(spec, fleet_);
  if (p && FitsFleet(state_, *p)) return Status::Ok();
  if (spec.gpus_per_task <= 0) return Status::Ok();
  auto d = CapacityDemandOf(fleet_, spec);
  if (!d) return Status(StatusCode::kFailedPrecondition, "no node or offer of this fleet has its GPU model");
  // What the planner would buy for it alone, every offer empty and unblocked.
  const ProvisionPlan plan = PlanCapacity(fleet_, ProvisionInput{.demands = std::span(&*d, 1)});
  if (plan.unmet.empty()) return Status::Ok();
  return Status(StatusCode::kFailedPrecondition, plan.unmet.front().second);
}

Status Engine::ConfigureTenants() {
  cluster_.set_half_life(options_.half_life);
  std::vector<TenantConfig> tenants = options_.tenants;
  if (options_.equal_quotas) {
    std::set<std::string> named;
    for (const TenantConfig& t : tenants) named.insert(t.name);
    std::set<std::string> others;
    for (const SimJob& j : jobs_) {
      if (!j.spec.tenant.empty() && !named.count(j.spec.tenant)) others.insert(j.spec.tenant);
    }
    std::map<std::string, int64_t> gpus;  // by model
    for (const Node& n : fleet_.nodes) {
      if (!n.gpus.empty()) gpus[fleet_.model(n.gpus.front().model).name] += static_cast<int64_t>(n.gpus.size());
    }
    for (const std::string& name : others) {
      TenantConfig t{.name = name, .cohort = "pool"};
      if (!ValidTenantName(name)) {
        return Status(StatusCode::kInvalidArgument,
                      fmt::format("equal quotas: the trace's tenant '{}' is not a valid tenant name (a-z, 0-9, '-')", name));
      }
      for (const auto& [model, count] : gpus) t.quota[model] = QuotaLimits{.nominal = count / static_cast<int64_t>(others.size())};
      tenants.push_back(std::move(t));
    }
  }
  if (tenants.empty()) return Status();
  if (Status s = cluster_.ConfigureTenants(tenants); !s.ok()) return Status(s.code(), "tenants: " + s.message());
  return Status();
}

Status Engine::Load(const Trace& trace) {
  jobs_.reserve(trace.jobs.size());
  for (size_t i = 0; i < trace.jobs.size(); ++i) {
    const TraceJob& t = trace.jobs[i];
    const auto [tasks, per_task] = t.tasks > 0 ? std::pair<int, int>{t.tasks, t.gpus / t.tasks} : SplitGang(t.gpus, max_gpus_);
    SimJob j;
    j.spec = JobSpec{.id = JobId{i + 1}, .name = t.name, .tasks = tasks, .gpus_per_task = per_task,
                     .gpu_share = t.gpu_share, .gpu_models = t.gpu_models,
                     .cpu_per_task = MilliCpu{t.cpu.value() / tasks},
                     .memory_per_task = MiB{t.memory.value() / tasks}, .priority = t.priority, .tenant = t.tenant,
                     .estimated_duration = t.duration, .submit_time = t.submit};
    j.duration = t.duration;
    j.fails = t.fails;
    if (!t.after.empty() || t.singleton) {
      j.dependencies = JobExtras{.after = t.after, .singleton = t.singleton};
    }
    for (const auto& [model, d] : t.duration_by_model) {
      if (auto m = fleet_.FindModel(model)) j.duration_by_model.emplace_back(*m, d);
    }
    if (per_task > kMaxGpusPerNode) j.spec.gpus_per_task = kMaxGpusPerNode + 1;  // refused below
    jobs_.push_back(std::move(j));
    results_.push_back(SimJobResult{.id = JobId{i + 1}, .name = t.name, .line = t.line, .gpus = t.gpus,
                                    .tasks = tasks, .submit = t.submit});
  }
  if (Status s = ConfigureTenants(); !s.ok()) return s;
  for (size_t i = 0; i < jobs_.size(); ++i) {
    // Admission, as the cluster state judges it: out of the scheduler's range (say 17 GPUs on
    // one node) or never able to run on this fleet: refused, counted, never stopping the run.
    if (!cluster_.Limit(jobs_[i].spec).ok() || !Admit(jobs_[i].spec).ok()) {
      results_[i].outcome = Outcome::kNever;
      continue;
    }
    arrival_order_.push_back(i);
  }
  {
    std::map<std::string, size_t> index;
    std::vector<size_t> of;
    for (const SimJob& j : jobs_) of.push_back(index.try_emplace(j.spec.tenant, index.size()).first->second);
    if (index.size() > 1) {
      tenant_names_.resize(index.size());
      for (const auto& [name, k] : index) tenant_names_[k] = name;
      for (const std::string& name : tenant_names_) {
        auto t = cluster_.tenants().Find(name);
        tenant_weights_.push_back(t ? cluster_.tenants().weight(*t) : 1);
      }
      tenant_of_ = std::move(of);
      tenant_busy_.assign(index.size(), 0);
      tenant_wait_.assign(index.size(), 0);
      win_used_.assign(index.size(), 0);
      win_asked_.assign(index.size(), 0);
    }
  }
  if (options_.autoscale) {
    // The lower bound's price for each job: the cheapest offer that could take it.
    lower_bound_gpu_ms_.assign(jobs_.size(), 0);
    for (size_t i = 0; i < jobs_.size(); ++i) {
      auto d = CapacityDemandOf(fleet_, jobs_[i].spec);
      auto price = d ? CheapestPerGpuHour(fleet_, *d) : std::nullopt;
      if (price) lower_bound_gpu_ms_[i] = static_cast<double>(price->value());
    }
  }
  std::stable_sort(arrival_order_.begin(), arrival_order_.end(),
                   [&](size_t a, size_t b) { return jobs_[a].spec.submit_time < jobs_[b].spec.submit_time; });
  return Status::Ok();
}

// A job's GPUs join or leave its tenant's waiting (`wait`) and running (`run`) counts.
void Engine::TenantMoves(size_t i, int wait, int run) {
  if (tenant_of_.empty()) return;
  const JobSpec& s = jobs_[i].spec;
  const int64_t milli = static_cast<int64_t>(s.tasks) * s.gpus_per_task * s.gpu_share.value();
  const size_t t = tenant_of_[i];
  tenant_wait_[t] += wait * milli;
  tenant_busy_[t] += run * milli;
}

// The GPU-time each tenant ran and asked for (ran plus waited) in the fairness window, up to
// `until`; a window that ends is judged (CloseWindow).
void Engine::TenantIntegrate(Millis until) {
  if (tenant_of_.empty()) return;
  const int64_t len = options_.fairness_window.value();
  Millis from = last_;
  while (from < until) {
    const Millis end{std::min(until.value(), (from.value() / len + 1) * len)};
    const double dt = static_cast<double>((end - from).value());
    for (size_t t = 0; t < tenant_busy_.size(); ++t) {
      win_used_[t] += static_cast<double>(tenant_busy_[t]) * dt;
      win_asked_[t] += static_cast<double>(tenant_busy_[t] + tenant_wait_[t]) * dt;
      win_waited_ += static_cast<double>(tenant_wait_[t]) * dt;
    }
    if (end.value() % len == 0) CloseWindow(end);
    from = end;
  }
}

// A window where some tenant waited: how fairly its GPU-time went (max-min fair over what each
// asked), weighted by the GPU-time it held; and each tenant's share, for the plot.
void Engine::CloseWindow(Millis end) {
  double ran = 0;
  size_t asking = 0;
  for (size_t t = 0; t < win_used_.size(); ++t) {
    ran += win_used_[t];
    asking += win_asked_[t] > 0 ? 1 : 0;
  }
  if (ran > 0) {
    TenantSharePoint p{.t = end - options_.fairness_window};
    for (double u : win_used_) p.shares.push_back(u / ran);
    tenant_shares_.push_back(std::move(p));
  }
  if (win_waited_ > 0 && asking >= 2 && ran > 0) {
    const Fairness f = FairnessOf(win_used_, WaterFill(win_asked_, ran, tenant_weights_));
    jain_sum_ += f.jain * ran;
    jain_weight_ += ran;
    max_deviation_ = std::max(max_deviation_, f.max_deviation);
    ++contended_windows_;
  }
  std::fill(win_used_.begin(), win_used_.end(), 0.0);
  std::fill(win_asked_.begin(), win_asked_.end(), 0.0);
  win_waited_ = 0;
}

void Engine::Integrate(Millis until) {
  TenantIntegrate(until);
  const double dt = static_cast<double>((until - last_).value());
  const double free = static_cast<double>(total_gpu_milli_ - busy_milli_);
  busy_integral_ += static_cast<double>(busy_milli_) * dt;
  capacity_integral_ += static_cast<double>(total_gpu_milli_) * dt;
  acquired_busy_ += static_cast<double>(acquired_busy_milli_) * dt;
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
      if (options_.autoscale && t.allocation.node.value() >= static_nodes_) {
        acquired_busy_milli_ += std::popcount(t.allocation.gpu_mask) * t.allocation.share.value();
      }
      if (options_.autoscale) {
        Held& h = held_[t.allocation.node.value()];
        if (h.tasks++ == 0 && h.idle_since) {
          h.idle_since.reset();
          ++h.idle_gen;
        }
      }
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
    Millis run{static_cast<int64_t>(std::llround(static_cast<double>(full.value()) * (1.0 - j.progress)))};
    // A time limit stops it (ClusterState::EnforceTimeLimits ends it timed out at that instant).
    if (j.spec.time_limit.value() > 0) run = std::min(run, j.spec.time_limit);
    j.full_run = full;
    j.attempt_start = now;
    ++j.epoch;
    SimJobResult& r = results_[i];
    r.outcome = Outcome::kPlaced;
    if (r.start.value() < 0) r.start = now;
    r.finish = now + run;
    r.first_node = first.id;
    if (j.spec.gpus_per_task > 0) --waiting_gpu_jobs_;
    TenantMoves(i, -1, +1);
    running_.push({r.finish, i, j.epoch});
    running_jobs_.insert(i);
    WakeAtNextDemotion(i, now);
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
void Engine::TakeCancelled() {
  for (JobId id : std::exchange(listener_.cancelled, {})) {
    const size_t i = id.value() - 1;
    results_[i].cancelled = true;
    if (jobs_[i].spec.gpus_per_task > 0) --waiting_gpu_jobs_;
    TenantMoves(i, -1, 0);
    ++done_;
  }
}

void Engine::Released(size_t i, Millis now) {
  SimJob& j = jobs_[i];
  TenantMoves(i, 0, -1);
  for (const TaskAllocation& a : j.tasks) {
    busy_milli_ -= std::popcount(a.gpu_mask) * a.share.value();
    if (options_.autoscale && a.node.value() >= static_nodes_) acquired_busy_milli_ -= std::popcount(a.gpu_mask) * a.share.value();
    if (options_.autoscale) {
      Held& h = held_[a.node.value()];
      if (--h.tasks == 0) Idle(a.node.value(), now);
    }
  }
  j.tasks.clear();
  running_jobs_.erase(i);
}

void Engine::WakeAtNextDemotion(size_t i, Millis now) {
  if (!policy_.preemption.priority) return;
  const SimJob& j = jobs_[i];
  const JobRecord* rec = cluster_.Find(JobId{i + 1});
  if (!rec) return;
  int64_t gpu_milli = 0;
  for (const TaskAllocation& a : j.tasks) gpu_milli += std::popcount(a.gpu_mask) * a.share.value();
  if (gpu_milli <= 0) return;
  // Attained so far: what its record holds (earlier attempts) and this attempt's run.
  const int64_t attained = rec->attained_gpu_ms + gpu_milli * (now - j.attempt_start).value() / 1000;
  const auto next = policy_.queue->NextStandingChange(PendingJob{.spec = &rec->spec, .attained = Millis{attained}});
  if (!next) return;
  // Crossing at now + (next - attained) GPU-ms over its GPUs, rounded up to the millisecond.
  const int64_t ms = ((*next - attained) * 1000 + gpu_milli - 1) / gpu_milli;
  const Millis at = now + Millis{std::max<int64_t>(1, ms)};
  if (at < results_[i].finish) demotions_.push({at, i, j.epoch});
}

void Engine::Preempted(size_t i, Millis now) {
  SimJob& j = jobs_[i];
  const Millis elapsed = now - j.attempt_start;
  results_[i].cost += CostOf(j, elapsed);
  if (j.full_run.value() > 0) {
    j.progress = std::min(0.999999, j.progress + static_cast<double>(elapsed.value()) / static_cast<double>(j.full_run.value()));
  }
  Released(i, now);
  ++j.epoch;  // its completion event is now stale
  if (j.spec.gpus_per_task > 0) ++waiting_gpu_jobs_;
  TenantMoves(i, +1, 0);
  ++preemptions_;
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
    Released(i, now);
    ++j.epoch;  // its completion event is now stale
    if (j.spec.gpus_per_task > 0) ++waiting_gpu_jobs_;
    TenantMoves(i, +1, 0);
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

// --- Acquiring capacity ---

// The waiting jobs, planned onto new nodes of the cheapest feasible offers (the live
// autoscaler's decision, sched/provision.h). A refused create blocks its offer and the plan is
// made again at once, without it.
void Engine::Plan(Millis now) {
  const std::vector<CapacityDemand> demands = QueuedDemands();
  if (demands.empty()) return;
  bool bought = false;
  for (int round = 0; round < 64; ++round) {
    std::vector<OfferHeld> held(fleet_.offers.size());
    std::vector<BootingNode> booting;
    MicroUsd spend{0};
    for (uint32_t n = static_cast<uint32_t>(static_nodes_); n < held_.size(); ++n) {
      const Held& h = held_[n];
      if (!h.held) continue;
      const Offer& o = fleet_.offers[static_cast<size_t>(h.offer)];
      if (h.up) {
        ++held[static_cast<size_t>(h.offer)].running;
      } else {
        ++held[static_cast<size_t>(h.offer)].booting;
        booting.push_back(BootingNode{.offer = static_cast<size_t>(h.offer), .free_gpus = o.gpus, .free_cpu = o.cpu, .free_memory = o.memory});
      }
      spend = MicroUsd{spend.value() + o.price_per_hour.value()};
    }
    const ProvisionPlan plan = PlanCapacity(fleet_, ProvisionInput{.demands = demands, .held = held, .booting = booting, .blocked = &blocked_,
                                                                   .buyable = buyable_, .spend_per_hour = spend, .now = now});
    bool refused = false;
    for (const ProvisionPlan::NewNode& n : plan.create) {
      const Offer& o = fleet_.offers[n.offer];
      if (always_out_[n.offer] || (options_.autoscale->stockout > 0 && scale_rng_.Unit() < options_.autoscale->stockout)) {
        ++as_.stockouts;
        blocked_.Block(fleet_, n.offer, Scope::kOffer, now + options_.autoscale->block_for);
        if (options_.on_event) {
          options_.on_event(now, "node.provision_failed", "offer/" + o.name,
                            fmt::format(R"({{"offer":"{}","class":"capacity","scope":"offer"}})", o.name));
        }
        refused = true;
        continue;
      }
      Buy(n.offer, now);
      bought = true;
    }
    if (!refused) break;
  }
  idle_plans_ = bought ? 0 : idle_plans_ + 1;
  // Offers blocked now may take the jobs left once their block ends: plan again then.
  std::optional<Millis> next;
  for (const Blocklist::Entry& e : blocked_.Active(now)) next = next ? std::min(*next, e.until) : e.until;
  if (next && !cluster_.queued().empty()) PlanAt(*next);
}

void Engine::Buy(size_t offer, Millis now) {
  const Offer& o = fleet_.offers[offer];
  uint32_t id = 0;
  if (!spare_[offer].empty()) {
    id = spare_[offer].back();
    spare_[offer].pop_back();
  } else {
    Node n = fleet_.NodeOfOffer(offer, fmt::format("{}-{}", o.name, ++named_[offer]));
    id = n.id.value();
    fleet_.nodes.push_back(std::move(n));
    NodeState st = MakeNodeState(fleet_, fleet_.nodes.back());
    st.price = o.price_per_gpu_hour();
    st.health = Health::kUnhealthy;  // until it boots
    state_.AddNode(st);
    node_down_.push_back(1);
    held_.emplace_back();
  }
  Held& h = held_[id];
  h.offer = static_cast<int>(offer);
  h.created = now;
  h.held = true;
  h.up = false;
  h.idle_since.reset();
  h.tasks = 0;
  ++h.gen;
  ++as_.nodes_bought;
  ++offer_nodes_[offer];
  const double jitter = options_.autoscale->boot_jitter;
  const double factor = 1.0 + jitter * (2.0 * scale_rng_.Unit() - 1.0);
  const Millis boot{std::max<int64_t>(1, std::llround(static_cast<double>(o.boot_time.value()) * factor))};
  PushScale({now + boot, ScaleEvent::kBooted, id, h.gen});
  if (options_.on_event) {
    options_.on_event(now, "node.provisioning", "node/" + fleet_.nodes[id].name,
                      fmt::format(R"({{"node":"{}","offer":"{}"}})", fleet_.nodes[id].name, o.name));
  }
  NodesChanged(now);
}

void Engine::Booted(uint32_t id, Millis now) {
  Held& h = held_[id];
  const Offer& o = fleet_.offers[static_cast<size_t>(h.offer)];
  h.up = true;
  node_down_[id] = 0;
  total_gpu_milli_ += static_cast<int64_t>(o.gpus) * 1000;
  state_.Update(NodeId{id}, [](NodeState& n) { n.health = Health::kHealthy; });
  if (options_.on_event) {
    options_.on_event(now, "node.ready", "node/" + fleet_.nodes[id].name,
                      fmt::format(R"({{"node":"{}","offer":"{}"}})", fleet_.nodes[id].name, o.name));
  }
  // Spot capacity may be taken back.
  Millis mtbf = options_.autoscale->spot_mtbf;
  if (mtbf.value() <= 0) mtbf = fleet_.provider(o.provider).provisioner.spot_mtbf;
  if (o.tier == PriceTier::kSpot && mtbf.value() > 0) {
    const double u = scale_rng_.Unit();
    const auto life = static_cast<int64_t>(-static_cast<double>(mtbf.value()) * std::log1p(-u));
    PushScale({now + Millis{std::max<int64_t>(1, life)}, ScaleEvent::kReclaim, id, h.gen});
  }
  Idle(id, now);
}

// A node has nothing running: looked at for release once it has been idle long enough.
void Engine::Idle(uint32_t id, Millis now) {
  Held& h = held_[id];
  if (h.offer < 0 || !h.held || !h.up) return;
  h.idle_since = now;
  ++h.idle_gen;
  PushScale({now + options_.autoscale->idle_after, ScaleEvent::kCheck, id, h.idle_gen});
}

// The live pool's release decision (PlanRelease) over this node's offer: released now, or
// looked at again when the decision says.
void Engine::Check(uint32_t id, Millis now) {
  const Held& me = held_[id];
  // Jobs that could run on this node's offer still wait: it is kept, as the live pool keeps it
  // (a gang may be waiting for its other nodes). Looked at again later, without keeping the
  // run going on its own.
  if (!cluster_.queued().empty()) {
    if (OffersWanted(fleet_, QueuedDemands())[static_cast<size_t>(me.offer)]) {
      PushScale({now + options_.autoscale->idle_after, ScaleEvent::kCheck, id, me.idle_gen, /*alive=*/false});
      return;
    }
  }
  std::vector<AcquiredNode> nodes;
  std::vector<uint32_t> ids;
  for (uint32_t n = static_cast<uint32_t>(static_nodes_); n < held_.size(); ++n) {
    const Held& h = held_[n];
    if (!h.held || !h.up || h.offer != me.offer) continue;
    nodes.push_back(AcquiredNode{.offer = static_cast<size_t>(h.offer), .created = h.created, .idle_since = h.idle_since});
    ids.push_back(n);
  }
  const ReleasePlan plan = PlanRelease(fleet_, nodes, options_.autoscale->idle_after, now, options_.autoscale->billing_aware);
  for (size_t k : plan.release) {
    if (ids[k] == id) return Release(id, now);
  }
  for (const ReleasePlan::Kept& k : plan.kept) {
    if (ids[k.node] == id && k.until > now) PushScale({k.until, ScaleEvent::kCheck, id, me.idle_gen});
  }
}

// The node goes back to its provider: billed for its whole increments, out of the pool.
void Engine::Release(uint32_t id, Millis now) {
  Held& h = held_[id];
  const size_t offer = static_cast<size_t>(h.offer);
  const Offer& o = fleet_.offers[offer];
  const Millis age = now - h.created;
  as_.spent += BilledCost(o, age);
  as_.gpu_hours_bought += static_cast<double>(o.gpus) * static_cast<double>(BilledTime(o, age).value()) / 3'600'000.0;
  if (h.up) total_gpu_milli_ -= static_cast<int64_t>(o.gpus) * 1000;
  h.held = false;
  h.up = false;
  h.idle_since.reset();
  ++h.gen;
  ++h.idle_gen;
  node_down_[id] = 1;
  state_.Update(NodeId{id}, [](NodeState& n) { n.health = Health::kUnhealthy; });
  spare_[offer].push_back(id);
  --offer_nodes_[offer];
  if (options_.on_event) {
    options_.on_event(now, "node.released", "node/" + fleet_.nodes[id].name,
                      fmt::format(R"({{"node":"{}","offer":"{}"}})", fleet_.nodes[id].name, o.name));
  }
  NodesChanged(now);
}

void Engine::NodesChanged(Millis now) {
  int64_t total = 0;
  for (int32_t n : offer_nodes_) total += n;
  as_.nodes_peak = std::max(as_.nodes_peak, total);
  if (!as_.nodes.empty() && as_.nodes.back().t == now) {
    as_.nodes.back().nodes = offer_nodes_;
  } else {
    as_.nodes.push_back(OfferNodesPoint{.t = now, .nodes = offer_nodes_});
  }
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
  if (options_.autoscale) NodesChanged(last_);
  // Faults go on for ever; the replay ends when no job is left to arrive, run or wait. Under
  // autoscaling, nodes booting or idle (to be released) keep it going too, and so does a plan
  // due while jobs wait (unless a hundred plans in a row bought nothing).
  auto more = [&] {
    if (next < arrival_order_.size() || !running_.empty() || (!cluster_.queued().empty() && !faults_.empty())) return true;
    return alive_scale_ > 0 || (!plans_.empty() && !cluster_.queued().empty() && idle_plans_ < 100);
  };
  // The scale events of this instant of the given kinds (boots and reclaims before the pass,
  // plans and release checks after it).
  auto scale_events = [&](Millis now, ScaleEvent::Kind last_kind, bool& freed) -> Status {
    while (!scale_.empty() && scale_.top().at == now && scale_.top().kind <= last_kind) {
      const ScaleEvent e = scale_.top();
      scale_.pop();
      if (e.alive) --alive_scale_;
      switch (e.kind) {
        case ScaleEvent::kBooted:
          if (held_[e.node].held && held_[e.node].gen == e.gen) {
            Booted(e.node, now);
            freed = true;
          }
          break;
        case ScaleEvent::kReclaim: {
          Held& h = held_[e.node];
          if (!h.held || h.gen != e.gen) break;
          // Taken back: its jobs keep what their checkpoints hold and wait again; the offer is
          // blocked for a while, so the replacement comes from elsewhere.
          ++as_.reclaims;
          ++node_failures_;
          auto hit = FailJobs(e.node, -1, now);
          if (!hit) return hit.error();
          if (*hit) ++failures_;
          blocked_.Block(fleet_, static_cast<size_t>(h.offer), Scope::kOffer, now + options_.autoscale->block_for);
          Release(e.node, now);
          freed = true;
          break;
        }
        case ScaleEvent::kPlan:
          plans_.erase(plans_.find(now));
          Plan(now);
          break;
        case ScaleEvent::kCheck:
          if (held_[e.node].held && held_[e.node].idle_since && held_[e.node].idle_gen == e.gen) Check(e.node, now);
          break;
      }
    }
    return Status::Ok();
  };
  while (more()) {
    Millis now{INT64_MAX};
    if (next < arrival_order_.size()) now = jobs_[arrival_order_[next]].spec.submit_time;
    if (!running_.empty()) now = std::min(now, running_.top().at);
    if (!faults_.empty()) now = std::min(now, faults_.top().at);
    if (!demotions_.empty()) now = std::min(now, demotions_.top().at);
    if (!scale_.empty()) now = std::min(now, scale_.top().at);
    listener_.now_ = now;
    // The state since the last instant, for the timeline (a point only when it changed).
    const TimelinePoint point{last_, static_cast<int32_t>(cluster_.queued().size()), static_cast<double>(busy_milli_) / 1000.0};
    if (!timeline_.empty() && timeline_.back().t == point.t) timeline_.pop_back();  // held for no time
    if (timeline_.empty() || timeline_.back().queued != point.queued || timeline_.back().busy_gpus != point.busy_gpus) {
      timeline_.push_back(point);
    }
    Integrate(now);
    bool freed = false;
    cluster_.EnforceTimeLimits(now);  // before the completions: a job at its limit ends timed out
    while (!running_.empty() && running_.top().at == now) {
      const Completion c = running_.top();
      running_.pop();
      SimJob& j = jobs_[c.job];
      if (c.epoch != j.epoch) continue;  // that placement was lost to a failure
      results_[c.job].cost += CostOf(j, now - j.attempt_start);
      JobRecord* rec = cluster_.Find(JobId{c.job + 1});
      if (!rec) return Error(StatusCode::kInternal, fmt::format("finished job {} is not in the cluster state", c.job + 1));
      const int code = j.fails ? 1 : 0;
      for (size_t t = 0; t < rec->tasks.size(); ++t) cluster_.TaskEnded(*rec, static_cast<int>(t), code, std::nullopt, "", now);
      Released(c.job, now);
      freed = true;
      ++done_;
    }
    // Running jobs demoted at this instant (least-attained-service): a pass may preempt them.
    bool demoted = false;
    while (!demotions_.empty() && demotions_.top().at == now) {
      const Completion d = demotions_.top();
      demotions_.pop();
      if (d.epoch != jobs_[d.job].epoch || !running_jobs_.count(d.job)) continue;  // it stopped since
      demoted = true;
      WakeAtNextDemotion(d.job, now);
    }
    while (!faults_.empty() && faults_.top().at == now) {
      const Fault f = faults_.top();
      faults_.pop();
      if (Status s = OnFault(f, now); !s.ok()) return tl::unexpected(s);
      freed = true;
    }
    if (Status s = scale_events(now, ScaleEvent::kReclaim, freed); !s.ok()) return tl::unexpected(s);
    bool arrived = false;
    while (next < arrival_order_.size() && jobs_[arrival_order_[next]].spec.submit_time == now) {
      const size_t i = arrival_order_[next++];
      JobRecord rec{.spec = jobs_[i].spec};
      if (jobs_[i].dependencies) rec.extras = *jobs_[i].dependencies;
      if (options_.on_event) {
        options_.on_event(now, "job.submitted", fmt::format("job/{}", i + 1), JobEventData(rec, "submitted"));
      }
      cluster_.Accept(std::move(rec));
      arrived = true;
      if (jobs_[i].spec.gpus_per_task > 0) ++waiting_gpu_jobs_;
      TenantMoves(i, +1, 0);
    }
    TakeCancelled();  // ended on arrival: a dependency already out of reach
    // Nothing freed and nothing arrived: the jobs that waited then still cannot fit. (Within a
    // pass the queue passes over the classes that failed before and have had nothing freed.)
    if (!cluster_.queued().empty() && (freed || arrived || demoted)) {
      ++passes_;
      const ClusterState::PassResult pass = cluster_.Pass(now);
      for (JobId id : pass.preempted) Preempted(id.value() - 1, now);
      for (const Reservation& rv : pass.reservations) {
        Millis& first = results_[rv.job.value() - 1].reserved;
        if (first.value() < 0) first = rv.start;
      }
      if (Status s = StartPlacements(pass.placed, now); !s.ok()) return tl::unexpected(s);
      for (JobId id : pass.refused) {
        const size_t i = id.value() - 1;
        results_[i].outcome = Outcome::kNever;
        if (jobs_[i].spec.gpus_per_task > 0) --waiting_gpu_jobs_;
        TenantMoves(i, -1, 0);
        ++done_;
      }
      TakeCancelled();
      if (options_.progress && (passes_ & 1023) == 0) options_.progress(done_, total);
    }
    if (!options_.autoscale) continue;
    bool unused = false;
    if (Status s = scale_events(now, ScaleEvent::kCheck, unused); !s.ok()) return tl::unexpected(s);
    // Jobs the pass left waiting: planned for after a short batch (what else arrives joins it).
    if (!cluster_.queued().empty() && (freed || arrived)) PlanAt(now + options_.autoscale->batch);
  }
  if (options_.progress) options_.progress(total, total);

  SimReport r{.policy = policy_.name, .seed = options_.seed, .jobs = static_cast<int64_t>(total), .passes = passes_,
              .failures = failures_, .node_failures = node_failures_, .gpu_failures = gpu_failures_,
              .lost_gpu_hours = lost_gpu_milli_ms_ / 1000.0 / 3'600'000.0};
  r.preemptions = preemptions_;
  if (options_.failures || !options_.scripted_failures.empty() || (options_.autoscale && node_failures_ > 0)) {
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
    if (j.cancelled) {
      ++r.cancelled;
      continue;
    }
    r.timed_out = listener_.timed_out;
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
  r.gpu_hours_used = busy_integral_ / 1000.0 / 3'600'000.0;
  if (options_.autoscale) {
    // Nodes still held (kept at an offer's minimum) are billed to the end of the run.
    for (uint32_t n = static_cast<uint32_t>(static_nodes_); n < held_.size(); ++n) {
      if (held_[n].held) Release(n, last_);
    }
    AutoscaleResult& a = as_;
    a.release = options_.autoscale->billing_aware ? "billing-aware" : "immediate";
    for (const Offer& o : fleet_.offers) {
      a.offers.push_back(o.name);
      a.offer_gpus.push_back(o.gpus);
    }
    a.gpu_hours_used = acquired_busy_ / 1000.0 / 3'600'000.0;
    a.idle_billed_gpu_hours = a.gpu_hours_bought - a.gpu_hours_used;
    // The fleet's own nodes cost their price over the whole run.
    for (size_t n = 0; n < static_nodes_; ++n) {
      a.spent += GpuCost(state_.node(NodeId{static_cast<uint32_t>(n)}).price, GpuMilli{state_.nodes()[n].gpu_count * 1000},
                         Millis{static_cast<int64_t>(r.makespan_s * 1000)});
    }
    double lower = 0;
    for (size_t i = 0; i < results_.size(); ++i) {
      const SimJobResult& j = results_[i];
      if (j.outcome != Outcome::kPlaced) continue;
      const JobSpec& spec = jobs_[i].spec;
      const double gpus = static_cast<double>(spec.tasks * spec.gpus_per_task) * static_cast<double>(spec.gpu_share.value()) / 1000.0;
      lower += lower_bound_gpu_ms_[i] * gpus * static_cast<double>(jobs_[i].duration.value()) / 3'600'000.0;
    }
    a.lower_bound = MicroUsd{static_cast<int64_t>(std::llround(lower))};
    r.gpu_utilization = capacity_integral_ > 0 ? busy_integral_ / capacity_integral_ : 0;
    for (size_t n = static_nodes_; n < fleet_.nodes.size(); ++n) r.acquired_node_names.push_back(fleet_.nodes[n].name);
    r.autoscale = std::move(as_);
  }
  r.fragmentation = free_integral_ > 0 ? free_while_waiting_ / free_integral_ : 0;
  // Per tenant, where the trace says whose jobs are whose.
  {
    std::map<std::string, size_t> index;
    std::vector<TenantResult> ts;
    std::vector<double> asked, tenant_jct_sum, tenant_queue_sum;
    for (size_t i = 0; i < results_.size(); ++i) {
      const std::string& name = jobs_[i].spec.tenant;
      auto [it, fresh] = index.try_emplace(name, ts.size());
      if (fresh) {
        ts.push_back(TenantResult{.name = name});
        asked.push_back(0);
        tenant_jct_sum.push_back(0);
        tenant_queue_sum.push_back(0);
      }
      const size_t k = it->second;
      const JobSpec& spec = jobs_[i].spec;
      const double gpu_hours = static_cast<double>(spec.tasks * spec.gpus_per_task) * static_cast<double>(spec.gpu_share.value()) /
                               1000.0 * static_cast<double>(jobs_[i].duration.value()) / 3'600'000.0;
      ++ts[k].jobs;
      asked[k] += gpu_hours;
      const SimJobResult& j = results_[i];
      if (j.outcome != Outcome::kPlaced) continue;
      ++ts[k].finished;
      ts[k].gpu_hours += gpu_hours;
      tenant_jct_sum[k] += static_cast<double>((j.finish - j.submit).value()) / 1000.0;
      tenant_queue_sum[k] += static_cast<double>((j.start - j.submit).value()) / 1000.0;
    }
    if (ts.size() > 1) {
      double ran = 0;
      for (const TenantResult& t : ts) ran += t.gpu_hours;
      const std::vector<double> entitled = WaterFill(asked, ran, tenant_weights_);
      std::vector<double> used;
      for (size_t k = 0; k < ts.size(); ++k) {
        TenantResult& t = ts[k];
        if (t.finished > 0) {
          t.avg_jct_s = tenant_jct_sum[k] / static_cast<double>(t.finished);
          t.avg_queue_s = tenant_queue_sum[k] / static_cast<double>(t.finished);
        }
        t.share = ran > 0 ? t.gpu_hours / ran : 0;
        t.entitled = ran > 0 ? entitled[k] / ran : 0;
        used.push_back(t.gpu_hours);
      }
      (void)used;
      // Fairness over the windows in which some tenant waited (over the whole run every
      // job ends, and each tenant gets what it asked: fair by construction, so not judged).
      r.fairness = Fairness{.jain = jain_weight_ > 0 ? jain_sum_ / jain_weight_ : 1, .max_deviation = max_deviation_,
                            .windows = contended_windows_};
      // Shares per window, in the report's tenant order (by name).
      std::vector<size_t> by_name(ts.size());
      for (size_t k = 0; k < by_name.size(); ++k) by_name[k] = k;
      std::sort(by_name.begin(), by_name.end(), [&](size_t a, size_t b) { return ts[a].name < ts[b].name; });
      for (TenantSharePoint& p : tenant_shares_) {
        std::vector<double> ordered;
        for (size_t k : by_name) ordered.push_back(k < p.shares.size() ? p.shares[k] : 0);
        p.shares = std::move(ordered);
      }
      r.tenant_shares = std::move(tenant_shares_);
      std::sort(ts.begin(), ts.end(), [](const TenantResult& a, const TenantResult& b) { return a.name < b.name; });
      r.tenants = std::move(ts);
    }
  }
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
