#include "sim/trace.h"

#include <fmt/format.h>

#include <cmath>
#include <fstream>

#include "sim/read_file.h"

namespace gp {

const std::vector<std::unique_ptr<TraceReader>>& TraceReaders() {
  static const auto* kReaders = [] {
    auto* v = new std::vector<std::unique_ptr<TraceReader>>();
    v->push_back(MakePhillyReader());
    v->push_back(MakeTiresiasReader());
    v->push_back(MakeGavelReader());
    v->push_back(MakeShockwaveReader());
    v->push_back(MakeAlibabaReader());
    v->push_back(MakeProfileWorkloadReader());
    v->push_back(MakeEventsReader());
    return v;
  }();
  return *kReaders;
}

Result<Trace> ReadTrace(const std::string& path, std::string_view format, const TraceOptions& options) {
  const auto& readers = TraceReaders();
  if (!format.empty()) {
    for (const auto& r : readers) {
      if (r->name() == format) return r->Read(path, options);
    }
    std::string known;
    for (const auto& r : readers) known += (known.empty() ? "" : ", ") + std::string(r->name());
    return InvalidArgument(fmt::format("unknown trace format '{}'; known: {}", format, known));
  }
  std::ifstream in(path);
  if (!in) return Error(StatusCode::kNotFound, fmt::format("{}: cannot open", path));
  std::string first;
  while (std::getline(in, first) && first.find_first_not_of(" \t\r") == std::string::npos) {
  }
  for (const auto& r : readers) {
    if (r->Recognises(path, first)) return r->Read(path, options);
  }
  return InvalidArgument(fmt::format(
      "{}:1: cannot tell the trace format from the name and first line; give --trace-format", path));
}

Result<Millis> SecondsField(std::string_view name, std::string_view text) {
  auto v = FieldNumber(name, text);
  if (!v) return tl::unexpected(v.error());
  if (*v < 0 || *v > 1e13) return InvalidArgument(fmt::format("{}: {} is out of range (0..1e13 s)", name, text));
  return Millis{static_cast<int64_t>(std::llround(*v * 1000))};
}

}  // namespace gp
