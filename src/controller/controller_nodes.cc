// The node registry: registration (identities and credentials), the nodes' state as the
// scheduler sees it, draining, eviction and reclaim, liveness, and the agents' heartbeats
// (their reports turned into calls on the cluster state, and the work handed back).
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <utility>

#include "adapters/tokens.h"
#include "controller/controller.h"
#include "core/gpu_catalog.h"
#include "core/units.h"

namespace gp {

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
  for (const NodeSlot& s : nodes_) {
    if (!s.record.released) out.push_back(s.record.spec.name);
  }
  return out;
}

std::vector<std::string> Controller::NodeNames(const std::string& provider, const std::string& site,
                                               const std::string& after, size_t limit) const {
  std::vector<std::string> out;
  for (auto it = node_ids_.upper_bound(after); it != node_ids_.end() && out.size() < limit; ++it) {
    const NodeRecord& r = nodes_[it->second.value()].record;
    if (r.released || (!provider.empty() && r.provider != provider) || (!site.empty() && r.site != site)) continue;
    out.push_back(it->first);
  }
  return out;
}

std::string Controller::NodeGroupsJson() const {
  struct Group {
    std::map<std::string, int> by_condition;
    std::map<std::string, int> models;
    int nodes = 0;
    int64_t gpus = 0;
    int64_t free = 0;
    int64_t util = 0;  // per mille, summed over GPUs with samples
    int64_t sampled = 0;
  };
  std::map<std::pair<std::string, std::string>, Group> groups;
  for (const NodeSlot& s : nodes_) {
    if (s.record.released) continue;
    Group& g = groups[{s.record.provider, s.record.site}];
    ++g.nodes;
    ++g.by_condition[NodeCondition(s.record.spec.name)];
    if (!s.record.gpu_model.empty()) g.models[s.record.gpu_model] += static_cast<int>(GpusOf(s).size());
    g.gpus += static_cast<int64_t>(GpusOf(s).size());
    g.free += s.down ? 0 : cluster_.sched().node(s.record.spec.id).WholeFreeGpus();
    for (const KeptGpuSample& x : s.record.gpus) {
      g.util += x.utilisation().value();
      ++g.sampled;
    }
  }
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [key, g] : groups) {
    nlohmann::json states = nlohmann::json::object();
    for (const char* c : {"ready", "suspect", "down", "draining"}) states[c] = g.by_condition.count(c) ? g.by_condition.at(c) : 0;
    out.push_back({{"provider", key.first}, {"site", key.second}, {"nodes", g.nodes}, {"states", states},
                   {"gpus", g.gpus}, {"free_gpus", g.free}, {"models", g.models},
                   {"gpu_utilisation", g.sampled ? static_cast<double>(g.util) / 1000.0 / static_cast<double>(g.sampled) : 0.0}});
  }
  size_t listed = 0;
  for (const auto& [key, g] : groups) listed += static_cast<size_t>(g.nodes);
  return nlohmann::json{{"groups", out}, {"nodes", listed}}.dump();
}

std::string Controller::NodeJson(const std::string& name) const {
  const NodeSlot* s = SlotByName(name);
  if (!s) return {};
  const gp::NodeState& st = cluster_.sched().node(s->record.spec.id);
  NodeRecord shown = Shown(*s);
  shown.credential_hash.clear();  // the API never shows it
  return NodeToJson(shown, fleet_, NodeCondition(name), st.WholeFreeGpus());
}

std::string Controller::NodeCondition(const std::string& name) const {
  const NodeSlot* s = SlotByName(name);
  if (!s) return {};
  if (s->record.released) return "released";
  if (s->down) return "down";
  if (s->suspect) return "suspect";
  return s->record.draining ? "draining" : "ready";
}

Status Controller::SetDraining(const std::string& name, bool draining) {
  NodeSlot* slot = SlotByName(name);
  if (!slot) return Status(StatusCode::kNotFound, fmt::format("no node '{}'", name));
  if (slot->record.draining != draining) {
    Emit(draining ? "node.drained" : "node.undrained", "node/" + name, nlohmann::json{{"node", name}}.dump());
  }
  slot->record.draining = draining;
  RefreshNodeState(slot->record.spec.id);
  return PersistNode(*slot);
}

// Drains the node and moves its running jobs elsewhere: each job's tasks get SIGTERM (with
// `grace_ms` before SIGKILL, or the agent's own grace) and the job goes back to the queue.
// Not counted as a failure: the job did nothing wrong.
Status Controller::MoveJobsOff(const std::string& name, const std::string& why, int grace_ms) {
  if (Status s = SetDraining(name, true); !s.ok()) return s;
  const NodeSlot* slot = SlotByName(name);
  cluster_.FailJobsOn(slot->record.spec.id, -1, why, Millis{0}, /*counts=*/false, grace_ms, clock_.Now());
  Status s = StoreChanged();
  StoreFailed(s);
  return s;
}

