// Who may do what: tenants (teams sharing the pool) and the tokens an admin makes for them.
// A token belongs to one tenant with one role: `user` (submit, and see, cancel and read the
// logs of its own tenant's jobs) or `viewer` (read only, its own tenant). The admin token
// (a file beside the store) stays, and does everything. A token is 256 random bits shown once
// at creation; the server keeps its SHA-256 only, compares in constant time, and refuses it
// at once when it is revoked, has expired, or its tenant was deleted. Records are kept in the
// store (the journal's meta table: tenant/NAME, token/ID) and loaded at start.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/status.h"
#include "core/tenant.h"
#include "state/journal.h"

namespace gp {

enum class Role : uint8_t { kUser, kViewer };
std::string_view RoleName(Role r);
Result<Role> ParseRole(std::string_view text);

struct Tenant {
  std::string name;
  int weight = 1;                              // its share under fair share (1..1000)
  std::string cohort;                          // the group it borrows from and lends to ("" none)
  std::map<std::string, QuotaLimits> quota;    // per GPU model: nominal, borrowing and lending limits
  std::string order;                           // its own queue order under a share order ("" fifo)
  Millis default_time{0};                      // a job's time limit when it gives none (0: max_time, or none)
  Millis max_time{0};                          // the longest time limit a job may ask (0: none)
  std::string priority;                        // the priority class of its jobs that give none ("" none)
  // The unix user its jobs run as under the process driver (an agent running as root switches
  // to it; a node without that user fails the task, saying so). "": the agent's --job-user.
  std::string unix_user;
  int64_t created_ms = 0;
};
// What the scheduler applies of a tenant.
TenantConfig ConfigOf(const Tenant& t);
// A tenant as stored and as the API shows it: {"name", "weight", "cohort", "quota": {MODEL: N},
// "borrow_limit": {MODEL: N}, "lend_limit": {MODEL: N}, "order", "created_ms"}.
nlohmann::json TenantJson(const Tenant& t);
// The fields present in `j` over `base` (a new tenant: Tenant{}). Errors name the field.
Result<Tenant> TenantFromJson(const nlohmann::json& j, Tenant base);

struct TokenInfo {
  std::string id;        // public: "tok-" and 12 hex digits (for list and revoke)
  std::string name;      // who it is for ("alice"), free text
  std::string tenant;
  Role role = Role::kUser;
  std::string sha256;    // of the secret
  int64_t created_ms = 0;
  int64_t expires_ms = 0;  // 0: never
  bool revoked = false;
};

class Access {
 public:
  explicit Access(Journal& journal) : journal_(journal) {}
  // From the store's meta records (tenant/..., token/...); an unreadable record is an error
  // naming its key.
  Status Load(const std::map<std::string, std::string>& meta);

  // Names: ValidTenantName (1..63 of [a-z0-9-], a letter or digit at each end). Errors name the field.
  Result<Tenant> CreateTenant(Tenant t, int64_t now_ms);
  // Replaces an existing tenant's weight, cohort, quotas and order (its tokens stay).
  Result<Tenant> UpdateTenant(Tenant t);
  // Its tokens stop working at once; its jobs keep their label.
  Status DeleteTenant(const std::string& name);
  std::vector<Tenant> Tenants() const;
  const Tenant* FindTenant(const std::string& name) const;

  // A new token for `tenant`: the secret (shown once) and its record. `ttl_ms` 0: no expiry.
  Result<std::pair<std::string, TokenInfo>> CreateToken(const std::string& tenant, Role role, const std::string& name,
                                                        int64_t ttl_ms, int64_t now_ms);
  Status Revoke(const std::string& id);
  std::vector<TokenInfo> Tokens() const;
  // The token `secret` is, if it may be used at `now_ms` (known, not revoked, not expired, its
  // tenant still there). O(log tokens) and one SHA-256.
  std::optional<TokenInfo> Who(std::string_view secret, int64_t now_ms) const;

 private:
  Status Put(const std::string& key, const std::string& json);
  Journal& journal_;
  std::map<std::string, Tenant> tenants_;
  std::map<std::string, TokenInfo> tokens_;        // by id
  std::map<std::string, std::string> by_hash_;     // sha256 -> id
};

}  // namespace gp
