// The agent's tasks: their directories and clean environments, starting them (a supervisor
// each), carrying checkpoints, GPU self-tests, stopping and reaping, and shipping their output.
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
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "adapters/nvml.h"
#include "adapters/run_program.h"
#include "agent/agent_internal.h"
#include "adapters/tokens.h"
#include "core/models.h"
#include "core/units.h"

extern char** environ;


namespace gp {

using namespace agent_internal;  // NOLINT: the agent's own helpers

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
  const CleanSpawnAttr attr(CleanSpawnAttr::Group::kSession);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, argv[0], &fa, attr.get(), argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
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
  // Its user: its tenant's (the process driver's mapping), else the agent's --job-user.
  int uid = job_uid_;
  int gid = job_gid_;
  std::string user = TaskUser();
  std::string refused;
  if (!l.user.empty() && l.user != user) {
    const passwd* pw = job_uid_ >= 0 ? getpwnam(l.user.c_str()) : nullptr;
    if (job_uid_ < 0) {
      refused = fmt::format("its tenant's jobs run as {}, and this agent does not run as root (it cannot switch users)", l.user);
    } else if (!pw) {
      refused = fmt::format("its tenant's jobs run as {}, and node {} has no such user", l.user, o_.name);
    } else if (pw->pw_uid == 0) {
      refused = fmt::format("its tenant's user {} is root: tasks never run as root", l.user);
    } else {
      uid = static_cast<int>(pw->pw_uid);
      gid = static_cast<int>(pw->pw_gid);
      user = l.user;
    }
  }
  const auto dir = TaskDir(key);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  Touch(dir / "lease");  // the lease starts now
  const std::string out = (dir / "stdout").string();
  const std::string err = (dir / "stderr").string();
  std::ofstream(out, std::ios::trunc).close();
  std::ofstream(err, std::ios::trunc) << note;  // what the agent did for it first (a restore)
  if (uid >= 0) {
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
  GiveTree(work, uid, gid);
  if (l.carry_checkpoint) {
    t.ckpt_dir = CheckpointDir(key);
    std::filesystem::create_directories(t.ckpt_dir, ec);
    GiveTree(t.ckpt_dir, uid, gid);
    t.ckpt_seen = t.ckpt_sent = SignTree(t.ckpt_dir);  // what the pool has already
    env.emplace_back("GPUPOOL_CHECKPOINT_DIR", t.ckpt_dir.string());
    std::ofstream(dir / "carry") << t.ckpt_dir.string() << "\n";  // for an agent that adopts the task
  }
  // The task runs under `gpupool supervise`, which stops it when the lease runs out.
  std::vector<std::string> args = {supervisor_, "--lease-file", (dir / "lease").string(), "--status-file",
                                   (dir / "status").string(), "--lease-ms", std::to_string(lease_ms_), "--grace-ms",
                                   std::to_string(o_.kill_grace.value()), "--"};
  if (supervisor_ == o_.self_exe) args.insert(args.begin() + 1, "supervise");
  // A relative workdir is inside the task's own directory (the server refused one that climbs
  // out); an absolute one is what the server's --allow-workdir let through.
  std::string workdir = work.string();
  if (std::filesystem::path(l.workdir).is_absolute()) {
    workdir = l.workdir;
  } else if (!l.workdir.empty()) {
    workdir = (work / l.workdir).string();
    std::filesystem::create_directories(workdir, ec);
    GiveTree(workdir, uid, gid);
  }
  std::vector<std::string> command = l.command;
  std::vector<std::string> spawn_env;
  std::string spawn_cwd = workdir;
  if (l.driver == "oci") {
    // runc runs as root and starts the task as its user inside the container; after the task,
    // the supervisor makes sure nothing of the container is left running (runc kill).
    auto runc = refused.empty() ? PrepareContainer(key, l, env, uid, gid, user, workdir)
                                : Result<std::vector<std::string>>(Error(StatusCode::kPermissionDenied, refused));
    if (!runc) {
      refused = runc.error().message();
    } else {
      command = *runc;
      const std::string id = command.back();
      for (const std::string& a : {runc_, std::string("--root"), (o_.work_dir / "runc").string(), std::string("kill"), id,
                                   std::string("KILL")}) {
        args.insert(args.end() - 1, {"--after", a});
      }
      spawn_env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"};
      spawn_cwd = dir.string();
    }
  } else {
    if (uid >= 0) args.insert(args.end() - 1, {"--uid", std::to_string(uid), "--gid", std::to_string(gid)});
    spawn_env = Environment(env, workdir, user);
    if (cgroups_.available()) {
      // Its limits, and the other GPUs' device nodes denied; the supervisor joins the cgroups
      // before it starts the task.
      CgroupLimits limits{.cpu = l.cpu, .memory = l.memory, .pids = o_.pids_limit};
      for (int g = 0; g < kMaxGpusPerNode; ++g) {
        if (l.gpu_mask >> g & 1) continue;
        for (const std::string& rule : gpu_device_rules_[static_cast<size_t>(g)]) {
          bool given = false;
          for (int h = 0; h < kMaxGpusPerNode; ++h) {
            const auto& mine = gpu_device_rules_[static_cast<size_t>(h)];
            given = given || ((l.gpu_mask >> h & 1) && std::find(mine.begin(), mine.end(), rule) != mine.end());
          }
          if (!given) limits.deny_devices.push_back(rule);
        }
      }
      auto dirs = cgroups_.Prepare(dir.filename().string(), limits);
      if (dirs) {
        for (const std::string& d : *dirs) args.insert(args.end() - 1, {"--cgroup", d});
      } else {
        fmt::print(stderr, "gpupool agent: job {} task {}: no cgroup limits: {}\n", l.job, l.task, dirs.error().message());
      }
    }
  }
  args.insert(args.end(), command.begin(), command.end());
  auto pid = refused.empty() ? SpawnInSession(std::move(args), std::move(spawn_env), out, err, spawn_cwd)
                             : Result<pid_t>(Error(StatusCode::kPermissionDenied, refused));
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
  const TaskKey key{t.launch.job, t.launch.task, t.launch.attempt};
  ReadStatus(key, t);
  ContainerEnded(key, t);
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
    const std::string name = TaskDir(t->first).filename().string();
    if (t->second.launch.driver != "oci" && cgroups_.OomKills(name) > 0) NoteOom(t->first, t->second, t->second.launch.memory.value());
    cgroups_.Remove(name);
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
      ContainerEnded(key, t);
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


// --- the oci driver ---

void Agent::DetectDrivers() {
  // The CDI specs say which device nodes are which GPU's: for containers (oci) and for the
  // process driver's device rules alike.
  std::vector<std::filesystem::path> dirs(o_.cdi_dirs.begin(), o_.cdi_dirs.end());
  auto cdi = CdiRegistry::Load(dirs);
  if (cdi) cdi_ = std::move(*cdi);
  auto devices = gpus_->Devices();
  for (const GpuDevice& d : devices ? *devices : std::vector<GpuDevice>{}) {
    if (d.index < 0 || d.index >= kMaxGpusPerNode) continue;
    std::vector<std::string> hosts;
    // The device's own nodes only (a spec's common ones, /dev/nvidiactl, every GPU needs).
    const CdiEdits* own = cdi_.Own(o_.cdi_kind, std::to_string(d.index));
    if (!own && !d.uuid.empty()) own = cdi_.Own(o_.cdi_kind, d.uuid);
    if (own) {
      for (const CdiDeviceNode& n : own->device_nodes) hosts.push_back(n.host_path.empty() ? n.path : n.host_path);
    } else {
      hosts.push_back(fmt::format("/dev/nvidia{}", d.index));  // NVIDIA's own names, where there is no spec
    }
    for (const std::string& h : hosts) {
      struct stat st {};
      if (stat(h.c_str(), &st) != 0 || !(S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))) continue;
      gpu_device_rules_[static_cast<size_t>(d.index)].push_back(
          fmt::format("{} {}:{} rwm", S_ISCHR(st.st_mode) ? 'c' : 'b', gnu_dev_major(st.st_rdev), gnu_dev_minor(st.st_rdev)));
    }
  }
  const bool want = o_.drivers == "auto" || o_.drivers.find("oci") != std::string::npos;
  if (!want) {
    oci_why_not_ = "not among --drivers";
    return;
  }
  if (geteuid() != 0) {
    oci_why_not_ = "the agent does not run as root (runc needs it)";
    return;
  }
  // runc: the path given, else found on PATH.
  runc_.clear();
  if (o_.runc.find('/') != std::string::npos) {
    if (access(o_.runc.c_str(), X_OK) == 0) runc_ = o_.runc;
  } else if (const char* path = getenv("PATH")) {
    for (std::string_view rest = path; !rest.empty() && runc_.empty();) {
      const size_t colon = rest.find(':');
      const std::string candidate = std::string(rest.substr(0, colon)) + "/" + o_.runc;
      if (access(candidate.c_str(), X_OK) == 0) runc_ = candidate;
      rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
    }
    for (const char* dir : {"/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin", "/usr/local/bin"}) {
      const std::string candidate = std::string(dir) + "/" + o_.runc;
      if (runc_.empty() && access(candidate.c_str(), X_OK) == 0) runc_ = candidate;
    }
  }
  if (runc_.empty()) {
    oci_why_not_ = fmt::format("no {} on this node (Debian: apt install runc)", o_.runc);
    return;
  }
  if (!cdi) {
    oci_why_not_ = cdi.error().message();
    return;
  }
  // One cgroup subtree per agent: several agents on one machine (gpupool dev) never collide.
  cgroup_prefix_ = "/gpupool/" + Sha256Hex(o_.work_dir.string()).substr(0, 12);
  oci_ = true;
}

Result<std::filesystem::path> Agent::ImageRootfs(const std::string& image) {
  if (o_.oci_unpack.empty()) {
    return Error(StatusCode::kFailedPrecondition,
                 fmt::format("image {}: this node unpacks no images (gpupool agent --oci-unpack CMD); give a rootfs", image));
  }
  const auto dir = o_.work_dir / "images" / Sha256Hex(image).substr(0, 24);
  std::error_code ec;
  if (std::filesystem::is_directory(dir / "rootfs", ec)) return dir / "rootfs";
  const auto partial = dir.string() + ".partial";
  std::filesystem::remove_all(partial, ec);
  std::filesystem::create_directories(std::filesystem::path(partial).parent_path(), ec);
  std::string cmd = o_.oci_unpack;
  auto quoted = [](const std::string& s) {
    std::string q = "'";
    for (char ch : s) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    return q + "'";
  };
  for (const auto& [key, value] : {std::pair{std::string("{image}"), quoted(image)}, std::pair{std::string("{dir}"), quoted(partial)}}) {
    for (size_t at = cmd.find(key); at != std::string::npos; at = cmd.find(key, at + value.size())) cmd.replace(at, key.size(), value);
  }
  const std::string log = (o_.work_dir / "images" / "unpack.log").string();
  const int rc = std::system(fmt::format("{} >{} 2>&1 </dev/null", cmd, quoted(log)).c_str());
  if (rc != 0 || !std::filesystem::is_directory(std::filesystem::path(partial) / "rootfs", ec)) {
    std::ifstream in(log);
    std::string said((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (said.size() > 300) said = said.substr(said.size() - 300);
    return Error(StatusCode::kFailedPrecondition,
                 fmt::format("image {}: --oci-unpack did not make {}/rootfs (exit {}): {}", image, partial, rc, said));
  }
  std::filesystem::rename(partial, dir, ec);
  if (ec) return Error(StatusCode::kFailedPrecondition, fmt::format("image {}: {}", image, ec.message()));
  return dir / "rootfs";
}

Result<std::vector<std::string>> Agent::PrepareContainer(const TaskKey& key, const TaskLaunch& l,
                                                         std::vector<std::pair<std::string, std::string>> env, int uid, int gid,
                                                         const std::string& user, const std::filesystem::path& cwd) {
  if (!oci_) return Error(StatusCode::kFailedPrecondition, fmt::format("node {} runs no oci tasks: {}", o_.name, oci_why_not_));
  if (uid < 0) return Error(StatusCode::kFailedPrecondition, "an oci task needs a user to run as");
  std::error_code ec;
  std::filesystem::path rootfs;
  if (!l.rootfs.empty()) {
    if (!std::filesystem::is_directory(l.rootfs, ec)) {
      return Error(StatusCode::kFailedPrecondition, fmt::format("rootfs {}: not a directory on node {}", l.rootfs, o_.name));
    }
    rootfs = l.rootfs;
  } else {
    auto unpacked = ImageRootfs(l.image);
    if (!unpacked) return tl::unexpected(unpacked.error());
    rootfs = *unpacked;
  }
  const auto dir = TaskDir(key);
  const auto work = dir / "work";
  OciTask t{.uid = static_cast<uint32_t>(uid), .gid = static_cast<uint32_t>(gid), .rootfs = std::filesystem::absolute(rootfs),
            .read_only_root = l.read_only_root, .hostname = o_.name, .memory_bytes = l.memory.value() << 20,
            .cpu_millicores = l.cpu.value(), .pids_limit = o_.pids_limit, .memory_swap_limit = SwapAccounting()};
  // The task's own directory is /task inside; a carried checkpoint directory /checkpoint; a
  // shared one (on the checkpoint root every node mounts) where it is on the host; an absolute
  // workdir the server allowed, where it is.
  t.binds.emplace_back(work, "/task");
  std::string inside_cwd = "/task";
  if (cwd.string().starts_with(work.string())) {
    inside_cwd += cwd.string().substr(work.string().size());
  } else {
    t.binds.emplace_back(cwd, cwd.string());
    inside_cwd = cwd.string();
  }
  for (auto& [k, v] : env) {
    if (k != "GPUPOOL_CHECKPOINT_DIR") continue;
    if (v == CheckpointDir(key).string()) {
      t.binds.emplace_back(v, "/checkpoint");
      v = "/checkpoint";
    } else {
      t.binds.emplace_back(v, v);
    }
  }
  t.cwd = inside_cwd;
  t.args = l.command;
  t.env = Environment(env, "/task", user);
  // The GPUs given, the CDI way: exactly their device nodes, mounts, environment and hooks.
  CdiEdits edits;
  std::vector<std::string> gpus;
  for (int g = 0; g < kMaxGpusPerNode; ++g) {
    if (l.gpu_mask >> g & 1) gpus.push_back(std::to_string(g));
  }
  std::string note;
  if (!gpus.empty() && cdi_.has(o_.cdi_kind)) {
    std::vector<std::string> names;
    for (const std::string& g : gpus) {
      // By index, else by the GPU's UUID (nvidia-ctk names devices both ways).
      auto by_index = cdi_.Resolve(o_.cdi_kind, {g});
      std::string uuid;
      for (const GpuDevice& d : devices_) {
        if (std::to_string(d.index) == g) uuid = d.uuid;
      }
      names.push_back(by_index || uuid.empty() ? g : uuid);
    }
    auto resolved = cdi_.Resolve(o_.cdi_kind, names);
    if (!resolved) return tl::unexpected(resolved.error());
    edits = std::move(*resolved);
  } else if (!gpus.empty()) {
    note = fmt::format("gpupool agent: no CDI spec of kind {} on node {} (/etc/cdi, /var/run/cdi): the container gets no GPU "
                       "device nodes\n",
                       o_.cdi_kind, o_.name);
  }
  t.cgroups_path = fmt::format("{}/j{}-t{}-a{}", cgroup_prefix_, key.job, key.task, key.attempt);
  auto config = OciConfig(t, edits);
  if (!config) return tl::unexpected(config.error());
  const auto bundle = dir / "bundle";
  std::filesystem::create_directories(bundle, ec);
  std::ofstream(bundle / "config.json") << *config;
  const std::string id = fmt::format("j{}-t{}-a{}", key.job, key.task, key.attempt);
  std::ofstream(dir / "container") << id << "\n" << t.cgroups_path << "\n" << (l.memory.value()) << "\n";
  if (!note.empty()) std::ofstream(dir / "stderr", std::ios::app) << note;
  return std::vector<std::string>{runc_, "--root", (o_.work_dir / "runc").string(), "run", "--keep", "--bundle", bundle.string(), id};
}

void Agent::NoteOom(const TaskKey& key, Task& t, int64_t memory_mib) {
  t.error = memory_mib > 0 ? fmt::format("OOM-killed: the task went over its memory limit of {} MiB", memory_mib)
                           : std::string("OOM-killed: the task ran out of memory");
  std::ofstream(TaskDir(key) / "stderr", std::ios::app) << "gpupool agent: " << t.error << "\n";
}

void Agent::ContainerEnded(const TaskKey& key, Task& t) {
  const auto dir = TaskDir(key);
  std::ifstream in(dir / "container");
  std::string id, cgroup;
  int64_t memory_mib = 0;
  if (!(in >> id >> cgroup)) return;
  in >> memory_mib;
  if (OomKills(cgroup) > 0) NoteOom(key, t, memory_mib);
  // runc answers for a container's own end with 128 + the signal that ended it.
  if (t.exit_code && *t.exit_code > 128 && *t.exit_code < 128 + 65 && !t.signal) t.signal = *t.exit_code - 128;
  const std::string root = (o_.work_dir / "runc").string();
  if (!runc_.empty()) {
    auto pid = SpawnInSession({runc_, "--root", root, "delete", "--force", id},
                              {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, "/dev/null", "/dev/null", "/");
    if (pid) waitpid(*pid, nullptr, 0);
  }
}

}  // namespace gp
