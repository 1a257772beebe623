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

bool WriteFile(const std::string& path, const std::string& value) {
  std::ofstream out(path);
  out << value;
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace

std::string CpuMaxValue(MilliCpu cpu, int64_t period_us) {
  if (cpu.value() <= 0) return fmt::format("max {}", period_us);
  return fmt::format("{} {}", cpu.value() * period_us / 1000, period_us);
}

CgroupLimiter CgroupLimiter::Detect(const std::string& root) {
  CgroupLimiter c;
  struct statfs fs {};
  if (statfs(root.c_str(), &fs) != 0) {
    c.why_not_ = fmt::format("{}: {}", root, std::strerror(errno));
    return c;
  }
  if (static_cast<long>(fs.f_type) != kCgroup2Magic) {
    c.why_not_ = fmt::format("{} is not a cgroup v2 mount (cgroup v1 or none)", root);
    return c;
  }
  std::ifstream in(root + "/cgroup.controllers");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string controllers = ss.str();
  if (controllers.find("cpu") == std::string::npos || controllers.find("memory") == std::string::npos) {
    c.why_not_ = fmt::format("{}: the cpu and memory controllers are not available", root);
    return c;
  }
  c.base_ = root + "/gpupool";
  if (mkdir(c.base_.c_str(), 0755) != 0 && errno != EEXIST) {
    c.why_not_ = fmt::format("cannot create {}: {}", c.base_, std::strerror(errno));
    return c;
  }
  if (!WriteFile(root + "/cgroup.subtree_control", "+cpu +memory") ||
      !WriteFile(c.base_ + "/cgroup.subtree_control", "+cpu +memory")) {
    c.why_not_ = fmt::format("cannot enable cpu and memory controllers under {}", root);
    return c;
  }
  c.available_ = true;
  return c;
}

Status CgroupLimiter::Place(pid_t pid, const std::string& name, MilliCpu cpu, MiB memory) const {
  if (!available_) return Status(StatusCode::kFailedPrecondition, why_not_);
  const std::string dir = base_ + "/" + name;
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status(StatusCode::kInternal, fmt::format("cannot create {}: {}", dir, std::strerror(errno)));
  }
  if (cpu.value() > 0 && !WriteFile(dir + "/cpu.max", CpuMaxValue(cpu))) {
    return Status(StatusCode::kInternal, fmt::format("cannot set {}/cpu.max", dir));
  }
  if (memory.value() > 0 && !WriteFile(dir + "/memory.max", std::to_string(memory.value() * 1024 * 1024))) {
    return Status(StatusCode::kInternal, fmt::format("cannot set {}/memory.max", dir));
  }
  if (!WriteFile(dir + "/cgroup.procs", std::to_string(pid))) {
    return Status(StatusCode::kInternal, fmt::format("cannot move {} into {}", pid, dir));
  }
  return Status::Ok();
}

void CgroupLimiter::Remove(const std::string& name) const {
  if (available_) rmdir((base_ + "/" + name).c_str());
}

}  // namespace gp
