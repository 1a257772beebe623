#include "agent/agent.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "adapters/nvml.h"

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
  return std::unique_ptr<Agent>(new Agent(std::move(o), std::move(gpus), std::move(*client)));
}

Status Agent::Register() {
  auto devices = gpus_->Devices();
  if (!devices) return devices.error();
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
  return Status::Ok();
}

std::filesystem::path Agent::TaskDir(uint64_t job, int task) const {
  return o_.work_dir / fmt::format("job-{}-task-{}", job, task);
}

void Agent::Start(const TaskLaunch& l) {
  const auto key = std::pair{l.job, l.task};
  if (!seen_.insert(key).second) return;  // already launched once: never twice
  Task t{.launch = l, .started_ms = NowMs()};
  const auto dir = TaskDir(l.job, l.task);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string out = (dir / "stdout").string();
  const std::string err = (dir / "stderr").string();
  // Everything the child needs, prepared before fork (no allocation after it).
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    const std::string_view kv(*e);
    bool overridden = false;
    for (const auto& [k, v] : l.env) overridden = overridden || (kv.starts_with(k) && kv.size() > k.size() && kv[k.size()] == '=');
    if (!overridden) env_strings.emplace_back(kv);
  }
  for (const auto& [k, v] : l.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = l.command;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string workdir = l.workdir.empty() ? dir.string() : l.workdir;
  const pid_t pid = fork();
  if (pid == 0) {
    setsid();  // its own process group: a cancel kills the whole tree
    const int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int in = open("/dev/null", O_RDONLY);
    if (o < 0 || e < 0 || in < 0) _exit(126);
    dup2(in, 0);
    dup2(o, 1);
    dup2(e, 2);
    if (chdir(workdir.c_str()) != 0) {
      dprintf(2, "gpupool agent: cannot enter working directory %s: %s\n", workdir.c_str(), strerror(errno));
      _exit(126);
    }
    execvpe(argv[0], argv.data(), envp.data());
    dprintf(2, "gpupool agent: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  if (pid < 0) {
    t.exit_code = 126;
    t.error = fmt::format("fork failed: {}", strerror(errno));
  }
  t.pid = pid;
  tasks_[key] = std::move(t);
  MarkGpus();
}

void Agent::Cancel(uint64_t job, int task) {
  auto it = tasks_.find({job, task});
  if (it == tasks_.end() || it->second.exit_code || it->second.signal || it->second.pid <= 0) return;
  kill(-it->second.pid, SIGTERM);
  it->second.kill_at_ms = NowMs() + o_.kill_grace.value();
}

void Agent::Reap() {
  for (auto& [key, t] : tasks_) {
    if (t.pid <= 0 || t.exit_code || t.signal) continue;
    int status = 0;
    const pid_t r = waitpid(t.pid, &status, WNOHANG);
    if (r == t.pid) {
      if (WIFEXITED(status)) t.exit_code = WEXITSTATUS(status);
      if (WIFSIGNALED(status)) {
        t.signal = WTERMSIG(status);
        t.exit_code = 128 + WTERMSIG(status);
      }
      kill(-t.pid, SIGKILL);  // anything the task left behind in its group
      MarkGpus();
    } else if (t.kill_at_ms > 0 && NowMs() > t.kill_at_ms) {
      kill(-t.pid, SIGKILL);
    }
  }
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
  const auto dir = TaskDir(t.launch.job, t.launch.task);
  for (int s = 0; s < 2; ++s) {
    std::ifstream in(dir / (s == 0 ? "stdout" : "stderr"), std::ios::binary);
    if (!in) continue;
    in.seekg(0, std::ios::end);
    const int64_t size = in.tellg();
    if (size <= t.sent[static_cast<size_t>(s)]) continue;
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
      fmt::print(stderr, "gpupool agent: registered as {} with {}\n", o_.name, o_.server);
    }
    Reap();
    const int64_t now = NowMs();
    if (now - last_sample_ms_ >= o_.interval.value()) {
      if (auto h = host_.Sample()) host_sample_ = *h;
      if (auto g = gpus_->Sample()) gpu_sample_ = *g;
      last_sample_ms_ = now;
    }
    Heartbeat hb{.node = o_.name, .host = host_sample_, .gpus = gpu_sample_};
    std::vector<std::pair<uint64_t, int>> done;
    bool active = false;
    for (auto& [key, t] : tasks_) {
      TaskReport r{.job = key.first, .task = key.second, .started_ms = t.started_ms, .error = t.error};
      const bool ended = t.exit_code || t.signal;
      const bool shipped = ShipLogs(t, r);
      if (ended && shipped) {
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
    hb.wait_ms = active ? 20 : static_cast<int>(o_.interval.value());
    auto res = client_.Call("POST", "/v1/agent/heartbeat", HeartbeatToJson(hb), Millis{hb.wait_ms + 10'000});
    if (!res || res->status != 200) {
      if (res && res->status == 404) registered = false;  // the server forgot us: register again
      if (res && res->status == 401) return Status(StatusCode::kInvalidArgument, "heartbeat: the join token was refused");
      // Reports are kept and sent again; tasks keep running while the server is away.
      for (const auto& key : done) tasks_[key].reported_running = false;
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff));
      backoff = std::min<int64_t>(backoff * 2, 2'000);
      // Logs already read were lost with the failed request: ship them again.
      for (auto& [key, t] : tasks_) {
        for (const TaskReport& r : hb.tasks) {
          if (r.job == key.first && r.task == key.second) {
            t.sent[0] -= static_cast<int64_t>(r.stdout_chunk.size());
            t.sent[1] -= static_cast<int64_t>(r.stderr_chunk.size());
          }
        }
      }
      continue;
    }
    backoff = 200;
    for (const auto& key : done) tasks_.erase(key);
    auto reply = ParseReply(res->body);
    if (!reply) {
      fmt::print(stderr, "gpupool agent: bad reply from server: {}\n", reply.error().message());
      continue;
    }
    for (const auto& [job, task] : reply->cancel) Cancel(job, task);
    for (const TaskLaunch& l : reply->start) Start(l);
  }
  for (auto& [key, t] : tasks_) {
    if (t.pid > 0 && !t.exit_code && !t.signal) kill(-t.pid, SIGTERM);
  }
  return Status::Ok();
}

}  // namespace gp
