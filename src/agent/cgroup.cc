#include "agent/cgroup.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace gp {
namespace {

constexpr long kCgroup2Magic = 0x63677270;  // CGROUP2_SUPER_MAGIC
constexpr long kCgroupMagic = 0x27e0eb;     // CGROUP_SUPER_MAGIC (v1)

bool WriteFile(const std::string& path, const std::string& value) {
  std::ofstream out(path);
  out << value;
  out.flush();
  return static_cast<bool>(out);
}

bool Exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

// mkdir -p, for a few levels under a cgroup mount.
bool MakeDirs(const std::string& path) {
  for (size_t at = 1; at != std::string::npos; at = path.find('/', at + 1)) {
    const std::string part = path.substr(0, at);
    if (!part.empty() && mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) return false;
  }
  return mkdir(path.c_str(), 0755) == 0 || errno == EEXIST;
}

}  // namespace

std::string CpuMaxValue(MilliCpu cpu, int64_t period_us) {
  if (cpu.value() <= 0) return fmt::format("max {}", period_us);
  return fmt::format("{} {}", cpu.value() * period_us / 1000, period_us);
}

CgroupLimiter CgroupLimiter::Detect(const std::string& root, const std::string& scope) {
  CgroupLimiter c;
  const std::string sub = scope.empty() ? "/gpupool" : "/gpupool/" + scope;
  struct statfs fs {};
  if (statfs(root.c_str(), &fs) != 0) {
    c.why_not_ = fmt::format("{}: {}", root, std::strerror(errno));
    return c;
  }
  if (static_cast<long>(fs.f_type) == kCgroup2Magic) {
    std::ifstream in(root + "/cgroup.controllers");
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string controllers = ss.str();
    if (controllers.find("cpu") == std::string::npos || controllers.find("memory") == std::string::npos) {
      c.why_not_ = fmt::format("{}: the cpu and memory controllers are not available", root);
      return c;
    }
    const std::string enable = controllers.find("pids") != std::string::npos ? "+cpu +memory +pids" : "+cpu +memory";
    std::string dir = root;
    if (!WriteFile(root + "/cgroup.subtree_control", enable)) {
      c.why_not_ = fmt::format("cannot enable the cpu and memory controllers under {}", root);
      return c;
    }
    // Each level down to the tasks' parent hands the controllers on.
    for (size_t at = 1; at != std::string::npos;) {
      const size_t next = sub.find('/', at);
      dir = root + sub.substr(0, next);
      if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
        c.why_not_ = fmt::format("cannot create {}: {}", dir, std::strerror(errno));
        return c;
      }
      if (!WriteFile(dir + "/cgroup.subtree_control", enable)) {
        c.why_not_ = fmt::format("cannot enable the cpu and memory controllers under {}", dir);
        return c;
      }
      at = next == std::string::npos ? next : next + 1;
    }
    c.bases_.emplace_back("", root + sub);
    c.available_ = true;
    return c;
  }
  // v1: a hierarchy per controller; cpu and memory are needed, pids and devices taken if there.
  for (const char* ctrl : {"cpu", "memory", "pids", "devices"}) {
    const std::string mount = root + "/" + ctrl;
    struct statfs cfs {};
    const bool mounted = statfs(mount.c_str(), &cfs) == 0 && static_cast<long>(cfs.f_type) == kCgroupMagic;
    const bool needed = std::string(ctrl) == "cpu" || std::string(ctrl) == "memory";
    if (!mounted) {
      if (needed) {
        c.why_not_ = fmt::format("{} is neither a cgroup v2 mount nor a v1 hierarchy with {}", root, ctrl);
        c.bases_.clear();
        return c;
      }
      continue;
    }
    if (!MakeDirs(mount + sub)) {
      c.why_not_ = fmt::format("cannot create {}: {}", mount + sub, std::strerror(errno));
      c.bases_.clear();
      return c;
    }
    c.bases_.emplace_back(ctrl, mount + sub);
  }
  c.v1_ = true;
  c.available_ = true;
  return c;
}

