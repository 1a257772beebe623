#include "sim/trace.h"

#include <fmt/format.h>

#include <array>
#include <charconv>
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

namespace {
// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}
}  // namespace

std::optional<int64_t> CivilTimeMs(std::string_view t) {
  if (t.size() < 19 || t[4] != '-' || t[7] != '-' || (t[10] != ' ' && t[10] != 'T') || t[13] != ':' || t[16] != ':') {
    return std::nullopt;
  }
  std::array<int64_t, 6> v{};
  const std::array<std::pair<size_t, size_t>, 6> at{{{0, 4}, {5, 2}, {8, 2}, {11, 2}, {14, 2}, {17, 2}}};
  for (size_t i = 0; i < 6; ++i) {
    auto [p, ec] = std::from_chars(t.data() + at[i].first, t.data() + at[i].first + at[i].second, v[i]);
    if (ec != std::errc() || p != t.data() + at[i].first + at[i].second) return std::nullopt;
  }
  if (v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31 || v[3] > 23 || v[4] > 59 || v[5] > 60) return std::nullopt;
  int64_t ms = 0;
  std::string_view rest = t.substr(19);
  if (rest.starts_with('.')) {  // a fraction of a second: its first three digits count
    size_t digits = 1;
    while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9') ++digits;
    if (digits == 1) return std::nullopt;
    for (size_t k = 1; k <= 3; ++k) ms = ms * 10 + (k < digits ? rest[k] - '0' : 0);
    rest.remove_prefix(digits);
  }
  if (rest.size() > 1 || (rest.size() == 1 && rest[0] != 'Z')) return std::nullopt;
  return (DaysFromCivil(v[0], v[1], v[2]) * 86400 + v[3] * 3600 + v[4] * 60 + v[5]) * 1000 + ms;
}

Result<Millis> SecondsField(std::string_view name, std::string_view text) {
  auto v = FieldNumber(name, text);
  if (!v) return tl::unexpected(v.error());
  if (*v < 0 || *v > 1e13) return InvalidArgument(fmt::format("{}: {} is out of range (0..1e13 s)", name, text));
  return Millis{static_cast<int64_t>(std::llround(*v * 1000))};
}

}  // namespace gp
