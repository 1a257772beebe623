// This machine as a one-node fleet: GPUs from a GpuSource (NVML, or simulated), CPU and memory
// from /proc, measured load from one sample of each. `--fleet local` and `--fleet local:8xH100`.
#pragma once

#include <string_view>

#include "core/fleet.h"
#include "telemetry/gpu_source.h"
#include "telemetry/host.h"

namespace gp {

// Pure: builds the fleet from what was read. The node is named `host`.
Result<Fleet> FleetFromInventory(std::string_view host, const std::vector<GpuDevice>& gpus,
                                 const std::vector<GpuSample>& gpu_load, const HostSample& host_sample);

// Reads this machine: "local" (NVML) or "local:COUNTxMODEL" (simulated GPUs).
Result<Fleet> LoadLocalFleet(std::string_view spec);

}  // namespace gp
