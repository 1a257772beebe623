// What a node knows about itself apart from GPUs: CPU, memory and network, as inventory and as
// load. Parsers for Linux's /proc text are pure functions (tested on fixture text); reading the
// files is the adapter's job (adapters/procfs.h).
#pragma once

#include <cstdint>
#include <string_view>

#include "core/quantity.h"
#include "core/status.h"

namespace gp {

// Cumulative CPU jiffies from the first "cpu" line of /proc/stat.
struct CpuTimes {
  uint64_t busy = 0;
  uint64_t total = 0;
};
Result<CpuTimes> ParseProcStat(std::string_view text);
// Busy share between two readings, in per-mille (0 when no time passed).
PerMille CpuBusyBetween(const CpuTimes& before, const CpuTimes& after);

struct MemoryInfo {
  MiB total{0};
  MiB available{0};
};
Result<MemoryInfo> ParseMeminfo(std::string_view text);

// Bytes received and sent, summed over interfaces other than loopback.
struct NetCounters {
  Bytes rx{0};
  Bytes tx{0};
};
Result<NetCounters> ParseNetDev(std::string_view text);

struct HostSample {
  int cpu_cores = 0;
  PerMille cpu_busy{0};
  MemoryInfo memory;
  NetCounters net;
};

}  // namespace gp
