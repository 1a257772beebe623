// The live pool's daemons: `gpupool server`, `gpupool agent`, `gpupool hollow` (many hollow
// agents in one process, for sizing a server), and `gpupool dev` (a server and a few agents
// with simulated GPUs on this machine, for trying gpupool in one command).
#include <fmt/format.h>
#include <signal.h>
#include <ifaddrs.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>

#include "adapters/etcd.h"
#include "adapters/etcd_journal.h"
#include "adapters/fleet_loader.h"
#include "adapters/http.h"
#include "adapters/pki.h"
#include "adapters/secrets.h"
#include "adapters/sqlite_journal.h"
#include "adapters/tokens.h"
#include "agent/agent.h"
#include "agent/hollow.h"
#include "agent/supervisor.h"
#include "apps/gpupool/commands.h"
#include "controller/api.h"
#include "controller/autoscaler.h"
#include "adapters/kafka_sink.h"
#include "core/units.h"
#include "wire/codec.h"

#include <nlohmann/json.hpp>

namespace gp::app {
namespace {

class WallClock final : public Clock {
 public:
  Millis Now() const override {
    return Millis{std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count()};
  }
};

struct ServerArgs {
  std::string config;
  std::string listen = "127.0.0.1:7070";
  std::vector<std::string> also_listen;  // more addresses to serve on
  std::string data_dir = "gpupool-data";
  std::string fleet;  // providers, sites, links and prices; nodes come from agents
  std::string policy = "balanced";
  uint64_t seed = 1;
  size_t body_limit = 1 << 20;
  size_t max_queued_heartbeats = 0;
  size_t metrics_gpu_series_nodes = 1'000;
  std::string lease = "1800ms";
  std::string header_timeout = "15s";
  int max_retries = 3;
  std::string checkpoint_root;  // shared storage; default: none, the pool carries checkpoints
  int64_t checkpoint_max_mib = 1024;
  std::vector<std::string> allow_workdir;
  std::string gpu_probation = "10m";
  double suspect_phi = 3.0;
  double down_phi = 8.0;
  std::string acceptable_pause = "500ms";
  std::string events;            // kafka://BROKERS/TOPIC: deliver the event log there
  std::string telemetry_events = "0s";
  uint64_t events_retain = 1'000'000;
  std::string web_dir;           // the dashboard's files; default: found beside the binary
  std::string advertise;         // the address agents the pool starts join (default: --listen's, with its port)
  std::string scale_down_idle = "60s";
  std::string fair_share_half_life = "7d";
  SchedulingFlags scheduling;
  std::string preempt_grace;  // default: the agent's own grace
  std::string store = "sqlite";  // or etcd://HOST:PORT[,HOST:PORT...]
  std::string store_prefix = "/gpupool";
  std::string leader_ttl = "3s";
  std::string secrets_key_file;  // default: DATA_DIR/secrets.key
  std::string metrics_token_file;  // /metrics wants this token; default: none (open)
  // TLS (docs/live-pool.md): by default the pool's own CA in DATA_DIR/tls, made on first start.
  std::string tls_cert;  // the operator's server certificate (PEM, chain), with --tls-key and --tls-ca
  std::string tls_key;
  std::string tls_ca;
  std::vector<std::string> tls_san;  // more names or addresses for the server certificate the pool makes
  bool insecure_http = false;        // plain HTTP from other hosts too
  std::string node_cert_ttl = "30d";  // nodes' client certificates; agents rotate them at two thirds
};

// The dashboard's built files: --web-dir, else web/dist of the source tree the binary was
// built in (build/gpupool -> web/dist), else an installed copy.
std::filesystem::path FindWebDir(const std::string& given) {
  namespace fs = std::filesystem;
  if (!given.empty()) return fs::absolute(given);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec).parent_path();
  for (const fs::path& p : {exe / ".." / "web" / "dist", exe / "web", fs::path("web/dist"), fs::path("/usr/share/gpupool/web")}) {
    if (fs::exists(p / "index.html", ec)) return fs::weakly_canonical(p, ec);
  }
  return {};
}

// Everything a running server holds; Serve() blocks until SIGINT/SIGTERM.
struct Server {
  // A write still on the journal's thread hands its outcome to the loop: it is done before the
  // loop and the controller go.
  ~Server() {
    if (sqlite) sqlite->WaitForWrites();
    if (etcd_journal) etcd_journal->WaitForWrites();
  }
  std::unique_ptr<EtcdClient> etcd;  // with --store etcd://
  std::unique_ptr<Journal> journal;  // set once this server leads
  SqliteJournal* sqlite = nullptr;   // journal, when it is SQLite's
  EtcdJournal* etcd_journal = nullptr;
  std::unique_ptr<Controller> controller;
  std::unique_ptr<Api> api;
  std::unique_ptr<KafkaSink> kafka;  // destroyed before the controller and loop it is wired to
  EventLoop loop;
  WallClock clock;
  std::unique_ptr<Autoscaler> autoscaler;  // destroyed first: its thread posts to the loop
  uint16_t port = 0;
  std::string admin_token_path;
  std::string admin_token;
  std::string join_token;       // its secret, which the API checks
  std::string join_token_full;  // as agents are given it: the secret and the CA's hash
  // TLS: what the listeners serve, the CA that vouches for the server (its hash in the join
  // token), and the signer of nodes' client certificates.
  std::optional<ServerTls> tls;
  std::string ca_pem;
  std::string ca_hash;
  CertKey node_ca;
  int64_t node_cert_seconds = 0;
  // Leadership (etcd): who leads as this server last read it, this server's address, and the
  // epoch it leads in (the leader key's create revision; 0 with SQLite: one server).
  std::string advertise;
  std::string leader;
  uint64_t epoch = 0;

  // What a standby answers: the leader's address (307, X-Gpupool-Leader), or 503 while none is
  // known; clients given several servers follow either (HttpClient::Call).
  HttpResponse Standby(const HttpRequest& r) const {
    HttpResponse out;
    out.headers.emplace_back("X-Gpupool-Role", "follower");
    if (!leader.empty() && leader != advertise) {
      out.status = 307;
      std::string target = r.path;
      char sep = '?';
      for (const auto& [k, v] : r.query) {
        target += sep + k + "=" + v;
        sep = '&';
      }
      out.headers.emplace_back("Location", (r.tls ? "https://" : "http://") + leader + target);
      out.headers.emplace_back("X-Gpupool-Leader", leader);
      out.body = ErrorJson(fmt::format("this server is a standby; the leader is at {}", leader));
      return out;
    }
    out.status = 503;
    out.headers.emplace_back("Retry-After", "1");
    out.body = ErrorJson("this server is a standby and no leader is known yet (an election is under way)");
    return out;
  }
  // GET /v1/leader, on every server: its role, the leader it knows, and the epoch.
  HttpResponse LeaderInfo() const {
    nlohmann::json j{{"role", api ? "leader" : "standby"}, {"server", advertise}, {"leader", api ? advertise : leader},
                     {"epoch", epoch}, {"store", etcd ? "etcd" : "sqlite"}};
    return HttpResponse{.status = 200, .body = j.dump()};
  }
};

Status BadArg(std::string message) { return Status(StatusCode::kInvalidArgument, std::move(message)); }

// The data directory: logs, checkpoints and uploads in 0700 directories.
Status PrepareDataDir(const ServerArgs& a) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(a.data_dir, ec);
  if (ec) return Status(StatusCode::kFailedPrecondition, fmt::format("--data-dir {}: {}", a.data_dir, ec.message()));
  // 0711: a job's user (an agent's task, on the same host) may pass through to the agent work
  // directories that `dev` keeps here, but may list nothing; what is secret inside is 0600 or
  // in 0700 directories (tokens, the store, logs, checkpoints, uploads).
  fs::permissions(a.data_dir, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec, ec);
  for (const char* d : {"logs", "checkpoints", "uploads"}) {
    fs::create_directories(fs::path(a.data_dir) / d, ec);
    fs::permissions(fs::path(a.data_dir) / d, fs::perms::owner_all, ec);
  }
  return Status::Ok();
}

