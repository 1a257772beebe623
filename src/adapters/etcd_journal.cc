#include "adapters/etcd_journal.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace gp {

using Json = nlohmann::json;

namespace {

// etcd refuses a transaction of more than 128 operations (its --max-txn-ops default) or a
// request over 1.5 MiB; values travel base64-encoded (4/3 of their size).
constexpr size_t kMaxOps = 128;
constexpr size_t kMaxBytes = 700 * 1024;

size_t OpBytes(const EtcdOp& op) { return op.key.size() + op.value.size() + op.range_end.size() + 64; }

std::string EventJson(const EventRecord& e) {
  return Json{{"t", e.time_ms}, {"type", e.type}, {"subject", e.subject}, {"data", e.data}}.dump();
}

Result<EventRecord> ParseEvent(uint64_t seq, const std::string& text) {
  const Json j = Json::parse(text, nullptr, false);
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return Error(StatusCode::kFailedPrecondition, fmt::format("etcd: event {} is not an event record", seq));
  }
  return EventRecord{.seq = seq, .time_ms = j.value("t", int64_t{0}), .type = j["type"].get<std::string>(),
                     .subject = j.value("subject", std::string()), .data = j.value("data", std::string("{}"))};
}

std::string UsageJson(const UsageRecord& r) {
  return Json{{"start_ms", r.start_ms}, {"end_ms", r.end_ms}, {"kind", r.kind}, {"provider", r.provider}, {"offer", r.offer},
              {"tier", r.tier}, {"tenant", r.tenant}, {"node", r.node}, {"job", r.job}, {"gpu_ms", r.gpu_ms},
              {"usd_micro", r.usd_micro}}
      .dump();
}

std::optional<UsageRecord> ParseUsage(const std::string& text) {
  const Json j = Json::parse(text, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  try {
    return UsageRecord{.start_ms = j.value("start_ms", int64_t{0}), .end_ms = j.value("end_ms", int64_t{0}),
                       .kind = j.value("kind", std::string()), .provider = j.value("provider", std::string()),
                       .offer = j.value("offer", std::string()), .tier = j.value("tier", std::string()),
                       .tenant = j.value("tenant", std::string()), .node = j.value("node", std::string()),
                       .job = j.value("job", uint64_t{0}), .gpu_ms = j.value("gpu_ms", int64_t{0}),
                       .usd_micro = j.value("usd_micro", int64_t{0})};
  } catch (const Json::exception&) {
    return std::nullopt;
  }
}

std::string Digits(uint64_t n) { return fmt::format("{:020}", n); }

}  // namespace

EtcdJournal::EtcdJournal(EtcdClient& etcd, std::string prefix, EtcdFence fence, std::function<void(const std::string&)> deposed)
    : etcd_(etcd), prefix_(std::move(prefix)), fence_(std::move(fence)), deposed_(std::move(deposed)) {}

std::string EtcdJournal::JobKey(uint64_t id) const { return prefix_ + "/jobs/" + Digits(id); }
std::string EtcdJournal::EventKey(uint64_t seq) const { return prefix_ + "/events/" + Digits(seq); }

std::vector<EtcdOp> EtcdJournal::EventOps(const Events& events) const {
  std::vector<EtcdOp> ops;
  ops.reserve(events.size());
  for (const EventRecord& e : events) ops.push_back(EtcdOp::Put(EventKey(e.seq), EventJson(e)));
  return ops;
}

EtcdJournal::~EtcdJournal() {
  WaitForWrites();
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (writer_.joinable()) writer_.join();
}

void EtcdJournal::PutJobsLater(std::vector<std::pair<uint64_t, std::string>> jobs, Events events, WriteDone done) {
  std::lock_guard lock(mu_);
  if (!writer_.joinable()) {
    auto c = EtcdClient::Connect(etcd_.endpoints(), etcd_.timeout());
    if (!c) {
      done(c.error());
      return;
    }
    writer_etcd_ = std::move(*c);
    writer_ = std::thread([this] { WriterLoop(); });
  }
  queue_.push_back(Later{std::move(jobs), std::move(events), std::move(done)});
  wake_.notify_one();
}

