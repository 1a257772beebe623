// What autoscaling costs and saves on a trace: the autoscaled run against static fleets sized
// for a percentile of the trace's demand, and against a lower bound (every GPU-hour jobs ran,
// at the cheapest feasible offer's price). Pure functions of their input; deterministic.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/fleet.h"
#include "sim/engine.h"
#include "sim/trace.h"

namespace gp {

// The GPUs the trace asks for at percentile `p` (0..1) of time: each job holds its GPUs from
// its submission for its duration, as if it started at once (what a fleet of that size would
// serve without queueing that share of the time). Time-weighted, over the first submission to
// the last end. O(jobs log jobs).
double DemandPercentile(const Trace& trace, double p);

// The offer a static fleet of `gpus` GPUs is made of: `name` when given (nullopt if no such
// offer), else the cheapest per GPU-hour among offers that are not spot and whose max_nodes
// hold `gpus` (when none does, among all that are not spot); ties: more GPUs a node, then
// the name.
std::optional<size_t> StaticOffer(const Fleet& fleet, const std::string& name, int gpus);

// `fleet` with `nodes` nodes of `offer` added (named OFFER-static-K), and no offers: a fixed
// fleet for the simulator.
Fleet StaticFleet(const Fleet& fleet, size_t offer, int nodes);

// One row of the comparison.
struct CapacityRow {
  std::string name;            // "autoscaled", "static p50 (12 x a100x8)", "lower bound"
  MicroUsd dollars{0};
  double gpu_hours_held = 0;   // paid for
  double idle_gpu_hours = 0;   // paid for, no job on them
  double avg_queue_s = 0;
  int64_t finished = 0;
  int64_t unschedulable = 0;
};

// The autoscaled run's row (its report has `autoscale`); a static run's (billed the whole run:
// the fleet's own nodes at their price, the added nodes at their offer's); the lower bound's.
CapacityRow AutoscaledRow(const SimReport& r, const Fleet& fleet);
CapacityRow StaticRow(const std::string& name, const SimReport& r, const Fleet& base, size_t offer, int nodes);
CapacityRow LowerBoundRow(const SimReport& autoscaled);

std::string FormatCapacityTable(const std::vector<CapacityRow>& rows);
std::string FormatCapacityCsv(const std::vector<CapacityRow>& rows);

}  // namespace gp
