#include "sched/tenants.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <numbers>

namespace gp {
namespace {

std::string Gpus(int64_t milli) { return fmt::format("{:g}", static_cast<double>(milli) / 1000); }

}  // namespace

TenantUseDelta UseOf(const TaskAllocation& a) {
  return TenantUseDelta{.gpu_milli = std::popcount(a.gpu_mask) * static_cast<int64_t>(a.share.value()), .cpu = a.cpu.value(),
                        .memory = a.memory.value()};
}

void TenantPassUse::Add(const TenantBook& book, TenantIndex t, uint8_t model_bit, const TenantUseDelta& d, int sign) {
  const int32_t c = book.cohort(t);
  const int64_t before = c >= 0 ? book.Contribution(t, model_bit, this) : 0;
  Use& u = by_tenant_[t];
  u.gpu[model_bit] += sign * d.gpu_milli;
  u.total.gpu_milli += sign * d.gpu_milli;
  u.total.cpu += sign * d.cpu;
  u.total.memory += sign * d.memory;
  if (c >= 0) cohort_delta_[static_cast<uint64_t>(c) << 8 | model_bit] += book.Contribution(t, model_bit, this) - before;
}

int64_t TenantPassUse::CohortDelta(int32_t cohort, uint8_t model_bit) const {
  auto it = cohort_delta_.find(static_cast<uint64_t>(cohort) << 8 | model_bit);
  return it == cohort_delta_.end() ? 0 : it->second;
}

int64_t TenantPassUse::Gpu(TenantIndex t, uint8_t model_bit) const {
  auto it = by_tenant_.find(t);
  return it == by_tenant_.end() ? 0 : it->second.gpu[model_bit];
}

TenantUseDelta TenantPassUse::Total(TenantIndex t) const {
  auto it = by_tenant_.find(t);
  return it == by_tenant_.end() ? TenantUseDelta{} : it->second.total;
}

TenantBook::TenantBook() {
  tenants_.push_back(Entry{});
  by_name_[""] = 0;
}

TenantIndex TenantBook::Intern(std::string_view name) {
  auto it = by_name_.find(std::string(name));
  if (it != by_name_.end()) return it->second;
  const auto t = static_cast<TenantIndex>(tenants_.size());
  Entry e;
  e.config.name = std::string(name);
  tenants_.push_back(std::move(e));
  by_name_[std::string(name)] = t;
  return t;
}

std::optional<TenantIndex> TenantBook::Find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  if (it == by_name_.end()) return std::nullopt;
  return it->second;
}

Status TenantBook::Configure(const std::vector<TenantConfig>& configs, const Fleet& fleet) {
  std::map<std::string, const TenantConfig*> named;
  for (const TenantConfig& c : configs) {
    if (Status s = ValidateTenantConfig(c); !s.ok()) return s;
    if (!named.emplace(c.name, &c).second) return Status(StatusCode::kInvalidArgument, fmt::format("tenant {}: named twice", c.name));
  }
  // A cohort is a flat group: a name that is a tenant's cannot also be a cohort's.
  for (const TenantConfig& c : configs) {
    if (!c.cohort.empty() && named.count(c.cohort)) {
      return Status(StatusCode::kInvalidArgument, fmt::format("tenant {}: cohort '{}' is a tenant's name; cohorts are groups of tenants, "
                                         "not tenants (no nesting, so no cycle)",
                                         c.name, c.cohort));
    }
  }
  for (const auto& [name, c] : named) Intern(name);
  for (size_t t = 1; t < tenants_.size(); ++t) {
    Entry& e = tenants_[t];
    auto it = named.find(e.config.name);
    e.config = it == named.end() ? TenantConfig{.name = e.config.name} : *it->second;
  }
  Resolve(fleet);
  return Status();
}

