// The `local` provisioner: a "cloud" on this machine. An instance is a real `gpupool agent
// --simulate-gpus` process (in a session of its own, so that it outlives the server that asked
// for it, as a cloud machine would), started after a seeded boot delay; its record is a JSON
// file in the provisioner's directory, so that `list` after a server restart reconciles with
// what really runs. Seeded faults: stockouts per offer, a quota of GPUs, spot interruptions
// with notice (the instance is stopped at its deadline).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <iterator>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "adapters/provisioner.h"
#include "adapters/run_program.h"
#include "core/units.h"

extern char** environ;

namespace gp {
namespace {

using Json = nlohmann::json;

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class LocalProvisioner final : public Provisioner {
 public:
  explicit LocalProvisioner(LocalProvisionerOptions o) : o_(std::move(o)) {
    std::error_code ec;
    std::filesystem::create_directories(o_.dir, ec);
  }

  Result<ProviderDescription> Describe() override {
    return ProviderDescription{.max_parallel_creates = 8, .billing = "per second (local)"};
  }

  CreateOutcome Create(const CreateRequest& r) override {
    CreateOutcome out;
    Json s = Load();
    for (auto& [id, i] : s["instances"].items()) {
      if (i["claim"] == r.claim) out.instances.push_back(InstanceOf(id, i));
    }
    if (!out.instances.empty()) return out;  // idempotent on the claim
    if (!r.offer) {
      out.error = ProvisionError{.error_class = ProvisionErrorClass::kInvalid, .message = "no offer given"};
      return out;
    }
    for (const std::string& o : o_.stockout_offers) {
      if (o == r.offer->name) {
        // A stockout of one instance type in one zone (as EC2's InsufficientInstanceCapacity):
        // the offer is blocked, not its whole site.
        out.error = ProvisionError{.error_class = ProvisionErrorClass::kCapacity, .scope = Scope::kOffer,
                                   .message = fmt::format("no {}x{} left at {} (local stockout)", r.offer->gpus, r.offer_model, r.offer_site),
                                   .retry_after = o_.stockout_retry};
        return out;
      }
    }
    int held = 0;
    for (auto& [id, i] : s["instances"].items()) held += i.value("gpus", 0);
    if (o_.quota_gpus > 0 && held + r.count * r.offer->gpus > o_.quota_gpus) {
      out.error = ProvisionError{.error_class = ProvisionErrorClass::kQuota, .scope = Scope::kProvider,
                                 .message = fmt::format("quota of {} GPUs: {} held, {} more asked", o_.quota_gpus, held,
                                                        r.count * r.offer->gpus)};
      return out;
    }
    if (!r.join_token.empty()) {
      const auto token = o_.dir / "join.token";
      std::ofstream(token) << r.join_token << "\n";
      std::filesystem::permissions(token, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    }
    for (int k = 0; k < r.count; ++k) {
      const int64_t n = s.value("next", int64_t{1});
      s["next"] = n + 1;
      const std::string id = fmt::format("local-{}", n);
      std::mt19937_64 rng(o_.seed ^ static_cast<uint64_t>(n) * 0x9E3779B97F4A7C15ull);
      const int64_t lo = o_.boot_delay_min.value();
      const int64_t hi = std::max(lo, o_.boot_delay_max.value());
      const int64_t boot = lo + (hi > lo ? static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo + 1)) : 0);
      Json i{{"claim", r.claim}, {"offer", r.offer->name}, {"gpus", r.offer->gpus}, {"tier", PriceTierName(r.offer->tier)},
             {"created_ms", WallMs()}, {"state", "pending"}};
      if (r.offer->tier == PriceTier::kSpot && o_.spot_lifetime.value() > 0) {
        i["reclaim_ms"] = WallMs() + boot + o_.spot_lifetime.value();
      } else if (r.offer->tier == PriceTier::kSpot && o_.spot_mtbf.value() > 0) {
        std::exponential_distribution<double> life(1.0 / static_cast<double>(o_.spot_mtbf.value()));
        i["reclaim_ms"] = WallMs() + boot + static_cast<int64_t>(life(rng));
      }
      auto pid = Start(id, r, boot);
      if (!pid) {
        out.error = ProvisionError{.error_class = ProvisionErrorClass::kTransient, .message = pid.error().message()};
        break;
      }
      i["pid"] = *pid;
      s["instances"][id] = i;
      out.instances.push_back(InstanceOf(id, i));
    }
    Save(s);
    return out;
  }

  Status Delete(const std::vector<std::string>& ids) override {
    Json s = Load();
    for (const std::string& id : ids) {
      auto it = s["instances"].find(id);
      if (it == s["instances"].end()) continue;  // not found is success
      Stop(it->value("pid", 0), id);
      s["instances"].erase(it);
    }
    Save(s);
    return Status::Ok();
  }

  Result<std::vector<Instance>> List() override {
    Json s = Load();
    Reclaim(s);
    std::vector<Instance> out;
    for (auto& [id, i] : s["instances"].items()) out.push_back(InstanceOf(id, i));
    return out;
  }

