#include "sched/provision.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <set>
#include <tuple>

#include "core/models.h"
#include "core/units.h"

namespace gp {

std::string_view ScopeName(Scope s) {
  switch (s) {
    case Scope::kOffer: return "offer";
    case Scope::kSite: return "site";
    case Scope::kRegion: return "region";
    case Scope::kProvider: return "provider";
  }
  return "?";
}

namespace {

// The name a scope of an offer goes by.
std::string ScopeWhat(const Fleet& fleet, const Offer& o, Scope scope) {
  switch (scope) {
    case Scope::kOffer: return o.name;
    case Scope::kSite: return fleet.site(o.site).name;
    case Scope::kRegion: return fleet.site(o.site).region.empty() ? fleet.site(o.site).name : fleet.site(o.site).region;
    case Scope::kProvider: return fleet.provider(o.provider).name;
  }
  return {};
}

}  // namespace

void Blocklist::Block(const Fleet& fleet, size_t offer, Scope scope, Millis until) {
  const std::string what = ScopeWhat(fleet, fleet.offers[offer], scope);
  for (Entry& e : entries_) {
    if (e.scope == scope && e.what == what) {
      e.until = std::max(e.until, until);
      return;
    }
  }
  entries_.push_back(Entry{.scope = scope, .what = what, .until = until});
}

bool Blocklist::Blocked(const Fleet& fleet, size_t offer, Millis now) const {
  for (const Entry& e : entries_) {
    if (e.until > now && e.what == ScopeWhat(fleet, fleet.offers[offer], e.scope)) return true;
  }
  return false;
}

std::vector<Blocklist::Entry> Blocklist::Active(Millis now) const {
  std::vector<Entry> out;
  for (const Entry& e : entries_) {
    if (e.until > now) out.push_back(e);
  }
  return out;
}

std::vector<int> ProvisionPlan::CountByOffer(size_t offers) const {
  std::vector<int> out(offers, 0);
  for (const NewNode& n : create) ++out[n.offer];
  return out;
}

namespace {

// Why offer `o` cannot take one task of `d`, by the shapes alone.
enum class Misfit : uint8_t { kFits, kModel, kGpus, kGpuMemory, kCpu, kMemory, kPrice, kSpot, kNotBuyable, kUnavailable, kBlocked };
Misfit ShapeMisfit(const Offer& o, const CapacityDemand& d) {
  if (!d.models.empty() && std::find(d.models.begin(), d.models.end(), o.model) == d.models.end()) return Misfit::kModel;
  if (o.gpus < d.gpus_per_task) return Misfit::kGpus;
  if (o.gpu_memory < d.min_gpu_memory) return Misfit::kGpuMemory;
  if (o.cpu < d.cpu_per_task) return Misfit::kCpu;
  if (o.memory < d.memory_per_task) return Misfit::kMemory;
  if (d.max_price_per_gpu_hour && o.price_per_gpu_hour() > *d.max_price_per_gpu_hour) return Misfit::kPrice;
  if (o.tier == PriceTier::kSpot && !d.spot_ok) return Misfit::kSpot;
  return Misfit::kFits;
}

// A node of the plan: booting already, or opened by this plan (new_index into plan.create).
struct Hypo {
  size_t offer = 0;
  int free_gpus = 0;
  MilliCpu free_cpu{0};
  MiB free_memory{0};
  int new_index = -1;  // -1: booting before this plan
};


class Planner {
 public:
  Planner(const Fleet& fleet, const ProvisionInput& in) : fleet_(fleet), in_(in) {
    const size_t n = fleet.offers.size();
    by_price_.resize(n);
    std::iota(by_price_.begin(), by_price_.end(), size_t{0});
    // Cheapest per GPU-hour first; then the cheaper node, then the name (determinism).
    std::sort(by_price_.begin(), by_price_.end(), [&](size_t a, size_t b) {
      const Offer& x = fleet.offers[a];
      const Offer& y = fleet.offers[b];
      return std::tuple(x.price_per_gpu_hour().value(), x.price_per_hour.value(), x.name) <
             std::tuple(y.price_per_gpu_hour().value(), y.price_per_hour.value(), y.name);
    });
    room_.resize(n);
    blocked_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const Offer& o = fleet.offers[i];
      const OfferHeld h = i < in.held.size() ? in.held[i] : OfferHeld{};
      room_[i] = std::max(0, o.max_nodes - h.running - h.booting);
      blocked_[i] = in.blocked && in.blocked->Blocked(fleet, i, in.now);
      buyable_.push_back(i >= in.buyable.size() || in.buyable[i] != 0);
    }
    provider_gpus_.assign(fleet.providers.size(), 0);
    for (size_t i = 0; i < n && i < in.held.size(); ++i) {
      provider_gpus_[fleet.offers[i].provider.value()] += (in.held[i].running + in.held[i].booting) * fleet.offers[i].gpus;
    }
    spend_ = in.spend_per_hour;
    open_.resize(n);
    for (const BootingNode& b : in.booting) {
      if (b.offer >= n || b.free_gpus <= 0) continue;
      open_[b.offer].push_back(nodes_.size());
      nodes_.push_back(Hypo{.offer = b.offer, .free_gpus = b.free_gpus, .free_cpu = b.free_cpu, .free_memory = b.free_memory});
    }
  }