void EtcdJournal::WriterLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left
    std::vector<Later> batch(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
    queue_.clear();
    writing_ = true;
    lock.unlock();
    std::vector<std::vector<EtcdOp>> units;
    for (const Later& l : batch) {
      for (auto& u : JobUnits(l.jobs, l.events)) units.push_back(std::move(u));
    }
    const Status s = Commit(units, writer_etcd_.get());
    for (Later& l : batch) l.done(s);
    lock.lock();
    writing_ = false;
    idle_.notify_all();
  }
}

void EtcdJournal::WaitForWrites() {
  std::unique_lock lock(mu_);
  idle_.wait(lock, [&] { return queue_.empty() && !writing_; });
}

Status EtcdJournal::CommitOne(std::vector<EtcdOp> ops, EtcdClient& client) {
  if (ops.empty()) return Status::Ok();
  if (is_deposed_) return Status(StatusCode::kFailedPrecondition, "this server no longer leads: it writes nothing");
  auto r = client.Txn({EtcdCreated{.key = fence_.key, .create_revision = fence_.create_revision}}, ops);
  if (!r) return r.error();
  ++transactions_;
  if (!r->succeeded) {
    if (is_deposed_.exchange(true)) return Status(StatusCode::kFailedPrecondition, "this server no longer leads");
    const std::string why = fmt::format("the leader key {} is no longer the one this server created at revision {}", fence_.key,
                                        fence_.create_revision);
    if (deposed_) deposed_(why);
    return Status(StatusCode::kFailedPrecondition, "this server no longer leads: " + why);
  }
  revision_ = r->revision;
  return Status::Ok();
}

Status EtcdJournal::Commit(const std::vector<std::vector<EtcdOp>>& units, EtcdClient* client) {
  EtcdClient& c = client ? *client : etcd_;
  if (!client) WaitForWrites();  // a write of the loop's own goes after those handed to the writer
  std::vector<EtcdOp> txn;
  size_t bytes = 0;
  for (const std::vector<EtcdOp>& unit : units) {
    size_t unit_bytes = 0;
    for (const EtcdOp& op : unit) unit_bytes += OpBytes(op);
    if (!txn.empty() && (txn.size() + unit.size() > kMaxOps || bytes + unit_bytes > kMaxBytes)) {
      if (Status s = CommitOne(std::move(txn), c); !s.ok()) return s;
      txn.clear();
      bytes = 0;
    }
    if (unit.size() > kMaxOps || unit_bytes > kMaxBytes) {
      return Status(StatusCode::kTooLarge, fmt::format("a record with its events is {} operations and {} bytes; etcd takes at most {} "
                                                       "and {} in one transaction",
                                                       unit.size(), unit_bytes, kMaxOps, kMaxBytes));
    }
    txn.insert(txn.end(), unit.begin(), unit.end());
    bytes += unit_bytes;
  }
  if (Status s = CommitOne(std::move(txn), c); !s.ok()) return s;
  // Every event of this write is committed now, and every earlier write's before it.
  const std::string events = prefix_ + "/events/";
  uint64_t top = 0;
  for (const std::vector<EtcdOp>& unit : units) {
    for (const EtcdOp& op : unit) {
      if (op.kind == EtcdOp::Kind::kPut && op.key.starts_with(events)) {
        top = std::max<uint64_t>(top, std::strtoull(op.key.c_str() + events.size(), nullptr, 10));
      }
    }
  }
  uint64_t seen = durable_seq_.load();
  while (top > seen && !durable_seq_.compare_exchange_weak(seen, top)) {
  }
  return Status::Ok();
}

Status EtcdJournal::PutJobs(const std::vector<std::pair<uint64_t, std::string>>& jobs, const Events& events) {
  return Commit(JobUnits(jobs, events));
}

