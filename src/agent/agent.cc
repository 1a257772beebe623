#include "agent/agent.h"

#include "adapters/pki.h"

#include <fcntl.h>
#include <pwd.h>
#include <nlohmann/json.hpp>
#include <fmt/format.h>
#include <prometheus/exposer.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "adapters/nvml.h"
#include "agent/agent_internal.h"
#include "adapters/tokens.h"
#include "core/models.h"
#include "core/units.h"

extern char** environ;

namespace gp {
using namespace agent_internal;  // NOLINT: the agent's own helpers
namespace {

// How many tasks this node can run at once: each is a process group under a supervisor, so 32
// per CPU core, and within an eighth of the process limit (the rest for what the tasks start).
int MaxTasks(int cores) {
  int64_t n = 32 * std::max(1, cores);
  rlimit rl{};
  if (getrlimit(RLIMIT_NPROC, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) n = std::min<int64_t>(n, static_cast<int64_t>(rl.rlim_cur) / 8);
  return static_cast<int>(std::clamp<int64_t>(n, 1, kMaxTaskSlots));
}


}  // namespace

Result<std::unique_ptr<Agent>> Agent::Create(AgentOptions o) {
  if (o.name.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    o.name = host;
  }
  std::unique_ptr<GpuSource> gpus;
  if (o.simulate_gpus.empty()) {
    auto nvml = OpenNvml();
    if (!nvml) return tl::unexpected(nvml.error());
    gpus = std::move(*nvml);
  } else {
    auto sim = SimulatedGpuSource::Parse(o.simulate_gpus, o.name);
    if (!sim) return tl::unexpected(sim.error());
    gpus = std::make_unique<SimulatedGpuSource>(std::move(*sim));
  }
  std::error_code ec;
  // Absolute from the start: tasks run in directories of their own, where a relative path to
  // their lease file would name nothing.
  o.work_dir = std::filesystem::absolute(o.work_dir, ec).lexically_normal();
  std::filesystem::create_directories(o.work_dir, ec);
  if (ec) return Error(StatusCode::kFailedPrecondition, fmt::format("--work-dir {}: {}", o.work_dir.string(), ec.message()));
  int uid = -1;
  int gid = -1;
  if (geteuid() == 0 && !o.job_user.empty()) {
    // Tasks as an unprivileged user: they may pass through the work directory to their own
    // (0711), but not list it, nor read the node's credential or other tasks' files.
    const passwd* pw = getpwnam(o.job_user.c_str());
    if (!pw) return InvalidArgument(fmt::format("--job-user {}: no such user", o.job_user));
    if (pw->pw_uid == 0) return InvalidArgument(fmt::format("--job-user {}: tasks must not run as root", o.job_user));
    uid = static_cast<int>(pw->pw_uid);
    gid = static_cast<int>(pw->pw_gid);
    std::filesystem::permissions(o.work_dir, std::filesystem::perms::owner_all | std::filesystem::perms::group_exec |
                                                 std::filesystem::perms::others_exec, ec);
    // Tasks reach their directories by absolute paths ($HOME, $TMPDIR, the checkpoint
    // directory): every directory above the work directory must let them pass.
    for (auto dir = o.work_dir.parent_path(); !dir.empty(); dir = dir.parent_path()) {
      struct stat st {};
      if (stat(dir.c_str(), &st) == 0 && !(st.st_mode & S_IXOTH)) {
        return InvalidArgument(fmt::format("--work-dir {}: tasks run as {} and cannot pass through {} (mode {:04o}); "
                                           "chmod o+x it, or choose a work directory elsewhere",
                                           o.work_dir.string(), o.job_user, dir.string(), st.st_mode & 07777));
      }
      if (dir == dir.root_path()) break;
    }
  }
  // The join token may carry the CA's hash; only its secret is ever sent.
  const JoinToken join = ParseJoinToken(o.join_token);
  o.join_token = join.secret;
  const bool use_tls = o.server.find("https://") != std::string::npos;
  if (!use_tls && !o.insecure_http) {
    // The join token and the node's credential never go in clear to another host.
    for (std::string_view rest = o.server; !rest.empty();) {
      const size_t comma = rest.find(',');
      std::string one(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      if (one.starts_with("http://")) one = one.substr(7);
      const std::string host = one.substr(0, one.rfind(':'));
      if (!IsLoopbackHost(host) && !one.empty()) {
        return InvalidArgument(fmt::format("--server {}: plain HTTP to another host would send the join token in clear; use "
                                           "https://{} (the join token's CA hash checks the server), or --insecure-http",
                                           one, one));
      }
    }
  }
  ClientTls tls;
  if (use_tls) {
    std::string ca_path = o.ca_file.empty() ? (o.work_dir / "ca.crt").string() : o.ca_file;
    if (std::filesystem::exists(ca_path, ec)) {
      std::ifstream in(ca_path);
      tls.ca_pem.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    } else if (!o.ca_file.empty()) {
      return InvalidArgument(fmt::format("--ca {}: no such file", o.ca_file));
    }
    if (tls.ca_pem.empty() && join.ca_hash.empty()) {
      return InvalidArgument("an https:// server needs the pool's CA: a join token that carries its hash (the server's "
                             "DATA_DIR/join.token does), or --ca FILE");
    }
  }
  if (!tls.ca_pem.empty() && !join.ca_hash.empty()) {
    auto hash = PublicKeyHash(tls.ca_pem);
    if (!hash || *hash != join.ca_hash) {
      return InvalidArgument(fmt::format("the CA in {} is {}, and the join token expects {}: not joining (a CA kept from "
                                         "another pool? remove it, and the agent fetches the server's and checks it)",
                                         o.ca_file.empty() ? (o.work_dir / "ca.crt").string() : o.ca_file,
                                         hash ? *hash : "not a certificate", join.ca_hash));
    }
  }
  // A stand-in until registration (which makes the node's client), holding no secret.
  auto client = HttpClient::Create(o.server, "", ClientTls{.verify = false});
  if (!client) return tl::unexpected(client.error());
  if (o.self_exe.empty()) o.self_exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  auto agent = std::unique_ptr<Agent>(new Agent(std::move(o), std::move(gpus), std::move(*client)));
  agent->job_uid_ = uid;
  agent->job_gid_ = gid;
  agent->use_tls_ = use_tls;
  agent->ca_hash_ = join.ca_hash;
  agent->tls_ = tls;
  if (auto cred = ReadToken(agent->CredentialPath().string())) agent->credential_ = *cred;
  agent->carrier_ = std::make_unique<CheckpointCarrier>(agent->o_.server, agent->o_.join_token,
                                                        agent->o_.checkpoint_max_mib << 20);
  agent->cgroups_ = CgroupLimiter::Detect("/sys/fs/cgroup", Sha256Hex(agent->o_.work_dir.string()).substr(0, 12));
  agent->DetectDrivers();
  if (agent->o_.drivers != "auto" && agent->o_.drivers.find("oci") != std::string::npos && !agent->oci_) {
    return InvalidArgument("--drivers oci: " + agent->oci_why_not_);
  }
  for (std::string_view rest = agent->o_.drivers; agent->o_.drivers != "auto" && !rest.empty();) {
    const size_t comma = rest.find(',');
    const std::string d(rest.substr(0, comma));
    if (!ParseDriver(d)) return InvalidArgument(fmt::format("--drivers: '{}' is not a driver; expected process, oci or auto", d));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
  }
  agent->Adopt();
  agent->StartMetrics();
  // The small supervisor binary beside this one; else this binary's `supervise` verb.
  const auto small = std::filesystem::path(agent->o_.self_exe).parent_path() / "gpupool-supervise";
  agent->supervisor_ = std::filesystem::exists(small, ec) ? small.string() : agent->o_.self_exe;
  return agent;
}

Agent::Agent(AgentOptions o, std::unique_ptr<GpuSource> gpus, HttpClient client)
    : o_(std::move(o)), gpus_(std::move(gpus)), client_(std::move(client)) {}
Agent::~Agent() = default;

void Agent::StartMetrics() {
  if (o_.metrics_listen.empty() || o_.metrics_listen == "off") return;
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(o_.metrics_listen);
    metrics_ = std::make_shared<SnapshotCollectable>();
    exposer_->RegisterCollectable(metrics_);
    const auto ports = exposer_->GetListeningPorts();
    const std::string host = o_.metrics_listen.substr(0, o_.metrics_listen.rfind(':'));
    fmt::print(stderr, "gpupool agent: metrics on http://{}:{}/metrics\n", host, ports.empty() ? 0 : ports.front());
  } catch (const std::exception& e) {
    // Work goes on without metrics; the operator is told why.
    fmt::print(stderr, "gpupool agent: no metrics: --metrics-listen {}: {}\n", o_.metrics_listen, e.what());
    exposer_.reset();
    metrics_.reset();
  }
}

void Agent::UpdateMetrics() {
  if (!metrics_) return;
  Families out;
  std::vector<GpuView> gpus;
  int64_t busy = 0;
  for (const GpuDevice& d : devices_) {
    GpuView v{.index = d.index, .uuid = d.uuid, .model = d.name, .memory = d.memory};
    for (const GpuSample& x : gpu_sample_) {
      if (x.index != d.index) continue;
      v.sample = x;
      if (!x.xids.empty() && d.index >= 0 && d.index < kMaxGpusPerNode) last_xid_[static_cast<size_t>(d.index)] = x.xids.back();
    }
    if (d.index >= 0 && d.index < kMaxGpusPerNode) v.last_xid = last_xid_[static_cast<size_t>(d.index)];
    busy += v.sample.utilisation.value();
    gpus.push_back(std::move(v));
  }
  AddGpuFamilies(out, o_.name, gpus);
  const Utilisation u{.cpu = host_sample_.cpu_busy,
                      .gpu = PerMille{devices_.empty() ? 0 : busy / static_cast<int64_t>(devices_.size())},
                      .memory = PerMille{host_sample_.memory.total.value() > 0
                                             ? (host_sample_.memory.total.value() - host_sample_.memory.available.value()) * 1000 /
                                                   host_sample_.memory.total.value()
                                             : 0}};
  const LoadTerms t = ComputeLoad(u);
  AddNodeFamilies(out, NodeLoadView{.node = o_.name, .cpu = static_cast<double>(u.cpu.value()) / 1000,
                                    .gpu = static_cast<double>(u.gpu.value()) / 1000,
                                    .memory = static_cast<double>(u.memory.value()) / 1000, .r = t.r, .l = t.l});
  int running = 0;
  for (const auto& [key, task] : tasks_) running += !task.exit_code && !task.signal;
  AddValue(FamilyIn(out, "gpupool_agent_tasks_running", "Tasks this agent runs now.", prometheus::MetricType::Gauge),
           {{"node", o_.name}}, running);
  metrics_->Set(std::move(out));
}

Status Agent::Register() {
  auto devices = gpus_->Devices();
  if (!devices) return devices.error();
  devices_ = *devices;
  auto host = host_.Sample();
  if (!host) return host.error();
  RegisterRequest r{.name = o_.name, .site = o_.site, .provider = o_.provider, .tier = o_.tier, .address = o_.address,
                    .cpu_cores = host->cpu_cores, .memory_mib = host->memory.total.value(),
                    .gpu_source = std::string(gpus_->kind()), .gpus = *devices, .credential = credential_,
                    .max_tasks = MaxTasks(host->cpu_cores), .claim = o_.claim};
  r.drivers = {"process"};
  if (oci_) r.drivers.push_back("oci");
  // Over TLS: the server is checked first (its CA against the join token's hash), and the
  // node asks for its client certificate with a key it keeps (a CSR).
  std::string key_pem;
  if (use_tls_) {
    if (tls_.ca_pem.empty()) {
      if (Status s = TrustServer(); !s.ok()) return s;
    }
    auto csr = MakeCsr(o_.name);
    if (!csr) return csr.error();
    r.csr = csr->csr_pem;
    key_pem = csr->key_pem;
  }
  // Registration is the join token's one call; everything after it uses the node's credential.
  // With several servers, the one the heartbeats last reached first (the leader, likely).
  const bool many = o_.server.find(',') != std::string::npos;
  auto joiner = HttpClient::Create(many && registered_once_ ? client_.server() + "," + o_.server : o_.server, o_.join_token,
                                   ClientTls{.ca_pem = tls_.ca_pem});
  if (!joiner) return joiner.error();
  auto res = joiner->Call("POST", "/v1/agent/register", RegisterToJson(r), Millis{10'000});
  if (!res) return res.error();
  if (res->status != 200) {
    // A wrong token, a refused inventory or a name a live node holds will not get better by
    // trying again: the agent stops and says why.
    const bool fatal = res->status == 400 || res->status == 401 || res->status == 403 || res->status == 409;
    return Status(fatal ? StatusCode::kInvalidArgument : StatusCode::kFailedPrecondition,
                  fmt::format("register: HTTP {}: {}", res->status, res->body));
  }
  const nlohmann::json reply = nlohmann::json::parse(res->body, nullptr, false);
  if (!reply.is_object()) return Status(StatusCode::kFailedPrecondition, "register: the server's answer is not JSON");
  if (reply.contains("epoch") && reply["epoch"].is_number_unsigned()) {
    const uint64_t epoch = reply["epoch"].get<uint64_t>();
    if (epoch < epoch_) {
      client_.Failover();
      return Status(StatusCode::kFailedPrecondition,
                    fmt::format("register: {} no longer leads (epoch {} < {})", o_.server, epoch, epoch_));
    }
    epoch_ = epoch;
  }
  if (reply.contains("lease_ms") && reply["lease_ms"].is_number_integer()) {
    lease_ms_ = static_cast<int>(std::clamp<int64_t>(reply["lease_ms"].get<int64_t>(), 200, 600'000));
  }
  if (reply.contains("interval_ms") && reply["interval_ms"].is_number_integer()) {
    server_interval_ms_ = static_cast<int>(std::clamp<int64_t>(reply["interval_ms"].get<int64_t>(), 0, 600'000));
  }
  if (reply.contains("checkpoint_max_bytes") && reply["checkpoint_max_bytes"].is_number_integer()) {
    // One limit for both sides: never pack what the server would refuse.
    carrier_->SetMaxBytes(std::min<int64_t>(o_.checkpoint_max_mib << 20, reply["checkpoint_max_bytes"].get<int64_t>()));
  }
  if (reply.contains("credential") && reply["credential"].is_string()) {
    credential_ = reply["credential"].get<std::string>();
    if (Status s = StoreSecret(CredentialPath().string(), credential_); !s.ok()) {
      fmt::print(stderr, "gpupool agent: cannot keep the node's credential: {}\n", s.message());
    }
  }
  if (credential_.empty()) return Status(StatusCode::kFailedPrecondition, "register: the server issued no credential");
  if (use_tls_) {
    if (!reply.contains("certificate") || !reply["certificate"].is_string()) {
      return Status(StatusCode::kFailedPrecondition, "register: the server issued no client certificate");
    }
    if (Status s = UseCertificate(reply["certificate"].get<std::string>(), key_pem); !s.ok()) return s;
  }
  auto client = HttpClient::Create(o_.server, credential_, tls_);
  if (!client) return client.error();
  client_ = std::move(*client);
  client_.set_wait_for_leader(false);
  registered_once_ = true;
  carrier_->SetCredentials(credential_, tls_);
  telemetry_due_ = true;  // a server that forgot the node learns its load at once
  RenewLease();
  return Status::Ok();
}

Status Agent::TrustServer() {
  auto fetcher = HttpClient::Create(o_.server, "", ClientTls{.verify = false});
  if (!fetcher) return fetcher.error();
  // Unverified, and nothing secret sent: what comes back is checked against the join token.
  auto res = fetcher->Call("GET", "/v1/ca", "", Millis{10'000});
  if (!res) return Status(res.error().code(), "fetching the pool's CA: " + res.error().message());
  if (res->status != 200) {
    return Status(StatusCode::kFailedPrecondition, fmt::format("fetching the pool's CA: HTTP {}: {}", res->status, res->body.substr(0, 200)));
  }
  auto hash = PublicKeyHash(res->body);
  if (!hash || *hash != ca_hash_) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("the server at {} has the CA {}, and the join token expects {}: not joining (is it the pool's "
                              "server, and the token that pool's?)",
                              fetcher->server(), hash ? *hash : "(not a certificate)", ca_hash_));
  }
  tls_.ca_pem = res->body;
  if (Status s = StoreSecret(CaPath().string(), tls_.ca_pem); !s.ok()) {
    fmt::print(stderr, "gpupool agent: cannot keep the pool's CA: {}\n", s.message());
  }
  return Status::Ok();
}

Status Agent::UseCertificate(const std::string& cert_pem, const std::string& key_pem) {
  auto info = ReadCertInfo(cert_pem);
  if (!info) return Status(StatusCode::kFailedPrecondition, "the server's client certificate: " + info.error().message());
  tls_.cert_pem = cert_pem;
  tls_.key_pem = key_pem;
  for (const auto& [path, text] : {std::pair{KeyPath(), key_pem}, std::pair{CertPath(), cert_pem}}) {
    if (Status s = StoreSecret(path.string(), text); !s.ok()) {
      fmt::print(stderr, "gpupool agent: cannot keep the client certificate: {}\n", s.message());
    }
  }
  const int64_t now = NowMs();
  cert_renew_at_ms_ = now + std::max<int64_t>(0, info->not_after_ms - now) * 2 / 3;
  return Status::Ok();
}

Status Agent::RotateCertificate() {
  auto csr = MakeCsr(o_.name);
  if (!csr) return csr.error();
  auto res = client_.Call("POST", "/v1/agent/certificate", nlohmann::json{{"csr", csr->csr_pem}}.dump(), Millis{10'000});
  if (!res) return res.error();
  const nlohmann::json reply = nlohmann::json::parse(res->body, nullptr, false);
  if (res->status != 200 || !reply.is_object() || !reply.contains("certificate") || !reply["certificate"].is_string()) {
    return Status(StatusCode::kFailedPrecondition, fmt::format("HTTP {}: {}", res->status, res->body.substr(0, 300)));
  }
  if (Status s = UseCertificate(reply["certificate"].get<std::string>(), csr->key_pem); !s.ok()) return s;
  client_.set_client_certificate(tls_.cert_pem, tls_.key_pem);
  carrier_->SetCredentials(credential_, tls_);
  auto info = ReadCertInfo(tls_.cert_pem);
  fmt::print(stderr, "gpupool agent: client certificate rotated: serial {}, valid {} more\n", info ? info->serial : "?",
             info ? FormatMillis(Millis{info->not_after_ms - NowMs()}) : "?");
  return Status::Ok();
}

// Each attempt has a lease of its own, renewed after each heartbeat the server answered, for
// the attempts this agent knows: an attempt nobody knows any more (left by an agent that died
// and was not adopted) lets its lease run out and stops itself.
void Agent::RenewLease() {
  for (const auto& [key, t] : tasks_) {
    if (!t.exit_code && !t.signal) Touch(TaskDir(key) / "lease");
  }
}

void Agent::SaveShipped() {
  for (auto& [key, t] : tasks_) {
    if (t.sent == t.saved) continue;
    std::ofstream(TaskDir(key) / "shipped") << t.sent[0] << " " << t.sent[1] << "\n";
    t.saved = t.sent;
  }
}

// An agent that restarts finds what the last one left: task directories whose supervisor still
// runs (adopted: it reports them as running, renews their leases, and learns their end from the
// status file the supervisor writes) or that ended meanwhile (their exit is reported).
void Agent::Adopt() {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(o_.work_dir, ec)) {
    unsigned long long job = 0;
    int task = 0;
    int attempt = 0;
    if (std::sscanf(entry.path().filename().c_str(), "job-%llu-task-%d-attempt-%d", &job, &task, &attempt) != 3) continue;
    const auto dir = entry.path();
    if (std::filesystem::exists(dir / "reported", ec)) continue;  // an earlier agent finished with it
    const TaskKey key{job, task, attempt};
    Task t{.launch = TaskLaunch{.job = job, .task = task, .attempt = attempt}, .adopted = true};
    std::ifstream pidf(dir / "pid");
    pidf >> t.pid;
    std::ifstream shipped(dir / "shipped");
    shipped >> t.sent[0] >> t.sent[1];
    t.saved = t.sent;
    std::string carry;
    if (std::ifstream cf(dir / "carry"); cf && std::getline(cf, carry) && !carry.empty()) {
      t.ckpt_dir = carry;
      t.launch.carry_checkpoint = true;
      t.ckpt_seen = SignTree(t.ckpt_dir);  // what was shipped is not known: ship it once more
    }
    const bool alive = t.pid > 0 && kill(t.pid, 0) == 0;
    if (!alive && !std::filesystem::exists(dir / "status", ec)) continue;  // gone without a word: the server finds it lost
    seen_.insert(key);
    tasks_[key] = t;
  }
  if (!tasks_.empty()) fmt::print(stderr, "gpupool agent: adopted {} task(s) left by an earlier agent\n", tasks_.size());
}

// While the server's process is down (connection refused: its host answers, so no other server
// can have given this node's work away), the tasks keep their leases, renewed faster than they
// run out; when it is back it adopts them, as after any restart. With several servers the same
// holds while none leads (each refused, or is a standby naming no leader that answers): no
// server can give work away before it leads, and a new leader first waits to hear from nodes.
void Agent::RenewLeaseWhileAway(int64_t& backoff) {
  RenewLease();
  backoff = std::min<int64_t>(backoff, std::max(50, lease_ms_ / 4));
}

Status Agent::Run(const std::atomic<bool>& stop) {
  bool registered = false;
  int64_t backoff = 200;
  while (!stop.load()) {
    if (!registered) {
      Status s = Register();
      if (s.code() == StatusCode::kInvalidArgument) return s;  // a wrong token will not get better
      if (!s.ok()) {
        fmt::print(stderr, "gpupool agent: {}; retrying\n", s.message());
        backoff = std::min<int64_t>(backoff * 2, 5'000);
        if (s.code() == StatusCode::kUnavailable) RenewLeaseWhileAway(backoff);
        std::this_thread::sleep_for(std::chrono::milliseconds(backoff));
        Reap();
        continue;
      }
      registered = true;
      backoff = 200;
      fmt::print(stderr, "gpupool agent: registered as {} with {}; cgroup limits: {}; oci driver: {}\n", o_.name, o_.server,
                 cgroups_.available() ? (cgroups_.v1() ? "on (v1: cpu, memory, pids, devices)" : "on (v2: cpu, memory, pids)")
                                      : "off (" + cgroups_.why_not() + ")",
                 oci_ ? fmt::format("on ({}, {} CDI specs)", runc_, cdi_.size()) : "off (" + oci_why_not_ + ")");
    }
    Reap();
    const int64_t now = NowMs();
    if (now - last_sample_ms_ >= o_.interval.value()) {
      if (auto h = host_.Sample()) host_sample_ = *h;
      if (auto g = gpus_->Sample()) gpu_sample_ = *g;
      last_sample_ms_ = now;
      telemetry_due_ = true;
      UpdateMetrics();
    }
    // Start what the server gave, 100 ms of it at a time, so that a big batch does not keep
    // the agent quiet long enough to look dead.
    CarryCheckpoints(now);
    StartSome();
    // Telemetry goes with the first heartbeat after each sample (once per interval), not with
    // every short poll while tasks run: the server keeps the last samples.
    Heartbeat hb{.node = o_.name, .telemetry = telemetry_due_, .host = host_sample_, .gpus = gpu_sample_,
                 .selftests = selftest_results_};
    for (const TaskLaunch& l : to_start_) hb.running.push_back(TaskKey{l.job, l.task, l.attempt});  // held, starting soon
    for (const auto& [key, l] : restoring_) hb.running.push_back(key);
    std::vector<TaskKey> done;
    bool active = false;
    // Output of running tasks is shipped every interval; an ended task's, at once and in full.
    const bool scan_logs = now - last_log_scan_ms_ >= o_.interval.value();
    if (scan_logs) last_log_scan_ms_ = now;
    // One budget for all tasks' output: a heartbeat stays small however much they print, and
    // reports of starts and ends never wait behind it.
    int64_t budget = kLogBudget;
    for (auto& [key, t] : tasks_) {
      TaskReport r{.job = key.job, .task = key.task, .attempt = key.attempt, .started_ms = t.started_ms, .error = t.error};
      const bool ended = t.exit_code || t.signal;
      // Output is looked at every interval, at once for a new or ended task, and on every
      // heartbeat while a backlog lasts (a chatty job's output goes out as fast as heartbeats do).
      t.in_flight = {};
      const bool look = ended || scan_logs || !t.reported_running || t.log_backlog;
      const bool shipped = look && ShipLogs(t, r, budget);
      if (look) t.log_backlog = !shipped;
      r.dropped = t.dropped;
      r.lost = t.lost;
      if (ended && shipped && (t.ckpt_dir.empty() || t.ckpt_final)) {
        r.state = TaskReport::State::kExited;
        r.exit_code = t.exit_code;
        r.signal = t.signal;
        done.push_back(key);
      } else {
        active = true;
        hb.running.push_back(key);
        if (t.reported_running && r.stdout_chunk.empty() && r.stderr_chunk.empty() && r.dropped == 0) continue;
        t.reported_running = true;
      }
      hb.tasks.push_back(std::move(r));
    }
    active = active || !restoring_.empty() || !selftests_.empty();
    // Idle: as long as this agent's interval or the server's (which grows with the fleet).
    const int idle_ms = std::max(static_cast<int>(o_.interval.value()), server_interval_ms_);
    hb.wait_ms = !to_start_.empty() ? 0 : (active ? 20 : idle_ms);
    // With standbys to turn to, a server silent for 2 s past the wait is passed over sooner.
    const bool standbys = client_.servers() > 1;
    auto res = client_.Call("POST", "/v1/agent/heartbeat", HeartbeatToJson(hb), Millis{hb.wait_ms + (standbys ? 2'000 : 10'000)});
    if (!res && standbys) client_.Failover();  // silent or gone: the next server, next time
    // With several servers, a reply from one that no longer leads (an older epoch than one
    // already seen: paused or cut off while another was elected) is as if none had come: its
    // commands are not acted on and the reports it took are sent again, to the leader.
    Result<HeartbeatReply> reply = Error(StatusCode::kFailedPrecondition, "no reply");
    bool stale = false;
    if (res && res->status == 200) {
      reply = ParseReply(res->body);
      if (reply && reply->epoch < epoch_) {
        stale = true;
        fmt::print(stderr, "gpupool agent: a reply from {}, which no longer leads (epoch {} < {}): not acted on\n", client_.server(),
                   reply->epoch, epoch_);
        client_.Failover();
      } else if (reply) {
        epoch_ = reply->epoch;
      }
    }
    if (!res || res->status != 200 || stale) {
      const bool too_big = res && res->status == 413;
      if (res && !stale) fmt::print(stderr, "gpupool agent: heartbeat: HTTP {}: {}\n", res->status, res->body.substr(0, 300));
      if (!res && standbys) fmt::print(stderr, "gpupool agent: heartbeat: {}; next: {}\n", res.error().message(), client_.server());
      if (res && res->status == 404) registered = false;  // the server forgot us: register again
      // Not this node's credential (the server lost it, or another agent took the node over
      // while this one was cut off): register again, proving who we are, or stop.
      if (res && res->status == 401) registered = false;
      // Reports are kept and sent again; tasks keep running while the server is away.
      for (const auto& key : done) tasks_[key].reported_running = false;
      // No server leads now (an election under way): look again soon, keeping the leases, so
      // that the new leader hears from this node before its failure detector gives up on it.
      const bool electing = standbys && !res && res.error().code() == StatusCode::kUnavailable;
      backoff = electing ? 200 : std::min<int64_t>(backoff * 2, 2'000);
      // Refused: the server's process is down and its host reachable, so no server can place
      // this node's work elsewhere meanwhile; a restarted server recovers it from its journal.
      // Keep the leases. A timeout (a cut network, a dead host) lets them run out.
      if (!res && res.error().code() == StatusCode::kUnavailable) RenewLeaseWhileAway(backoff);
      if (!too_big) std::this_thread::sleep_for(std::chrono::milliseconds(backoff));
      for (auto& [key, t] : tasks_) {
        for (const TaskReport& r : hb.tasks) {
          if (TaskKey{r.job, r.task, r.attempt} != key) continue;
          const auto lost = static_cast<int64_t>(r.stdout_chunk.size() + r.stderr_chunk.size());
          if (too_big) {
            // Never the same heartbeat again: its output is dropped (and counted), the
            // reports go on without it.
            t.dropped += lost;
          } else {
            // Output already read was lost with the failed request: ship it again (the bytes of
            // the file, not a drop marker's, which is not in the file).
            t.sent[0] -= t.in_flight[0];
            t.sent[1] -= t.in_flight[1];
          }
        }
      }
      continue;
    }
    backoff = 200;
    if (standbys) carrier_->SetLeader(client_.server());
    // A client certificate is renewed at two thirds of its life, while it still works.
    if (use_tls_ && cert_renew_at_ms_ > 0 && NowMs() >= cert_renew_at_ms_) {
      if (Status s = RotateCertificate(); !s.ok()) {
        fmt::print(stderr, "gpupool agent: rotating the client certificate: {}; trying again soon\n", s.message());
        cert_renew_at_ms_ = NowMs() + 1'000;
      }
    }
    if (hb.telemetry) telemetry_due_ = false;
    RenewLease();
    SaveShipped();
    for (const TaskReport& r : hb.tasks) {
      auto it = tasks_.find(TaskKey{r.job, r.task, r.attempt});
      if (it != tasks_.end()) it->second.dropped -= r.dropped;  // reported
    }
    selftest_results_.erase(selftest_results_.begin(), selftest_results_.begin() + static_cast<ptrdiff_t>(hb.selftests.size()));
    for (const auto& key : done) {
      std::ofstream(TaskDir(key) / "reported") << "1\n";  // the server has its end: never again
      tasks_.erase(key);
    }
    if (!reply) {
      fmt::print(stderr, "gpupool agent: bad reply from server: {}\n", reply.error().message());
      continue;
    }
    if (reply->interval_ms > 0) server_interval_ms_ = reply->interval_ms;
    for (int gpu : reply->selftest) StartSelfTest(gpu);
    for (const TaskKey& k : reply->cancel) {
      std::erase_if(to_start_, [&](const TaskLaunch& l) { return TaskKey{l.job, l.task, l.attempt} == k; });
      restoring_.erase(k);
      restored_.erase(k);
      auto g = reply->grace_ms.find(k);
      Cancel(k, g == reply->grace_ms.end() ? -1 : g->second);
    }
    for (const TaskLaunch& l : reply->start) to_start_.push_back(l);
  }
  for (auto& [key, t] : tasks_) {
    if (t.pid > 0 && !t.exit_code && !t.signal) kill(-t.pid, SIGTERM);
  }
  return Status::Ok();
}

}  // namespace gp