  // The cheapest offer that takes one of the job's tasks, if any.
  std::optional<size_t> Cheapest(const CapacityDemand& d) {
    const Feasible& f = FeasibleFor(d);
    if (f.offers.empty()) return std::nullopt;
    return f.offers.front();
  }

  ProvisionPlan Run() {
    std::vector<size_t> order(in_.demands.size());
    std::iota(order.begin(), order.end(), size_t{0});
    // Largest first (first-fit decreasing): total GPUs, then GPUs a task, then the job's id.
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const CapacityDemand& x = in_.demands[a];
      const CapacityDemand& y = in_.demands[b];
      return std::tuple(-x.total_gpus(), -x.gpus_per_task, x.job.value()) < std::tuple(-y.total_gpus(), -y.gpus_per_task, y.job.value());
    });
    for (size_t i : order) Place(in_.demands[i]);
    return std::move(plan_);
  }

 private:
  Misfit Check(const CapacityDemand& d, const Offer& o, size_t index) const {
    if (const Misfit m = ShapeMisfit(o, d); m != Misfit::kFits) return m;
    if (!buyable_[index]) return Misfit::kNotBuyable;
    if (!o.available) return Misfit::kUnavailable;
    if (blocked_[index]) return Misfit::kBlocked;
    return Misfit::kFits;
  }

  // The offers that can take one of the job's tasks, cheapest first, shared by jobs of one
  // shape; and why none can when the list is empty.
  struct Feasible {
    std::vector<size_t> offers;
    std::string why_none;
  };
  const Feasible& FeasibleFor(const CapacityDemand& d) {
    auto key = std::tuple(d.gpus_per_task, d.models, d.min_gpu_memory.value(), d.cpu_per_task.value(), d.memory_per_task.value(),
                          d.max_price_per_gpu_hour ? d.max_price_per_gpu_hour->value() : -1, d.spot_ok,
                          d.data_site ? static_cast<int64_t>(d.data_site->value()) : -1, d.data_size.value(),
                          d.data_site ? d.expected_run.value() : 0, d.data_site ? d.tasks : 0);
    auto it = shapes_.find(key);
    if (it != shapes_.end()) return it->second;
    Feasible f;
    std::map<Misfit, int> misfits;
    for (size_t i : by_price_) {
      const Misfit m = Check(d, fleet_.offers[i], i);
      if (m == Misfit::kFits) f.offers.push_back(i);
      else ++misfits[m];
    }
    if (f.offers.empty()) f.why_none = WhyNone(d, misfits);
    if (d.data_site && !f.offers.empty()) {
      // What the job would cost at each offer with its data copied there; cheapest first.
      const int64_t run = d.expected_run.value() > 0 ? d.expected_run.value() : 3'600'000;
      std::vector<std::pair<int64_t, size_t>> costed;
      for (size_t i : f.offers) {
        const Offer& o = fleet_.offers[i];
        const TransferEstimate e = EstimateTransfer(d.data_size, fleet_.PathBetween(*d.data_site, o.site), BitsPerSecond{0});
        const Millis held{run + e.time.value() / 1000};
        costed.emplace_back(GpuCost(o.price_per_gpu_hour(), GpuMilli{static_cast<int64_t>(d.total_gpus()) * 1000}, held).value() +
                                e.egress_cost.value(),
                            costed.size());
      }
      std::stable_sort(costed.begin(), costed.end());
      std::vector<size_t> ordered;
      for (const auto& [cost, k] : costed) ordered.push_back(f.offers[k]);
      f.offers = std::move(ordered);
    }
    return shapes_.emplace(std::move(key), std::move(f)).first->second;
  }

  std::string WhyNone(const CapacityDemand& d, const std::map<Misfit, int>& misfits) const {
    if (fleet_.offers.empty()) return "the fleet has no offers";
    // The reason that excludes the most offers, with the job's own terms.
    Misfit worst = misfits.begin()->first;
    for (const auto& [m, n] : misfits) {
      if (n > misfits.at(worst)) worst = m;
    }
    std::string models;
    for (GpuModelId m : d.models) {
      models += (models.empty() ? "" : " or ") + (m.value() < fleet_.models.size() ? fleet_.model(m).name : "unknown");
    }
    switch (worst) {
      case Misfit::kModel: return fmt::format("no offer has {} GPUs", models);
      case Misfit::kGpus: return fmt::format("no offer has {} GPUs a node", d.gpus_per_task);
      case Misfit::kGpuMemory: return fmt::format("no offer has GPUs of {} MiB", d.min_gpu_memory.value());
      case Misfit::kCpu: return fmt::format("no offer has {} CPU cores a node", static_cast<double>(d.cpu_per_task.value()) / 1000);
      case Misfit::kMemory: return fmt::format("no offer has {} MiB of memory a node", d.memory_per_task.value());
      case Misfit::kPrice:
        return fmt::format("no offer costs at most {} a GPU-hour", FormatUsd(*d.max_price_per_gpu_hour));
      case Misfit::kSpot: return "only spot offers fit, and the job does not allow spot";
      case Misfit::kNotBuyable: return "the offers that fit are not the pool's to buy (their provider has no provisioner)";
      case Misfit::kUnavailable: return "the offers that fit have no capacity now";
      case Misfit::kBlocked: return "the offers that fit are blocked after capacity or quota errors";
      case Misfit::kFits: break;
    }
    return "no offer fits";
  }

  bool TakesTask(const Hypo& h, const CapacityDemand& d) const {
    return h.free_gpus >= d.gpus_per_task && h.free_cpu >= d.cpu_per_task && h.free_memory >= d.memory_per_task;
  }
  void Take(Hypo& h, const CapacityDemand& d) {
    h.free_gpus -= d.gpus_per_task;
    h.free_cpu = h.free_cpu - d.cpu_per_task;
    h.free_memory = h.free_memory - d.memory_per_task;
  }

  // Why a new node of `offer` cannot be opened now ("" when it can).
  std::string Limit(size_t offer) const {
    const Offer& o = fleet_.offers[offer];
    if (room_[offer] <= 0) return fmt::format("offer {}: at its maximum of {} nodes", o.name, o.max_nodes);
    const Provider& p = fleet_.provider(o.provider);
    if (p.max_gpus > 0 && provider_gpus_[o.provider.value()] + o.gpus > p.max_gpus) {
      return fmt::format("provider {}: its quota of {} GPUs is reached", p.name, p.max_gpus);
    }
    const MicroUsd cap = fleet_.autoscale.max_per_hour;
    if (cap.value() > 0 && spend_.value() + o.price_per_hour.value() > cap.value()) {
      return fmt::format("the spending cap of {} an hour is reached", FormatUsd(cap));
    }
    return {};
  }
  size_t Open(size_t offer) {
    const Offer& o = fleet_.offers[offer];
    --room_[offer];
    provider_gpus_[o.provider.value()] += o.gpus;
    spend_ = MicroUsd{spend_.value() + o.price_per_hour.value()};
    plan_.added_per_hour = MicroUsd{plan_.added_per_hour.value() + o.price_per_hour.value()};
    open_[offer].push_back(nodes_.size());
    nodes_.push_back(Hypo{.offer = offer, .free_gpus = o.gpus, .free_cpu = o.cpu, .free_memory = o.memory,
                          .new_index = static_cast<int>(plan_.create.size())});
    plan_.create.push_back(ProvisionPlan::NewNode{.offer = offer});
    return nodes_.size() - 1;
  }

  // One task onto the plan's nodes at `site` (any site when unset): an open node of a
  // feasible offer first (cheapest offer first, oldest node first), else a new node of the
  // cheapest feasible offer with room. Returns the node, or nullopt with `why`.
  std::optional<size_t> PlaceTask(const CapacityDemand& d, const Feasible& f, std::optional<SiteId> site, std::string& why) {
    for (size_t offer : f.offers) {
      if (site && fleet_.offers[offer].site != *site) continue;
      std::vector<size_t>& open = open_[offer];
      // Full nodes leave the list as they are met, so it holds nodes with room.
      std::erase_if(open, [&](size_t n) { return nodes_[n].free_gpus == 0; });
      for (size_t n : open) {
        if (TakesTask(nodes_[n], d)) return n;
      }
    }
    for (size_t offer : f.offers) {
      if (site && fleet_.offers[offer].site != *site) continue;
      const std::string limit = Limit(offer);
      if (limit.empty()) return Open(offer);
      if (why.empty()) why = limit;
    }
    if (why.empty()) why = "no offer fits at that site";
    return std::nullopt;
  }

  // What the plan holds, to undo a gang's tentative placement at a site that could not take it.
  struct Mark {
    size_t nodes;
    size_t creates;
    std::vector<Hypo> touched;  // the open nodes as they were (indexes below `nodes`)
    std::vector<size_t> touched_at;
    std::vector<int> room;
    std::vector<int> provider_gpus;
    MicroUsd spend;
    MicroUsd added;
  };
  Mark Save() const {
    return Mark{.nodes = nodes_.size(), .creates = plan_.create.size(), .touched = {}, .touched_at = {}, .room = room_,
                .provider_gpus = provider_gpus_, .spend = spend_, .added = plan_.added_per_hour};
  }
  void Restore(Mark& m) {
    for (size_t i = m.touched.size(); i-- > 0;) {
      const size_t at = m.touched_at[i];
      nodes_[at] = m.touched[i];
      // A node the attempt filled left its offer's list of open nodes: back in its place.
      std::vector<size_t>& open = open_[nodes_[at].offer];
      auto pos = std::lower_bound(open.begin(), open.end(), at);
      if (pos == open.end() || *pos != at) open.insert(pos, at);
    }
    for (size_t n = m.nodes; n < nodes_.size(); ++n) {
      std::erase(open_[nodes_[n].offer], n);
    }
    nodes_.resize(m.nodes);
    plan_.create.resize(m.creates);
    room_ = std::move(m.room);
    provider_gpus_ = std::move(m.provider_gpus);
    spend_ = m.spend;
    plan_.added_per_hour = m.added;
  }

  // All of the job's tasks at one site (or anywhere for one task); commits on success.
  bool TryAt(const CapacityDemand& d, const Feasible& f, std::optional<SiteId> site, std::string& why,
             std::vector<size_t>& used, Mark* mark) {
    used.clear();
    for (int t = 0; t < d.tasks; ++t) {
      auto n = PlaceTask(d, f, site, why);
      if (!n) return false;
      if (mark && *n < mark->nodes) {
        mark->touched.push_back(nodes_[*n]);
        mark->touched_at.push_back(*n);
      }
      Take(nodes_[*n], d);
      used.push_back(*n);
    }
    return true;
  }

  void Record(const CapacityDemand& d, const std::vector<size_t>& used) {
    bool booting_only = true;
    for (size_t n : used) {
      const int k = nodes_[n].new_index;
      if (k < 0) continue;
      booting_only = false;
      auto& jobs = plan_.create[static_cast<size_t>(k)].jobs;
      if (jobs.empty() || jobs.back() != d.job) jobs.push_back(d.job);
    }
    if (booting_only) plan_.on_booting.push_back(d.job);
  }

  void Place(const CapacityDemand& d) {
    if (d.tasks <= 0 || d.gpus_per_task <= 0) return;  // asks no GPU: not capacity's concern
    const Feasible& f = FeasibleFor(d);
    if (f.offers.empty()) {
      plan_.unmet.emplace_back(d.job, f.why_none);
      return;
    }
    std::string why;
    std::vector<size_t> used;
    if (d.tasks == 1) {
      if (TryAt(d, f, std::nullopt, why, used, nullptr)) Record(d, used);
      else plan_.unmet.emplace_back(d.job, why);
      return;
    }
    // A gang: every site with a feasible offer, tried in turn; the one that adds least to the
    // hourly cost wins (ties: the site met first, whose offer is cheapest).
    std::vector<SiteId> sites;
    for (size_t offer : f.offers) {
      const SiteId s = fleet_.offers[offer].site;
      if (std::find(sites.begin(), sites.end(), s) == sites.end()) sites.push_back(s);
    }
    std::optional<SiteId> best;
    int64_t best_cost = 0;
    for (SiteId s : sites) {
      Mark m = Save();
      const int64_t before = plan_.added_per_hour.value();
      std::string site_why;
      const bool ok = TryAt(d, f, s, site_why, used, &m);
      const int64_t cost = plan_.added_per_hour.value() - before;
      Restore(m);
      if (ok && (!best || cost < best_cost)) {
        best = s;
        best_cost = cost;
      }
      if (!ok && why.empty()) why = site_why;
    }
    if (!best) {
      plan_.unmet.emplace_back(d.job, fmt::format("a gang of {} tasks fits no one site: {}", d.tasks, why));
      return;
    }
    std::string ignored;
    TryAt(d, f, *best, ignored, used, nullptr);
    Record(d, used);
  }

  const Fleet& fleet_;
  const ProvisionInput& in_;
  std::vector<size_t> by_price_;
  std::vector<int> room_;
  std::vector<bool> blocked_;
  std::vector<bool> buyable_;
  std::vector<int> provider_gpus_;
  MicroUsd spend_{0};
  std::vector<Hypo> nodes_;
  std::vector<std::vector<size_t>> open_;  // per offer: its nodes in this plan that may have room
  std::map<std::tuple<int, std::vector<GpuModelId>, int64_t, int64_t, int64_t, int64_t, bool, int64_t, int64_t, int64_t, int>, Feasible>
      shapes_;
  ProvisionPlan plan_;
};

}  // namespace

