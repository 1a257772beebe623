// Loading a fleet from what a user has: a fleet file in TOML (docs/fleet.md), a node-list CSV
// (sn,cpu_milli,memory_mib,gpu,model: the Alibaba openb inventory), or the shorthand
// "256x8xV100". Every error names the file, line and field. Does file I/O; call from one thread.
#pragma once

#include <string>
#include <string_view>

#include "core/fleet.h"
#include "core/status.h"

namespace gp {

// Whether a fleet file must list nodes (or offers): a simulation's must; a live server's need
// not, its nodes come from the agents that join (the file gives sites, prices, tenants,
// priority classes).
enum class FleetNodes : uint8_t { kRequired, kFromAgents };
// Picks the reader by the argument: shorthand, "local" (this machine, GPUs from NVML) or
// "local:8xH100" (this machine with simulated GPUs), *.csv, else TOML.
Result<Fleet> LoadFleet(const std::string& spec, FleetNodes nodes = FleetNodes::kRequired);
// `source` names the text in messages ("fleet.toml").
Result<Fleet> ParseFleetToml(std::string_view text, const std::string& source, FleetNodes nodes = FleetNodes::kRequired);
Result<Fleet> ParseFleetNodeCsv(std::string text, const std::string& source);

}  // namespace gp
