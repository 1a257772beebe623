// The API's handlers, one per route of docs/api.md, over one routing table (about 650 lines: the
// table and the handlers it names stay together so that every route, its authorisation and its
// status codes read in one place).
#include "controller/api.h"

#include "adapters/pki.h"
#include "controller/autoscaler.h"

#include "core/units.h"
#include "adapters/tokens.h"

#include <chrono>

#include <fmt/format.h>

#include <charconv>
#include <optional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace gp {
namespace {

constexpr size_t kMaxPage = 1000;  // jobs per page of GET /v1/jobs

HttpResponse Json(int status, std::string body) { return HttpResponse{status, std::move(body)}; }
HttpResponse Fail(int status, std::string_view message) { return HttpResponse{status, ErrorJson(message)}; }

int HttpStatusOf(const Status& s) {
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kParse: return 400;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kFailedPrecondition: return 409;
    case StatusCode::kPermissionDenied: return 403;
    case StatusCode::kTooLarge: return 413;
    case StatusCode::kUnavailable: return 503;
    default: return 500;
  }
}

// A query number in lo..hi; nullopt when absent, an error text when malformed.
template <typename T>
std::optional<std::string> QueryNumber(const HttpRequest& r, const char* key, T& out, T lo, T hi) {
  auto it = r.query.find(key);
  if (it == r.query.end()) return std::nullopt;
  T v{};
  auto [p, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), v);
  if (ec != std::errc() || p != it->second.data() + it->second.size() || v < lo || v > hi) {
    return fmt::format("{}: expected a whole number {}..{}", key, lo, hi);
  }
  out = v;
  return std::nullopt;
}

bool PublicPath(std::string_view method, std::string_view path) {
  return (path == "/metrics" && method == "GET") || (path == "/v1/ca" && method == "GET") || path == "/" || path == "/index.html" || path == "/login" ||
         path == "/logout" || path.starts_with("/assets/");
}

std::vector<std::string_view> Split(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    if (path.front() == '/') {
      path.remove_prefix(1);
      continue;
    }
    const size_t slash = path.find('/');
    parts.push_back(path.substr(0, slash));
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash);
  }
  return parts;
}

std::optional<JobId> ParseId(std::string_view s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v == 0) return std::nullopt;
  return JobId{v};
}


}  // namespace

Api::Api(Controller& controller, EventLoop& loop, ApiOptions options)
    : c_(controller), loop_(loop), options_(std::move(options)) {
  c_.on_work = [this](const std::string& node) { Wake(node); };
  loop_.Every(kPollTick, [this] {
    if (!due_.empty() && due_.begin()->first <= SteadyMs()) ScheduleDrain();
  });
  // Group commit: the submissions that arrive in one turn of the loop are stored together
  // once the handlers that are ready have run.
  c_.on_staged = [this] {
    if (commit_pending_) return;
    commit_pending_ = true;
    loop_.Post([this] {
      commit_pending_ = false;
      c_.CommitSubmits();
      c_.CommitHeartbeats();
    });
  };
  c_.defer = [this](std::function<void()> fn) { loop_.Post(std::move(fn)); };
  c_.node_speaking = [this](const std::string& node) {
    auto it = links_.find(node);
    if (it == links_.end()) return false;
    auto link = it->second.lock();
    return link && link->InputWaiting();
  };
  c_.on_more = [this] { Poke(); };
  decision_seconds_ = &prometheus::BuildHistogram()
                           .Name("gpupool_schedule_decision_seconds")
                           .Help("Wall time of one scheduling pass (all queued jobs decided).")
                           .Register(*registry_)
                           .Add({}, prometheus::Histogram::BucketBoundaries{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                                            0.025, 0.05, 0.1, 0.25, 0.5, 1});
  pass_jobs_ = &prometheus::BuildHistogram()
                    .Name("gpupool_schedule_pass_jobs")
                    .Help("Queued jobs looked at by one scheduling pass.")
                    .Register(*registry_)
                    .Add({}, prometheus::Histogram::BucketBoundaries{1, 10, 100, 1000, 10000, 100000});
  beats_held_ = &prometheus::BuildCounter()
                     .Name("gpupool_heartbeats_held_total")
                     .Help("Heartbeats held at their header because too many were waiting (back-pressure on agents).")
                     .Register(*registry_)
                     .Add({});
  detection_seconds_ = &prometheus::BuildHistogram()
                            .Name("gpupool_failure_detection_seconds")
                            .Help("Silence of a node, from the server's last answer, when it was declared down.")
                            .Register(*registry_)
                            .Add({}, prometheus::Histogram::BucketBoundaries{0.5, 1, 1.5, 2, 3, 5, 10, 30, 60});
  c_.on_pass = [this](double seconds, size_t looked_at, size_t) {
    decision_seconds_->Observe(seconds);
    pass_jobs_->Observe(static_cast<double>(looked_at));
  };
  c_.on_down = [this](const std::string&, double seconds) { detection_seconds_->Observe(seconds); };
  // The operator hears of a failed store (or an inconsistency) once, on the server's stderr.
  c_.on_store_error = [](const Status& s) { fmt::print(stderr, "gpupool server: {}\n", s.message()); };
  c_.on_stall = [](int64_t gap_ms) {
    fmt::print(stderr, "gpupool server: the server's loop stalled for {} ms (a slow disk, a swapped page, a long request); "
                       "no node is blamed for the silence\n", gap_ms);
  };
  c_.on_events = [this] {
    AnswerEventWaiters();
    for (const auto& fn : event_listeners_) fn();
  };
}

namespace {
std::string Ndjson(const Events& events, std::string_view source) {
  std::string out;
  for (const EventRecord& e : events) out += EventToCloudEvent(e, source) + "\n";
  return out;
}
}  // namespace

bool Api::EventOfTenant(const EventRecord& e, const std::string& tenant) const {
  if (!e.type.starts_with("job.") || !e.subject.starts_with("job/")) return false;
  auto id = ParseId(std::string_view(e.subject).substr(4));
  if (!id) return false;
  if (const JobRecord* j = c_.FindJob(*id)) return j->spec.tenant == tenant;
  const std::optional<JobRecord> element = c_.PendingElement(*id);
  return element && element->spec.tenant == tenant;
}

Result<std::pair<Events, uint64_t>> Api::EventsFor(const Caller& caller, uint64_t since, size_t limit) const {
  for (;;) {
    auto page = c_.EventsAfter(since, limit);
    if (!page) return tl::unexpected(page.error());
    if (caller.kind != Caller::Kind::kTenant || page->empty()) {
      const uint64_t last = page->empty() ? since : page->back().seq;
      return std::pair{std::move(*page), last};
    }
    Events mine;
    for (EventRecord& e : *page) {
      if (EventOfTenant(e, caller.tenant)) mine.push_back(std::move(e));
    }
    const uint64_t last = page->back().seq;
    if (!mine.empty() || page->size() < limit) return std::pair{std::move(mine), last};
    since = last;  // a page of other tenants' events: read on
  }
}

