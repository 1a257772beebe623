// What a node knows about its GPUs: the devices (inventory, read once) and samples (load,
// read every heartbeat). Implementations: NVML (adapters/nvml.h, the real driver, loaded at run
// time) and SimulatedGpuSource below (no GPU: utilisation follows what the node runs). Callers
// treat both alike. An implementation is used from one thread at a time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/quantity.h"
#include "core/status.h"

namespace gp {

struct GpuDevice {
  int index = 0;
  std::string uuid;
  std::string name;            // as the driver says, e.g. "NVIDIA H200"
  MiB memory{0};
  int compute_capability = 0;  // major*10 + minor
  uint16_t nvlink_peers = 0;   // bit i: an active NVLink to GPU index i
};

struct GpuSample {
  int index = 0;
  PerMille utilisation{0};          // share of time a kernel ran
  PerMille memory_utilisation{0};   // share of time memory was read or written
  MiB memory_used{0};
  MiB memory_total{0};
  std::optional<int> temperature_c;
  std::optional<int64_t> power_mw;
  std::optional<int64_t> ecc_uncorrected;  // volatile count since driver load
  std::vector<int> xids;                   // XID events since the last sample
};

// A GPU's latest sample as a server keeps it, for every GPU of every node: 32 bytes instead of
// GpuSample's 104 (at 10,000 nodes of 8 GPUs, 2.4 MB instead of 8.3). What it leaves out, the
// XIDs since the last sample, the server acts on as they arrive and keeps the last of with the
// node's GPU facts. Values past a field's range are clamped (a GPU drawing over 4 kW, a
// temperature past 32,000 C).
class KeptGpuSample {
 public:
  KeptGpuSample() = default;
  explicit KeptGpuSample(const GpuSample& s);
  GpuSample sample() const;  // as it came, without XIDs
  int index() const { return index_; }
  PerMille utilisation() const { return PerMille{utilisation_}; }

 private:
  int64_t ecc_uncorrected_ = -1;  // -1: not reported
  uint32_t memory_used_mib_ = 0;
  uint32_t memory_total_mib_ = 0;
  uint32_t power_mw_ = kNoPower;
  uint16_t utilisation_ = 0;
  uint16_t memory_utilisation_ = 0;
  int16_t temperature_c_ = kNoTemperature;
  uint8_t index_ = 0;
  static constexpr uint32_t kNoPower = UINT32_MAX;
  static constexpr int16_t kNoTemperature = INT16_MIN;
};

class GpuSource {
 public:
  virtual ~GpuSource() = default;
  virtual std::string_view kind() const = 0;  // "nvml" or "simulated"
  virtual Result<std::vector<GpuDevice>> Devices() = 0;
  virtual Result<std::vector<GpuSample>> Sample() = 0;
  // Whether XID events are watched (NVML with event support); for `probe` and the docs.
  virtual std::string_view xid_events() const { return "not watched"; }
};

// "8xH100" -> eight simulated H100s (memory and compute capability from the catalog). Their
// utilisation is what SetBusy says: a node agent sets it from the jobs it runs.
class SimulatedGpuSource final : public GpuSource {
 public:
  static Result<SimulatedGpuSource> Parse(std::string_view spec, std::string_view host = "sim");
  std::string_view kind() const override { return "simulated"; }
  Result<std::vector<GpuDevice>> Devices() override { return devices_; }
  Result<std::vector<GpuSample>> Sample() override;
  // GPU `index` runs work using `share` of it (1000 = all) and `memory` of its memory.
  Status SetBusy(int index, PerMille share, MiB memory);

 private:
  std::vector<GpuDevice> devices_;
  std::vector<GpuSample> load_;
};

// A GPU model name from a driver's device name: "NVIDIA H200" -> "H200",
// "NVIDIA A100-SXM4-80GB" -> "A100", "Tesla V100-SXM2-32GB" -> "V100".
std::string ModelFromDeviceName(std::string_view name);

}  // namespace gp
