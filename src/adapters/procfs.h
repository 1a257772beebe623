// Host telemetry from Linux's /proc: CPU busy share (between two readings), memory, and
// network bytes. One instance per sampler; not thread-safe. `root` lets tests point it at a
// fixture tree.
#pragma once

#include <optional>
#include <string>

#include "telemetry/host.h"

namespace gp {

class ProcfsHost {
 public:
  explicit ProcfsHost(std::string root = "/proc") : root_(std::move(root)) {}
  // The first call reports CPU busy 0 (no interval yet).
  Result<HostSample> Sample();

 private:
  std::string root_;
  std::optional<CpuTimes> last_cpu_;
};

}  // namespace gp
