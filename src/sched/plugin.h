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
#include "sched/tenants.h"

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
  // true: strict head of line: nothing behind the first waiting job starts before it does
  // (no skipping ahead, as a strict FIFO); false: a job that cannot start is passed over.
  virtual bool HeadOfLine() const { return false; }
  // How the job stands for preemption: a job may preempt only jobs that stand lower. Its
  // priority, unless the order says otherwise (least-attained-service: its queue, the first
  // highest). `job.attained` includes a running job's current run.
  virtual int64_t Standing(const PendingJob& job) const { return job.spec->priority; }
  // What a standing is, in words ("priority", "queue"), for messages.
  virtual std::string_view StandingName() const { return "priority"; }
  // The attained service (GPU-ms) at which a running job's standing next changes (under
  // least-attained-service, its next threshold), or nullopt: it never does by running.
  virtual std::optional<int64_t> NextStandingChange(const PendingJob& /*job*/) const { return std::nullopt; }
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

// What admission stages and share orders read: the tenants' books, what this pass has placed
// for each, and the cluster's totals (for dominant shares).
struct TenantView {
  const TenantBook& book;
  const TenantPassUse& pass;
  int64_t total_gpu_milli = 0;
  int64_t total_cpu = 0;     // millicores
  int64_t total_memory = 0;  // MiB
};

// An admission stage (Kueue's admission, apart from placement): whether the job may take this
// node's resources at all, whatever is free on it (the tenant's quota of the node's GPU model).
// Runs after the filters, on the nodes that passed them.
class AdmissionCheck {
 public:
  virtual ~AdmissionCheck() = default;
  virtual std::optional<Reason> Check(const PendingJob& job, const TaskDemand& demand, const NodeState& node,
                                      const TenantView& view) const = 0;
  // false: the job can never be admitted, whatever runs (it asks more than it could ever hold).
  virtual bool Ever(const PendingJob& /*job*/, const TenantView& /*view*/) const { return true; }
};

// The order between tenants (Slurm's fair share, Mesos' DRF): the tenant whose rank is
// smallest has its next job looked at first; within a tenant, its own queue order. Ranks are
// read again after each placement of a pass.
class ShareOrder {
 public:
  virtual ~ShareOrder() = default;
  virtual double Rank(TenantIndex tenant, const TenantView& view) const = 0;
};

}  // namespace gp
