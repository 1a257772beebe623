#include "state/cluster_state.h"

#include "core/units.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <bit>
#include <nlohmann/json.hpp>

namespace gp {

ClusterState::ClusterState(const Fleet& fleet, Policy policy, ClusterOptions options, ClusterListener& listener)
    : policy_(std::move(policy)), options_(options), listener_(listener), rng_(options.seed), sched_(fleet),
      queue_(*policy_.queue) {}

const ClusterState::TaskSet& ClusterState::TasksOn(NodeId node) const {
  static const TaskSet kNone;
  return node.value() < on_node_.size() ? on_node_[node.value()] : kNone;
}

const JobRecord* ClusterState::Find(JobId id) const {
  auto it = jobs_.find(id.value());
  return it == jobs_.end() ? nullptr : &it->second;
}

JobRecord* ClusterState::Find(JobId id) {
  auto it = jobs_.find(id.value());
  return it == jobs_.end() ? nullptr : &it->second;
}

void ClusterState::Inconsistent(const Status& s) {
  ++inconsistencies_;
  last_inconsistency_ = s;
}

void ClusterState::End(JobRecord& j, JobState state, Millis now) {
  const uint64_t id = j.spec.id.value();
  if (j.state == JobState::kQueued) {
    queued_.erase(id);
    if (held_.erase(id) > 0 && j.extras && j.extras->singleton) {
      if (auto s = singletons_.find({j.spec.tenant, j.spec.name}); s != singletons_.end()) {
        s->second.erase(id);
        if (s->second.empty()) singletons_.erase(s);
      }
    }
    queue_.Remove(j.spec.id);
    backoff_.erase({j.not_before_ms, id});
    if (nominated_.erase(id) > 0) sched_.Unreserve(j.spec.id);
    preempt_tried_.erase(id);
  }
  j.state = state;
  j.end_ms = now.value();
  Changed(j, JobStateName(state));
}

void ClusterState::TrackTask(NodeId node, const TaskKey& key) {
  if (on_node_.size() <= node.value()) on_node_.resize(node.value() + 1);
  on_node_[node.value()].insert(key);
}

void ClusterState::Changed(const JobRecord& j, std::string_view what) {
  Touch(j);
  if (IsTerminal(j.state)) {
    unfinished_.erase(j.spec.id.value());  // every end passes here
    // Jobs held for it are judged again at the next pass (not here: the caller may be walking
    // a set that a release would change).
    if (dependents_.count(j.spec.id.value()) > 0 || (!singletons_.empty() && singletons_.count({j.spec.tenant, j.spec.name}) > 0)) {
      ended_with_dependents_.push_back(j.spec.id.value());
    }
  }
  listener_.JobChanged(j, what);
  if (j.array_of != 0) {
    JobRecord& e = jobs_.at(j.spec.id.value());
    CountElement(e, IsTerminal(e.state) ? e.end_ms : std::max(e.start_ms, e.spec.submit_time.value()));
  }
}

std::optional<JobId> ClusterState::ElementId(JobId array, int64_t index) const {
  const JobRecord* a = Find(array);
  if (!a || !a->array) return std::nullopt;
  auto pos = a->array->PositionOf(index);
  if (!pos) return std::nullopt;
  return JobId{array.value() + 1 + static_cast<uint64_t>(*pos)};
}

bool ClusterState::Expand(Millis now) {
  // A capped pass expands at most as many as it may place: records made (and stored) in one
  // turn stay bounded too.
  int64_t budget = options_.max_placements_per_pass > 0 ? static_cast<int64_t>(options_.max_placements_per_pass) : INT64_MAX;
  bool limited = false;
  for (auto it = arrays_.begin(); it != arrays_.end();) {
    JobRecord& a = jobs_.at(*it);
    const int64_t total = a.array->size();
    const auto& c = a.arr().element_counts;
    const int64_t queued = c[static_cast<size_t>(JobState::kQueued)];
    const int64_t live = queued + c[static_cast<size_t>(JobState::kStarting)] + c[static_cast<size_t>(JobState::kRunning)];
    int64_t room = kArrayWindow - queued;
    if (a.array->max_running > 0) room = std::min<int64_t>(room, a.array->max_running - live);
    // No more records than could be placed now: a big array waits as one record while the
    // fleet is full, and expands as GPUs free up.
    const int64_t need = static_cast<int64_t>(a.spec.tasks) * a.spec.gpus_per_task * a.spec.gpu_share.value();
    if (need > 0) room = std::min<int64_t>(room, sched_.free_gpu_milli() / need - queued);
    if (room > budget) {
      room = budget;
      limited = true;
    }
    const int64_t n = std::max<int64_t>(room, 0);
    const uint64_t base = a.spec.id.value() + 1;
    const int64_t skipped_before = a.arr().skipped;
    const int64_t expanded_before = a.arr().expanded;
    for (int64_t made = 0; made < n && a.arr().expanded < total;) {
      const int64_t pos = a.arr().expanded++;
      if (a.arr().early_cancel.erase(pos) > 0) {
        ++a.arr().skipped;  // cancelled before it had a record: it never gets one
        continue;
      }
      ++made;
      --budget;
      JobRecord e{.spec = a.spec, .command = a.command, .env = a.env, .workdir = a.workdir, .max_retries = a.max_retries};
      e.extras = a.extras;  // secrets sealed, and the container, as the array's
      e.spec.id = JobId{base + static_cast<uint64_t>(pos)};
      e.array_of = a.spec.id.value();
      e.array_index = static_cast<uint32_t>(a.array->IndexAt(pos));
      ++a.arr().element_counts[static_cast<size_t>(JobState::kQueued)];
      const uint64_t id = e.spec.id.value();
      JobRecord& placed = jobs_[id] = std::move(e);
      queued_.insert(id);
      unfinished_.insert(id);
      Touch(placed);
      Enqueue(placed, now);
    }
    if (a.arr().expanded != expanded_before) Touch(a);
    const bool all = a.arr().expanded >= total;
    ++it;  // FollowElements may end the array (and take it out of arrays_)
    if (a.arr().skipped != skipped_before) FollowElements(a, now.value());
    if (all) arrays_.erase(a.spec.id.value());
  }
  return limited;
}

void ClusterState::CountElement(JobRecord& e, int64_t at_ms) {
  if (e.counted == e.state) return;
  auto it = jobs_.find(e.array_of);
  if (it == jobs_.end() || !it->second.array) return;
  JobRecord& a = it->second;
  --a.arr().element_counts[static_cast<size_t>(e.counted)];
  ++a.arr().element_counts[static_cast<size_t>(e.state)];
  e.counted = e.state;
  FollowElements(a, at_ms);
}

void ClusterState::FollowElements(JobRecord& a, int64_t at_ms) {
  const auto n = [&](JobState st) { return a.arr().element_counts[static_cast<size_t>(st)]; };
  const int64_t total = a.array->size();
  const int64_t done = n(JobState::kSucceeded) + n(JobState::kFailed) + n(JobState::kCancelled) + a.arr().skipped;
  JobState next = JobState::kQueued;
  if (done >= total) {
    next = n(JobState::kFailed) > 0 ? JobState::kFailed
           : (n(JobState::kCancelled) > 0 || a.arr().skipped > 0) ? JobState::kCancelled : JobState::kSucceeded;
  } else if (n(JobState::kStarting) + n(JobState::kRunning) > 0) {
    next = JobState::kRunning;
  }
  if (next == a.state) return;
  const uint64_t id = a.spec.id.value();
  if (a.state == JobState::kQueued) queued_.erase(id);
  if (next == JobState::kQueued) queued_.insert(id);
  a.state = next;
  Touch(a);
  if (next == JobState::kRunning && a.attempt == 0) {
    a.attempt = 1;  // an array's attempt says only that it has started (once)
    a.start_ms = at_ms;
    Changed(a, "started");
  } else if (IsTerminal(next)) {
    a.end_ms = at_ms;
    arrays_.erase(id);
    a.exit_code = next == JobState::kSucceeded ? std::optional<int>(0) : std::nullopt;
    a.message = next == JobState::kSucceeded
                    ? ""
                    : fmt::format("{} of {} elements failed, {} cancelled", n(JobState::kFailed), total,
                                  n(JobState::kCancelled) + a.arr().skipped);
    Changed(a, JobStateName(next));
  }
}

Status ClusterState::CancelElement(JobId array, int64_t index, Millis now) {
  JobRecord* a = Find(array);
  auto id = ElementId(array, index);
  if (!a || !id) return Status(StatusCode::kNotFound, fmt::format("no job {}_{}", array.value(), index));
  if (Find(*id)) return Cancel(*id, now);
  const int64_t pos = static_cast<int64_t>(id->value() - array.value() - 1);
  if (pos < a->arr().expanded || IsTerminal(a->state)) {
    return Status(StatusCode::kFailedPrecondition, fmt::format("job {}_{} already cancelled", array.value(), index));
  }
  a->arr().early_cancel.insert(pos);
  Touch(*a);
  return Status::Ok();
}

void ClusterState::RecountArrays() {
  for (auto& [id, j] : jobs_) {
    if (j.array) j.arr().element_counts = {};
  }
  for (auto& [id, j] : jobs_) {
    if (j.array_of == 0) continue;
    auto it = jobs_.find(j.array_of);
    if (it == jobs_.end() || !it->second.array) continue;
    ++it->second.arr().element_counts[static_cast<size_t>(j.state)];
    j.counted = j.state;
  }
}

Status ClusterState::CancelArray(JobRecord& a, Millis now) {
  const uint64_t id = a.spec.id.value();
  a.cancel_requested = true;
  a.arr().skipped += a.array->size() - a.arr().expanded;  // never expanded now
  a.arr().expanded = a.array->size();
  a.arr().early_cancel.clear();
  arrays_.erase(id);
  Touch(a);
  for (auto it = jobs_.upper_bound(id); it != jobs_.end() && it->first <= id + static_cast<uint64_t>(a.arr().expanded); ++it) {
    if (it->second.array_of == id && !IsTerminal(it->second.state)) (void)Cancel(JobId{it->first}, now);
  }
  FollowElements(a, now.value());
  return Status::Ok();
}

std::vector<uint64_t> ClusterState::TakeChanged() {
  std::vector<uint64_t> out(changed_.begin(), changed_.end());
  changed_.clear();
  return out;
}

Status ClusterState::Admit(const JobSpec& spec) const {
  auto p = CompileJob(spec, sched_.fleet());
  if (!p) return p.error();
  if (options_.never == NeverFits::kRefuse && !FitsFleet(sched_, *p)) {
    return Status(StatusCode::kFailedPrecondition, "cannot run on this fleet");
  }
  if (options_.never == NeverFits::kRefuse) {
    if (auto t = sched_.tenants().Find(spec.tenant)) {
      const auto most = sched_.tenants().MaxEver(*t, p->model_mask);
      const int64_t need = static_cast<int64_t>(spec.tasks) * spec.gpus_per_task * spec.gpu_share.value();
      if (most && need > *most) {
        return Status(StatusCode::kFailedPrecondition,
                      fmt::format("asks {:g} GPUs, more than tenant {} could ever hold under its quota and what its cohort "
                                  "could lend ({:g})",
                                  static_cast<double>(need) / 1000, spec.tenant, static_cast<double>(*most) / 1000));
      }
    }
  }
  return Status::Ok();
}

const PriorityClass* ClusterState::ClassOf(int priority) const {
  for (const PriorityClass& c : sched_.fleet().priority_classes) {
    if (c.value == priority) return &c;
  }
  return nullptr;
}

Status ClusterState::Limit(JobSpec& spec, bool priority_unset) const {
  const auto t = sched_.tenants().Find(spec.tenant);
  static const TenantConfig kNone;
  const TenantConfig& c = t ? sched_.tenants().config(*t) : kNone;
  if (priority_unset && !c.priority.empty()) {
    if (const PriorityClass* pc = sched_.fleet().FindPriorityClass(c.priority)) spec.priority = pc->value;
  }
  const PriorityClass* pc = ClassOf(spec.priority);
  const Millis class_max = pc ? pc->max_time : Millis{0};
  // The smaller of the maxima that are set.
  Millis max = c.max_time;
  if (class_max.value() > 0 && (max.value() == 0 || class_max < max)) max = class_max;
  if (spec.time_limit.value() == 0) {
    spec.time_limit = c.default_time.value() > 0 ? c.default_time : pc && pc->default_time.value() > 0 ? pc->default_time : max;
    if (max.value() > 0 && spec.time_limit > max) spec.time_limit = max;
    return Status::Ok();
  }
  if (c.max_time.value() > 0 && spec.time_limit > c.max_time) {
    return Status(StatusCode::kInvalidArgument, fmt::format("field 'time': {} is over tenant {}'s maximum of {}",
                                                            FormatMillis(spec.time_limit), spec.tenant, FormatMillis(c.max_time)));
  }
  if (class_max.value() > 0 && spec.time_limit > class_max) {
    return Status(StatusCode::kInvalidArgument, fmt::format("field 'time': {} is over priority class {}'s maximum of {}",
                                                            FormatMillis(spec.time_limit), pc->name, FormatMillis(class_max)));
  }
  return Status::Ok();
}

namespace {
const char* DependencyKindName(DependencyKind k) {
  return k == DependencyKind::kAfterOk ? "afterok" : k == DependencyKind::kAfterAny ? "afterany" : "afternotok";
}
}  // namespace

Status ClusterState::CheckDependencies(const JobRecord& job) const {
  if (!job.extras) return Status::Ok();
  for (const Dependency& d : job.extras->after) {
    if (!Find(JobId{d.job})) {
      return Status(StatusCode::kInvalidArgument, fmt::format("field 'dependency': {}:{}: there is no job {}",
                                                              DependencyKindName(d.kind), d.job, d.job));
    }
  }
  return Status::Ok();
}

ClusterState::Verdict ClusterState::Judge(const JobRecord& j, std::string& why) const {
  why.clear();
  if (!j.extras) return Verdict::kMet;
  for (const Dependency& d : j.extras->after) {
    const JobRecord* dep = Find(JobId{d.job});
    const char* kind = DependencyKindName(d.kind);
    if (!dep) {
      why = fmt::format("its dependency {}:{} can never be met: there is no job {}", kind, d.job, d.job);
      return Verdict::kNever;
    }
    if (!IsTerminal(dep->state)) {
      why += fmt::format("{}{}:{} (job {} {})", why.empty() ? "" : ", ", kind, d.job, d.job, JobStateName(dep->state));
      continue;
    }
    const bool succeeded = dep->state == JobState::kSucceeded;
    if ((d.kind == DependencyKind::kAfterOk && !succeeded) || (d.kind == DependencyKind::kAfterNotOk && succeeded)) {
      why = fmt::format("its dependency {}:{} can never be met: job {} {}", kind, d.job, d.job, JobStateName(dep->state));
      return Verdict::kNever;
    }
  }
  if (j.extras->singleton && j.array_of == 0) {
    // An earlier job of its tenant with its name that has not ended (ids grow with submission).
    for (uint64_t id : unfinished_) {
      if (id >= j.spec.id.value()) break;
      const JobRecord& o = jobs_.at(id);
      if (o.array_of == 0 && o.spec.name == j.spec.name && o.spec.tenant == j.spec.tenant) {
        why += fmt::format("{}singleton (job {} of the same name {})", why.empty() ? "" : ", ", id, JobStateName(o.state));
        break;
      }
    }
  }
  return why.empty() ? Verdict::kMet : Verdict::kWait;
}

bool ClusterState::Hold(JobRecord& j, Millis now) {
  if (!j.extras || !j.extras->has_dependencies() || j.array_of != 0) return false;
  std::string why;
  const Verdict v = Judge(j, why);
  if (v == Verdict::kMet) return false;
  if (v == Verdict::kNever) {
    j.message = why;
    End(j, JobState::kCancelled, now);
    return true;
  }
  const uint64_t id = j.spec.id.value();
  held_.insert(id);
  j.message = "waiting for its dependencies: " + why;
  for (const Dependency& d : j.extras->after) {
    const JobRecord* dep = Find(JobId{d.job});
    if (dep && !IsTerminal(dep->state)) dependents_[d.job].push_back(id);
  }
  if (j.extras->singleton) singletons_[{j.spec.tenant, j.spec.name}].insert(id);
  Touch(j);
  return true;
}

void ClusterState::ReleaseDependents(Millis now) {
  while (!ended_with_dependents_.empty()) {
    std::vector<uint64_t> look;
    for (uint64_t id : std::exchange(ended_with_dependents_, {})) {
      if (auto it = dependents_.find(id); it != dependents_.end()) {
        look.insert(look.end(), it->second.begin(), it->second.end());
        dependents_.erase(it);
      }
      const JobRecord& ended = jobs_.at(id);
      if (auto s = singletons_.find({ended.spec.tenant, ended.spec.name}); s != singletons_.end()) {
        look.insert(look.end(), s->second.begin(), s->second.end());
      }
    }
    std::sort(look.begin(), look.end());  // in submission order: an earlier singleton goes first
    look.erase(std::unique(look.begin(), look.end()), look.end());
    for (uint64_t id : look) {
      if (held_.count(id) == 0) continue;
      JobRecord& j = jobs_.at(id);
      std::string why;
      const Verdict v = Judge(j, why);
      if (v == Verdict::kWait) {
        j.message = "waiting for its dependencies: " + why;
        Touch(j);
        continue;
      }
      held_.erase(id);
      if (j.extras->singleton) {
        auto s = singletons_.find({j.spec.tenant, j.spec.name});
        if (s != singletons_.end()) {
          s->second.erase(id);
          if (s->second.empty()) singletons_.erase(s);
        }
      }
      if (v == Verdict::kNever) {
        j.message = why;
        End(j, JobState::kCancelled, now);
        continue;
      }
      j.message.clear();
      Touch(j);
      if (j.array) {
        arrays_.insert(id);
      } else {
        Enqueue(j, now);
      }
    }
  }
}

void ClusterState::Accept(JobRecord job) {
  const uint64_t id = job.spec.id.value();
  next_id_ = std::max(next_id_, id + 1);
  JobRecord& j = jobs_[id] = std::move(job);
  j.state = JobState::kQueued;
  queued_.insert(id);
  unfinished_.insert(id);
  if (Hold(j, j.spec.submit_time)) return;
  if (j.array) {
    // One record; its elements' ids follow it, and get records as the scheduler needs them.
    next_id_ = std::max(next_id_, id + 1 + static_cast<uint64_t>(j.array->size()));
    arrays_.insert(id);
    return;
  }
  Enqueue(j, j.spec.submit_time);
}

void ClusterState::Enqueue(JobRecord& j, Millis now) {
  if (j.not_before_ms > 0) backoff_.erase({j.not_before_ms, j.spec.id.value()});
  auto p = CompileJob(j.spec, sched_.fleet());
  if (!p) {
    // Out of the scheduler's range: the job fails, naming the field.
    j.message = p.error().message();
    End(j, JobState::kFailed, now);
    return;
  }
  p->attained = Millis{j.attained_gpu_ms};
  p->tenant = SchedTenant(j.spec.tenant);
  queue_.Add(*p);
}

void ClusterState::Restore(JobRecord job, const std::function<std::optional<NodeId>(const std::string&)>& node_of) {
  const uint64_t id = job.spec.id.value();
  next_id_ = std::max(next_id_, id + 1);
  JobRecord& j = jobs_[id] = std::move(job);
  if (!IsTerminal(j.state)) unfinished_.insert(id);
  if (j.array) {
    next_id_ = std::max(next_id_, id + 1 + static_cast<uint64_t>(j.array->size()));
    if (j.state == JobState::kQueued) queued_.insert(id);
    if (!IsTerminal(j.state) && j.arr().expanded < j.array->size()) arrays_.insert(id);
    return;  // its elements are restored as jobs of their own; RecountArrays counts them
  }
  if (j.failing_over) failing_.insert(id);
  if (j.state == JobState::kQueued) {
    queued_.insert(id);
    if (Hold(j, j.spec.submit_time)) return;
    if (j.not_before_ms > 0) {
      backoff_.insert({j.not_before_ms, id});
    } else {
      Enqueue(j, j.spec.submit_time);
    }
    return;
  }
  if (IsTerminal(j.state) || j.tasks.empty()) return;
  if (j.state == JobState::kRunning) Watch(j);
  // Placed before the restart: hold its resources again; its agent will report on it.
  for (size_t t = 0; t < j.tasks.size(); ++t) {
    TaskRecord& task = j.tasks[t];
    auto node = node_of(task.node);
    if (!node || task.exit_code || task.signal) continue;
    task.allocation.node = *node;
    TrackTask(*node, TaskKey{id, static_cast<int>(t), j.attempt});
    if (!sched_.Allocate(task.allocation).ok()) {
      task.exit_code = -1;
      j.message = "lost on recovery: its node no longer has the resources";
      continue;
    }
    Charge(j, task.allocation, +1, std::nullopt);
  }
  sched_.AddRunning(j.spec.id, RunningOf(j, Millis{j.start_ms}));
  if (j.failing_over || j.cancel_requested || j.timed_out) sched_.RunningStopping(j.spec.id);
}

ClusterState::PassResult ClusterState::Pass(Millis now) {
  PassResult out;
  ReleaseDependents(now);
  out.more = Expand(now);
  while (!backoff_.empty() && backoff_.begin()->first <= now.value()) {
    const uint64_t id = backoff_.begin()->second;
    backoff_.erase(backoff_.begin());
    JobRecord& j = jobs_.at(id);
    if (j.state == JobState::kQueued) {
      j.not_before_ms = 0;
      Enqueue(j, now);
    }
  }
  out.waiting_on_backoff = !backoff_.empty();
  if (sched_.fleet().models.size() != models_seen_) {
    // A node of a new GPU model joined (the live fleet grows): a job's allowed models are bits
    // of the fleet's model table, so what waits is compiled again.
    models_seen_ = sched_.fleet().models.size();
    sched_.tenants().Resolve(sched_.fleet());
    const std::vector<uint64_t> queued(queued_.begin(), queued_.end());
    for (uint64_t id : queued) {
      if (queue_.Contains(JobId{id})) Enqueue(jobs_.at(id), now);
    }
  }
  if (!nominated_.empty()) SettleNominations(now, out);
  if (queue_.empty() || sched_.empty()) return out;
  sched_.tenants().AdvanceTo(now);
  const Plan plan = Schedule(sched_, queue_, policy_, rng_, options_.max_placements_per_pass, now);
  reservations_.clear();
  for (const Reservation& r : plan.reservations) reservations_[r.job.value()] = r;
  out.reservations = plan.reservations;
  out.ran = plan.looked_at > 0;
  out.more = out.more || plan.capped;
  for (const Status& s : plan.internal) Inconsistent(s);
  out.looked_at = static_cast<size_t>(plan.looked_at);
  for (const Placement& p : plan.placements) {
    JobRecord& j = jobs_.at(p.job.value());
    // Re-check every node: a placement that no longer fits is dropped; the job stays queued.
    std::vector<TaskAllocation> done;
    bool ok = true;
    for (const TaskAllocation& a : p.tasks) {
      if (Status s = sched_.Allocate(a); !s.ok()) {
        // The plan was made on this very state: a refusal is a bug, reported as one.
        Inconsistent(Status(StatusCode::kInternal, fmt::format("job {}: the plan's node {} refused: {}", p.job.value(),
                                                               a.node.value(), s.message())));
        ok = false;
        break;
      }
      done.push_back(a);
    }
    if (!ok) {
      for (const TaskAllocation& a : done) {
        if (!sched_.Release(a).ok()) Inconsistent(Status(StatusCode::kInternal, "undoing a placement's own allocation failed"));  // cannot fail
      }
      continue;
    }
    Place(j, p.tasks, now, out);
  }
  ApplyDecisions(plan, now, out);
  if (policy_.preemption.any()) {
    Preempt(plan, now, out);
    // The simulator's victims stop at once: their preemptors start in this same pass.
    if (!out.preempted.empty()) {
      RequeueReady(now);
      SettleNominations(now, out);
    }
  }
  return out;
}

void ClusterState::Place(JobRecord& j, const std::vector<TaskAllocation>& tasks, Millis now, PassResult& out) {
  const JobId id = j.spec.id;
  out.undo.push_back({id, j.message, j.start_ms});
  for (const TaskAllocation& a : tasks) Charge(j, a, +1, now);
  j.tasks.clear();
  ++j.attempt;
  j.start_ms = 0;
  for (const TaskAllocation& a : tasks) {
    TrackTask(a.node, TaskKey{id.value(), static_cast<int>(j.tasks.size()), j.attempt});
    j.tasks.push_back(TaskRecord{.node = sched_.fleet().node(a.node).name, .allocation = a});
  }
  sched_.AddRunning(id, RunningOf(j, now));
  j.state = JobState::kStarting;
  queued_.erase(id.value());
  queue_.Remove(id);
  preempt_tried_.erase(id.value());
  j.message.clear();
  ++placed_total_;
  Changed(j, "placed");
  out.placed.push_back(id);
}

RunningJob ClusterState::RunningOf(const JobRecord& j, Millis since) const {
  RunningJob r{.spec = &j.spec, .tenant = SchedTenantOf(j.spec.tenant), .since = since, .attained = Millis{j.attained_gpu_ms}};
  for (const TaskRecord& t : j.tasks) {
    if (!t.exit_code && !t.signal) r.tasks.push_back(t.allocation);
  }
  // Its priority class's settings; a bare number: preemptible.
  if (const PriorityClass* c = ClassOf(j.spec.priority)) {
    r.preemptible = c->preemptible;
    r.min_run = c->min_run;
  }
  return r;
}

void ClusterState::SettleNominations(Millis now, PassResult& out) {
  for (auto it = nominated_.begin(); it != nominated_.end();) {
    const Nomination& n = it->second;
    if (std::any_of(n.victims.begin(), n.victims.end(), [&](JobId v) { return sched_.FindRunning(v) != nullptr; })) {
      ++it;
      continue;
    }
    // Every victim has stopped: the job takes what was held for it, or (when that no longer
    // fits: a node went down) waits again and may preempt anew.
    JobRecord& j = jobs_.at(it->first);
    sched_.Unreserve(j.spec.id);
    std::vector<TaskAllocation> done;
    for (const TaskAllocation& a : n.tasks) {
      if (!sched_.Allocate(a).ok()) break;
      done.push_back(a);
    }
    const std::vector<TaskAllocation> tasks = n.tasks;
    it = nominated_.erase(it);
    if (done.size() == tasks.size()) {
      Place(j, tasks, now, out);
      continue;
    }
    for (const TaskAllocation& a : done) {
      if (!sched_.Release(a).ok()) Inconsistent(Status(StatusCode::kInternal, "undoing a nominated allocation failed"));
    }
    j.message = "waiting: what its preemption freed is no longer there";
    Enqueue(j, now);
    Changed(j, "requeued");
  }
}

Status ClusterState::RestoreNomination(JobId id, const std::vector<std::pair<std::string, TaskAllocation>>& tasks,
                                       const std::vector<JobId>& victims,
                                       const std::function<std::optional<NodeId>(const std::string&)>& node_of) {
  const JobRecord* j = Find(id);
  if (!j || j->state != JobState::kQueued || !queue_.Contains(id) || nominated_.count(id.value())) {
    return Status(StatusCode::kFailedPrecondition, fmt::format("job {} no longer waits", id.value()));
  }
  for (JobId v : victims) {
    const JobRecord* vr = Find(v);
    if (vr && !IsTerminal(vr->state) && vr->state != JobState::kQueued && !vr->failing_over) {
      return Status(StatusCode::kFailedPrecondition, fmt::format("victim {} was not stored as stopping", v.value()));
    }
  }
  Nomination n{.victims = victims};
  for (const auto& [node, a] : tasks) {
    auto at = node_of(node);
    if (!at) return Status(StatusCode::kNotFound, fmt::format("node '{}' is unknown", node));
    TaskAllocation moved = a;
    moved.node = *at;
    n.tasks.push_back(moved);
  }
  queue_.Remove(id);
  sched_.Reserve(id, n.tasks);
  nominated_[id.value()] = std::move(n);
  return Status::Ok();
}

void ClusterState::Preempt(const Plan& plan, Millis now, PassResult& out) {
  // Who looks for victims: the jobs this pass judged and could not place, then the first job
  // of each class blocked since an earlier pass (a running job may have become a victim since:
  // its min_run passed, or under las it was demoted); a job whose search found none looks again
  // only after preempt_retry, so that a busy pool does not search every pass; at most
  // max_per_pass searches.
  std::vector<JobId> who;
  auto due = [&](JobId id) {
    auto tried = preempt_tried_.find(id.value());
    return tried == preempt_tried_.end() || now.value() >= tried->second + options_.preempt_retry.value();
  };
  for (const Stopped& st : plan.stopped) {
    if (st.decision.outcome == Outcome::kNotNow && due(st.decision.job)) who.push_back(st.decision.job);
  }
  std::vector<const JobQueue::Entry*> heads;
  for (const JobQueue::Class& c : queue_.classes()) {
    if (!c.jobs.empty() && c.blocked_at > 0) heads.push_back(&*c.jobs.begin());
  }
  std::sort(heads.begin(), heads.end(), [](const JobQueue::Entry* a, const JobQueue::Entry* b) { return *a < *b; });
  for (const JobQueue::Entry* e : heads) {
    if (std::find(who.begin(), who.end(), e->id) == who.end() && due(e->id)) who.push_back(e->id);
  }
  if (preempt_tried_.size() > 100'000) preempt_tried_.clear();
  int searched = 0;
  for (size_t w = 0; w < who.size(); ++w) {
    const JobId id = who[w];
    if (searched >= policy_.preemption.max_per_pass) break;
    JobRecord* j = Find(id);
    if (!j || j->state != JobState::kQueued || !queue_.Contains(id) || nominated_.count(id.value())) continue;
    auto p = CompileJob(j->spec, sched_.fleet());
    if (!p) continue;
    p->attained = Millis{j->attained_gpu_ms};
    p->tenant = SchedTenant(j->spec.tenant);
    ++searched;
    auto found = FindPreemption(sched_, *p, policy_, now, rng_);
    if (!found) {
      preempt_tried_[id.value()] = now.value();
      continue;
    }
    preempt_tried_.erase(id.value());
    // The job waits out of the queue for its victims; what it will take is held for it. The
    // next job of its class may preempt too, in this pass.
    const int64_t cls = queue_.ClassOf(id);
    queue_.Remove(id);
    if (cls >= 0 && !queue_.classes()[static_cast<size_t>(cls)].jobs.empty()) {
      who.push_back(queue_.classes()[static_cast<size_t>(cls)].jobs.begin()->id);
    }
    sched_.Reserve(id, found->tasks);
    Nomination& n = nominated_[id.value()];
    n.tasks = found->tasks;
    n.at = now;
    std::string names;
    for (const Victim& v : found->victims) {
      JobRecord& victim = jobs_.at(v.job.value());
      n.victims.push_back(v.job);
      names += fmt::format("{}{}", names.empty() ? "" : ", ", v.job.value());
      const std::string why =
          v.reclaim ? fmt::format("preempted by job {}: tenant {} takes back its quota, which tenant {} borrowed", id.value(),
                                  j->spec.tenant, victim.spec.tenant)
                    : fmt::format("preempted by job {}, which stands higher ({} {} against {})", id.value(),
                                  policy_.queue->StandingName(),
                                  policy_.queue->Standing(*p), policy_.queue->Standing(PendingJob{
                                      .spec = &victim.spec, .attained = Millis{victim.attained_gpu_ms}}));
      StopAttempt(victim, why, "preempted", now, /*counts=*/false, options_.preempt_grace_ms, now);
      out.preempted.push_back(v.job);
      out.preempted_by.push_back(id);
    }
    j->message = fmt::format("preempting job{} {}: starts when they have stopped", found->victims.size() > 1 ? "s" : "", names);
    Changed(*j, "preempting");
    out.preemptors.push_back(id);
  }
}

void ClusterState::ApplyDecisions(const Plan& plan, Millis now, PassResult& out) {
  for (const Stopped& st : plan.stopped) {
    const Decision& d = st.decision;
    const bool refuse = d.outcome == Outcome::kNever && options_.never == NeverFits::kRefuse;
    // Tried with a reservation's GPUs held (backfill): it may fit once the reservation starts
    // or moves, which no node's change would tell; it is not blocked.
    const bool block = !st.held;
    if (!refuse && options_.never == NeverFits::kRefuse) {  // the simulator shows no messages
      if (block) queue_.Block(st.cls, sched_.generation(), d);
      continue;
    }
    if (refuse) {
      // A fixed fleet: what never fits is refused, the whole class.
      std::vector<JobId> jobs;
      for (const JobQueue::Entry& e : queue_.classes()[st.cls].jobs) jobs.push_back(e.id);
      for (JobId id : jobs) {
        JobRecord& j = jobs_.at(id.value());
        j.message = "cannot run on this fleet";
        End(j, JobState::kFailed, now);
        out.refused.push_back(id);
      }
      continue;
    }
    if (block) queue_.Block(st.cls, sched_.generation(), d);
    // Why they wait, once for the class (MessageOf shows it for each of its jobs).
    const JobRecord& tried = jobs_.at(d.job.value());
    std::string msg = d.outcome == Outcome::kNever ? "cannot run on the current fleet: " : "waiting: ";
    if (!d.reasons().empty()) msg += Describe(d.reasons().front().example, tried);
    class_message_[st.cls] = std::move(msg);
  }
}

std::string ClusterState::Describe(const Reason& r, const JobRecord& j) const {
  if (r.code == ReasonCode::kQuota && r.model >= 0) {
    const TenantBook& book = sched_.tenants();
    if (auto t = book.Find(j.spec.tenant)) return book.DescribeQuota(*t, static_cast<uint8_t>(r.model), r.asked, sched_.fleet());
  }
  return DescribeReason(r, sched_.fleet(), PendingJob{.spec = &j.spec});
}

std::string_view ClusterState::MessageOf(const JobRecord& j) const {
  if (j.state != JobState::kQueued) return j.message;
  const int64_t cls = queue_.ClassOf(j.spec.id);
  if (cls < 0) return j.message;
  auto it = class_message_.find(cls);
  return it == class_message_.end() ? std::string_view(j.message) : std::string_view(it->second);
}

void ClusterState::Unplace(const PassResult& pass) {
  for (const PassResult::Undo& u : pass.undo) {
    const uint64_t id = u.job.value();
    JobRecord& j = jobs_.at(id);
    for (size_t t = 0; t < j.tasks.size(); ++t) ReleaseTask(j, static_cast<int>(t), std::nullopt);
    j.tasks.clear();
    --j.attempt;
    j.state = JobState::kQueued;
    j.message = u.message;
    j.start_ms = u.start_ms;
    --placed_total_;
    changed_.erase(id);
    queued_.insert(id);
    Enqueue(j, j.spec.submit_time);  // it was compiled before: it cannot fail here
    if (j.array_of != 0) {
      // Its array counted it placed: back to queued (and the array's state with it).
      CountElement(j, j.spec.submit_time.value());
    }
  }
}

Result<ClusterState::DryRunResult> ClusterState::DryRun(const JobSpec& spec) const {
  JobSpec s = spec;
  s.id = JobId{next_id_};
  auto p = CompileJob(s, sched_.fleet());
  if (!p) return tl::unexpected(p.error());
  p->tenant = SchedTenantOf(s.tenant);
  DryRunResult out;
  SplitMix64 rng(options_.seed);
  const Plan plan = Schedule(sched_, std::span<const PendingJob>(&*p, 1), policy_, rng);
  if (!plan.placements.empty()) out.tasks = plan.placements.front().tasks;
  out.decision = ExplainJob(sched_, *p, policy_);
  return out;
}

std::optional<Decision> ClusterState::ExplainQueued(JobId id) const {
  const JobRecord* j = Find(id);
  if (!j || j->state != JobState::kQueued) return std::nullopt;
  auto p = CompileJob(j->spec, sched_.fleet());
  if (!p) return std::nullopt;
  p->tenant = SchedTenantOf(j->spec.tenant);
  return ExplainJob(sched_, *p, policy_);
}

void ClusterState::TaskStarted(JobRecord& j, int task, Millis started, Millis now) {
  TaskRecord& t = j.tasks[static_cast<size_t>(task)];
  if (t.started) return;
  t.started = true;
  Touch(j);
  for (const TaskRecord& x : j.tasks) {
    if (!x.started) return;
  }
  if (j.state != JobState::kStarting) return;
  j.state = JobState::kRunning;
  j.start_ms = started.value() > 0 ? started.value() : now.value();
  sched_.RunningStarted(j.spec.id, Millis{j.start_ms});
  if (!j.failing_over) j.message.clear();
  Watch(j);
  Changed(j, "started");
}

void ClusterState::AddAttained(JobRecord& j, Millis now) {
  // From when every task ran (the job's start) until now.
  if (j.tasks.empty() || now.value() <= j.start_ms) return;
  for (const TaskRecord& t : j.tasks) {
    if (!t.started) return;
  }
  int64_t milli = 0;
  for (const TaskRecord& t : j.tasks) milli += std::popcount(t.allocation.gpu_mask) * t.allocation.share.value();
  j.attained_gpu_ms += milli * (now.value() - j.start_ms) / 1000;
  listener_.AttemptUsed(j, now);
}

void ClusterState::ReleaseTask(JobRecord& j, int task, std::optional<Millis> now) {
  const TaskAllocation& a = j.tasks[static_cast<size_t>(task)].allocation;
  if (a.node.value() < on_node_.size()) on_node_[a.node.value()].erase(TaskKey{j.spec.id.value(), task, j.attempt});
  if (Status s = sched_.Release(a); !s.ok()) {
    Inconsistent(s);
    return;
  }
  sched_.RunningReleased(j.spec.id, a);
  Charge(j, a, -1, now);
}

TenantIndex ClusterState::SchedTenantOf(const std::string& tenant) const {
  // Only a share order or a quota tells one tenant's jobs from another's; otherwise they share
  // classes of shape (a queue of many tenants costs no more than one of a single tenant).
  const TenantIndex t = sched_.tenants().Find(tenant).value_or(0);
  return policy_.share || sched_.tenants().limited(t) ? t : 0;
}

TenantIndex ClusterState::SchedTenant(const std::string& tenant) {
  sched_.tenants().Intern(tenant);
  return SchedTenantOf(tenant);
}

void ClusterState::Charge(const JobRecord& j, const TaskAllocation& a, int sign, std::optional<Millis> now) {
  if (a.node.value() >= sched_.size()) return;
  TenantBook& book = sched_.tenants();
  book.Charge(book.Intern(j.spec.tenant), sched_.node(a.node).model_bit, UseOf(a), sign, now);
}

Status ClusterState::ConfigureTenants(const std::vector<TenantConfig>& tenants) {
  std::map<std::string, std::unique_ptr<QueueOrder>> orders;
  for (const TenantConfig& t : tenants) {
    if (t.order.empty()) continue;
    auto q = BuiltinRegistry().MakeQueueOrder(t.order);
    if (!q) return Status(StatusCode::kInvalidArgument, fmt::format("tenant {}: order: {}", t.name, q.error().message()));
    orders[t.name] = std::move(*q);
  }
  if (Status s = sched_.tenants().Configure(tenants, sched_.fleet()); !s.ok()) return s;
  // Each tenant's own order, for its jobs: they are keyed again.
  tenant_orders_ = std::move(orders);
  const TenantBook& book = sched_.tenants();
  for (TenantIndex t = 0; t < book.size(); ++t) {
    auto it = tenant_orders_.find(book.name(t));
    queue_.SetOrder(t, it == tenant_orders_.end() ? nullptr : it->second.get());
  }
  const std::vector<uint64_t> queued(queued_.begin(), queued_.end());
  for (uint64_t id : queued) {
    JobRecord& j = jobs_.at(id);
    if (queue_.Contains(JobId{id})) Enqueue(j, j.spec.submit_time);
  }
  queue_.UnblockAll();  // a quota or a weight changed: every class is judged again
  return Status();
}

void ClusterState::TaskEnded(JobRecord& j, int task, std::optional<int> code, std::optional<int> signal,
                             const std::string& why, Millis now) {
  TaskRecord& t = j.tasks[static_cast<size_t>(task)];
  if (t.exit_code || t.signal) return;
  t.exit_code = code;
  t.signal = signal;
  if (!code && !signal) t.exit_code = -1;
  ReleaseTask(j, task, now);
  Touch(j);
  if (j.failing_over) return;  // RequeueReady requeues the job once all its tasks have ended
  const bool failed = !why.empty() || (t.exit_code && *t.exit_code != 0) || t.signal;
  if (failed && !j.exit_code) {
    j.exit_code = t.exit_code;
    j.signal = t.signal;
    if (!why.empty()) j.message = fmt::format("task {}: {}", task, why);
    // A gang lives or dies together: stop its other tasks.
    sched_.RunningStopping(j.spec.id);
    for (size_t o = 0; o < j.tasks.size(); ++o) {
      if (static_cast<int>(o) != task) StopTask(j, static_cast<int>(o), -1, now);
    }
  }
  FinishIfDone(j, now);
}

void ClusterState::StopTask(JobRecord& j, int task, int grace_ms, Millis now) {
  TaskRecord& t = j.tasks[static_cast<size_t>(task)];
  if (t.exit_code || t.signal) return;
  t.stop_asked = true;
  if (listener_.StopTask(j, task, grace_ms)) TaskEnded(j, task, std::nullopt, 15, "stopped before it started", now);
}

void ClusterState::FinishIfDone(JobRecord& j, Millis now) {
  // A job failing over ends (or goes back to the queue) in RequeueReady, once its fence passed.
  if (IsTerminal(j.state) || j.tasks.empty() || j.failing_over) return;
  for (const TaskRecord& t : j.tasks) {
    if (!t.exit_code && !t.signal) return;
  }
  AddAttained(j, now);
  if (!j.exit_code) j.exit_code = 0;
  if (j.cancel_requested && (j.message.empty() || j.message == "cancelling")) j.message = "cancelled";
  End(j,
      j.cancel_requested ? JobState::kCancelled
      : j.timed_out      ? JobState::kTimedOut
      : (*j.exit_code == 0 && !j.signal) ? JobState::kSucceeded
                                         : JobState::kFailed,
      now);
}

void ClusterState::Watch(const JobRecord& j) {
  if (j.spec.time_limit.value() > 0 && j.state == JobState::kRunning && !j.timed_out) {
    deadlines_.insert({j.start_ms + j.spec.time_limit.value(), j.spec.id.value(), j.attempt});
  }
}

void ClusterState::EnforceTimeLimits(Millis now) {
  while (!deadlines_.empty() && std::get<0>(*deadlines_.begin()) <= now.value()) {
    const auto [at, id, attempt] = *deadlines_.begin();
    deadlines_.erase(deadlines_.begin());
    JobRecord* j = Find(JobId{id});
    // A deadline of an attempt that has ended (or moved) is stale.
    if (!j || j->attempt != attempt || j->state != JobState::kRunning || j->timed_out || j->cancel_requested ||
        j->failing_over) {
      continue;
    }
    // Slurm's TIMEOUT: SIGTERM now, SIGKILL after the grace (the agent's, as for a cancel).
    j->timed_out = true;
    sched_.RunningStopping(j->spec.id);
    j->message = fmt::format("time limit {} reached: stopping", FormatMillis(j->spec.time_limit));
    Touch(*j);
    for (size_t t = 0; t < j->tasks.size(); ++t) StopTask(*j, static_cast<int>(t), -1, now);
  }
}

void ClusterState::FailOver(JobRecord& j, const std::string& why, Millis fence_until, bool counts, int grace_ms,
                            Millis now) {
  StopAttempt(j, fmt::format("attempt {} failed: {}; placing the job again", j.attempt, why), "failing_over", fence_until,
              counts, grace_ms, now);
}

void ClusterState::StopAttempt(JobRecord& j, std::string message, std::string_view event, Millis fence_until, bool counts,
                               int grace_ms, Millis now) {
  if (IsTerminal(j.state) || j.failing_over) return;
  j.failing_over = true;
  if (counts) ++j.failures;
  failing_.insert(j.spec.id.value());
  sched_.RunningStopping(j.spec.id);
  j.fence_until_ms = std::max(j.fence_until_ms, fence_until.value());
  j.message = std::move(message);
  ++(event == "preempted" ? preemptions_total_ : failovers_total_);
  Changed(j, event);
  for (size_t t = 0; t < j.tasks.size(); ++t) {
    // A task on a node that is down cannot be told: its lease ends it (RequeueReady).
    if (sched_.node(j.tasks[t].allocation.node).health != Health::kUnhealthy) StopTask(j, static_cast<int>(t), grace_ms, now);
  }
}

void ClusterState::TaskLost(JobRecord& j, int task, const std::string& why, const std::string& how, Millis now) {
  if (!j.failing_over) FailOver(j, why, Millis{0}, true, -1, now);
  TaskEnded(j, task, std::nullopt, std::nullopt, how, now);
}

void ClusterState::FailJobsOn(NodeId node, int gpu, const std::string& why, Millis fence_until, bool counts, int grace_ms,
                              Millis now) {
  const std::vector<TaskKey> active(TasksOn(node).begin(), TasksOn(node).end());
  for (const TaskKey& k : active) {
    auto it = jobs_.find(k.job);
    if (it == jobs_.end() || it->second.attempt != k.attempt) continue;
    if (gpu >= 0 && !(it->second.tasks[static_cast<size_t>(k.task)].allocation.gpu_mask >> gpu & 1)) continue;
    FailOver(it->second, why, fence_until, counts, grace_ms, now);
  }
}

void ClusterState::RequeueReady(Millis now) {
  const std::vector<uint64_t> failing(failing_.begin(), failing_.end());
  for (uint64_t id : failing) {
    JobRecord& j = jobs_.at(id);
    if (IsTerminal(j.state)) {
      failing_.erase(id);
      continue;
    }
    if (!j.failing_over || now.value() < j.fence_until_ms) continue;
    bool all_ended = true;
    for (size_t t = 0; t < j.tasks.size(); ++t) {
      TaskRecord& task = j.tasks[t];
      if (task.exit_code || task.signal) continue;
      if (sched_.node(task.allocation.node).health == Health::kUnhealthy) {
        TaskEnded(j, static_cast<int>(t), std::nullopt, 9, "", now);  // its lease ran out: it has stopped
        continue;
      }
      // Its node is back (it came back before the lease ran out, or was never told): stop it.
      if (!task.stop_asked) StopTask(j, static_cast<int>(t), -1, now);
      if (!task.exit_code && !task.signal) all_ended = false;
    }
    if (all_ended) Requeue(j, now);
  }
}

void ClusterState::Requeue(JobRecord& j, Millis now) {
  AddAttained(j, now);
  AttemptRecord a{.attempt = j.attempt, .start_ms = j.start_ms, .end_ms = now.value(), .outcome = j.message};
  for (const TaskRecord& t : j.tasks) a.nodes.push_back(t.node);
  j.attempts.push_back(std::move(a));
  j.tasks.clear();
  j.failing_over = false;
  failing_.erase(j.spec.id.value());
  j.fence_until_ms = 0;
  j.exit_code.reset();
  j.signal.reset();
  j.start_ms = 0;
  const int limit = j.max_retries >= 0 ? j.max_retries : options_.max_retries;
  const int retries = j.failures;
  if (retries > limit || j.cancel_requested || j.timed_out) {
    if (!j.cancel_requested && !j.timed_out) {
      j.message = fmt::format("gave up after {} failed attempts: {}", retries, j.attempts.back().outcome);
    }
    End(j, j.cancel_requested ? JobState::kCancelled : j.timed_out ? JobState::kTimedOut : JobState::kFailed, now);
    return;
  }
  j.state = JobState::kQueued;
  queued_.insert(j.spec.id.value());
  // An eviction (no failure) and the first failover go straight back; later ones wait 1 s,
  // 2 s, 4 s ... (at most backoff_max).
  const int64_t wait = retries <= 1 ? 0
                                    : std::min<int64_t>(options_.backoff.value() << std::min(retries - 2, 10),
                                                        options_.backoff_max.value());
  j.not_before_ms = wait > 0 ? now.value() + wait : 0;
  Changed(j, "requeued");
  if (j.not_before_ms > 0) {
    backoff_.insert({j.not_before_ms, j.spec.id.value()});
  } else {
    Enqueue(j, now);
  }
}

Status ClusterState::Cancel(JobId id, Millis now) {
  JobRecord* jp = Find(id);
  if (!jp) return Status(StatusCode::kNotFound, fmt::format("no job {}", id.value()));
  JobRecord& j = *jp;
  if (IsTerminal(j.state)) {
    return Status(StatusCode::kFailedPrecondition, fmt::format("job {} already {}", id.value(), JobStateName(j.state)));
  }
  if (j.array) return CancelArray(j, now);
  j.cancel_requested = true;
  Touch(j);
  if (j.state == JobState::kQueued) {
    j.message = "cancelled while queued";
    End(j, JobState::kCancelled, now);
    return Status::Ok();
  }
  sched_.RunningStopping(j.spec.id);
  for (size_t t = 0; t < j.tasks.size(); ++t) StopTask(j, static_cast<int>(t), -1, now);
  if (!IsTerminal(j.state)) j.message = "cancelling";
  FinishIfDone(j, now);
  return Status::Ok();
}

std::string JobEventData(const JobRecord& j, std::string_view what) {
  nlohmann::json d{{"id", std::to_string(j.spec.id.value())}, {"name", j.spec.name}, {"tenant", j.spec.tenant},
                   {"state", JobStateName(j.state)}, {"attempt", j.attempt}};
  if (!j.message.empty()) d["message"] = j.message;
  if (j.exit_code) d["exit_code"] = *j.exit_code;
  std::vector<std::string> nodes;
  for (const TaskRecord& t : j.tasks) nodes.push_back(t.node);
  if (!nodes.empty()) d["nodes"] = nodes;
  if (what == "placed") {
    // Where each task was placed: GPU indices per task, in task order.
    nlohmann::json gpus = nlohmann::json::array();
    for (const TaskRecord& t : j.tasks) {
      nlohmann::json one = nlohmann::json::array();
      for (int g = 0; g < kMaxGpusPerNode; ++g) {
        if (t.allocation.gpu_mask >> g & 1) one.push_back(g);
      }
      gpus.push_back(one);
    }
    d["gpus"] = gpus;
  }
  if (what == "submitted") {
    // The shape, as submitted: what a replay of this log needs to submit the job again.
    d["gpus_per_task"] = j.spec.gpus_per_task;
    d["tasks"] = j.spec.tasks;
    if (j.spec.gpu_share < kWholeGpu) d["gpu_share"] = static_cast<double>(j.spec.gpu_share.value()) / 1000.0;
    if (j.spec.cpu_per_task.value() > 0) d["cpu_per_task_milli"] = j.spec.cpu_per_task.value();
    if (j.spec.memory_per_task.value() > 0) d["memory_per_task_mib"] = j.spec.memory_per_task.value();
    if (!j.spec.gpu_models.empty()) d["gpu_models"] = j.spec.gpu_models;
    if (j.spec.priority != 0) d["priority"] = j.spec.priority;
    if (j.extras && j.extras->has_dependencies()) d["dependency"] = DependencyText(*j.extras);
  }
  return d.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace gp
