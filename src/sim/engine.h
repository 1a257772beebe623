// The discrete-event simulator: replays a trace through the very Schedule() the server uses,
// on a virtual clock. Events are arrivals and completions; after all events of one instant the
// scheduler runs once, and its plan is applied with Allocate() (which re-checks every node),
// exactly as the live state owner does. Single-threaded; deterministic for (fleet, trace,
// policy, seed).
//
// Trace jobs become JobSpecs here: a job of G GPUs on a fleet whose largest node has M GPUs
// runs as one task if G <= M, else as a gang of T tasks, T the smallest divisor of G with
// G / T <= M (128 GPUs on 8-GPU nodes: 16 x 8; 12: 2 x 6). The estimated duration is the true
// one (an oracle, as in the SJF literature). A job's run time is its trace duration for the
// model it lands on, when the trace gives one per model.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/fleet.h"
#include "sched/registry.h"
#include "sched/schedule.h"
#include "sim/trace.h"

namespace gp {

enum class Recovery : uint8_t {
  kRestart,     // a job hit by a failure starts again from the beginning
  kCheckpoint,  // it resumes from its last checkpoint (every checkpoint_interval of run time)
};

// Acquiring capacity in the simulation (`gpupool sim --autoscale`): the same decisions as the
// live pool's autoscaler (sched/provision.h), on the fleet's offers. Jobs no node can take are
// planned onto new nodes after `batch`; a node is up after its offer's boot time (times a
// seeded factor in [1 - boot_jitter, 1 + boot_jitter]); a create is refused for capacity with
// probability `stockout` (and always for offers a provider's `local.stockout` names), which
// blocks the offer for `block_for`; spot nodes are reclaimed after an exponential time of mean
// `spot_mtbf` (else the provider's `local.spot_mtbf`; 0: never), which blocks the offer too, so
// the replacement comes from the next offer (on-demand when the spot one is blocked). Idle
// nodes go after `idle_after`, billing-aware or at once.
struct SimAutoscale {
  Millis batch{1'000};
  Millis idle_after{60'000};
  bool billing_aware = true;
  Millis block_for{180'000};
  double stockout = 0;
  double boot_jitter = 0.25;
  Millis spot_mtbf{0};
};

struct SimOptions {
  uint64_t seed = 1;
  // Failures: when set, nodes fail (and spot nodes are reclaimed) as the model says, with
  // exponential times between events drawn from a generator seeded by `seed`.
  std::optional<FailureModel> failures;
  Recovery recovery = Recovery::kRestart;
  Millis checkpoint_interval{1'800'000};
  // Failures at given times, in addition to (or instead of) the random ones: for tests.
  std::vector<std::pair<Millis, NodeId>> scripted_failures;
  // Called now and then with (jobs finished or refused, total jobs).
  std::function<void(size_t, size_t)> progress;
  // Called with every event of the simulated pool, as the live pool stores it (type such as
  // "job.placed", subject "job/ID", data: the JSON object of docs/events.md), at simulated time.
  std::function<void(Millis at, const std::string& type, const std::string& subject, const std::string& data)> on_event;
  std::optional<SimAutoscale> autoscale;
  // Fairness between tenants is judged over windows of this length (those in which some
  // tenant waited).
  Millis fairness_window{3'600'000};
  // Tenants' quotas, weights and cohorts (the fleet file's [[tenant]] tables).
  std::vector<TenantConfig> tenants;
  // Every tenant of the trace without a [[tenant]] table gets an equal quota of each GPU model
  // (the model's GPUs / tenants, rounded down), all in one cohort ("pool") that lends freely.
  bool equal_quotas = false;
  // Fair share's half-life for decayed usage.
  Millis half_life{7LL * 24 * 3'600'000};
};

struct SimJobResult {
  JobId id;
  std::string name;
  int line = 0;
  int gpus = 0;
  int tasks = 1;
  Outcome outcome = Outcome::kNotNow;  // kPlaced: ran; kNever: refused
  Millis submit{0};
  Millis start{-1};
  Millis finish{-1};
  NodeId first_node;
  MicroUsd cost{0};
  Millis reserved{-1};  // backfill: the start of its first reservation (-1: it never had one)
  bool cancelled = false;  // ended by a dependency that could no longer be met (never ran)
};

// The cluster between two scheduling instants: from `t` on, `queued` jobs waited and `busy_gpus`
// GPUs were held (fractions count as parts).
struct TimelinePoint {
  Millis t{0};
  int32_t queued = 0;
  double busy_gpus = 0;
};

// Nodes held (booting or up) of each offer from `t` on.
struct OfferNodesPoint {
  Millis t{0};
  std::vector<int32_t> nodes;  // one per offer (Fleet::offers)
};

// What acquiring capacity cost and bought (SimOptions::autoscale).
struct AutoscaleResult {
  std::string release;               // "billing-aware" or "immediate"
  std::vector<std::string> offers;   // names, as `nodes` counts them
  std::vector<int> offer_gpus;       // GPUs a node, per offer
  MicroUsd spent{0};                 // billed for acquired nodes, and the fleet's own nodes over the run
  double gpu_hours_bought = 0;       // billed GPU time of acquired nodes
  double gpu_hours_used = 0;         // GPU time jobs held, on acquired nodes
  double idle_billed_gpu_hours = 0;  // bought - used
  MicroUsd lower_bound{0};           // every GPU-hour jobs ran, at the cheapest feasible offer's price
  int64_t nodes_bought = 0;
  int64_t nodes_peak = 0;
  int64_t stockouts = 0;             // creates refused for capacity
  int64_t reclaims = 0;              // spot nodes taken back
  std::vector<OfferNodesPoint> nodes;
};

// One tenant's part of a run (traces that say whose jobs are whose).
struct TenantResult {
  std::string name;
  int64_t jobs = 0;
  int64_t finished = 0;
  double avg_jct_s = 0;
  double avg_queue_s = 0;
  double gpu_hours = 0;         // what its jobs ran (the trace's GPU time)
  double share = 0;             // of all GPU-hours jobs ran
  double entitled = 0;          // its weighted max-min fair share given what it asked
};

// How fairly GPU-time went round: Jain's index of each tenant's share over its entitlement
// (1: perfectly fair; 1/n: one tenant had it all), and the largest gap between a tenant's
// share and its entitlement. The entitlement is max-min fair (water-filling) over what each
// tenant asked, weighted by the tenants' weights (1 unless configured): a tenant that asked
// for little is entitled to little.
// In a run: judged window by window (SimOptions::fairness_window), over the windows in which
// some tenant waited; Jain's index averaged weighted by GPU-time, the deviation the largest.
struct Fairness {
  double jain = 1;
  double max_deviation = 0;
  int64_t windows = 0;  // windows judged
};

// Each tenant's share of the GPU-time jobs ran in one window.
struct TenantSharePoint {
  Millis t{0};
  std::vector<double> shares;  // one per SimReport::tenants, in its order
};

struct SimReport {
  std::string policy;
  uint64_t seed = 0;
  int64_t jobs = 0;
  int64_t finished = 0;
  int64_t unschedulable = 0;   // refused as "never" (too big for the fleet, unknown model, ...)
  int64_t timed_out = 0;       // stopped at their time limit (counted among the finished)
  int64_t cancelled = 0;       // ended by a dependency that could no longer be met, never run
  int64_t preemptions = 0;     // running jobs stopped to make room (they resumed later)
  double avg_jct_s = 0;        // over finished jobs: finish - submit
  double p50_jct_s = 0;
  double p99_jct_s = 0;
  double avg_queue_s = 0;      // start - submit
  double makespan_s = 0;       // last finish - first submit
  double gpu_utilization = 0;  // busy GPU-time / (GPUs x makespan)
  double fragmentation = 0;    // free GPU-time while a GPU job waited / all free GPU-time
  MicroUsd cost{0};            // sum of price x GPUs x run time
  int64_t passes = 0;          // scheduling passes run
  int64_t failures = 0;        // node failures and spot reclaims that hit at least one job
  int64_t node_failures = 0;   // all node failures and reclaims
  int64_t gpu_failures = 0;    // fatal XIDs (one GPU out at a time)
  double lost_gpu_hours = 0;   // GPU-time thrown away by failures (not kept by a checkpoint)
  std::string recovery;        // "restart" or "checkpoint" when failures were simulated
  std::vector<SimJobResult> per_job;  // in trace order
  int64_t total_gpus = 0;
  std::vector<TimelinePoint> timeline;  // one point per instant whose state differs from the last
  double gpu_hours_used = 0;            // GPU time jobs held (all nodes)
  std::optional<AutoscaleResult> autoscale;
  std::vector<TenantResult> tenants;  // by name; empty when the trace has one tenant or none
  Fairness fairness;
  std::vector<TenantSharePoint> tenant_shares;
  // Nodes the run acquired, by id beyond the fleet's own (their names in jobs.csv).
  std::vector<std::string> acquired_node_names;
};

// Weighted max-min fair (water-filling) division of `total` among demands: each gets at most
// what it asked, and what is left is divided in proportion to the weights (none: equal).
// Worked example: 12 among demands {10, 10} with weights {1, 2}: 4 and 8.
std::vector<double> WaterFill(const std::vector<double>& demands, double total, const std::vector<double>& weights = {});
// Fairness of `used` against `entitled` (same order); see Fairness.
Fairness FairnessOf(const std::vector<double>& used, const std::vector<double>& entitled);

// The (tasks, GPUs per task) split described above.
std::pair<int, int> SplitGang(int gpus, int max_gpus_per_node);

Result<SimReport> RunSimulation(const Fleet& fleet, const Trace& trace, const Policy& policy,
                                const SimOptions& options);

// Output formats. All deterministic: the same report gives the same bytes.
std::string FormatReportTable(const SimReport& r);
std::string FormatReportJson(const SimReport& r);   // one object, fields as documented
std::string FormatReportCsv(const SimReport& r);    // header + one row
std::string FormatJobsCsv(const SimReport& r, const Fleet& fleet);

}  // namespace gp