void TenantBook::Resolve(const Fleet& fleet) {
  limited_ = 0;
  weight_total_ = 0;
  cohorts_.clear();
  cohort_names_.clear();
  std::map<std::string, int32_t> cohort_of;
  for (size_t t = 0; t < tenants_.size(); ++t) {
    Entry& e = tenants_[t];
    e.limited = !e.config.quota.empty() || !e.config.cohort.empty();
    limited_ += e.limited ? 1 : 0;
    weight_total_ += e.config.weight;
    e.limits.fill(Limits{});
    for (const auto& [model, q] : e.config.quota) {
      for (size_t m = 0; m < fleet.models.size() && m < 63; ++m) {
        if (fleet.models[m].name != model) continue;
        e.limits[m] = Limits{.nominal = q.nominal * 1000, .borrow = q.borrow_limit ? *q.borrow_limit * 1000 : -1,
                             .lend = q.lend_limit ? *q.lend_limit * 1000 : -1};
      }
    }
    e.cohort = -1;
    if (!e.config.cohort.empty()) {
      auto [it, fresh] = cohort_of.try_emplace(e.config.cohort, static_cast<int32_t>(cohorts_.size()));
      if (fresh) {
        cohorts_.emplace_back();
        cohort_names_.push_back(e.config.cohort);
      }
      e.cohort = it->second;
      cohorts_[static_cast<size_t>(e.cohort)].push_back(static_cast<TenantIndex>(t));
    }
  }
  cohort_room_.assign(cohorts_.size(), {});
  for (size_t c = 0; c < cohorts_.size(); ++c) {
    auto& members = cohorts_[c];
    std::sort(members.begin(), members.end(), [&](TenantIndex a, TenantIndex b) { return name(a) < name(b); });
    for (TenantIndex s : members) {
      for (uint8_t m = 0; m < 64; ++m) cohort_room_[c][m] += Contribution(s, m, nullptr);
    }
  }
}

void TenantBook::Advance(Entry& e, int64_t now_ms) const {
  if (e.as_of_ms < 0) {
    e.as_of_ms = now_ms;
    return;
  }
  if (now_ms <= e.as_of_ms) return;
  const double h = static_cast<double>(half_life_ms_);
  const double d = std::exp2(-static_cast<double>(now_ms - e.as_of_ms) / h);
  e.decayed = e.decayed * d + static_cast<double>(e.held.gpu_milli) / 1000 * h / std::numbers::ln2 * (1 - d);
  e.as_of_ms = now_ms;
}

void TenantBook::Charge(TenantIndex t, uint8_t model_bit, const TenantUseDelta& d, int sign, std::optional<Millis> now) {
  Entry& e = tenants_[t];
  if (now) Advance(e, now->value());
  const int64_t before = e.cohort >= 0 ? Contribution(t, model_bit, nullptr) : 0;
  e.gpu[model_bit] += sign * d.gpu_milli;
  if (e.cohort >= 0) cohort_room_[static_cast<size_t>(e.cohort)][model_bit] += Contribution(t, model_bit, nullptr) - before;
  e.held.gpu_milli += sign * d.gpu_milli;
  e.held.cpu += sign * d.cpu;
  e.held.memory += sign * d.memory;
}

void TenantBook::RestoreDecayed(TenantIndex t, double decayed_gpu_ms, Millis as_of) {
  Entry& e = tenants_[t];
  e.decayed = std::max(0.0, decayed_gpu_ms);
  e.as_of_ms = as_of.value();
}

void TenantBook::AdvanceTo(Millis now) {
  for (Entry& e : tenants_) Advance(e, now.value());
}

int64_t TenantBook::Used(TenantIndex t, uint8_t m, const TenantPassUse* pass) const {
  return tenants_[t].gpu[m] + (pass ? pass->Gpu(t, m) : 0);
}

int64_t TenantBook::Free(TenantIndex s, uint8_t m, const TenantPassUse* pass) const {
  const Limits& l = tenants_[s].limits[m];
  const int64_t lendable = l.lend < 0 ? l.nominal : std::min(l.lend, l.nominal);
  return std::max<int64_t>(0, std::min(lendable, l.nominal - Used(s, m, pass)));
}

