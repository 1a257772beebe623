#include "controller/controller.h"

#include "adapters/tokens.h"

#include "core/gpu_catalog.h"
#include "core/units.h"
#include "telemetry/gpu_source.h"
#include "health/gpu_health.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <bit>
#include <chrono>
#include <cstdio>
#include <utility>
#include <fstream>

namespace gp {

Controller::Controller(Fleet base, Journal& journal, const Clock& clock, ControllerOptions options, Policy policy)
    : fleet_(std::move(base)), journal_(journal), clock_(clock), options_(std::move(options)), policy_(std::move(policy)),
      rng_(options_.seed) {
  fleet_.nodes.clear();
  if (fleet_.providers.empty()) fleet_.providers.push_back(Provider{.id = ProviderId{0}, .name = "local"});
  if (fleet_.sites.empty()) fleet_.sites.push_back(Site{.id = SiteId{0}, .name = "local", .region = "local"});
  sched_.set_fleet(fleet_);
}

Status Controller::WriteWithEvents(const std::function<Status(const Events&)>& put) {
  Status s = put(pending_events_);
  if (s.ok() && !pending_events_.empty()) {
    pending_events_.clear();
    if (on_events) on_events();
  }
  return s;
}

void Controller::StoreFailed(const Status& s) {
  if (s.ok() || !store_error_.ok()) return;
  store_error_ = Status(StatusCode::kUnavailable, "the server's store failed: " + s.message() +
                                                      "; it accepts and places no jobs until it is restarted");
  if (on_store_error) on_store_error(store_error_);
}

void Controller::Inconsistent(const Status& s) {
  ++stats_.inconsistencies;
  if (on_store_error) on_store_error(Status(StatusCode::kInternal, "internal inconsistency: " + s.message()));
}

Status Controller::Persist(const JobRecord& job) {
  return WriteWithEvents([&](const Events& e) { return journal_.PutJobs({{job.spec.id.value(), JobToJson(job)}}, e); });
}

void Controller::FlushEvents() {
  if (!pending_events_.empty()) StoreFailed(WriteWithEvents([&](const Events& e) { return journal_.PutEvents(e); }));
}

void Controller::Emit(std::string type, std::string subject, std::string data) {
  pending_events_.push_back(EventRecord{.seq = next_event_seq_++, .time_ms = clock_.Now().value(), .type = std::move(type),
                                        .subject = std::move(subject), .data = std::move(data)});
}

void Controller::JobEvent(const JobRecord& j, std::string_view what) {
  nlohmann::json d{{"id", std::to_string(j.spec.id.value())}, {"name", j.spec.name}, {"tenant", j.spec.tenant},
                   {"state", JobStateName(j.state)}, {"attempt", j.attempt}};
  if (!j.message.empty()) d["message"] = j.message;
  if (j.exit_code) d["exit_code"] = *j.exit_code;
  std::vector<std::string> nodes;
  for (const TaskRecord& t : j.tasks) nodes.push_back(t.node);
  if (!nodes.empty()) d["nodes"] = nodes;
  if (what == "submitted") {
    d["gpus_per_task"] = j.spec.gpus_per_task;
    d["tasks"] = j.spec.tasks;
  }
  Emit(fmt::format("job.{}", what), fmt::format("job/{}", j.spec.id.value()), d.dump());
}

NodeRecord Controller::Shown(const NodeSlot& slot) const {
  NodeRecord r = slot.record;
  for (size_t g = 0; g < r.spec.gpus.size() && g < kMaxGpusPerNode; ++g) {
    r.gpu_health.push_back(slot.quarantine[g].empty() ? "ok" : "quarantined: " + slot.quarantine[g]);
    r.gpu_check.push_back(slot.last_check[g]);
  }
  return r;
}

Status Controller::PersistNode(const NodeSlot& slot) {
  return WriteWithEvents(
      [&](const Events& e) { return journal_.PutNode(slot.record.spec.name, NodeToJson(Shown(slot), fleet_, "ready", 0), e); });
}

Status Controller::Recover() {
  auto contents = journal_.Load();
  if (!contents) return contents.error();
  next_event_seq_ = contents->last_event_seq + 1;
  first_event_seq_ = contents->first_event_seq > 0 ? contents->first_event_seq : next_event_seq_;
  for (const auto& [name, json] : contents->nodes) {
    auto n = NodeFromJson(json);
    if (!n) return Status(StatusCode::kInternal, fmt::format("journal: node '{}': {}", name, n.error().message()));
    RegisterRequest r{.name = n->spec.name, .site = n->site, .provider = n->provider,
                      .tier = std::string(PriceTierName(n->spec.tier)), .address = n->agent_address,
                      .cpu_cores = static_cast<int>(n->spec.cpu.value() / 1000), .memory_mib = n->spec.memory.value(),
                      .gpu_source = n->gpu_source, .max_tasks = n->max_tasks};
    for (const Gpu& g : n->spec.gpus) {
      r.gpus.push_back(GpuDevice{.index = g.index, .uuid = g.uuid, .name = n->gpu_model, .memory = g.memory,
                                 .compute_capability = g.compute_capability, .nvlink_peers = g.nvlink_peers});
    }
    r.labels = n->spec.labels;
    auto id = AddOrUpdateNode(r);
    if (!id) return id.error();
    NodeSlot& slot = nodes_[id->value()];
    slot.record.draining = n->draining;
    slot.record.credential_hash = n->credential_hash;
    if (!n->credential_hash.empty()) by_credential_[n->credential_hash] = *id;
    for (size_t g = 0; g < n->gpu_health.size() && g < kMaxGpusPerNode; ++g) {
      if (n->gpu_health[g].starts_with("quarantined: ")) {
        slot.quarantine[g] = n->gpu_health[g].substr(13);
        slot.last_fault_ms[g] = clock_.Now().value();  // probation starts again
        sched_.Update(*id, [&](NodeState& st) { st.quarantined = static_cast<uint16_t>(st.quarantined | (1u << g)); });
      }
      if (g < n->gpu_check.size()) slot.last_check[g] = n->gpu_check[g];
    }
    // As if it had just spoken: an agent that is alive speaks within a heartbeat; one that died
    // while the server was away is found down by the detector, and its work fails over.
    slot.detector = PhiAccrualDetector(options_.detector);
    slot.detector.Heartbeat(clock_.Now());
    slot.lease_granted_ms = clock_.Now().value();
    slot.record.last_heartbeat_ms = clock_.Now().value();
    RefreshNodeState(*id);
  }
  for (const auto& [id, json] : contents->jobs) {
    auto job = JobFromJson(json);
    if (!job) return Status(StatusCode::kInternal, fmt::format("journal: job {}: {}", id, job.error().message()));
    next_id_ = std::max(next_id_, id + 1);
    JobRecord& j = jobs_[id] = std::move(*job);
    if (j.state == JobState::kQueued) queued_.insert(id);
    if (j.failing_over) failing_.insert(id);
    if (IsTerminal(j.state) || j.tasks.empty()) continue;
    // Placed before the restart: hold its resources again; its agent will report on it.
    for (TaskRecord& t : j.tasks) {
      NodeSlot* slot = SlotByName(t.node);
      if (!slot || t.exit_code || t.signal) continue;
      t.allocation.node = slot->record.spec.id;
      slot->active.insert(TaskKey{id, static_cast<int>(&t - j.tasks.data()), j.attempt});
      if (!sched_.Allocate(t.allocation).ok()) {
        t.exit_code = -1;
        j.message = "lost on recovery: its node no longer has the resources";
      }
    }
    // Tasks never seen running may or may not have reached their agent before the restart:
    // hand them over again; an agent never starts the same task twice.
    if (j.state == JobState::kStarting) Launch(j);
  }
  dirty_ = true;
  return Status::Ok();
}

Result<JobId> Controller::Submit(JobRecord r) {
  if (!store_error_.ok()) return tl::unexpected(store_error_);
  r.spec.id = JobId{next_id_};
  r.spec.submit_time = clock_.Now();
  r.state = JobState::kQueued;
  r.tasks.clear();
  r.exit_code.reset();
  if (r.spec.name.empty()) r.spec.name = r.command.empty() ? "job" : std::filesystem::path(r.command[0]).filename().string();
  if (r.spec.data && !fleet_.FindSite(r.spec.data->site)) {
    return InvalidArgument(fmt::format("field 'data.site': unknown site '{}'", r.spec.data->site));
  }
  if (!r.workdir.empty()) {
    const std::filesystem::path w = std::filesystem::path(r.workdir).lexically_normal();
    if (w.is_relative()) {
      if (!w.empty() && *w.begin() == "..") {
        return InvalidArgument(fmt::format("field 'workdir': '{}' climbs out of the task's directory", r.workdir));
      }
    } else {
      bool allowed = false;
      for (const auto& root : options_.allow_workdir) {
        const auto rel = w.lexically_relative(root.lexically_normal());
        allowed = allowed || (!rel.empty() && *rel.begin() != "..");
      }
      if (!allowed) {
        return InvalidArgument(fmt::format(
            "field 'workdir': '{}' is outside the task's directory, and the server allows no other ({}); give a path "
            "relative to the task's directory",
            r.workdir, options_.allow_workdir.empty() ? "gpupool server --allow-workdir DIR allows one" : "see --allow-workdir"));
      }
    }
  }
  JobEvent(r, "submitted");
  if (Status s = Persist(r); !s.ok()) {
    pending_events_.pop_back();
    --next_event_seq_;
    return Error(StatusCode::kInternal, "could not store the job: " + s.message());
  }
  ++next_id_;
  const JobId id = r.spec.id;
  jobs_[id.value()] = std::move(r);
  queued_.insert(id.value());
  dirty_ = true;
  return id;
}

const JobRecord* Controller::FindJob(JobId id) const {
  auto it = jobs_.find(id.value());
  return it == jobs_.end() ? nullptr : &it->second;
}

std::vector<const JobRecord*> Controller::ListJobs(const JobFilter& f) const {
  std::vector<const JobRecord*> out;
  auto start = f.before > 0 ? std::make_reverse_iterator(jobs_.lower_bound(f.before)) : jobs_.rbegin();
  for (auto it = start; it != jobs_.rend() && out.size() < f.limit; ++it) {
    const JobRecord& j = it->second;
    if (f.state && j.state != *f.state) continue;
    if (!f.tenant.empty() && j.spec.tenant != f.tenant) continue;
    if (!f.node.empty()) {
      bool on = false;
      for (const TaskRecord& t : j.tasks) on = on || t.node == f.node;
      if (!on) continue;
    }
    out.push_back(&j);
  }
  return out;
}

Status Controller::Cancel(JobId id) {
  auto it = jobs_.find(id.value());
  if (it == jobs_.end()) return Status(StatusCode::kNotFound, fmt::format("no job {}", id.value()));
  JobRecord& j = it->second;
  if (IsTerminal(j.state)) return Status(StatusCode::kFailedPrecondition, fmt::format("job {} already {}", id.value(), JobStateName(j.state)));
  j.cancel_requested = true;
  if (j.state == JobState::kQueued) {
    queued_.erase(id.value());
    j.state = JobState::kCancelled;
    j.end_ms = clock_.Now().value();
    j.message = "cancelled while queued";
    JobEvent(j, "cancelled");
  } else {
    for (size_t t = 0; t < j.tasks.size(); ++t) CancelTask(j, static_cast<int>(t));
    j.message = "cancelling";
  }
  FinishIfDone(j);
  return Persist(j);
}

Status Controller::SetDraining(const std::string& name, bool draining) {
  NodeSlot* slot = SlotByName(name);
  if (!slot) return Status(StatusCode::kNotFound, fmt::format("no node '{}'", name));
  if (slot->record.draining != draining) {
    Emit(draining ? "node.drained" : "node.undrained", "node/" + name, nlohmann::json{{"node", name}}.dump());
  }
  slot->record.draining = draining;
  RefreshNodeState(slot->record.spec.id);
  dirty_ = true;
  return PersistNode(*slot);
}

void Controller::Quarantine(NodeSlot& slot, int gpu, const std::string& why) {
  slot.last_fault_ms[static_cast<size_t>(gpu)] = clock_.Now().value();
  if (!slot.quarantine[static_cast<size_t>(gpu)].empty()) {  // at fault again while out: probation restarts
    slot.quarantine[static_cast<size_t>(gpu)] = why;
    return;
  }
  slot.quarantine[static_cast<size_t>(gpu)] = why;
  Emit("gpu.quarantined", fmt::format("node/{}/gpu/{}", slot.record.spec.name, gpu),
       nlohmann::json{{"node", slot.record.spec.name}, {"gpu", gpu}, {"reason", why}}.dump());
  sched_.Update(slot.record.spec.id, [&](NodeState& st) { st.quarantined = static_cast<uint16_t>(st.quarantined | (1u << gpu)); });
  const std::vector<TaskKey> active(slot.active.begin(), slot.active.end());
  for (const TaskKey& k : active) {
    auto it = jobs_.find(k.job);
    if (it == jobs_.end() || it->second.attempt != k.attempt) continue;
    const TaskRecord& t = it->second.tasks[static_cast<size_t>(k.task)];
    if (t.allocation.gpu_mask >> gpu & 1) {
      FailOver(it->second, fmt::format("GPU {} on {} quarantined: {}", gpu, slot.record.spec.name, why), 0);
    }
  }
  StoreFailed(PersistNode(slot));
  dirty_ = true;
}

Result<std::string> Controller::GpuXid(const std::string& name, int gpu, int xid) {
  NodeSlot* slot = SlotByName(name);
  if (!slot) return Error(StatusCode::kNotFound, fmt::format("no node '{}'", name));
  if (gpu < 0 || gpu >= static_cast<int>(slot->record.spec.gpus.size())) {
    return InvalidArgument(fmt::format("node '{}' has no GPU {}", name, gpu));
  }
  slot->last_xid[static_cast<size_t>(gpu)] = xid;
  const XidClass c = ClassifyXid(xid);
  const std::string what = fmt::format("XID {} ({})", xid, c.meaning);
  switch (c.action) {
    case GpuFaultAction::kQuarantine: Quarantine(*slot, gpu, what); return "quarantined: " + what;
    case GpuFaultAction::kJobsFault: return "recorded, the GPU stays in service: " + what;
    case GpuFaultAction::kNone: return "recorded: " + what;
  }
  return what;
}

Status Controller::UndrainGpu(const std::string& name, int gpu) {
  NodeSlot* slot = SlotByName(name);
  if (!slot) return Status(StatusCode::kNotFound, fmt::format("no node '{}'", name));
  if (gpu < 0 || gpu >= static_cast<int>(slot->record.spec.gpus.size())) {
    return Status(StatusCode::kInvalidArgument, fmt::format("node '{}' has no GPU {}", name, gpu));
  }
  if (!slot->quarantine[static_cast<size_t>(gpu)].empty()) {
    Emit("gpu.returned", fmt::format("node/{}/gpu/{}", name, gpu), nlohmann::json{{"node", name}, {"gpu", gpu}}.dump());
  }
  slot->quarantine[static_cast<size_t>(gpu)].clear();
  slot->check_asked_ms[static_cast<size_t>(gpu)] = 0;
  sched_.Update(slot->record.spec.id, [&](NodeState& st) { st.quarantined = static_cast<uint16_t>(st.quarantined & ~(1u << gpu)); });
  dirty_ = true;
  return PersistNode(*slot);
}

Status Controller::CheckGpu(const std::string& name, int gpu) {
  NodeSlot* slot = SlotByName(name);
  if (!slot) return Status(StatusCode::kNotFound, fmt::format("no node '{}'", name));
  if (gpu < 0 || gpu >= static_cast<int>(slot->record.spec.gpus.size())) {
    return Status(StatusCode::kInvalidArgument, fmt::format("node '{}' has no GPU {}", name, gpu));
  }
  if (slot->quarantine[static_cast<size_t>(gpu)].empty()) {
    return Status(StatusCode::kFailedPrecondition,
                  fmt::format("GPU {} of {} is in service; only a quarantined GPU is self-tested (no job may share it)", gpu, name));
  }
  AskSelfTest(*slot, gpu);
  return Status::Ok();
}

void Controller::AskSelfTest(NodeSlot& slot, int gpu) {
  slot.check_asked_ms[static_cast<size_t>(gpu)] = clock_.Now().value();
  if (std::find(slot.selftests.begin(), slot.selftests.end(), gpu) == slot.selftests.end()) slot.selftests.push_back(gpu);
  if (on_work) on_work(slot.record.spec.name);
}

void Controller::SelfTested(NodeSlot& slot, const GpuSelfTest& r) {
  if (r.gpu < 0 || r.gpu >= static_cast<int>(slot.record.spec.gpus.size())) return;
  const size_t g = static_cast<size_t>(r.gpu);
  slot.check_asked_ms[g] = 0;
  slot.last_check[g] = fmt::format("{}: {}", r.passed ? "passed" : "failed", r.detail);
  Emit("gpu.selftest", fmt::format("node/{}/gpu/{}", slot.record.spec.name, r.gpu),
       nlohmann::json{{"node", slot.record.spec.name}, {"gpu", r.gpu}, {"passed", r.passed}, {"detail", r.detail}}.dump());
  if (slot.quarantine[g].empty()) {  // undrained by hand meanwhile
    StoreFailed(PersistNode(slot));
    return;
  }
  if (r.passed) {
    StoreFailed(UndrainGpu(slot.record.spec.name, r.gpu));  // persists (the node and GPU exist)
    return;
  }
  slot.last_fault_ms[g] = clock_.Now().value();  // probation again, from now
  StoreFailed(PersistNode(slot));
}

std::filesystem::path Controller::CheckpointPath(JobId id, int task) const {
  return options_.checkpoint_store / std::to_string(id.value()) / fmt::format("task-{}.tar", task);
}

Status Controller::StoreCheckpoint(const std::string& node, JobId id, int task, int attempt,
                                   const std::filesystem::path& archive) {
  auto it = jobs_.find(id.value());
  if (it == jobs_.end()) return Status(StatusCode::kNotFound, fmt::format("no job {}", id.value()));
  const JobRecord& j = it->second;
  if (options_.checkpoint_store.empty()) return Status(StatusCode::kFailedPrecondition, "this server uses shared checkpoint storage");
  if (j.attempt != attempt || task < 0 || task >= static_cast<int>(j.tasks.size()) || IsTerminal(j.state)) {
    return Status(StatusCode::kFailedPrecondition,
                  fmt::format("job {} task {} attempt {} is not the job's current attempt ({}); its checkpoint is refused",
                              id.value(), task, attempt, j.attempt));
  }
  if (j.tasks[static_cast<size_t>(task)].node != node) {
    return Status(StatusCode::kPermissionDenied, fmt::format("job {} task {} does not run on node '{}'; its checkpoint is refused",
                                                             id.value(), task, node));
  }
  std::error_code ec;
  const auto size = std::filesystem::file_size(archive, ec);
  if (ec) return Status(StatusCode::kInternal, fmt::format("the upload: {}", ec.message()));
  if (static_cast<int64_t>(size) > options_.checkpoint_max_bytes) {
    return Status(StatusCode::kTooLarge, fmt::format("checkpoint of {} bytes is over the limit of {} (gpupool server --checkpoint-max-mib)",
                                                     size, options_.checkpoint_max_bytes));
  }
  const auto path = CheckpointPath(id, task);
  std::filesystem::create_directories(path.parent_path(), ec);
  // The upload was streamed to a file under the same data directory: a rename stores it whole.
  std::filesystem::rename(archive, path, ec);
  if (ec) {
    std::filesystem::copy_file(archive, path.string() + ".tmp", std::filesystem::copy_options::overwrite_existing, ec);
    if (!ec) std::filesystem::rename(path.string() + ".tmp", path, ec);
  }
  if (ec) return Status(StatusCode::kInternal, fmt::format("{}: {}", path.string(), ec.message()));
  return Status::Ok();
}

Status Controller::MayFetchCheckpoint(const std::string& node, JobId id, int task) const {
  auto it = jobs_.find(id.value());
  if (it == jobs_.end()) return Status(StatusCode::kNotFound, fmt::format("no job {}", id.value()));
  const JobRecord& j = it->second;
  if (IsTerminal(j.state) || task < 0 || task >= static_cast<int>(j.tasks.size()) || j.tasks[static_cast<size_t>(task)].node != node) {
    return Status(StatusCode::kPermissionDenied,
                  fmt::format("job {} task {}: its checkpoint is served only to the node running its current attempt", id.value(), task));
  }
  return Status::Ok();
}

// Drains the node and moves its running jobs elsewhere: each job's tasks get SIGTERM (with
// `grace_ms` before SIGKILL, or the agent's own grace) and the job goes back to the queue.
// Not counted as a failure: the job did nothing wrong.
Status Controller::MoveJobsOff(const std::string& name, const std::string& why, int grace_ms) {
  if (Status s = SetDraining(name, true); !s.ok()) return s;
  NodeSlot* slot = SlotByName(name);
  const std::vector<TaskKey> active(slot->active.begin(), slot->active.end());
  for (const TaskKey& k : active) {
    auto it = jobs_.find(k.job);
    if (it == jobs_.end() || it->second.attempt != k.attempt) continue;
    FailOver(it->second, why, 0, /*counts=*/false, grace_ms);
  }
  return Status::Ok();
}

Status Controller::Evict(const std::string& name) {
  return MoveJobsOff(name, fmt::format("evicted: node {} was drained", name), -1);
}

Status Controller::Reclaim(const std::string& name, Millis notice) {
  return MoveJobsOff(name, fmt::format("node {} reclaimed by its provider ({} notice)", name, FormatMillis(notice)),
                     static_cast<int>(notice.value()));
}

const NodeRecord* Controller::FindNode(const std::string& name) const {
  const NodeSlot* s = SlotByName(name);
  return s ? &s->record : nullptr;
}

const Controller::NodeSlot* Controller::SlotByName(const std::string& name) const {
  auto it = node_ids_.find(name);
  return it == node_ids_.end() ? nullptr : &nodes_[it->second.value()];
}

Controller::NodeSlot* Controller::SlotByName(const std::string& name) {
  return const_cast<NodeSlot*>(std::as_const(*this).SlotByName(name));
}

std::vector<std::string> Controller::NodeNames() const {
  std::vector<std::string> out;
  for (const NodeSlot& s : nodes_) out.push_back(s.record.spec.name);
  return out;
}

std::string Controller::NodeJson(const std::string& name) const {
  const NodeSlot* s = SlotByName(name);
  if (!s) return {};
  const gp::NodeState& st = sched_.node(s->record.spec.id);
  NodeRecord shown = Shown(*s);
  shown.credential_hash.clear();  // the API never shows it
  return NodeToJson(shown, fleet_, NodeCondition(name), st.WholeFreeGpus());
}

std::string Controller::NodeCondition(const std::string& name) const {
  const NodeSlot* s = SlotByName(name);
  if (!s) return {};
  if (s->down) return "down";
  if (s->suspect) return "suspect";
  return s->record.draining ? "draining" : "ready";
}

std::filesystem::path Controller::LogPath(JobId id, int task, std::string_view stream) const {
  return options_.log_dir / std::to_string(id.value()) / fmt::format("task-{}.{}", task, stream);
}

void Controller::AppendLog(JobId id, int task, std::string_view stream, const std::string& chunk) {
  if (chunk.empty() || options_.log_dir.empty()) return;
  const auto path = LogPath(id, task, stream);
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  std::ofstream(path, std::ios::app | std::ios::binary) << chunk;
}

namespace {
// What a registration says about a node, whether it is new or known.
void FillRecord(NodeRecord& rec, const Node& n, const RegisterRequest& r, const std::string& model) {
  rec.spec = n;
  rec.site = r.site;
  rec.provider = r.provider;
  rec.agent_address = r.address;
  rec.gpu_source = r.gpu_source;
  rec.gpu_model = model;
}
}  // namespace

Result<NodeId> Controller::AddOrUpdateNode(const RegisterRequest& r) {
  auto site = fleet_.FindSite(r.site);
  if (!site) {
    site = SiteId{static_cast<uint32_t>(fleet_.sites.size())};
    fleet_.sites.push_back(Site{.id = *site, .name = r.site, .region = r.site});
  }
  auto provider = fleet_.FindProvider(r.provider);
  if (!provider) {
    provider = ProviderId{static_cast<uint32_t>(fleet_.providers.size())};
    fleet_.providers.push_back(Provider{.id = *provider, .name = r.provider});
  }
  auto tier = ParsePriceTier(r.tier);
  if (!tier) return tl::unexpected(tier.error());
  Node n{.name = r.name, .site = *site, .provider = *provider, .tier = *tier, .cpu = MilliCpu{r.cpu_cores * 1000LL},
         .memory = MiB{r.memory_mib}, .nic = BitsPerSecond{10'000'000'000}, .labels = r.labels};
  std::string model_name;
  for (const GpuDevice& d : r.gpus) {
    model_name = ModelFromDeviceName(d.name);
    auto model = fleet_.InternModel(model_name);
    if (!model) return tl::unexpected(model.error());
    n.gpus.push_back(Gpu{.index = d.index, .model = *model, .memory = d.memory, .compute_capability = d.compute_capability,
                         .uuid = d.uuid, .nvlink_peers = d.nvlink_peers});
  }
  for (size_t i = 0; i < n.gpus.size(); ++i) {
    if (n.gpus[i].index != static_cast<int>(i)) return InvalidArgument("gpus: indices must be 0..N-1 in order");
    if (n.gpus[i].model != n.gpus[0].model) return InvalidArgument("gpus: a node holds one GPU model");
  }
  if (n.gpus.size() > kMaxGpusPerNode) return InvalidArgument(fmt::format("gpus: at most {}", kMaxGpusPerNode));
  if (NodeSlot* known = SlotByName(r.name)) {
    NodeSlot& s = *known;
    // A known node again (agent or server restarted). Its resources in use stay as they are;
    // its inventory must not have changed under running work.
    if (s.record.spec.gpus.size() != n.gpus.size()) {
      return Error(StatusCode::kFailedPrecondition,
                   fmt::format("node '{}' registered with {} GPUs, now {}; drain it and rename it", r.name,
                               s.record.spec.gpus.size(), n.gpus.size()));
    }
    n.id = s.record.spec.id;
    FillRecord(s.record, n, r, model_name);
    fleet_.nodes[n.id.value()] = n;
    s.record.max_tasks = r.max_tasks;
    sched_.Update(n.id, [&](NodeState& st) { st.task_slots = static_cast<uint16_t>(r.max_tasks); });
    return n.id;
  }
  n.id = NodeId{static_cast<uint32_t>(fleet_.nodes.size())};
  fleet_.nodes.push_back(n);
  NodeState st = MakeNodeState(fleet_, n);
  st.task_slots = static_cast<uint16_t>(r.max_tasks);
  sched_.AddNode(st);
  NodeSlot slot;
  FillRecord(slot.record, n, r, model_name);
  slot.record.max_tasks = r.max_tasks;
  nodes_.push_back(std::move(slot));
  node_ids_[n.name] = n.id;
  return n.id;
}

std::optional<std::string> Controller::NodeOfCredential(std::string_view credential) const {
  if (credential.empty()) return std::nullopt;
  auto it = by_credential_.find(Sha256Hex(credential));
  if (it == by_credential_.end()) return std::nullopt;
  return nodes_[it->second.value()].record.spec.name;
}

Result<Controller::Registration> Controller::Register(const RegisterRequest& r) {
  // A claim a real GPU cannot back: more than half again the memory its model has. (Checked
  // here, not on recovery: a node the store already holds is loaded as it was.)
  for (const GpuDevice& d : r.gpus) {
    const GpuModelInfo* info = FindKnownGpuModel(ModelFromDeviceName(d.name));
    if (info && info->memory.value() > 0 && d.memory.value() > info->memory.value() * 3 / 2) {
      return InvalidArgument(fmt::format("gpus[{}]: {} MiB is more than a {} has ({} MiB)", d.index, d.memory.value(), info->name,
                                         info->memory.value()));
    }
  }
  Registration out{.node = r.name};
  bool issue = true;  // a new credential: for a new name, or a name taken over
  if (const NodeSlot* known = SlotByName(r.name)) {
    const std::string& hash = known->record.credential_hash;
    const bool proven = !hash.empty() && !r.credential.empty() && Sha256Hex(r.credential) == hash;
    if (!proven && !hash.empty() && !known->down) {
      const double silent = static_cast<double>(clock_.Now().value() - known->record.last_heartbeat_ms) / 1000.0;
      return Error(StatusCode::kFailedPrecondition,
                   fmt::format("node name '{}' is held by a live agent at {} (last heard {:.1f} s ago); this agent at {} {}. "
                               "Give this agent another --name, or stop the other one (a node that is down may be taken over)",
                               r.name, known->record.agent_address, silent, r.address,
                               r.credential.empty() ? "has no credential for it" : "holds a different credential"));
    }
    issue = !proven;
  }
  if (issue) {
    auto secret = NewSecret();
    if (!secret) return tl::unexpected(secret.error());
    out.credential = *secret;
  }
  auto id = AddOrUpdateNode(r);
  if (!id) return tl::unexpected(id.error());
  NodeSlot& slot = nodes_[id->value()];
  if (issue) {
    if (!slot.record.credential_hash.empty()) by_credential_.erase(slot.record.credential_hash);
    slot.record.credential_hash = Sha256Hex(out.credential);
    by_credential_[slot.record.credential_hash] = *id;
  }
  slot.down = false;
  slot.suspect = false;
  slot.detector = PhiAccrualDetector(options_.detector);
  slot.detector.Heartbeat(clock_.Now());
  slot.record.last_heartbeat_ms = clock_.Now().value();
  RefreshNodeState(*id);
  Emit("node.joined", "node/" + slot.record.spec.name,
       nlohmann::json{{"node", slot.record.spec.name}, {"site", r.site}, {"provider", r.provider}, {"tier", r.tier},
                      {"gpus", r.gpus.size()}, {"model", slot.record.gpu_model}, {"gpu_source", r.gpu_source}}
           .dump());
  if (Status s = PersistNode(slot); !s.ok()) return tl::unexpected(s);
  dirty_ = true;
  return out;
}

void Controller::RefreshNodeState(NodeId id) {
  NodeSlot& slot = nodes_[id.value()];
  sched_.Update(id, [&](NodeState& st) { FillNodeState(slot, st); });
}

void Controller::FillNodeState(const NodeSlot& slot, NodeState& st) const {
  st.health = slot.down ? Health::kUnhealthy : (slot.suspect ? Health::kSuspect : Health::kHealthy);
  st.schedulability = slot.record.draining ? Schedulability::kDraining : Schedulability::kSchedulable;
  st.price = fleet_.PricePerGpuHour(slot.record.spec);
  st.site = slot.record.spec.site;
  const HostSample& h = slot.record.host;
  // Live load for the least-loaded scorer: the node's own measurements.
  if (h.memory.total.value() > 0) {
    st.load.cpu = h.cpu_busy;
    st.load.memory = PerMille{(h.memory.total - h.memory.available).value() * 1000 / h.memory.total.value()};
  }
  if (!slot.record.gpus.empty()) {
    int64_t sum = 0;
    for (const GpuSample& g : slot.record.gpus) sum += g.utilisation.value();
    st.load.gpu = PerMille{sum / static_cast<int64_t>(slot.record.gpus.size())};
  }
}

bool Controller::HasWork(const std::string& node) const {
  const NodeSlot* s = SlotByName(node);
  return s && (!s->launches.empty() || !s->cancels.empty() || !s->selftests.empty());
}

Result<HeartbeatReply> Controller::Heartbeat(const gp::Heartbeat& h) {
  NodeSlot* slot = SlotByName(h.node);
  if (!slot) return Error(StatusCode::kNotFound, fmt::format("node '{}' is not registered; register first", h.node));
  const bool was_down = slot->down;
  slot->down = false;
  slot->suspect = false;
  slot->detector.Heartbeat(clock_.Now());
  slot->record.last_heartbeat_ms = clock_.Now().value();
  slot->record.host = h.host;
  slot->record.gpus = h.gpus;
  RefreshNodeState(slot->record.spec.id);
  if (was_down) dirty_ = true;
  // XID events the agent saw (NVML): classified as if reported through the API.
  for (const GpuSample& g : h.gpus) {
    for (int xid : g.xids) (void)GpuXid(h.node, g.index, xid);  // what it did goes to the events; a bad index is the agent's
  }
  // Uncorrected ECC errors that rise mean the GPU's memory can no longer be trusted.
  for (const GpuSample& g : h.gpus) {
    if (g.index < 0 || g.index >= kMaxGpusPerNode || !g.ecc_uncorrected) continue;
    int64_t& seen = slot->ecc[static_cast<size_t>(g.index)];
    if (seen >= 0 && *g.ecc_uncorrected > seen) {
      Quarantine(*slot, g.index, fmt::format("uncorrected ECC errors rose from {} to {}", seen, *g.ecc_uncorrected));
    }
    seen = *g.ecc_uncorrected;
  }
  for (const GpuSelfTest& t : h.selftests) SelfTested(*slot, t);
  // The health check: a quarantined GPU that reports in, clean, for the probation period is
  // self-tested by its agent (asked again if no answer came within a minute).
  if (options_.gpu_probation.value() > 0) {
    const int64_t now = clock_.Now().value();
    for (const GpuSample& g : h.gpus) {
      if (g.index < 0 || g.index >= static_cast<int>(slot->record.spec.gpus.size())) continue;
      const size_t i = static_cast<size_t>(g.index);
      if (slot->quarantine[i].empty() || now - slot->last_fault_ms[i] < options_.gpu_probation.value()) continue;
      if (slot->check_asked_ms[i] > 0 && now - slot->check_asked_ms[i] < 60'000) continue;
      AskSelfTest(*slot, g.index);
    }
  }
  std::vector<JobRecord*> changed;
  auto current = [&](uint64_t job, int task, int attempt) -> JobRecord* {
    auto it = jobs_.find(job);
    if (it == jobs_.end() || it->second.attempt != attempt || task < 0 ||
        task >= static_cast<int>(it->second.tasks.size()) || it->second.tasks[static_cast<size_t>(task)].node != h.node) {
      return nullptr;
    }
    return &it->second;
  };
  for (const TaskReport& t : h.tasks) {
    JobRecord* jp = current(t.job, t.task, t.attempt);
    if (!jp) {
      // An attempt the server has given up on (its node was declared down, the job moved):
      // fencing says it must not run on.
      if (t.state == TaskReport::State::kRunning) slot->cancels.push_back(TaskKey{t.job, t.task, t.attempt});
      continue;
    }
    JobRecord& j = *jp;
    TaskRecord& task = j.tasks[static_cast<size_t>(t.task)];
    slot->delivered.erase(TaskKey{t.job, t.task, t.attempt});
    AppendLog(j.spec.id, t.task, "stdout", t.stdout_chunk);
    AppendLog(j.spec.id, t.task, "stderr", t.stderr_chunk);
    if (task.exit_code || task.signal) continue;  // already ended
    if (!task.started) {
      task.started = true;
      bool all = true;
      for (const TaskRecord& x : j.tasks) all = all && x.started;
      if (all && j.state == JobState::kStarting) {
        j.state = JobState::kRunning;
        j.start_ms = t.started_ms > 0 ? t.started_ms : clock_.Now().value();
        if (!j.failing_over) j.message.clear();
        JobEvent(j, "started");
      }
      changed.push_back(&j);
    }
    stats_.log_bytes_dropped += t.dropped;
    if (t.state == TaskReport::State::kExited && t.lost) {
      // Its lease ran out (the agent heard nothing from the server in time): the attempt is
      // lost, which the failover path handles (retry, backoff, limit), not the job's failure.
      TaskLost(j, t.task, fmt::format("task {}'s lease ran out on {}", t.task, h.node), "lost: its lease ran out");
      changed.push_back(&j);
    } else if (t.state == TaskReport::State::kExited) {
      TaskEnded(j, t.task, t.exit_code, t.signal, t.error);
      changed.push_back(&j);
    }
  }
  // Running attempts the server no longer assigns here: stop them (an agent back from a cut).
  std::set<TaskKey> running(h.running.begin(), h.running.end());
  for (const TaskKey& k : running) {
    if (!current(k.job, k.task, k.attempt)) slot->cancels.push_back(k);
  }
  // Attempts handed to this agent that it neither runs nor reported: lost (the agent restarted,
  // or the process vanished without a report). That is no fault of the job's: fail over.
  const std::vector<TaskKey> active(slot->active.begin(), slot->active.end());
  for (const TaskKey& key : active) {
    JobRecord* jp = current(key.job, key.task, key.attempt);
    if (!jp) continue;
    TaskRecord& task = jp->tasks[static_cast<size_t>(key.task)];
    if (task.exit_code || task.signal || running.count(key)) continue;
    const bool pending_launch = std::any_of(slot->launches.begin(), slot->launches.end(), [&](const TaskLaunch& l) {
      return l.job == key.job && l.task == key.task && l.attempt == key.attempt;
    });
    if (pending_launch || (!task.started && !slot->delivered.count(key))) continue;
    slot->delivered.erase(key);
    TaskLost(*jp, key.task, fmt::format("task {} lost on {}", key.task, h.node), "lost: the agent no longer runs it");
    changed.push_back(jp);
  }
  std::vector<std::pair<uint64_t, std::string>> batch;
  for (JobRecord* j : changed) batch.emplace_back(j->spec.id.value(), JobToJson(*j));
  if (!batch.empty()) {
    if (Status s = WriteWithEvents([&](const Events& e) { return journal_.PutJobs(batch, e); }); !s.ok()) return tl::unexpected(s);
  }
  return TakeWork(h.node);
}

HeartbeatReply Controller::TakeWork(const std::string& node) {
  HeartbeatReply reply;
  NodeSlot* slot = SlotByName(node);
  if (!slot) return reply;
  slot->lease_granted_ms = clock_.Now().value();  // this answer renews the node's leases
  slot->detector.Replied(clock_.Now());
  reply.start = std::move(slot->launches);
  reply.cancel = std::move(slot->cancels);
  reply.grace_ms = std::move(slot->cancel_grace);
  reply.selftest = std::move(slot->selftests);
  slot->selftests.clear();
  slot->launches.clear();
  slot->cancels.clear();
  slot->cancel_grace.clear();
  for (const TaskLaunch& l : reply.start) slot->delivered.insert(TaskKey{l.job, l.task, l.attempt});
  return reply;
}

void Controller::ReleaseTask(const TaskRecord& t) {
  NodeSlot* slot = SlotByName(t.node);
  if (!slot) return;
  TaskAllocation a = t.allocation;
  a.node = slot->record.spec.id;
  if (Status s = sched_.Release(a); !s.ok()) Inconsistent(s);
  dirty_ = true;
}

void Controller::CancelTask(JobRecord& j, int t, int grace_ms) {
  TaskRecord& task = j.tasks[static_cast<size_t>(t)];
  if (task.exit_code || task.signal) return;
  NodeSlot* slot = SlotByName(task.node);
  if (!slot) return;
  const TaskKey key{j.spec.id.value(), t, j.attempt};
  // Not yet handed over: take it back; otherwise ask the agent to stop it.
  const auto before = slot->launches.size();
  std::erase_if(slot->launches, [&](const TaskLaunch& l) { return TaskKey{l.job, l.task, l.attempt} == key; });
  if (slot->launches.size() != before) {
    TaskEnded(j, t, std::nullopt, 15, "stopped before it started");
    return;
  }
  slot->cancels.push_back(key);
  if (grace_ms >= 0) slot->cancel_grace[key] = grace_ms;
  if (on_work) on_work(slot->record.spec.name);
}

void Controller::TaskEnded(JobRecord& j, int task, std::optional<int> code, std::optional<int> signal,
                           const std::string& why) {
  TaskRecord& t = j.tasks[static_cast<size_t>(task)];
  if (t.exit_code || t.signal) return;
  t.exit_code = code;
  t.signal = signal;
  if (!code && !signal) t.exit_code = -1;
  if (NodeSlot* slot = SlotByName(t.node)) slot->active.erase(TaskKey{j.spec.id.value(), task, j.attempt});
  ReleaseTask(t);
  if (j.failing_over) return;  // Tick requeues the job once all its tasks have ended
  const bool failed = !why.empty() || (t.exit_code && *t.exit_code != 0) || t.signal;
  if (failed && !j.exit_code) {
    j.exit_code = t.exit_code;
    j.signal = t.signal;
    if (!why.empty()) j.message = fmt::format("task {}: {}", task, why);
    // A gang lives or dies together: stop its other tasks.
    for (size_t o = 0; o < j.tasks.size(); ++o) {
      if (static_cast<int>(o) != task) CancelTask(j, static_cast<int>(o));
    }
  }
  FinishIfDone(j);
}

void Controller::FailOver(JobRecord& j, const std::string& why, int64_t fence_until, bool counts, int grace_ms) {
  if (IsTerminal(j.state) || j.failing_over) return;
  j.failing_over = true;
  if (counts) ++j.failures;
  failing_.insert(j.spec.id.value());
  j.fence_until_ms = std::max(j.fence_until_ms, fence_until);
  j.message = fmt::format("attempt {} failed: {}; placing the job again", j.attempt, why);
  ++stats_.failovers;
  JobEvent(j, "failing_over");
  for (size_t t = 0; t < j.tasks.size(); ++t) {
    const NodeSlot* slot = SlotByName(j.tasks[t].node);
    if (slot && !slot->down) CancelTask(j, static_cast<int>(t), grace_ms);
  }
  StoreFailed(Persist(j));
  dirty_ = true;
}

void Controller::NodeDown(NodeSlot& slot) {
  slot.down = true;
  const double silence = static_cast<double>(clock_.Now().value() - slot.lease_granted_ms) / 1000.0;
  if (on_down) on_down(slot.record.spec.name, silence);
  Emit("node.down", "node/" + slot.record.spec.name, nlohmann::json{{"node", slot.record.spec.name}, {"silent_s", silence}}.dump());
  RefreshNodeState(slot.record.spec.id);
  // Its attempts' leases run out this long after its last heartbeat; only then may the jobs
  // run elsewhere (the tasks stop themselves by then, even if the agent is hung).
  const int64_t fence = std::max(slot.lease_granted_ms, slot.record.last_heartbeat_ms) + options_.lease.value();
  const std::vector<TaskKey> active(slot.active.begin(), slot.active.end());
  for (const TaskKey& k : active) {
    auto it = jobs_.find(k.job);
    if (it == jobs_.end() || it->second.attempt != k.attempt) continue;
    FailOver(it->second, fmt::format("node {} down", slot.record.spec.name), fence);
  }
  dirty_ = true;
}

void Controller::Requeue(JobRecord& j) {
  const int64_t now = clock_.Now().value();
  AttemptRecord a{.attempt = j.attempt, .start_ms = j.start_ms, .end_ms = now, .outcome = j.message};
  for (const TaskRecord& t : j.tasks) a.nodes.push_back(t.node);
  j.attempts.push_back(std::move(a));
  j.tasks.clear();
  j.failing_over = false;
  failing_.erase(j.spec.id.value());
  j.fence_until_ms = 0;
  j.exit_code.reset();
  j.signal.reset();
  const int limit = j.max_retries >= 0 ? j.max_retries : options_.max_retries;
  const int retries = j.failures;
  if (retries > limit || j.cancel_requested) {
    j.state = j.cancel_requested ? JobState::kCancelled : JobState::kFailed;
    j.end_ms = now;
    if (!j.cancel_requested) j.message = fmt::format("gave up after {} failed attempts: {}", retries, j.attempts.back().outcome);
    JobEvent(j, j.cancel_requested ? "cancelled" : "failed");
  } else if (retries == 0) {
    j.state = JobState::kQueued;  // moved, not failed (an eviction): straight back
    queued_.insert(j.spec.id.value());
    j.not_before_ms = now;
  } else {
    j.state = JobState::kQueued;
    queued_.insert(j.spec.id.value());
    // The first failover goes straight back; later ones wait 1 s, 2 s, 4 s ... (at most 60 s).
    const int64_t wait = retries <= 1 ? 0 : std::min<int64_t>(options_.backoff.value() << std::min(retries - 2, 10), 60'000);
    j.not_before_ms = now + wait;
  }
  if (j.state == JobState::kQueued) JobEvent(j, "requeued");
  StoreFailed(Persist(j));
  dirty_ = true;
}

void Controller::FinishIfDone(JobRecord& j) {
  if (IsTerminal(j.state) || j.tasks.empty()) return;
  for (const TaskRecord& t : j.tasks) {
    if (!t.exit_code && !t.signal) return;
  }
  j.end_ms = clock_.Now().value();
  if (!j.exit_code) j.exit_code = 0;
  if (j.cancel_requested) {
    j.state = JobState::kCancelled;
    if (j.message.empty() || j.message == "cancelling") j.message = "cancelled";
  } else {
    j.state = (*j.exit_code == 0 && !j.signal) ? JobState::kSucceeded : JobState::kFailed;
  }
  JobEvent(j, JobStateName(j.state));
  // A finished job's carried checkpoints are done with; a failed one's are kept to look at.
  if (j.state != JobState::kFailed && !options_.checkpoint_store.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(options_.checkpoint_store / std::to_string(j.spec.id.value()), ec);
  }
}

void Controller::Launch(JobRecord& j) {
  const int world = static_cast<int>(j.tasks.size());
  const NodeSlot* master = SlotByName(j.tasks.front().node);
  std::map<std::string, int> local_world;
  for (const TaskRecord& t : j.tasks) ++local_world[t.node];
  for (int i = 0; i < world; ++i) {
    TaskRecord& t = j.tasks[static_cast<size_t>(i)];
    if (t.started || t.exit_code || t.signal) continue;
    NodeSlot* slot = SlotByName(t.node);
    std::string gpus;
    for (int g = 0; g < 16; ++g) {
      if (t.allocation.gpu_mask >> g & 1) gpus += (gpus.empty() ? "" : ",") + std::to_string(g);
    }
    TaskLaunch l{.job = j.spec.id.value(), .task = i, .attempt = j.attempt, .command = j.command, .env = j.env, .workdir = j.workdir,
                 .gpu_mask = t.allocation.gpu_mask, .cpu = t.allocation.cpu, .memory = t.allocation.memory};
    auto set = [&](const std::string& k, const std::string& v) { l.env.emplace_back(k, v); };
    set("CUDA_VISIBLE_DEVICES", gpus);
    set("NVIDIA_VISIBLE_DEVICES", gpus.empty() ? "void" : gpus);
    set("CUDA_DEVICE_ORDER", "PCI_BUS_ID");  // index order = NVML's, as the agent reported them
    set("GPUPOOL_JOB_ID", std::to_string(j.spec.id.value()));
    set("GPUPOOL_JOB_NAME", j.spec.name);
    set("GPUPOOL_TASK_INDEX", std::to_string(i));
    set("GPUPOOL_ATTEMPT", std::to_string(j.attempt));
    if (!options_.checkpoint_root.empty()) {
      set("GPUPOOL_CHECKPOINT_DIR", (options_.checkpoint_root / std::to_string(j.spec.id.value())).string());
    } else {
      l.carry_checkpoint = true;  // the agent sets GPUPOOL_CHECKPOINT_DIR to a directory of its own
    }
    set("GPUPOOL_NODE", t.node);
    set("GPUPOOL_GPUS", gpus);
    set("RANK", std::to_string(i));
    set("WORLD_SIZE", std::to_string(world));
    int local = 0;
    for (int k = 0; k < i; ++k) local += j.tasks[static_cast<size_t>(k)].node == t.node;
    set("LOCAL_RANK", std::to_string(local));
    set("LOCAL_WORLD_SIZE", std::to_string(local_world[t.node]));
    set("MASTER_ADDR", master ? master->record.agent_address : "127.0.0.1");
    set("MASTER_PORT", std::to_string(20000 + j.spec.id.value() % 20000));
    if (slot) {
      slot->launches.push_back(std::move(l));
      if (on_work) on_work(t.node);
    }
  }
}

void Controller::ApplyPlan(const Plan& plan, const std::vector<PendingJob>&) {
  std::vector<std::pair<uint64_t, std::string>> batch;
  std::vector<JobRecord> before;  // the placed jobs as they were, to undo an unstored plan
  const size_t events_before = pending_events_.size();
  const uint64_t seq_before = next_event_seq_;
  for (const Placement& p : plan.placements) {
    JobRecord& j = jobs_.at(p.job.value());
    // Re-check every node: a placement that no longer fits is dropped; the job stays queued.
    std::vector<TaskAllocation> done;
    bool ok = true;
    for (const TaskAllocation& a : p.tasks) {
      if (!sched_.Allocate(a).ok()) {
        ok = false;
        break;
      }
      done.push_back(a);
    }
    if (!ok) {
      for (const TaskAllocation& a : done) (void)sched_.Release(a);  // undoing our own Allocate cannot fail
      dirty_ = true;  // the job stays queued: try again on the next tick
      continue;
    }
    before.push_back(j);
    j.tasks.clear();
    ++j.attempt;
    j.start_ms = 0;
    for (const TaskAllocation& a : p.tasks) {
      nodes_[a.node.value()].active.insert(TaskKey{p.job.value(), static_cast<int>(j.tasks.size()), j.attempt});
      j.tasks.push_back(TaskRecord{.node = fleet_.node(a.node).name, .allocation = a});
    }
    j.state = JobState::kStarting;
    queued_.erase(p.job.value());
    j.message.clear();
    last_decision_.erase(p.job.value());
    JobEvent(j, "placed");
    batch.emplace_back(p.job.value(), JobToJson(j));
  }
  // Stored before any task is handed to an agent: a placement the store did not take is undone
  // (allocations, events), so nothing runs that a restart would not know of.
  if (!batch.empty()) {
    if (Status s = WriteWithEvents([&](const Events& e) { return journal_.PutJobs(batch, e); }); !s.ok()) {
      for (JobRecord& was : before) {
        JobRecord& j = jobs_.at(was.spec.id.value());
        for (size_t t = 0; t < j.tasks.size(); ++t) {
          nodes_[j.tasks[t].allocation.node.value()].active.erase(TaskKey{was.spec.id.value(), static_cast<int>(t), j.attempt});
          (void)sched_.Release(j.tasks[t].allocation);  // undoing the Allocate above cannot fail
        }
        queued_.insert(was.spec.id.value());
        j = std::move(was);
      }
      pending_events_.resize(events_before);
      next_event_seq_ = seq_before;
      StoreFailed(s);
      return;
    }
    for (const auto& [id, json] : batch) {
      ++stats_.placed;
      Launch(jobs_.at(id));
    }
  }
  for (const Decision& d : plan.decisions) {
    if (d.outcome == Outcome::kPlaced) continue;
    JobRecord& j = jobs_.at(d.job.value());
    std::string msg = d.outcome == Outcome::kNever ? "cannot run on the current fleet: " : "waiting: ";
    if (!d.reasons().empty()) {
      const PendingJob pj{.spec = &j.spec};
      msg += DescribeReason(d.reasons().front().example, fleet_, pj);
    }
    if (msg != j.message) j.message = msg;
    last_decision_[d.job.value()] = d;
  }
}

void Controller::Tick() {
  TickOnce();
  const int64_t now = clock_.Now().value();
  if (options_.telemetry_events.value() > 0 && now - last_telemetry_event_ms_ >= options_.telemetry_events.value()) {
    last_telemetry_event_ms_ = now;
    for (const NodeSlot& slot : nodes_) {
      if (slot.down) continue;
      nlohmann::json gpus = nlohmann::json::array();
      for (const GpuSample& g : slot.record.gpus) {
        gpus.push_back({{"gpu", g.index}, {"utilisation", static_cast<double>(g.utilisation.value()) / 1000},
                        {"memory_used_mib", g.memory_used.value()}, {"memory_total_mib", g.memory_total.value()}});
      }
      const HostSample& h = slot.record.host;
      Emit("node.telemetry", "node/" + slot.record.spec.name,
           nlohmann::json{{"node", slot.record.spec.name},
                          {"cpu_busy", static_cast<double>(h.cpu_busy.value()) / 1000},
                          {"memory_total_mib", h.memory.total.value()},
                          {"memory_available_mib", h.memory.available.value()},
                          {"gpus", gpus}}
               .dump());
    }
  }
  FlushEvents();
  // Retention: prune in steps of a tenth of the limit, so that a DELETE runs now and then.
  const uint64_t kept = next_event_seq_ - first_event_seq_;
  if (options_.events_retain > 0 && kept > options_.events_retain + options_.events_retain / 10) {
    uint64_t up_to = next_event_seq_ - 1 - options_.events_retain;
    if (sinks_delivered) up_to = std::min(up_to, sinks_delivered());
    if (up_to >= first_event_seq_ && journal_.PruneEvents(up_to).ok()) first_event_seq_ = up_to + 1;
  }
}

void Controller::TaskLost(JobRecord& j, int task, const std::string& why, const std::string& how) {
  if (!j.failing_over) FailOver(j, why, 0);
  TaskEnded(j, task, std::nullopt, std::nullopt, how);
}

void Controller::ForgiveStall() {
  ++stats_.stalls;
  for (NodeSlot& s : nodes_) {
    if (!s.down) s.detector.Replied(clock_.Now());
  }
}

void Controller::TickOnce() {
  const int64_t now = clock_.Now().value();
  if (options_.stall.value() > 0 && last_tick_ms_ > 0 && now - last_tick_ms_ > options_.stall.value()) {
    ForgiveStall();
  }
  last_tick_ms_ = now;
  for (NodeSlot& s : nodes_) {
    if (s.down || !s.detector.started()) continue;
    const Liveness l = s.detector.Judge(clock_.Now());
    if (l == Liveness::kDown) {
      NodeDown(s);
    } else if ((l == Liveness::kSuspect) != s.suspect) {
      s.suspect = l == Liveness::kSuspect;
      Emit(s.suspect ? "node.suspect" : "node.ready", "node/" + s.record.spec.name,
           nlohmann::json{{"node", s.record.spec.name}}.dump());
      RefreshNodeState(s.record.spec.id);
      dirty_ = true;
    }
  }
  // Jobs failing over go back to the queue once every task has ended and the fence has passed.
  const std::vector<uint64_t> failing(failing_.begin(), failing_.end());
  for (uint64_t id : failing) {
    JobRecord& j = jobs_.at(id);
    if (!j.failing_over || now < j.fence_until_ms) continue;
    bool all_ended = true;
    for (size_t t = 0; t < j.tasks.size(); ++t) {
      TaskRecord& task = j.tasks[t];
      if (task.exit_code || task.signal) continue;
      const NodeSlot* slot = SlotByName(task.node);
      if (slot && slot->down) {
        TaskEnded(j, static_cast<int>(t), std::nullopt, 9, "");  // its lease ran out: it has stopped
      } else {
        all_ended = false;
      }
    }
    if (all_ended) Requeue(j);
  }
  bool waiting = false;
  for (uint64_t id : queued_) waiting = waiting || jobs_.at(id).not_before_ms > now;
  if (waiting) dirty_ = true;  // look again when the backoff ends
  if (!dirty_ || !store_error_.ok()) return;  // a failed store: nothing more is placed
  dirty_ = false;
  std::vector<PendingJob> pending;
  const std::vector<uint64_t> queued(queued_.begin(), queued_.end());
  bool backing_off = false;
  for (uint64_t id : queued) {
    JobRecord& j = jobs_.at(id);
    if (j.not_before_ms > now) {
      backing_off = true;  // look again on a later tick: this pass is not its last chance
      continue;
    }
    auto p = CompileJob(j.spec, fleet_);
    if (!p) {
      queued_.erase(id);
      j.state = JobState::kFailed;
      j.message = p.error().message();
      j.end_ms = now;
      JobEvent(j, "failed");
      StoreFailed(Persist(j));
      continue;
    }
    pending.push_back(*p);
  }
  if (backing_off) dirty_ = true;
  if (pending.empty() || sched_.empty()) return;
  ++stats_.passes;
  const auto t0 = std::chrono::steady_clock::now();
  const Plan plan = Schedule(sched_, pending, policy_, rng_);
  if (on_pass) {
    on_pass(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), pending.size(), plan.placements.size());
  }
  ApplyPlan(plan, pending);
}

std::string Controller::Explain(JobId id) const {
  const JobRecord* j = FindJob(id);
  if (!j) return {};
  std::string out = fmt::format("job {} ({}): {}\n", id.value(), j->spec.name, JobStateName(j->state));
  if (j->state != JobState::kQueued) {
    if (!j->tasks.empty()) {
      for (size_t t = 0; t < j->tasks.size(); ++t) {
        std::string gpus;
        for (int g = 0; g < 16; ++g) {
          if (j->tasks[t].allocation.gpu_mask >> g & 1) gpus += (gpus.empty() ? "" : ",") + std::to_string(g);
        }
        out += fmt::format("  task {} on {} GPUs [{}]\n", t, j->tasks[t].node, gpus);
      }
    }
    if (!j->message.empty()) out += "  " + j->message + "\n";
    return out;
  }
  auto it = last_decision_.find(id.value());
  if (it == last_decision_.end()) {
    out += nodes_.empty() ? "  no node has registered yet\n" : "  not yet considered by the scheduler\n";
    return out;
  }
  const PendingJob pj{.spec = &j->spec};
  out += fmt::format("  {} ({} nodes in the fleet)\n", it->second.outcome == Outcome::kNever ? "cannot run on this fleet" : "waiting for resources",
                     nodes_.size());
  for (const ReasonCount& rc : it->second.reasons()) {
    out += fmt::format("  {} node(s): {}\n", rc.nodes, DescribeReason(rc.example, fleet_, pj));
  }
  return out;
}

}  // namespace gp

namespace gp {

void Controller::CollectMetrics(Families& out) const {
  using prometheus::MetricType;
  const int64_t now = clock_.Now().value();
  for (const NodeSlot& s : nodes_) {
    const std::string& name = s.record.spec.name;
    std::vector<GpuView> gpus;
    for (const Gpu& g : s.record.spec.gpus) {
      GpuView v{.device = GpuDevice{.index = g.index, .uuid = g.uuid, .name = s.record.gpu_model, .memory = g.memory}};
      for (const GpuSample& x : s.record.gpus) {
        if (x.index == g.index) v.sample = x;
      }
      if (g.index >= 0 && g.index < kMaxGpusPerNode) v.last_xid = s.last_xid[static_cast<size_t>(g.index)];
      gpus.push_back(std::move(v));
    }
    AddGpuFamilies(out, name, gpus);
    const NodeState& st = sched_.node(s.record.spec.id);
    const LoadTerms t = ComputeLoad(st.load);
    AddNodeFamilies(out, name, static_cast<double>(st.load.cpu.value()) / 1000.0, static_cast<double>(st.load.gpu.value()) / 1000.0,
                    static_cast<double>(st.load.memory.value()) / 1000.0, t.r, t.l);
    int quarantined = 0;
    for (const std::string& q : s.quarantine) quarantined += !q.empty();
    AddValue(FamilyIn(out, "gpupool_node_gpus_quarantined", "GPUs of the node out of service.", MetricType::Gauge),
             {{"node", name}}, quarantined);
    AddValue(FamilyIn(out, "gpupool_node_gpus_free", "Whole GPUs of the node free for placement.", MetricType::Gauge),
             {{"node", name}}, st.WholeFreeGpus());
  }
  std::map<std::string, int> nodes_by_state = {{"ready", 0}, {"suspect", 0}, {"down", 0}, {"draining", 0}};
  for (const NodeSlot& s : nodes_) ++nodes_by_state[NodeCondition(s.record.spec.name)];
  auto& nodes = FamilyIn(out, "gpupool_nodes", "Nodes by state.", MetricType::Gauge);
  for (const auto& [state, n] : nodes_by_state) AddValue(nodes, {{"state", state}}, n);
  std::map<std::string, int> jobs_by_state;
  for (int s = 0; s <= static_cast<int>(JobState::kCancelled); ++s) jobs_by_state[std::string(JobStateName(static_cast<JobState>(s)))] = 0;
  for (const auto& [id, j] : jobs_) ++jobs_by_state[std::string(JobStateName(j.state))];
  auto& jobs = FamilyIn(out, "gpupool_jobs", "Jobs by state.", MetricType::Gauge);
  for (const auto& [state, n] : jobs_by_state) AddValue(jobs, {{"state", state}}, n);
  // Why queued jobs wait: the first reason of the last pass's decision, per tenant.
  std::map<std::pair<std::string, std::string>, int> queue;
  for (uint64_t id : queued_) {
    const JobRecord& j = jobs_.at(id);
    std::string reason = "pending";  // not looked at by a pass yet
    if (j.not_before_ms > now) {
      reason = "backoff";
    } else if (auto d = last_decision_.find(id); d != last_decision_.end() && !d->second.reasons().empty()) {
      reason = std::string(ReasonName(d->second.reasons().front().example.code));
      if (d->second.outcome == Outcome::kNever) reason = "never-fits:" + reason;
    }
    ++queue[{j.spec.tenant.empty() ? "default" : j.spec.tenant, reason}];
  }
  auto& q = FamilyIn(out, "gpupool_queue_length", "Queued jobs by tenant and the reason they wait.", MetricType::Gauge);
  for (const auto& [k, n] : queue) AddValue(q, {{"tenant", k.first}, {"reason", k.second}}, n);
  AddValue(FamilyIn(out, "gpupool_placements_total", "Jobs placed (attempts started) since the server started.", MetricType::Counter),
           {}, static_cast<double>(stats_.placed));
  AddValue(FamilyIn(out, "gpupool_failovers_total", "Jobs moved off a failed node or GPU since the server started.", MetricType::Counter),
           {}, static_cast<double>(stats_.failovers));
  AddValue(FamilyIn(out, "gpupool_server_stalls_total", "Times the server's own loop stalled over 700 ms; no node was blamed for the silence.",
                    MetricType::Counter), {}, static_cast<double>(stats_.stalls));
  AddValue(FamilyIn(out, "gpupool_log_bytes_dropped_total", "Job output agents dropped: jobs that wrote faster than their node ships.",
                    MetricType::Counter), {}, static_cast<double>(stats_.log_bytes_dropped));
  AddValue(FamilyIn(out, "gpupool_schedule_passes_total", "Scheduling passes since the server started.", MetricType::Counter), {},
           static_cast<double>(stats_.passes));
}

}  // namespace gp
