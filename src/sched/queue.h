// The queue of waiting jobs, kept by the state owner and read by Schedule(). Jobs are grouped
// into classes of the same shape (what they ask of one node and how many tasks: Kubernetes'
// equivalence classes, Nomad's blocked evaluations), each class holding its jobs in queue order
// (the policy's key, then job id). A pass walks the classes' heads in queue order and, once a
// class fails, passes over the rest of it: within a pass resources only shrink, so the same
// shape fails again. A class that failed is blocked at the state's generation and is not looked
// at again until a node of a model it may use improves (SchedState::ImprovedSince): a pass costs
// O((placements + classes) log classes), not O(queue).
//
// Keys are computed once, when a job is added: a job's key must not change while it waits (add
// it again after it ran). Not thread-safe; one owner.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <unordered_map>
#include <vector>

#include "sched/plugin.h"
#include "sched/reason.h"

namespace gp {

// What one task asks of a node and how many tasks the job has: two jobs of one shape succeed
// and fail on the same nodes.
struct ShapeKey {
  uint64_t mask = 0;
  int64_t cpu = 0, memory = 0, gpu_memory = 0, price = -1;
  int32_t gpus = 0, share = 0, tasks = 0;
  TenantIndex tenant = 0;  // a tenant's quota and place in the share order are its own
  bool operator==(const ShapeKey&) const = default;
};
ShapeKey ShapeOf(const PendingJob& job);

struct ShapeHash {
  size_t operator()(const ShapeKey& k) const;
};

enum class Outcome : uint8_t { kPlaced, kNotNow, kNever };

struct ReasonCount {
  Reason example;  // the first node's numbers for this reason
  int nodes = 0;
};

struct Decision {
  JobId job;
  Outcome outcome = Outcome::kNotNow;
  // Most nodes first, then by reason code. Shared by every job of the same shape (they fail
  // for the same reasons), so a long queue costs no copies.
  std::shared_ptr<const std::vector<ReasonCount>> reason_set;

  const std::vector<ReasonCount>& reasons() const;
};

class JobQueue {
 public:
  struct Entry {
    QueueKey key;
    JobId id;
    PendingJob job;
    bool operator<(const Entry& o) const { return key != o.key ? key < o.key : id < o.id; }
  };
  struct Class {
    ShapeKey shape;
    std::set<Entry> jobs;
    uint64_t blocked_at = 0;  // the state's generation when it last failed; 0: not blocked
    Decision last;            // why it waits (job: the one that was tried)
  };

  explicit JobQueue(const QueueOrder& order) : order_(&order) {}

  // A tenant's own queue order (nullptr: the queue's), for its jobs added from now on; the
  // order must outlive the queue. Keys of different orders are compared only under a share
  // order, which picks the tenant first.
  void SetOrder(TenantIndex tenant, const QueueOrder* order);
  // Every class looked at again in the next pass (quotas or weights changed).
  void UnblockAll();
  // The job waits (its spec must outlive its time in the queue). Adding a job already here
  // replaces it.
  void Add(const PendingJob& job);
  // Whether it was here.
  bool Remove(JobId id);
  bool Contains(JobId id) const { return where_.count(id.value()) > 0; }
  size_t size() const { return where_.size(); }
  bool empty() const { return where_.empty(); }

  const std::vector<Class>& classes() const { return classes_; }
  // The class failed in a pass on a state of `generation`, for `why`.
  void Block(uint32_t cls, uint64_t generation, Decision why);
  // The decision that stands for a waiting job (its class's), or nullptr before any pass.
  const Decision* DecisionOf(JobId id) const;
  // The class a waiting job is in, or -1.
  int64_t ClassOf(JobId id) const;
  // Every waiting job, in queue order (O(n log n); for listings and tests).
  std::vector<const Entry*> InOrder() const;

 private:
  const QueueOrder* order_;
  std::vector<const QueueOrder*> tenant_orders_;
  std::vector<Class> classes_;
  std::unordered_map<ShapeKey, uint32_t, ShapeHash> class_of_;
  struct Where {
    uint32_t cls;
    QueueKey key;
  };
  std::unordered_map<uint64_t, Where> where_;
};

}  // namespace gp