// Serves --listen (and --also-listen): the API once this server leads, a standby's answer before.
// The names and addresses the server's certificate carries: the listen addresses (every
// interface's for a wildcard), loopback, this host's name, --advertise's host and --tls-san.
std::vector<std::string> ServerNames(const ServerArgs& a) {
  std::set<std::string> names = {"127.0.0.1", "::1", "localhost"};
  auto host_of = [](const std::string& hp) {
    std::string h = hp.substr(0, hp.rfind(':'));
    if (h.starts_with("https://")) h = h.substr(8);
    if (h.size() > 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
    return h;
  };
  bool wildcard = false;
  std::vector<std::string> listens = a.also_listen;
  listens.push_back(a.listen);
  for (const std::string& l : listens) {
    const std::string h = host_of(l);
    if (h == "0.0.0.0" || h == "::" || h.empty()) wildcard = true;
    else names.insert(h);
  }
  if (wildcard) {
    ifaddrs* all = nullptr;
    if (getifaddrs(&all) == 0) {
      for (ifaddrs* i = all; i; i = i->ifa_next) {
        if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6)) continue;
        char text[INET6_ADDRSTRLEN] = {};
        const void* addr = i->ifa_addr->sa_family == AF_INET ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr)
                                                             : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr);
        if (inet_ntop(i->ifa_addr->sa_family, addr, text, sizeof(text)) && !std::string(text).starts_with("fe80")) names.insert(text);
      }
      freeifaddrs(all);
    }
  }
  char hostname[256] = {};
  if (gethostname(hostname, sizeof(hostname) - 1) == 0 && hostname[0] != '\0') names.insert(hostname);
  if (!a.advertise.empty()) names.insert(host_of(a.advertise));
  for (const std::string& n : a.tls_san) names.insert(n);
  return {names.begin(), names.end()};
}

Result<std::string> ReadPem(const std::string& path, const char* flag) {
  std::ifstream in(path);
  if (!in) return Error(StatusCode::kInvalidArgument, fmt::format("{} {}: cannot read it", flag, path));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.find("-----BEGIN") == std::string::npos) return Error(StatusCode::kInvalidArgument, fmt::format("{} {}: not PEM", flag, path));
  return text;
}

// The pool's CA (the signer of nodes' client certificates, and of the server's own unless the
// operator gives one): DATA_DIR/tls/ca.{crt,key}, made on first start; with etcd, the one all
// the pool's servers share (kept in etcd beside the tokens).
Result<CertKey> PoolCa(const ServerArgs& a, EtcdClient* etcd) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(a.data_dir) / "tls";
  std::error_code ec;
  fs::create_directories(dir, ec);
  fs::permissions(dir, fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec, ec);
  CertKey ca;
  if (etcd) {
    auto made = MakeCa("gpupool CA", 3650);
    if (!made) return tl::unexpected(made.error());
    const std::string cert_key = a.store_prefix + "/secrets/ca.crt";
    const std::string key_key = a.store_prefix + "/secrets/ca.key";
    auto r = etcd->Txn({EtcdCreated{.key = cert_key, .create_revision = 0}},
                       {EtcdOp::Put(cert_key, made->cert_pem), EtcdOp::Put(key_key, made->key_pem), EtcdOp::Get(cert_key), EtcdOp::Get(key_key)},
                       {EtcdOp::Get(cert_key), EtcdOp::Get(key_key)});
    if (!r) return tl::unexpected(r.error());
    if (r->ranges.size() < 2 || r->ranges[0].kvs.empty() || r->ranges[1].kvs.empty()) {
      return Error(StatusCode::kFailedPrecondition, "etcd: the pool's CA is not there");
    }
    ca = CertKey{.cert_pem = r->ranges[0].kvs[0].value, .key_pem = r->ranges[1].kvs[0].value};
  } else if (fs::exists(dir / "ca.key", ec)) {
    auto cert = ReadPem((dir / "ca.crt").string(), "the pool's CA");
    auto key = ReadPem((dir / "ca.key").string(), "the pool's CA key");
    if (!cert) return tl::unexpected(cert.error());
    if (!key) return tl::unexpected(key.error());
    return CertKey{.cert_pem = *cert, .key_pem = *key};
  } else {
    auto made = MakeCa("gpupool CA", 3650);
    if (!made) return tl::unexpected(made.error());
    ca = *made;
  }
  if (Status s = StoreSecret((dir / "ca.key").string(), ca.key_pem); !s.ok()) return tl::unexpected(s);
  std::ofstream((dir / "ca.crt").string()) << ca.cert_pem;
  return ca;
}

// TLS for the server's listeners: the pool's CA, and the server's certificate (the operator's
// with --tls-cert, else one the CA issues at every start for the names ServerNames finds).
Status PrepareTls(Server& srv, const ServerArgs& a, EtcdClient* etcd) {
  namespace fs = std::filesystem;
  auto ttl = ParseDuration(a.node_cert_ttl);
  if (!ttl || ttl->value() < 10'000) return BadArg("--node-cert-ttl: expected a duration of at least 10s, e.g. 30d");
  srv.node_cert_seconds = ttl->value() / 1000;
  auto ca = PoolCa(a, etcd);
  if (!ca) return Status(ca.error().code(), "TLS: " + ca.error().message());
  srv.node_ca = *ca;
  ServerTls tls{.client_ca_pem = ca->cert_pem, .plain_from_anywhere = a.insecure_http};
  const fs::path dir = fs::path(a.data_dir) / "tls";
  if (!a.tls_cert.empty() || !a.tls_key.empty()) {
    if (a.tls_cert.empty() || a.tls_key.empty() || a.tls_ca.empty()) {
      return BadArg("--tls-cert, --tls-key and --tls-ca go together (the server's certificate, its key, and the CA that signed "
                    "it, for agents and the CLI)");
    }
    auto cert = ReadPem(a.tls_cert, "--tls-cert");
    auto key = ReadPem(a.tls_key, "--tls-key");
    auto trust = ReadPem(a.tls_ca, "--tls-ca");
    for (const auto* r : {&cert, &key, &trust}) {
      if (!*r) return r->error();
    }
    if (Status s = VerifyCert(*trust, *cert); !s.ok()) return BadArg(fmt::format("--tls-cert {}: not signed by --tls-ca {}: {}", a.tls_cert, a.tls_ca, s.message()));
    tls.cert_chain_pem = *cert;
    tls.key_pem = *key;
    srv.ca_pem = *trust;
  } else {
    auto server = IssueCert(*ca, "gpupool server", ServerNames(a), CertUse::kServer, 365);
    if (!server) return Status(server.error().code(), "TLS: " + server.error().message());
    tls.cert_chain_pem = server->cert_pem + ca->cert_pem;
    tls.key_pem = server->key_pem;
    srv.ca_pem = ca->cert_pem;
    if (Status s = StoreSecret((dir / "server.key").string(), server->key_pem); !s.ok()) return s;
    std::ofstream((dir / "server.crt").string()) << server->cert_pem;
  }
  auto hash = PublicKeyHash(srv.ca_pem);
  if (!hash) return hash.error();
  srv.ca_hash = *hash;
  srv.tls = std::move(tls);
  return Status::Ok();
}

// The address agents this server starts are given: plain HTTP over loopback, else HTTPS (they
// check the server against the join token's CA hash).
std::string AgentAddress(const std::string& advertise) {
  const std::string host = advertise.substr(0, advertise.rfind(':'));
  return IsLoopbackHost(host) ? advertise : "https://" + advertise;
}

// The join token as agents are given it (with the CA's hash), in DATA_DIR/join.token.
Status WriteJoinToken(Server& srv, const ServerArgs& a) {
  srv.join_token_full = FormatJoinToken(JoinToken{.secret = srv.join_token, .ca_hash = srv.ca_hash});
  return StoreSecret((std::filesystem::path(a.data_dir) / "join.token").string(), srv.join_token_full);
}

// What a starting server prints after its address: where the CA and the tokens are.
std::string StartBanner(const Server& srv, const ServerArgs& a) {
  const std::string ca = a.tls_ca.empty() ? (std::filesystem::path(a.data_dir) / "tls" / "ca.crt").string() : a.tls_ca;
  return fmt::format("  plain HTTP:  {}\n  CA:          {} ({})\n  admin token: {}\n  join token:  {}/join.token (with the CA's hash)\n",
                     a.insecure_http ? "from anywhere (--insecure-http)" : "over loopback only", ca, srv.ca_hash,
                     srv.admin_token_path, a.data_dir);
}

Status ListenAll(Server& srv, const ServerArgs& a) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto header_timeout = ParseDuration(a.header_timeout);
  if (!header_timeout || header_timeout->value() < 100) return BadArg("--header-timeout: expected a duration such as 15s");
  // Uploads are spooled beside the checkpoint store, so that storing one is a rename.
  const fs::path spool = fs::path(a.data_dir) / "uploads";
  fs::create_directories(spool, ec);
  const ServerLimits limits{.header_timeout = *header_timeout, .spool_dir = spool};
  Server* s = &srv;
  auto admit = [s](const RequestHead& h) {
    if (!s->api || h.target == "/v1/leader") return Admission{};  // a standby's answer, and who leads: no token
    return s->api->Admit(h);
  };
  auto handle = [s](HttpRequest r, Respond respond) {
    if (r.method == "GET" && r.path == "/v1/leader") return respond(s->LeaderInfo());
    if (s->api) return s->api->Handle(std::move(r), std::move(respond));
    respond(s->Standby(r));
  };
  auto port = srv.loop.Listen(a.listen, handle, admit, limits, srv.tls);
  if (!port) return port.error();
  srv.port = *port;
  for (const std::string& more : a.also_listen) {
    auto p = srv.loop.Listen(more, handle, admit, limits, srv.tls);
    if (!p) return p.error();
  }
  if (srv.advertise.empty()) {
    srv.advertise = a.advertise.empty() ? a.listen.substr(0, a.listen.rfind(':')) + ":" + std::to_string(*port) : a.advertise;
  }
  return Status::Ok();
}

