#include "state/journal.h"

#include <map>

namespace gp {

std::vector<UsageTotal> SumUsage(const std::vector<UsageRecord>& rows, int64_t since_ms, const std::vector<std::string>& by) {
  auto column = [](const UsageRecord& r, const std::string& c) -> std::string {
    if (c == "provider") return r.provider;
    if (c == "offer") return r.offer;
    if (c == "tier") return r.tier;
    if (c == "tenant") return r.tenant;
    if (c == "kind") return r.kind;
    if (c == "node") return r.node;
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
