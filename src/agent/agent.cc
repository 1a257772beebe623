#include "agent/agent.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <prometheus/exposer.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "adapters/nvml.h"
#include "core/models.h"
#include "core/units.h"

extern char** environ;

namespace gp {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

constexpr size_t kLogChunk = 256 * 1024;  // per stream per heartbeat

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
  std::filesystem::create_directories(o.work_dir, ec);
  if (ec) return Error(StatusCode::kFailedPrecondition, fmt::format("--work-dir {}: {}", o.work_dir.string(), ec.message()));
  auto client = HttpClient::Create(o.server, o.join_token);
  if (!client) return tl::unexpected(client.error());
  if (o.self_exe.empty()) o.self_exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  auto agent = std::unique_ptr<Agent>(new Agent(std::move(o), std::move(gpus), std::move(*client)));
  agent->carrier_ = std::make_unique<CheckpointCarrier>(agent->o_.server, agent->o_.join_token,
                                                        agent->o_.checkpoint_max_mib << 20);
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
    GpuView v{.device = d};
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
  AddNodeFamilies(out, o_.name, static_cast<double>(u.cpu.value()) / 1000, static_cast<double>(u.gpu.value()) / 1000,
                  static_cast<double>(u.memory.value()) / 1000, t.r, t.l);
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
                    .gpu_source = std::string(gpus_->kind()), .gpus = *devices};
  auto res = client_.Call("POST", "/v1/agent/register", RegisterToJson(r), Millis{10'000});
  if (!res) return res.error();
  if (res->status != 200) {
    return Status(res->status == 401 ? StatusCode::kInvalidArgument : StatusCode::kFailedPrecondition,
                  fmt::format("register: HTTP {}: {}", res->status, res->body));
  }
  const size_t at = res->body.find("\"lease_ms\":");
  if (at != std::string::npos) lease_ms_ = std::max(200, std::atoi(res->body.c_str() + at + 11));
  RenewLease();
  return Status::Ok();
}

namespace {
void Touch(const std::filesystem::path& p) {
  const int fd = open(p.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0) {
    futimens(fd, nullptr);
    close(fd);
  }
}
}  // namespace

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

std::filesystem::path Agent::TaskDir(const TaskKey& k) const {
  return o_.work_dir / fmt::format("job-{}-task-{}-attempt-{}", k.job, k.task, k.attempt);
}

namespace {

// The agent's own environment with `set` laid over it.
std::vector<std::string> Environment(const std::vector<std::pair<std::string, std::string>>& set) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string_view kv(*e);
    bool overridden = false;
    for (const auto& [k, v] : set) overridden = overridden || (kv.starts_with(k) && kv.size() > k.size() && kv[k.size()] == '=');
    if (!overridden) env.emplace_back(kv);
  }
  for (const auto& [k, v] : set) env.push_back(k + "=" + v);
  return env;
}

// posix_spawn (vfork-like) rather than fork: the agent's address space is not copied, which
// matters when hundreds of short tasks start each second. The child gets its own session
// (process group), so a signal reaches everything it started; stdin is /dev/null, and stdout
// and stderr are appended to the files named. Returns the pid, or the errno of the failure.
Result<pid_t> SpawnInSession(std::vector<std::string> args, std::vector<std::string> env, const std::string& out,
                             const std::string& err, const std::string& workdir) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (!workdir.empty()) posix_spawn_file_actions_addchdir_np(&fa, workdir.c_str());
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t all;
  sigfillset(&all);
  posix_spawnattr_setsigdefault(&attr, &all);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return Error(StatusCode::kFailedPrecondition, std::strerror(rc));
  return pid;
}

}  // namespace

std::filesystem::path Agent::CheckpointDir(const TaskKey& k) const {
  return o_.work_dir / "checkpoints" / fmt::format("job-{}-task-{}", k.job, k.task);
}

