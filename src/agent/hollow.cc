#include "agent/hollow.h"

#include "adapters/tokens.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <set>

#include "telemetry/gpu_source.h"
#include "wire/codec.h"

namespace gp {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

HttpResponse JsonReply(int status, std::string body) { return HttpResponse{status, std::move(body)}; }

}  // namespace

struct Hollow::Node {
  std::string name;
  std::string site;
  std::string credential;
  std::unique_ptr<AsyncHttpClient> client;
  std::unique_ptr<SimulatedGpuSource> gpus;
  std::vector<GpuDevice> devices;
  bool registered = false;
  bool stopped = false;
  bool busy = false;            // a request in flight or a retry waiting
  int64_t last_answer_ms = 0;   // the server's last answer (it renews the tasks' leases)
  int64_t backoff_ms = 200;
  bool telemetry_due = true;
  uint32_t busy_mask = 0;       // GPUs that running tasks use (their telemetry shows load)
  struct Task {
    int64_t started_ms = 0;
    int64_t end_ms = 0;
    uint16_t gpu_mask = 0;
    bool reported = false;      // its start was reported
  };
  std::map<TaskKey, Task> tasks;
  std::vector<TaskReport> ended;  // exited, not yet reported
  std::set<TaskKey> seen;         // every attempt this process started here
};

Hollow::Hollow(EventLoop& loop, HollowOptions options) : loop_(loop), o_(std::move(options)) {}

Hollow::~Hollow() {
  if (record_) std::fclose(record_);
}

