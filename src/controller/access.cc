#include "controller/access.h"

#include <fmt/format.h>

#include <functional>
#include <tuple>
#include <nlohmann/json.hpp>

#include "adapters/tokens.h"
#include "core/tenant.h"
#include "core/units.h"

namespace gp {

namespace {

using Json = nlohmann::json;

Json TokenJson(const TokenInfo& t) {
  return Json{{"id", t.id},           {"name", t.name},         {"tenant", t.tenant},          {"role", RoleName(t.role)},
              {"sha256", t.sha256},   {"created_ms", t.created_ms}, {"expires_ms", t.expires_ms}, {"revoked", t.revoked}};
}

Status CheckName(const std::string& name, const char* field);

// A map of GPUs per model, {"H100": 64}.
Status PerModel(const Json& j, const char* field, const std::function<void(QuotaLimits&, int64_t)>& set,
                std::map<std::string, QuotaLimits>& quota) {
  if (!j.contains(field) || j[field].is_null()) return Status::Ok();
  if (!j[field].is_object()) return Status(StatusCode::kInvalidArgument, fmt::format("field '{}': expected {{\"MODEL\": GPUS, ...}}", field));
  for (const auto& [model, gpus] : j[field].items()) {
    if (!gpus.is_number_integer()) {
      return Status(StatusCode::kInvalidArgument, fmt::format("field '{}': {}: expected a whole number of GPUs", field, model.substr(0, 64)));
    }
    const int64_t n = gpus.get<int64_t>();
    if (model.empty() || model.size() > 64) {
      return Status(StatusCode::kInvalidArgument, fmt::format("{}: a GPU model name of 1 to 64 characters", field));
    }
    if (n < 0 || n > kMaxQuotaGpus) {
      return Status(StatusCode::kInvalidArgument, fmt::format("{}: {}={}: expected 0..{} GPUs", field, model, n, kMaxQuotaGpus));
    }
    set(quota[model], n);
  }
  return Status::Ok();
}

Status CheckName(const std::string& name, const char* field) {
  if (ValidTenantName(name)) return Status::Ok();
  return Status(StatusCode::kInvalidArgument,
                fmt::format("{}: '{}': 1 to 63 of a-z, 0-9 and -, starting and ending with a letter or digit", field, name.substr(0, 80)));
}


}  // namespace

TenantConfig ConfigOf(const Tenant& t) {
  return TenantConfig{.name = t.name, .weight = t.weight, .cohort = t.cohort, .quota = t.quota, .order = t.order,
                      .default_time = t.default_time, .max_time = t.max_time, .priority = t.priority};
}

Json TenantJson(const Tenant& t) {
  Json quota = Json::object(), borrow = Json::object(), lend = Json::object();
  for (const auto& [model, q] : t.quota) {
    quota[model] = q.nominal;
    if (q.borrow_limit) borrow[model] = *q.borrow_limit;
    if (q.lend_limit) lend[model] = *q.lend_limit;
  }
  return Json{{"name", t.name}, {"weight", t.weight}, {"cohort", t.cohort}, {"quota", quota}, {"borrow_limit", borrow},
              {"lend_limit", lend}, {"order", t.order}, {"default_time_ms", t.default_time.value()},
              {"max_time_ms", t.max_time.value()}, {"priority", t.priority}, {"unix_user", t.unix_user}, {"created_ms", t.created_ms}};
}

Result<Tenant> TenantFromJson(const Json& j, Tenant t) {
  auto text = [&](const char* key, std::string& out) -> Status {
    if (!j.contains(key) || j[key].is_null()) return Status::Ok();
    if (!j[key].is_string()) return Status(StatusCode::kInvalidArgument, fmt::format("field '{}': expected a string", key));
    out = j[key].get<std::string>();
    return Status::Ok();
  };
  for (const auto& [key, out] : {std::pair<const char*, std::string*>{"name", &t.name}, {"cohort", &t.cohort}, {"order", &t.order},
                                                                          {"priority", &t.priority}, {"unix_user", &t.unix_user}}) {
    if (Status s = text(key, *out); !s.ok()) return tl::unexpected(s);
  }
  // A POSIX user name (as useradd takes), never root: what its jobs run as.
  if (!t.unix_user.empty() &&
      (t.unix_user.size() > 32 || t.unix_user == "root" ||
       t.unix_user.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") != std::string::npos ||
       !((t.unix_user[0] >= 'a' && t.unix_user[0] <= 'z') || t.unix_user[0] == '_'))) {
    return Error(StatusCode::kInvalidArgument,
                 fmt::format("field 'unix_user': '{}': expected a user name (a-z, 0-9, _ and -; a letter or _ first; not root)",
                             t.unix_user.substr(0, 40)));
  }
  // Time limits: "2h", "1-12:00:00" (Slurm's --time forms); stored as *_ms.
  for (const auto& [key, stored, field] : {std::tuple{"default_time", "default_time_ms", &t.default_time},
                                           std::tuple{"max_time", "max_time_ms", &t.max_time}}) {
    if (j.contains(stored) && j[stored].is_number_integer()) *field = Millis{j[stored].get<int64_t>()};
    if (!j.contains(key) || j[key].is_null()) continue;
    if (!j[key].is_string()) return Error(StatusCode::kInvalidArgument, fmt::format("field '{}': expected a time such as \"2h\"", key));
    const std::string given = j[key].get<std::string>();
    if (given.empty() || given == "none") {
      *field = Millis{0};
      continue;
    }
    auto v = ParseTimeLimit(given);
    if (!v) return Error(StatusCode::kInvalidArgument, fmt::format("field '{}': {}", key, v.error().message()));
    *field = *v;
  }
  if (j.contains("weight")) {
    if (!j["weight"].is_number_integer()) return Error(StatusCode::kInvalidArgument, "field 'weight': expected a whole number 1..1000");
    const int64_t w = j["weight"].get<int64_t>();
    if (w < 1 || w > 1000) return Error(StatusCode::kInvalidArgument, fmt::format("weight: {}: expected 1..1000", w));
    t.weight = static_cast<int>(w);
  }
  // Each map given replaces that figure for every model (a model left out has none).
  std::map<std::string, QuotaLimits> quota = t.quota;
  if (j.contains("quota")) {
    for (auto& [m, q] : quota) q.nominal = 0;
  }
  if (j.contains("borrow_limit")) {
    for (auto& [m, q] : quota) q.borrow_limit.reset();
  }
  if (j.contains("lend_limit")) {
    for (auto& [m, q] : quota) q.lend_limit.reset();
  }
  if (Status s = PerModel(j, "quota", [](QuotaLimits& q, int64_t n) { q.nominal = n; }, quota); !s.ok()) return tl::unexpected(s);
  if (Status s = PerModel(j, "borrow_limit", [](QuotaLimits& q, int64_t n) { q.borrow_limit = n; }, quota); !s.ok()) {
    return tl::unexpected(s);
  }
  if (Status s = PerModel(j, "lend_limit", [](QuotaLimits& q, int64_t n) { q.lend_limit = n; }, quota); !s.ok()) {
    return tl::unexpected(s);
  }
  std::erase_if(quota, [](const auto& e) { return e.second.nominal == 0 && !e.second.borrow_limit && !e.second.lend_limit; });
  t.quota = std::move(quota);
  if (j.contains("created_ms") && j["created_ms"].is_number_integer()) t.created_ms = j["created_ms"].get<int64_t>();
  return t;
}

std::string_view RoleName(Role r) { return r == Role::kViewer ? "viewer" : "user"; }

Result<Role> ParseRole(std::string_view text) {
  if (text == "user") return Role::kUser;
  if (text == "viewer") return Role::kViewer;
  return Error(StatusCode::kInvalidArgument, fmt::format("role: '{}': expected user or viewer", text.substr(0, 40)));
}

Status Access::Load(const std::map<std::string, std::string>& meta) {
  for (const auto& [key, text] : meta) {
    const bool tenant = key.starts_with("tenant/");
    if (!tenant && !key.starts_with("token/")) continue;
    try {
      const Json j = Json::parse(text);
      if (j.value("deleted", false)) continue;
      if (tenant) {
        auto t = TenantFromJson(j, Tenant{});
        if (!t) return Status(StatusCode::kInternal, fmt::format("store: {}: {}", key, t.error().message()));
        tenants_[t->name] = std::move(*t);
      } else {
        auto role = ParseRole(j.at("role").get<std::string>());
        if (!role) return Status(StatusCode::kInternal, fmt::format("store: {}: {}", key, role.error().message()));
        TokenInfo t{.id = j.at("id").get<std::string>(), .name = j.value("name", ""), .tenant = j.at("tenant").get<std::string>(),
                     .role = *role, .sha256 = j.at("sha256").get<std::string>(), .created_ms = j.value("created_ms", int64_t{0}),
                     .expires_ms = j.value("expires_ms", int64_t{0}), .revoked = j.value("revoked", false)};
        by_hash_[t.sha256] = t.id;
        tokens_[t.id] = std::move(t);
      }
    } catch (const Json::exception& e) {
      return Status(StatusCode::kInternal, fmt::format("store: {}: {}", key, e.what()));
    }
  }
  return Status::Ok();
}

Status Access::Put(const std::string& key, const std::string& json) { return journal_.PutMeta(key, json); }

namespace {

// Everything but whether the name is taken.
Status CheckTenant(const Tenant& t) {
  if (Status s = CheckName(t.name, "name"); !s.ok()) return s;
  if (t.weight < 1 || t.weight > 1000) return Status(StatusCode::kInvalidArgument, fmt::format("weight: {}: expected 1..1000", t.weight));
  if (!t.cohort.empty()) {
    if (Status s = CheckName(t.cohort, "cohort"); !s.ok()) return s;
  }
  for (const auto& [model, q] : t.quota) {
    if (model.empty() || model.size() > 64) return Status(StatusCode::kInvalidArgument, "quota: a GPU model name of 1 to 64 characters");
    if (q.nominal < 0 || q.nominal > kMaxQuotaGpus) {
      return Status(StatusCode::kInvalidArgument, fmt::format("quota: {}={}: expected 0..{} GPUs", model, q.nominal, kMaxQuotaGpus));
    }
  }
  return ValidateTenantConfig(ConfigOf(t));
}

}  // namespace

Result<Tenant> Access::CreateTenant(Tenant t, int64_t now_ms) {
  if (Status s = CheckTenant(t); !s.ok()) return tl::unexpected(s);
  if (tenants_.count(t.name)) return Error(StatusCode::kFailedPrecondition, fmt::format("name: tenant '{}' exists already", t.name));
  t.created_ms = now_ms;
  if (Status s = Put("tenant/" + t.name, TenantJson(t).dump()); !s.ok()) return tl::unexpected(s);
  tenants_[t.name] = t;
  return t;
}

Result<Tenant> Access::UpdateTenant(Tenant t) {
  auto it = tenants_.find(t.name);
  if (it == tenants_.end()) return Error(StatusCode::kNotFound, fmt::format("no tenant '{}'", t.name.substr(0, 80)));
  if (Status s = CheckTenant(t); !s.ok()) return tl::unexpected(s);
  t.created_ms = it->second.created_ms;
  if (Status s = Put("tenant/" + t.name, TenantJson(t).dump()); !s.ok()) return tl::unexpected(s);
  it->second = t;
  return t;
}

Status Access::DeleteTenant(const std::string& name) {
  if (!tenants_.count(name)) return Status(StatusCode::kNotFound, fmt::format("no tenant '{}'", name));
  if (Status s = Put("tenant/" + name, Json{{"name", name}, {"deleted", true}}.dump()); !s.ok()) return s;
  tenants_.erase(name);
  return Status::Ok();
}

std::vector<Tenant> Access::Tenants() const {
  std::vector<Tenant> out;
  for (const auto& [n, t] : tenants_) out.push_back(t);
  return out;
}

const Tenant* Access::FindTenant(const std::string& name) const {
  auto it = tenants_.find(name);
  return it == tenants_.end() ? nullptr : &it->second;
}

Result<std::pair<std::string, TokenInfo>> Access::CreateToken(const std::string& tenant, Role role, const std::string& name,
                                                                int64_t ttl_ms, int64_t now_ms) {
  if (!tenants_.count(tenant)) return Error(StatusCode::kNotFound, fmt::format("tenant: no tenant '{}'", tenant.substr(0, 80)));
  if (name.size() > 128) return Error(StatusCode::kInvalidArgument, "name: at most 128 characters");
  if (ttl_ms < 0) return Error(StatusCode::kInvalidArgument, "ttl: must not be negative");
  auto secret = NewSecret();
  if (!secret) return tl::unexpected(secret.error());
  auto id_bits = NewSecret();
  if (!id_bits) return tl::unexpected(id_bits.error());
  TokenInfo t{.id = "tok-" + id_bits->substr(0, 12), .name = name, .tenant = tenant, .role = role, .sha256 = Sha256Hex(*secret),
              .created_ms = now_ms, .expires_ms = ttl_ms > 0 ? now_ms + ttl_ms : 0};
  if (Status s = Put("token/" + t.id, TokenJson(t).dump()); !s.ok()) return tl::unexpected(s);
  by_hash_[t.sha256] = t.id;
  tokens_[t.id] = t;
  return std::pair{*secret, t};
}

Status Access::Revoke(const std::string& id) {
  auto it = tokens_.find(id);
  if (it == tokens_.end()) return Status(StatusCode::kNotFound, fmt::format("no token '{}'", id.substr(0, 80)));
  TokenInfo t = it->second;
  t.revoked = true;
  if (Status s = Put("token/" + id, TokenJson(t).dump()); !s.ok()) return s;
  it->second = std::move(t);
  return Status::Ok();
}

std::vector<TokenInfo> Access::Tokens() const {
  std::vector<TokenInfo> out;
  for (const auto& [id, t] : tokens_) out.push_back(t);
  return out;
}

std::optional<TokenInfo> Access::Who(std::string_view secret, int64_t now_ms) const {
  if (secret.size() != 64) return std::nullopt;  // every token is 64 hex digits
  const std::string hash = Sha256Hex(secret);
  auto h = by_hash_.find(hash);
  if (h == by_hash_.end()) return std::nullopt;
  const TokenInfo& t = tokens_.at(h->second);
  if (!SameSecret(t.sha256, hash) || t.revoked || (t.expires_ms > 0 && now_ms >= t.expires_ms) || !tenants_.count(t.tenant)) return std::nullopt;
  return t;
}

}  // namespace gp