void Agent::Start(const TaskLaunch& l, const std::string& note) {
  const TaskKey key{l.job, l.task, l.attempt};
  if (!seen_.insert(key).second) return;  // already launched once: never twice
  Task t{.launch = l, .started_ms = NowMs()};
  const auto dir = TaskDir(key);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  Touch(dir / "lease");  // the lease starts now
  const std::string out = (dir / "stdout").string();
  const std::string err = (dir / "stderr").string();
  std::ofstream(out, std::ios::trunc).close();
  std::ofstream(err, std::ios::trunc) << note;  // what the agent did for it first (a restore)
  auto env = l.env;
  if (l.carry_checkpoint) {
    t.ckpt_dir = CheckpointDir(key);
    std::filesystem::create_directories(t.ckpt_dir, ec);
    t.ckpt_seen = t.ckpt_sent = SignTree(t.ckpt_dir);  // what the pool has already
    env.emplace_back("GPUPOOL_CHECKPOINT_DIR", t.ckpt_dir.string());
    std::ofstream(dir / "carry") << t.ckpt_dir.string() << "\n";  // for an agent that adopts the task
  }
  // The task runs under `gpupool supervise`, which stops it when the lease runs out.
  std::vector<std::string> args = {supervisor_, "--lease-file", (dir / "lease").string(), "--status-file",
                                   (dir / "status").string(), "--lease-ms", std::to_string(lease_ms_), "--grace-ms",
                                   std::to_string(o_.kill_grace.value()), "--"};
  if (supervisor_ == o_.self_exe) args.insert(args.begin() + 1, "supervise");
  args.insert(args.end(), l.command.begin(), l.command.end());
  const std::string workdir = l.workdir.empty() ? dir.string() : l.workdir;
  auto pid = SpawnInSession(std::move(args), Environment(env), out, err, workdir);
  if (!pid) {
    // Not started (no such program, no such directory...): say so where the user will look.
    std::ofstream(err, std::ios::app) << fmt::format("gpupool agent: cannot start {} in {}: {}\n", l.command[0], workdir,
                                                     pid.error().message());
    t.exit_code = 126;
    t.error = fmt::format("cannot start {}: {}", l.command[0], pid.error().message());
    t.ckpt_final = true;
  } else {
    t.pid = *pid;
    by_pid_[t.pid] = key;
    std::ofstream(dir / "pid") << t.pid << "\n";
  }
  if (t.pid > 0 && cgroups_.available() && (l.cpu.value() > 0 || l.memory.value() > 0)) {
    // Limits apply from here on; what the task did in its first instant is not capped.
    if (Status s = cgroups_.Place(t.pid, TaskDir(key).filename().string(), l.cpu, l.memory); !s.ok()) {
      fmt::print(stderr, "gpupool agent: job {} task {}: no cgroup limits: {}\n", l.job, l.task, s.message());
    }
  }
  tasks_[key] = std::move(t);
  MarkGpus();
}

void Agent::StartSome() {
  const int64_t until = NowMs() + 100;
  while (!to_start_.empty() && NowMs() < until) {
    TaskLaunch l = std::move(to_start_.front());
    to_start_.pop_front();
    const TaskKey key{l.job, l.task, l.attempt};
    auto done = restored_.find(key);
    if (done != restored_.end()) {
      const std::string note = std::move(done->second);
      restored_.erase(done);
      Start(l, note);
    } else if (l.carry_checkpoint && l.attempt > 1 && !seen_.count(key)) {
      carrier_->Download(key, CheckpointDir(key));
      restoring_[key] = std::move(l);
    } else {
      if (l.carry_checkpoint && l.attempt <= 1) {  // a first attempt starts clean
        std::error_code ec;
        std::filesystem::remove_all(CheckpointDir(key), ec);
      }
      Start(l);
    }
  }
}

