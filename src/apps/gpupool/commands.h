// The composition root's commands. Each Add*Command registers a CLI11 subcommand whose callback
// stores its exit code in `*exit_code`: 0 success, 1 bad input or failed run, 2 usage error,
// 3 (place) the request could not be placed.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "sched/registry.h"

namespace gp::app {

// --preemption and --backfill, as the server and the simulator both take them (cmd_place.cc).
struct SchedulingFlags {
  std::string preemption = "off";
  std::string backfill = "off";
};
void AddSchedulingFlags(CLI::App* cmd, SchedulingFlags& flags);
// Sets them on the policy; the error names the flag.
std::optional<std::string> ApplySchedulingFlags(const SchedulingFlags& flags, Policy& policy);

// The words after "--" on the command line (a job's command), set by main().
std::vector<std::string>& TrailingCommand();

void AddPlaceCommand(CLI::App& app, int* exit_code);
void AddSimCommand(CLI::App& app, int* exit_code);
void AddPoliciesCommand(CLI::App& app, int* exit_code);
void AddProbeCommand(CLI::App& app, int* exit_code);
void AddPoolCommands(CLI::App& app, int* exit_code);
void AddClientCommands(CLI::App& app, int* exit_code);

}  // namespace gp::app
