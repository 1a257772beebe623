#include "sim/throughput.h"

#include <fmt/format.h>

#include <charconv>
#include <fstream>
#include <nlohmann/json.hpp>

namespace gp {
namespace {

// "('ResNet-18 (batch size 16)', 1)" -> {"ResNet-18 (batch size 16)", 1}.
std::optional<std::pair<std::string, int>> ParseKey(const std::string& key) {
  const size_t open = key.find("('");
  const size_t close = key.rfind("', ");
  if (open == std::string::npos || close == std::string::npos || close < open + 2) return std::nullopt;
  int scale = 0;
  const char* begin = key.data() + close + 3;
  const char* end = key.data() + key.size();
  auto [p, ec] = std::from_chars(begin, end, scale);
  if (ec != std::errc() || p == end || *p != ')') return std::nullopt;
  return std::pair{key.substr(open + 2, close - open - 2), scale};
}

}  // namespace

Result<ThroughputTable> ThroughputTable::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error(StatusCode::kNotFound, fmt::format("{}: cannot open throughput table", path));
  nlohmann::json doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return ParseError(fmt::format("{}: not a JSON object of worker types", path));
  }
  ThroughputTable t;
  t.path_ = path;
  for (auto& [worker, jobs] : doc.items()) {
    if (!jobs.is_object()) return ParseError(fmt::format("{}: worker '{}' is not an object", path, worker));
    auto& out = t.table_[worker];
    for (auto& [key, entry] : jobs.items()) {
      auto parsed = ParseKey(key);
      if (!parsed) return ParseError(fmt::format("{}: worker '{}': key '{}' is not ('job type', scale)", path, worker, key));
      if (!entry.is_object() || !entry.contains("null") || !entry["null"].is_number()) {
        return ParseError(fmt::format("{}: worker '{}': {} has no numeric \"null\" throughput", path, worker, key));
      }
      out[*parsed] = entry["null"].get<double>();
    }
  }
  return t;
}

std::optional<double> ThroughputTable::Get(const std::string& worker, const std::string& job_type, int scale) const {
  auto w = table_.find(worker);
  if (w == table_.end()) return std::nullopt;
  auto j = w->second.find({job_type, scale});
  if (j == w->second.end() || !(j->second > 0)) return std::nullopt;
  return j->second;
}

std::vector<std::string> ThroughputTable::workers() const {
  std::vector<std::string> out;
  for (const auto& [w, _] : table_) {
    if (w.find('_') == std::string::npos) out.push_back(w);
  }
  return out;
}

}  // namespace gp
