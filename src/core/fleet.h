// The fleet model: providers (with prices), sites (with locations), links between sites, and
// nodes with their GPUs. A Fleet is a plain value built once (from a fleet file, a shorthand such
// as "256x8xV100", or a trace's node list) and then read by many; ids are dense indices into its
// vectors (NodeId 5 is nodes[5]). Immutable after Validate(); safe to share read-only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/ids.h"
#include "core/models.h"
#include "core/quantity.h"
#include "core/status.h"
#include "core/tenant.h"

namespace gp {

inline constexpr int kMaxGpusPerNode = 16;
// The most nodes one fleet holds (ten times the fleet the pool is built for): a fleet file or
// shorthand past it is an error, not gigabytes of nodes.
inline constexpr int kMaxFleetNodes = 100'000;
// Model ids 0..62 name GPU models; bit 63 of a ModelMask stands for "a node with no GPU".
inline constexpr int kMaxGpuModels = 63;
inline constexpr int kNoGpuModelBit = 63;

enum class ProviderKind : uint8_t { kOnPrem, kCloud, kPartner };
enum class PriceTier : uint8_t { kOnDemand, kSpot, kReserved };
inline constexpr int kPriceTierCount = 3;

std::string_view ProviderKindName(ProviderKind k);
Result<ProviderKind> ParseProviderKind(std::string_view s);
std::string_view PriceTierName(PriceTier t);
Result<PriceTier> ParsePriceTier(std::string_view s);

struct GpuModelInfo {
  std::string name;              // canonical, e.g. "H100"
  MiB memory{0};                 // 0 when unknown
  int compute_capability = 0;    // major*10 + minor: 90 is 9.0; 0 when unknown
  MicroUsd list_price{0};        // default on-demand price per GPU-hour when a fleet gives none
};

struct Gpu {
  int index = 0;                 // as CUDA_VISIBLE_DEVICES numbers it on the node
  GpuModelId model;
  MiB memory{0};
  int compute_capability = 0;
  std::string uuid;              // "GPU-..." from NVML, or synthesised for simulated GPUs
  uint16_t nvlink_peers = 0;     // bit i set: NVLink to GPU index i on the same node
};

struct Node {
  NodeId id;
  std::string name;
  SiteId site;
  ProviderId provider;
  PriceTier tier = PriceTier::kOnDemand;
  std::vector<Gpu> gpus;         // all of one model (validated)
  MilliCpu cpu{0};
  MiB memory{0};
  BitsPerSecond nic{0};
  std::vector<std::pair<std::string, std::string>> labels;
  std::optional<Utilisation> measured;  // utilisation given in the fleet file, if any

