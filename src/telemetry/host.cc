#include "telemetry/host.h"

#include <fmt/format.h>

#include <charconv>
#include <vector>

namespace gp {
namespace {

std::vector<uint64_t> Numbers(std::string_view line) {
  std::vector<uint64_t> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] < '0' || line[i] > '9')) ++i;
    if (i >= line.size()) break;
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(line.data() + i, line.data() + line.size(), v);
    if (ec != std::errc()) break;
    out.push_back(v);
    i = static_cast<size_t>(p - line.data());
  }
  return out;
}

std::string_view LineStarting(std::string_view text, std::string_view prefix) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    if (line.starts_with(prefix)) return line;
    pos = end + 1;
  }
  return {};
}

}  // namespace

Result<CpuTimes> ParseProcStat(std::string_view text) {
  std::string_view line = LineStarting(text, "cpu ");
  const std::vector<uint64_t> v = Numbers(line.empty() ? line : line.substr(4));
  // user nice system idle iowait irq softirq steal ...
  if (v.size() < 4) return ParseError("/proc/stat: no aggregate 'cpu' line with at least 4 fields");
  CpuTimes t;
  for (size_t i = 0; i < v.size() && i < 8; ++i) t.total += v[i];
  const uint64_t idle = v[3] + (v.size() > 4 ? v[4] : 0);
  t.busy = t.total - idle;
  return t;
}

PerMille CpuBusyBetween(const CpuTimes& a, const CpuTimes& b) {
  if (b.total <= a.total || b.busy < a.busy) return PerMille{0};
  return PerMille{static_cast<int64_t>((b.busy - a.busy) * 1000 / (b.total - a.total))};
}

Result<MemoryInfo> ParseMeminfo(std::string_view text) {
  const std::vector<uint64_t> total = Numbers(LineStarting(text, "MemTotal:"));
  const std::vector<uint64_t> avail = Numbers(LineStarting(text, "MemAvailable:"));
  if (total.empty() || avail.empty()) return ParseError("/proc/meminfo: no MemTotal or MemAvailable line");
  return MemoryInfo{.total = MiB{static_cast<int64_t>(total[0] / 1024)},
                    .available = MiB{static_cast<int64_t>(avail[0] / 1024)}};
}

Result<NetCounters> ParseNetDev(std::string_view text) {
  NetCounters c;
  size_t pos = 0;
  int interfaces = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;  // the two header lines
    std::string_view name = line.substr(0, colon);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    const std::vector<uint64_t> v = Numbers(line.substr(colon + 1));
    if (v.size() < 9) return ParseError(fmt::format("/proc/net/dev: interface '{}' has {} fields, expected 16", name, v.size()));
    ++interfaces;
    if (name == "lo") continue;
    c.rx += Bytes{static_cast<int64_t>(v[0])};
    c.tx += Bytes{static_cast<int64_t>(v[8])};
  }
  if (interfaces == 0) return ParseError("/proc/net/dev: no interfaces");
  return c;
}

}  // namespace gp
