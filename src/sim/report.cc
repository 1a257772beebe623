// Report formats for the simulator. Numbers print with fixed precision so output is stable
// byte for byte across runs.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "core/units.h"
#include "sim/engine.h"

namespace gp {
namespace {

double Round(double v, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(v * scale) / scale;
}

}  // namespace

std::string FormatReportTable(const SimReport& r) {
  std::string out;
  auto row = [&](std::string_view k, const std::string& v) { out += fmt::format("  {:<22} {}\n", k, v); };
  out += fmt::format("simulation report (policy {}, seed {})\n", r.policy, r.seed);
  row("jobs", fmt::format("{} ({} finished{}, {} unschedulable{})", r.jobs, r.finished,
                          r.timed_out > 0 ? fmt::format(", {} at their time limit", r.timed_out) : "", r.unschedulable,
                          r.cancelled > 0 ? fmt::format(", {} cancelled by their dependencies", r.cancelled) : ""));
  if (r.preemptions > 0) row("preemptions", fmt::format("{}", r.preemptions));
  row("average JCT", fmt::format("{:.1f} s", r.avg_jct_s));
  row("median JCT", fmt::format("{:.1f} s", r.p50_jct_s));
  row("p99 JCT", fmt::format("{:.1f} s", r.p99_jct_s));
  row("average queueing", fmt::format("{:.1f} s", r.avg_queue_s));
  row("makespan", fmt::format("{:.1f} s ({})", r.makespan_s, FormatMillis(Millis{static_cast<int64_t>(r.makespan_s * 1000)})));
  row("GPU utilisation", fmt::format("{:.2f}%", r.gpu_utilization * 100));
  row("fragmentation", fmt::format("{:.2f}% of free GPU-time while GPU jobs waited", r.fragmentation * 100));
  row("cost", FormatUsd(r.cost));
  row("scheduling passes", fmt::format("{}", r.passes));
  if (!r.recovery.empty()) {
    row("failures", fmt::format("{} node failures/reclaims, {} GPU XIDs, {} hit running jobs (recovery: {})", r.node_failures,
                                r.gpu_failures, r.failures, r.recovery));
    row("lost GPU-hours", fmt::format("{:.1f}", r.lost_gpu_hours));
  }
  if (!r.tenants.empty()) {
    row("fairness", fmt::format("Jain's index {:.3f} (1 is fair) over {} tenants, {} contended windows; largest gap from the "
                                "fair share {:.1f}% of a window's GPU-time",
                                r.fairness.jain, r.tenants.size(), r.fairness.windows, r.fairness.max_deviation * 100));
    out += fmt::format("  {:<12} {:>7} {:>10} {:>12} {:>12} {:>8}\n", "tenant", "jobs", "GPU-hours", "avg JCT", "avg queue", "share");
    for (const TenantResult& t : r.tenants) {
      out += fmt::format("  {:<12} {:>7} {:>10.1f} {:>10.1f} s {:>10.1f} s {:>7.1f}%\n", t.name.empty() ? "-" : t.name, t.jobs,
                         t.gpu_hours, t.avg_jct_s, t.avg_queue_s, t.share * 100);
    }
  }
  if (r.autoscale) {
    const AutoscaleResult& a = *r.autoscale;
    row("autoscaling", fmt::format("{} nodes bought (at most {} at once), {} stockouts, {} spot reclaims; release {}", a.nodes_bought,
                                   a.nodes_peak, a.stockouts, a.reclaims, a.release));
    row("dollars spent", fmt::format("{} (lower bound {})", FormatUsd(a.spent), FormatUsd(a.lower_bound)));
    row("GPU-hours bought", fmt::format("{:.1f} ({:.1f} used by jobs, {:.1f} idle billed)", a.gpu_hours_bought, a.gpu_hours_used,
                                        a.idle_billed_gpu_hours));
  }
  return out;
}

std::string FormatReportJson(const SimReport& r) {
  nlohmann::ordered_json j;
  j["policy"] = r.policy;
  j["seed"] = r.seed;
  j["jobs"] = r.jobs;
  j["finished"] = r.finished;
  j["unschedulable"] = r.unschedulable;
  j["timed_out"] = r.timed_out;
  j["cancelled"] = r.cancelled;
  j["preemptions"] = r.preemptions;
  j["avg_jct_s"] = Round(r.avg_jct_s, 3);
  j["p50_jct_s"] = Round(r.p50_jct_s, 3);
  j["p99_jct_s"] = Round(r.p99_jct_s, 3);
  j["avg_queue_s"] = Round(r.avg_queue_s, 3);
  j["makespan_s"] = Round(r.makespan_s, 3);
  j["gpu_utilization"] = Round(r.gpu_utilization, 6);
  j["fragmentation"] = Round(r.fragmentation, 6);
  j["cost"] = Round(static_cast<double>(r.cost.value()) / kMicroUsdPerUsd, 2);
  j["passes"] = r.passes;
  if (!r.recovery.empty()) {
    j["recovery"] = r.recovery;
    j["node_failures"] = r.node_failures;
    j["gpu_failures"] = r.gpu_failures;
    j["failures"] = r.failures;
    j["lost_gpu_hours"] = Round(r.lost_gpu_hours, 3);
  }
  if (!r.tenants.empty()) {
    j["fairness"] = {{"jain", Round(r.fairness.jain, 6)}, {"max_deviation", Round(r.fairness.max_deviation, 6)},
                     {"windows", r.fairness.windows}};
    nlohmann::ordered_json ts = nlohmann::ordered_json::array();
    for (const TenantResult& t : r.tenants) {
      ts.push_back({{"name", t.name}, {"jobs", t.jobs}, {"finished", t.finished}, {"gpu_hours", Round(t.gpu_hours, 3)},
                    {"avg_jct_s", Round(t.avg_jct_s, 3)}, {"avg_queue_s", Round(t.avg_queue_s, 3)}, {"share", Round(t.share, 6)},
                    {"entitled", Round(t.entitled, 6)}});
    }
    j["tenants"] = ts;
  }
  if (r.autoscale) {
    const AutoscaleResult& a = *r.autoscale;
    j["autoscale"] = {{"release", a.release},
                      {"spent", Round(static_cast<double>(a.spent.value()) / kMicroUsdPerUsd, 2)},
                      {"lower_bound", Round(static_cast<double>(a.lower_bound.value()) / kMicroUsdPerUsd, 2)},
                      {"gpu_hours_bought", Round(a.gpu_hours_bought, 3)},
                      {"gpu_hours_used", Round(a.gpu_hours_used, 3)},
                      {"idle_billed_gpu_hours", Round(a.idle_billed_gpu_hours, 3)},
                      {"nodes_bought", a.nodes_bought},
                      {"nodes_peak", a.nodes_peak},
                      {"stockouts", a.stockouts},
                      {"reclaims", a.reclaims}};
  }
  return j.dump() + "\n";
}

std::string FormatReportCsv(const SimReport& r) {
  return fmt::format(
      "policy,seed,jobs,finished,unschedulable,avg_jct_s,p50_jct_s,p99_jct_s,avg_queue_s,makespan_s,"
      "gpu_utilization,fragmentation,cost\n{},{},{},{},{},{:.3f},{:.3f},{:.3f},{:.3f},{:.3f},{:.6f},{:.6f},{:.2f}\n",
      r.policy, r.seed, r.jobs, r.finished, r.unschedulable, r.avg_jct_s, r.p50_jct_s, r.p99_jct_s, r.avg_queue_s,
      r.makespan_s, r.gpu_utilization, r.fragmentation, static_cast<double>(r.cost.value()) / kMicroUsdPerUsd);
}

std::string FormatJobsCsv(const SimReport& r, const Fleet& fleet) {
  std::string out = "id,name,line,gpus,tasks,outcome,submit_s,start_s,finish_s,jct_s,node,cost\n";
  for (const SimJobResult& j : r.per_job) {
    const bool ran = j.outcome == Outcome::kPlaced;
    out += fmt::format("{},{},{},{},{},{},{:.3f},{},{},{},{},{:.4f}\n", j.id.value(), j.name, j.line, j.gpus, j.tasks,
                       ran ? "finished" : OutcomeName(j.outcome), static_cast<double>(j.submit.value()) / 1000,
                       ran ? fmt::format("{:.3f}", static_cast<double>(j.start.value()) / 1000) : "",
                       ran ? fmt::format("{:.3f}", static_cast<double>(j.finish.value()) / 1000) : "",
                       ran ? fmt::format("{:.3f}", static_cast<double>((j.finish - j.submit).value()) / 1000) : "",
                       !ran ? "" : j.first_node.value() < fleet.nodes.size() ? fleet.node(j.first_node).name
                                 : r.acquired_node_names.at(j.first_node.value() - fleet.nodes.size()),
                       static_cast<double>(j.cost.value()) / kMicroUsdPerUsd);
  }
  return out;
}

}  // namespace gp
