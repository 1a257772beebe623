#include "core/gpu_catalog.h"

#include "core/units.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <string>
#include <vector>

namespace gp {
namespace {

struct Entry {
  std::string_view alias;
  GpuModelInfo info;
};

GpuModelInfo M(const char* name, int64_t gib, int cc, double usd) {
  return GpuModelInfo{name, MiB{gib * 1024}, cc, UsdToMicro(usd)};
}

// List prices are a rough public on-demand ballpark per GPU-hour (2025); fleets should give
// their own. Memory in GiB as sold.
const std::vector<Entry>& Catalog() {
  static const std::vector<Entry> kCatalog = {
      {"h200", M("H200", 141, 90, 4.00)},     {"h100", M("H100", 80, 90, 3.00)},
      {"h100-80gb", M("H100", 80, 90, 3.00)}, {"gh200", M("GH200", 96, 90, 3.50)},
      {"a100", M("A100", 80, 80, 1.80)},      {"a100-80gb", M("A100", 80, 80, 1.80)},
      {"a100-40gb", M("A100-40GB", 40, 80, 1.30)},
      {"l40s", M("L40S", 48, 89, 1.20)},      {"l4", M("L4", 24, 89, 0.70)},
      {"a10", M("A10", 24, 86, 0.75)},        {"a10g", M("A10G", 24, 86, 1.00)},
      {"t4", M("T4", 16, 75, 0.35)},          {"v100", M("V100", 32, 70, 0.90)},
      {"v100m32", M("V100M32", 32, 70, 0.90)}, {"v100m16", M("V100M16", 16, 70, 0.80)},
      {"p100", M("P100", 16, 60, 0.60)},      {"k80", M("K80", 12, 37, 0.30)},
      {"rtx6000", M("RTX6000", 24, 75, 0.60)}, {"2080ti", M("2080Ti", 11, 75, 0.40)},
      {"mi300x", M("MI300X", 192, 0, 3.50)},
  };
  return kCatalog;
}

}  // namespace

const GpuModelInfo* FindKnownGpuModel(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const Entry& e : Catalog()) {
    if (e.alias == lower) return &e.info;
  }
  return nullptr;
}

}  // namespace gp