void Api::EventsRoute(const HttpRequest& r, const Caller& caller, Respond respond) {
  uint64_t since = 0;
  size_t limit = 1000;
  Millis wait{0};
  if (QueryNumber(r, "since", since, uint64_t{0}, UINT64_MAX)) return respond(Fail(400, "since: expected an event number (0: from the start)"));
  // Pages of at most 10,000: `since` is the cursor (the last event's sequence).
  if (auto e = QueryNumber(r, "limit", limit, size_t{1}, size_t{10'000})) return respond(Fail(400, *e));
  if (auto it = r.query.find("wait"); it != r.query.end()) {
    auto d = ParseDuration(it->second);
    if (!d || d->value() > 300'000) return respond(Fail(400, "wait: expected a duration up to 5m, e.g. 30s"));
    wait = *d;
  }
  if (since > 0 && since + 1 < c_.first_event_seq()) {  // since=0: from the oldest kept
    return respond(Fail(410, fmt::format("events up to {} were pruned (gpupool server --events-retain); the oldest kept is {}: "
                                         "resume from since={}, or read the current state first",
                                         c_.first_event_seq() - 1, c_.first_event_seq(), c_.first_event_seq() - 1)));
  }
  auto read = EventsFor(caller, since, limit);
  if (!read) return respond(Fail(500, read.error().message()));
  if (!read->first.empty() || wait.value() == 0) {
    return respond(HttpResponse{200, Ndjson(read->first, options_.event_source), "application/x-ndjson"});
  }
  since = read->second;  // a tenant's wait starts past the others' events already read
  // Nothing yet: hold the request until an event is stored or the wait ends.
  const uint64_t id = next_waiter_++;
  auto cancel = loop_.After(wait, [this, id] {
    auto it = event_waiters_.find(id);
    if (it == event_waiters_.end()) return;
    Respond done = std::move(it->second.respond);
    event_waiters_.erase(it);
    done(HttpResponse{200, "", "application/x-ndjson"});
  });
  event_waiters_[id] = EventWaiter{since, limit, caller, std::move(respond), std::move(cancel)};
}

void Api::AnswerEventWaiters() {
  if (event_waiters_.empty()) return;
  auto waiters = std::move(event_waiters_);
  event_waiters_.clear();
  for (auto& [id, w] : waiters) {
    w.cancel_timer();
    auto read = EventsFor(w.caller, w.since, w.limit);
    if (!read) {
      w.respond(Fail(500, read.error().message()));
    } else if (read->first.empty() && w.caller.kind == Caller::Kind::kTenant) {
      // Only other tenants' events came: this one waits on, from past them.
      const uint64_t again = next_waiter_++;
      w.since = read->second;
      event_waiters_[again] = std::move(w);
    } else {
      w.respond(HttpResponse{200, Ndjson(read->first, options_.event_source), "application/x-ndjson"});
    }
  }
}

std::string Api::Metrics() const {
  Families out = registry_->Collect();
  c_.CollectMetrics(out);
  for (const auto& fn : metric_sources_) fn(out);
  std::string text = SerializeText(out);
  c_.WriteNodeMetrics(text, c_.node_count() <= options_.metrics_gpu_series_nodes);
  return text;
}

std::string Api::IssueLoginCode() {
  auto code = NewSecret();
  if (!code) return {};
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  login_codes_[*code] = now;
  return *code;
}

void Api::Poke() {
  if (tick_pending_) return;
  tick_pending_ = true;
  loop_.Post([this] {
    tick_pending_ = false;
    c_.Schedule();
    c_.FlushEvents();
  });
}

void Api::Wake(const std::string& node) {
  // Answered with the agents' work (DrainBeats), after the current handler has finished its
  // changes (the outbox is complete then).
  if (parked_.count(node) && woken_.insert(node).second) ScheduleDrain();
}

std::string Api::ReplyText(HeartbeatReply reply) const {
  reply.epoch = c_.epoch();
  return ReplyToJson(reply);
}

void Api::Unpark(const std::string& node, bool always) {
  auto it = parked_.find(node);
  if (it == parked_.end() || (!always && !c_.HasWork(node))) return;
  Parked p = std::move(it->second);
  parked_.erase(it);
  due_.erase({p.deadline_ms, node});
  p.respond(Json(200, ReplyText(c_.TakeWork(node))));
}

void Api::ScheduleDrain() {
  if (draining_) return;
  draining_ = true;
  loop_.Post([this] { DrainBeats(); });
}

int64_t Api::SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string Api::CookieToken(std::string_view cookie) const {
  constexpr std::string_view kName = "gpupool_token=";
  std::string_view c = cookie;
  while (!c.empty()) {
    const size_t semi = c.find(';');
    std::string_view part = c.substr(0, semi);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    if (part.starts_with(kName)) return std::string(part.substr(kName.size()));
    c = semi == std::string_view::npos ? std::string_view() : c.substr(semi + 1);
  }
  return {};
}

namespace {

// The login form: shown at / without a session, and after a wrong token.
HttpResponse LoginPage(std::string_view error) {
  std::string html = R"(<!doctype html><html lang="en"><head><meta charset="utf-8"><title>gpupool: sign in</title>
<style>body{font:15px system-ui,sans-serif;background:#0f1419;color:#d8e0e8;display:grid;place-items:center;height:100vh;margin:0}
form{background:#161d25;border:1px solid #263241;border-radius:8px;padding:24px;width:380px}
input{width:100%;box-sizing:border-box;padding:8px;margin:8px 0 12px;background:#0a0d11;color:#d8e0e8;border:1px solid #263241}
button{padding:8px 16px}.err{color:#e5534b}code{color:#8b98a6}</style></head><body>
<form method="post" action="/login"><h2>gpupool</h2>
<label for="token">Token (the admin's or a tenant's)</label><input id="token" name="token" type="password" autocomplete="current-password" autofocus>
<button type="submit">Sign in</button>)";
  if (!error.empty()) html += "<p class=\"err\">" + std::string(error) + "</p>";
  html += "<p><code>cat DATA_DIR/admin.token</code>, or open the link the server printed.</p></form></body></html>";
  return HttpResponse{error.empty() ? 200 : 401, std::move(html), "text/html; charset=utf-8"};
}

std::string ContentTypeOf(const std::filesystem::path& p) {
  const std::string ext = p.extension().string();
  if (ext == ".js") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".html") return "text/html; charset=utf-8";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  if (ext == ".ico") return "image/x-icon";
  return "application/octet-stream";
}

std::optional<std::string> ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return std::move(ss).str();
}

}  // namespace

bool Api::WebRoute(const HttpRequest& r, const Respond& respond) const {
  const bool page = r.path == "/" || r.path == "/index.html";
  if (!page && r.path != "/login" && r.path != "/logout" && !r.path.starts_with("/assets/")) return false;
  auto session = [](const std::string& token, int max_age) {
    return HttpResponse{303, "", "text/plain", {{"Location", "/"},
        {"Set-Cookie", fmt::format("gpupool_token={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}", token, max_age)}}};
  };
  if (r.path == "/logout") {
    respond(session("", 0));
    return true;
  }
  if (r.path.starts_with("/assets/")) {
    const std::string name = r.path.substr(8);
    if (options_.web_dir.empty() || name.empty() || name.find("..") != std::string::npos || name.find('/') != std::string::npos) {
      respond(Fail(404, "no such file"));
      return true;
    }
    auto data = ReadFile(options_.web_dir / "assets" / name);
    HttpResponse res{data ? 200 : 404, data ? std::move(*data) : "no such file", ContentTypeOf(name)};
    if (data) res.headers.emplace_back("Cache-Control", "public, max-age=31536000, immutable");  // names carry a hash
    respond(std::move(res));
    return true;
  }
  // The token, from the link (?token=) or the form, becomes a cookie (as Jupyter does).
  std::string offered;
  if (r.path == "/login" && r.method == "POST") {
    for (const auto& [k, v] : ParseForm(r.body)) {
      if (k == "token") offered = v;
    }
    if (!SameSecret(offered, options_.admin_token) && TenantCaller(offered).kind != Caller::Kind::kTenant) {
      respond(LoginPage("That token is not this server's admin token, nor a tenant's."));
      return true;
    }
    respond(session(offered, 30 * 24 * 3600));
    return true;
  }
  if (auto code = r.query.find("code"); page && code != r.query.end()) {
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
    auto it = login_codes_.find(code->second);
    const bool fresh = it != login_codes_.end() && now - it->second < 15 * 60 * 1000;
    if (it != login_codes_.end()) login_codes_.erase(it);  // one use, whatever happens
    respond(fresh ? session(options_.admin_token, 30 * 24 * 3600)
                  : LoginPage("That sign-in link was used already or has expired; sign in with the admin token."));
    return true;
  }
  if (auto t = r.query.find("token"); page && t != r.query.end()) {
    respond(SameSecret(t->second, options_.admin_token) || TenantCaller(t->second).kind == Caller::Kind::kTenant
                ? session(t->second, 30 * 24 * 3600)
                : LoginPage("That token is not this server's admin token, nor a tenant's."));
    return true;
  }
  if (!page) {
    respond(Fail(404, "no such page"));
    return true;
  }
  if (const std::string token = CookieToken(r.cookie);
      !SameSecret(token, options_.admin_token) && TenantCaller(token).kind != Caller::Kind::kTenant) {
    respond(LoginPage(""));
    return true;
  }
  auto index = options_.web_dir.empty() ? std::nullopt : ReadFile(options_.web_dir / "index.html");
  if (!index) {
    respond(HttpResponse{503, "The dashboard is not built: run `make web` (web/dist), or pass gpupool server --web-dir DIR.\n",
                         "text/plain; charset=utf-8"});
    return true;
  }
  respond(HttpResponse{200, std::move(*index), "text/html; charset=utf-8", {{"Cache-Control", "no-store"}}});
  return true;
}

Api::Caller Api::TenantCaller(std::string_view token) const {
  const int64_t now = c_.Now().value();
  auto t = c_.access().Who(token, now);
  if (!t) return {};
  return Caller{.kind = Caller::Kind::kTenant, .tenant = t->tenant, .role = t->role, .token_id = t->id, .token_name = t->name};
}

std::string Api::ActorOf(const Caller& caller) {
  switch (caller.kind) {
    case Caller::Kind::kAdmin: return nlohmann::json{{"kind", "admin"}}.dump();
    case Caller::Kind::kTenant:
      return nlohmann::json{{"kind", "tenant"}, {"tenant", caller.tenant}, {"token", caller.token_id}, {"name", caller.token_name},
                            {"role", RoleName(caller.role)}}
          .dump();
    default: return "";
  }
}

Api::Caller Api::Identify(std::string_view authorization, std::string_view cookie) const {
  constexpr std::string_view kBearer = "Bearer ";
  // The dashboard's session: the admin's or a tenant's token in an HttpOnly, SameSite=Strict cookie.
  if (authorization.empty() && !cookie.empty()) {
    const std::string token = CookieToken(cookie);
    if (SameSecret(token, options_.admin_token)) return Caller{.kind = Caller::Kind::kAdmin};
    return TenantCaller(token);
  }
  if (!authorization.starts_with(kBearer)) return {};
  const std::string_view token = authorization.substr(kBearer.size());
  if (SameSecret(token, options_.admin_token)) return Caller{.kind = Caller::Kind::kAdmin};
  // The join token as given to agents may carry the CA's hash after its secret (kubeadm's).
  if (SameSecret(ParseJoinToken(token).secret, options_.join_token)) return Caller{.kind = Caller::Kind::kJoin};
  if (auto node = c_.NodeOfCredential(token)) return Caller{.kind = Caller::Kind::kNode, .node = *node};
  return TenantCaller(token);
}

namespace {
// Where a tenant stands in the scheduler: per model its quota, use, borrowed and lent (GPUs),
// its decayed usage (GPU-hours) and its rank under fair share (1 goes first).
nlohmann::json TenantRowJson(const TenantRow& r) {
  nlohmann::json models = nlohmann::json::array();
  auto gpus = [](int64_t milli) { return static_cast<double>(milli) / 1000; };
  for (const TenantModelRow& m : r.models) {
    nlohmann::json one{{"model", m.model}, {"used", gpus(m.used)}, {"borrowed", gpus(m.borrowed)}, {"lent", gpus(m.lent)}};
    if (m.nominal >= 0) one["quota"] = gpus(m.nominal);  // none: no quota, unlimited
    if (m.borrow_limit) one["borrow_limit"] = gpus(*m.borrow_limit);
    if (m.lend_limit) one["lend_limit"] = gpus(*m.lend_limit);
    models.push_back(std::move(one));
  }
  return nlohmann::json{{"models", models}, {"gpus_held", gpus(r.gpu_milli)},
                        {"decayed_gpu_hours", r.decayed_gpu_ms / 3'600'000.0}, {"fair_share", r.fair_share / 3'600'000.0},
                        {"rank", r.rank}};
}

nlohmann::json TokenToJson(const TokenInfo& t) {
  return nlohmann::json{{"id", t.id}, {"name", t.name}, {"tenant", t.tenant}, {"role", RoleName(t.role)}, {"created_ms", t.created_ms},
                        {"expires_ms", t.expires_ms}, {"revoked", t.revoked}};
}
}  // namespace

// Tenants and tokens: the admin makes, lists and ends them; a tenant's token lists its own
// tenant only.
void Api::AccessRoute(const HttpRequest& r, const Caller& caller, const std::vector<std::string_view>& p, Respond& respond) {
  const std::string& m = r.method;
  Access& access = c_.access();
  const int64_t now = c_.Now().value();
  auto body = [&]() -> Result<nlohmann::json> {
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return Error(StatusCode::kInvalidArgument, "malformed JSON; expected an object");
    return j;
  };
  auto text = [](const nlohmann::json& j, const char* key) -> Result<std::string> {
    if (!j.contains(key) || j[key].is_null()) return std::string();
    if (!j[key].is_string()) return Error(StatusCode::kInvalidArgument, fmt::format("field '{}': expected a string", key));
    return j[key].get<std::string>();
  };
  if (p[1] == "tenants") {
    if (p.size() == 2 && m == "GET") {
      nlohmann::json list = nlohmann::json::array();
      const auto use = c_.TenantsInUse();
      std::map<std::string, TenantRow> rows;
      for (TenantRow& row : c_.tenant_book().Rows(c_.fleet())) rows[row.name] = std::move(row);
      for (const Tenant& t : access.Tenants()) {
        if (caller.kind == Caller::Kind::kTenant && t.name != caller.tenant) continue;
        nlohmann::json one = TenantJson(t);
        if (auto row = rows.find(t.name); row != rows.end()) one["share"] = TenantRowJson(row->second);
        auto u = use.find(t.name);
        one["in_use"] = u == use.end() ? nlohmann::json::object() : nlohmann::json(u->second.gpus);
        one["running"] = u == use.end() ? 0 : u->second.running;
        one["queued"] = u == use.end() ? 0 : u->second.queued;
        list.push_back(std::move(one));
      }
      return respond(Json(200, nlohmann::json{{"tenants", list}}.dump()));
    }
    // POST a new tenant; PATCH an existing one (the fields given replace its own).
    const bool create = p.size() == 2 && m == "POST";
    if (create || (p.size() == 3 && m == "PATCH")) {
      auto j = body();
      if (!j) return respond(Fail(400, j.error().message()));
      Tenant base;
      if (!create) {
        const Tenant* was = access.FindTenant(std::string(p[2]));
        if (!was) return respond(Fail(404, fmt::format("no tenant '{}'", p[2])));
        if (j->contains("name") && (*j)["name"] != was->name) return respond(Fail(400, "field 'name': a tenant cannot be renamed"));
        base = *was;
      }
      auto t = TenantFromJson(*j, std::move(base));
      if (!t) return respond(Fail(400, t.error().message()));
      // As the scheduler will apply it with every other tenant (cohorts, orders): refused
      // before anything is stored.
      std::vector<TenantConfig> all;
      for (const Tenant& o : access.Tenants()) {
        if (o.name != t->name) all.push_back(ConfigOf(o));
      }
      all.push_back(ConfigOf(*t));
      if (Status s = c_.CheckTenants(all); !s.ok()) return respond(Fail(400, s.message()));
      auto made = create ? access.CreateTenant(std::move(*t), now) : access.UpdateTenant(std::move(*t));
      if (!made) return respond(Fail(HttpStatusOf(made.error()), made.error().message()));
      if (Status s = c_.ApplyTenants(); !s.ok()) return respond(Fail(500, s.message()));
      c_.Emit(create ? "tenant.created" : "tenant.updated", "tenant/" + made->name, TenantJson(*made).dump());
      return respond(Json(create ? 201 : 200, TenantJson(*made).dump()));
    }
    if (p.size() == 3 && m == "GET") {
      const Tenant* t = access.FindTenant(std::string(p[2]));
      if (!t || (caller.kind == Caller::Kind::kTenant && t->name != caller.tenant)) {
        return respond(Fail(404, fmt::format("no tenant '{}'", p[2])));
      }
      return respond(Json(200, TenantJson(*t).dump()));
    }
    if (p.size() == 3 && m == "DELETE") {
      if (Status s = access.DeleteTenant(std::string(p[2])); !s.ok()) return respond(Fail(HttpStatusOf(s), s.message()));
      if (Status s = c_.ApplyTenants(); !s.ok()) return respond(Fail(500, s.message()));
      c_.Emit("tenant.deleted", "tenant/" + std::string(p[2]), nlohmann::json{{"tenant", p[2]}}.dump());
      return respond(Json(200, nlohmann::json{{"deleted", p[2]}}.dump()));
    }
  }
  if (p[1] == "tokens" && caller.kind == Caller::Kind::kAdmin) {
    if (p.size() == 2 && m == "GET") {
      nlohmann::json list = nlohmann::json::array();
      for (const TokenInfo& t : access.Tokens()) list.push_back(TokenToJson(t));
      return respond(Json(200, nlohmann::json{{"tokens", list}}.dump()));
    }
    if (p.size() == 2 && m == "POST") {
      auto j = body();
      if (!j) return respond(Fail(400, j.error().message()));
      auto tenant_name = text(*j, "tenant");
      auto role_text = text(*j, "role");
      auto name = text(*j, "name");
      auto ttl_text = text(*j, "ttl");
      for (const auto* v : {&tenant_name, &role_text, &name, &ttl_text}) {
        if (!*v) return respond(Fail(400, v->error().message()));
      }
      if (tenant_name->empty()) return respond(Fail(400, "field 'tenant': required"));
      auto role = ParseRole(role_text->empty() ? "user" : *role_text);
      if (!role) return respond(Fail(400, "field '" + role.error().message()));
      int64_t ttl = 0;
      if (!ttl_text->empty()) {
        auto d = ParseDuration(*ttl_text);
        if (!d || d->value() <= 0) return respond(Fail(400, "field 'ttl': expected a duration such as 90d or 12h"));
        ttl = d->value();
      }
      auto made = access.CreateToken(*tenant_name, *role, *name, ttl, now);
      if (!made) {
        return respond(Fail(made.error().code() == StatusCode::kNotFound ? 400 : HttpStatusOf(made.error()), made.error().message()));
      }
      nlohmann::json out = TokenToJson(made->second);
      c_.Emit("token.created", "token/" + made->second.id, out.dump());  // without the secret
      out["token"] = made->first;  // shown this once; the server keeps its hash only
      return respond(Json(201, out.dump()));
    }
    if ((p.size() == 3 && m == "DELETE") || (p.size() == 4 && p[3] == "revoke" && m == "POST")) {
      if (Status s = access.Revoke(std::string(p[2])); !s.ok()) return respond(Fail(HttpStatusOf(s), s.message()));
      c_.Emit("token.revoked", "token/" + std::string(p[2]), nlohmann::json{{"token", p[2]}}.dump());
      return respond(Json(200, nlohmann::json{{"revoked", p[2]}}.dump()));
    }
  }
  respond(Fail(404, fmt::format("no such endpoint: {} {}", m, r.path)));
}

std::string Api::TenantMayNot(const Caller& caller, const std::string& m, const std::vector<std::string_view>& p) {
  if (caller.kind != Caller::Kind::kTenant) return {};
  const bool read = m == "GET";
  const std::string_view what = p.size() >= 2 ? p[1] : std::string_view();
  if (read && (what == "health" || what == "policies" || what == "jobs" || what == "events" || what == "nodes" ||
               what == "node-groups" || what == "offers" || what == "usage" || what == "whoami" || what == "priority-classes" ||
               (what == "tenants" && p.size() <= 3))) {
    return {};
  }
  const bool job_write = what == "jobs" && ((p.size() == 2 && m == "POST") || (p.size() == 3 && m == "DELETE") ||
                                            (p.size() == 4 && p[3] == "cancel" && m == "POST"));
  if (job_write) return caller.role == Role::kUser ? "" : "a viewer's token reads only: it cannot submit or cancel";
  return "only the admin token may do this";
}

std::string Api::Forbidden(const Caller& caller, std::string_view method, std::string_view path) const {
  const bool agent_path = path.starts_with("/v1/agent/");
  switch (caller.kind) {
    case Caller::Kind::kNone: return "missing or wrong bearer token (Authorization: Bearer TOKEN)";
    case Caller::Kind::kAdmin: return agent_path && path != "/v1/agent/register" ? "agent endpoints take a node's own credential" : "";
    case Caller::Kind::kJoin:
      if (path == "/v1/agent/register" && method == "POST") return "";
      return agent_path ? "the join token only registers a node; the node's own credential (issued at registration) is needed here"
                        : "the join token is for agents only";
    case Caller::Kind::kNode:
      return agent_path ? "" : "a node's credential is for its agent's endpoints only";
    case Caller::Kind::kTenant:
      return agent_path ? "a tenant's token is not for agent endpoints" : "";
  }
  return "forbidden";
}

Admission Api::Admit(const RequestHead& head) const {
  const std::string_view path = head.target.substr(0, head.target.find('?'));
  if (PublicPath(head.method, path)) return Admission{.body_limit = 64 * 1024};
  const Caller caller = Identify(head.authorization, head.cookie);
  if (std::string why = Forbidden(caller, head.method, path); !why.empty()) {
    return Admission{.refuse = Fail(401, why), .body_limit = 0};
  }
  if (options_.max_queued_heartbeats > 0 && caller.kind == Caller::Kind::kNode && head.method == "POST" &&
      path == "/v1/agent/heartbeat" && beats_.size() + held_beats_.size() >= options_.max_queued_heartbeats) {
    beats_held_->Increment();
    return Admission{.body_limit = options_.body_limit,
                     .hold = [this, node = caller.node](std::function<void()> resume) {
                       c_.HoldingHeartbeat(node, /*arrived=*/true);
                       held_beats_.push_back(std::move(resume));
                     },
                     // Its connection died while held: the node's silence counts again from now.
                     .dropped = [this, node = caller.node] { c_.HoldReleased(node); }};
  }
  // A node's checkpoint upload: up to the controller's limit, streamed to a file as it comes.
  if (caller.kind == Caller::Kind::kNode && head.method == "PUT" && path.starts_with("/v1/agent/checkpoints/")) {
    return Admission{.body_limit = static_cast<size_t>(c_.checkpoint_max_bytes()), .spool = true};
  }
  return Admission{.body_limit = options_.body_limit};
}

void Api::Handle(HttpRequest r, Respond respond) {
  // Prometheus scrapes without a token, as from dcgm-exporter or node-exporter: the series
  // name nodes, GPUs and tenants, never jobs' commands or data.
  if (r.path == "/metrics" && r.method == "GET") {
    if (!options_.metrics_token.empty()) {
      constexpr std::string_view kBearer = "Bearer ";
      const std::string_view given = r.authorization.starts_with(kBearer) ? std::string_view(r.authorization).substr(kBearer.size()) : "";
      if (!SameSecret(given, options_.metrics_token) && !SameSecret(given, options_.admin_token)) {
        return respond(Fail(401, "/metrics wants the metrics token (gpupool server --metrics-token-file) or the admin's"));
      }
    }
    return respond(HttpResponse{200, Metrics(), "text/plain; version=0.0.4; charset=utf-8"});
  }
  // Every name in a path or query is text: bytes that are not UTF-8 are refused here, before
  // anything quotes them.
  bool utf8 = IsValidUtf8(r.path);
  for (const auto& [k, v] : r.query) utf8 = utf8 && IsValidUtf8(k) && IsValidUtf8(v);
  if (!utf8) return respond(Fail(400, "request target: not valid UTF-8 (percent-encode UTF-8 text)"));
  if (WebRoute(r, respond)) return;
  // The CA that vouches for this server, for whoever asks: an agent checks it against its join
  // token's hash before it trusts it (kubeadm's cluster-info).
  if (r.path == "/v1/ca" && r.method == "GET") {
    if (options_.ca_pem.empty()) return respond(Fail(404, "this server has no CA (it serves no TLS)"));
    return respond(HttpResponse{200, options_.ca_pem, "application/x-pem-file"});
  }
  const Caller caller = Identify(r.authorization, r.cookie);
  if (std::string why = Forbidden(caller, r.method, r.path); !why.empty()) return respond(Fail(401, why));
  if (caller.kind == Caller::Kind::kNode && r.tls) {
    if (auto [status, why] = NodeCertificateRefused(r, caller); status != 0) return respond(Fail(status, why));
  }
  // What a user's request changes is told as made by its caller: every event emitted while it
  // is handled names them (a submission's job.submitted, emitted at its commit, too).
  const bool change = r.method != "GET" && r.method != "HEAD";
  if (change) c_.set_actor(ActorOf(caller));
  Route(r, caller, respond);
  if (change) c_.set_actor("");
  c_.FlushEvents();  // what the request changed without a durable write (none usually)
}

std::pair<int, std::string> Api::NodeCertificateRefused(const HttpRequest& r, const Caller& caller) {
  if (!r.peer) {
    return {401, fmt::format("over TLS, node '{}''s requests need its client certificate (issued at registration)", caller.node)};
  }
  if (r.peer->common_name != caller.node) {
    return {403, fmt::format("this client certificate is node '{}''s; the credential is node '{}''s", r.peer->common_name,
                             caller.node)};
  }
  // Certificates' times are the wall clock's.
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  if (r.peer->not_after_ms <= now) {
    return {401, fmt::format("node '{}''s client certificate (serial {}) expired {} ago; the agent registers again for a new one",
                             caller.node, r.peer->serial, FormatMillis(Millis{now - r.peer->not_after_ms}))};
  }
  if (std::string why = c_.NodeCertificateRefused(caller.node, r.peer->serial); !why.empty()) return {401, why};
  return {0, ""};
}

Result<std::string> Api::IssueNodeCertificate(const std::string& node, const std::string& csr) {
  if (!options_.sign_node_certificate) return Error(StatusCode::kFailedPrecondition, "this server issues no client certificates");
  auto cert = options_.sign_node_certificate(node, csr);
  if (!cert) return tl::unexpected(cert.error());
  auto info = ReadCertInfo(*cert);
  if (!info) return tl::unexpected(info.error());
  if (Status s = c_.RecordNodeCertificate(node, info->serial); !s.ok()) return tl::unexpected(s);
  return *cert;
}

void Api::Route(const HttpRequest& r, const Caller& caller, Respond& respond) {
  const auto p = Split(r.path);
  const std::string& m = r.method;
  auto no_route = [&] { respond(Fail(404, fmt::format("no such endpoint: {} {}", m, r.path))); };
  if (p.size() < 2 || p[0] != "v1") return no_route();
  if (std::string why = TenantMayNot(caller, m, p); !why.empty()) return respond(Fail(403, why));
  const bool tenant = caller.kind == Caller::Kind::kTenant;
  if (p[1] == "whoami" && p.size() == 2 && m == "GET") {
    nlohmann::json who{{"kind", tenant ? "tenant" : "admin"}};
    if (tenant) who.update({{"tenant", caller.tenant}, {"role", RoleName(caller.role)}, {"token", caller.token_id}});
    return respond(Json(200, who.dump()));
  }
  if (p[1] == "tenants" || p[1] == "tokens") return AccessRoute(r, caller, p, respond);

  if (p[1] == "health" && p.size() == 2 && m == "GET") {
    if (!c_.store_error().ok()) {
      respond(Json(503, nlohmann::json{{"status", "store-failed"}, {"error", c_.store_error().message()},
                                       {"nodes", c_.fleet().nodes.size()}, {"policy", c_.policy().name}}.dump()));
      return;
    }
    respond(Json(200, nlohmann::json{{"status", "ok"}, {"nodes", c_.fleet().nodes.size()}, {"policy", c_.policy().name}}.dump()));
    return;
  }
  if (p[1] == "events" && p.size() == 2 && m == "GET") return EventsRoute(r, caller, std::move(respond));
  if (p[1] == "priority-classes" && p.size() == 2 && m == "GET") {
    nlohmann::json list = nlohmann::json::array();
    for (const PriorityClass& c : c_.fleet().priority_classes) {
      list.push_back({{"name", c.name}, {"value", c.value}, {"preemptible", c.preemptible}, {"min_run_ms", c.min_run.value()},
                      {"default_time_ms", c.default_time.value()}, {"max_time_ms", c.max_time.value()}});
    }
    return respond(Json(200, nlohmann::json{{"priority_classes", list}}.dump()));
  }
  if (p[1] == "policies" && p.size() == 2 && m == "GET") {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& e : BuiltinRegistry().Policies()) list.push_back({{"name", e.name}, {"description", e.description}});
    respond(Json(200, nlohmann::json{{"active", c_.policy().name}, {"policies", list}}.dump()));
    return;
  }
  if (p[1] == "jobs") {
    if (p.size() == 2 && m == "POST") {
      auto req = ParseSubmitRequest(r.body, [this](std::string_view name) -> Result<int> {
        auto c = c_.fleet().PriorityClassNamed(name);
        if (!c) return tl::unexpected(c.error());
        return (*c)->value;
      });
      if (!req) return respond(Fail(400, req.error().message()));
      if (Status st = c_.SealSecrets(*req); !st.ok()) return respond(Fail(400, st.message()));
      if (tenant) req->spec.tenant = caller.tenant;  // a job's tenant is its token's, whatever the body says
      if (auto dry = r.query.find("dry_run"); dry != r.query.end() && dry->second != "0" && dry->second != "false") {
        auto what = c_.DryRun(std::move(*req));
        if (!what) return respond(Fail(HttpStatusOf(what.error()), what.error().message()));
        return respond(Json(200, *what));
      }
      // Answered once stored: with the other submissions of this loop turn, in one write.
      c_.SubmitStaged(std::move(*req), [this, respond](Result<JobId> id) {
        if (!id) return respond(Fail(HttpStatusOf(id.error()), id.error().message()));
        Poke();
        respond(Json(201, nlohmann::json{{"id", std::to_string(id->value())}}.dump()));
      });
      return;
    }
    if (p.size() == 2 && m == "GET") {
      JobFilter f;
      if (auto it = r.query.find("state"); it != r.query.end() && !it->second.empty()) {
        auto s = ParseJobState(it->second);
        if (!s) return respond(Fail(400, "state: " + s.error().message()));
        f.state = *s;
      }
      if (auto it = r.query.find("tenant"); it != r.query.end()) f.tenant = it->second;
      if (tenant) f.tenant = caller.tenant;  // its own only
      if (auto it = r.query.find("node"); it != r.query.end()) f.node = it->second;
      if (auto it = r.query.find("expand"); it != r.query.end()) f.expand = it->second != "false" && it->second != "0";
      if (auto it = r.query.find("array"); it != r.query.end()) {
        auto a = c_.ResolveJob(it->second);
        if (!a) return respond(Fail(400, "array: " + a.error().message()));
        f.array = a->value();
      }
      // Pages of at most 1,000, newest first; `next` is the cursor for the page after.
      if (auto e = QueryNumber(r, "limit", f.limit, size_t{1}, size_t{kMaxPage})) return respond(Fail(400, *e));
      if (auto e = QueryNumber(r, "before", f.before, uint64_t{1}, UINT64_MAX)) return respond(Fail(400, *e));
      std::string body = "{\"jobs\":[";
      bool first = true;
      const auto jobs = c_.ListJobs(f);
      for (const JobRecord* j : jobs) {
        body += (first ? "" : ",") + JobToJson(*j, c_.MessageOf(*j));
        first = false;
      }
      body += "]";
      if (jobs.size() == f.limit && jobs.back()->spec.id.value() > 1) {
        body += fmt::format(",\"next\":\"{}\"", jobs.back()->spec.id.value());
      }
      return respond(Json(200, body + "}"));
    }
    if (p.size() >= 3) {
      // A job by its id, or an array element by ARRAY_INDEX (its own id works too).
      auto resolved = c_.ResolveJob(p[2]);
      const std::optional<JobId> id = resolved ? std::optional<JobId>(*resolved) : std::nullopt;
      const JobRecord* j = id ? c_.FindJob(*id) : nullptr;
      // An element not yet expanded has no record: its array says what it is.
      const std::optional<JobRecord> pending = id && !j ? c_.PendingElement(*id) : std::nullopt;
      // Another tenant's job is not there for this caller: 404, as for an id never used.
      const bool theirs = tenant && (j ? j->spec.tenant : pending ? pending->spec.tenant : caller.tenant) != caller.tenant;
      if ((!j && !pending) || theirs) {
        return respond(Fail(404, resolved ? fmt::format("no job '{}'", p[2]) : resolved.error().message()));
      }
      if ((p.size() == 3 && m == "DELETE") || (p.size() == 4 && p[3] == "cancel" && m == "POST")) {
        Status s = c_.Cancel(*id);
        if (!s.ok()) return respond(Fail(HttpStatusOf(s), s.message()));
        Poke();
        // As it is now (an element cancelled before it was expanded still has no record).
        if (const JobRecord* now = c_.FindJob(*id)) return respond(Json(200, JobToJson(*now, c_.MessageOf(*now))));
        return respond(Json(200, JobToJson(*c_.PendingElement(*id))));
      }
      if (p.size() == 3 && m == "GET") return respond(Json(200, j ? JobToJson(*j, c_.MessageOf(*j)) : JobToJson(*pending)));
      if (!j) return respond(Fail(404, fmt::format("job '{}' has not started: no logs, checkpoint or explanation yet", p[2])));
      if (p.size() == 4 && p[3] == "checkpoint" && m == "GET") {
        int task = 0;
        if (auto e = QueryNumber(r, "task", task, 0, kMaxTasksPerJob - 1)) return respond(Fail(400, *e));
        return respond(CheckpointFile(*id, task));
      }
      if (p.size() == 4 && p[3] == "explain" && m == "GET") {
        return respond(Json(200, nlohmann::json{{"id", std::to_string(id->value())}, {"explain", c_.Explain(*id)}}.dump()));
      }
      if (p.size() == 4 && p[3] == "logs" && m == "GET") {
        int task = 0;
        std::string stream = "stdout";
        int64_t offset = 0;
        // At most `limit` bytes (1 MiB by default, 16 MiB at most) from `offset`: a big log is read in
        // pieces, never whole; X-Log-Size says how much there is.
        int64_t limit = 1 << 20;
        if (auto e = QueryNumber(r, "task", task, 0, std::max(1, j->spec.tasks) - 1)) return respond(Fail(400, *e));
        if (auto e = QueryNumber(r, "offset", offset, int64_t{0}, INT64_MAX)) return respond(Fail(400, *e));
        if (auto e = QueryNumber(r, "limit", limit, int64_t{1}, int64_t{16} << 20)) return respond(Fail(400, *e));
        if (auto it = r.query.find("stream"); it != r.query.end()) stream = it->second;
        if (stream != "stdout" && stream != "stderr") return respond(Fail(400, "stream: expected stdout or stderr"));
        std::ifstream in(c_.LogPath(*id, task, stream), std::ios::binary);
        std::string text;
        int64_t size = 0;
        if (in) {
          in.seekg(0, std::ios::end);
          size = static_cast<int64_t>(in.tellg());
          if (offset < size) {
            text.resize(static_cast<size_t>(std::min(limit, size - offset)));
            in.seekg(static_cast<std::streamoff>(offset));
            in.read(text.data(), static_cast<std::streamsize>(text.size()));
            text.resize(static_cast<size_t>(in.gcount()));
          }
        }
        return respond(HttpResponse{200, std::move(text), "text/plain; charset=utf-8", {{"X-Log-Size", std::to_string(size)}}});
      }
    }
    return no_route();
  }
  if (p[1] == "node-groups" && p.size() == 2 && m == "GET") return respond(Json(200, c_.NodeGroupsJson()));
  if (p[1] == "usage" && p.size() == 2 && m == "GET") {
    // GPU-hours and dollars since a time (`since`: a duration back from now; all when absent),
    // grouped by the columns in `by` (provider, offer, tier, tenant, kind, node).
    std::vector<std::string> by;
    const std::string by_text = r.query.count("by") ? r.query.at("by") : "provider";
    for (size_t start = 0; start <= by_text.size();) {
      const size_t comma = std::min(by_text.find(',', start), by_text.size());
      const std::string col = by_text.substr(start, comma - start);
      if (!col.empty()) {
        if (std::find(std::begin(kUsageColumns), std::end(kUsageColumns), col) == std::end(kUsageColumns)) {
          return respond(Fail(400, fmt::format("query 'by': no column '{}' (provider, offer, tier, tenant, kind, node, day)", col)));
        }
        by.push_back(col);
      }
      start = comma + 1;
    }
    int64_t since = 0;
    const int64_t now = c_.Now().value();
    if (auto it = r.query.find("since"); it != r.query.end() && !it->second.empty()) {
      auto d = ParseDuration(it->second);
      if (!d) return respond(Fail(400, "query 'since': " + d.error().message()));
      since = now - d->value();
    }
    // A tenant's token sees its own usage only: grouped by tenant too, the others' rows dropped.
    std::vector<std::string> asked = by;
    if (tenant) asked.push_back("tenant");
    auto totals = c_.UsageTotals(since, asked);
    if (!totals) return respond(Fail(500, totals.error().message()));
    if (tenant) {
      std::erase_if(*totals, [&](const UsageTotal& t) { return t.key.back() != caller.tenant; });
      for (UsageTotal& t : *totals) t.key.pop_back();
    }
    nlohmann::json rows = nlohmann::json::array();
    double gpu_hours = 0, usd = 0;
    int64_t records = 0;
    for (const UsageTotal& t : *totals) {
      nlohmann::json row = nlohmann::json::object();
      for (size_t i = 0; i < by.size(); ++i) row[by[i]] = t.key[i];
      row["gpu_hours"] = static_cast<double>(t.gpu_ms) / 3'600'000.0;
      row["usd"] = static_cast<double>(t.usd_micro) / kMicroUsdPerUsd;
      row["records"] = t.records;
      gpu_hours += static_cast<double>(t.gpu_ms) / 3'600'000.0;
      usd += static_cast<double>(t.usd_micro) / kMicroUsdPerUsd;
      records += t.records;
      rows.push_back(std::move(row));
    }
    return respond(Json(200, nlohmann::json{{"since_ms", since}, {"by", by}, {"rows", rows},
                                            {"total", {{"gpu_hours", gpu_hours}, {"usd", usd}, {"records", records}}}}
                                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
  }
  if (p[1] == "offers" && p.size() == 2 && m == "GET") {
    return respond(Json(200, offers ? offers() : OffersJson(c_.fleet(), {}, {}, Millis{0})));
  }
  if (p[1] == "nodes") {
    if (p.size() == 2 && m == "GET") {
      // By name, 1,000 a page at most; `next` is the cursor (after=NAME) for the page after.
      size_t limit = kMaxPage;
      if (auto e = QueryNumber(r, "limit", limit, size_t{1}, size_t{kMaxPage})) return respond(Fail(400, *e));
      auto q = [&](const char* k) { auto it = r.query.find(k); return it == r.query.end() ? std::string() : it->second; };
      const auto names = c_.NodeNames(q("provider"), q("site"), q("after"), limit);
      std::string body = "{\"nodes\":[";
      bool first = true;
      for (const std::string& n : names) {
        body += (first ? "" : ",") + c_.NodeJson(n);
        first = false;
      }
      body += "]";
      if (names.size() == limit) body += fmt::format(",\"next\":{}", nlohmann::json(names.back()).dump());
      return respond(Json(200, body + "}"));
    }
    if (p.size() >= 3) {
      const std::string name(p[2]);
      if (!c_.FindNode(name)) return respond(Fail(404, fmt::format("no node '{}'", name)));
      if (p.size() == 3 && m == "GET") return respond(Json(200, c_.NodeJson(name)));
      // /v1/nodes/NAME/gpus/IDX/xid {"xid": 79} and /v1/nodes/NAME/gpus/IDX/undrain
      if (p.size() == 6 && p[3] == "gpus" && m == "POST") {
        int gpu = -1;
        auto [ptr, ec] = std::from_chars(p[4].data(), p[4].data() + p[4].size(), gpu);
        if (ec != std::errc() || ptr != p[4].data() + p[4].size()) return respond(Fail(404, fmt::format("no GPU '{}'", p[4])));
        if (p[5] == "check") {
          Status s = c_.CheckGpu(name, gpu);
          if (!s.ok()) return respond(Fail(HttpStatusOf(s), s.message()));
          return respond(Json(202, c_.NodeJson(name)));
        }
        if (p[5] == "undrain") {
          Status s = c_.UndrainGpu(name, gpu);
          if (!s.ok()) return respond(Fail(HttpStatusOf(s), s.message()));
          Poke();
          return respond(Json(200, c_.NodeJson(name)));
        }
        if (p[5] == "xid") {
          const nlohmann::json body = nlohmann::json::parse(r.body, nullptr, false);
          // Non-negative whole numbers parse as unsigned: a negative, fractional or huge one is refused.
          if (!body.is_object() || !body.contains("xid") || !body["xid"].is_number_unsigned() ||
              body["xid"].get<uint64_t>() > 100'000) {
            return respond(Fail(400, "field 'xid': expected a whole number 0..100000 (an NVIDIA XID, e.g. 79)"));
          }
          auto what = c_.GpuXid(name, gpu, static_cast<int>(body["xid"].get<uint64_t>()));
          if (!what) return respond(Fail(HttpStatusOf(what.error()), what.error().message()));
          Poke();
          return respond(Json(200, nlohmann::json{{"node", name}, {"gpu", gpu}, {"result", *what}}.dump()));
        }
      }
      if (p.size() == 4 && p[3] == "reclaim" && m == "POST") {
        const nlohmann::json body = nlohmann::json::parse(r.body.empty() ? "{}" : r.body, nullptr, false);
        if (!body.is_object()) return respond(Fail(400, "malformed JSON; expected {\"notice\": \"30s\"}"));
        Millis notice{30'000};
        if (body.contains("notice")) {
          auto d = body["notice"].is_string() ? ParseDuration(body["notice"].get<std::string>())
                                              : Result<Millis>(InvalidArgument("expected a string such as \"30s\""));
          if (!d) return respond(Fail(400, "field 'notice': " + d.error().message()));
          notice = *d;
        }
        Status s = c_.Reclaim(name, notice);
        if (!s.ok()) return respond(Fail(HttpStatusOf(s), s.message()));
        Poke();
        return respond(Json(200, c_.NodeJson(name)));
      }
      // Revokes the node's client certificates (mutual TLS): the agent must register again.
      if (p.size() == 4 && p[3] == "certificates" && m == "DELETE") {
        Status s = c_.RevokeNodeCertificates(name);
        if (!s.ok()) return respond(Fail(HttpStatusOf(s), s.message()));
        return respond(Json(200, c_.NodeJson(name)));
      }
      if (p.size() == 4 && (p[3] == "drain" || p[3] == "undrain") && m == "POST") {
        const bool evict = p[3] == "drain" && r.query.count("evict") && r.query.at("evict") != "false";
        Status s = evict ? c_.Evict(name) : c_.SetDraining(name, p[3] == "drain");
        if (!s.ok()) return respond(Fail(HttpStatusOf(s), s.message()));
        Poke();
        return respond(Json(200, c_.NodeJson(name)));
      }
    }
    return no_route();
  }
  // /v1/agent/checkpoints/JOB/TASK: a task's carried checkpoint (PUT ?attempt=A, GET), only
  // about the calling node's own attempts.
  if (p[1] == "agent" && p.size() == 5 && p[2] == "checkpoints") {
    auto id = ParseId(p[3]);
    int task = -1;
    auto [tp, tec] = std::from_chars(p[4].data(), p[4].data() + p[4].size(), task);
    if (!id || tec != std::errc() || tp != p[4].data() + p[4].size() || task < 0) {
      return respond(Fail(404, fmt::format("no checkpoint '{}/{}'", p[3], p[4])));
    }
    if (m == "PUT") {
      int attempt = 0;
      if (!r.query.count("attempt")) return respond(Fail(400, "attempt: expected ?attempt=N"));
      if (auto e = QueryNumber(r, "attempt", attempt, 1, 1'000'000)) return respond(Fail(400, "attempt: expected ?attempt=N"));
      if (r.body_file.empty()) return respond(Fail(400, "expected the archive as the request body"));
      Status s = c_.StoreCheckpoint(caller.node, *id, task, attempt, r.body_file);
      if (!s.ok()) return respond(Fail(HttpStatusOf(s), s.message()));
      return respond(Json(200, nlohmann::json{{"stored", r.body_size}}.dump()));
    }
    if (m == "GET") {
      if (Status s = c_.MayFetchCheckpoint(caller.node, *id, task); !s.ok()) return respond(Fail(HttpStatusOf(s), s.message()));
      return respond(CheckpointFile(*id, task));
    }
    return no_route();
  }
  if (p[1] == "agent" && p.size() == 3 && m == "POST") {
    if (p[2] == "register") {
      auto reg = ParseRegister(r.body);
      if (!reg) return respond(Fail(400, reg.error().message()));
      auto reg_done = c_.Register(*reg);
      if (!reg_done) return respond(Fail(HttpStatusOf(reg_done.error()), reg_done.error().message()));
      Poke();
      nlohmann::json out{{"node", reg_done->node}, {"lease_ms", c_.lease().value()},
                         {"interval_ms", c_.heartbeat_interval().value()},
                         {"checkpoint_max_bytes", c_.checkpoint_max_bytes()}};
      if (c_.epoch() > 0) out["epoch"] = c_.epoch();
      if (!reg_done->credential.empty()) out["credential"] = reg_done->credential;
      if (!reg->csr.empty()) {
        auto cert = IssueNodeCertificate(reg_done->node, reg->csr);
        if (!cert) return respond(Fail(HttpStatusOf(cert.error()), "csr: " + cert.error().message()));
        out["certificate"] = *cert;
      }
      return respond(Json(200, out.dump()));
    }
    // A new client certificate for the calling node, before its own expires (rotation).
    if (p[2] == "certificate") {
      const nlohmann::json body = nlohmann::json::parse(r.body, nullptr, false);
      if (!body.is_object() || !body.contains("csr") || !body["csr"].is_string()) {
        return respond(Fail(400, "field 'csr': expected a PEM certificate signing request"));
      }
      auto cert = IssueNodeCertificate(caller.node, body["csr"].get<std::string>());
      if (!cert) return respond(Fail(HttpStatusOf(cert.error()), cert.error().message()));
      return respond(Json(200, nlohmann::json{{"certificate", *cert}}.dump()));
    }
    if (p[2] == "heartbeat") return HeartbeatRoute(r, caller, std::move(respond));
  }
  no_route();
}

HttpResponse Api::CheckpointFile(JobId id, int task) const {
  const auto path = c_.CheckpointPath(id, task);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return Fail(404, fmt::format("job {} task {} has no carried checkpoint", id.value(), task));
  HttpResponse res{200, "", "application/x-tar"};
  res.body_file = path;  // streamed from the file
  return res;
}

// Agents' heartbeats wait in a queue of their own and are taken a batch per turn of the loop,
// so that a burst from thousands of nodes never holds a user's request (a listing, a
// submission) behind all of it: a user's request waits at most for one batch.
void Api::HeartbeatRoute(const HttpRequest& r, const Caller& caller, Respond respond) {
  links_[caller.node] = r.connection;
  beats_.push_back(PendingBeat{.body = r.body, .node = caller.node, .respond = std::move(respond)});
  // The node has spoken: however long its heartbeat waits here, that is the server's time.
  c_.HoldingHeartbeat(caller.node, /*arrived=*/true);
  ScheduleDrain();
}

// The agents' side of the loop, a batch per turn: parked polls that have work or whose wait
// is over are answered, then queued heartbeats handled. What is left goes behind whatever
// else is ready (users' requests), so agents' traffic, however heavy, delays a user's request
// by one batch at most.
void Api::DrainBeats() {
  int budget = kBeatsPerTurn;
  for (auto it = woken_.begin(); it != woken_.end() && budget > 0; --budget) {
    const std::string node = *it;
    it = woken_.erase(it);
    Unpark(node, false);
  }
  const int64_t now = SteadyMs();
  while (budget > 0 && !due_.empty() && due_.begin()->first <= now) {
    const std::string node = due_.begin()->second;
    Unpark(node, true);
    --budget;
  }
  for (; budget > 0 && !beats_.empty(); --budget) {
    PendingBeat b = std::move(beats_.front());
    beats_.pop_front();
    HandleBeat(b.body, b.node, std::move(b.respond));
  }
  // Room again: as many held heartbeats read their bodies as a turn handles (they join the
  // queue as their bytes arrive), so the queue stays near its bound while the storm lasts.
  for (int n = 0; n < kBeatsPerTurn && !held_beats_.empty() && beats_.size() < options_.max_queued_heartbeats; ++n) {
    std::function<void()> resume = std::move(held_beats_.front());
    held_beats_.pop_front();
    resume();
  }
  draining_ = false;
  if (!woken_.empty() || !beats_.empty() || !held_beats_.empty() || (!due_.empty() && due_.begin()->first <= SteadyMs())) {
    ScheduleDrain();
  }
}

void Api::HandleBeat(const std::string& body, const std::string& caller_node, Respond respond) {
  auto hb = ParseHeartbeat(body);
  if (!hb) return respond(Fail(400, hb.error().message()));
  if (hb->node != caller_node) {
    return respond(Fail(403, fmt::format("this credential is node '{}''s; the heartbeat names '{}'", caller_node, hb->node)));
  }
  const std::string node = hb->node;
  const int wait_ms = hb->wait_ms;
  Poke();
  c_.HeartbeatStaged(*hb, [this, node, wait_ms, respond = std::move(respond)](Result<HeartbeatReply> reply) mutable {
    if (!reply) return respond(Fail(HttpStatusOf(reply.error()), reply.error().message()));
    Answer(node, wait_ms, *reply, std::move(respond));
  });
}

void Api::Answer(const std::string& node, int wait_ms, const HeartbeatReply& reply, Respond respond) {
  if (!reply.start.empty() || !reply.cancel.empty() || !reply.selftest.empty() || wait_ms == 0) {
    return respond(Json(200, ReplyText(reply)));
  }
  // Nothing to say now: hold the request until work arrives or the wait ends (long poll).
  if (auto old = parked_.find(node); old != parked_.end()) {
    due_.erase({old->second.deadline_ms, node});
    old->second.respond(Json(200, ReplyText({})));
    parked_.erase(old);
  }
  // No timer per poll: one ticker (kPollTick) finds the polls whose wait is over.
  const int64_t deadline = SteadyMs() + std::min<int64_t>(wait_ms, options_.max_poll.value());
  parked_[node] = Parked{std::move(respond), deadline};
  due_.insert({deadline, node});
  c_.HoldingHeartbeat(node);
}

}  // namespace gp
