#include "adapters/procfs.h"

#include <fmt/format.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace gp {
namespace {

Result<std::string> Slurp(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error(StatusCode::kNotFound, fmt::format("{}: cannot open", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return std::move(ss).str();
}

}  // namespace

Result<HostSample> ProcfsHost::Sample() {
  HostSample h;
  h.cpu_cores = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  auto stat = Slurp(root_ + "/stat");
  if (!stat) return tl::unexpected(stat.error());
  auto cpu = ParseProcStat(*stat);
  if (!cpu) return tl::unexpected(cpu.error());
  if (last_cpu_) h.cpu_busy = CpuBusyBetween(*last_cpu_, *cpu);
  last_cpu_ = *cpu;
  auto meminfo = Slurp(root_ + "/meminfo");
  if (!meminfo) return tl::unexpected(meminfo.error());
  auto mem = ParseMeminfo(*meminfo);
  if (!mem) return tl::unexpected(mem.error());
  h.memory = *mem;
  auto netdev = Slurp(root_ + "/net/dev");
  if (!netdev) return tl::unexpected(netdev.error());
  auto net = ParseNetDev(*netdev);
  if (!net) return tl::unexpected(net.error());
  h.net = *net;
  return h;
}

}  // namespace gp