// Builds the controller and everything around it on `journal`: this server leads from now on.
Status StartLeader(Server& srv, const ServerArgs& a, std::unique_ptr<Journal> journal) {
  namespace fs = std::filesystem;
  std::error_code ec;
  srv.journal = std::move(journal);
  Fleet base;
  if (!a.fleet.empty()) {
    auto f = LoadFleet(a.fleet, FleetNodes::kFromAgents);
    if (!f) return f.error();
    base = std::move(*f);
  }
  auto policy = BuiltinRegistry().MakePolicy(a.policy);
  if (!policy) return Status(policy.error().code(), "--policy: " + policy.error().message());
  auto pause = ParseDuration(a.acceptable_pause);
  if (!pause) return BadArg("--acceptable-pause: " + pause.error().message());
  if (!(a.suspect_phi > 0 && a.down_phi > a.suspect_phi)) {
    return BadArg("--suspect-phi and --down-phi: expected 0 < suspect < down, e.g. 3 and 8");
  }
  auto probation = ParseDuration(a.gpu_probation);
  if (!probation) return BadArg("--gpu-probation: " + probation.error().message());
  auto telemetry = ParseDuration(a.telemetry_events);
  if (!telemetry) return BadArg("--telemetry-events: " + telemetry.error().message());
  if (auto e = ApplySchedulingFlags(a.scheduling, *policy)) return BadArg(*e);
  int preempt_grace_ms = -1;
  if (!a.preempt_grace.empty()) {
    auto g = ParseDuration(a.preempt_grace);
    if (!g || g->value() > 3'600'000) return BadArg("--preempt-grace: expected a duration up to 1h, e.g. 30s");
    preempt_grace_ms = static_cast<int>(g->value());
  }
  auto half_life = ParseDuration(a.fair_share_half_life);
  if (!half_life || half_life->value() <= 0) return BadArg("--fair-share-half-life: expected a positive duration, e.g. 7d or 10m");
  auto lease = ParseDuration(a.lease);
  if (!lease || lease->value() < 500) return BadArg("--lease: expected a duration of at least 500ms, e.g. 2s");
  if (a.checkpoint_max_mib < 1) return BadArg("--checkpoint-max-mib: expected at least 1");
  // Jobs' secrets are sealed under a key kept apart from the store (docs/live-pool.md).
  auto box = SecretBox::LoadOrCreate(a.secrets_key_file.empty() ? (fs::path(a.data_dir) / "secrets.key").string() : a.secrets_key_file);
  if (!box) return Status(box.error().code(), "--secrets-key-file: " + box.error().message());
  auto secrets = std::make_shared<SecretBox>(*box);
  std::string metrics_token;
  if (!a.metrics_token_file.empty()) {
    auto t = LoadOrCreateToken(a.metrics_token_file);
    if (!t) return Status(t.error().code(), "--metrics-token-file: " + t.error().message());
    metrics_token = *t;
  }
  srv.controller = std::make_unique<Controller>(
      std::move(base), *srv.journal, srv.clock,
      ControllerOptions{.policy = a.policy, .seed = a.seed, .log_dir = fs::path(a.data_dir) / "logs",
                        .detector = PhiOptions{.acceptable_pause = *pause, .suspect_phi = a.suspect_phi, .down_phi = a.down_phi},
                        .lease = *lease,
                        .max_retries = a.max_retries,
                        .checkpoint_root = a.checkpoint_root.empty() ? fs::path() : fs::absolute(a.checkpoint_root),
                        .checkpoint_store = fs::absolute(fs::path(a.data_dir) / "checkpoints"),
                        .gpu_probation = *probation,
                        .telemetry_events = *telemetry,
                        .events_retain = a.events_retain,
                        .checkpoint_max_bytes = static_cast<int64_t>(a.checkpoint_max_mib) << 20,
                        .stall = Millis{700},
                        .fair_share_half_life = *half_life,
                        .preempt_grace_ms = preempt_grace_ms,
                        .allow_workdir = {a.allow_workdir.begin(), a.allow_workdir.end()},
                        .seal_secret = [secrets](std::string_view v) { return secrets->Seal(v); },
                        .open_secret = [secrets](std::string_view v) { return secrets->Open(v); },
                        .epoch = srv.epoch},
      std::move(*policy));
  if (Status s = srv.controller->Recover(); !s.ok()) return s;
  // Uploads left by a crash (of this server, or of the leader before it).
  const fs::path spool = fs::path(a.data_dir) / "uploads";
  for (const auto& old : fs::directory_iterator(spool, ec)) fs::remove(old.path(), ec);
  // The events' CloudEvents source: the pool's, the same whichever server leads (so that an
  // event delivered twice across a change of leader has the same source and id).
  const std::string event_source = srv.etcd ? "gpupool:" + a.store_prefix : "gpupool://" + a.listen;
  srv.api = std::make_unique<Api>(*srv.controller, srv.loop,
                                  ApiOptions{.admin_token = srv.admin_token, .join_token = srv.join_token,
                                             .event_source = event_source,
                                             .web_dir = FindWebDir(a.web_dir), .body_limit = a.body_limit,
                                             .max_queued_heartbeats = a.max_queued_heartbeats,
                                             .metrics_gpu_series_nodes = a.metrics_gpu_series_nodes,
                                             .metrics_token = metrics_token,
                                             .ca_pem = srv.ca_pem,
                                             .sign_node_certificate = [ca = srv.node_ca, ttl = srv.node_cert_seconds](
                                                                          const std::string& node, const std::string& csr) {
                                               return SignClientCsr(ca, csr, node, ttl);
                                             }});
  Api* api = srv.api.get();
  if (!a.events.empty()) {
    auto opts = ParseKafkaUrl(a.events);
    if (!opts) return opts.error();
    opts->source = event_source;
    auto source = srv.sqlite ? OpenSqliteEventSource((fs::path(a.data_dir) / "gpupool.db").string(),
                                                     [j = srv.sqlite] { return j->durable_event_seq(); })
                             : OpenEtcdEventSource(srv.etcd->endpoints(), srv.etcd->timeout(), a.store_prefix,
                                                   a.store_prefix + "/leader", static_cast<int64_t>(srv.epoch),
                                                   [j = srv.etcd_journal] { return j->durable_event_seq(); });
    if (!source) return source.error();
    auto sink = KafkaSink::Start(std::move(*opts), std::move(*source));
    if (!sink) return sink.error();
    srv.kafka = std::move(*sink);
    KafkaSink* k = srv.kafka.get();
    Controller* ctl = srv.controller.get();
    api->AddEventListener([k] { k->Wake(); });
    srv.controller->sinks_delivered = [k] { return k->stats().delivered; };
    api->AddMetrics([k, ctl](Families& out) {
      const KafkaSink::Stats st = k->stats();
      const std::vector<std::pair<std::string, std::string>> label = {{"sink", k->name()}};
      AddValue(FamilyIn(out, "gpupool_events_delivered", "Every event up to this number is delivered.", prometheus::MetricType::Gauge),
               label, static_cast<double>(st.delivered));
      AddValue(FamilyIn(out, "gpupool_events_pending", "Events stored but not yet delivered.", prometheus::MetricType::Gauge), label,
               static_cast<double>(ctl->last_event_seq() - std::min(st.delivered, ctl->last_event_seq())));
      AddValue(FamilyIn(out, "gpupool_events_failed_total", "Events the sink refused for good.", prometheus::MetricType::Counter),
               label, static_cast<double>(st.failed));
      AddValue(FamilyIn(out, "gpupool_event_sink_up", "1 while the sink reaches its brokers.", prometheus::MetricType::Gauge), label,
               st.brokers_up ? 1 : 0);
    });
    k->Wake();
  }
  // Providers whose nodes the pool acquires itself (docs/providers.md).
  std::vector<std::unique_ptr<Provisioner>> provisioners;
  bool any = false;
  for (const Provider& p : srv.controller->fleet().providers) {
    const ProvisionerSpec& v = p.provisioner;
    std::unique_ptr<Provisioner> made;
    if (v.kind == ProvisionerSpec::Kind::kExec) {
      made = MakeExecProvisioner(v.command, v.deadline, [](const std::string& line) { fmt::print(stderr, "gpupool server: {}\n", line); });
    } else if (v.kind == ProvisionerSpec::Kind::kLocal) {
      const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
      made = MakeLocalProvisioner(LocalProvisionerOptions{
          .dir = fs::absolute(fs::path(a.data_dir) / "provisioners" / p.name), .gpupool = exe.string(), .provider = p.name,
          .seed = v.seed, .boot_delay_min = v.boot_delay_min, .boot_delay_max = v.boot_delay_max, .stockout_offers = v.stockout,
          .quota_gpus = v.quota_gpus, .spot_mtbf = v.spot_mtbf, .spot_lifetime = v.spot_lifetime,
          .notice = v.notice});
    }
    any = any || made != nullptr;
    provisioners.push_back(std::move(made));
  }
  if (any) {
    auto idle = ParseDuration(a.scale_down_idle);
    if (!idle) return BadArg("--scale-down-idle: " + idle.error().message());
    srv.autoscaler = std::make_unique<Autoscaler>(*srv.controller, srv.loop, std::move(provisioners),
                                                  AutoscalerOptions{.server = AgentAddress(srv.advertise), .join_token = srv.join_token_full, .idle_after = *idle});
    srv.autoscaler->Start();
    Autoscaler* as = srv.autoscaler.get();
    api->offers = [as] { return as->OffersJson(); };
    api->AddMetrics([as](Families& f) { as->CollectMetrics(f); });
  }
  Controller* c = srv.controller.get();
  srv.loop.Every(Millis{100}, [c] { c->Tick(); });  // detection, fences, backoffs: cheap (live jobs only)
  api->Poke();
  return Status::Ok();
}