Result<std::vector<std::string>> CgroupLimiter::Prepare(const std::string& name, const CgroupLimits& limits) const {
  if (!available_) return Error(StatusCode::kFailedPrecondition, why_not_);
  std::vector<std::string> dirs;
  auto fail = [&](const std::string& what) {
    Remove(name);
    return Error(StatusCode::kInternal, what);
  };
  for (const auto& [ctrl, base] : bases_) {
    const std::string dir = base + "/" + name;
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return fail(fmt::format("cannot create {}: {}", dir, std::strerror(errno)));
    dirs.push_back(dir);
    const int64_t bytes = limits.memory.value() << 20;
    if (ctrl.empty()) {  // v2
      if (limits.cpu.value() > 0 && !WriteFile(dir + "/cpu.max", CpuMaxValue(limits.cpu))) return fail("cannot set " + dir + "/cpu.max");
      if (bytes > 0 && !WriteFile(dir + "/memory.max", std::to_string(bytes))) return fail("cannot set " + dir + "/memory.max");
      if (bytes > 0 && Exists(dir + "/memory.swap.max")) WriteFile(dir + "/memory.swap.max", "0");
      if (limits.pids > 0 && Exists(dir + "/pids.max") && !WriteFile(dir + "/pids.max", std::to_string(limits.pids))) {
        return fail("cannot set " + dir + "/pids.max");
      }
    } else if (ctrl == "cpu" && limits.cpu.value() > 0) {
      if (!WriteFile(dir + "/cpu.cfs_period_us", "100000") ||
          !WriteFile(dir + "/cpu.cfs_quota_us", std::to_string(limits.cpu.value() * 100))) {
        return fail("cannot set " + dir + "/cpu.cfs_quota_us");
      }
    } else if (ctrl == "memory" && bytes > 0) {
      if (!WriteFile(dir + "/memory.limit_in_bytes", std::to_string(bytes))) return fail("cannot set " + dir + "/memory.limit_in_bytes");
      // Memory and swap together at the same limit: no swapping past it.
      if (Exists(dir + "/memory.memsw.limit_in_bytes")) WriteFile(dir + "/memory.memsw.limit_in_bytes", std::to_string(bytes));
    } else if (ctrl == "pids" && limits.pids > 0) {
      if (!WriteFile(dir + "/pids.max", std::to_string(limits.pids))) return fail("cannot set " + dir + "/pids.max");
    } else if (ctrl == "devices") {
      for (const std::string& rule : limits.deny_devices) {
        if (!WriteFile(dir + "/devices.deny", rule)) return fail(fmt::format("cannot deny {} in {}", rule, dir));
      }
    }
  }
  return dirs;
}

void CgroupLimiter::Remove(const std::string& name) const {
  for (const auto& [ctrl, base] : bases_) rmdir((base + "/" + name).c_str());
}

int64_t CgroupLimiter::OomKills(const std::string& name) const {
  for (const auto& [ctrl, base] : bases_) {
    if (ctrl != "memory" && !ctrl.empty()) continue;
    std::ifstream in(base + "/" + name + (ctrl.empty() ? "/memory.events" : "/memory.oom_control"));
    std::string key;
    int64_t value = 0;
    while (in >> key >> value) {
      if (key == "oom_kill") return value;
    }
  }
  return 0;
}

Status CgroupLimiter::Join(const std::vector<std::string>& dirs) {
  const std::string pid = std::to_string(getpid());
  for (const std::string& dir : dirs) {
    if (!WriteFile(dir + "/cgroup.procs", pid)) {
      return Status(StatusCode::kInternal, fmt::format("cannot join {}: {}", dir, std::strerror(errno)));
    }
  }
  return Status::Ok();
}

}  // namespace gp
