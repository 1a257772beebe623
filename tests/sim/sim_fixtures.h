#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace gp::testing {

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