int64_t TenantBook::Borrowed(TenantIndex s, uint8_t m, const TenantPassUse* pass) const {
  return std::max<int64_t>(0, Used(s, m, pass) - tenants_[s].limits[m].nominal);
}

int64_t TenantBook::Contribution(TenantIndex t, uint8_t m, const TenantPassUse* pass) const {
  return Free(t, m, pass) - Borrowed(t, m, pass);
}

int64_t TenantBook::CohortRoom(TenantIndex t, uint8_t m, const TenantPassUse* pass) const {
  const int32_t c = tenants_[t].cohort;
  if (c < 0) return 0;
  // O(1): the cohort's sum (kept by Charge), this pass's change to it, less t's own part.
  const int64_t room = cohort_room_[static_cast<size_t>(c)][m] + (pass ? pass->CohortDelta(c, m) : 0) - Contribution(t, m, pass);
  return std::max<int64_t>(0, room);
}

std::optional<Reason> TenantBook::Admit(TenantIndex t, uint8_t model_bit, int64_t asked, const TenantPassUse* pass) const {
  const Entry& e = tenants_[t];
  if (!e.limited || model_bit >= 64 || asked <= 0) return std::nullopt;
  const Limits& l = e.limits[model_bit];
  const int64_t used = Used(t, model_bit, pass);
  const int64_t own = std::max<int64_t>(0, l.nominal - used);
  if (asked <= own) return std::nullopt;
  // Borrowing: within its limit and what the cohort can lend (the part of the nominal it still
  // has counts first).
  // b, its borrowing once admitted, within min(cohort room, borrowing limit).
  const int64_t borrowed = std::max<int64_t>(0, used - l.nominal);
  int64_t most = CohortRoom(t, model_bit, pass);
  if (l.borrow >= 0) most = std::min(most, l.borrow);
  const int64_t may = own + std::max<int64_t>(0, most - borrowed);
  if (asked <= may) return std::nullopt;
  return Reason{.code = ReasonCode::kQuota, .asked = asked, .available = may, .capacity = l.nominal,
                .model = static_cast<int16_t>(model_bit)};
}

std::optional<int64_t> TenantBook::MaxEver(TenantIndex t, uint64_t model_mask) const {
  const Entry& e = tenants_[t];
  if (!e.limited) return std::nullopt;
  int64_t total = 0;
  for (int m = 0; m < 63; ++m) {
    if (!(model_mask >> m & 1)) continue;
    const Limits& l = e.limits[static_cast<size_t>(m)];
    int64_t lend = 0;  // the most the cohort could ever lend: every other member idle
    if (e.cohort >= 0) {
      for (TenantIndex s : cohorts_[static_cast<size_t>(e.cohort)]) {
        if (s == t) continue;
        const Limits& o = tenants_[s].limits[static_cast<size_t>(m)];
        lend += o.lend < 0 ? o.nominal : std::min(o.lend, o.nominal);
      }
    }
    if (l.borrow >= 0) lend = std::min(lend, l.borrow);
    total += l.nominal + lend;
  }
  return total;
}