std::vector<std::vector<EtcdOp>> EtcdJournal::JobUnits(const std::vector<std::pair<uint64_t, std::string>>& jobs,
                                                       const Events& events) const {
  // A job with the events about it: in one transaction, as SQLite's outbox has them.
  std::map<std::string, std::vector<const EventRecord*>> by_subject;
  for (const EventRecord& e : events) by_subject[e.subject].push_back(&e);
  std::vector<std::vector<EtcdOp>> units;
  units.reserve(jobs.size() + 1);
  for (const auto& [id, json] : jobs) {
    std::vector<EtcdOp> unit{EtcdOp::Put(JobKey(id), json)};
    if (auto it = by_subject.find(fmt::format("job/{}", id)); it != by_subject.end()) {
      for (const EventRecord* e : it->second) unit.push_back(EtcdOp::Put(EventKey(e->seq), EventJson(*e)));
      by_subject.erase(it);
    }
    units.push_back(std::move(unit));
  }
  for (const auto& [subject, list] : by_subject) {
    for (const EventRecord* e : list) units.push_back({EtcdOp::Put(EventKey(e->seq), EventJson(*e))});
  }
  return units;
}

Status EtcdJournal::PutNode(std::string_view name, std::string_view json, const Events& events) {
  std::vector<EtcdOp> unit{EtcdOp::Put(prefix_ + "/nodes/" + std::string(name), std::string(json))};
  for (EtcdOp& op : EventOps(events)) unit.push_back(std::move(op));
  if (unit.size() <= kMaxOps) return Commit({unit});
  // Many events with one node (a node's GPUs at once): the node first, then its events.
  std::vector<std::vector<EtcdOp>> units;
  for (EtcdOp& op : unit) units.push_back({std::move(op)});
  return Commit(units);
}

Status EtcdJournal::PutEvents(const Events& events) {
  std::vector<std::vector<EtcdOp>> units;
  for (EtcdOp& op : EventOps(events)) units.push_back({std::move(op)});
  return Commit(units);
}

Status EtcdJournal::PutMeta(std::string_view key, std::string_view value) {
  const std::string k = prefix_ + "/meta/" + std::string(key);
  return Commit({{value.empty() ? EtcdOp::Delete(k) : EtcdOp::Put(k, std::string(value))}});
}

Status EtcdJournal::Scan(const std::string& prefix, const std::string& start, const std::function<Status(const EtcdKv&)>& each,
                         int64_t& revision) {
  const std::string end = EtcdClient::PrefixEnd(prefix);
  std::string from = start.empty() ? prefix : start;
  for (;;) {
    auto page = etcd_.Range(from, EtcdRangeOptions{.range_end = end, .limit = 1000, .revision = revision});
    if (!page) return page.error();
    if (revision == 0) revision = page->revision;  // every page from the same snapshot
    for (const EtcdKv& kv : page->kvs) {
      if (Status s = each(kv); !s.ok()) return s;
    }
    if (!page->more || page->kvs.empty()) return Status::Ok();
    from = page->kvs.back().key + std::string(1, '\0');
  }
}

