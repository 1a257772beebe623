// The extension points of the scheduling pipeline, as in the Kubernetes scheduling framework
// and Nomad's stack: a queue order ranks pending jobs; filters say whether a node can take one
// task (or a Reason why not); scorers rank the nodes that can. Plugins are stateless and
// const: one instance may serve many passes. They must not read a clock, do I/O or keep state
// between calls; randomness comes only from ScoreContext::rng.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/fleet.h"
#include "core/rng.h"
#include "sched/pending.h"
#include "sched/reason.h"
#include "sched/snapshot.h"

namespace gp {

// What one task of a job needs from one node.
struct TaskDemand {
  int gpus = 0;
  GpuMilli share = kWholeGpu;
  MilliCpu cpu{0};
  MiB memory{0};
};
TaskDemand DemandOf(const JobSpec& spec);

// Smaller keys go first; ties break by job id.
using QueueKey = std::array<int64_t, 3>;

class QueueOrder {
 public:
  virtual ~QueueOrder() = default;
  virtual QueueKey Key(const PendingJob& job) const = 0;
};

class Filter {
 public:
  virtual ~Filter() = default;
  // nullopt: the node can take the task as far as this filter is concerned.
  virtual std::optional<Reason> Check(const PendingJob& job, const TaskDemand& demand,
                                      const NodeState& node) const = 0;
};

struct ScoreContext {
  const Fleet& fleet;
  Rng& rng;
  std::span<const NodeId> gang_nodes;  // nodes already chosen for earlier tasks of this gang
  MicroUsd max_price{0};               // highest GPU-hour price in the fleet
};

struct ScoreTerm {
  std::string name;   // "R", "L", "T_s", "price"
  double value = 0;
};

class Scorer {
 public:
  virtual ~Scorer() = default;
  // In [0, 1]; higher is better.
  virtual double Score(const PendingJob& job, const TaskDemand& demand, const NodeState& node,
                       const ScoreContext& ctx) const = 0;
  // The raw terms behind the score, for --explain (e.g. R and L).
  virtual void Explain(const PendingJob& /*job*/, const TaskDemand& /*demand*/,
                       const NodeState& /*node*/, const ScoreContext& /*ctx*/,
                       std::vector<ScoreTerm>& /*out*/) const {}
};

}  // namespace gp
