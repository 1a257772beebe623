// Node-list CSV (Alibaba openb_node_list_*.csv): sn,cpu_milli,memory_mib,gpu,model.
#include <fmt/format.h>

#include <map>

#include "adapters/fleet_loader.h"
#include "core/delimited.h"

namespace gp {

Result<Fleet> ParseFleetNodeCsv(std::string text, const std::string& source) {
  DelimitedFile file(source, std::move(text), ',');
  std::vector<std::string_view> f;
  if (!file.Next(f)) return tl::unexpected(file.ErrorAt(1, "empty file; expected a header"));
  const Header header(f);
  const size_t width = f.size();
  std::array<size_t, 5> col{};
  const std::array<std::string_view, 5> names{"sn", "cpu_milli", "memory_mib", "gpu", "model"};
  for (size_t i = 0; i < names.size(); ++i) {
    auto c = header.Require(file, names[i]);
    if (!c) return tl::unexpected(c.error());
    col[i] = *c;
  }
  Fleet fleet;
  fleet.providers.push_back(Provider{.id = ProviderId{0}, .name = "default"});
  fleet.sites.push_back(Site{.id = SiteId{0}, .name = "local", .region = "local"});
  while (file.Next(f)) {
    auto fail = [&](const std::string& m) { return tl::unexpected(file.ErrorAt(file.line(), m)); };
    if (f.size() != width) return fail(fmt::format("expected {} fields, got {}", width, f.size()));
    auto cpu = FieldInt("cpu_milli", f[col[1]]);
    auto mem = FieldInt("memory_mib", f[col[2]]);
    auto gpus = FieldInt("gpu", f[col[3]]);
    for (const auto* r : {&cpu, &mem, &gpus}) {
      if (!*r) return fail(r->error().message());
    }
    if (*cpu < 0 || *mem < 0) return fail("cpu_milli and memory_mib must not be negative");
    NodeGroupSpec g{.name_prefix = std::string(f[col[0]]), .count = 1, .gpus = static_cast<int>(*gpus),
                    .gpu_model = std::string(f[col[4]]), .cpu = MilliCpu{*cpu}, .memory = MiB{*mem},
                    .site = SiteId{0}, .provider = ProviderId{0}, .nvlink = NodeGroupSpec::NvLink::kNone};
    if (*gpus > 0 && g.gpu_model.empty()) return fail("model: a node with GPUs needs a model");
    if (Status s = AddNodeGroup(fleet, g, /*exact_name_for_single=*/true); !s.ok()) return fail(s.message());
  }
  return fleet;
}

}  // namespace gp
