#include "observe/metrics.h"

#include <prometheus/text_serializer.h>

#include <algorithm>

namespace gp {

prometheus::MetricFamily& FamilyIn(Families& out, const std::string& name, const std::string& help,
                                   prometheus::MetricType type) {
  for (auto& f : out) {
    if (f.name == name) return f;
  }
  out.push_back(prometheus::MetricFamily{name, help, type, {}});
  return out.back();
}

void AddValue(prometheus::MetricFamily& f, std::vector<std::pair<std::string, std::string>> labels, double value) {
  prometheus::ClientMetric m;
  for (auto& [k, v] : labels) m.label.push_back({std::move(k), std::move(v)});
  switch (f.type) {
    case prometheus::MetricType::Counter: m.counter.value = value; break;
    case prometheus::MetricType::Gauge: m.gauge.value = value; break;
    default: m.untyped.value = value; break;
  }
  f.metric.push_back(std::move(m));
}

void AddGpuFamilies(Families& out, const std::string& host, const std::vector<GpuView>& gpus) {
  using prometheus::MetricType;
  // Every family is created before any reference is taken: a later push_back would move them.
  const std::pair<const char*, const char*> names[] = {
      {"DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)."},
      {"DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB)."},
      {"DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB)."},
      {"DCGM_FI_DEV_POWER_USAGE", "Power draw (in W)."},
      {"DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C)."},
      {"DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered."}};
  for (const auto& [name, help] : names) FamilyIn(out, name, help, MetricType::Gauge);
  auto& util = FamilyIn(out, names[0].first, names[0].second, MetricType::Gauge);
  auto& used = FamilyIn(out, names[1].first, names[1].second, MetricType::Gauge);
  auto& free = FamilyIn(out, names[2].first, names[2].second, MetricType::Gauge);
  auto& power = FamilyIn(out, names[3].first, names[3].second, MetricType::Gauge);
  auto& temp = FamilyIn(out, names[4].first, names[4].second, MetricType::Gauge);
  auto& xid = FamilyIn(out, names[5].first, names[5].second, MetricType::Gauge);
  for (const GpuView& g : gpus) {
    auto labels = [&] {
      return std::vector<std::pair<std::string, std::string>>{{"gpu", std::to_string(g.device.index)},
                                                              {"UUID", g.device.uuid},
                                                              {"device", "nvidia" + std::to_string(g.device.index)},
                                                              {"modelName", g.device.name},
                                                              {"Hostname", host}};
    };
    const GpuSample& s = g.sample;
    AddValue(util, labels(), static_cast<double>(s.utilisation.value()) / 10.0);
    const int64_t total = s.memory_total.value() > 0 ? s.memory_total.value() : g.device.memory.value();
    AddValue(used, labels(), static_cast<double>(s.memory_used.value()));
    AddValue(free, labels(), static_cast<double>(std::max<int64_t>(0, total - s.memory_used.value())));
    if (s.power_mw) AddValue(power, labels(), static_cast<double>(*s.power_mw) / 1000.0);
    if (s.temperature_c) AddValue(temp, labels(), *s.temperature_c);
    AddValue(xid, labels(), g.last_xid);
  }
}

void AddNodeFamilies(Families& out, const std::string& node, double cpu, double gpu, double memory, double r, double l) {
  using prometheus::MetricType;
  AddValue(FamilyIn(out, "gpupool_node_cpu_busy_ratio", "Share of the node's CPU time busy (0..1).", MetricType::Gauge),
           {{"node", node}}, cpu);
  AddValue(FamilyIn(out, "gpupool_node_gpu_busy_ratio", "Mean utilisation of the node's GPUs (0..1).", MetricType::Gauge),
           {{"node", node}}, gpu);
  AddValue(FamilyIn(out, "gpupool_node_memory_used_ratio", "Share of the node's memory in use (0..1).", MetricType::Gauge),
           {{"node", node}}, memory);
  AddValue(FamilyIn(out, "gpupool_node_load_r", "The seed's R: CPU + GPU + memory use fractions (0..3).", MetricType::Gauge),
           {{"node", node}}, r);
  AddValue(FamilyIn(out, "gpupool_node_load_l", "The seed's L = R / U (U: available capacity).", MetricType::Gauge),
           {{"node", node}}, l);
}

std::string SerializeText(const Families& families) {
  // Empty families are left out: the format allows them, but they only add noise.
  Families nonempty;
  for (const auto& f : families) {
    if (!f.metric.empty()) nonempty.push_back(f);
  }
  return prometheus::TextSerializer().Serialize(nonempty);
}

void SnapshotCollectable::Set(Families families) {
  std::lock_guard lock(mu_);
  families_ = std::move(families);
}

std::vector<prometheus::MetricFamily> SnapshotCollectable::Collect() const {
  std::lock_guard lock(mu_);
  Families out;
  for (const auto& f : families_) {
    if (!f.metric.empty()) out.push_back(f);
  }
  return out;
}

}  // namespace gp