ProvisionPlan PlanCapacity(const Fleet& fleet, const ProvisionInput& in) { return Planner(fleet, in).Run(); }

Millis BilledTime(const Offer& offer, Millis age) {
  const int64_t inc = std::max<int64_t>(1, offer.billing_increment.value());
  const int64_t a = std::max<int64_t>(0, age.value());
  const int64_t periods = (a + inc - 1) / inc;
  return Millis{std::max(offer.min_billed.value(), std::max<int64_t>(1, periods) * inc)};
}

MicroUsd BilledCost(const Offer& offer, Millis age) {
  // Per hour, pro rata to the millisecond, split so that no product overflows (a monthly
  // price over years).
  constexpr int64_t kHour = 3'600'000;
  const int64_t price = offer.price_per_hour.value();
  const int64_t ms = BilledTime(offer, age).value();
  return MicroUsd{(price / kHour) * ms + (price % kHour) * ms / kHour};
}

bool OfferCanTake(const Offer& o, const CapacityDemand& d) { return ShapeMisfit(o, d) == Misfit::kFits; }

std::vector<uint8_t> OffersWanted(const Fleet& fleet, std::span<const CapacityDemand> demands) {
  std::vector<uint8_t> wanted(fleet.offers.size(), 0);
  std::set<std::tuple<int, std::vector<GpuModelId>, int64_t, int64_t, int64_t, int64_t, bool>> seen;
  for (const CapacityDemand& d : demands) {
    if (!seen.emplace(d.gpus_per_task, d.models, d.min_gpu_memory.value(), d.cpu_per_task.value(), d.memory_per_task.value(),
                      d.max_price_per_gpu_hour ? d.max_price_per_gpu_hour->value() : -1, d.spot_ok)
             .second) {
      continue;  // a shape already looked at
    }
    for (size_t o = 0; o < fleet.offers.size(); ++o) if (OfferCanTake(fleet.offers[o], d)) wanted[o] = 1;
  }
  return wanted;
}

