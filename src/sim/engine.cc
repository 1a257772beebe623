#include "sim/engine.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <bit>
#include <queue>

#include "core/models.h"

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
};

struct Completion {
  Millis at;
  size_t job;
  bool operator>(const Completion& o) const { return at != o.at ? at > o.at : job > o.job; }
};

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(std::max<size_t>(rank, 1) - 1), v.end());
  return v[std::max<size_t>(rank, 1) - 1];
}

class Engine {
 public:
  Engine(const Fleet& fleet, const Policy& policy, const SimOptions& options)
      : fleet_(fleet), policy_(policy), options_(options), rng_(options.seed), snap_(MakeSnapshot(fleet)) {
    for (const Node& n : fleet.nodes) max_gpus_ = std::max(max_gpus_, static_cast<int>(n.gpus.size()));
    for (const Node& n : fleet.nodes) total_gpu_milli_ += static_cast<int64_t>(n.gpus.size()) * 1000;
  }

  Status Load(const Trace& trace);
  Result<SimReport> Run();

 private:
  void Integrate(Millis until);
  Status StartPlacements(const Plan& plan, Millis now);

  const Fleet& fleet_;
  const Policy& policy_;
  const SimOptions& options_;
  SplitMix64 rng_;
  ClusterSnapshot snap_;
  int max_gpus_ = 0;
  int64_t total_gpu_milli_ = 0;

  std::vector<SimJob> jobs_;
  std::vector<PendingJob> compiled_;       // by job index
  std::vector<size_t> arrival_order_;
  std::vector<SimJobResult> results_;
  std::priority_queue<Completion, std::vector<Completion>, std::greater<>> running_;
  std::vector<PendingJob> pending_;
  std::vector<char> gone_;                 // scratch: by job id, jobs leaving the queue

  // Integrals over time, in milli-GPU x ms.
  Millis last_{0};
  int64_t busy_milli_ = 0;
  int waiting_gpu_jobs_ = 0;
  double busy_integral_ = 0;
  double free_integral_ = 0;
  double free_while_waiting_ = 0;
  int64_t passes_ = 0;
  size_t done_ = 0;
};

Status Engine::Load(const Trace& trace) {
  jobs_.reserve(trace.jobs.size());
  for (size_t i = 0; i < trace.jobs.size(); ++i) {
    const TraceJob& t = trace.jobs[i];
    const auto [tasks, per_task] = SplitGang(t.gpus, max_gpus_);
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
  compiled_.resize(jobs_.size());
  gone_.assign(jobs_.size() + 1, 0);
  for (size_t i = 0; i < jobs_.size(); ++i) {
    auto p = CompileJob(jobs_[i].spec, fleet_);
    if (!p) {
      // Out of the scheduler's range (say 17 GPUs on one node): refuse the job, do not stop.
      results_[i].outcome = Outcome::kNever;
      continue;
    }
    compiled_[i] = *p;
    if (!FitsFleet(snap_, compiled_[i])) {
      results_[i].outcome = Outcome::kNever;  // refused at admission, as the server does
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

Status Engine::StartPlacements(const Plan& plan, Millis now) {
  for (const Placement& p : plan.placements) {
    const size_t i = p.job.value() - 1;
    SimJob& j = jobs_[i];
    for (const TaskAllocation& a : p.tasks) {
      if (Status s = Allocate(snap_.nodes[a.node.value()], a); !s.ok()) {
        return Status(StatusCode::kInternal, "the plan did not apply: " + s.message());
      }
      busy_milli_ += std::popcount(a.gpu_mask) * a.share.value();
    }
    j.tasks = p.tasks;
    const Node& first = fleet_.node(p.tasks.front().node);
    Millis run = j.duration;
    if (auto m = first.gpu_model()) {
      for (const auto& [model, d] : j.duration_by_model) {
        if (model == *m) run = d;
      }
    }
    SimJobResult& r = results_[i];
    r.outcome = Outcome::kPlaced;
    r.start = now;
    r.finish = now + run;
    r.first_node = first.id;
    for (const TaskAllocation& a : p.tasks) {
      const MicroUsd price = snap_.nodes[a.node.value()].price;
      r.cost += GpuCost(price, GpuMilli{std::popcount(a.gpu_mask) * a.share.value()}, run);
    }
    if (j.spec.gpus_per_task > 0) --waiting_gpu_jobs_;
    running_.push({r.finish, i});
  }
  return Status::Ok();
}

Result<SimReport> Engine::Run() {
  size_t next = 0;  // into arrival_order_
  std::vector<PendingJob> fresh;
  const size_t total = jobs_.size();
  if (!arrival_order_.empty()) last_ = jobs_[arrival_order_.front()].spec.submit_time;
  while (next < arrival_order_.size() || !running_.empty()) {
    Millis now{INT64_MAX};
    if (next < arrival_order_.size()) now = jobs_[arrival_order_[next]].spec.submit_time;
    if (!running_.empty()) now = std::min(now, running_.top().at);
    Integrate(now);
    bool freed = false;
    while (!running_.empty() && running_.top().at == now) {
      SimJob& j = jobs_[running_.top().job];
      running_.pop();
      for (const TaskAllocation& a : j.tasks) {
        if (Status s = Release(snap_.nodes[a.node.value()], a); !s.ok()) return tl::unexpected(s);
        busy_milli_ -= std::popcount(a.gpu_mask) * a.share.value();
      }
      j.tasks.clear();
      freed = true;
      ++done_;
    }
    fresh.clear();
    while (next < arrival_order_.size() && jobs_[arrival_order_[next]].spec.submit_time == now) {
      const size_t i = arrival_order_[next++];
      pending_.push_back(compiled_[i]);
      fresh.push_back(compiled_[i]);
      if (jobs_[i].spec.gpus_per_task > 0) ++waiting_gpu_jobs_;
    }
    if (pending_.empty()) continue;
    // Nothing freed since the last pass: the jobs that waited then still cannot fit, so only the
    // new arrivals need a look.
    const std::vector<PendingJob>& candidates = freed ? pending_ : fresh;
    if (candidates.empty()) continue;
    ++passes_;
    const Plan plan = Schedule(snap_, candidates, policy_, rng_);
    if (Status s = StartPlacements(plan, now); !s.ok()) return tl::unexpected(s);
    std::vector<char>& gone = gone_;  // by job id; reset below
    bool any_gone = !plan.placements.empty();
    for (const Placement& p : plan.placements) gone[p.job.value()] = true;
    for (const Decision& d : plan.decisions) {
      if (d.outcome != Outcome::kNever) continue;
      const size_t i = d.job.value() - 1;
      results_[i].outcome = Outcome::kNever;
      if (jobs_[i].spec.gpus_per_task > 0) --waiting_gpu_jobs_;
      gone[d.job.value()] = any_gone = true;
      ++done_;
    }
    if (any_gone) {
      std::erase_if(pending_, [&](const PendingJob& p) {
        const bool g = gone[p.spec->id.value()];
        gone[p.spec->id.value()] = 0;
        return g;
      });
    }
    if (options_.progress && (passes_ & 1023) == 0) options_.progress(done_, total);
  }
  if (options_.progress) options_.progress(total, total);

  SimReport r{.policy = policy_.name, .seed = options_.seed, .jobs = static_cast<int64_t>(total), .passes = passes_};
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
