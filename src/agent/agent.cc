#include "agent/agent.h"

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
#include "adapters/tokens.h"
#include "core/models.h"
#include "core/units.h"

extern char** environ;

namespace gp {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Output shipping, bounded so that a heartbeat stays small whatever a job prints: at most this
// much per stream and per heartbeat (raw bytes; base64 makes 4/3 of it on the wire, never the
// 6x that JSON escapes cost control characters).
constexpr int64_t kLogChunk = 128 * 1024;
constexpr int64_t kLogBudget = 384 * 1024;
// A stream whose unshipped output grows past this (a job writing faster than its node ships)
// skips ahead to its newest kLogKeep bytes; the bytes skipped are counted, reported and marked
// in the log. An ended task keeps only kLogKeep unshipped, so its end is reported at once.
constexpr int64_t kLogBacklog = 32 << 20;
constexpr int64_t kLogEndBacklog = 4 << 20;
constexpr int64_t kLogKeep = 1 << 20;

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
  auto client = HttpClient::Create(o.server, o.join_token);
  if (!client) return tl::unexpected(client.error());
  if (o.self_exe.empty()) o.self_exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  auto agent = std::unique_ptr<Agent>(new Agent(std::move(o), std::move(gpus), std::move(*client)));
  agent->job_uid_ = uid;
  agent->job_gid_ = gid;
  if (auto cred = ReadToken(agent->CredentialPath().string())) agent->credential_ = *cred;
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
                    .gpu_source = std::string(gpus_->kind()), .gpus = *devices, .credential = credential_,
                    .max_tasks = MaxTasks(host->cpu_cores)};
  // Registration is the join token's one call; everything after it uses the node's credential.
  auto joiner = HttpClient::Create(o_.server, o_.join_token);
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
  if (reply.contains("lease_ms") && reply["lease_ms"].is_number_integer()) {
    lease_ms_ = static_cast<int>(std::clamp<int64_t>(reply["lease_ms"].get<int64_t>(), 200, 600'000));
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
  auto client = HttpClient::Create(o_.server, credential_);
  if (!client) return client.error();
  client_ = std::move(*client);
  carrier_->SetToken(credential_);
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

// A task's environment: a clean one (as Slurm's --export=NONE and Nomad's executor give), with
// what the job asked for and the pool's variables laid over it, never the agent's own (which
// may hold its tokens). `home` is the task's working directory.
std::vector<std::string> Environment(const std::vector<std::pair<std::string, std::string>>& set, const std::string& home,
                                     const std::string& user) {
  std::vector<std::pair<std::string, std::string>> base = {
      {"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, {"HOME", home}, {"TMPDIR", home},
      {"LANG", "C.UTF-8"}, {"USER", user}, {"LOGNAME", user}};
  std::vector<std::string> env;
  for (const auto& [k, v] : base) {
    bool overridden = false;
    for (const auto& s : set) overridden = overridden || s.first == k;
    if (!overridden) env.push_back(k + "=" + v);
  }
  for (const auto& [k, v] : set) env.push_back(k + "=" + v);
  return env;
}

// Hands a directory tree to the task's user (after the agent, as root, made or restored it).
void GiveTree(const std::filesystem::path& dir, int uid, int gid) {
  if (uid < 0) return;
  (void)lchown(dir.c_str(), static_cast<uid_t>(uid), static_cast<gid_t>(gid));
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    (void)lchown(it->path().c_str(), static_cast<uid_t>(uid), static_cast<gid_t>(gid));
  }
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
  if (job_uid_ >= 0) {
    // The task writes its output through the descriptors it is given; no other task may read
    // it, nor list the task directory (names are predictable).
    namespace fsp = std::filesystem;
    fsp::permissions(dir, fsp::perms::owner_all | fsp::perms::group_exec | fsp::perms::others_exec, ec);
    fsp::permissions(out, fsp::perms::owner_read | fsp::perms::owner_write, ec);
    fsp::permissions(err, fsp::perms::owner_read | fsp::perms::owner_write, ec);
  }
  auto env = l.env;
  // The task's own directory, the only one it may write to (besides its checkpoint directory):
  // the task directory above it holds the lease and status files, which it must not touch.
  const auto work = dir / "work";
  std::filesystem::create_directories(work, ec);
  GiveTree(work, job_uid_, job_gid_);
  if (l.carry_checkpoint) {
    t.ckpt_dir = CheckpointDir(key);
    std::filesystem::create_directories(t.ckpt_dir, ec);
    GiveTree(t.ckpt_dir, job_uid_, job_gid_);
    t.ckpt_seen = t.ckpt_sent = SignTree(t.ckpt_dir);  // what the pool has already
    env.emplace_back("GPUPOOL_CHECKPOINT_DIR", t.ckpt_dir.string());
    std::ofstream(dir / "carry") << t.ckpt_dir.string() << "\n";  // for an agent that adopts the task
  }
  // The task runs under `gpupool supervise`, which stops it when the lease runs out.
  std::vector<std::string> args = {supervisor_, "--lease-file", (dir / "lease").string(), "--status-file",
                                   (dir / "status").string(), "--lease-ms", std::to_string(lease_ms_), "--grace-ms",
                                   std::to_string(o_.kill_grace.value()), "--"};
  if (job_uid_ >= 0) {
    args.insert(args.end() - 1, {"--uid", std::to_string(job_uid_), "--gid", std::to_string(job_gid_)});
  }
  if (supervisor_ == o_.self_exe) args.insert(args.begin() + 1, "supervise");
  args.insert(args.end(), l.command.begin(), l.command.end());
  // A relative workdir is inside the task's own directory (the server refused one that climbs
  // out); an absolute one is what the server's --allow-workdir let through.
  std::string workdir = work.string();
  if (std::filesystem::path(l.workdir).is_absolute()) {
    workdir = l.workdir;
  } else if (!l.workdir.empty()) {
    workdir = (work / l.workdir).string();
    std::filesystem::create_directories(workdir, ec);
    GiveTree(workdir, job_uid_, job_gid_);
  }
  auto pid = SpawnInSession(std::move(args), Environment(env, workdir, TaskUser()), out, err, workdir);
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
      // Fenced off (the job moved on) or too big: shipping it again will not help. The task's
      // own stderr says so, where its user will look.
      fmt::print(stderr, "gpupool agent: job {} task {}: checkpoint not shipped: {}\n", d.key.job, d.key.task, d.status.message());
      std::ofstream(TaskDir(d.key) / "stderr", std::ios::app)
          << fmt::format("gpupool agent: this task's checkpoint was not carried to the pool: {}\n", d.status.message());
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
                                         {"GPUPOOL_SELFTEST_GPU", std::to_string(gpu)}, {"GPUPOOL_SELFTEST_UUID", uuid}},
                                        o_.work_dir.string(), TaskUser()),
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
  ReadStatus(TaskKey{t.launch.job, t.launch.task, t.launch.attempt}, t);
}

void Agent::ReadStatus(const TaskKey& key, Task& t) {
  std::ifstream st(TaskDir(key) / "status");
  std::string kind;
  int value = 0;
  std::string lost;
  if (!(st >> kind >> value)) return;
  st >> lost;
  t.lost = lost == "lost";
  if (t.lost && t.error.empty()) t.error = "its lease ran out";
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
      ReadStatus(key, t);
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

bool Agent::ShipLogs(Task& t, TaskReport& r, int64_t& budget) {
  bool complete = true;
  const auto dir = TaskDir(TaskKey{t.launch.job, t.launch.task, t.launch.attempt});
  const bool ended = t.exit_code || t.signal;
  for (int s = 0; s < 2; ++s) {
    const auto path = dir / (s == 0 ? "stdout" : "stderr");
    int64_t& sent = t.sent[static_cast<size_t>(s)];
    std::error_code ec;
    const int64_t size = static_cast<int64_t>(std::filesystem::file_size(path, ec));
    if (ec || size <= sent) continue;
    std::string& chunk = s == 0 ? r.stdout_chunk : r.stderr_chunk;
    // Too far behind: skip to the newest output, and say so in the log itself.
    if (size - sent > (ended ? kLogEndBacklog : kLogBacklog)) {
      const int64_t skip = size - sent - kLogKeep;
      sent += skip;
      t.dropped += skip;
      chunk = fmt::format("\n[gpupool: {} bytes of output dropped here: the job wrote faster than its node ships logs]\n", skip);
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) continue;
    const int64_t n = std::min({size - sent, kLogChunk, std::max<int64_t>(budget, 0)});
    t.in_flight[static_cast<size_t>(s)] = n;
    if (n > 0) {
      const size_t at = chunk.size();
      chunk.resize(at + static_cast<size_t>(n));
      in.seekg(sent);
      in.read(chunk.data() + at, n);
      sent += n;
      budget -= n;
    }
    if (sent < size) complete = false;
  }
  return complete;
}

// While the server's process is down (connection refused: its host answers, so no other server
// can have given this node's work away), the tasks keep their leases, renewed faster than they
// run out; when it is back it adopts them, as after any restart.
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
    hb.wait_ms = !to_start_.empty() ? 0 : (active ? 20 : static_cast<int>(o_.interval.value()));
    auto res = client_.Call("POST", "/v1/agent/heartbeat", HeartbeatToJson(hb), Millis{hb.wait_ms + 10'000});
    if (!res || res->status != 200) {
      const bool too_big = res && res->status == 413;
      if (res) fmt::print(stderr, "gpupool agent: heartbeat: HTTP {}: {}\n", res->status, res->body.substr(0, 300));
      if (res && res->status == 404) registered = false;  // the server forgot us: register again
      // Not this node's credential (the server lost it, or another agent took the node over
      // while this one was cut off): register again, proving who we are, or stop.
      if (res && res->status == 401) registered = false;
      // Reports are kept and sent again; tasks keep running while the server is away.
      for (const auto& key : done) tasks_[key].reported_running = false;
      backoff = std::min<int64_t>(backoff * 2, 2'000);
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