void Agent::CarryCheckpoints(int64_t now) {
  for (CheckpointCarrier::Done& d : carrier_->Take()) {
    if (!d.upload) {
      auto it = restoring_.find(d.key);
      if (it == restoring_.end()) continue;  // cancelled meanwhile
      restored_[d.key] = d.status.ok() ? fmt::format("gpupool agent: checkpoint: {}\n", d.note)
                                       : fmt::format("gpupool agent: checkpoint not restored ({}); starting without it\n",
                                                     d.status.message());
      to_start_.push_front(std::move(it->second));
      restoring_.erase(it);
      continue;
    }
    auto it = tasks_.find(d.key);
    if (it == tasks_.end()) continue;
    Task& t = it->second;
    t.ckpt_busy = false;
    if (d.status.ok()) {
      t.ckpt_sent = d.shipped;
      t.ckpt_failures = 0;
    } else if (d.status.code() == StatusCode::kFailedPrecondition) {
      // Fenced off (the job moved on) or too big: shipping it again will not help.
      fmt::print(stderr, "gpupool agent: job {} task {}: checkpoint not shipped: {}\n", d.key.job, d.key.task, d.status.message());
      t.ckpt_sent = t.ckpt_seen;
      t.ckpt_final = t.exit_code || t.signal;
    } else if (++t.ckpt_failures >= 3 && (t.exit_code || t.signal)) {
      fmt::print(stderr, "gpupool agent: job {} task {}: giving up shipping its last checkpoint: {}\n", d.key.job, d.key.task,
                 d.status.message());
      t.ckpt_final = true;
    }
  }
  const bool scan = now - last_ckpt_scan_ms_ >= o_.checkpoint_sync.value();
  if (scan) last_ckpt_scan_ms_ = now;
  for (auto& [key, t] : tasks_) {
    if (t.ckpt_dir.empty() || t.ckpt_busy || t.ckpt_final) continue;
    const bool ended = t.exit_code || t.signal;
    if (!ended && !scan) continue;
    const TreeSignature sig = SignTree(t.ckpt_dir);
    // While running, ship a change once it has been still for a period (not a half-written
    // file); after the end, ship whatever differs at once, and hold the end's report until then.
    const bool ship = sig != t.ckpt_sent && (ended || sig == t.ckpt_seen);
    t.ckpt_seen = sig;
    if (ship) {
      carrier_->Upload(key, t.ckpt_dir);
      t.ckpt_busy = true;
    } else if (ended && sig == t.ckpt_sent) {
      t.ckpt_final = true;
    }
  }
}

void Agent::StartSelfTest(int gpu) {
  for (const auto& [pid, run] : selftests_) {
    if (run.gpu == gpu) return;  // one at a time
  }
  auto devices = gpus_->Devices();
  std::string uuid;
  if (devices) {
    for (const GpuDevice& d : *devices) {
      if (d.index == gpu) uuid = d.uuid;
    }
  }
  std::vector<std::string> args;
  if (!o_.selftest_command.empty()) {
    args = {"/bin/sh", "-c", o_.selftest_command};
  } else if (gpus_->kind() == std::string_view("simulated")) {
    selftest_results_.push_back(GpuSelfTest{.gpu = gpu, .passed = true, .detail = "simulated GPU: no hardware to test"});
    return;
  } else {
    args = {o_.self_exe, "gpu-selftest", "--uuid", uuid};
  }
  const auto log = o_.work_dir / fmt::format("selftest-gpu{}.log", gpu);
  std::ofstream(log, std::ios::trunc).close();
  auto pid = SpawnInSession(std::move(args),
                            Environment({{"CUDA_VISIBLE_DEVICES", std::to_string(gpu)}, {"CUDA_DEVICE_ORDER", "PCI_BUS_ID"},
                                         {"GPUPOOL_SELFTEST_GPU", std::to_string(gpu)}, {"GPUPOOL_SELFTEST_UUID", uuid}}),
                            log.string(), log.string(), o_.work_dir.string());
  if (!pid) {
    selftest_results_.push_back(GpuSelfTest{.gpu = gpu, .passed = false, .detail = "cannot start: " + pid.error().message()});
    return;
  }
  selftests_[*pid] = SelfTestRun{.gpu = gpu, .deadline_ms = NowMs() + o_.selftest_timeout.value(), .log = log};
}

void Agent::SelfTestEnded(pid_t pid, int status) {
  auto it = selftests_.find(pid);
  if (it == selftests_.end()) return;
  // The detail: the last line the test printed, and how it ended.
  std::ifstream in(it->second.log);
  std::string line;
  std::string last;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  }
  if (last.size() > 300) last.resize(300);
  const bool passed = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  std::string how = WIFEXITED(status) ? fmt::format("exit {}", WEXITSTATUS(status))
                                      : fmt::format("killed by signal {}", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  if (status < 0) how = fmt::format("timed out after {}", FormatMillis(o_.selftest_timeout));
  selftest_results_.push_back(GpuSelfTest{.gpu = it->second.gpu, .passed = passed && status >= 0,
                                          .detail = last.empty() ? how : fmt::format("{} ({})", last, how)});
  selftests_.erase(it);
}

void Agent::Cancel(const TaskKey& key, int grace_ms) {
  auto it = tasks_.find(key);
  if (it == tasks_.end() || it->second.exit_code || it->second.signal || it->second.pid <= 0) return;
  // SIGTERM reaches the supervisor, which passes it to the task; SIGKILL follows after the
  // grace (the server's, e.g. a reclaim notice, else the agent's own).
  kill(-it->second.pid, SIGTERM);
  it->second.kill_at_ms = NowMs() + (grace_ms >= 0 ? grace_ms : o_.kill_grace.value());
}

