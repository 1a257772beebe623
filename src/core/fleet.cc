#include "core/fleet.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <set>

#include "core/gpu_catalog.h"

namespace gp {
namespace {

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

template <typename T, typename Id>
std::optional<Id> FindByName(const std::vector<T>& items, std::string_view name) {
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].name == name) return Id{static_cast<typename Id::rep_type>(i)};
  }
  return std::nullopt;
}

}  // namespace

std::string_view ProviderKindName(ProviderKind k) {
  switch (k) {
    case ProviderKind::kOnPrem: return "on-prem";
    case ProviderKind::kCloud: return "cloud";
    case ProviderKind::kPartner: return "partner";
  }
  return "?";
}

Result<ProviderKind> ParseProviderKind(std::string_view s) {
  for (auto k : {ProviderKind::kOnPrem, ProviderKind::kCloud, ProviderKind::kPartner}) {
    if (IEquals(s, ProviderKindName(k))) return k;
  }
  return InvalidArgument(
      fmt::format("unknown provider kind '{}'; expected on-prem, cloud or partner", s));
}

std::string_view PriceTierName(PriceTier t) {
  switch (t) {
    case PriceTier::kOnDemand: return "on-demand";
    case PriceTier::kSpot: return "spot";
    case PriceTier::kReserved: return "reserved";
  }
  return "?";
}

Result<PriceTier> ParsePriceTier(std::string_view s) {
  for (auto t : {PriceTier::kOnDemand, PriceTier::kSpot, PriceTier::kReserved}) {
    if (IEquals(s, PriceTierName(t))) return t;
  }
  return InvalidArgument(
      fmt::format("unknown price tier '{}'; expected on-demand, spot or reserved", s));
}

Result<GpuModelId> Fleet::InternModel(std::string_view name) {
  if (name.empty()) return InvalidArgument("GPU model name is empty");
  const GpuModelInfo* known = FindKnownGpuModel(name);
  const std::string canonical = known ? known->name : std::string(name);
  if (auto id = FindModel(canonical)) return *id;
  if (static_cast<int>(models.size()) >= kMaxGpuModels) {
    return InvalidArgument(fmt::format("more than {} GPU models in one fleet", kMaxGpuModels));
  }
  models.push_back(known ? *known : GpuModelInfo{.name = canonical});
  return GpuModelId{static_cast<uint8_t>(models.size() - 1)};
}

std::optional<GpuModelId> Fleet::FindModel(std::string_view name) const {
  for (size_t i = 0; i < models.size(); ++i) {
    if (IEquals(models[i].name, name)) return GpuModelId{static_cast<uint8_t>(i)};
  }
  if (const GpuModelInfo* known = FindKnownGpuModel(name); known && known->name != name) {
    return FindModel(known->name);
  }
  return std::nullopt;
}

std::optional<SiteId> Fleet::FindSite(std::string_view name) const {
  return FindByName<Site, SiteId>(sites, name);
}
std::optional<ProviderId> Fleet::FindProvider(std::string_view name) const {
  return FindByName<Provider, ProviderId>(providers, name);
}
std::optional<NodeId> Fleet::FindNode(std::string_view name) const {
  return FindByName<Node, NodeId>(nodes, name);
}