std::optional<CapacityDemand> CapacityDemandOf(const Fleet& fleet, const JobSpec& s) {
  if (s.gpus_per_task <= 0) return std::nullopt;
  CapacityDemand d{.job = s.id, .tasks = s.tasks, .gpus_per_task = s.gpus_per_task, .min_gpu_memory = s.min_gpu_memory,
                   .cpu_per_task = s.cpu_per_task, .memory_per_task = s.memory_per_task,
                   .max_price_per_gpu_hour = s.max_price_per_gpu_hour};
  for (const std::string& m : s.gpu_models) {
    if (auto id = fleet.FindModel(m)) d.models.push_back(*id);
  }
  if (!s.gpu_models.empty() && d.models.empty()) return std::nullopt;  // a model no offer names
  if (s.data) {
    d.data_site = fleet.FindSite(s.data->site);
    d.data_size = s.data->size;
    d.expected_run = s.estimated_duration.value_or(Millis{0});
  }
  return d;
}

std::optional<MicroUsd> CheapestPerGpuHour(const Fleet& fleet, const CapacityDemand& d) {
  const ProvisionInput none;
  Planner p(fleet, none);
  auto o = p.Cheapest(d);
  if (!o) return std::nullopt;
  return fleet.offers[*o].price_per_gpu_hour();
}