Result<std::unique_ptr<Hollow>> Hollow::Create(EventLoop& loop, HollowOptions o) {
  if (o.nodes < 1 || o.nodes > 100'000) return InvalidArgument(fmt::format("--nodes must be 1..100000, got {}", o.nodes));
  if (o.sites < 1 || o.sites > o.nodes) return InvalidArgument(fmt::format("--sites must be 1..{} (the nodes), got {}", o.nodes, o.sites));
  if (o.join_token.empty()) return InvalidArgument("a join token is required (--join-token-file)");
  o.join_token = ParseJoinToken(o.join_token).secret;  // its CA hash is for TLS, which hollow agents do not speak
  if (o.duration.value() < 0) return InvalidArgument("--duration must not be negative");
  if (Status s = ValidateNodeName(o.prefix + "0"); !s.ok()) return InvalidArgument(fmt::format("--prefix: {}", s.message()));
  auto probe = SimulatedGpuSource::Parse(o.gpus, "hollow");
  if (!probe) return InvalidArgument(fmt::format("--gpus: {}", probe.error().message()));
  auto h = std::unique_ptr<Hollow>(new Hollow(loop, std::move(o)));
  if (!h->o_.record.empty()) {
    h->record_ = std::fopen(h->o_.record.c_str(), "a");
    if (!h->record_) return Error(StatusCode::kFailedPrecondition, fmt::format("--record {}: cannot open it", h->o_.record.string()));
  }
  const int width = static_cast<int>(std::to_string(h->o_.nodes - 1).size());
  for (int i = 0; i < h->o_.nodes; ++i) {
    auto n = std::make_unique<Node>();
    n->name = fmt::format("{}{:0{}}", h->o_.prefix, i, width);
    n->site = h->o_.sites == 1 ? "hollow-site" : fmt::format("hollow-site-{}", i % h->o_.sites);
    auto client = AsyncHttpClient::Create(loop, h->o_.server, h->o_.join_token);
    if (!client) return tl::unexpected(client.error());
    n->client = std::move(*client);
    auto g = SimulatedGpuSource::Parse(h->o_.gpus, n->name);
    n->gpus = std::make_unique<SimulatedGpuSource>(std::move(*g));
    n->devices = *n->gpus->Devices();
    h->by_name_[n->name] = n.get();
    h->nodes_.push_back(std::move(n));
  }
  h->counts_.nodes = h->o_.nodes;
  if (!h->o_.control_listen.empty()) {
    Hollow* self = h.get();
    auto port = loop.Listen(
        h->o_.control_listen, [self](HttpRequest r, Respond respond) { self->Handle(std::move(r), std::move(respond)); },
        [](const RequestHead&) { return Admission{.body_limit = 4096}; });
    if (!port) return tl::unexpected(port.error());
    h->control_port_ = *port;
  }
  return h;
}

void Hollow::Start() { RegisterMore(); }

// Registrations go out a few hundred at a time, as a fleet boots: never ten thousand
// connections opened in one instant.
void Hollow::RegisterMore() {
  while (registering_ < o_.connect_concurrency && next_to_register_ < nodes_.size()) {
    Node& n = *nodes_[next_to_register_++];
    ++registering_;
    Register(n);
  }
}

void Hollow::Register(Node& n) {
  if (n.stopped) return;
  n.busy = true;
  RegisterRequest r{.name = n.name, .site = n.site, .provider = o_.provider, .tier = "on-demand", .address = "127.0.0.1",
                    .cpu_cores = o_.cpu_cores, .memory_mib = o_.memory_mib, .gpu_source = "hollow", .gpus = n.devices,
                    .credential = n.credential, .max_tasks = o_.max_tasks};
  n.client->set_token(o_.join_token);
  n.client->Call("POST", "/v1/agent/register", RegisterToJson(r), Millis{30'000}, [this, &n](Result<HttpResponse> res) {
    n.busy = false;
    if (!res || res->status != 200) {
      ++counts_.errors;
      if (res && res->status != 503) {
        fmt::print(stderr, "gpupool hollow: {}: register: HTTP {}: {}\n", n.name, res->status, res->body.substr(0, 200));
      }
      n.backoff_ms = std::min<int64_t>(n.backoff_ms * 2, 5'000);
      return Retry(n, n.backoff_ms);
    }
    const nlohmann::json reply = nlohmann::json::parse(res->body, nullptr, false);
    if (reply.is_object()) {
      if (reply.contains("credential") && reply["credential"].is_string()) n.credential = reply["credential"].get<std::string>();
      if (reply.contains("lease_ms") && reply["lease_ms"].is_number_integer()) lease_ms_ = reply["lease_ms"].get<int>();
      if (reply.contains("interval_ms") && reply["interval_ms"].is_number_integer()) {
        server_interval_ms_ = reply["interval_ms"].get<int>();
      }
    }
    n.client->set_token(n.credential);
    if (!n.registered) {
      n.registered = true;
      ++counts_.registered;
      --registering_;
      RegisterMore();
    }
    n.backoff_ms = 200;
    n.last_answer_ms = NowMs();
    n.telemetry_due = true;
    Beat(n);
  });
}

void Hollow::Retry(Node& n, int64_t delay_ms) {
  n.busy = true;
  loop_.After(Millis{delay_ms}, [this, &n] {
    n.busy = false;
    if (n.stopped) return;
    if (n.credential.empty() || !n.registered) return Register(n);
    Beat(n);
  });
}

void Hollow::Record(const Node& n, uint64_t job, int task, int attempt, int64_t now) {
  if (record_) std::fprintf(record_, "%s %llu %d %d %lld\n", n.name.c_str(), static_cast<unsigned long long>(job), task, attempt,
                            static_cast<long long>(now));
}

void Hollow::Beat(Node& n) {
  if (n.stopped || n.busy) return;
  const int64_t now = NowMs();
  // A real task's supervisor stops it when its lease runs out (no answer from the server in
  // time); a hollow task does the same, and is reported lost.
  if (!n.tasks.empty() && now - n.last_answer_ms > lease_ms_) {
    for (const auto& [key, t] : n.tasks) {
      n.ended.push_back(TaskReport{.job = key.job, .task = key.task, .attempt = key.attempt, .state = TaskReport::State::kExited,
                                   .signal = 15, .started_ms = t.started_ms, .lost = true});
    }
    n.tasks.clear();
  }
  int64_t next_end = INT64_MAX;
  uint32_t mask = 0;
  for (auto it = n.tasks.begin(); it != n.tasks.end();) {
    if (it->second.end_ms <= now) {
      n.ended.push_back(TaskReport{.job = it->first.job, .task = it->first.task, .attempt = it->first.attempt,
                                   .state = TaskReport::State::kExited, .exit_code = 0, .started_ms = it->second.started_ms});
      it = n.tasks.erase(it);
      continue;
    }
    next_end = std::min(next_end, it->second.end_ms);
    mask |= it->second.gpu_mask;
    ++it;
  }
  if (mask != n.busy_mask) {
    // Telemetry that changed: the GPUs that run tasks show load (sent once, not every beat).
    for (const GpuDevice& d : n.devices) {
      const bool on = mask >> d.index & 1;
      (void)n.gpus->SetBusy(d.index, PerMille{on ? 950 : 0}, MiB{on ? d.memory.value() / 2 : 0});
    }
    n.busy_mask = mask;
    n.telemetry_due = true;
  }
  Heartbeat hb{.node = n.name, .telemetry = n.telemetry_due};
  if (hb.telemetry) {
    const int64_t busy = static_cast<int64_t>(__builtin_popcount(mask)) * 1000 / std::max<int64_t>(1, static_cast<int64_t>(n.devices.size()));
    hb.host = HostSample{.cpu_cores = o_.cpu_cores, .cpu_busy = PerMille{busy / 4},
                         .memory = MemoryInfo{.total = MiB{o_.memory_mib}, .available = MiB{o_.memory_mib - o_.memory_mib * busy / 4000}}};
    hb.gpus = *n.gpus->Sample();
  }
  hb.tasks = n.ended;
  for (auto& [key, t] : n.tasks) {
    hb.running.push_back(key);
    if (!t.reported) {
      hb.tasks.push_back(TaskReport{.job = key.job, .task = key.task, .attempt = key.attempt, .started_ms = t.started_ms});
    }
  }
  const int idle = std::max(static_cast<int>(o_.interval.value()), server_interval_ms_);
  hb.wait_ms = !hb.tasks.empty() ? 0 : static_cast<int>(std::clamp<int64_t>(next_end - now, 0, idle));
  const size_t reported_ends = n.ended.size();
  n.busy = true;
  n.client->Call("POST", "/v1/agent/heartbeat", HeartbeatToJson(hb), Millis{hb.wait_ms + 10'000},
                 [this, &n, reported_ends, telemetry = hb.telemetry, keys = hb.running](Result<HttpResponse> res) {
    n.busy = false;
    const int64_t at = NowMs();
    if (!res || res->status != 200) {
      if (++counts_.errors <= 20 || counts_.errors % 1000 == 0) {
        fmt::print(stderr, "gpupool hollow: {}: heartbeat: {} (errors so far: {})\n", n.name,
                   res ? fmt::format("HTTP {}: {}", res->status, res->body.substr(0, 200)) : res.error().message(), counts_.errors);
      }
      if (res && (res->status == 404 || res->status == 401)) {
        // The server forgot the node (a new store) or its credential: register again.
        return Register(n);
      }
      // Refused: the server's process is down and its host up, so nobody can give this
      // node's work away meanwhile: the leases are kept, as a real agent keeps them.
      if (!res && res.error().code() == StatusCode::kUnavailable) n.last_answer_ms = at;
      n.backoff_ms = std::min<int64_t>(n.backoff_ms * 2, 2'000);
      return Retry(n, n.backoff_ms);
    }
    n.backoff_ms = 200;
    n.last_answer_ms = at;
    ++counts_.heartbeats;
    if (telemetry) n.telemetry_due = false;
    counts_.ended += static_cast<int64_t>(reported_ends);
    n.ended.erase(n.ended.begin(), n.ended.begin() + static_cast<ptrdiff_t>(reported_ends));
    for (const TaskKey& k : keys) {
      if (auto it = n.tasks.find(k); it != n.tasks.end()) it->second.reported = true;
    }
    auto reply = ParseReply(res->body);
    if (!reply) {
      fmt::print(stderr, "gpupool hollow: {}: bad reply: {}\n", n.name, reply.error().message());
      return Retry(n, 200);
    }
    if (reply->interval_ms > 0) server_interval_ms_ = reply->interval_ms;
    for (const TaskKey& k : reply->cancel) {
      auto it = n.tasks.find(k);
      if (it == n.tasks.end()) continue;
      n.ended.push_back(TaskReport{.job = k.job, .task = k.task, .attempt = k.attempt, .state = TaskReport::State::kExited,
                                   .signal = 15, .started_ms = it->second.started_ms});
      n.tasks.erase(it);
    }
    for (const TaskLaunch& l : reply->start) {
      const TaskKey k{l.job, l.task, l.attempt};
      if (!n.seen.insert(k).second) {
        ++counts_.repeats;  // a real agent ignores a repeated launch too; the test counts it
        continue;
      }
      n.tasks[k] = Node::Task{.started_ms = at, .end_ms = at + o_.duration.value(), .gpu_mask = l.gpu_mask};
      ++counts_.started;
      Record(n, l.job, l.task, l.attempt, at);
    }
    Beat(n);
  });
}

Hollow::Counts Hollow::counts() const {
  Counts c = counts_;
  for (const auto& n : nodes_) {
    c.running += static_cast<int64_t>(n->tasks.size());
    if (n->stopped) c.stopped.push_back(n->name);
  }
  return c;
}

Status Hollow::StopNode(const std::string& name) {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return Status(StatusCode::kNotFound, fmt::format("no hollow node '{}'", name));
  it->second->stopped = true;  // its request in flight ends; no other follows
  return Status::Ok();
}

Status Hollow::ResumeNode(const std::string& name) {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return Status(StatusCode::kNotFound, fmt::format("no hollow node '{}'", name));
  Node& n = *it->second;
  if (!n.stopped) return Status::Ok();
  n.stopped = false;
  if (!n.busy) {
    if (n.registered) Beat(n);
    else Register(n);
  }
  return Status::Ok();
}

// GET /v1/hollow: the counts. POST /v1/hollow/nodes/NAME/stop|resume: a node's heartbeats.
void Hollow::Handle(HttpRequest r, Respond respond) {
  if (record_) std::fflush(record_);
  if (r.method == "GET" && r.path == "/v1/hollow") {
    const Counts c = counts();
    return respond(JsonReply(200, nlohmann::json{{"nodes", c.nodes}, {"registered", c.registered}, {"running", c.running},
                                                 {"started", c.started}, {"ended", c.ended}, {"repeats", c.repeats},
                                                 {"heartbeats", c.heartbeats}, {"errors", c.errors}, {"stopped", c.stopped}}
                                      .dump()));
  }
  const std::string prefix = "/v1/hollow/nodes/";
  if (r.method == "POST" && r.path.starts_with(prefix)) {
    const std::string rest = r.path.substr(prefix.size());
    const size_t slash = rest.find('/');
    if (slash != std::string::npos) {
      const std::string name = rest.substr(0, slash);
      const std::string verb = rest.substr(slash + 1);
      Status s = verb == "stop" ? StopNode(name) : verb == "resume" ? ResumeNode(name)
                                                                    : Status(StatusCode::kNotFound, "expected stop or resume");
      if (!s.ok()) return respond(JsonReply(404, ErrorJson(s.message())));
      return respond(JsonReply(200, nlohmann::json{{"node", name}, {"stopped", verb == "stop"}}.dump()));
    }
  }
  respond(JsonReply(404, ErrorJson("GET /v1/hollow, POST /v1/hollow/nodes/NAME/stop or /resume")));
}

}  // namespace gp