Status Controller::Evict(const std::string& name) {
  if (SlotByName(name)) Emit("node.evicted", "node/" + name, nlohmann::json{{"node", name}}.dump());
  return MoveJobsOff(name, fmt::format("evicted: node {} was drained", name), -1);
}

Status Controller::Reclaim(const std::string& name, Millis notice) {
  if (SlotByName(name)) {
    Emit("node.reclaimed", "node/" + name, nlohmann::json{{"node", name}, {"notice_s", static_cast<double>(notice.value()) / 1000}}.dump());
  }
  return MoveJobsOff(name, fmt::format("node {} reclaimed by its provider ({} notice)", name, FormatMillis(notice)),
                     static_cast<int>(notice.value()));
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
  cluster_.FailJobsOn(slot.record.spec.id, -1, fmt::format("node {} down", slot.record.spec.name), Millis{fence}, true, -1,
                      clock_.Now());
  StoreFailed(StoreChanged());
}

namespace {
// What a registration says about a node, whether it is new or known. The record keeps no GPUs:
// the fleet's copy of the node is the one copy of its inventory (the scheduler reads it, and
// GpusOf gives it to the rest): 8 GPUs are 0.5 KiB a node, not held twice.
void FillRecord(NodeRecord& rec, const Node& n, const RegisterRequest& r, const std::string& model) {
  rec.spec = n;
  std::vector<Gpu>().swap(rec.spec.gpus);
  rec.site = r.site;
  rec.provider = r.provider;
  rec.agent_address = r.address;
  rec.gpu_source = r.gpu_source;
  rec.gpu_model = model;
}
}  // namespace