Result<JournalContents> EtcdJournal::Load() {
  JournalContents c;
  int64_t revision = 0;
  const std::string jobs = prefix_ + "/jobs/";
  Status s = Scan(jobs, "", [&](const EtcdKv& kv) {
    const uint64_t id = std::strtoull(kv.key.c_str() + jobs.size(), nullptr, 10);
    if (id == 0) return Status(StatusCode::kFailedPrecondition, fmt::format("etcd: key '{}' names no job", kv.key));
    c.jobs[id] = kv.value;
    return Status::Ok();
  }, revision);
  if (!s.ok()) return tl::unexpected(s);
  // Nodes by name and meta by key: the rest of the key is the name.
  for (auto [what, into] : {std::pair{"/nodes/", &c.nodes}, std::pair{"/meta/", &c.meta}}) {
    const std::string start = prefix_ + what;
    s = Scan(start, "", [&](const EtcdKv& kv) {
      (*into)[kv.key.substr(start.size())] = kv.value;
      return Status::Ok();
    }, revision);
    if (!s.ok()) return tl::unexpected(s);
  }
  const std::string events = prefix_ + "/events/";
  for (bool descend : {false, true}) {
    auto one = etcd_.Range(events, EtcdRangeOptions{.range_end = EtcdClient::PrefixEnd(events), .limit = 1, .revision = revision,
                                                    .descend = descend});
    if (!one) return tl::unexpected(one.error());
    if (one->kvs.empty()) continue;
    const uint64_t seq = std::strtoull(one->kvs[0].key.c_str() + events.size(), nullptr, 10);
    (descend ? c.last_event_seq : c.first_event_seq) = seq;
  }
  revision_ = revision;
  durable_seq_ = c.last_event_seq;
  return c;
}

Result<Events> EtcdEventsAfter(EtcdClient& etcd, const std::string& prefix, uint64_t after, size_t limit, uint64_t durable) {
  const std::string events = prefix + "/events/";
  auto page = etcd.Range(events + Digits(after + 1), EtcdRangeOptions{.range_end = EtcdClient::PrefixEnd(events),
                                                                      .limit = static_cast<int64_t>(std::min<size_t>(limit, 10'000))});
  if (!page) return tl::unexpected(page.error());
  Events out;
  for (const EtcdKv& kv : page->kvs) {
    const uint64_t seq = std::strtoull(kv.key.c_str() + events.size(), nullptr, 10);
    if (seq > durable) break;  // a write still under way may hold earlier ones
    auto e = ParseEvent(seq, kv.value);
    if (!e) return tl::unexpected(e.error());
    out.push_back(std::move(*e));
  }
  return out;
}

Result<Events> EtcdJournal::EventsAfter(uint64_t after, size_t limit) {
  return EtcdEventsAfter(etcd_, prefix_, after, limit, durable_seq_.load());
}

Status EtcdJournal::PruneEvents(uint64_t up_to) { return Commit({{EtcdOp::Delete(EventKey(0), EventKey(up_to + 1))}}); }

Status EtcdJournal::PutUsage(const std::vector<UsageRecord>& rows) {
  std::vector<std::vector<EtcdOp>> units;
  for (const UsageRecord& r : rows) {
    const std::string key = fmt::format("{}/usage/{:020}/{:020}/{}/{}/{}", prefix_, r.end_ms, r.start_ms, r.node, r.job, r.kind);
    units.push_back({EtcdOp::Put(key, UsageJson(r))});
  }
  return Commit(units);
}

Result<std::vector<UsageTotal>> EtcdJournal::UsageTotals(int64_t since_ms, const std::vector<std::string>& by) {
  std::vector<UsageRecord> rows;
  const std::string usage = prefix_ + "/usage/";
  int64_t revision = 0;
  // Keys start with the end time: the scan starts at `since_ms`.
  Status s = Scan(usage, fmt::format("{}{:020}", usage, std::max<int64_t>(0, since_ms)), [&](const EtcdKv& kv) {
    if (auto r = ParseUsage(kv.value)) rows.push_back(std::move(*r));
    return Status::Ok();
  }, revision);
  if (!s.ok()) return tl::unexpected(s);
  return SumUsage(rows, since_ms, by);
}

Status EtcdJournal::Maintain(int64_t defrag_bytes) {
  if (compact_to_ > 0) {
    if (Status s = etcd_.Compact(compact_to_); !s.ok() && s.message().find("compacted") == std::string::npos) return s;
  }
  compact_to_ = revision_;
  if (defrag_bytes > 0) {
    auto size = etcd_.DbSize();
    if (!size) return size.error();
    if (*size > defrag_bytes) return etcd_.Defragment();
  }
  return Status::Ok();
}

}  // namespace gp