void Agent::Exited(Task& t, int status) {
  if (WIFEXITED(status)) t.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) {
    t.signal = WTERMSIG(status);
    t.exit_code = 128 + WTERMSIG(status);
  }
  kill(-t.pid, SIGKILL);  // anything the task left behind in its group
}

void Agent::Reap() {
  bool any = false;
  int status = 0;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    if (selftests_.count(pid)) {
      SelfTestEnded(pid, status);
      continue;
    }
    auto it = by_pid_.find(pid);
    if (it == by_pid_.end()) continue;
    auto t = tasks_.find(it->second);
    by_pid_.erase(it);
    if (t == tasks_.end()) continue;
    Exited(t->second, status);
    cgroups_.Remove(TaskDir(t->first).filename().string());
    any = true;
  }
  const int64_t now = NowMs();
  for (auto st = selftests_.begin(); st != selftests_.end();) {
    const pid_t p = (st++)->first;
    if (now > selftests_[p].deadline_ms) {
      kill(-p, SIGKILL);
      waitpid(p, nullptr, 0);
      SelfTestEnded(p, -1);
    }
  }
  for (auto& [key, t] : tasks_) {
    if (t.exit_code || t.signal) continue;
    if (t.kill_at_ms > 0 && now > t.kill_at_ms) kill(-t.pid, SIGKILL);
    if (!t.adopted) continue;
    // Not our child: its supervisor's status file says how it ended.
    std::ifstream st(TaskDir(key) / "status");
    std::string kind;
    int value = 0;
    if (st >> kind >> value) {
      if (kind == "signal") {
        t.signal = value;
        t.exit_code = 128 + value;
      } else {
        t.exit_code = value;
      }
      any = true;
    } else if (kill(t.pid, 0) != 0) {
      t.exit_code = -1;  // vanished without a status: it did not end normally
      t.error = "its supervisor vanished";
      any = true;
    }
  }
  if (any) MarkGpus();
}

// Simulated GPUs follow the work: a GPU a running task holds reads as busy.
void Agent::MarkGpus() {
  auto* sim = dynamic_cast<SimulatedGpuSource*>(gpus_.get());
  if (!sim) return;
  std::array<int64_t, 16> busy{};
  for (const auto& [key, t] : tasks_) {
    if (t.exit_code || t.signal) continue;
    for (int g = 0; g < 16; ++g) {
      if (t.launch.gpu_mask >> g & 1) busy[static_cast<size_t>(g)] += 1000;
    }
  }
  auto devices = sim->Devices();
  for (const GpuDevice& d : *devices) {
    (void)sim->SetBusy(d.index, PerMille{std::min<int64_t>(busy[static_cast<size_t>(d.index)], 1000)},
                       MiB{busy[static_cast<size_t>(d.index)] > 0 ? d.memory.value() / 2 : 0});
  }
}

