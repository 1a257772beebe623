#include "sim/capacity.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "core/models.h"
#include "core/units.h"

namespace gp {

double DemandPercentile(const Trace& trace, double p) {
  std::vector<std::pair<int64_t, int64_t>> steps;  // (time, +/- GPUs)
  for (const TraceJob& j : trace.jobs) {
    if (j.gpus <= 0 || j.duration.value() <= 0) continue;
    steps.emplace_back(j.submit.value(), j.gpus);
    steps.emplace_back(j.submit.value() + j.duration.value(), -j.gpus);
  }
  if (steps.empty()) return 0;
  std::sort(steps.begin(), steps.end());
  std::vector<std::pair<int64_t, int64_t>> held;  // (level, time at it)
  int64_t level = 0;
  int64_t total = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    level += steps[i].second;
    if (i + 1 < steps.size() && steps[i + 1].first > steps[i].first) {
      const int64_t dt = steps[i + 1].first - steps[i].first;
      held.emplace_back(level, dt);
      total += dt;
    }
  }
  if (total == 0) return 0;
  std::sort(held.begin(), held.end());
  const double want = std::clamp(p, 0.0, 1.0) * static_cast<double>(total);
  double acc = 0;
  for (const auto& [lvl, dt] : held) {
    acc += static_cast<double>(dt);
    if (acc >= want) return static_cast<double>(lvl);
  }
  return static_cast<double>(held.back().first);
}

std::optional<size_t> StaticOffer(const Fleet& fleet, const std::string& name, int gpus) {
  std::optional<size_t> best;
  for (size_t i = 0; i < fleet.offers.size(); ++i) {
    const Offer& o = fleet.offers[i];
    if (!name.empty()) {
      if (o.name == name) return i;
      continue;
    }
    if (o.tier == PriceTier::kSpot || o.gpus <= 0) continue;
    if (best && static_cast<int64_t>(o.max_nodes) * o.gpus < gpus && static_cast<int64_t>(fleet.offers[*best].max_nodes) * fleet.offers[*best].gpus >= gpus) continue;
    const bool best_short = best && static_cast<int64_t>(fleet.offers[*best].max_nodes) * fleet.offers[*best].gpus < gpus;
    if (!best || (best_short && static_cast<int64_t>(o.max_nodes) * o.gpus >= gpus)) {
      best = i;
      continue;
    }
    const Offer& b = fleet.offers[*best];
    if (std::tuple(o.price_per_gpu_hour().value(), -o.gpus, o.name) < std::tuple(b.price_per_gpu_hour().value(), -b.gpus, b.name)) best = i;
  }
  return best;
}

Fleet StaticFleet(const Fleet& fleet, size_t offer, int nodes) {
  Fleet f = fleet;
  for (int k = 0; k < nodes; ++k) f.nodes.push_back(f.NodeOfOffer(offer, fmt::format("{}-static-{}", fleet.offers[offer].name, k + 1)));
  f.offers.clear();
  return f;
}

namespace {

// The fleet's own nodes over `span`: their price, and their GPU-hours.
std::pair<MicroUsd, double> OwnNodes(const Fleet& fleet, size_t count, Millis span) {
  MicroUsd cost{0};
  double gpu_hours = 0;
  for (size_t n = 0; n < count && n < fleet.nodes.size(); ++n) {
    const Node& node = fleet.nodes[n];
    cost += GpuCost(fleet.PricePerGpuHour(node), GpuMilli{static_cast<int64_t>(node.gpus.size()) * 1000}, span);
    gpu_hours += static_cast<double>(node.gpus.size()) * static_cast<double>(span.value()) / 3'600'000.0;
  }
  return {cost, gpu_hours};
}

Millis Span(const SimReport& r) { return Millis{static_cast<int64_t>(std::llround(r.makespan_s * 1000))}; }

}  // namespace

CapacityRow AutoscaledRow(const SimReport& r, const Fleet& fleet) {
  CapacityRow row{.name = "autoscaled", .avg_queue_s = r.avg_queue_s, .finished = r.finished, .unschedulable = r.unschedulable};
  const auto [own_cost, own_hours] = OwnNodes(fleet, fleet.nodes.size(), Span(r));
  (void)own_cost;  // already in the report's spent
  if (r.autoscale) {
    row.dollars = r.autoscale->spent;
    row.gpu_hours_held = r.autoscale->gpu_hours_bought + own_hours;
    row.name += " (" + r.autoscale->release + " release)";
  }
  row.idle_gpu_hours = std::max(0.0, row.gpu_hours_held - r.gpu_hours_used);
  return row;
}

CapacityRow StaticRow(const std::string& name, const SimReport& r, const Fleet& base, size_t offer, int nodes) {
  CapacityRow row{.name = name, .avg_queue_s = r.avg_queue_s, .finished = r.finished, .unschedulable = r.unschedulable};
  const Millis span = Span(r);
  const auto [own_cost, own_hours] = OwnNodes(base, base.nodes.size(), span);
  const Offer& o = base.offers[offer];
  const double hours = static_cast<double>(span.value()) / 3'600'000.0;
  row.dollars = own_cost + MicroUsd{static_cast<int64_t>(std::llround(static_cast<double>(o.price_per_hour.value()) * nodes * hours))};
  row.gpu_hours_held = own_hours + static_cast<double>(o.gpus) * nodes * hours;
  row.idle_gpu_hours = std::max(0.0, row.gpu_hours_held - r.gpu_hours_used);
  return row;
}

CapacityRow LowerBoundRow(const SimReport& r) {
  CapacityRow row{.name = "lower bound", .finished = r.finished, .unschedulable = r.unschedulable};
  if (r.autoscale) row.dollars = r.autoscale->lower_bound;
  row.gpu_hours_held = r.gpu_hours_used;
  return row;
}

std::string FormatCapacityTable(const std::vector<CapacityRow>& rows) {
  std::string out = fmt::format("  {:<40} {:>12} {:>16} {:>16} {:>14} {:>9}\n", "", "dollars", "GPU-hours paid", "idle GPU-hours",
                                "avg queueing", "finished");
  for (const CapacityRow& r : rows) {
    out += fmt::format("  {:<40} {:>12} {:>16.1f} {:>16.1f} {:>12.1f} s {:>9}\n", r.name, FormatUsd(r.dollars), r.gpu_hours_held,
                       r.idle_gpu_hours, r.avg_queue_s, r.finished);
  }
  return out;
}

std::string FormatCapacityCsv(const std::vector<CapacityRow>& rows) {
  std::string out = "fleet,dollars,gpu_hours_paid,idle_gpu_hours,avg_queue_s,finished,unschedulable\n";
  for (const CapacityRow& r : rows) {
    out += fmt::format("\"{}\",{:.2f},{:.3f},{:.3f},{:.3f},{},{}\n", r.name, static_cast<double>(r.dollars.value()) / kMicroUsdPerUsd,
                       r.gpu_hours_held, r.idle_gpu_hours, r.avg_queue_s, r.finished, r.unschedulable);
  }
  return out;
}

}  // namespace gp