namespace {
// The drivers a node offers as NodeState::drivers' bits: process only when it said none.
uint8_t DriverMask(const std::vector<std::string>& drivers) {
  uint8_t mask = drivers.empty() ? 1 : 0;
  for (const std::string& d : drivers) {
    if (auto driver = ParseDriver(d)) mask = static_cast<uint8_t>(mask | 1u << static_cast<int>(*driver));
  }
  return mask;
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
  SchedState& sched = cluster_.sched();
  if (NodeSlot* known = SlotByName(r.name)) {
    NodeSlot& s = *known;
    // A known node again (agent or server restarted). Its resources in use stay as they are;
    // its inventory must not have changed under running work.
    if (GpusOf(s).size() != n.gpus.size()) {
      return Error(StatusCode::kFailedPrecondition,
                   fmt::format("node '{}' registered with {} GPUs, now {}; drain it and rename it", r.name,
                               GpusOf(s).size(), n.gpus.size()));
    }
    n.id = s.record.spec.id;
    FillRecord(s.record, n, r, model_name);
    s.record.released = false;  // an agent under a released node's name: listed again
    fleet_.nodes[n.id.value()] = std::move(n);
    s.record.max_tasks = r.max_tasks;
    s.record.drivers = r.drivers;
    sched.Update(n.id, [&](NodeState& st) {
      st.task_slots = static_cast<uint16_t>(r.max_tasks);
      st.drivers = DriverMask(r.drivers);
    });
    return n.id;
  }
  n.id = NodeId{static_cast<uint32_t>(fleet_.nodes.size())};
  fleet_.nodes.push_back(n);
  NodeState st = MakeNodeState(fleet_, n);
  st.task_slots = static_cast<uint16_t>(r.max_tasks);
  st.drivers = DriverMask(r.drivers);
  sched.AddNode(st);
  NodeSlot slot;
  FillRecord(slot.record, n, r, model_name);
  slot.record.max_tasks = r.max_tasks;
  slot.record.drivers = r.drivers;
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

Status Controller::RecordNodeCertificate(const std::string& node, const std::string& serial) {
  NodeSlot* slot = SlotByName(node);
  if (!slot) return Status(StatusCode::kNotFound, fmt::format("no node '{}'", node));
  auto& serials = slot->record.cert_serials;
  serials.push_back(serial);
  if (serials.size() > 2) serials.erase(serials.begin(), serials.end() - 2);
  Emit("node.certificate_issued", "node/" + node, nlohmann::json{{"node", node}, {"serial", serial}}.dump());
  return PersistNode(*slot);
}

std::string Controller::NodeCertificateRefused(const std::string& node, const std::string& serial) {
  NodeSlot* slot = SlotByName(node);
  if (!slot) return fmt::format("no node '{}'", node);
  auto& serials = slot->record.cert_serials;
  auto it = std::find(serials.begin(), serials.end(), serial);
  if (it == serials.end()) {
    return fmt::format("node '{}''s client certificate (serial {}) is not in force: it was revoked or replaced; the agent "
                       "registers again for a new one",
                       node, serial);
  }
  if (it + 1 == serials.end() && serials.size() > 1) {
    serials.erase(serials.begin(), it);  // the newest in use: the one before it is retired
    if (Status s = PersistNode(*slot); !s.ok()) return "the server could not store the node: " + s.message();
  }
  return "";
}

Status Controller::RevokeNodeCertificates(const std::string& node) {
  NodeSlot* slot = SlotByName(node);
  if (!slot) return Status(StatusCode::kNotFound, fmt::format("no node '{}'", node));
  const size_t n = slot->record.cert_serials.size();
  slot->record.cert_serials.clear();
  Emit("node.certificates_revoked", "node/" + node, nlohmann::json{{"node", node}, {"certificates", n}}.dump());
  return PersistNode(*slot);
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
  if (!r.claim.empty()) slot.record.claim = r.claim;
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
  if (on_joined && !slot.record.claim.empty()) on_joined(slot.record.spec.name, slot.record.claim);
  return out;
}

void Controller::RefreshNodeState(NodeId id) {
  NodeSlot& slot = nodes_[id.value()];
  cluster_.sched().Update(id, [&](NodeState& st) { FillNodeState(slot, st); });
}

void Controller::FillNodeState(const NodeSlot& slot, NodeState& st) const {
  st.health = slot.down ? Health::kUnhealthy : (slot.suspect ? Health::kSuspect : Health::kHealthy);
  st.schedulability = slot.record.draining ? Schedulability::kDraining : Schedulability::kSchedulable;
  st.price = fleet_.PricePerGpuHour(fleet_.nodes[slot.record.spec.id.value()]);
  st.site = slot.record.spec.site;
  const HostSample& h = slot.record.host;
  // Live load for the least-loaded scorer: the node's own measurements.
  if (h.memory.total.value() > 0) {
    st.load.cpu = h.cpu_busy;
    st.load.memory = PerMille{(h.memory.total - h.memory.available).value() * 1000 / h.memory.total.value()};
  }
  if (!slot.record.gpus.empty()) {
    int64_t sum = 0;
    for (const KeptGpuSample& g : slot.record.gpus) sum += g.utilisation().value();
    st.load.gpu = PerMille{sum / static_cast<int64_t>(slot.record.gpus.size())};
  }
}

bool Controller::HasWork(const std::string& node) const {
  const NodeSlot* s = SlotByName(node);
  return s && (!s->launches.empty() || !s->cancels.empty() || !s->selftests.empty());
}

Result<HeartbeatReply> Controller::Heartbeat(const gp::Heartbeat& h) {
  std::optional<Result<HeartbeatReply>> out;
  HeartbeatStaged(h, [&](Result<HeartbeatReply> r) { out = std::move(r); });
  CommitHeartbeats();
  if (!out) return tl::unexpected(Status(StatusCode::kInternal, "the journal answers later: use HeartbeatStaged"));
  return std::move(*out);
}

void Controller::HeartbeatStaged(const gp::Heartbeat& h, std::function<void(Result<HeartbeatReply>)> done) {
  if (Status s = ApplyHeartbeat(h); !s.ok()) return done(tl::unexpected(std::move(s)));
  staged_beats_.push_back(StagedBeat{.node = h.node, .done = std::move(done)});
  if (staged_beats_.size() == 1 && on_staged) on_staged();
}

void Controller::CommitHeartbeats() {
  if (staged_beats_.empty()) return;
  std::vector<StagedBeat> batch = std::move(staged_beats_);
  staged_beats_.clear();
  // One write for every heartbeat of this loop turn: each agent hears back (its reports
  // acknowledged, so never sent again, and its work) only once what they said is durable. The
  // fsync is the journal's (shared with other turns' writes); the loop goes on meanwhile.
  StoreChangedLater([this, batch = std::make_shared<std::vector<StagedBeat>>(std::move(batch))](const Status& s) {
    for (StagedBeat& b : *batch) {
      if (!s.ok()) {
        b.done(tl::unexpected(s));
      } else {
        b.done(TakeWork(b.node));
      }
    }
  });
}

Status Controller::ApplyHeartbeat(const gp::Heartbeat& h) {
  NodeSlot* slot = SlotByName(h.node);
  if (!slot) return Status(StatusCode::kNotFound, fmt::format("node '{}' is not registered; register first", h.node));
  const Millis now = clock_.Now();
  const bool was_out = slot->down || slot->suspect;
  slot->down = false;
  slot->suspect = false;
  if (!slot->detector.held()) slot->detector.Heartbeat(now);  // else counted when it arrived
  slot->record.last_heartbeat_ms = now.value();
  if (h.telemetry) {
    // A heartbeat without telemetry (nothing changed) keeps the last samples and costs O(news).
    slot->record.host = h.host;
    slot->record.gpus.clear();  // its capacity kept: a node's GPU count does not change
    for (const GpuSample& g : h.gpus) slot->record.gpus.emplace_back(g);
  }
  if (h.telemetry || was_out) RefreshNodeState(slot->record.spec.id);
  GpuReports(*slot, h);
  auto current = [&](uint64_t job, int task, int attempt) -> JobRecord* {
    JobRecord* j = cluster_.Find(JobId{job});
    if (!j || j->attempt != attempt || task < 0 || task >= static_cast<int>(j->tasks.size()) ||
        j->tasks[static_cast<size_t>(task)].node != h.node) {
      return nullptr;
    }
    return j;
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
    const TaskRecord& task = j.tasks[static_cast<size_t>(t.task)];
    slot->delivered.erase(TaskKey{t.job, t.task, t.attempt});
    logs_->Append(j.spec.id, t.task, "stdout", t.stdout_chunk);
    logs_->Append(j.spec.id, t.task, "stderr", t.stderr_chunk);
    if (task.exit_code || task.signal) continue;  // already ended
    cluster_.TaskStarted(j, t.task, Millis{t.started_ms}, now);
    stats_.log_bytes_dropped += t.dropped;
    if (t.state == TaskReport::State::kExited && t.lost) {
      // Its lease ran out (the agent heard nothing from the server in time): the attempt is
      // lost, which the failover path handles (retry, backoff, limit), not the job's failure.
      cluster_.TaskLost(j, t.task, fmt::format("task {}'s lease ran out on {}", t.task, h.node), "lost: its lease ran out", now);
    } else if (t.state == TaskReport::State::kExited) {
      cluster_.TaskEnded(j, t.task, t.exit_code, t.signal, t.error, now);
    }
  }
  // Running attempts the server no longer assigns here: stop them (an agent back from a cut).
  std::set<TaskKey> running(h.running.begin(), h.running.end());
  for (const TaskKey& k : running) {
    if (!current(k.job, k.task, k.attempt)) slot->cancels.push_back(k);
  }
  // Attempts handed to this agent that it neither runs nor reported: lost (the agent restarted,
  // or the process vanished without a report). That is no fault of the job's: fail over.
  const ClusterState::TaskSet& on = cluster_.TasksOn(slot->record.spec.id);
  const std::vector<TaskKey> active(on.begin(), on.end());
  for (const TaskKey& key : active) {
    JobRecord* jp = current(key.job, key.task, key.attempt);
    if (!jp) continue;
    const TaskRecord& task = jp->tasks[static_cast<size_t>(key.task)];
    if (task.exit_code || task.signal || running.count(key)) continue;
    const bool pending_launch = std::find(slot->launches.begin(), slot->launches.end(), key) != slot->launches.end();
    if (pending_launch || (!task.started && !slot->delivered.count(key))) continue;
    slot->delivered.erase(key);
    cluster_.TaskLost(*jp, key.task, fmt::format("task {} lost on {}", key.task, h.node), "lost: the agent no longer runs it", now);
  }
  return Status::Ok();
}

Millis Controller::heartbeat_interval() const {
  // O(1): by the nodes registered (a down node still counts; it may come back any time).
  const auto nodes = static_cast<int64_t>(nodes_.size());
  const int64_t by_rate = options_.heartbeat_rate > 0 ? nodes * 1000 / options_.heartbeat_rate : 0;
  const int64_t cap = std::min(options_.heartbeat_max.value(), options_.lease.value() - options_.heartbeat_margin.value());
  return Millis{std::max(options_.heartbeat_base.value(), std::min(by_rate, cap))};
}

void Controller::HoldingHeartbeat(const std::string& node, bool arrived) {
  NodeSlot* slot = SlotByName(node);
  if (!slot) return;
  // A heartbeat that arrives is the node speaking now; the time its request then waits in the
  // server's queue or in a long poll is the server's, not a silence of the node's.
  if (arrived && !slot->detector.held()) slot->detector.Heartbeat(clock_.Now());
  slot->detector.Held();
}

void Controller::HoldReleased(const std::string& node) {
  if (NodeSlot* slot = SlotByName(node)) slot->detector.Replied(clock_.Now());
}

HeartbeatReply Controller::TakeWork(const std::string& node) {
  HeartbeatReply reply;
  NodeSlot* slot = SlotByName(node);
  if (!slot) return reply;
  slot->lease_granted_ms = clock_.Now().value();  // this answer renews the node's leases
  slot->detector.Replied(clock_.Now());
  reply.start.reserve(slot->launches.size());
  for (const TaskKey& key : slot->launches) {
    // Still the job's current attempt, placed here, and not yet started: its launch, now.
    const JobRecord* j = cluster_.Find(JobId{key.job});
    if (!j || j->attempt != key.attempt || key.task >= static_cast<int>(j->tasks.size()) ||
        j->tasks[static_cast<size_t>(key.task)].node != node) {
      continue;
    }
    if (auto l = PrepareLaunch(*j, key.task, ContextOf(*j))) reply.start.push_back(std::move(*l));
  }
  reply.cancel = std::move(slot->cancels);
  reply.grace_ms = std::move(slot->cancel_grace);
  reply.selftest = std::move(slot->selftests);
  slot->selftests.clear();
  slot->launches.clear();
  slot->cancels.clear();
  slot->cancel_grace.clear();
  for (const TaskLaunch& l : reply.start) slot->delivered.insert(TaskKey{l.job, l.task, l.attempt});
  reply.interval_ms = static_cast<int>(heartbeat_interval().value());
  return reply;
}

Status Controller::MergeOffers(ProviderId provider, const std::vector<StatedOffer>& stated) {
  for (const StatedOffer& s : stated) {
    Offer o = s.offer;
    auto site = fleet_.FindSite(s.site);
    if (!site) return Status(StatusCode::kInvalidArgument, fmt::format("offer '{}': site '{}' is not in the fleet", o.name, s.site));
    auto model = fleet_.InternModel(s.gpu_model);
    if (!model) return Status(StatusCode::kInvalidArgument, fmt::format("offer '{}': gpu_model: {}", o.name, model.error().message()));
    o.provider = provider;
    o.site = *site;
    o.model = *model;
    if (o.gpu_memory.value() <= 0) o.gpu_memory = fleet_.model(*model).memory;
    if (o.cpu.value() <= 0) o.cpu = MilliCpu{static_cast<int64_t>(o.gpus) * 8000};
    if (o.memory.value() <= 0) o.memory = MiB{static_cast<int64_t>(o.gpus) * 65536};
    Offer* known = nullptr;
    for (Offer& k : fleet_.offers) {
      if (k.name == o.name) known = &k;
    }
    if (!known) {
      fleet_.offers.push_back(std::move(o));
      continue;
    }
    if (known->provider != provider) {
      return Status(StatusCode::kInvalidArgument, fmt::format("offer '{}': already an offer of provider '{}'", o.name, fleet_.provider(known->provider).name));
    }
    if (known->gpus != o.gpus || known->model != o.model || known->site != o.site) {
      return Status(StatusCode::kInvalidArgument, fmt::format("offer '{}': its shape (site, model, GPUs) may not change; name a new offer", o.name));
    }
    *known = std::move(o);
  }
  return Status::Ok();
}

std::vector<const JobRecord*> Controller::WaitingForCapacity() const {
  std::vector<const JobRecord*> out;
  const int64_t now = clock_.Now().value();
  // With no node up, no pass looks at anything: every queued job waits for capacity.
  const bool none_up = std::none_of(nodes_.begin(), nodes_.end(), [](const NodeSlot& s) { return !s.down; });
  for (uint64_t id : cluster_.queued()) {
    const JobRecord* j = cluster_.Find(JobId{id});
    if (!j || j->not_before_ms > now) continue;
    // Not looked at yet: the next pass may place it on what is there.
    if (!none_up && !cluster_.DecisionOf(JobId{id})) continue;
    out.push_back(j);
  }
  return out;
}

std::vector<Controller::ClaimedNode> Controller::ClaimedNodes() const {
  std::vector<ClaimedNode> out;
  for (const NodeSlot& s : nodes_) {
    if (s.record.claim.empty()) continue;
    out.push_back(ClaimedNode{.name = s.record.spec.name, .claim = s.record.claim,
                              .busy = !cluster_.TasksOn(s.record.spec.id).empty(), .down = s.down,
                              .draining = s.record.draining});
  }
  return out;
}

void Controller::Announce(std::string type, std::string subject, std::string data) {
  Emit(std::move(type), std::move(subject), std::move(data));
  FlushEvents();
}

}  // namespace gp
