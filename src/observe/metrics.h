// Prometheus exposition for the agent and the server, through prometheus-cpp. Per-GPU series
// carry dcgm-exporter's names and labels (DCGM_FI_DEV_GPU_UTIL{gpu, UUID, device, modelName,
// Hostname}, ...), so Grafana dashboards made for dcgm-exporter work unchanged; node load and
// the scheduler's series are gpupool_*.
// Families are built from a snapshot of state at scrape time (no stale label sets to remove).
#pragma once

#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "telemetry/gpu_source.h"
#include "telemetry/host.h"

namespace gp {

using Families = std::vector<prometheus::MetricFamily>;

// A GPU as the series need it: its identity (views of strings the caller keeps), last sample,
// last XID (0 = none).
struct GpuView {
  int index = 0;
  std::string_view uuid;
  std::string_view model;  // dcgm-exporter's modelName
  MiB memory{0};           // the device's, when the sample has no total
  GpuSample sample;
  int last_xid = 0;
};

// A node's load as the series need it.
struct NodeLoadView {
  std::string_view node;
  double cpu = 0, gpu = 0, memory = 0;  // use fractions, 0..1
  double r = 0, l = 0;                  // the seed's load terms
};

// Prometheus text (format 0.0.4) written straight into a string, one family at a time: the
// server's per-node and per-GPU series are hundreds of thousands at fleet scale, and building
// prometheus-cpp's objects for them first took 1.6 s and 59 MB a scrape at 10,000 nodes.
class MetricText {
 public:
  explicit MetricText(std::string& out) : out_(out) {}
  void Family(std::string_view name, std::string_view help, prometheus::MetricType type);
  void Sample(std::string_view name, std::initializer_list<std::pair<std::string_view, std::string_view>> labels, double value);

 private:
  std::string& out_;
};

// The per-GPU and per-node series of many hosts as text, each family written once: `each` is
// called once per family and calls its argument for every GPU (node) of every host, in order.
using EachGpu = std::function<void(const std::function<void(std::string_view host, const GpuView&)>&)>;
using EachNode = std::function<void(const std::function<void(const NodeLoadView&)>&)>;
void WriteGpuFamilies(MetricText& out, const EachGpu& each);
void WriteNodeFamilies(MetricText& out, const EachNode& each);

// DCGM_FI_DEV_GPU_UTIL (%), DCGM_FI_DEV_FB_USED / _FB_FREE (MiB), DCGM_FI_DEV_POWER_USAGE (W),
// DCGM_FI_DEV_GPU_TEMP (C), DCGM_FI_DEV_XID_ERRORS (the last XID) for each GPU of `host`.
// Appends to `out`, merging with families already there (several hosts, one family each).
void AddGpuFamilies(Families& out, const std::string& host, const std::vector<GpuView>& gpus);

// gpupool_node_cpu_busy_ratio, _memory_used_ratio, _gpu_busy_ratio, and the seed's load terms
// gpupool_node_load_r (R = CPU + GPU + memory fractions) and gpupool_node_load_l (L = R / U).
void AddNodeFamilies(Families& out, const NodeLoadView& load);

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