ReleasePlan PlanRelease(const Fleet& fleet, std::span<const AcquiredNode> nodes, Millis idle_after, Millis now, bool billing_aware) {
  ReleasePlan plan;
  // Nodes held per offer (busy or idle): the floor `min_nodes` counts them all.
  std::vector<int> held(fleet.offers.size(), 0);
  for (const AcquiredNode& n : nodes) {
    if (n.offer < held.size()) ++held[n.offer];
  }
  std::vector<size_t> idle;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].idle_since && nodes[i].offer < fleet.offers.size()) idle.push_back(i);
  }
  // Idle longest first, then the oldest node, then its position.
  std::sort(idle.begin(), idle.end(), [&](size_t a, size_t b) {
    return std::tuple(nodes[a].idle_since->value(), nodes[a].created.value(), a) <
           std::tuple(nodes[b].idle_since->value(), nodes[b].created.value(), b);
  });
  for (size_t i : idle) {
    const AcquiredNode& n = nodes[i];
    const Offer& o = fleet.offers[n.offer];
    const Millis idle_for{now.value() - n.idle_since->value()};
    if (idle_for < idle_after) {
      plan.kept.push_back({i, fmt::format("idle for {} of {}", FormatMillis(idle_for), FormatMillis(idle_after)),
                           Millis{n.idle_since->value() + idle_after.value()}});
      continue;
    }
    if (held[n.offer] <= o.min_nodes) {
      plan.kept.push_back({i, fmt::format("keeps offer {} at its minimum of {} nodes", o.name, o.min_nodes), Millis{0}});
      continue;
    }
    const Millis age{now.value() - n.created.value()};
    const int64_t billed_until = n.created.value() + BilledTime(o, age).value();
    const int64_t margin = std::clamp<int64_t>(o.billing_increment.value() / 10, 1'000, 300'000);
    if (billing_aware && billed_until - now.value() > margin) {
      plan.kept.push_back({i,
                           fmt::format("billed for {} more; released in the last {} of it", FormatMillis(Millis{billed_until - now.value()}),
                                       FormatMillis(Millis{margin})),
                           Millis{billed_until - margin}});
      continue;
    }
    --held[n.offer];
    plan.release.push_back(i);
  }
  return plan;
}

}  // namespace gp
