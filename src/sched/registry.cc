#include "sched/registry.h"

#include <charconv>

#include <fmt/format.h>

namespace gp {
namespace {

template <typename Map>
std::string KnownNames(const std::vector<std::string>& order, const Map&) {
  std::string s;
  for (const std::string& n : order) s += (s.empty() ? "" : ", ") + n;
  return s;
}

}  // namespace

void Registry::AddQueueOrder(std::string name, std::string description, Factory<QueueOrder> f) {
  queue_order_.push_back(name);
  queues_[std::move(name)] = {std::move(description), std::move(f)};
}
void Registry::AddQueueOrder(std::string name, std::string description, Factory<QueueOrder> f, ArgsFactory with_args) {
  queue_args_[name] = std::move(with_args);
  AddQueueOrder(std::move(name), std::move(description), std::move(f));
}
void Registry::AddFilter(std::string name, std::string description, Factory<Filter> f) {
  filter_order_.push_back(name);
  filters_[std::move(name)] = {std::move(description), std::move(f)};
}
void Registry::AddScorer(std::string name, std::string description, Factory<Scorer> f) {
  scorer_order_.push_back(name);
  scorers_[std::move(name)] = {std::move(description), std::move(f)};
}
void Registry::AddAdmission(std::string name, std::string description, Factory<AdmissionCheck> f) {
  admission_order_.push_back(name);
  admissions_[std::move(name)] = {std::move(description), std::move(f)};
}
void Registry::AddShareOrder(std::string name, std::string description, Factory<ShareOrder> f) {
  share_order_.push_back(name);
  shares_[std::move(name)] = {std::move(description), std::move(f)};
}

Result<std::unique_ptr<QueueOrder>> Registry::MakeQueueOrder(const std::string& name) const {
  if (auto colon = name.find(':'); colon != std::string::npos) {
    auto a = queue_args_.find(name.substr(0, colon));
    if (a == queue_args_.end()) {
      return InvalidArgument(fmt::format("queue order '{}' takes no arguments (those that do: las)", name.substr(0, colon)));
    }
    if (colon + 1 == name.size()) {
      return a->second("-");  // "las:" with nothing after the colon: refused by the order, naming its form
    }
    return a->second(std::string_view(name).substr(colon + 1));
  }
  auto q = queues_.find(name);
  if (q == queues_.end()) {
    return InvalidArgument(fmt::format("unknown queue order '{}'; known: {}", name, KnownNames(queue_order_, queues_)));
  }
  return q->second.make();
}

Result<PreemptionRules> ParsePreemption(std::string_view text) {
  PreemptionRules r;
  if (text == "off" || text == "none") return r;
  if (text == "on") return PreemptionRules{.priority = true, .reclaim = true};
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string_view w = text.substr(start, comma - start);
    if (w == "priority") {
      r.priority = true;
    } else if (w == "reclaim") {
      r.reclaim = true;
    } else {
      return InvalidArgument(fmt::format("preemption: '{}': expected off, on, priority, reclaim or priority,reclaim",
                                         text.substr(0, 80)));
    }
    start = comma + 1;
  }
  return r;
}

Result<BackfillRules> ParseBackfill(std::string_view text) {
  if (text == "off" || text == "0") return BackfillRules{};
  if (text == "easy") return BackfillRules{.depth = 1};
  if (text == "conservative") return BackfillRules{.depth = 64};
  int depth = 0;
  const auto r = std::from_chars(text.data(), text.data() + text.size(), depth);
  if (r.ec != std::errc() || r.ptr != text.data() + text.size() || depth < 0 || depth > 1000) {
    return InvalidArgument(fmt::format("backfill: '{}': expected off, easy (one reservation), conservative (64) or a "
                                       "number of reservations 0..1000", text.substr(0, 80)));
  }
  return BackfillRules{.depth = depth};
}

std::string PreemptionName(const PreemptionRules& r) {
  if (r.priority && r.reclaim) return "priority,reclaim";
  return r.priority ? "priority" : r.reclaim ? "reclaim" : "off";
}

void Registry::AddPolicy(PolicyRecipe recipe) { policies_.push_back(std::move(recipe)); }

