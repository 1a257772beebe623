// Reads a whole file for the trace readers; the error names the path.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#include <fmt/format.h>

#include "core/delimited.h"

namespace gp {

inline Result<DelimitedFile> OpenDelimited(const std::string& path, char separator) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(StatusCode::kNotFound, fmt::format("{}: cannot open", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return DelimitedFile(path, std::move(ss).str(), separator);
}

}  // namespace gp
