#include "controller/controller.h"

#include <ctime>

#include <fmt/format.h>

#include <bit>
#include <charconv>
#include <nlohmann/json.hpp>

#include <chrono>
#include <utility>

#include "controller/launch.h"
#include "core/models.h"
#include "core/units.h"

namespace gp {
namespace {

// The live fleet starts with no nodes (they join as agents register) and at least one provider
// and site for them.
Fleet Based(Fleet f) {
  f.nodes.clear();
  if (f.providers.empty()) f.providers.push_back(Provider{.id = ProviderId{0}, .name = "local"});
  if (f.sites.empty()) f.sites.push_back(Site{.id = SiteId{0}, .name = "local", .region = "local"});
  return f;
}

}  // namespace

Controller::Controller(Fleet base, Journal& journal, const Clock& clock, ControllerOptions options, Policy policy)
    : fleet_(Based(std::move(base))), journal_(journal), clock_(clock), options_(std::move(options)),
      logs_(FileLogStore(options_.log_dir)), checkpoints_(FileCheckpointStore(options_.checkpoint_store)),
      cluster_(fleet_, std::move(policy),
               ClusterOptions{.seed = options_.seed, .max_retries = options_.max_retries, .backoff = options_.backoff,
                              .backoff_max = Millis{60'000}, .never = NeverFits::kWait,
                              .max_placements_per_pass = options_.max_placements_per_pass,
                              .preempt_grace_ms = options_.preempt_grace_ms},
               listener_) {
  cluster_.set_half_life(options_.fair_share_half_life);
}

void Controller::Listener::JobChanged(const JobRecord& j, std::string_view what) {
  c_.Emit(fmt::format("job.{}", what), fmt::format("job/{}", j.spec.id.value()), JobEventData(j, what));
  const uint64_t id = j.spec.id.value();
  if (what == "preempting") {
    c_.StoreNomination(j);
  } else if (c_.stored_nominations_.count(id) && !c_.cluster_.nominated().count(id)) {
    // It started where it was promised, ended, or waits again: its hold is done with.
    if (c_.journal_.PutMeta(fmt::format("nomination/{}", id), "").ok()) c_.stored_nominations_.erase(id);
  }
  // A finished job's carried checkpoints are done with; a failed one's are kept to look at.
  if (what == "succeeded" || what == "cancelled") c_.checkpoints_->Discard(j.spec.id);
}

// One usage record per task of the attempt: its GPUs from the job's start to now, at its
// node's price per GPU-hour (the offer's, for a node the pool acquired).
void Controller::Listener::AttemptUsed(const JobRecord& j, Millis now) {
  const Fleet& fleet = c_.fleet_;
  for (const TaskRecord& t : j.tasks) {
    const NodeSlot* slot = c_.SlotByName(t.node);
    if (!slot) continue;
    const NodeRecord& n = slot->record;
    const int64_t milli = std::popcount(t.allocation.gpu_mask) * t.allocation.share.value();
    const Millis held{now.value() - j.start_ms};
    MicroUsd per_gpu_hour = c_.cluster_.sched().node(n.spec.id).price;
    std::string tier(PriceTierName(n.spec.tier));
    if (!n.offer.empty()) {  // an acquired node: its offer's price and tier (O(offers), for these only)
      for (const Offer& o : fleet.offers) {
        if (o.name != n.offer) continue;
        per_gpu_hour = o.price_per_gpu_hour();
        tier = PriceTierName(o.tier);
        break;
      }
    }
    const int64_t gpu_ms = milli * held.value() / 1000;
    c_.used_gpu_ms_[t.node] += gpu_ms;
    c_.usage_pending_.push_back(UsageRecord{.start_ms = j.start_ms, .end_ms = now.value(), .kind = "job", .provider = n.provider,
                                            .offer = n.offer, .tier = tier, .tenant = j.spec.tenant, .node = t.node,
                                            .job = j.spec.id.value(), .gpu_ms = gpu_ms,
                                            .usd_micro = GpuCost(per_gpu_hour, GpuMilli{milli}, held).value()});
  }
}

Status Controller::SetNodeOffer(const std::string& node, const std::string& offer) {
  NodeSlot* slot = SlotByName(node);
  if (!slot) return Status(StatusCode::kNotFound, fmt::format("no node '{}'", node));
  if (slot->record.offer == offer) return Status::Ok();
  slot->record.offer = offer;
  return PersistNode(*slot);
}

// Each tenant's decayed usage, brought to now and kept in the store (a minute's worth at most
// is lost to a crash), so that fair share remembers across a restart.
void Controller::SaveDecayedUsage(Millis now) {
  cluster_.AdvanceTenants(now);
  const TenantBook& book = cluster_.tenants();
  for (TenantIndex t = 1; t < book.size(); ++t) {
    if (book.decayed(t) <= 0 || book.name(t).empty() || book.name(t).size() > 200) continue;
    const std::string value = nlohmann::json{{"decayed_gpu_ms", book.decayed(t)}, {"as_of_ms", now.value()}}.dump();
    if (Status s = journal_.PutMeta("fairshare/" + book.name(t), value); !s.ok()) {
      fmt::print(stderr, "gpupool server: fair-share usage not stored: {}\n", s.message());
      return;
    }
  }
}

Status Controller::CheckTenants(const std::vector<TenantConfig>& tenants) const {
  for (const TenantConfig& t : tenants) {
    if (!t.priority.empty()) {
      if (auto c = fleet_.PriorityClassNamed(t.priority); !c) {
        return Status(StatusCode::kInvalidArgument, "priority: " + c.error().message());
      }
    }
    if (t.order.empty()) continue;
    if (auto q = BuiltinRegistry().MakeQueueOrder(t.order); !q) {
      return Status(StatusCode::kInvalidArgument, fmt::format("order: {}", q.error().message()));
    }
  }
  TenantBook scratch;
  return scratch.Configure(tenants, fleet_);
}

Status Controller::ApplyTenants() {
  std::vector<TenantConfig> all;
  for (const Tenant& t : access_.Tenants()) all.push_back(ConfigOf(t));
  return cluster_.ConfigureTenants(all);
}

std::map<std::string, Controller::TenantUse> Controller::TenantsInUse() const {
  std::map<std::string, TenantUse> out;
  for (uint64_t id : cluster_.unfinished()) {
    const JobRecord* j = cluster_.Find(JobId{id});
    if (!j || j->array) continue;  // an array's own record holds nothing; its elements do
    TenantUse& u = out[j->spec.tenant];
    if (j->state == JobState::kQueued) {
      ++u.queued;
      continue;
    }
    ++u.running;
    for (const TaskRecord& t : j->tasks) {
      if (t.exit_code || t.signal) continue;
      const NodeSlot* slot = SlotByName(t.node);
      const std::string model = slot && !slot->record.gpu_model.empty() ? slot->record.gpu_model : "-";
      u.gpus[model] += std::popcount(t.allocation.gpu_mask) * static_cast<double>(t.allocation.share.value()) / 1000.0;
    }
  }
  return out;
}

Status Controller::NodeReleased(const std::string& node) {
  NodeSlot* slot = SlotByName(node);
  if (!slot) return Status(StatusCode::kNotFound, fmt::format("no node '{}'", node));
  if (slot->record.released) return Status::Ok();
  slot->record.released = true;
  slot->record.draining = true;
  RefreshNodeState(slot->record.spec.id);
  return PersistNode(*slot);
}

int64_t Controller::UsedGpuMs(const std::string& node) const {
  auto it = used_gpu_ms_.find(node);
  return it == used_gpu_ms_.end() ? 0 : it->second;
}

void Controller::FlushUsage() {
  if (usage_pending_.empty()) return;
  // Kept and tried again at the next tick when the store refuses (a full disk heals).
  if (Status s = journal_.PutUsage(usage_pending_); !s.ok()) {
    fmt::print(stderr, "gpupool server: usage records not written ({} waiting): {}\n", usage_pending_.size(), s.message());
    return;
  }
  usage_pending_.clear();
}

Result<std::vector<UsageTotal>> Controller::UsageTotals(int64_t since_ms, const std::vector<std::string>& by) {
  FlushUsage();
  return journal_.UsageTotals(since_ms, by);
}

bool Controller::Listener::StopTask(const JobRecord& j, int t, int grace_ms) {
  const TaskRecord& task = j.tasks[static_cast<size_t>(t)];
  NodeSlot* slot = c_.SlotByName(task.node);
  if (!slot) return false;
  const TaskKey key{j.spec.id.value(), t, j.attempt};
  // Not yet handed over: take it back (it ends here); otherwise ask the agent to stop it.
  const auto before = slot->launches.size();
  std::erase(slot->launches, key);
  if (slot->launches.size() != before) return true;
  slot->cancels.push_back(key);
  if (grace_ms >= 0) slot->cancel_grace[key] = grace_ms;
  if (c_.on_work) c_.on_work(slot->record.spec.name);
  return false;
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

std::vector<std::pair<uint64_t, std::string>> Controller::TakeChangedRows() {
  if (cluster_.inconsistencies() != inconsistencies_seen_) {
    stats_.inconsistencies += cluster_.inconsistencies() - inconsistencies_seen_ - 1;  // Inconsistent() counts one
    inconsistencies_seen_ = cluster_.inconsistencies();
    Inconsistent(cluster_.last_inconsistency());
  }
  const std::vector<uint64_t> ids = cluster_.TakeChanged();
  std::vector<std::pair<uint64_t, std::string>> rows;
  rows.reserve(ids.size());
  for (uint64_t id : ids) {
    if (const JobRecord* j = cluster_.Find(JobId{id})) rows.emplace_back(id, JobToJson(*j, std::nullopt, true));
  }
  return rows;
}

Status Controller::StoreChanged() {
  const auto rows = TakeChangedRows();
  if (rows.empty()) return Status::Ok();
  return WriteWithEvents([&](const Events& e) { return journal_.PutJobs(rows, e); });
}

void Controller::StoreChangedLater(std::function<void(const Status&)> then) {
  auto rows = TakeChangedRows();
  if (rows.empty() && pending_events_.empty()) return then(Status::Ok());
  Events events = std::move(pending_events_);
  pending_events_.clear();
  const bool announce = !events.empty();
  journal_.PutJobsLater(std::move(rows), std::move(events), [this, announce, then = std::move(then)](Status st) mutable {
    OnLoop([this, announce, st = std::move(st), then = std::move(then)] {
      StoreFailed(st);
      if (st.ok() && announce && on_events) on_events();
      then(st);
    });
  });
}

void Controller::OnLoop(std::function<void()> fn) {
  if (defer) {
    defer(std::move(fn));  // from the journal's thread to the loop's
  } else {
    fn();
  }
}

Controller::Stats Controller::stats() const {
  Stats s = stats_;
  s.placed = cluster_.placed_total();
  s.failovers = cluster_.failovers_total();
  return s;
}

void Controller::FlushEvents() {
  if (!pending_events_.empty()) StoreFailed(WriteWithEvents([&](const Events& e) { return journal_.PutEvents(e); }));
}

void Controller::Emit(std::string type, std::string subject, std::string data) {
  if (!actor_.empty() && data.size() >= 2 && data.front() == '{' && data.back() == '}') {
    data.insert(data.size() - 1, (data == "{}" ? "\"actor\":" : ",\"actor\":") + actor_);
  }
  pending_events_.push_back(EventRecord{.seq = next_event_seq_++, .time_ms = clock_.Now().value(), .type = std::move(type),
                                        .subject = std::move(subject), .data = std::move(data)});
}

Status Controller::Recover() {
  auto contents = journal_.Load();
  if (!contents) return contents.error();
  if (Status s = access_.Load(contents->meta); !s.ok()) return s;
  // Fair share's memory: each tenant's decayed usage as last stored (it decays from then).
  for (const auto& [key, text] : contents->meta) {
    if (!key.starts_with("fairshare/")) continue;
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("decayed_gpu_ms") || !j["decayed_gpu_ms"].is_number() ||
        !j.contains("as_of_ms") || !j["as_of_ms"].is_number_integer()) {
      continue;  // unreadable: that tenant starts from no usage, as Slurm's would after a reset
    }
    cluster_.RestoreDecayed(key.substr(10), j["decayed_gpu_ms"].get<double>(), Millis{j["as_of_ms"].get<int64_t>()});
  }
  next_event_seq_ = contents->last_event_seq + 1;
  if (Status s = ApplyTenants(); !s.ok()) {
    // Stored by an older version that checked less: the pool runs, without quotas, and says so.
    Emit("pool.warning", "tenants", nlohmann::json{{"message", "tenants not applied (no quota enforced): " + s.message()}}.dump());
  }
  next_event_seq_ = contents->last_event_seq + 1;
  first_event_seq_ = contents->first_event_seq > 0 ? contents->first_event_seq : next_event_seq_;
  for (const auto& [name, json] : contents->nodes) {
    auto n = NodeFromJson(json);
    if (!n) return Status(StatusCode::kInternal, fmt::format("journal: node '{}': {}", name, n.error().message()));
    RegisterRequest r{.name = n->spec.name, .site = n->site, .provider = n->provider,
                      .tier = std::string(PriceTierName(n->spec.tier)), .address = n->agent_address,
                      .cpu_cores = static_cast<int>(n->spec.cpu.value() / 1000), .memory_mib = n->spec.memory.value(),
                      .gpu_source = n->gpu_source, .max_tasks = n->max_tasks, .drivers = n->drivers};
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
    slot.record.cert_serials = n->cert_serials;
    slot.record.claim = n->claim;
    if (!n->credential_hash.empty()) by_credential_[n->credential_hash] = *id;
    for (size_t g = 0; g < n->gpu_health.size() && g < kMaxGpusPerNode; ++g) {
      if (n->gpu_health[g].starts_with("quarantined: ")) {
        slot.quarantine.set(g, n->gpu_health[g].substr(13));
        slot.gpu_facts().last_fault_ms[g] = clock_.Now().value();  // probation starts again
        cluster_.sched().Update(*id, [&](NodeState& st) { st.quarantined = static_cast<uint16_t>(st.quarantined | (1u << g)); });
      }
      if (g < n->gpu_check.size()) slot.last_check.set(g, n->gpu_check[g]);
    }
    // As if it had just spoken: an agent that is alive speaks within a heartbeat; one that died
    // while the server was away is found down by the detector, and its work fails over.
    slot.detector = PhiAccrualDetector(options_.detector);
    slot.detector.Heartbeat(clock_.Now());
    slot.lease_granted_ms = clock_.Now().value();
    slot.record.last_heartbeat_ms = clock_.Now().value();
    RefreshNodeState(*id);
  }
  auto node_of = [&](const std::string& name) -> std::optional<NodeId> {
    auto it = node_ids_.find(name);
    if (it == node_ids_.end()) return std::nullopt;
    return it->second;
  };
  for (const auto& [id, json] : contents->jobs) {
    auto job = JobFromJson(json);
    if (!job) return Status(StatusCode::kInternal, fmt::format("journal: job {}: {}", id, job.error().message()));
    cluster_.Restore(std::move(*job), node_of);
    // Tasks never seen running may or may not have reached their agent before the restart:
    // hand them over again; an agent never starts the same task twice.
    const JobRecord& j = *cluster_.Find(JobId{id});
    if (j.state == JobState::kStarting) Launch(j);
  }
  cluster_.RecountArrays();
  // Jobs that had preempted others wait for them again, holding what they were promised (a
  // nomination that no longer holds is dropped: the job waits as any other).
  for (const auto& [key, text] : contents->meta) {
    if (!key.starts_with("nomination/")) continue;
    uint64_t id = 0;
    std::vector<std::pair<std::string, TaskAllocation>> tasks;
    std::vector<JobId> victims;
    auto j = nlohmann::json::parse(text, nullptr, false);
    bool ok = j.is_object() && j.contains("tasks") && j["tasks"].is_array() && j.contains("victims") && j["victims"].is_array();
    const std::string_view digits = std::string_view(key).substr(11);
    ok = ok && std::from_chars(digits.data(), digits.data() + digits.size(), id).ec == std::errc();
    try {
      for (const auto& t : ok ? j["tasks"] : nlohmann::json::array()) {
        tasks.emplace_back(t.at("node").get<std::string>(),
                           TaskAllocation{.gpu_mask = t.at("gpu_mask").get<uint16_t>(), .share = GpuMilli{t.at("share").get<int64_t>()},
                                          .cpu = MilliCpu{t.at("cpu").get<int64_t>()}, .memory = MiB{t.at("memory").get<int64_t>()}});
      }
      for (const auto& v : ok ? j["victims"] : nlohmann::json::array()) victims.push_back(JobId{v.get<uint64_t>()});
    } catch (const nlohmann::json::exception&) {
      ok = false;
    }
    if (ok && cluster_.RestoreNomination(JobId{id}, tasks, victims, node_of).ok()) {
      stored_nominations_.insert(id);
    } else {
      (void)journal_.PutMeta(key, "");
    }
  }
  return Status::Ok();
}

// A job that preempted: where it will run and for whom it waits, kept until it starts (or
// waits again), so that a restart during its victims' grace does not forget what it holds.
void Controller::StoreNomination(const JobRecord& j) {
  const auto it = cluster_.nominated().find(j.spec.id.value());
  if (it == cluster_.nominated().end()) return;
  nlohmann::json tasks = nlohmann::json::array(), victims = nlohmann::json::array();
  for (const TaskAllocation& a : it->second.tasks) {
    tasks.push_back({{"node", fleet_.node(a.node).name}, {"gpu_mask", a.gpu_mask}, {"share", a.share.value()},
                     {"cpu", a.cpu.value()}, {"memory", a.memory.value()}});
  }
  for (JobId v : it->second.victims) victims.push_back(v.value());
  const std::string key = fmt::format("nomination/{}", j.spec.id.value());
  if (Status s = journal_.PutMeta(key, nlohmann::json{{"tasks", tasks}, {"victims", victims}}.dump()); !s.ok()) {
    fmt::print(stderr, "gpupool server: a preemption's hold not stored: {}\n", s.message());
    return;
  }
  stored_nominations_.insert(j.spec.id.value());
}

Status Controller::Validate(JobRecord& r) {
  if (!store_error_.ok()) return store_error_;
  r.spec.submit_time = clock_.Now();
  r.state = JobState::kQueued;
  r.tasks.clear();
  r.exit_code.reset();
  r.array_of = 0;  // elements are the server's to make
  r.progress.reset();  // an array's progress is the server's (and a plain job has none)
  if (Status s = cluster_.Limit(r.spec, r.priority_unset); !s.ok()) return s;
  if (Status s = cluster_.CheckDependencies(r); !s.ok()) return s;
  if (r.array) {
    // Checked once for every element: they share the spec.
    if (Status s = cluster_.Admit(r.spec); !s.ok()) return s;
  }
  if (r.spec.name.empty()) r.spec.name = r.command.empty() ? "job" : std::filesystem::path(r.command[0]).filename().string();
  if (r.spec.data && !fleet_.FindSite(r.spec.data->site)) {
    return Status(StatusCode::kInvalidArgument, fmt::format("field 'data.site': unknown site '{}'", r.spec.data->site));
  }
  if (!r.workdir.empty()) {
    const std::filesystem::path w = std::filesystem::path(r.workdir).lexically_normal();
    if (w.is_relative()) {
      if (!w.empty() && *w.begin() == "..") {
        return Status(StatusCode::kInvalidArgument, fmt::format("field 'workdir': '{}' climbs out of the task's directory", r.workdir));
      }
    } else {
      bool allowed = false;
      for (const auto& root : options_.allow_workdir) {
        const auto rel = w.lexically_relative(root.lexically_normal());
        allowed = allowed || (!rel.empty() && *rel.begin() != "..");
      }
      if (!allowed) {
        return Status(StatusCode::kInvalidArgument, fmt::format(
            "field 'workdir': '{}' is outside the task's directory, and the server allows no other ({}); give a path "
            "relative to the task's directory",
            r.workdir, options_.allow_workdir.empty() ? "gpupool server --allow-workdir DIR allows one" : "see --allow-workdir"));
      }
    }
  }
  return Status::Ok();
}

void Controller::SubmitStaged(JobRecord r, std::function<void(Result<JobId>)> done) {
  if (Status s = Validate(r); !s.ok()) return done(tl::unexpected(std::move(s)));
  next_submit_id_ = std::max(next_submit_id_, cluster_.next_id());
  r.spec.id = JobId{next_submit_id_++};
  if (r.array) next_submit_id_ += static_cast<uint64_t>(r.array->size());  // its elements' ids
  staged_.push_back(Staged{.record = std::move(r), .done = std::move(done), .actor = actor_});
  if (staged_.size() == 1 && on_staged) on_staged();
}

void Controller::CommitSubmits() {
  if (staged_.empty()) return;
  auto batch = std::make_shared<std::vector<Staged>>(std::move(staged_));
  staged_.clear();
  if (!store_error_.ok()) {
    for (Staged& s : *batch) s.done(tl::unexpected(store_error_));
    return;
  }
  // One transaction for every submission of this loop turn: the jobs and their job.submitted
  // events together (and any other events not yet stored). Each is acknowledged only once the
  // write is durable (FinishSubmits). The journal may make it durable on a thread of its own,
  // one fsync for the transactions of several turns, while the loop goes on reading requests.
  std::vector<std::pair<uint64_t, std::string>> rows;
  rows.reserve(batch->size());
  const Unnumber undo{.seq_before = next_event_seq_, .earlier = pending_events_};
  const std::string actor = std::exchange(actor_, "");
  for (const Staged& s : *batch) {
    actor_ = s.actor;
    Emit("job.submitted", fmt::format("job/{}", s.record.spec.id.value()), JobEventData(s.record, "submitted"));
    rows.emplace_back(s.record.spec.id.value(), JobToJson(s.record, std::nullopt, true));
  }
  actor_ = actor;
  Events events = std::move(pending_events_);
  pending_events_.clear();
  auto seq_after = next_event_seq_;
  journal_.PutJobsLater(std::move(rows), std::move(events), [this, batch, undo, seq_after](Status st) {
    OnLoop([this, batch, undo, seq_after, st = std::move(st)] {
      // A failed write numbers no event, when nothing was numbered after its own.
      if (!st.ok() && next_event_seq_ == seq_after) {
        next_event_seq_ = undo.seq_before;
        pending_events_.insert(pending_events_.begin(), undo.earlier.begin(), undo.earlier.end());
      }
      FinishSubmits(std::move(*batch), st);
    });
  });
}

void Controller::FinishSubmits(std::vector<Staged> batch, const Status& st) {
  if (!st.ok()) {
    // The server stops acknowledging (StoreFailed); a restart recovers the last durable state.
    StoreFailed(st);
    const Status why(StatusCode::kInternal, "could not store the job: " + st.message());
    for (Staged& s : batch) s.done(tl::unexpected(why));
  } else {
    ++stats_.submit_commits;
    if (on_events) on_events();
    for (Staged& s : batch) {
      const JobId id = s.record.spec.id;
      cluster_.Accept(std::move(s.record));
      s.done(id);
    }
    StoreFailed(StoreChanged());  // admission may have failed some (out of the scheduler's range)
  }
}

Result<JobId> Controller::Submit(JobRecord r) {
  std::optional<Result<JobId>> out;
  SubmitStaged(std::move(r), [&](Result<JobId> id) { out = std::move(id); });
  CommitSubmits();
  if (!out) return Error(StatusCode::kInternal, "the journal answers later: use SubmitStaged");
  return std::move(*out);
}

const JobRecord* Controller::FindJob(JobId id) const { return cluster_.Find(id); }

std::vector<const JobRecord*> Controller::ListJobs(const JobFilter& f) const {
  std::vector<const JobRecord*> out;
  auto keep = [&](const JobRecord& j) {
    if (f.state && j.state != *f.state) return false;
    if (!f.tenant.empty() && j.spec.tenant != f.tenant) return false;
    if (!f.node.empty()) {
      bool on = false;
      for (const TaskRecord& t : j.tasks) on = on || t.node == f.node;
      if (!on) return false;
    }
    return true;
  };
  // Newest first from the cursor, each step O(log n): live work walks its index (a page of
  // waiting or running jobs never walks the job table), and an array's elements are passed
  // over in one step unless they are asked for.
  auto walk = [&](const auto& ids, auto key) {
    uint64_t below = f.before > 0 ? f.before : UINT64_MAX;
    while (out.size() < f.limit) {
      auto it = ids.lower_bound(below);
      if (it == ids.begin()) break;
      --it;
      const uint64_t id = key(it);
      const JobRecord& j = *cluster_.Find(JobId{id});
      if (!f.expand && j.array_of != 0) {
        const JobRecord* a = cluster_.Find(JobId{j.array_of});
        if (a && keep(*a)) out.push_back(a);
        below = j.array_of;
        continue;
      }
      if (keep(j)) out.push_back(&j);
      below = id;
    }
  };
  const auto& jobs = cluster_.jobs();
  auto map_key = [](auto it) { return it->first; };
  auto set_key = [](auto it) { return *it; };
  if (f.array != 0) {
    // One array's elements (those with records): the ids right above the array's own.
    const JobRecord* a = cluster_.Find(JobId{f.array});
    if (!a || !a->array) return out;
    uint64_t below = std::min<uint64_t>(f.before > 0 ? f.before : UINT64_MAX, f.array + 1 + static_cast<uint64_t>(a->array->size()));
    while (out.size() < f.limit) {
      auto it = jobs.lower_bound(below);
      if (it == jobs.begin()) break;
      --it;
      if (it->first <= f.array) break;
      if (keep(it->second)) out.push_back(&it->second);
      below = it->first;
    }
    return out;
  }
  if (f.state && !IsTerminal(*f.state)) {
    walk(*f.state == JobState::kQueued ? cluster_.queued() : cluster_.unfinished(), set_key);
  } else {
    walk(jobs, map_key);
  }
  return out;
}

Result<JobId> Controller::ResolveJob(std::string_view text) const {
  auto number = [](std::string_view s) -> std::optional<uint64_t> {
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
    return v;
  };
  const size_t us = text.find('_');
  if (us == std::string_view::npos) {
    auto id = number(text);
    if (!id || *id == 0) return Error(StatusCode::kNotFound, fmt::format("no job '{}'", text));
    return JobId{*id};
  }
  auto array = number(text.substr(0, us));
  auto index = number(text.substr(us + 1));
  if (!array || !index) return Error(StatusCode::kNotFound, fmt::format("no job '{}': expected ID or ARRAY_INDEX", text));
  auto id = cluster_.ElementId(JobId{*array}, static_cast<int64_t>(*index));
  if (!id) return Error(StatusCode::kNotFound, fmt::format("no job '{}': job {} is no array, or has no index {}", text, *array, *index));
  return *id;
}

std::optional<JobRecord> Controller::PendingElement(JobId id) const {
  if (cluster_.Find(id)) return std::nullopt;
  // Its array is the nearest array below it whose ids reach it.
  const auto& jobs = cluster_.jobs();
  auto it = jobs.lower_bound(id.value());
  while (it != jobs.begin()) {
    --it;
    const JobRecord& a = it->second;
    if (a.array_of != 0) {
      it = jobs.lower_bound(a.array_of + 1);
      continue;
    }
    if (!a.array || id.value() > a.spec.id.value() + static_cast<uint64_t>(a.array->size())) return std::nullopt;
    const int64_t pos = static_cast<int64_t>(id.value() - a.spec.id.value() - 1);
    JobRecord e{.spec = a.spec, .command = a.command, .env = a.env, .workdir = a.workdir};
    e.spec.id = id;
    e.array_of = a.spec.id.value();
    e.array_index = static_cast<uint32_t>(a.array->IndexAt(pos));
    const bool cancelled = pos < a.arr().expanded || a.arr().early_cancel.count(pos) || IsTerminal(a.state);
    e.state = cancelled ? JobState::kCancelled : JobState::kQueued;
    e.message = cancelled ? "cancelled before it was expanded"
                          : fmt::format("waiting: array {} expands its elements as they may run ({} of {} so far)",
                                        a.spec.id.value(), a.arr().expanded, a.array->size());
    return e;
  }
  return std::nullopt;
}

Status Controller::Cancel(JobId id) {
  if (auto pending = PendingElement(id)) {
    if (Status s = cluster_.CancelElement(JobId{pending->array_of}, pending->array_index, clock_.Now()); !s.ok()) return s;
  } else if (Status s = cluster_.Cancel(id, clock_.Now()); !s.ok()) {
    return s;
  } else if (const JobRecord* j = cluster_.Find(id); j && !IsTerminal(j->state)) {
    // Running: it ends when its tasks have stopped (job.cancelled, reported by its agents); the
    // request itself is an event now, naming who asked (the audit trail).
    Emit("job.cancelling", fmt::format("job/{}", id.value()), JobEventData(*j, "cancelling"));
  }
  Status s = StoreChanged();
  StoreFailed(s);
  return s;
}

std::filesystem::path Controller::LogPath(JobId id, int task, std::string_view stream) const {
  return logs_->PathOf(id, task, stream);
}

std::filesystem::path Controller::CheckpointPath(JobId id, int task) const { return checkpoints_->PathOf(id, task); }

Status Controller::StoreCheckpoint(const std::string& node, JobId id, int task, int attempt,
                                   const std::filesystem::path& archive) {
  const JobRecord* jp = cluster_.Find(id);
  if (!jp) return Status(StatusCode::kNotFound, fmt::format("no job {}", id.value()));
  const JobRecord& j = *jp;
  if (!checkpoints_->enabled()) return Status(StatusCode::kFailedPrecondition, "this server uses shared checkpoint storage");
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
  return checkpoints_->Put(id, task, archive);
}

Status Controller::MayFetchCheckpoint(const std::string& node, JobId id, int task) const {
  const JobRecord* j = cluster_.Find(id);
  if (!j) return Status(StatusCode::kNotFound, fmt::format("no job {}", id.value()));
  if (IsTerminal(j->state) || task < 0 || task >= static_cast<int>(j->tasks.size()) ||
      j->tasks[static_cast<size_t>(task)].node != node) {
    return Status(StatusCode::kPermissionDenied,
                  fmt::format("job {} task {}: its checkpoint is served only to the node running its current attempt", id.value(), task));
  }
  return Status::Ok();
}

LaunchContext Controller::ContextOf(const JobRecord& j) const {
  const NodeSlot* master = j.tasks.empty() ? nullptr : SlotByName(j.tasks.front().node);
  const JobRecord* array = j.array_of != 0 ? cluster_.Find(JobId{j.array_of}) : nullptr;
  return LaunchContext{.master_address = master ? master->record.agent_address : "",
                       .checkpoint_root = options_.checkpoint_root,
                       .array = array && array->array ? &*array->array : nullptr,
                       .open_secret = options_.open_secret,
                       .user = [&]() -> std::string {
                         const Tenant* t = access_.FindTenant(j.spec.tenant);
                         return t ? t->unix_user : std::string();
                       }()};
}

Status Controller::SealSecrets(JobRecord& r) const {
  if (!r.extras) return Status::Ok();
  if (!options_.seal_secret) return Status(StatusCode::kFailedPrecondition, "this server keeps no secrets key: jobs cannot have secrets");
  for (auto& [name, value] : r.extras->secrets) value = options_.seal_secret(value);
  return Status::Ok();
}

void Controller::Launch(const JobRecord& j) {
  for (int t = 0; t < static_cast<int>(j.tasks.size()); ++t) {
    const TaskRecord& task = j.tasks[static_cast<size_t>(t)];
    if (!AwaitsLaunch(task)) continue;
    NodeSlot* slot = SlotByName(task.node);
    if (!slot) continue;
    slot->launches.push_back(TaskKey{j.spec.id.value(), t, j.attempt});
    if (on_work) on_work(task.node);
  }
}

void Controller::Tick() {
  TickOnce();
  FlushUsage();
  const int64_t now = clock_.Now().value();
  if (now - last_fairshare_saved_ms_ >= 60'000) {
    last_fairshare_saved_ms_ = now;
    SaveDecayedUsage(Millis{now});
  }
  if (options_.telemetry_events.value() > 0 && now - last_telemetry_event_ms_ >= options_.telemetry_events.value()) {
    last_telemetry_event_ms_ = now;
    for (const NodeSlot& slot : nodes_) {
      if (slot.down) continue;
      nlohmann::json gpus = nlohmann::json::array();
      for (const KeptGpuSample& kept : slot.record.gpus) {
        const GpuSample g = kept.sample();
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

void Controller::ForgiveStall(int64_t gap_ms) {
  ++stats_.stalls;
  if (on_stall) on_stall(gap_ms);
  for (NodeSlot& s : nodes_) {
    if (!s.down) s.detector.Replied(clock_.Now());
  }
}

void Controller::TickOnce() {
  const int64_t now = clock_.Now().value();
  if (options_.stall.value() > 0 && last_tick_ms_ > 0 && now - last_tick_ms_ > options_.stall.value()) {
    ForgiveStall(now - last_tick_ms_);
  }
  last_tick_ms_ = now;
  const Millis at{now};
  std::vector<NodeId> silent;
  for (NodeSlot& s : nodes_) {
    if (s.down || s.record.released || !s.detector.started()) continue;
    const Liveness l = s.detector.Judge(at);  // O(1): a comparison
    if (l == Liveness::kDown) {
      if (!s.judged_down) silent.push_back(s.record.spec.id);
      s.judged_down = true;
    } else if ((l == Liveness::kSuspect) != s.suspect) {
      s.suspect = l == Liveness::kSuspect;
      Emit(s.suspect ? "node.suspect" : "node.ready", "node/" + s.record.spec.name,
           nlohmann::json{{"node", s.record.spec.name}}.dump());
      RefreshNodeState(s.record.spec.id);
    }
  }
  // A heartbeat the loop has read but not yet handled is not silence: the verdict waits.
  if (!silent.empty()) ConfirmDown(std::move(silent), 2);
  Schedule();
}

void Controller::ConfirmDown(std::vector<NodeId> silent, int turns) {
  const Millis now = clock_.Now();
  std::vector<NodeId> still;
  for (NodeId id : silent) {
    if (id.value() >= nodes_.size()) continue;
    NodeSlot& s = nodes_[id.value()];
    if (s.down || s.detector.Judge(now) != Liveness::kDown) {  // heard meanwhile
      s.judged_down = false;
      continue;
    }
    if (node_speaking && node_speaking(s.record.spec.name)) {
      // Its heartbeat is here, unread: the server is behind, the node is not silent.
      ++stats_.unheard;
      s.detector.Heard(now);
      s.judged_down = false;
      continue;
    }
    still.push_back(id);
  }
  if (still.empty()) return;
  if (turns > 0 && defer) {
    // Once to run the handlers already queued (a heartbeat read, not yet handled), once more
    // for those the loop's next look at its sockets queues (bytes read from the kernel, their
    // handler behind this one): what is still silent then has not spoken.
    defer([this, still = std::move(still), turns]() mutable { ConfirmDown(std::move(still), turns - 1); });
    return;
  }
  for (NodeId id : still) {
    NodeSlot& s = nodes_[id.value()];
    s.judged_down = false;
    NodeDown(s);
  }
  Schedule();
}

void Controller::Schedule() {
  // Jobs failing over go back to the queue once every task has ended and the fence has passed;
  // jobs past their time limit are stopped.
  cluster_.EnforceTimeLimits(clock_.Now());
  cluster_.RequeueReady(clock_.Now());
  StoreFailed(StoreChanged());
  // Every tick may place: a pass looks only at the classes of waiting jobs that something
  // improved for since they last failed (the state's generations say which), so a pass in
  // which nothing changed costs next to nothing.
  if (!store_error_.ok()) return;  // a failed store: nothing more is placed
  Pass();
}

void Controller::Pass() {
  // A plan is stored before any task is handed to an agent: a placement the store did not take
  // is undone (allocations, events), so nothing runs that a restart would not know of.
  const size_t events_before = pending_events_.size();
  const uint64_t seq_before = next_event_seq_;
  const auto t0 = std::chrono::steady_clock::now();
  const ClusterState::PassResult pass = cluster_.Pass(clock_.Now());
  if (!pass.ran) return;
  ++stats_.passes;
  if (on_pass) on_pass(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), pass.looked_at, pass.placed.size());
  if (pass.more && on_more) on_more();  // capped: the rest in a pass of its own, after what waits
  if (Status s = StoreChanged(); !s.ok()) {
    cluster_.Unplace(pass);
    pending_events_.resize(events_before);
    next_event_seq_ = seq_before;
    StoreFailed(s);
    return;
  }
  for (JobId id : pass.placed) Launch(*cluster_.Find(id));
}

namespace {
// Wall-clock milliseconds as UTC: "2026-12-03T19:40:12.345Z".
std::string UtcTime(Millis t) {
  const std::time_t secs = static_cast<std::time_t>(t.value() / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char when[32];
  std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", when, t.value() % 1000);
}
}  // namespace

Result<std::string> Controller::DryRun(JobRecord r) {
  if (Status s = Validate(r); !s.ok()) return tl::unexpected(s);
  auto run = cluster_.DryRun(r.spec);
  if (!run) return tl::unexpected(run.error());
  nlohmann::json placement = nlohmann::json::array();
  std::string text = fmt::format("job ({}): would be submitted as {} task(s) of {} GPU(s)\n", r.spec.name, r.spec.tasks,
                                 r.spec.gpus_per_task);
  if (r.extras && r.extras->has_dependencies()) {
    text += fmt::format("  it would wait first for its dependencies: {}\n", DependencyText(*r.extras));
  }
  if (run->tasks) {
    for (const TaskAllocation& a : *run->tasks) {
      placement.push_back({{"node", fleet_.node(a.node).name}, {"gpus", GpuList(a.gpu_mask)}});
      text += fmt::format("  task {} would run on {} GPUs [{}]\n", placement.size() - 1, fleet_.node(a.node).name, GpuList(a.gpu_mask));
    }
  } else {
    const Decision& d = run->decision;
    text += fmt::format("  {} ({} nodes in the fleet)\n", d.outcome == Outcome::kNever ? "it could not run on this fleet" : "it would wait",
                        nodes_.size());
    for (const ReasonCount& rc : d.reasons()) text += fmt::format("  {} node(s): {}\n", rc.nodes, cluster_.Describe(rc.example, r));
  }
  r.spec.id = JobId{0};
  return nlohmann::json{{"dry_run", true}, {"job", nlohmann::json::parse(JobToJson(r, std::nullopt, false))}, {"placement", placement},
                        {"explain", text}}
      .dump();
}

std::string Controller::Explain(JobId id) const {
  const JobRecord* j = FindJob(id);
  if (!j) return {};
  std::string out = fmt::format("job {} ({}): {}\n", id.value(), j->spec.name, JobStateName(j->state));
  if (j->state != JobState::kQueued) {
    for (size_t t = 0; t < j->tasks.size(); ++t) {
      out += fmt::format("  task {} on {} GPUs [{}]\n", t, j->tasks[t].node, GpuList(j->tasks[t].allocation.gpu_mask));
    }
    if (!j->message.empty()) out += "  " + j->message + "\n";
    return out + TenantStanding(j->spec.tenant);
  }
  if (explain_capacity) {
    if (const std::string why = explain_capacity(id); !why.empty()) out += "  waits for " + why + "\n";
  }
  if (cluster_.held(id)) return out + "  " + j->message + "\n" + TenantStanding(j->spec.tenant);
  if (nodes_.empty()) return out + "  no node has registered yet\n";
  if (j->not_before_ms > clock_.Now().value()) {
    out += fmt::format("  backing off after {} failed attempts: placed again in {}\n", j->failures,
                       FormatMillis(Millis{j->not_before_ms - clock_.Now().value()}));
  }
  // Every node judged now (O(nodes), only when asked); a pass itself looks at few.
  const std::optional<Decision> d = cluster_.ExplainQueued(id);
  if (!d) return out + "  not yet considered by the scheduler\n";
  out += fmt::format("  {} ({} nodes in the fleet)\n", d->outcome == Outcome::kNever ? "cannot run on this fleet" : "waiting for resources",
                     nodes_.size());
  for (const ReasonCount& rc : d->reasons()) {
    out += fmt::format("  {} node(s): {}\n", rc.nodes, cluster_.Describe(rc.example, *j));
  }
  if (d->reasons().empty()) out += "  it fits now: the next pass places it\n";
  if (const Reservation* r = cluster_.ReservationOf(id)) {
    // Backfill: where and when it expects to start, as the running jobs end by their limits.
    std::string where;
    for (const TaskAllocation& a : r->tasks) {
      where += fmt::format("{}{} GPUs [{}]", where.empty() ? "" : ", ", fleet_.node(a.node).name, GpuList(a.gpu_mask));
    }
    const int64_t in = std::max<int64_t>(0, r->start.value() - clock_.Now().value());
    out += fmt::format("  reservation: starts by {} (in {}) on {}; jobs behind it start first only if they end before it\n",
                       UtcTime(r->start), FormatMillis(Millis{in}), where);
  }
  return out + TenantStanding(j->spec.tenant);
}

// Where a tenant stands: its quota and use per model, its weight, decayed usage and rank
// under fair share.
std::string Controller::TenantStanding(const std::string& tenant) const {
  if (tenant.empty()) return {};
  const std::vector<TenantRow> rows = cluster_.tenants().Rows(fleet_);
  auto it = std::find_if(rows.begin(), rows.end(), [&](const TenantRow& r) { return r.name == tenant; });
  if (it == rows.end()) return {};
  auto gpus = [](int64_t milli) { return fmt::format("{:g}", static_cast<double>(milli) / 1000); };
  std::string out = fmt::format("  tenant {}: weight {}, decayed usage {:.2f} GPU-h, fair-share rank {} of {}{}\n", it->name,
                                it->weight, it->decayed_gpu_ms / 3'600'000.0, it->rank, rows.size(),
                                it->cohort.empty() ? "" : ", cohort " + it->cohort);
  for (const TenantModelRow& m : it->models) {
    out += m.nominal < 0 ? fmt::format("    {}: uses {} (no quota)\n", m.model, gpus(m.used))
                         : fmt::format("    {}: uses {} of its quota {}, borrowed {}, lent {}\n", m.model, gpus(m.used),
                                       gpus(m.nominal), gpus(m.borrowed), gpus(m.lent));
  }
  return out;
}

}  // namespace gp