Node Fleet::NodeOfOffer(size_t offer, std::string name) const {
  const Offer& o = offers[offer];
  Node n{.id = NodeId{static_cast<uint32_t>(nodes.size())}, .name = std::move(name), .site = o.site, .provider = o.provider,
         .tier = o.tier, .cpu = o.cpu, .memory = o.memory, .nic = BitsPerSecond{10'000'000'000}};
  for (int g = 0; g < o.gpus; ++g) n.gpus.push_back(Gpu{.index = g, .model = o.model, .memory = o.gpu_memory});
  return n;
}

MicroUsd Fleet::PricePerGpuHour(const Node& n) const {
  auto model = n.gpu_model();
  if (!model) return MicroUsd{0};
  const Provider& p = provider(n.provider);
  std::optional<MicroUsd> on_demand;
  for (const Price& price : p.prices) {
    if (price.model != *model) continue;
    if (price.tier == n.tier) return price.per_gpu_hour;
    if (price.tier == PriceTier::kOnDemand) on_demand = price.per_gpu_hour;
  }
  return on_demand.value_or(this->model(*model).list_price);
}

NetworkPath Fleet::PathBetween(SiteId from, SiteId to) const {
  if (from == to) return NetworkPath{.same_site = true};
  for (const Link& l : links) {
    if ((l.a == from && l.b == to) || (l.a == to && l.b == from)) {
      const Micros latency = l.latency.value_or(
          FibreLatency(DistanceKm(site(from).location, site(to).location)));
      return NetworkPath{.bandwidth = l.bandwidth, .latency = latency,
                         .egress_per_gb = l.egress_per_gb};
    }
  }
  return NetworkPath{.bandwidth = kDefaultWanBandwidth,
                     .latency = FibreLatency(DistanceKm(site(from).location, site(to).location))};
}

int Fleet::TotalGpus() const {
  int total = 0;
  for (const Node& n : nodes) total += static_cast<int>(n.gpus.size());
  return total;
}

Status Fleet::Validate() const {
  auto bad = [](std::string msg) { return Status(StatusCode::kInvalidArgument, std::move(msg)); };
  std::set<std::string_view> names;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    if (n.id.value() != i) return bad(fmt::format("node '{}': id {} is not its position {}", n.name, n.id.value(), i));
    if (!names.insert(n.name).second) return bad(fmt::format("node name '{}' is used twice", n.name));
    if (n.site.value() >= sites.size()) return bad(fmt::format("node '{}': unknown site", n.name));
    if (n.provider.value() >= providers.size()) return bad(fmt::format("node '{}': unknown provider", n.name));
    if (n.gpus.size() > kMaxGpusPerNode) {
      return bad(fmt::format("node '{}': {} GPUs; at most {} per node", n.name, n.gpus.size(), kMaxGpusPerNode));
    }
    if (n.cpu.value() < 0 || n.memory.value() < 0) return bad(fmt::format("node '{}': negative CPU or memory", n.name));
    for (size_t g = 0; g < n.gpus.size(); ++g) {
      const Gpu& gpu = n.gpus[g];
      if (gpu.index != static_cast<int>(g)) {
        return bad(fmt::format("node '{}': GPU at position {} has index {}", n.name, g, gpu.index));
      }
      if (gpu.model != n.gpus.front().model) {
        return bad(fmt::format("node '{}' mixes GPU models {} and {}; a node holds one model",
                               n.name, model(n.gpus.front().model).name, model(gpu.model).name));
      }
      if (gpu.model.value() >= models.size()) return bad(fmt::format("node '{}': unknown GPU model", n.name));
    }
  }
  for (const Link& l : links) {
    if (l.a.value() >= sites.size() || l.b.value() >= sites.size()) return bad("a link names an unknown site");
    if (l.bandwidth.value() <= 0) {
      return bad(fmt::format("link {} - {}: bandwidth must be positive", site(l.a).name, site(l.b).name));
    }
  }
  for (const Provider& p : providers) {
    for (const Price& price : p.prices) {
      if (price.per_gpu_hour.value() < 0) return bad(fmt::format("provider '{}': negative price", p.name));
    }
    if (p.max_gpus < 0) return bad(fmt::format("provider '{}': max_gpus must not be negative", p.name));
  }
  std::set<std::string_view> offer_names;
  for (const Offer& o : offers) {
    if (o.name.empty() || !offer_names.insert(o.name).second) return bad(fmt::format("offer name '{}' is empty or used twice", o.name));
    if (o.provider.value() >= providers.size() || o.site.value() >= sites.size() || o.model.value() >= models.size()) {
      return bad(fmt::format("offer '{}': unknown provider, site or GPU model", o.name));
    }
    if (o.gpus < 1 || o.gpus > kMaxGpusPerNode) return bad(fmt::format("offer '{}': gpus must be 1..{}", o.name, kMaxGpusPerNode));
    if (o.min_nodes < 0 || o.max_nodes < o.min_nodes) return bad(fmt::format("offer '{}': need 0 <= min_nodes <= max_nodes", o.name));
    if (o.price_per_hour.value() < 0 || o.cpu.value() < 0 || o.memory.value() < 0 || o.gpu_memory.value() < 0) {
      return bad(fmt::format("offer '{}': negative price, CPU or memory", o.name));
    }
    if (o.billing_increment.value() <= 0 || o.min_billed.value() < 0 || o.boot_time.value() < 0) {
      return bad(fmt::format("offer '{}': billing_increment must be positive, min_billed and boot_time not negative", o.name));
    }
  }
  if (autoscale.max_per_hour.value() < 0) return bad("autoscale: max_usd_per_hour must not be negative");
  return Status::Ok();
}

Status AddNodeGroup(Fleet& fleet, const NodeGroupSpec& g, bool exact_name_for_single) {
  if (g.count < 1) return Status(StatusCode::kInvalidArgument, fmt::format("count must be at least 1, got {}", g.count));
  if (g.count > kMaxFleetNodes - static_cast<int64_t>(fleet.nodes.size())) {
    return Status(StatusCode::kInvalidArgument, fmt::format("a fleet holds at most {} nodes; {} more would make {}", kMaxFleetNodes,
                                                            g.count, fleet.nodes.size() + static_cast<size_t>(g.count)));
  }
  if (g.gpus < 0 || g.gpus > kMaxGpusPerNode) {
    return Status(StatusCode::kInvalidArgument,
                  fmt::format("gpus must be 0..{}, got {}", kMaxGpusPerNode, g.gpus));
  }
  std::optional<GpuModelId> model;
  if (g.gpus > 0) {
    auto m = fleet.InternModel(g.gpu_model);
    if (!m) return Status(StatusCode::kInvalidArgument, "gpu_model: " + m.error().message());
    model = *m;
  }
  const GpuModelInfo* info = model ? &fleet.model(*model) : nullptr;
  const MiB gpu_mem = g.gpu_memory.value_or(info ? info->memory : MiB{0});
  const int per_node_cores = std::max(16, 8 * g.gpus);
  const MilliCpu cpu = g.cpu.value_or(MilliCpu{per_node_cores * 1000LL});
  const MiB mem = g.memory.value_or(MiB{std::max(64, 64 * g.gpus) * 1024LL});
  const int width = static_cast<int>(fmt::format("{}", g.count).size());
  for (int k = 1; k <= g.count; ++k) {
    Node n;
    n.id = NodeId{static_cast<uint32_t>(fleet.nodes.size())};
    n.name = (g.count == 1 && exact_name_for_single) ? g.name_prefix
                                                      : fmt::format("{}-{:0{}}", g.name_prefix, k, width);
    n.site = g.site;
    n.provider = g.provider;
    n.tier = g.tier;
    n.cpu = cpu;
    n.memory = mem;
    n.nic = g.nic;
    n.labels = g.labels;
    n.measured = g.measured;
    for (int i = 0; i < g.gpus; ++i) {
      Gpu gpu{.index = i, .model = *model, .memory = gpu_mem,
              .compute_capability = info ? info->compute_capability : 0,
              .uuid = fmt::format("GPU-sim-{:04x}-{:02x}", n.id.value(), i)};
      if (g.nvlink == NodeGroupSpec::NvLink::kAll) {
        gpu.nvlink_peers = static_cast<uint16_t>(((1u << g.gpus) - 1) & ~(1u << i));
      } else if (g.nvlink == NodeGroupSpec::NvLink::kPairs) {
        gpu.nvlink_peers = static_cast<uint16_t>(1u << (i ^ 1));
        if ((i ^ 1) >= g.gpus) gpu.nvlink_peers = 0;
      }
      n.gpus.push_back(std::move(gpu));
    }
    fleet.nodes.push_back(std::move(n));
  }
  return Status::Ok();
}

bool LooksLikeFleetShorthand(std::string_view text) {
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text.front()))) return false;
  return text.find('x') != std::string_view::npos && text.find('/') == std::string_view::npos &&
         text.find('.') == std::string_view::npos;
}

