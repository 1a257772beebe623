// `gpupool sim`: replay a cluster trace through the scheduling core on a virtual clock.
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "adapters/fleet_loader.h"
#include "apps/gpupool/commands.h"
#include "core/units.h"
#include "sim/capacity.h"
#include "sim/engine.h"
#include "sim/plots.h"
#include "wire/codec.h"

namespace gp::app {
namespace {

struct SimArgs {
  std::string fleet;
  std::string trace;
  std::string policy = "fifo";
  std::string trace_format;
  std::string throughputs;
  uint64_t seed = 1;
  std::string format = "table";
  std::string out;
  bool failures = false;
  std::string node_mtbf, node_repair, spot_mtbf, gpu_xid_mtbf;
  std::string recovery = "restart";
  std::string checkpoint_interval = "30m";
  std::string events;
  bool autoscale = false;
  std::string idle_after = "60s";
  std::string release = "billing-aware";
  double stockout = 0;
  double boot_jitter = 0.25;
  std::string block_for = "3m";
  std::string static_offer;
  std::vector<double> static_percentiles = {0.5, 0.95};
  std::string quotas = "fleet";
  std::string half_life = "7d";
  SchedulingFlags scheduling;
};

void DrawProgress(size_t done, size_t total) {
  const int width = 40;
  const double f = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
  const int fill = static_cast<int>(f * width);
  fmt::print(stderr, "\r[{}{}] {:3.0f}% {}/{} jobs", std::string(static_cast<size_t>(fill), '#'),
             std::string(static_cast<size_t>(width - fill), ' '), f * 100, done, total);
  if (done == total) fmt::print(stderr, "\n");
}

bool WriteFile(const std::filesystem::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
  return static_cast<bool>(out);
}

// A policy's name as a directory name ("las/spread" -> "las-spread").
std::string DirName(std::string name) {
  for (char& c : name) {
    if (c == '/' || c == ' ') c = '-';
  }
  return name;
}

std::vector<std::string> SplitPolicies(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = list.find(',', start);
    std::string one = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!one.empty()) out.push_back(one);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// report.json, report.csv, jobs.csv and the three plots of one run, in `dir`.
bool WriteRun(const std::filesystem::path& dir, const SimReport& r, const Fleet& fleet) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::vector<const SimReport*> one = {&r};
  if (!r.tenants.empty() && !WriteFile(dir / "tenants.svg", SvgPlot(TenantSharePlot(r)))) return false;
  return !ec && WriteFile(dir / "report.json", FormatReportJson(r)) && WriteFile(dir / "report.csv", FormatReportCsv(r)) &&
         WriteFile(dir / "jobs.csv", FormatJobsCsv(r, fleet)) && WriteFile(dir / "queue.svg", SvgPlot(QueuePlot(one))) &&
         WriteFile(dir / "utilisation.svg", SvgPlot(UtilisationPlot(one))) && WriteFile(dir / "jct.svg", SvgPlot(JctPlot(one)));
}

int RunSim(const SimArgs& a) {
  auto fail = [](const std::string& m) {
    fmt::print(stderr, "gpupool sim: {}\n", m);
    return 1;
  };
  auto fleet = LoadFleet(a.fleet);
  if (!fleet) return fail(fleet.error().message());
  const std::vector<std::string> names = SplitPolicies(a.policy);
  if (names.empty()) return fail("--policy: expected a policy name, or several separated by commas");
  std::vector<Policy> policies;

  for (const std::string& name : names) {
    auto policy = BuiltinRegistry().MakePolicy(name);
    if (!policy) return fail("--policy: " + policy.error().message());
    if (auto e = ApplySchedulingFlags(a.scheduling, *policy)) return fail(*e);
    policies.push_back(std::move(*policy));
  }
  auto trace = ReadTrace(a.trace, a.trace_format, TraceOptions{.throughputs = a.throughputs});
  if (!trace) return fail(trace.error().message());
  SimOptions options{.seed = a.seed, .tenants = fleet->tenants, .equal_quotas = a.quotas == "equal"};
  if (auto h = ParseDuration(a.half_life); h && h->value() > 0) {
    options.half_life = *h;
  } else {
    return fail("--half-life: " + (h ? std::string("must be positive") : h.error().message()));
  }
  if (a.failures) {
    FailureModel m = fleet->failures;
    auto set = [&](const std::string& text, Millis& field, const char* flag) -> bool {
      if (text.empty()) return true;
      auto d = ParseDuration(text);
      if (!d) {
        fmt::print(stderr, "gpupool sim: {}: {}\n", flag, d.error().message());
        return false;
      }
      field = *d;
      return true;
    };
    if (!set(a.node_mtbf, m.node_mtbf, "--node-mtbf") || !set(a.node_repair, m.node_repair, "--node-repair") ||
        !set(a.spot_mtbf, m.spot_mtbf, "--spot-mtbf") || !set(a.gpu_xid_mtbf, m.gpu_xid_mtbf, "--gpu-xid-mtbf") || !set(a.checkpoint_interval, options.checkpoint_interval, "--checkpoint-interval")) {
      return 1;
    }
    if (m.node_mtbf.value() <= 0 && m.spot_mtbf.value() <= 0 && m.gpu_xid_mtbf.value() <= 0) {
      return fail("--failures: no failure rate: give --node-mtbf (e.g. 720h), --gpu-xid-mtbf, --spot-mtbf, or a [failures] "
                  "section in the fleet file");
    }
    options.failures = m;
  }
  options.recovery = a.recovery == "checkpoint" ? Recovery::kCheckpoint : Recovery::kRestart;
  if (auto d = ParseDuration(a.checkpoint_interval)) options.checkpoint_interval = *d;
  else return fail("--checkpoint-interval: " + d.error().message());
  if (a.autoscale) {
    if (fleet->offers.empty()) return fail("--autoscale: the fleet file has no [[offer]] to buy nodes from");
    if (policies.size() > 1) return fail("--autoscale: give one policy (the run is compared with static fleets)");
    if (a.stockout < 0 || a.stockout >= 1) return fail("--stockout: a probability from 0 up to (not including) 1");
    if (a.boot_jitter < 0 || a.boot_jitter >= 1) return fail("--boot-jitter: from 0 up to (not including) 1");
    SimAutoscale as{.billing_aware = a.release == "billing-aware", .stockout = a.stockout, .boot_jitter = a.boot_jitter};
    for (auto [text, field, flag] : {std::tuple{&a.idle_after, &as.idle_after, "--idle-after"}, std::tuple{&a.block_for, &as.block_for, "--block-for"},
                                     std::tuple{&a.spot_mtbf, &as.spot_mtbf, "--spot-mtbf"}}) {
      if (text->empty()) continue;
      auto d = ParseDuration(*text);
      if (!d) return fail(fmt::format("{}: {}", flag, d.error().message()));
      *field = *d;
    }
    options.autoscale = as;
  }
  if (isatty(STDERR_FILENO)) options.progress = DrawProgress;
  // The simulated pool's event log, as the live pool's GET /v1/events streams it (NDJSON
  // CloudEvents), its times counted from the trace's start at 1970-01-01T00:00:00Z.
  std::ofstream events;
  uint64_t seq = 0;
  if (!a.events.empty()) {
    if (policies.size() > 1) return fail("--events: give one policy (the log is of one run)");
    events.open(a.events, std::ios::binary | std::ios::trunc);
    if (!events) return fail(fmt::format("--events: cannot write to {}", a.events));
    options.on_event = [&](Millis at, const std::string& type, const std::string& subject, const std::string& data) {
      events << EventToCloudEvent(EventRecord{.seq = ++seq, .time_ms = at.value(), .type = type, .subject = subject, .data = data},
                                  "gpupool-sim")
             << '\n';
    };
  }
  std::vector<SimReport> reports;
  for (const Policy& policy : policies) {
    auto report = RunSimulation(*fleet, *trace, policy, options);
    if (!report) return fail(report.error().message());
    reports.push_back(std::move(*report));
  }
  if (events.is_open()) {
    events.close();
    if (!events) return fail(fmt::format("--events: writing {} failed", a.events));
  }
  // Autoscaled: compared with static fleets sized for percentiles of the trace's demand, and
  // with the lower bound.
  std::vector<CapacityRow> rows;
  std::vector<std::pair<std::string, double>> static_gpus;
  if (a.autoscale) {
    const SimReport& scaled = reports.front();
    rows.push_back(AutoscaledRow(scaled, *fleet));
    SimOptions fixed = options;
    fixed.autoscale.reset();
    fixed.on_event = nullptr;
    for (double p : a.static_percentiles) {
      const double gpus = DemandPercentile(*trace, p);
      auto offer = StaticOffer(*fleet, a.static_offer, static_cast<int>(std::ceil(gpus)));
      if (!offer) return fail(a.static_offer.empty() ? "--static-offer: every offer is spot; name one for the static fleets"
                                                     : fmt::format("--static-offer: no offer named '{}'", a.static_offer));
      const Offer& o = fleet->offers[*offer];
      const int nodes = std::max(1, static_cast<int>(std::ceil(gpus / std::max(1, o.gpus))));
      const Fleet f = StaticFleet(*fleet, *offer, nodes);
      auto r = RunSimulation(f, *trace, policies.front(), fixed);
      if (!r) return fail(r.error().message());
      const std::string name = fmt::format("static p{:.0f} ({} x {})", p * 100, nodes, o.name);
      rows.push_back(StaticRow(name, *r, *fleet, *offer, nodes));
      static_gpus.emplace_back(fmt::format("static p{:.0f}: {} nodes", p * 100, nodes), static_cast<double>(nodes * o.gpus));
    }
    rows.push_back(LowerBoundRow(scaled));
  }
  for (const SimReport& r : reports) {
    if (a.format == "json") {
      fmt::print("{}", FormatReportJson(r));
    } else if (a.format == "csv") {
      const std::string csv = FormatReportCsv(r);
      fmt::print("{}", &r == &reports.front() ? csv : csv.substr(csv.find('\n') + 1));  // one header
    } else {
      fmt::print("trace {} ({}), fleet {} ({} nodes, {} GPUs)\n", a.trace, trace->format, a.fleet, fleet->nodes.size(),
                 fleet->TotalGpus());
      fmt::print("{}", FormatReportTable(r));
      if (!rows.empty()) fmt::print("\ncompared (same trace, policy {}):\n{}", r.policy, FormatCapacityTable(rows));
    }
  }
  if (!a.out.empty()) {
    const std::filesystem::path dir(a.out);
    bool ok = true;
    if (reports.size() == 1) {
      ok = WriteRun(dir, reports.front(), *fleet);
      if (a.autoscale) {
        ok = ok && WriteFile(dir / "nodes.svg", SvgPlot(NodesPlot(reports.front()))) &&
             WriteFile(dir / "capacity.svg", SvgPlot(CapacityPlot(reports.front(), static_gpus))) &&
             WriteFile(dir / "compared.csv", FormatCapacityCsv(rows));
      }
    } else {
      // One directory per policy, and the comparison: the plots with a series per policy.
      std::vector<const SimReport*> all;
      for (const SimReport& r : reports) {
        ok = ok && WriteRun(dir / DirName(r.policy), r, *fleet);
        all.push_back(&r);
      }
      ok = ok && WriteFile(dir / "queue.svg", SvgPlot(QueuePlot(all))) &&
           WriteFile(dir / "utilisation.svg", SvgPlot(UtilisationPlot(all))) && WriteFile(dir / "jct.svg", SvgPlot(JctPlot(all))) &&
           WriteFile(dir / "index.html", ComparisonHtml(all, a.trace, a.fleet));
    }
    if (!ok) return fail(fmt::format("--out: cannot write to {}", a.out));
    if (a.format == "table") {
      fmt::print("wrote {}{}\n", a.out,
                 reports.size() > 1 ? " (index.html compares the policies)"
                 : a.autoscale      ? " (queue.svg, utilisation.svg, jct.svg, nodes.svg, capacity.svg, compared.csv)"
                                    : " (queue.svg, utilisation.svg, jct.svg)");
    }
  }
  return 0;
}

}  // namespace

void AddSimCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<SimArgs>();
  CLI::App* cmd = app.add_subcommand("sim", "Replay a cluster trace through the scheduler (discrete-event)");
  cmd->add_option("--fleet", args->fleet, "fleet file (TOML or node-list CSV) or shorthand such as 256x8xV100")->required();
  cmd->add_option("--trace", args->trace, "trace file (philly.csv, Tiresias CSV, Gavel/Shockwave .trace, Alibaba pod CSV, or a gpupool event log)")->required();
  cmd->add_option("--policy", args->policy,
                  "policy name, or QUEUE/POLICY (see `gpupool policies`); several, comma-separated, are compared");
  cmd->add_option("--trace-format", args->trace_format, "philly, tiresias, gavel, shockwave, alibaba or events (default: detect)");
  cmd->add_option("--throughputs", args->throughputs, "Gavel-schema throughput table (default: found beside the trace)");
  cmd->add_option("--seed", args->seed, "random seed (same seed, same output)");
  cmd->add_option("--format", args->format, "report format")->check(CLI::IsMember({"table", "json", "csv"}));
  cmd->add_option("--out", args->out,
                  "directory for report.json, report.csv, jobs.csv and SVG plots (queue length, GPU utilisation, JCT); "
                  "with several policies, one directory each and index.html comparing them");
  cmd->add_flag("--failures", args->failures, "simulate node failures and spot reclaims (rates from the fleet file or below)");
  cmd->add_option("--node-mtbf", args->node_mtbf, "mean time between failures of one node, e.g. 720h");
  cmd->add_option("--node-repair", args->node_repair, "how long a failed node stays out (default 1h)");
  cmd->add_option("--spot-mtbf", args->spot_mtbf, "mean time between reclaims of one spot node");
  cmd->add_option("--gpu-xid-mtbf", args->gpu_xid_mtbf, "mean time between fatal XIDs of one GPU (that GPU alone goes out)");
  cmd->add_option("--recovery", args->recovery, "what a job hit by a failure or a spot reclaim keeps")->check(CLI::IsMember({"restart", "checkpoint"}));
  cmd->add_option("--quotas", args->quotas,
                  "tenants' quotas: fleet (the fleet file's [[tenant]] tables; none: no quota) or equal (the trace's other "
                  "tenants get equal shares of each GPU model, in one cohort that lends freely)")
      ->check(CLI::IsMember({"fleet", "equal"}));
  AddSchedulingFlags(cmd, args->scheduling);
  cmd->add_option("--half-life", args->half_life, "fair share: the half-life of decayed usage (default 7d, as Slurm's)");
  cmd->add_option("--events", args->events, "write the simulated event log here (NDJSON CloudEvents, as GET /v1/events)");
  cmd->add_option("--checkpoint-interval", args->checkpoint_interval, "run time between checkpoints (recovery checkpoint)");
  cmd->add_flag("--autoscale", args->autoscale,
                "buy nodes from the fleet's [[offer]]s when jobs wait and release them when idle, as the live pool does; "
                "the report adds dollars, GPU-hours bought and used, and compares static fleets and a lower bound");
  cmd->add_option("--idle-after", args->idle_after, "autoscale: how long a node is idle before it may be released");
  cmd->add_option("--release", args->release, "autoscale: release idle nodes billing-aware (in the last tenth of their billed "
                                              "increment) or at once")
      ->check(CLI::IsMember({"billing-aware", "immediate"}));
  cmd->add_option("--stockout", args->stockout, "autoscale: chance that a create is refused for capacity (seeded)");
  cmd->add_option("--boot-jitter", args->boot_jitter, "autoscale: a node boots in its offer's boot time x U(1-j, 1+j)");
  cmd->add_option("--block-for", args->block_for, "autoscale: how long an offer is not asked after a refusal or a spot reclaim");
  cmd->add_option("--static-offer", args->static_offer,
                  "autoscale: the offer the compared static fleets are made of (default: the cheapest that is not spot)");
  cmd->add_option("--static-percentiles", args->static_percentiles,
                  "autoscale: size the compared static fleets for these percentiles of demand (default 0.5 0.95)")
      ->delimiter(',');
  cmd->callback([args, exit_code] { *exit_code = RunSim(*args); });
}

}  // namespace gp::app
