#include "observe/metrics.h"

#include <prometheus/text_serializer.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <optional>

#include <fmt/format.h>

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

namespace {

// One table of the per-GPU series, for both ways of writing them. A series without a value
// for a GPU (no power reading) is left out for it.
struct GpuSeries {
  const char* name;
  const char* help;
  std::optional<double> (*value)(const GpuView&);
};
constexpr GpuSeries kGpuSeries[] = {
    {"DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).",
     [](const GpuView& g) -> std::optional<double> { return static_cast<double>(g.sample.utilisation.value()) / 10.0; }},
    {"DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).",
     [](const GpuView& g) -> std::optional<double> { return static_cast<double>(g.sample.memory_used.value()); }},
    {"DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).",
     [](const GpuView& g) -> std::optional<double> {
       const int64_t total = g.sample.memory_total.value() > 0 ? g.sample.memory_total.value() : g.memory.value();
       return static_cast<double>(std::max<int64_t>(0, total - g.sample.memory_used.value()));
     }},
    {"DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).",
     [](const GpuView& g) -> std::optional<double> {
       if (!g.sample.power_mw) return std::nullopt;
       return static_cast<double>(*g.sample.power_mw) / 1000.0;
     }},
    {"DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).",
     [](const GpuView& g) -> std::optional<double> {
       if (!g.sample.temperature_c) return std::nullopt;
       return static_cast<double>(*g.sample.temperature_c);
     }},
    {"DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.",
     [](const GpuView& g) -> std::optional<double> { return static_cast<double>(g.last_xid); }},
};

struct NodeSeries {
  const char* name;
  const char* help;
  double NodeLoadView::*value;
};
constexpr NodeSeries kNodeSeries[] = {
    {"gpupool_node_cpu_busy_ratio", "Share of the node's CPU time busy (0..1).", &NodeLoadView::cpu},
    {"gpupool_node_gpu_busy_ratio", "Mean utilisation of the node's GPUs (0..1).", &NodeLoadView::gpu},
    {"gpupool_node_memory_used_ratio", "Share of the node's memory in use (0..1).", &NodeLoadView::memory},
    {"gpupool_node_load_r", "The seed's R: CPU + GPU + memory use fractions (0..3).", &NodeLoadView::r},
    {"gpupool_node_load_l", "The seed's L = R / U (U: available capacity).", &NodeLoadView::l},
};

// dcgm-exporter's labels of a GPU's series; `index` and `device` are written into the buffers.
template <typename F>
void WithGpuLabels(const GpuView& g, std::string_view host, F&& fn) {
  char index[16];
  char device[24];
  const auto i = fmt::format_to_n(index, sizeof(index), "{}", g.index);
  const auto d = fmt::format_to_n(device, sizeof(device), "nvidia{}", g.index);
  fn({{"gpu", std::string_view(index, i.size)},
      {"UUID", g.uuid},
      {"device", std::string_view(device, d.size)},
      {"modelName", g.model},
      {"Hostname", host}});
}

const char* TypeName(prometheus::MetricType t) {
  switch (t) {
    case prometheus::MetricType::Counter: return "counter";
    case prometheus::MetricType::Gauge: return "gauge";
    case prometheus::MetricType::Histogram: return "histogram";
    case prometheus::MetricType::Summary: return "summary";
    default: return "untyped";
  }
}

}  // namespace

void MetricText::Family(std::string_view name, std::string_view help, prometheus::MetricType type) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  for (char c : help) {
    if (c == '\\') out_ += "\\\\";
    else if (c == '\n') out_ += "\\n";
    else out_ += c;
  }
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += TypeName(type);
  out_ += '\n';
}

void MetricText::Sample(std::string_view name, std::initializer_list<std::pair<std::string_view, std::string_view>> labels,
                        double value) {
  out_ += name;
  if (labels.size() > 0) {
    out_ += '{';
    bool first = true;
    for (const auto& [k, v] : labels) {
      if (!first) out_ += ',';
      first = false;
      out_ += k;
      out_ += "=\"";
      if (v.find_first_of("\\\"\n") == std::string_view::npos) {
        out_ += v;  // the usual case: nothing to escape
      } else {
        for (char c : v) {
          if (c == '\\') out_ += "\\\\";
          else if (c == '"') out_ += "\\\"";
          else if (c == '\n') out_ += "\\n";
          else out_ += c;
        }
      }
      out_ += '"';
    }
    out_ += '}';
  }
  out_ += ' ';
  if (std::isnan(value)) out_ += "NaN";
  else if (std::isinf(value)) out_ += value > 0 ? "+Inf" : "-Inf";
  else fmt::format_to(std::back_inserter(out_), "{}", value);
  out_ += '\n';
}

void WriteGpuFamilies(MetricText& out, const EachGpu& each) {
  for (const GpuSeries& series : kGpuSeries) {
    bool header = false;
    each([&](std::string_view host, const GpuView& g) {
      const std::optional<double> v = series.value(g);
      if (!v) return;
      if (!header) out.Family(series.name, series.help, prometheus::MetricType::Gauge);
      header = true;
      WithGpuLabels(g, host, [&](std::initializer_list<std::pair<std::string_view, std::string_view>> labels) {
        out.Sample(series.name, labels, *v);
      });
    });
  }
}

void WriteNodeFamilies(MetricText& out, const EachNode& each) {
  for (const NodeSeries& series : kNodeSeries) {
    bool header = false;
    each([&](const NodeLoadView& n) {
      if (!header) out.Family(series.name, series.help, prometheus::MetricType::Gauge);
      header = true;
      out.Sample(series.name, {{"node", n.node}}, n.*series.value);
    });
  }
}

void AddGpuFamilies(Families& out, const std::string& host, const std::vector<GpuView>& gpus) {
  for (const GpuSeries& series : kGpuSeries) {
    auto& f = FamilyIn(out, series.name, series.help, prometheus::MetricType::Gauge);
    for (const GpuView& g : gpus) {
      const std::optional<double> v = series.value(g);
      if (!v) continue;
      WithGpuLabels(g, host, [&](std::initializer_list<std::pair<std::string_view, std::string_view>> labels) {
        std::vector<std::pair<std::string, std::string>> owned;
        for (const auto& [k, val] : labels) owned.emplace_back(k, val);
        AddValue(f, std::move(owned), *v);
      });
    }
  }
}

void AddNodeFamilies(Families& out, const NodeLoadView& load) {
  for (const NodeSeries& series : kNodeSeries) {
    AddValue(FamilyIn(out, series.name, series.help, prometheus::MetricType::Gauge), {{"node", std::string(load.node)}},
             load.*series.value);
  }
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
