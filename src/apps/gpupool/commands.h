// The composition root's commands. Each Add*Command registers a CLI11 subcommand whose callback
// stores its exit code in `*exit_code`: 0 success, 1 bad input or failed run, 2 usage error,
// 3 (place) the request could not be placed.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace gp::app {

// The words after "--" on the command line (a job's command), set by main().
std::vector<std::string>& TrailingCommand();

void AddPlaceCommand(CLI::App& app, int* exit_code);
void AddSimCommand(CLI::App& app, int* exit_code);
void AddPoliciesCommand(CLI::App& app, int* exit_code);
void AddProbeCommand(CLI::App& app, int* exit_code);
void AddPoolCommands(CLI::App& app, int* exit_code);
void AddClientCommands(CLI::App& app, int* exit_code);

}  // namespace gp::app
