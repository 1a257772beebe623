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

#include <memory>
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
  // Most nodes first, then by reason code. Shared by every job of the same shape in one pass
  // (they fail for the same reasons), so a long queue costs no copies.
  std::shared_ptr<const std::vector<ReasonCount>> reason_set;

  const std::vector<ReasonCount>& reasons() const;
};

struct Placement {
  JobId job;
  std::vector<TaskAllocation> tasks;  // one per task, in rank order
};

struct Plan {
  std::vector<Placement> placements;  // in the order they were made
  // One per pending job, in queue order. A job that wants more GPUs than the whole cluster has
  // free at its turn is not searched for: its decision carries one cluster-wide reason
  // (kClusterGpus) and is kNever only if it exceeds every GPU of the fleet. This keeps a pass
  // over a long queue on a full cluster O(1) per waiting job. (A job asking more GPUs per task
  // than any node has is kNever when searched; state owners refuse it at admission with
  // FitsFleet().)
  std::vector<Decision> decisions;
  int64_t searched = 0;  // jobs for which nodes were searched
};

Plan Schedule(const ClusterSnapshot& snapshot, std::span<const PendingJob> pending,
              const Policy& policy, Rng& rng);

// Whether the job could ever run on this fleet: nodes whose static properties (model, GPU
// memory, price) admit a task and whose total capacity could hold all its tasks at once,
// whatever is in use now. The state owner asks at admission and refuses what never fits.
bool FitsFleet(const ClusterSnapshot& snapshot, const PendingJob& job);

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
