#include "adapters/fleet_loader.h"

#include <fmt/format.h>

#include <fstream>

#include "adapters/local_fleet.h"
#include <sstream>

namespace gp {

Result<Fleet> LoadFleet(const std::string& spec, FleetNodes nodes) {
  if (LooksLikeFleetShorthand(spec)) return ParseFleetShorthand(spec);
  if (spec == "local" || spec.starts_with("local:")) return LoadLocalFleet(spec);
  std::ifstream in(spec, std::ios::binary);
  if (!in) {
    return Error(StatusCode::kNotFound,
                 fmt::format("{}: cannot open fleet file (or give a shorthand such as 256x8xV100)", spec));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string text = std::move(ss).str();
  Result<Fleet> fleet = spec.ends_with(".csv") ? ParseFleetNodeCsv(std::move(text), spec) : ParseFleetToml(text, spec, nodes);
  if (!fleet) return fleet;
  if (nodes == FleetNodes::kRequired && fleet->nodes.empty() && fleet->offers.empty()) {
    return InvalidArgument(fmt::format("{}: the fleet has no nodes and no offers", spec));
  }
  if (Status s = fleet->Validate(); !s.ok()) return InvalidArgument(fmt::format("{}: {}", spec, s.message()));
  return fleet;
}

}  // namespace gp
