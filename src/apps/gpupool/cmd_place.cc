// `gpupool place`: one request on a fleet snapshot, through the same Schedule() as the server.
#include <fmt/format.h>

#include <bit>

#include "adapters/fleet_loader.h"
#include "apps/gpupool/commands.h"
#include "core/units.h"
#include "sched/schedule.h"

namespace gp::app {

void AddSchedulingFlags(CLI::App* cmd, SchedulingFlags& flags) {
  cmd->add_option("--preemption", flags.preemption,
                  "off (default); priority: a waiting job stops running ones that stand below it (lower priority, or a "
                  "lower queue under las, as Tiresias), the fewest needed, whole gangs; reclaim: a tenant within its "
                  "quota takes back what others of its cohort borrow; on: both");
  cmd->add_option("--backfill", flags.backfill,
                  "off (default); easy: the first job that cannot start gets a reservation (when the running jobs' time "
                  "limits, else estimated durations, free enough GPUs), and jobs behind it start only if they end before "
                  "it or use none of its GPUs; conservative (64 reservations) or a number. `explain` shows a reservation");
}

std::optional<std::string> ApplySchedulingFlags(const SchedulingFlags& flags, Policy& policy) {
  auto preemption = ParsePreemption(flags.preemption);
  if (!preemption) return "--preemption: " + preemption.error().message();
  auto backfill = ParseBackfill(flags.backfill);
  if (!backfill) return "--backfill: " + backfill.error().message();
  policy.preemption = *preemption;
  policy.backfill = *backfill;
  return std::nullopt;
}
namespace {

struct PlaceArgs {
  std::string fleet;
  int gpus = 1;
  int tasks = 1;
  std::vector<std::string> models;
  std::string policy = "balanced";
  double cpu_cores = 0;
  std::string memory;
  std::string data;
  double max_price = -1;
  std::string min_gpu_memory;
  bool explain = false;
  uint64_t seed = 1;
};

std::string GpuList(uint16_t mask) {
  std::string s;
  for (int i = 0; i < 16; ++i) {
    if (mask >> i & 1) s += (s.empty() ? "" : ",") + std::to_string(i);
  }
  return s;
}

std::string Verdict(const std::optional<Reason>& r, const Fleet& fleet, const PendingJob& job) {
  return r ? fmt::format("no: {}", DescribeReason(*r, fleet, job)) : "fits";
}

int RunPlace(const PlaceArgs& a) {
  auto fleet = LoadFleet(a.fleet);
  if (!fleet) {
    fmt::print(stderr, "gpupool place: {}\n", fleet.error().message());
    return 1;
  }
  JobSpec spec{.id = JobId{1}, .name = "place", .tasks = a.tasks, .gpus_per_task = a.gpus, .gpu_models = a.models,
               .cpu_per_task = MilliCpu{static_cast<int64_t>(a.cpu_cores * 1000)}};
  auto fail = [](const std::string& m) {
    fmt::print(stderr, "gpupool place: {}\n", m);
    return 1;
  };
  if (!a.memory.empty()) {
    auto m = ParseMiB(a.memory);
    if (!m) return fail("--memory: " + m.error().message());
    spec.memory_per_task = *m;
  }
  if (!a.min_gpu_memory.empty()) {
    auto m = ParseMiB(a.min_gpu_memory);
    if (!m) return fail("--min-gpu-memory: " + m.error().message());
    spec.min_gpu_memory = *m;
  }
  if (a.max_price >= 0) spec.max_price_per_gpu_hour = UsdToMicro(a.max_price);
  if (!a.data.empty()) {
    const size_t colon = a.data.find(':');
    if (colon == std::string::npos) return fail("--data: expected SITE:SIZE, e.g. dc-east:100GB");
    auto size = ParseBytes(a.data.substr(colon + 1));
    if (!size) return fail("--data: " + size.error().message());
    spec.data = DataSet{.site = a.data.substr(0, colon), .size = *size};
  }
  auto job = CompileJob(spec, *fleet);
  if (!job) return fail(job.error().message());
  auto policy = BuiltinRegistry().MakePolicy(a.policy);
  if (!policy) return fail("--policy: " + policy.error().message());

  const SchedState snap(*fleet);
  fmt::print("policy {} on {} ({} nodes, {} GPUs)\n", policy->name, a.fleet, fleet->nodes.size(), fleet->TotalGpus());
  if (a.explain) {
    SplitMix64 explain_rng(a.seed);
    const auto evals = EvaluateNodes(snap, *job, *policy, explain_rng);
    fmt::print("{:<16} {:<10} {:>8}  {}\n", "node", "verdict", "score", "terms");
    for (const NodeEvaluation& e : evals) {
      std::string terms;
      for (const ScoreTerm& t : e.terms) terms += fmt::format("{}={:.3f} ", t.name, t.value);
      fmt::print("{:<16} {:<10} {:>8.3f}  {}\n", fleet->node(e.node).name, e.rejected ? "rejected" : "fits",
                 e.rejected ? 0.0 : e.total, terms);
      if (e.rejected) fmt::print("{:<16} {}\n", "", Verdict(e.rejected, *fleet, *job));
    }
  }
  SplitMix64 rng(a.seed);
  const std::vector<PendingJob> pending{*job};
  const Plan plan = Schedule(snap, pending, *policy, rng);
  if (plan.placements.empty()) {
    const Decision& d = plan.decisions.front();
    fmt::print("not placed ({}):\n", OutcomeName(d.outcome));
    for (const ReasonCount& rc : d.reasons()) {
      fmt::print("  {} node(s): {}\n", rc.nodes, DescribeReason(rc.example, *fleet, *job));
    }
    if (const auto unknown = UnknownModels(spec, *fleet); !unknown.empty()) {
      fmt::print("  the fleet has no GPU model {}\n", fmt::join(unknown, ", "));
    }
    return 3;
  }
  const Placement& p = plan.placements.front();
  fmt::print("chose {}:\n", fleet->node(p.tasks.front().node).name);
  for (size_t t = 0; t < p.tasks.size(); ++t) {
    const TaskAllocation& ta = p.tasks[t];
    fmt::print("  task {} -> {} GPUs [{}]\n", t, fleet->node(ta.node).name, GpuList(ta.gpu_mask));
  }
  return 0;
}

}  // namespace

void AddPlaceCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<PlaceArgs>();
  CLI::App* cmd = app.add_subcommand("place", "Place one request on a fleet snapshot and show the choice");
  cmd->add_option("--fleet", args->fleet, "fleet file (TOML or node-list CSV) or shorthand such as 256x8xV100")->required();
  cmd->add_option("--gpus", args->gpus, "GPUs per task")->check(CLI::Range(0, kMaxGpusPerNode));
  cmd->add_option("--tasks", args->tasks, "tasks (a gang: all or none)")->check(CLI::Range(1, kMaxTasksPerJob));
  cmd->add_option("--gpu-model", args->models, "allowed GPU model (repeatable)")->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--policy", args->policy, "policy name, or QUEUE/POLICY (see `gpupool policies`)");
  cmd->add_option("--cpu", args->cpu_cores, "CPU cores per task")->check(CLI::Range(0.0, 1e5));
  cmd->add_option("--memory", args->memory, "memory per task, e.g. 64GiB");
  cmd->add_option("--min-gpu-memory", args->min_gpu_memory, "minimum memory per GPU, e.g. 40GiB");
  cmd->add_option("--data", args->data, "data set as SITE:SIZE, e.g. dc-east:100GB");
  cmd->add_option("--max-price", args->max_price, "price ceiling in USD per GPU-hour");
  cmd->add_flag("--explain", args->explain, "print every node's verdict and score terms");
  cmd->add_option("--seed", args->seed, "seed for randomised scorers");
  cmd->callback([args, exit_code] { *exit_code = RunPlace(*args); });
}

