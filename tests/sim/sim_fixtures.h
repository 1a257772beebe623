#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "sched/registry.h"
#include "sim/trace.h"

namespace gp::testing {

// A built-in policy by name.
inline Policy P(const std::string& name) { return std::move(*BuiltinRegistry().MakePolicy(name)); }

// A trace job submitted at `submit_s`, running `duration_s`, asking `gpus`.
inline TraceJob Job(const char* name, double submit_s, double duration_s, int gpus) {
  return TraceJob{.name = name, .submit = Millis{static_cast<int64_t>(submit_s * 1000)},
                  .duration = Millis{static_cast<int64_t>(duration_s * 1000)}, .gpus = gpus};
}

// The shared traces: $GPUPOOL_TRACES, else ../shared/traces beside the checkout.
inline std::string Traces() {
  if (const char* env = std::getenv("GPUPOOL_TRACES"); env && *env) return env;
  return GP_TRACES_DEFAULT;
}

// Writes `text` to a fresh file in the test's temp directory and returns its path.
inline std::string WriteTemp(const std::string& name, const std::string& text) {
  const auto dir = std::filesystem::temp_directory_path() / ("gpupool-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = dir / name;
  std::ofstream(path) << text;
  return path.string();
}

}  // namespace gp::testing
