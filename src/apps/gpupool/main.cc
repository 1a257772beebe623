// gpupool: one binary, many verbs. This file wires the subcommands; each lives in cmd_*.cc.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>

#include "apps/gpupool/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"gpupool: pool GPUs from many sources into one fleet and schedule work on it", "gpupool"};
  app.set_version_flag("--version", "gpupool 0.1.0");
  app.require_subcommand(1);
  int exit_code = 0;
  gp::app::AddPlaceCommand(app, &exit_code);
  gp::app::AddSimCommand(app, &exit_code);
  gp::app::AddPoliciesCommand(app, &exit_code);
  gp::app::AddProbeCommand(app, &exit_code);
  gp::app::AddPoolCommands(app, &exit_code);
  gp::app::AddClientCommands(app, &exit_code);
  // Everything after the first "--" is a job's command, kept away from the option parser.
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--") {
      gp::app::TrailingCommand().assign(args.begin() + static_cast<long>(i) + 1, args.end());
      args.resize(i);
      break;
    }
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes the arguments in reverse order
  try {
    app.parse(args);
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
