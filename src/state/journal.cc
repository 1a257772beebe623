#include "state/journal.h"

#include <fmt/format.h>

#include <chrono>
#include <map>

namespace gp {

std::string UtcDay(int64_t ms) {
  const std::chrono::sys_days day = std::chrono::floor<std::chrono::days>(std::chrono::sys_time<std::chrono::milliseconds>(std::chrono::milliseconds(ms)));
  const std::chrono::year_month_day ymd(day);
  return fmt::format("{:04}-{:02}-{:02}", static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()));
}

std::vector<UsageTotal> SumUsage(const std::vector<UsageRecord>& rows, int64_t since_ms, const std::vector<std::string>& by) {
  auto column = [](const UsageRecord& r, const std::string& c) -> std::string {
    if (c == "provider") return r.provider;
    if (c == "offer") return r.offer;
    if (c == "tier") return r.tier;
    if (c == "tenant") return r.tenant;
    if (c == "kind") return r.kind;
    if (c == "node") return r.node;
    if (c == "day") return UtcDay(r.end_ms);
    return {};
  };
  std::map<std::vector<std::string>, UsageTotal> sums;
  for (const UsageRecord& r : rows) {
    if (r.end_ms < since_ms) continue;
    std::vector<std::string> key;
    for (const std::string& c : by) key.push_back(column(r, c));
    UsageTotal& t = sums[key];
    t.key = key;
    t.gpu_ms += r.gpu_ms;
    t.usd_micro += r.usd_micro;
    ++t.records;
  }
  std::vector<UsageTotal> out;
  for (auto& [k, t] : sums) out.push_back(std::move(t));
  return out;
}

}  // namespace gp
