// THE scheduling core: Schedule(state, pending, policy, rng) -> Plan. Pure and deterministic:
// it reads no clock, does no I/O, starts no thread, never writes the state, and the same
// arguments (and seed) give the same Plan. The live server and the simulator both call exactly
// this, on the SchedState their ClusterState keeps current.
//
// One pass: order the queue (policy.queue, ties by job id); for each job, place its tasks one by
// one on an overlay of the state that copies only the nodes the pass touches (filters, then the
// weighted scorers over up to policy.candidate_limit feasible nodes from the free-GPU index, in
// the policy's candidate order, ties to the lowest node id); a gang that cannot place every task
// places none. A pass costs what it visits: O(tasks x candidates), not O(nodes).
//
// A job that cannot be placed gets a Decision with per-reason node counts and an example with
// numbers, and an outcome: kNotNow (it would fit the fleet's capacity; retry when something
// frees) or kNever (no node, or not enough nodes together, could ever hold it). Reasons come
// from the nodes the pass visited; the nodes the index passed over are counted under the
// reason the index knows (too few free GPUs, another model). ExplainJob() judges every node,
// for when someone asks. The state owner applies the Plan with Allocate(), which re-checks
// each node.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "core/rng.h"
#include "sched/plugin.h"
#include "sched/registry.h"
#include "sched/queue.h"
#include "sched/sched_state.h"

namespace gp {

std::string_view OutcomeName(Outcome o);

struct Placement {
  JobId job;
  std::vector<TaskAllocation> tasks;  // one per task, in rank order
};

// A class of job that stopped in a pass: it failed (or was too big for what was free), and
// the rest of its jobs were passed over.
struct Stopped {
  uint32_t cls = 0;
  Decision decision;  // .job: the job that was tried (or found too big)
  // It was tried with GPUs held for a reservation it would overlap (backfill): it may fit once
  // that reservation moves or starts, so the owner does not block its class.
  bool held = false;
};

// Backfill: where and when a waiting job is expected to start (the earliest time the running
// jobs' expected ends free enough for it), held against jobs that would delay it.
struct Reservation {
  JobId job;
  Millis start{0};
  Millis end{-1};                     // start + its time limit, else estimated duration; -1: unknown
  std::vector<TaskAllocation> tasks;  // in rank order
  TenantIndex tenant = 0;
};

struct Plan {
  std::vector<Placement> placements;  // in the order they were made
  // The jobs the pass looked at, in queue order: each placed one, and the first job of each
  // class that stopped. (The span form of Schedule gives one per pending job instead.) A job
  // that wants more GPUs than the whole cluster has free at its turn is not searched for: its
  // decision carries one cluster-wide reason (kClusterGpus) and is kNever only if it exceeds
  // every GPU of the fleet. (A job asking more GPUs per task than any node has is kNever when
  // searched; state owners refuse it at admission with FitsFleet().)
  std::vector<Decision> decisions;
  std::vector<Stopped> stopped;  // classes that stopped, in the order they did
  int64_t searched = 0;          // jobs for which nodes were searched
  int64_t looked_at = 0;         // jobs taken from the queue
  // Inconsistencies found (a node that passed every filter and that Allocate refused): a bug if
  // ever any; the job concerned is not placed, and the owner counts and reports each.
  std::vector<Status> internal;
  bool capped = false;  // it stopped at max_placements with jobs left to look at: pass again
  std::vector<Reservation> reservations;  // backfill's, in the order made (at most policy.backfill.depth)
};

// A pass over the owner's queue (built with this policy's queue order). Classes blocked since
// their last failure are not looked at unless a node they may use improved since.
// `max_placements` > 0 ends the pass after that many placements (a live server keeps each
// turn of its loop short; the rest is placed by the next pass, in the same order).
//
// Backfill (policy.backfill.depth > 0; Slurm's EASY with depth 1): blocked classes are looked
// at every pass (as under a head-of-line order), and the first `depth` jobs that cannot start
// get a Reservation: time is walked on the overlay from `now` through the running jobs'
// expected ends (SchedState::ends; this pass's placements too) and the earlier reservations'
// starts and ends, and at each instant the job is tried with the GPUs of every reservation it
// would overlap held, at most max_tries placements. A job looked at after a reservation is
// tried with that reservation's GPUs held (what of them is free now) unless it is expected to
// end (`now` + its time limit, else its estimated duration) by the reservation's start; a job
// with neither is held out of every reservation. So no job started now delays a reservation,
// as long as jobs end by their limits. Cost: per reservation O(running jobs ending before it x
// their tasks + tries x a placement).
Plan Schedule(const SchedState& state, const JobQueue& queue, const Policy& policy, Rng& rng, size_t max_placements = 0,
              Millis now = Millis{0});
// A pass over a list of jobs (a queue made for the occasion, none blocked); decisions has one
// per pending job, in queue order. For tests and one-off placements.
Plan Schedule(const SchedState& state, std::span<const PendingJob> pending, const Policy& policy, Rng& rng);

// Preemption (policy.preemption): for a job the pass could not place, the cheapest set of
// running jobs whose removal lets it fit now, and where it would then run. A victim is a whole
// job (every task of a gang, never part of one) that may be preempted now (its class is
// preemptible and it has run its class's min_run) and that either stands below the job
// (QueueOrder::Standing: its priority, or its queue under las) and is of the same tenant or
// of one not within its own quota; or (reclaim) runs for another tenant of the job's cohort
// that borrows the model, while the job's tenant stays within its nominal quota. Task by
// task: where the task fits without preempting, it goes there; else on the node where the
// fewest jobs (then the fewest GPUs, then the least run time lost) make room, each node's set
// made minimal (no victim that could be spared). What a pass holds for a job that preempted
// (SchedState::reservations) is not offered to another. Cost: O(running jobs) to find the
// candidates, then per task O(candidate nodes x victims per node x filters). nullopt: no set of
// victims makes room.
struct Victim {
  JobId job;
  bool reclaim = false;  // taken back for the job's tenant's quota (else: it stands lower)
};
struct Preemption {
  JobId job;
  std::vector<Victim> victims;        // in the order chosen
  std::vector<TaskAllocation> tasks;  // where the job runs once they have stopped, in rank order
};
std::optional<Preemption> FindPreemption(const SchedState& state, const PendingJob& job, const Policy& policy, Millis now,
                                         Rng& rng);

// Whether the job could ever run on this fleet: nodes whose static properties (model, GPU
// memory, price) admit a task and whose total capacity could hold all its tasks at once,
// whatever is in use now. The state owner asks at admission and refuses what never fits.
// Cost: O(classes of node), not O(nodes).
bool FitsFleet(const SchedState& state, const PendingJob& job);

// Every node judged for the job's first task, as it stands: the full reasons behind a job's
// wait, for `gpupool explain` (O(nodes); only when asked).
Decision ExplainJob(const SchedState& state, const PendingJob& job, const Policy& policy);

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
std::vector<NodeEvaluation> EvaluateNodes(const SchedState& state, const PendingJob& job, const Policy& policy,
                                          Rng& rng);

}  // namespace gp