// One server on a SQLite file of its own (the default, and `dev`).
Result<std::unique_ptr<Server>> StartServer(const ServerArgs& a) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (Status s = PrepareDataDir(a); !s.ok()) return tl::unexpected(s);
  auto srv = std::make_unique<Server>();
  srv->admin_token_path = (fs::path(a.data_dir) / "admin.token").string();
  auto admin = LoadOrCreateToken(srv->admin_token_path);
  if (!admin) return tl::unexpected(admin.error());
  srv->admin_token = *admin;
  auto join = LoadOrCreateToken((fs::path(a.data_dir) / "join.token").string());
  if (!join) return tl::unexpected(join.error());
  srv->join_token = ParseJoinToken(*join).secret;
  if (Status s = PrepareTls(*srv, a, nullptr); !s.ok()) return tl::unexpected(s);
  if (Status s = WriteJoinToken(*srv, a); !s.ok()) return tl::unexpected(s);
  auto journal = SqliteJournal::Open((fs::path(a.data_dir) / "gpupool.db").string());
  if (!journal) return tl::unexpected(journal.error());
  for (const char* f : {"gpupool.db", "gpupool.db-wal", "gpupool.db-shm"}) {
    fs::permissions(fs::path(a.data_dir) / f, fs::perms::owner_read | fs::perms::owner_write, ec);  // jobs' env may hold secrets
  }
  srv->sqlite = journal->get();
  if (Status s = ListenAll(*srv, a); !s.ok()) return tl::unexpected(s);
  if (Status s = StartLeader(*srv, a, std::move(*journal)); !s.ok()) return tl::unexpected(s);
  EventLoop* loop = &srv->loop;
  srv->loop.OnSignals([loop](int) { loop->Stop(); });
  return srv;
}

// A secret every server of the pool shares, kept in etcd (created by the first server that
// asks) and written to `path` (0600) for the CLI and agents on this host.
Result<std::string> SharedSecret(EtcdClient& etcd, const std::string& key, const std::string& path) {
  auto fresh = NewSecret();
  if (!fresh) return tl::unexpected(fresh.error());
  auto r = etcd.Txn({EtcdCreated{.key = key, .create_revision = 0}}, {EtcdOp::Put(key, *fresh), EtcdOp::Get(key)}, {EtcdOp::Get(key)});
  if (!r) return tl::unexpected(r.error());
  if (r->ranges.empty() || r->ranges[0].kvs.empty()) return Error(StatusCode::kFailedPrecondition, "etcd: " + key + " is not there");
  const std::string secret = r->ranges[0].kvs[0].value;
  if (Status s = StoreSecret(path, secret); !s.ok()) return tl::unexpected(s);
  return secret;
}

