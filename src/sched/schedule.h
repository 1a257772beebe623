// THE scheduling core: Schedule(snapshot, pending, policy, rng) -> Plan. Pure and
// deterministic: it reads no clock, does no I/O, starts no thread, and the same arguments (and
// seed) give the same Plan. The live server and the simulator both call exactly this.
//
// One pass: order the queue (policy.queue, ties by job id); for each job, place its tasks one by
// one on a working copy of the snapshot (filters, then the weighted scorers over up to
// policy.candidate_limit feasible nodes from the free-GPU index, ties to the lowest node id);
// a gang that cannot place every task places none. A job that cannot be placed gets a Decision
// with per-reason node counts and an example with numbers, and an outcome: kNotNow (it would fit
// the fleet's capacity; retry when something frees) or kNever (no node, or not enough nodes
// together, could ever hold it). The state owner applies the Plan with Allocate(), which
// re-checks each node.
#pragma once

#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "core/rng.h"
#include "sched/plugin.h"
#include "sched/registry.h"
#include "sched/snapshot.h"

namespace gp {

enum class Outcome : uint8_t { kPlaced, kNotNow, kNever };
std::string_view OutcomeName(Outcome o);

struct ReasonCount {
  Reason example;  // the first node's numbers for this reason
  int nodes = 0;
};

struct Decision {
  JobId job;
  Outcome outcome = Outcome::kNotNow;
  std::vector<ReasonCount> reasons;  // most nodes first, then by reason code
};

struct Placement {
  JobId job;
  std::vector<TaskAllocation> tasks;  // one per task, in rank order
};

struct Plan {
  std::vector<Placement> placements;  // in the order they were made
  std::vector<Decision> decisions;    // one per pending job, in queue order
};

Plan Schedule(const ClusterSnapshot& snapshot, std::span<const PendingJob> pending,
              const Policy& policy, Rng& rng);

// The order Schedule() would consider the jobs in (indices into `pending`).
std::vector<size_t> QueueOrderOf(std::span<const PendingJob> pending, const Policy& policy);

// For --explain: every node, in id order, judged for the job's first task: the first filter
// that rejects it (if any), every scorer's raw terms, each scorer's score and the weighted total.
struct NodeEvaluation {
  NodeId node;
  std::optional<Reason> rejected;
  std::vector<ScoreTerm> terms;
  double total = 0;
};
std::vector<NodeEvaluation> EvaluateNodes(const ClusterSnapshot& snapshot, const PendingJob& job,
                                          const Policy& policy, Rng& rng);

}  // namespace gp