void AddPoliciesCommand(CLI::App& app, int* exit_code) {
  CLI::App* cmd = app.add_subcommand("policies", "List the scheduling policies and the plugins they are made of");
  cmd->callback([exit_code] {
    const Registry& r = BuiltinRegistry();
    fmt::print("policies (use --policy NAME, or QUEUE/NAME to change the queue order):\n");
    for (const auto& e : r.Policies()) fmt::print("  {:<14} {}\n", e.name, e.description);
    fmt::print("queue orders:\n");
    for (const auto& e : r.QueueOrders()) fmt::print("  {:<14} {}\n", e.name, e.description);
    fmt::print("share orders (between tenants, in the queue's place: SHARE/POLICY):\n");
    for (const auto& e : r.ShareOrders()) fmt::print("  {:<14} {}\n", e.name, e.description);
    fmt::print("admission stages (every policy runs all of them, after the filters):\n");
    for (const auto& e : r.Admissions()) fmt::print("  {:<14} {}\n", e.name, e.description);
    fmt::print("filters (every policy runs all of them):\n");
    for (const auto& e : r.Filters()) fmt::print("  {:<14} {}\n", e.name, e.description);
    fmt::print("scorers:\n");
    for (const auto& e : r.Scorers()) fmt::print("  {:<14} {}\n", e.name, e.description);
    *exit_code = 0;
  });
}

}  // namespace gp::app
