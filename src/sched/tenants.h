// The teams sharing a pool, as the scheduling core sees them: each tenant's weight, cohort and
// quota per GPU model (Kueue's ClusterQueue: a nominal quota, a borrowing limit, a lending
// limit), what it holds now, and its decayed usage (Slurm's fair-share usage: GPU-time with a
// half-life). Kept by the state owner by deltas (Charge on every allocation and release,
// AdvanceTo before each pass) inside SchedState; Schedule() reads it and never writes it.
//
// Quota, per tenant t and GPU model m (amounts in thousandths of a GPU):
//   nominal N_t, lendable L_t = min(lending limit, N_t) (N_t when no limit), used U_t.
//   t borrows B_t = max(0, U_t - N_t); t's quota that others may use is
//   free_t = max(0, min(L_t, N_t - U_t)).
//   t may take k more when U_t + k <= N_t (its own quota, always), or else when the borrowing
//   b = U_t + k - N_t (what it would borrow in all) is within its borrowing limit and within
//   what the cohort has to lend: b <= sum over the other members s of (free_s - B_s).
// Worked example: cohort research = {llm: N 64, vision: N 32 lending at most 16}. vision uses
// 8: its free part is min(16, 24) = 16. llm uses 64 and asks 8: b = 8 <= 16, admitted. llm
// then asks 16 more: b = 24 > 16, it waits, "quota: llm uses 72 of 64 H100 (8 borrowed) and
// asks 16; cohort research can lend 8 more (vision lends at most 16)".
// A tenant with neither quota nor cohort is unlimited; one with a quota for some models has
// none (0) for the others, and may only borrow them.
//
// Decayed usage, per tenant: D(now) = D(t0) 2^(-(now-t0)/H) + R H/ln2 (1 - 2^(-(now-t0)/H)),
// R the GPUs it held since t0 (GPU-ms; H the half-life). Rank under fair share: D / weight share.
//
// Not thread-safe; one owner.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/fleet.h"
#include "core/tenant.h"
#include "core/quantity.h"
#include "core/status.h"
#include "sched/reason.h"
#include "sched/snapshot.h"

namespace gp {

// What one allocation uses, for the books.
struct TenantUseDelta {
  int64_t gpu_milli = 0;
  int64_t cpu = 0;     // millicores
  int64_t memory = 0;  // MiB
};
TenantUseDelta UseOf(const TaskAllocation& a);

// Per-model figures of one tenant, for `gpupool tenants` (thousandths of a GPU).
struct TenantModelRow {
  std::string model;
  int64_t nominal = 0, used = 0, borrowed = 0, lent = 0;  // nominal -1: no quota (unlimited)
  std::optional<int64_t> borrow_limit, lend_limit;
};
struct TenantRow {
  std::string name;
  int weight = 1;
  std::string cohort;
  std::string order;
  bool limited = false;
  std::vector<TenantModelRow> models;
  int64_t gpu_milli = 0, cpu = 0, memory = 0;  // held now
  double decayed_gpu_ms = 0;
  double fair_share = 0;  // decayed usage / weight share (smaller: served first)
  int rank = 0;           // 1: first under fair share
};

// What a pass has placed so far, per tenant (its own increments on top of the book).
class TenantBook;
class TenantPassUse {
 public:
  // `book`: what the pass started from (to follow what each cohort can lend, in O(1)).
  void Add(const TenantBook& book, TenantIndex t, uint8_t model_bit, const TenantUseDelta& d, int sign);
  int64_t Gpu(TenantIndex t, uint8_t model_bit) const;
  TenantUseDelta Total(TenantIndex t) const;
  // How much what a cohort can lend of a model changed in this pass.
  int64_t CohortDelta(int32_t cohort, uint8_t model_bit) const;
  bool empty() const { return by_tenant_.empty(); }

 private:
  struct Use {
    std::array<int64_t, 64> gpu{};
    TenantUseDelta total;
  };
  std::unordered_map<TenantIndex, Use> by_tenant_;
  std::unordered_map<uint64_t, int64_t> cohort_delta_;  // (cohort << 8 | model) -> change
};

class TenantBook {
 public:
  TenantBook();

  TenantIndex Intern(std::string_view name);
  std::optional<TenantIndex> Find(std::string_view name) const;
  const std::string& name(TenantIndex t) const { return tenants_[t].config.name; }
  size_t size() const { return tenants_.size(); }

