// Prometheus exposition for the agent and the server, through prometheus-cpp. Per-GPU series
// carry dcgm-exporter's names and labels (DCGM_FI_DEV_GPU_UTIL{gpu, UUID, device, modelName,
// Hostname}, ...), so Grafana dashboards made for dcgm-exporter work unchanged; node load and
// the scheduler's series are gpupool_*.
// Families are built from a snapshot of state at scrape time (no stale label sets to remove).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "telemetry/gpu_source.h"
#include "telemetry/host.h"

namespace gp {

using Families = std::vector<prometheus::MetricFamily>;

// A GPU as the series need it: inventory, last sample, last XID (0 = none).
struct GpuView {
  GpuDevice device;
  GpuSample sample;
  int last_xid = 0;
};

// DCGM_FI_DEV_GPU_UTIL (%), DCGM_FI_DEV_FB_USED / _FB_FREE (MiB), DCGM_FI_DEV_POWER_USAGE (W),
// DCGM_FI_DEV_GPU_TEMP (C), DCGM_FI_DEV_XID_ERRORS (the last XID) for each GPU of `host`.
// Appends to `out`, merging with families already there (several hosts, one family each).
void AddGpuFamilies(Families& out, const std::string& host, const std::vector<GpuView>& gpus);

// gpupool_node_cpu_busy_ratio, _memory_used_ratio, _gpu_busy_ratio, and the seed's load terms
// gpupool_node_load_r (R = CPU + GPU + memory fractions) and gpupool_node_load_l (L = R / U).
void AddNodeFamilies(Families& out, const std::string& node, double cpu, double gpu, double memory, double r, double l);

// One family's helpers, for the callers' own series. The reference is valid until the next
// family is added to `out`.
prometheus::MetricFamily& FamilyIn(Families& out, const std::string& name, const std::string& help,
                                   prometheus::MetricType type);
void AddValue(prometheus::MetricFamily& f, std::vector<std::pair<std::string, std::string>> labels, double value);

// Prometheus text format 0.0.4.
std::string SerializeText(const Families& families);

// Families set by one thread, collected by another (prometheus-cpp's Exposer threads).
class SnapshotCollectable final : public prometheus::Collectable {
 public:
  void Set(Families families);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  mutable std::mutex mu_;
  Families families_;
};

}  // namespace gp