  std::optional<GpuModelId> gpu_model() const {
    if (gpus.empty()) return std::nullopt;
    return gpus.front().model;
  }
};

struct Site {
  SiteId id;
  std::string name;
  std::string region;
  GeoPoint location;
};

struct Price {
  GpuModelId model;
  PriceTier tier = PriceTier::kOnDemand;
  MicroUsd per_gpu_hour{0};
};

// How the pool gets nodes from a provider (docs/providers.md): none (someone else starts its
// agents), `local` (agent processes on this machine, with seeded faults), or `exec` (an
// external program, called with a verb).
struct ProvisionerSpec {
  enum class Kind : uint8_t { kNone, kLocal, kExec } kind = Kind::kNone;
  std::vector<std::string> command;  // exec: the program and its own arguments
  Millis deadline{30'000};           // every call's
  // local: its "cloud"'s behaviour, seeded
  uint64_t seed = 1;
  Millis boot_delay_min{0};
  Millis boot_delay_max{0};
  std::vector<std::string> stockout;  // offer names that answer capacity errors
  int quota_gpus = 0;
  Millis spot_mtbf{0};
  Millis spot_lifetime{0};  // a spot instance lives exactly this long after booting (0: by spot_mtbf)
  Millis notice{30'000};
};

struct Provider {
  ProviderId id;
  std::string name;
  ProviderKind kind = ProviderKind::kOnPrem;
  std::vector<Price> prices;
  int max_gpus = 0;  // the provider's quota: GPUs held from it at once, over all its offers (0: none)
  ProvisionerSpec provisioner;
};

// What a provider can give when work waits: nodes of one shape, at one site, at one price
// (the fleet file's [[offer]]; docs/fleet.md). Billing: a node is billed from its creation
// for at least `min_billed`, then in whole `billing_increment`s (1 s for per-second clouds,
// 1 h for hourly ones, 720 h for monthly reserved hardware).
struct Offer {
  std::string name;               // unique, e.g. "cloud/cloud-west/H100x8/spot"
  ProviderId provider;
  SiteId site;
  GpuModelId model;
  int gpus = 0;                   // per node
  MiB gpu_memory{0};              // per GPU (the model's when not given)
  MilliCpu cpu{0};                // per node
  MiB memory{0};                  // per node
  PriceTier tier = PriceTier::kOnDemand;
  MicroUsd price_per_hour{0};     // per node
  int min_nodes = 0;              // kept even when idle
  int max_nodes = 0;              // held at once
  Millis boot_time{120'000};      // expected, from create to the agent's registration
  Millis billing_increment{1'000};
  Millis min_billed{60'000};
  bool available = true;          // known to have capacity (a provider may say otherwise)

  MicroUsd price_per_gpu_hour() const { return MicroUsd{gpus > 0 ? price_per_hour.value() / gpus : price_per_hour.value()}; }
};

// What the pool may spend acquiring capacity (the fleet file's [autoscale]).
struct AutoscaleLimits {
  MicroUsd max_per_hour{0};       // over every node acquired from offers (0: no cap)
};

struct Link {
  SiteId a;
  SiteId b;
  BitsPerSecond bandwidth{0};
  std::optional<Micros> latency;  // measured; otherwise derived from distance
  MicroUsd egress_per_gb{0};
};

// How often things break, for the simulator (`gpupool sim --failures`). Zero: never.
struct FailureModel {
  Millis node_mtbf{0};           // mean time between failures of one node
  Millis node_repair{3'600'000}; // how long a failed node stays out
  Millis spot_mtbf{0};           // mean time between reclaims of one spot-tier node
  Millis gpu_xid_mtbf{0};        // mean time between fatal XIDs of one GPU (it alone goes out)
};

class Fleet {
 public:
  std::vector<GpuModelInfo> models;
  std::vector<Provider> providers;
  std::vector<Site> sites;
  std::vector<Link> links;
  std::vector<Node> nodes;
  std::vector<Offer> offers;  // capacity to acquire when work waits
  std::vector<TenantConfig> tenants;  // [[tenant]]: quotas, weights and cohorts (the simulator's)
  std::vector<PriorityClass> priority_classes;  // [[priority_class]]: priorities by name
  AutoscaleLimits autoscale;
  FailureModel failures;  // from the fleet file's [failures] section

  // Returns the id of a model with this name, adding it (with catalog defaults when the name
  // is a known model) if new. Fails past kMaxGpuModels distinct models.
  Result<GpuModelId> InternModel(std::string_view name);
  std::optional<GpuModelId> FindModel(std::string_view name) const;  // case-insensitive
  std::optional<SiteId> FindSite(std::string_view name) const;
  const PriorityClass* FindPriorityClass(std::string_view name) const;
  // The class, or an error naming the known ones: "unknown priority class 'x'; known: low, high".
  Result<const PriorityClass*> PriorityClassNamed(std::string_view name) const;
  std::optional<ProviderId> FindProvider(std::string_view name) const;
  std::optional<NodeId> FindNode(std::string_view name) const;

  const GpuModelInfo& model(GpuModelId id) const { return models[id.value()]; }
  const Site& site(SiteId id) const { return sites[id.value()]; }
  const Provider& provider(ProviderId id) const { return providers[id.value()]; }
  const Node& node(NodeId id) const { return nodes[id.value()]; }

  // Price of one GPU-hour on this node: the provider's price for the node's model and tier,
  // else its on-demand price for the model, else the model's list price. Zero for no GPUs.
  MicroUsd PricePerGpuHour(const Node& node) const;
  // The network path between two sites: the declared link (either direction), else a default
  // WAN path (kDefaultWanBandwidth, latency from distance, no egress price). Same site: the
  // site's LAN, latency zero and bandwidth unbounded (the node's NIC then bounds it).
  NetworkPath PathBetween(SiteId from, SiteId to) const;

  int TotalGpus() const;
  // A node of offer `offer`'s shape (its site, provider, tier, CPU, memory, GPUs), with the
  // next node id; not added.
  Node NodeOfOffer(size_t offer, std::string name) const;
  // Checks every invariant the scheduler relies on; the message names the node or field.
  Status Validate() const;
};

inline constexpr BitsPerSecond kDefaultWanBandwidth{1'000'000'000};  // 1 Gbit/s

// "256x8xV100" -> 256 nodes of 8 V100 each at one site of one on-prem provider. "4x0" gives
// CPU-only nodes. Defaults per node: 8 cores and 64 GiB per GPU (at least 16 cores, 64 GiB),
// 100 Gbit/s NIC, NVLink between all GPUs of a node. The error names what was expected.
Result<Fleet> ParseFleetShorthand(std::string_view text);
bool LooksLikeFleetShorthand(std::string_view text);

// Default nodes for a shorthand or a trace node list: n nodes of `gpus` GPUs of `model`.
struct NodeGroupSpec {
  std::string name_prefix = "node";
  int count = 1;
  int gpus = 0;
  std::string gpu_model;
  std::optional<MiB> gpu_memory;
  std::optional<MilliCpu> cpu;
  std::optional<MiB> memory;
  BitsPerSecond nic{100'000'000'000};
  SiteId site;
  ProviderId provider;
  PriceTier tier = PriceTier::kOnDemand;
  enum class NvLink : uint8_t { kNone, kPairs, kAll } nvlink = NvLink::kAll;
  std::vector<std::pair<std::string, std::string>> labels;
  std::optional<Utilisation> measured;
};
// Appends the group's nodes, named "<prefix>-<k>" (k from 1, zero-padded to the group's width)
// or exactly the prefix when count is 1 and `exact_name_for_single` holds.
Status AddNodeGroup(Fleet& fleet, const NodeGroupSpec& group, bool exact_name_for_single = false);

}  // namespace gp
