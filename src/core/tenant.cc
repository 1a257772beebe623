#include "core/tenant.h"

#include <fmt/format.h>

#include <algorithm>

namespace gp {
namespace {

Status Invalid(std::string message) { return Status(StatusCode::kInvalidArgument, std::move(message)); }

}  // namespace

bool ValidTenantName(std::string_view n) {
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (n.empty() || n.size() > 63 || !alnum(n.front()) || !alnum(n.back())) return false;
  return std::all_of(n.begin(), n.end(), [&](char c) { return alnum(c) || c == '-'; });
}

Status ValidateTenantConfig(const TenantConfig& t) {
  if (!ValidTenantName(t.name)) {
    return Invalid(fmt::format("tenant name: 1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit; got '{}'", t.name));
  }
  if (t.weight < 1 || t.weight > 1000) return Invalid(fmt::format("tenant {}: weight must be 1..1000, got {}", t.name, t.weight));
  if (!t.cohort.empty() && !ValidTenantName(t.cohort)) {
    return Invalid(fmt::format("tenant {}: cohort: 1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit; got '{}'", t.name, t.cohort));
  }
  if (t.cohort == t.name) return Invalid(fmt::format("tenant {}: cohort: a tenant cannot be its own cohort", t.name));
  constexpr int64_t kMaxTime = 366LL * 86'400'000;
  for (const auto& [field, v] : {std::pair<const char*, Millis>{"default time", t.default_time}, {"max time", t.max_time}}) {
    if (v.value() != 0 && (v.value() < 1'000 || v.value() > kMaxTime)) {
      return Invalid(fmt::format("tenant {}: {} must be 1s..366 days, got {} ms", t.name, field, v.value()));
    }
  }
  if (t.default_time.value() > 0 && t.max_time.value() > 0 && t.default_time > t.max_time) {
    return Invalid(fmt::format("tenant {}: default time is above its max time", t.name));
  }
  for (const auto& [model, q] : t.quota) {
    if (model.empty()) return Invalid(fmt::format("tenant {}: quota: a GPU model name is empty", t.name));
    for (const auto& [field, v] : {std::pair<const char*, std::optional<int64_t>>{"nominal", q.nominal},
                                   {"borrow limit", q.borrow_limit}, {"lend limit", q.lend_limit}}) {
      if (v && (*v < 0 || *v > kMaxQuotaGpus)) {
        return Invalid(fmt::format("tenant {}: quota {}: {} must be 0..{} GPUs, got {}", t.name, model, field, kMaxQuotaGpus, *v));
      }
    }
  }
  return Status();
}

}  // namespace gp