// Appends new output to the report; true when everything written so far has been shipped.
bool Agent::ShipLogs(Task& t, TaskReport& r) {
  bool complete = true;
  const auto dir = TaskDir(TaskKey{t.launch.job, t.launch.task, t.launch.attempt});
  for (int s = 0; s < 2; ++s) {
    const auto path = dir / (s == 0 ? "stdout" : "stderr");
    std::error_code ec;
    const int64_t size = static_cast<int64_t>(std::filesystem::file_size(path, ec));
    if (ec || size <= t.sent[static_cast<size_t>(s)]) continue;
    std::ifstream in(path, std::ios::binary);
    if (!in) continue;
    const int64_t n = std::min<int64_t>(size - t.sent[static_cast<size_t>(s)], kLogChunk);
    std::string chunk(static_cast<size_t>(n), '\0');
    in.seekg(t.sent[static_cast<size_t>(s)]);
    in.read(chunk.data(), n);
    t.sent[static_cast<size_t>(s)] += n;
    (s == 0 ? r.stdout_chunk : r.stderr_chunk) = std::move(chunk);
    if (t.sent[static_cast<size_t>(s)] < size) complete = false;
  }
  return complete;
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
        std::this_thread::sleep_for(std::chrono::milliseconds(backoff));
        backoff = std::min<int64_t>(backoff * 2, 5'000);
        continue;
      }
      registered = true;
      backoff = 200;
      fmt::print(stderr, "gpupool agent: registered as {} with {}; cgroup limits: {}\n", o_.name, o_.server,
                 cgroups_.available() ? "on" : "off (" + cgroups_.why_not() + ")");
    }
    Reap();
    const int64_t now = NowMs();
    if (now - last_sample_ms_ >= o_.interval.value()) {
      if (auto h = host_.Sample()) host_sample_ = *h;
      if (auto g = gpus_->Sample()) gpu_sample_ = *g;
      last_sample_ms_ = now;
      UpdateMetrics();
    }
    // Start what the server gave, 100 ms of it at a time, so that a big batch does not keep
    // the agent quiet long enough to look dead.
    CarryCheckpoints(now);
    StartSome();
    Heartbeat hb{.node = o_.name, .host = host_sample_, .gpus = gpu_sample_, .selftests = selftest_results_};
    for (const TaskLaunch& l : to_start_) hb.running.push_back(TaskKey{l.job, l.task, l.attempt});  // held, starting soon
    for (const auto& [key, l] : restoring_) hb.running.push_back(key);
    std::vector<TaskKey> done;
    bool active = false;
    // Output of running tasks is shipped every interval; an ended task's, at once and in full.
    const bool scan_logs = now - last_log_scan_ms_ >= o_.interval.value();
    if (scan_logs) last_log_scan_ms_ = now;
    for (auto& [key, t] : tasks_) {
      TaskReport r{.job = key.job, .task = key.task, .attempt = key.attempt, .started_ms = t.started_ms, .error = t.error};
      const bool ended = t.exit_code || t.signal;
      const bool shipped = (ended || scan_logs || !t.reported_running) ? ShipLogs(t, r) : false;
      if (ended && shipped && (t.ckpt_dir.empty() || t.ckpt_final)) {
        r.state = TaskReport::State::kExited;
        r.exit_code = t.exit_code;
        r.signal = t.signal;
        done.push_back(key);
      } else {
        active = true;
        hb.running.push_back(key);
        if (t.reported_running && r.stdout_chunk.empty() && r.stderr_chunk.empty()) continue;
        t.reported_running = true;
      }
      hb.tasks.push_back(std::move(r));
    }
    active = active || !restoring_.empty() || !selftests_.empty();
    hb.wait_ms = !to_start_.empty() ? 0 : (active ? 20 : static_cast<int>(o_.interval.value()));
    auto res = client_.Call("POST", "/v1/agent/heartbeat", HeartbeatToJson(hb), Millis{hb.wait_ms + 10'000});
    if (!res || res->status != 200) {
      // Refused: the server's process is down and its host reachable, so no server can place
      // this node's work elsewhere meanwhile; a restarted server recovers it from its journal.
      // Keep the leases. A timeout (a cut network, a dead host) lets them run out.
      if (!res && res.error().code() == StatusCode::kUnavailable) RenewLease();
      if (res && res->status == 404) registered = false;  // the server forgot us: register again
      if (res && res->status == 401) return Status(StatusCode::kInvalidArgument, "heartbeat: the join token was refused");
      // Reports are kept and sent again; tasks keep running while the server is away.
      for (const auto& key : done) tasks_[key].reported_running = false;
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff));
      backoff = std::min<int64_t>(backoff * 2, 2'000);
      // Logs already read were lost with the failed request: ship them again.
      for (auto& [key, t] : tasks_) {
        for (const TaskReport& r : hb.tasks) {
          if (TaskKey{r.job, r.task, r.attempt} == key) {
            t.sent[0] -= static_cast<int64_t>(r.stdout_chunk.size());
            t.sent[1] -= static_cast<int64_t>(r.stderr_chunk.size());
          }
        }
      }
      continue;
    }
    backoff = 200;
    RenewLease();
    SaveShipped();
    selftest_results_.erase(selftest_results_.begin(), selftest_results_.begin() + static_cast<ptrdiff_t>(hb.selftests.size()));
    for (const auto& key : done) {
      std::ofstream(TaskDir(key) / "reported") << "1\n";  // the server has its end: never again
      tasks_.erase(key);
    }
    auto reply = ParseReply(res->body);
    if (!reply) {
      fmt::print(stderr, "gpupool agent: bad reply from server: {}\n", reply.error().message());
      continue;
    }
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
