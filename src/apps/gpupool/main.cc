// gpupool: one binary, many verbs. This file wires the subcommands; each lives in cmd_*.cc.
#include <fmt/format.h>

#include <CLI/CLI.hpp>

#include "apps/gpupool/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"gpupool: pool GPUs from many sources into one fleet and schedule work on it"};
  app.set_version_flag("--version", "gpupool 0.1.0");
  app.require_subcommand(1);
  int exit_code = 0;
  gp::app::AddPlaceCommand(app, &exit_code);
  gp::app::AddSimCommand(app, &exit_code);
  gp::app::AddPoliciesCommand(app, &exit_code);
  gp::app::AddProbeCommand(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  return exit_code;
}