  Result<std::vector<Interruption>> Events() override {
    Json s = Load();
    Reclaim(s);
    std::vector<Interruption> out;
    const int64_t now = WallMs();
    for (auto& [id, i] : s["instances"].items()) {
      if (!i.contains("reclaim_ms")) continue;
      const int64_t at = i["reclaim_ms"].get<int64_t>();
      if (at - o_.notice.value() <= now) out.push_back(Interruption{.instance = id, .deadline_ms = at});
    }
    return out;
  }

 private:
  // Whether `pid` is still this instance's process (not a later process that reuses the
  // number): its command line names the instance. A child that has exited is reaped here.
  static bool Runs(int pid, const std::string& id) {
    if (pid <= 0) return false;
    waitpid(pid, nullptr, WNOHANG);
    std::ifstream f(fmt::format("/proc/{}/cmdline", pid));
    const std::string cmdline((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    // The name as a whole argument: an agent's own (NUL-separated), or quoted in its boot shell.
    return cmdline.find(std::string(1, '\0') + id + std::string(1, '\0')) != std::string::npos ||
           cmdline.find("'" + id + "'") != std::string::npos;
  }

  static Instance InstanceOf(const std::string& id, const Json& i) {
    const bool alive = Runs(i.value("pid", 0), id);
    return Instance{.id = id, .claim = i.value("claim", ""), .offer = i.value("offer", ""),
                    .state = i.value("state", "") == "reclaimed" ? "terminated" : (alive ? "running" : "stopped")};
  }

  // Spot instances past their deadline are taken back, as a cloud would.
  void Reclaim(Json& s) {
    const int64_t now = WallMs();
    bool changed = false;
    for (auto& [id, i] : s["instances"].items()) {
      if (i.contains("reclaim_ms") && i["reclaim_ms"].get<int64_t>() <= now && i.value("state", "") != "reclaimed") {
        Stop(i.value("pid", 0), id);
        i["state"] = "reclaimed";
        changed = true;
      }
    }
    if (changed) Save(s);
  }

  // `sh -c 'sleep BOOT; exec gpupool agent ...'` in a session of its own, output to a log.
  Result<int> Start(const std::string& id, const CreateRequest& r, int64_t boot_ms) {
    const auto work = o_.dir / id;
    std::error_code ec;
    std::filesystem::create_directories(work, ec);
    const std::string gpus = fmt::format("{}x{}", r.offer->gpus, r.offer_model);
    std::vector<std::string> argv = {o_.gpupool, "agent", "--server", r.server, "--join-token-file", (o_.dir / "join.token").string(),
                                     "--simulate-gpus", gpus, "--name", id, "--claim", r.claim, "--site", r.offer_site,
                                     "--tier", std::string(PriceTierName(r.offer->tier)), "--work-dir", work.string(),
                                     "--metrics-listen", "off"};
    if (!o_.provider.empty()) {
      argv.push_back("--provider");
      argv.push_back(o_.provider);
    }
    std::string cmd = fmt::format("sleep {:.3f}; exec", static_cast<double>(boot_ms) / 1000.0);
    for (const std::string& a : argv) {
      std::string quoted = "'";
      for (char c : a) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
      cmd += " " + quoted + "'";
    }
    const std::string log = (work / "agent.log").string();
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    // Nothing of the server's beyond these three: an agent that inherited its listening socket
    // would hold the port after the server died, and a restart could not listen.
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    const CleanSpawnAttr attr(CleanSpawnAttr::Group::kSession);
    pid_t pid = -1;
    const char* args[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
    const int rc = posix_spawn(&pid, "/bin/sh", &fa, attr.get(), const_cast<char* const*>(args), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return Error(StatusCode::kInternal, fmt::format("cannot start an agent: {}", std::strerror(rc)));
    return static_cast<int>(pid);
  }

  // The instance's session: TERM, then KILL if it lingers (an agent stops its tasks on TERM).
  static void Stop(int pid, const std::string& id) {
    if (!Runs(pid, id)) return;
    kill(-pid, SIGTERM);
    for (int i = 0; i < 100 && Runs(pid, id); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (Runs(pid, id)) kill(-pid, SIGKILL);
    waitpid(pid, nullptr, WNOHANG);
  }

  Json Load() const {
    std::ifstream f(o_.dir / "instances.json");
    Json s = Json::parse(f, nullptr, /*allow_exceptions=*/false);
    if (s.is_discarded() || !s.is_object()) s = Json::object();
    if (!s.contains("instances") || !s["instances"].is_object()) s["instances"] = Json::object();
    return s;
  }
  void Save(const Json& s) const {
    const auto tmp = o_.dir / "instances.json.tmp";
    std::ofstream(tmp) << s.dump();
    std::filesystem::rename(tmp, o_.dir / "instances.json");
  }

  LocalProvisionerOptions o_;
};

}  // namespace

std::unique_ptr<Provisioner> MakeLocalProvisioner(LocalProvisionerOptions options) {
  return std::make_unique<LocalProvisioner>(std::move(options));
}

}  // namespace gp