Result<Policy> Registry::MakePolicy(const PolicyRecipe& recipe) const {
  Policy p{.name = recipe.name, .description = recipe.description, .queue_name = recipe.queue,
           .order = recipe.order, .candidate_limit = recipe.candidate_limit, .preemption = recipe.preemption,
           .backfill = recipe.backfill};
  if (auto sh = shares_.find(recipe.queue); sh != shares_.end()) {
    // Between tenants by share; within each, FIFO unless the tenant names its own order.
    p.share_name = recipe.queue;
    p.share = sh->second.make();
    p.queue = queues_.at("fifo").make();
  } else {
    const std::string base = recipe.queue.substr(0, recipe.queue.find(':'));
    if (!queues_.count(base)) {
      return InvalidArgument(fmt::format("unknown queue order '{}'; known: {}, {}", recipe.queue,
                                         KnownNames(queue_order_, queues_), KnownNames(share_order_, shares_)));
    }
    auto q = MakeQueueOrder(recipe.queue);
    if (!q) return tl::unexpected(q.error());
    p.queue = std::move(*q);
  }
  p.admission_names = recipe.admissions.empty() ? admission_order_ : recipe.admissions;
  for (const std::string& name : p.admission_names) {
    auto a = admissions_.find(name);
    if (a == admissions_.end()) {
      return InvalidArgument(fmt::format("unknown admission stage '{}'; known: {}", name, KnownNames(admission_order_, admissions_)));
    }
    p.admissions.push_back(a->second.make());
  }
  p.filter_names = recipe.filters.empty() ? filter_order_ : recipe.filters;
  for (const std::string& name : p.filter_names) {
    auto f = filters_.find(name);
    if (f == filters_.end()) {
      return InvalidArgument(fmt::format("unknown filter '{}'; known: {}", name, KnownNames(filter_order_, filters_)));
    }
    p.filters.push_back(f->second.make());
  }
  for (const auto& [name, weight] : recipe.scorers) {
    auto s = scorers_.find(name);
    if (s == scorers_.end()) {
      return InvalidArgument(fmt::format("unknown scorer '{}'; known: {}", name, KnownNames(scorer_order_, scorers_)));
    }
    if (!(weight >= 0)) return InvalidArgument(fmt::format("scorer '{}': weight must be >= 0", name));
    p.scorers.push_back({name, weight, s->second.make()});
  }
  if (recipe.candidate_limit < 0) return InvalidArgument("candidate_limit must be >= 0");
  return p;
}

PolicyRecipe Registry::RecipeOf(const Policy& p) {
  PolicyRecipe r{.name = p.name, .description = p.description, .queue = p.share ? p.share_name : p.queue_name,
                 .admissions = p.admission_names, .filters = p.filter_names,
                 .order = p.order, .candidate_limit = p.candidate_limit, .preemption = p.preemption,
                 .backfill = p.backfill};
  for (const WeightedScorer& s : p.scorers) r.scorers.emplace_back(s.name, s.weight);
  return r;
}

Result<Policy> Registry::MakePolicy(const std::string& name) const {
  std::string queue;
  std::string placement = name;
  if (auto slash = name.find('/'); slash != std::string::npos) {
    queue = name.substr(0, slash);
    placement = name.substr(slash + 1);
  }
  for (const PolicyRecipe& r : policies_) {
    if (r.name != placement) continue;
    PolicyRecipe copy = r;
    if (!queue.empty()) {
      copy.queue = queue;
      copy.name = name;
    }
    return MakePolicy(copy);
  }
  // A scorer's name alone: FIFO (or the queue given) with that scorer ("best-fit", "las/spread").
  if (auto s = scorers_.find(placement); s != scorers_.end()) {
    return MakePolicy(PolicyRecipe{.name = name,
                                   .description = fmt::format("{} queue; the {} scorer alone", queue.empty() ? "fifo" : queue, placement),
                                   .queue = queue.empty() ? "fifo" : queue,
                                   .scorers = {{placement, 1.0}}});
  }
  std::string known;
  for (const PolicyRecipe& r : policies_) known += (known.empty() ? "" : ", ") + r.name;
  return InvalidArgument(fmt::format("unknown policy '{}'; known: {}, or a scorer's name (QUEUE/POLICY to change the "
                                     "queue, queues: {})",
                                     placement, known, KnownNames(queue_order_, queues_)));
}

namespace {
template <typename M>
std::vector<Registry::Entry> Entries(const std::vector<std::string>& order, const M& m) {
  std::vector<Registry::Entry> out;
  for (const std::string& n : order) out.push_back({n, m.at(n).description});
  return out;
}
}  // namespace

std::vector<Registry::Entry> Registry::QueueOrders() const { return Entries(queue_order_, queues_); }
std::vector<Registry::Entry> Registry::Filters() const { return Entries(filter_order_, filters_); }
std::vector<Registry::Entry> Registry::Scorers() const { return Entries(scorer_order_, scorers_); }
std::vector<Registry::Entry> Registry::Admissions() const { return Entries(admission_order_, admissions_); }
std::vector<Registry::Entry> Registry::ShareOrders() const { return Entries(share_order_, shares_); }
std::vector<Registry::Entry> Registry::Policies() const {
  std::vector<Entry> out;
  for (const PolicyRecipe& r : policies_) out.push_back({r.name, r.description});
  return out;
}

const Registry& BuiltinRegistry() {
  static const Registry* kRegistry = [] {
    auto* r = new Registry();
    RegisterQueueOrders(*r);
    RegisterFilters(*r);
    RegisterScorers(*r);
    RegisterTenantPlugins(*r);
    RegisterPolicies(*r);
    return r;
  }();
  return *kRegistry;
}

}  // namespace gp