std::string TenantBook::DescribeQuota(TenantIndex t, uint8_t m, int64_t asked, const Fleet& fleet) const {
  const Entry& e = tenants_[t];
  const std::string model = m < fleet.models.size() ? fleet.models[m].name : std::string("GPU");
  const Limits& l = e.limits[m];
  const int64_t used = Used(t, m, nullptr);
  std::string s = fmt::format("quota: {} uses {} of {} {}", e.config.name, Gpus(used), Gpus(l.nominal), model);
  if (used > l.nominal) s += fmt::format(" ({} borrowed)", Gpus(used - l.nominal));
  s += fmt::format(" and asks {}", Gpus(asked));
  if (e.cohort < 0) return s + "; it is in no cohort, so it cannot borrow";
  if (l.borrow >= 0) {
    const int64_t left = std::max<int64_t>(0, l.borrow - std::max<int64_t>(0, used - l.nominal));
    s += fmt::format("; it may borrow {} more (limit {})", Gpus(left), Gpus(l.borrow));
  }
  s += fmt::format("; cohort {} can lend {}", cohort_names_[static_cast<size_t>(e.cohort)],
                   Gpus(std::max<int64_t>(0, CohortRoom(t, m, nullptr) - std::max<int64_t>(0, used - l.nominal))));
  std::string who;
  for (TenantIndex o : cohorts_[static_cast<size_t>(e.cohort)]) {
    if (o == t) continue;
    const Limits& ol = tenants_[o].limits[m];
    std::string part = fmt::format("{} uses {} of its {}", name(o), Gpus(Used(o, m, nullptr)), Gpus(ol.nominal));
    if (ol.lend >= 0 && ol.lend < ol.nominal) part += fmt::format(", lends at most {}", Gpus(ol.lend));
    who += (who.empty() ? "" : "; ") + part;
  }
  return who.empty() ? s : s + " (" + who + ")";
}

std::vector<TenantRow> TenantBook::Rows(const Fleet& fleet) const {
  std::vector<TenantRow> rows;
  for (size_t t = 1; t < tenants_.size(); ++t) {
    const Entry& e = tenants_[t];
    TenantRow r{.name = e.config.name, .weight = e.config.weight, .cohort = e.config.cohort, .order = e.config.order,
                .limited = e.limited, .gpu_milli = e.held.gpu_milli, .cpu = e.held.cpu, .memory = e.held.memory,
                .decayed_gpu_ms = e.decayed,
                .fair_share = e.decayed / (static_cast<double>(e.config.weight) / static_cast<double>(std::max<int64_t>(1, weight_total_)))};
    for (size_t m = 0; m < fleet.models.size() && m < 63; ++m) {
      const Limits& l = e.limits[m];
      if (l.nominal == 0 && e.gpu[m] == 0 && !e.config.quota.count(fleet.models[m].name)) continue;
      // An unlimited tenant has no quota to borrow beyond (nominal -1: none).
      TenantModelRow mr{.model = fleet.models[m].name, .nominal = e.limited ? l.nominal : -1, .used = e.gpu[m],
                        .borrowed = e.limited ? std::max<int64_t>(0, e.gpu[m] - l.nominal) : 0};
      if (l.borrow >= 0) mr.borrow_limit = l.borrow;
      if (l.lend >= 0) mr.lend_limit = l.lend;
      // Lent: the cohort's borrowing, met from its members' free parts in name order.
      if (e.cohort >= 0 && e.limited) {
        int64_t borrowed = 0;
        const auto& members = cohorts_[static_cast<size_t>(e.cohort)];
        for (TenantIndex s : members) borrowed += Borrowed(s, static_cast<uint8_t>(m), nullptr);
        for (TenantIndex s : members) {
          const int64_t lendable_used = std::min(borrowed, Free(s, static_cast<uint8_t>(m), nullptr));
          if (s == t) mr.lent = lendable_used;
          borrowed -= lendable_used;
        }
      }
      r.models.push_back(std::move(mr));
    }
    rows.push_back(std::move(r));
  }
  std::sort(rows.begin(), rows.end(), [](const TenantRow& a, const TenantRow& b) { return a.name < b.name; });
  std::vector<size_t> by_share(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) by_share[i] = i;
  std::stable_sort(by_share.begin(), by_share.end(), [&](size_t a, size_t b) { return rows[a].fair_share < rows[b].fair_share; });
  for (size_t i = 0; i < by_share.size(); ++i) rows[by_share[i]].rank = static_cast<int>(i) + 1;
  return rows;
}

}  // namespace gp