Result<Fleet> ParseFleetShorthand(std::string_view text) {
  auto expect = [&](std::string_view why) {
    return InvalidArgument(fmt::format(
        "fleet shorthand '{}': {}; expected NODESxGPUSxMODEL such as 256x8xV100 (or NODESx0 for "
        "CPU-only nodes)", text, why));
  };
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (int i = 0; i < 2; ++i) {
    size_t x = text.find('x', start);
    if (x == std::string_view::npos) break;
    parts.push_back(text.substr(start, x - start));
    start = x + 1;
  }
  parts.push_back(text.substr(start));
  if (parts.size() < 2) return expect("missing 'x'");
  auto number = [](std::string_view s, int& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
  };
  int nodes = 0;
  int gpus = 0;
  if (!number(parts[0], nodes) || nodes < 1 || nodes > kMaxFleetNodes) return expect(fmt::format("node count must be 1..{}", kMaxFleetNodes));
  if (!number(parts[1], gpus) || gpus < 0 || gpus > kMaxGpusPerNode) {
    return expect(fmt::format("GPUs per node must be 0..{}", kMaxGpusPerNode));
  }
  if (gpus > 0 && (parts.size() < 3 || parts[2].empty())) return expect("missing GPU model");
  Fleet fleet;
  fleet.providers.push_back(Provider{.id = ProviderId{0}, .name = "default"});
  fleet.sites.push_back(Site{.id = SiteId{0}, .name = "local", .region = "local"});
  NodeGroupSpec g{.name_prefix = "node", .count = nodes, .gpus = gpus,
                  .gpu_model = gpus > 0 ? std::string(parts[2]) : std::string()};
  if (Status s = AddNodeGroup(fleet, g); !s.ok()) return expect(s.message());
  return fleet;
}

const PriorityClass* Fleet::FindPriorityClass(std::string_view name) const {
  for (const PriorityClass& c : priority_classes) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

Result<const PriorityClass*> Fleet::PriorityClassNamed(std::string_view name) const {
  if (const PriorityClass* c = FindPriorityClass(name)) return c;
  std::string known;
  for (const PriorityClass& c : priority_classes) known += (known.empty() ? "" : ", ") + c.name;
  return Error(StatusCode::kInvalidArgument, fmt::format("unknown priority class '{}'; known: {}", name.substr(0, 64),
                                                         known.empty() ? "none" : known));
}

}  // namespace gp