// Several servers on etcd: each serves as a standby until it wins the election (creating the
// leader key on a lease of --leader-ttl, kept alive), then leads with every write fenced by
// that key's create revision (EtcdJournal). A leader that cannot renew its lease, or whose
// write finds another leader, stops at once: the process exits, writing nothing more.
int RunEtcdServer(const ServerArgs& a) {
  namespace fs = std::filesystem;
  auto fail = [](const std::string& why) {
    fmt::print(stderr, "gpupool server: {}\n", why);
    return 1;
  };
  const std::string endpoints = a.store.substr(std::string("etcd://").size());
  auto ttl = ParseDuration(a.leader_ttl);
  if (!ttl || ttl->value() < 2'000 || ttl->value() % 1000 != 0) {
    return fail("--leader-ttl: expected whole seconds, at least 2s (etcd's shortest lease), e.g. 3s");
  }
  if (a.store_prefix.empty() || a.store_prefix[0] != '/' || a.store_prefix.back() == '/') {
    return fail("--store-prefix: expected a key prefix such as /gpupool (a leading /, no trailing /)");
  }
  if (Status s = PrepareDataDir(a); !s.ok()) return fail(s.message());
  auto srv = std::make_unique<Server>();
  auto etcd = EtcdClient::Connect(endpoints, Millis{std::max<int64_t>(2'000, ttl->value() - 500)});
  if (!etcd) return fail("--store: " + etcd.error().message());
  srv->etcd = std::move(*etcd);
  srv->admin_token_path = (fs::path(a.data_dir) / "admin.token").string();
  auto admin = SharedSecret(*srv->etcd, a.store_prefix + "/secrets/admin-token", srv->admin_token_path);
  if (!admin) return fail("--store " + a.store + ": " + admin.error().message());
  srv->admin_token = *admin;
  auto join = SharedSecret(*srv->etcd, a.store_prefix + "/secrets/join-token", (fs::path(a.data_dir) / "join.token").string());
  if (!join) return fail("--store " + a.store + ": " + join.error().message());
  srv->join_token = *join;
  if (Status s = PrepareTls(*srv, a, srv->etcd.get()); !s.ok()) return fail(s.message());
  if (Status s = WriteJoinToken(*srv, a); !s.ok()) return fail(s.message());
  if (Status s = ListenAll(*srv, a); !s.ok()) return fail(s.message());
  const std::string host = a.listen.substr(0, a.listen.rfind(':'));
  fmt::print("gpupool server listening on https://{}:{} (standby until elected; store {}{})\n{}", host, srv->port, a.store,
             a.store_prefix, StartBanner(*srv, a));
  std::fflush(stdout);

  Server* s = srv.get();
  const std::string leader_key = a.store_prefix + "/leader";
  const int64_t ttl_s = ttl->value() / 1000;
  auto stop_now = [](const std::string& why) {
    // Nothing more from this process: no write, no answer, no command to an agent.
    fmt::print(stderr, "gpupool server: no longer the leader ({}); stopping\n", why);
    std::_Exit(75);
  };
  auto lease_id = std::make_shared<int64_t>(0);
  auto last_renewed = std::make_shared<std::chrono::steady_clock::time_point>();
  auto campaign = [s, a, leader_key, ttl_s, lease_id, last_renewed, stop_now] {
    if (s->api) return;
    auto cur = s->etcd->Range(leader_key);
    if (!cur) {
      fmt::print(stderr, "gpupool server: etcd: {}\n", cur.error().message());
      return;
    }
    if (!cur->kvs.empty()) {
      s->leader = cur->kvs[0].value;
      return;
    }
    auto lease = s->etcd->LeaseGrant(ttl_s);
    if (!lease) return;
    auto won = s->etcd->Txn({EtcdCreated{.key = leader_key, .create_revision = 0}},
                            {EtcdOp::Put(leader_key, s->advertise, *lease), EtcdOp::Get(leader_key)}, {EtcdOp::Get(leader_key)});
    if (!won || won->ranges.empty() || won->ranges[0].kvs.empty()) {
      (void)s->etcd->LeaseRevoke(*lease);  // best effort: it expires anyway
      return;
    }
    const EtcdKv& key = won->ranges[0].kvs[0];
    if (!won->succeeded && key.lease != *lease) {
      s->leader = key.value;  // another server was quicker
      (void)s->etcd->LeaseRevoke(*lease);
      return;
    }
    *lease_id = *lease;
    *last_renewed = std::chrono::steady_clock::now();
    s->epoch = static_cast<uint64_t>(key.create_revision);
    s->leader = s->advertise;
    auto journal = std::make_unique<EtcdJournal>(*s->etcd, a.store_prefix, EtcdFence{.key = leader_key, .create_revision = key.create_revision},
                                                 stop_now);
    s->etcd_journal = journal.get();
    const auto t0 = std::chrono::steady_clock::now();
    if (Status st = StartLeader(*s, a, std::move(journal)); !st.ok()) {
      fmt::print(stderr, "gpupool server: {}\n", st.message());
      (void)s->etcd->LeaseRevoke(*lease);  // let another server lead
      std::_Exit(1);
    }
    fmt::print("gpupool server: leading (epoch {}), state recovered from etcd in {} ms\n", s->epoch,
               std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
    std::fflush(stdout);
  };
  // A standby looks for a leader four times a second: a lease that ran out is taken over
  // within --leader-ttl and a quarter of a second.
  srv->loop.Every(Millis{250}, campaign);
  srv->loop.Post(campaign);
  // The leader renews its lease three times a TTL; if it could not for a whole TTL, another
  // server may lead by now: it stops.
  srv->loop.Every(Millis{ttl->value() / 3}, [s, lease_id, last_renewed, ttl, stop_now] {
    if (!s->api || *lease_id == 0) return;
    auto left = s->etcd->LeaseKeepAlive(*lease_id);
    const auto now = std::chrono::steady_clock::now();
    if (left && *left > 0) {
      *last_renewed = now;
      return;
    }
    if (left || now - *last_renewed >= std::chrono::milliseconds(ttl->value())) {
      stop_now(left ? "its lease in etcd ran out" : "its lease could not be renewed: " + left.error().message());
    }
  });
  // etcd keeps every revision until compacted: the history older than a minute goes, and the
  // member's file is defragmented past 256 MiB (well inside etcd's 2 GiB default quota).
  srv->loop.Every(Millis{60'000}, [s] {
    if (!s->etcd_journal) return;
    if (Status st = s->etcd_journal->Maintain(int64_t{256} << 20); !st.ok()) {
      fmt::print(stderr, "gpupool server: etcd maintenance: {}\n", st.message());
    }
  });
  EventLoop* loop = &srv->loop;
  srv->loop.OnSignals([loop](int) { loop->Stop(); });
  srv->loop.Run();
  if (srv->controller) srv->controller->SaveDecayedUsage(srv->clock.Now());
  if (*lease_id != 0) (void)srv->etcd->LeaseRevoke(*lease_id);  // a clean stop hands over at once
  return 0;
}

// `--config FILE`: lines of `key = value` (listen, data_dir, fleet, policy, seed); flags given
// on the command line win. Unknown keys and bad lines are errors naming the line.
Status ApplyConfig(const std::string& path, ServerArgs& a, const std::set<std::string>& given) {
  std::ifstream in(path);
  if (!in) return Status(StatusCode::kNotFound, fmt::format("{}: cannot open", path));
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const size_t eq = line.find('=');
    auto trim = [](std::string v) {
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t' || v.front() == '"')) v.erase(0, 1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t' || v.back() == '"' || v.back() == '\r')) v.pop_back();
      return v;
    };
    if (eq == std::string::npos) return Status(StatusCode::kInvalidArgument, fmt::format("{}:{}: expected key = value", path, n));
    const std::string key = trim(line.substr(0, eq));
    const std::string value = trim(line.substr(eq + 1));
    if (given.count(key)) continue;
    if (key == "listen") a.listen = value;
    else if (key == "data_dir") a.data_dir = value;
    else if (key == "fleet") a.fleet = value;
    else if (key == "policy") a.policy = value;
    else if (key == "seed") a.seed = std::strtoull(value.c_str(), nullptr, 10);
    else return Status(StatusCode::kInvalidArgument,
                       fmt::format("{}:{}: unknown key '{}'; expected listen, data_dir, fleet, policy or seed", path, n, key));
  }
  return Status::Ok();
}

int RunServer(const ServerArgs& a) {
  if (a.store.starts_with("etcd://")) return RunEtcdServer(a);
  if (a.store != "sqlite") {
    fmt::print(stderr, "gpupool server: --store: expected sqlite or etcd://HOST:PORT[,HOST:PORT...], got '{}'\n", a.store);
    return 1;
  }
  auto srv = StartServer(a);
  if (!srv) {
    fmt::print(stderr, "gpupool server: {}\n", srv.error().message());
    return 1;
  }
  const std::string host = a.listen.substr(0, a.listen.rfind(':'));
  // The tokens are named by where they are, never printed: output ends up in logs and
  // terminals' scrollback. The dashboard link carries a one-time code instead.
  const bool loopback = AgentAddress(a.listen) == a.listen;
  fmt::print("gpupool server listening on https://{}:{}\n{}"
             "  dashboard:   {}://{}:{}/?code={} (a one-time link, 15 min; or sign in with the admin token)\n",
             host, (*srv)->port, StartBanner(**srv, a), loopback ? "http" : "https", host, (*srv)->port,
             (*srv)->api->IssueLoginCode());
  std::fflush(stdout);
  (*srv)->loop.Run();
  (*srv)->controller->SaveDecayedUsage((*srv)->clock.Now());  // fair share remembers past a stop
  return 0;
}

std::atomic<bool> g_stop{false};
void OnStopSignal(int) { g_stop.store(true); }

struct AgentArgs {
  AgentOptions options;
  std::string join_token_file;
  std::string interval = "500ms";
  std::string checkpoint_sync = "5s";
  std::string selftest_timeout = "2m";
};

// The join token from --join-token, else from --join-token-file; an error names what is missing.
Status LoadJoinToken(std::string& token, const std::string& file) {
  if (token.empty() && !file.empty()) {
    auto t = ReadToken(file);
    if (!t) return t.error();
    token = *t;
  }
  if (token.empty()) return Status(StatusCode::kInvalidArgument, "--join-token or --join-token-file is required");
  return Status::Ok();
}

int RunAgent(AgentArgs a) {
  auto fail = [](const std::string& m) {
    fmt::print(stderr, "gpupool agent: {}\n", m);
    return 1;
  };
  if (Status s = LoadJoinToken(a.options.join_token, a.join_token_file); !s.ok()) return fail(s.message());
  auto interval = ParseDuration(a.interval);
  if (!interval || interval->value() < 10) return fail("--interval: expected a duration of at least 10ms, e.g. 500ms");
  a.options.interval = *interval;
  auto sync = ParseDuration(a.checkpoint_sync);
  if (!sync || sync->value() < 10) return fail("--checkpoint-sync: expected a duration of at least 10ms, e.g. 5s");
  a.options.checkpoint_sync = *sync;
  auto st = ParseDuration(a.selftest_timeout);
  if (!st || st->value() < 100) return fail("--gpu-selftest-timeout: expected a duration of at least 100ms, e.g. 2m");
  a.options.selftest_timeout = *st;
  auto agent = Agent::Create(a.options);
  if (!agent) return fail(agent.error().message());
  signal(SIGINT, OnStopSignal);
  signal(SIGTERM, OnStopSignal);
  Status s = (*agent)->Run(g_stop);
  if (!s.ok()) return fail(s.message());
  return 0;
}

struct HollowArgs {
  HollowOptions options;
  std::string join_token_file;
  std::string duration = "0s";
  std::string interval = "500ms";
};

int RunHollow(HollowArgs a) {
  auto fail = [](const std::string& m) {
    fmt::print(stderr, "gpupool hollow: {}\n", m);
    return 1;
  };
  if (Status s = LoadJoinToken(a.options.join_token, a.join_token_file); !s.ok()) return fail(s.message());
  auto duration = ParseDuration(a.duration);
  if (!duration) return fail(fmt::format("--duration: {}", duration.error().message()));
  a.options.duration = *duration;
  auto interval = ParseDuration(a.interval);
  if (!interval || interval->value() < 10) return fail("--interval: expected a duration of at least 10ms, e.g. 500ms");
  a.options.interval = *interval;
  // One socket per node: the soft limit on open files is raised to the hard one.
  const size_t files = RaiseOpenFileLimit();
  if (files < static_cast<size_t>(a.options.nodes) + 64) {
    return fail(fmt::format("--nodes {} needs {} open files, and this process may open {} (ulimit -n)", a.options.nodes,
                            a.options.nodes + 64, files));
  }
  EventLoop loop;
  auto hollow = Hollow::Create(loop, a.options);
  if (!hollow) return fail(hollow.error().message());
  Hollow& h = **hollow;
  auto print = [&h](std::FILE* to) {
    const Hollow::Counts c = h.counts();
    fmt::print(to, "{{\"nodes\": {}, \"registered\": {}, \"running\": {}, \"started\": {}, \"ended\": {}, \"repeats\": {}, "
                   "\"heartbeats\": {}, \"errors\": {}}}\n",
               c.nodes, c.registered, c.running, c.started, c.ended, c.repeats, c.heartbeats, c.errors);
    std::fflush(to);
  };
  if (h.control_port() != 0) fmt::print(stderr, "gpupool hollow: control on 127.0.0.1:{}\n", h.control_port());
  fmt::print(stderr, "gpupool hollow: {} nodes of {} for {}\n", a.options.nodes, a.options.gpus, a.options.server);
  loop.Every(Millis{5'000}, [&] { print(stderr); });
  loop.OnSignals([&](int) { loop.Stop(); });
  h.Start();
  loop.Run();
  print(stdout);
  return 0;
}

struct DevArgs {
  std::string fleet;
  std::string data_dir = "/tmp/gpupool-dev";
  std::string listen = "127.0.0.1:7070";
  int max_nodes = 4;
  bool autoscale = false;
};

int RunDev(const DevArgs& a) {
  namespace fs = std::filesystem;
  auto fail = [](const std::string& m) {
    fmt::print(stderr, "gpupool dev: {}\n", m);
    return 1;
  };
  std::string fleet_path = a.fleet;
  if (fleet_path.empty()) {
    const char* name = a.autoscale ? "dev-autoscale.toml" : "mixed.toml";
    for (const std::string& p : {fmt::format("examples/fleets/{}", name), fmt::format("/usr/share/gpupool/fleets/{}", name)}) {
      if (fs::exists(p)) {
        fleet_path = p;
        break;
      }
    }
  }
  Fleet fleet;
  if (!fleet_path.empty()) {
    auto f = LoadFleet(fleet_path);
    if (!f) return fail(f.error().message());
    fleet = std::move(*f);
  } else {
    fleet = *ParseFleetShorthand("2x8xH100");
  }
  if (a.autoscale && fleet.offers.empty()) {
    return fail(fleet_path.empty() ? "--autoscale: examples/fleets/dev-autoscale.toml is not here (run from the repository, or "
                                     "give --fleet FILE with [[offer]]s)"
                                   : fmt::format("--autoscale: {} has no [[offer]] to buy nodes from", fleet_path));
  }
  // Scaled down: the first node of each group, up to max_nodes.
  std::vector<const Node*> picks;
  std::set<std::string> groups;
  for (const Node& n : fleet.nodes) {
    if (n.gpus.empty()) continue;
    const std::string group = n.name.substr(0, n.name.rfind('-'));
    if (groups.insert(group).second && static_cast<int>(picks.size()) < a.max_nodes) picks.push_back(&n);
  }
  ServerArgs sa{.listen = a.listen, .data_dir = a.data_dir, .fleet = fleet_path};
  if (a.autoscale) sa.scale_down_idle = "20s";
  auto srv = StartServer(sa);
  if (!srv) return fail(srv.error().message());
  const std::string addr = fmt::format("127.0.0.1:{}", (*srv)->port);
  std::vector<pid_t> agents;
  for (const Node* n : picks) {
    const std::string work = (fs::path(a.data_dir) / "agents" / n->name).string();
    const std::string gpus = fmt::format("{}x{}", n->gpus.size(), fleet.model(n->gpus[0].model).name);
    // TLS even on one machine: the agents check the server against the join token's CA hash
    // and get their client certificates, as on a real fleet.
    std::vector<std::string> args = {"/proc/self/exe", "agent", "--server", "https://" + addr, "--join-token-file",
                                     (fs::path(a.data_dir) / "join.token").string(), "--simulate-gpus", gpus,
                                     "--name", n->name, "--site", fleet.site(n->site).name,
                                     "--provider", fleet.provider(n->provider).name, "--tier",
                                     std::string(PriceTierName(n->tier)), "--work-dir", work, "--metrics-listen",
                                     fmt::format("127.0.0.1:{}", 9400 + agents.size())};
    const pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);  // agents go when dev goes, however it ends
      std::vector<char*> argv;
      for (std::string& s : args) argv.push_back(s.data());
      argv.push_back(nullptr);
      execv("/proc/self/exe", argv.data());
      _exit(127);
    }
    agents.push_back(pid);
    fmt::print("  agent {} ({} simulated {}, {} / {}), metrics on http://127.0.0.1:{}/metrics\n", n->name, n->gpus.size(),
               fleet.model(n->gpus[0].model).name, fleet.site(n->site).name, fleet.provider(n->provider).name,
               9400 + agents.size() - 1);
  }
  // The binary as the user can type it: relative to the working directory when it is below it.
  std::error_code ec;
  std::string self = fs::read_symlink("/proc/self/exe", ec).string();
  if (const auto rel = fs::relative(self, fs::current_path(), ec); !ec && !rel.empty() && !rel.string().starts_with("..")) {
    self = rel.string();
  }
  fmt::print(
      "gpupool dev: server on https://{} with {} agents, policy {}\n"
      "  dashboard: http://{}/?code={} (a one-time link; or sign in with the admin token)\n"
      "  admin token: {}/admin.token   data: {}\n"
      "  try it (in another terminal):\n"
      "    export GPUPOOL_ADDR=https://{} GPUPOOL_CA={}/tls/ca.crt GPUPOOL_TOKEN=$(cat {}/admin.token)\n"
      "    {} submit --gpus 2 -- sh -c 'echo hello from $GPUPOOL_NODE on GPUs $CUDA_VISIBLE_DEVICES'\n"
      "    {} wait 1; {} logs 1; {} jobs; {} nodes\n"
      "{}"
      "  Ctrl-C stops the pool.\n",
      addr, agents.size(), sa.policy, addr, (*srv)->api->IssueLoginCode(), a.data_dir, a.data_dir, addr, a.data_dir, a.data_dir, self,
      self, self, self, self,
      a.autoscale ? fmt::format("  autoscaling: nodes are bought from {} offers when jobs wait, given back after 20 s idle\n"
                                "    {} offers; {} explain 1; {} usage --by offer,kind\n",
                                fleet.offers.size(), self, self, self)
                  : "");
  std::fflush(stdout);
  (*srv)->loop.Run();
  // The nodes dev bought go with it (a server keeps them across restarts; dev is one session).
  if ((*srv)->autoscaler) (*srv)->autoscaler->DeleteEverything();
  for (pid_t p : agents) kill(p, SIGTERM);
  // Agents finish their current heartbeat first; after 3 s they are stopped outright.
  for (int waited = 0; waited < 300; ++waited) {
    bool all = true;
    for (pid_t& p : agents) {
      if (p > 0 && waitpid(p, nullptr, WNOHANG) == p) p = -1;
      all = all && p < 0;
    }
    if (all) break;
    usleep(10'000);
  }
  for (pid_t p : agents) {
    if (p > 0) {
      kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
  }
  return 0;
}

}  // namespace

void AddPoolCommands(CLI::App& app, int* exit_code) {
  auto s = std::make_shared<ServerArgs>();
  CLI::App* server = app.add_subcommand("server", "Run the controller: REST API, scheduler, store");
  server->add_option("--listen", s->listen, "address to serve on, HOST:PORT (port 0: any free port)");
  server->add_option("--also-listen", s->also_listen, "another HOST:PORT to serve on (repeatable)")
      ->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  server->add_option("--data-dir", s->data_dir, "store, tokens and job logs");
  server->add_option("--fleet", s->fleet, "fleet file with providers, sites, links and prices (nodes come from agents)");
  server->add_option("--policy", s->policy, "scheduling policy (see `gpupool policies`); fairshare/POLICY or drf/POLICY orders tenants by share");
  server->add_option("--fair-share-half-life", s->fair_share_half_life,
                     "the half-life of a tenant's decayed GPU usage under fairshare (default 7d, as Slurm's)");
  AddSchedulingFlags(server, s->scheduling);
  server->add_option("--preempt-grace", s->preempt_grace,
                     "a preempted job's time between SIGTERM and SIGKILL, to checkpoint (default: the agent's grace)");
  server->add_option("--seed", s->seed, "seed for randomised policies");
  server->add_option("--header-timeout", s->header_timeout,
                     "a request's header must arrive within this, else the connection is closed (slow clients), default 15s");
  server->add_option("--max-queued-heartbeats", s->max_queued_heartbeats,
                     "past this many heartbeats waiting, a node's next one is held at its header, its body left in the "
                     "kernel until there is room (back-pressure on a large fleet); default 0: no limit")
      ->check(CLI::Range(size_t{0}, size_t{1} << 20));
  server->add_option("--metrics-gpu-series-nodes", s->metrics_gpu_series_nodes,
                     "/metrics repeats every GPU's DCGM_FI_* series for fleets up to this many nodes; past it they "
                     "come from the agents' own /metrics (default 1000; 10,000 nodes of 8 GPUs would be 54 MB a scrape)")
      ->check(CLI::Range(size_t{0}, size_t{1'000'000}));
  server->add_option("--advertise", s->advertise,
                     "HOST:PORT the agents the pool starts itself join (default: --listen's host and port)");
  server->add_option("--scale-down-idle", s->scale_down_idle,
                     "a node the pool acquired is released after being idle this long, billing-aware (default 60s)");
  server->add_option("--lease", s->lease,
                     "how long a task runs on without word from the server before it stops itself; "
                     "a dead node's jobs move after this (default 1800ms)");
  server->add_option("--gpu-probation", s->gpu_probation,
                     "after this long of clean telemetry a quarantined GPU is self-tested by its agent, and returns if it passes "
                     "(0: only `gpu undrain`)");
  server->add_option("--suspect-phi", s->suspect_phi, "phi at which a silent node is suspect (no new work), default 3");
  server->add_option("--down-phi", s->down_phi, "phi at which it is down (its jobs move), default 8: about 1.1 s of silence");
  server->add_option("--acceptable-pause", s->acceptable_pause, "silence always forgiven before phi rises, default 500ms");
  server->add_option("--checkpoint-root", s->checkpoint_root,
                     "shared storage every node mounts: GPUPOOL_CHECKPOINT_DIR of job J is ROOT/J for every attempt "
                     "(default: none; agents carry each task's checkpoint directory through the server)");
  server->add_option("--checkpoint-max-mib", s->checkpoint_max_mib,
                     "largest carried checkpoint archive, MiB, for uploads and for what agents pack (default 1024)");
  server->add_option("--allow-workdir", s->allow_workdir,
                     "a directory jobs may name as their absolute workdir (and below it); repeatable. Default: none, "
                     "jobs run in their task's own directory (a relative workdir is inside it)");
  server->add_option("--events", s->events,
                     "deliver the event log to Kafka: kafka://BROKER[,BROKER]/TOPIC[?librdkafka.property=value&...]");
  server->add_option("--web-dir", s->web_dir, "the dashboard's built files (default: web/dist beside the build)");
  server->add_option("--events-retain", s->events_retain,
                     "events the store keeps; older ones go, never before a sink has delivered them (default 1000000; 0: all)");
  server->add_option("--telemetry-events", s->telemetry_events, "a node.telemetry event per node this often (default 0s: none)");
  server->add_option("--max-retries", s->max_retries, "how often a job is placed again after failures not its own")
      ->check(CLI::Range(0, 100));
  server->add_option("--store", s->store,
                     "where the state lives: sqlite (default: DATA_DIR/gpupool.db, one server) or etcd://HOST:PORT[,HOST:PORT...] "
                     "(several servers, one leading; see docs/live-pool.md)");
  server->add_option("--store-prefix", s->store_prefix, "etcd: the key prefix of this pool's state (default /gpupool)");
  server->add_option("--tls-cert", s->tls_cert,
                     "the server's certificate (PEM, with its chain), with --tls-key and --tls-ca (default: one the pool's "
                     "own CA in DATA_DIR/tls issues at every start)");
  server->add_option("--tls-key", s->tls_key, "the key of --tls-cert");
  server->add_option("--tls-ca", s->tls_ca, "the CA that signed --tls-cert: served at /v1/ca, its hash in the join token");
  server->add_option("--tls-san", s->tls_san,
                     "another DNS name or address for the certificate the pool makes (repeatable; the listen addresses, "
                     "loopback and the host's name are always in it)");
  server->add_flag("--insecure-http", s->insecure_http,
                   "answer plain HTTP from other hosts too (default: plain HTTP over loopback only; TLS from anywhere)");
  server->add_option("--node-cert-ttl", s->node_cert_ttl,
                     "how long nodes' client certificates last; agents rotate them at two thirds (default 30d)");
  server->add_option("--metrics-token-file", s->metrics_token_file,
                     "/metrics wants this bearer token (or the admin's); the file is made with a new token if missing "
                     "(default: /metrics is open, as node-exporter's)");
  server->add_option("--secrets-key-file", s->secrets_key_file,
                     "the key jobs' secrets are sealed under in the store (default DATA_DIR/secrets.key, made on first start; "
                     "keep it apart from the store, and the same on every server of a pool)");
  server->add_option("--leader-ttl", s->leader_ttl,
                     "etcd: the leader's lease; a standby takes over within this (plus 250ms) of the leader's end (default 3s)");
  server->add_option("--config", s->config, "file of `key = value` lines: listen, data_dir, fleet, policy, seed");
  server->callback([s, server, exit_code] {
    if (!s->config.empty()) {
      std::set<std::string> given;
      for (const char* flag : {"listen", "data_dir", "fleet", "policy", "seed"}) {
        std::string name = std::string("--") + flag;
        std::replace(name.begin(), name.end(), '_', '-');
        if (server->count(name) > 0) given.insert(flag);
      }
      if (Status st = ApplyConfig(s->config, *s, given); !st.ok()) {
        fmt::print(stderr, "gpupool server: --config: {}\n", st.message());
        *exit_code = 1;
        return;
      }
    }
    *exit_code = RunServer(*s);
  });

  auto a = std::make_shared<AgentArgs>();
  CLI::App* agent = app.add_subcommand("agent", "Run a node agent: report GPUs and load, run the jobs given");
  agent->add_option("--server", a->options.server, "server address, HOST:PORT")->required();
  agent->add_option("--join-token", a->options.join_token, "the server's join token");
  agent->add_option("--join-token-file", a->join_token_file, "file holding the join token");
  agent->add_option("--ca", a->options.ca_file,
                    "the pool's CA for an https:// server (default: fetched from the server and checked against the join "
                    "token's hash, then kept in the work dir)");
  agent->add_flag("--insecure-http", a->options.insecure_http,
                  "allow plain HTTP to a server on another host (the join token and credential go in clear)");
  agent->add_option("--drivers", a->options.drivers,
                    "how this node runs tasks: auto (process, and oci where the agent is root and runc runs), or a list: "
                    "process, process,oci");
  agent->add_option("--runc", a->options.runc, "the OCI runtime for oci tasks (default: runc on PATH)");
  agent->add_option("--oci-unpack", a->options.oci_unpack,
                    "the command that unpacks a job's image into {dir}/rootfs, e.g. 'umoci unpack --image {image} {dir}' "
                    "(default: none; oci jobs give a rootfs)");
  agent->add_option("--cdi-spec-dir", a->options.cdi_dirs, "where CDI specs are (repeatable; default /etc/cdi, /var/run/cdi)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  agent->add_option("--cdi-kind", a->options.cdi_kind, "the CDI kind of this node's GPUs (default nvidia.com/gpu)");
  agent->add_option("--pids-limit", a->options.pids_limit,
                    "processes and threads a task may have at once, where cgroups allow (default 4096; 0: no limit)");
  agent->add_option("--simulate-gpus", a->options.simulate_gpus, "simulated GPUs, COUNTxMODEL (default: real GPUs via NVML)");
  agent->add_option("--work-dir", a->options.work_dir, "where task outputs are written");
  agent->add_option("--name", a->options.name, "node name (default: host name)");
  agent->add_option("--claim", a->options.claim,
                    "the claim this machine was created for, when the pool's provisioner started it (docs/providers.md)");
  agent->add_option("--site", a->options.site, "site of this node");
  agent->add_option("--provider", a->options.provider, "provider of this node");
  agent->add_option("--tier", a->options.tier, "price tier: on-demand, spot or reserved");
  agent->add_option("--address", a->options.address, "address other nodes use to reach this one (MASTER_ADDR)");
  agent->add_option("--interval", a->interval, "heartbeat interval when idle");
  agent->add_option("--job-user", a->options.job_user,
                    "when the agent runs as root, tasks run as this unprivileged user (default nobody)");
  agent->add_option("--metrics-listen", a->options.metrics_listen,
                    "Prometheus /metrics, HOST:PORT (default 127.0.0.1:9400, dcgm-exporter's port; off: none)");
  agent->add_option("--checkpoint-sync", a->checkpoint_sync,
                    "how often a running task's checkpoint directory is looked at; a changed one that has been "
                    "still for one period is shipped to the server (default 5s)");
  agent->add_option("--checkpoint-max-mib", a->options.checkpoint_max_mib, "largest checkpoint archive shipped, MiB (default 1024)");
  agent->add_option("--gpu-selftest", a->options.selftest_command,
                    "command that checks one GPU (exit 0: healthy), run with CUDA_VISIBLE_DEVICES and GPUPOOL_SELFTEST_GPU "
                    "set; default: the built-in CUDA check on real GPUs, none on simulated ones");
  agent->add_option("--gpu-selftest-timeout", a->selftest_timeout, "a self-test that runs longer fails (default 2m)");
  agent->callback([a, exit_code] { *exit_code = RunAgent(*a); });

  auto sv = std::make_shared<SuperviseOptions>();
  CLI::App* supervise = app.add_subcommand("supervise", "");  // internal: the agent runs each task under it
  supervise->group("");
  supervise->add_option("--lease-file", sv->lease_file);
  supervise->add_option("--status-file", sv->status_file);
  supervise->add_option("--lease-ms", sv->lease_ms);
  supervise->add_option("--grace-ms", sv->grace_ms);
  supervise->add_option("--uid", sv->uid);
  supervise->add_option("--gid", sv->gid);
  supervise->add_option("--after", sv->after)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  supervise->add_option("--cgroup", sv->cgroups)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  supervise->callback([sv, exit_code] { *exit_code = Supervise(*sv, TrailingCommand()); });

  auto ho = std::make_shared<HollowArgs>();
  CLI::App* hollow = app.add_subcommand(
      "hollow", "Many hollow agents in one process: real protocol and sockets, no processes behind the tasks");
  hollow->add_option("--server", ho->options.server, "server address, HOST:PORT")->required();
  hollow->add_option("--join-token", ho->options.join_token, "the server's join token");
  hollow->add_option("--join-token-file", ho->join_token_file, "file holding the join token");
  hollow->add_option("--nodes", ho->options.nodes, "how many nodes (default 100)");
  hollow->add_option("--gpus", ho->options.gpus, "GPUs per node, COUNTxMODEL (default 8xH100)");
  hollow->add_option("--prefix", ho->options.prefix, "node names: PREFIX0, PREFIX1, ... (default hollow-)");
  hollow->add_option("--sites", ho->options.sites, "spread the nodes over this many sites (default 1)");
  hollow->add_option("--provider", ho->options.provider, "the nodes' provider (default hollow)");
  hollow->add_option("--duration", ho->duration, "how long each task runs (default 0s: it ends at once)");
  hollow->add_option("--interval", ho->interval, "idle heartbeat interval (default 500ms; the server may ask for longer)");
  hollow->add_option("--max-tasks", ho->options.max_tasks, "tasks at once per node (default 256)");
  hollow->add_option("--control", ho->options.control_listen,
                     "control endpoint, 127.0.0.1:PORT: GET /v1/hollow (counts), POST /v1/hollow/nodes/NAME/stop|resume");
  hollow->add_option("--record", ho->options.record, "append every task start to this file: NODE JOB TASK ATTEMPT MS");
  hollow->callback([ho, exit_code] { *exit_code = RunHollow(*ho); });

  auto d = std::make_shared<DevArgs>();
  CLI::App* dev = app.add_subcommand("dev", "A whole pool on this machine: server plus agents with simulated GPUs");
  dev->add_option("--fleet", d->fleet, "fleet file (default: examples/fleets/mixed.toml, one node per group)");
  dev->add_option("--data-dir", d->data_dir, "store, tokens, logs and agent work directories");
  dev->add_option("--listen", d->listen, "server address, HOST:PORT");
  dev->add_option("--nodes", d->max_nodes, "how many agents at most")->check(CLI::Range(1, 64));
  dev->add_flag("--autoscale", d->autoscale,
                "start with no agents: nodes are bought from the fleet's offers when jobs wait (local provisioner: real agents "
                "with simulated GPUs) and released when idle (default fleet: examples/fleets/dev-autoscale.toml)");
  dev->callback([d, exit_code] { *exit_code = RunDev(*d); });
}

}  // namespace gp::app
