#include "adapters/local_fleet.h"

#include <fmt/format.h>
#include <unistd.h>

#include <array>

#include "adapters/nvml.h"
#include "adapters/procfs.h"

namespace gp {

Result<Fleet> FleetFromInventory(std::string_view host, const std::vector<GpuDevice>& gpus,
                                 const std::vector<GpuSample>& gpu_load, const HostSample& h) {
  if (gpus.size() > kMaxGpusPerNode) {
    return InvalidArgument(fmt::format("{} GPUs on this node; gpupool handles at most {}", gpus.size(), kMaxGpusPerNode));
  }
  Fleet fleet;
  fleet.providers.push_back(Provider{.id = ProviderId{0}, .name = "local"});
  fleet.sites.push_back(Site{.id = SiteId{0}, .name = "local", .region = "local"});
  Node n{.id = NodeId{0}, .name = std::string(host), .site = SiteId{0}, .provider = ProviderId{0},
         .cpu = MilliCpu{h.cpu_cores * 1000LL}, .memory = h.memory.total, .nic = BitsPerSecond{10'000'000'000}};
  for (const GpuDevice& d : gpus) {
    auto model = fleet.InternModel(ModelFromDeviceName(d.name));
    if (!model) return tl::unexpected(model.error());
    n.gpus.push_back(Gpu{.index = d.index, .model = *model, .memory = d.memory,
                         .compute_capability = d.compute_capability, .uuid = d.uuid, .nvlink_peers = d.nvlink_peers});
  }
  int64_t gpu_busy = 0;
  for (const GpuSample& s : gpu_load) gpu_busy += s.utilisation.value();
  const int64_t mem_used = (h.memory.total - h.memory.available).value();
  n.measured = Utilisation{
      .cpu = h.cpu_busy,
      .gpu = PerMille{gpu_load.empty() ? 0 : gpu_busy / static_cast<int64_t>(gpu_load.size())},
      .memory = PerMille{h.memory.total.value() > 0 ? mem_used * 1000 / h.memory.total.value() : 0}};
  fleet.nodes.push_back(std::move(n));
  if (Status s = fleet.Validate(); !s.ok()) return tl::unexpected(s);
  return fleet;
}

Result<Fleet> LoadLocalFleet(std::string_view spec) {
  std::array<char, 256> name{};
  if (gethostname(name.data(), name.size() - 1) != 0) name = {'l', 'o', 'c', 'a', 'l'};
  std::unique_ptr<GpuSource> source;
  if (spec == "local") {
    auto nvml = OpenNvml();
    if (!nvml) {
      return tl::unexpected(Status(nvml.error().code(), nvml.error().message() + " (e.g. --fleet local:8xH100)"));
    }
    source = std::move(*nvml);
  } else if (spec.starts_with("local:")) {
    auto sim = SimulatedGpuSource::Parse(spec.substr(6), name.data());
    if (!sim) return tl::unexpected(sim.error());
    source = std::make_unique<SimulatedGpuSource>(std::move(*sim));
  } else {
    return InvalidArgument(fmt::format("'{}': expected local or local:COUNTxMODEL", spec));
  }
  auto devices = source->Devices();
  if (!devices) return tl::unexpected(devices.error());
  auto load = source->Sample();
  if (!load) return tl::unexpected(load.error());
  ProcfsHost procfs;
  auto host = procfs.Sample();
  if (!host) return tl::unexpected(host.error());
  return FleetFromInventory(name.data(), *devices, *load, *host);
}

}  // namespace gp