  // Every tenant's configuration at once (a tenant not named goes back to unlimited, weight
  // 1); model names are resolved against the fleet (a model it lacks yet counts once a node of
  // it joins: call Resolve). Errors name the tenant and field; nothing changes on error.
  Status Configure(const std::vector<TenantConfig>& configs, const Fleet& fleet);
  void Resolve(const Fleet& fleet);
  const TenantConfig& config(TenantIndex t) const { return tenants_[t].config; }
  // Whether any tenant has a quota or a cohort (else admission by quota is free).
  bool any_limited() const { return limited_ > 0; }
  bool limited(TenantIndex t) const { return tenants_[t].limited; }
  int weight(TenantIndex t) const { return tenants_[t].config.weight; }
  int64_t weight_total() const { return weight_total_; }

  void set_half_life(Millis h) { half_life_ms_ = std::max<int64_t>(1, h.value()); }
  Millis half_life() const { return Millis{half_life_ms_}; }
  // Usage changes at `now` (nullopt: a restored allocation at start, before any time passed).
  void Charge(TenantIndex t, uint8_t model_bit, const TenantUseDelta& d, int sign, std::optional<Millis> now);
  // Every tenant's decayed usage brought to `now` (before a pass). O(tenants).
  void AdvanceTo(Millis now);
  // A tenant's decayed usage as stored at `as_of` (a restart: it decays from then on).
  void RestoreDecayed(TenantIndex t, double decayed_gpu_ms, Millis as_of);
  int64_t decayed_as_of(TenantIndex t) const { return tenants_[t].as_of_ms; }
  double decayed(TenantIndex t) const { return tenants_[t].decayed; }
  // Held now (thousandths of a GPU) of one model, and in all.
  int64_t used(TenantIndex t, uint8_t model_bit) const { return tenants_[t].gpu[model_bit]; }
  const TenantUseDelta& held(TenantIndex t) const { return tenants_[t].held; }

  // Whether t may take `asked` more thousandths of a GPU of the model, given what this pass
  // already placed: nullopt, or a kQuota reason (asked, what it may still take, nominal).
  std::optional<Reason> Admit(TenantIndex t, uint8_t model_bit, int64_t asked, const TenantPassUse* pass) const;
  // The most t could ever hold of the models in `mask` at once, whatever others use (nullopt:
  // unlimited): a job above it never runs under this quota.
  std::optional<int64_t> MaxEver(TenantIndex t, uint64_t model_mask) const;
  // The full story of a quota wait, with every number: "quota: llm uses 60 of 64 H100 and asks
  // 8; cohort research can lend 0 (vision uses 32 of its 32)".
  std::string DescribeQuota(TenantIndex t, uint8_t model_bit, int64_t asked, const Fleet& fleet) const;
  // Every tenant known (configured, or with jobs), by name; ranks under fair share.
  std::vector<TenantRow> Rows(const Fleet& fleet) const;

  // What t adds to its cohort's room for a model: the part of its quota it leaves others
  // (free), less what it borrows itself. The cohort's room is the sum over its members.
  int64_t Contribution(TenantIndex t, uint8_t m, const TenantPassUse* pass) const;
  int32_t cohort(TenantIndex t) const { return tenants_[t].cohort; }
  // t's nominal quota of the model (thousandths of a GPU), what it uses and what it borrows,
  // with this pass's placements.
  int64_t Nominal(TenantIndex t, uint8_t m) const { return tenants_[t].limits[m].nominal; }
  int64_t Used(TenantIndex t, uint8_t m, const TenantPassUse* pass) const;
  int64_t Borrowed(TenantIndex s, uint8_t m, const TenantPassUse* pass) const;

 private:
  struct Limits {
    int64_t nominal = 0;  // milli
    int64_t borrow = -1;  // milli; -1 none
    int64_t lend = -1;    // milli; -1 none
  };
  struct Entry {
    TenantConfig config;
    bool limited = false;
    int32_t cohort = -1;
    std::array<Limits, 64> limits{};
    std::array<int64_t, 64> gpu{};
    TenantUseDelta held;
    double decayed = 0;
    int64_t as_of_ms = -1;
  };
  int64_t Free(TenantIndex s, uint8_t m, const TenantPassUse* pass) const;
  // What the cohort can lend t in all (with what t borrows now): the others' free parts less
  // what the others borrow.
  int64_t CohortRoom(TenantIndex t, uint8_t m, const TenantPassUse* pass) const;
  void Advance(Entry& e, int64_t now_ms) const;

  std::vector<Entry> tenants_;
  std::unordered_map<std::string, TenantIndex> by_name_;
  std::vector<std::vector<TenantIndex>> cohorts_;  // members, by name
  std::vector<std::array<int64_t, 64>> cohort_room_;  // sum of the members' Contribution, kept by Charge
  std::vector<std::string> cohort_names_;
  int limited_ = 0;
  int64_t weight_total_ = 1;
  int64_t half_life_ms_ = 7LL * 24 * 3'600'000;  // Slurm's PriorityDecayHalfLife default
};

}  // namespace gp
