// Plugins and policies register by name with a factory; configuration picks them by name.
// A policy is a recipe (data): a queue order, filters, weighted scorers, the order in which
// candidate nodes are visited and how many feasible ones are scored (Nomad's "limit").
// "QUEUE/POLICY" (e.g. "sjf/cost") takes POLICY's placement with another queue order.
// The built-in registry is built once and read-only after; safe to share between threads.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "sched/plugin.h"

namespace gp {

enum class CandidateOrder : uint8_t {
  kTightestFirst,  // nodes with the fewest free GPUs that still fit: packing
  kEmptiestFirst,  // nodes with the most free GPUs: spreading
  kCheapestFirst,  // nodes of the cheapest GPU-hour first, then the fewest free GPUs
  kNearestFirst,   // nodes with the shortest time to bring the job's data first, then the fewest free GPUs
};

// When a job that cannot be placed may stop running ones to make room (Kubernetes' preemption,
// Kueue's reclaim within a cohort, Slurm's QOS preemption). Off unless asked.
struct PreemptionRules {
  bool priority = false;  // a job preempts jobs that stand below it (its priority; under las, its queue)
  bool reclaim = false;   // a tenant within its nominal quota takes back what others of its cohort borrow
  int max_per_pass = 8;   // waiting jobs looked at for victims per pass (as Slurm's bf_max_job_test)
  int node_limit = 128;   // per task, nodes where victims would make room that are compared (Nomad's limit)
  bool any() const { return priority || reclaim; }
  bool operator==(const PreemptionRules&) const = default;
};
// "off", "priority", "reclaim", "priority,reclaim" (or "on": both); the error lists the words.
Result<PreemptionRules> ParsePreemption(std::string_view text);
std::string PreemptionName(const PreemptionRules& r);

// Backfill with reservations (Slurm's sched/backfill, EASY when depth is 1): the first `depth`
// jobs of a pass that cannot start get a reservation at the earliest time the running jobs'
// expected ends (time limit, else estimated duration) free enough for them; a job behind may
// start now only if it is expected to end before every reservation it would overlap, or uses
// none of their GPUs. 0: off (a job that cannot start is passed over, and under a head-of-line
// order nothing behind it starts).
struct BackfillRules {
  int depth = 0;
  int max_tries = 256;  // placements tried per reservation, at successive expected ends
  bool operator==(const BackfillRules&) const = default;
};
// "off" (0), "easy" (1), "conservative" (64) or a depth 1..1000.
Result<BackfillRules> ParseBackfill(std::string_view text);

struct WeightedScorer {
  std::string name;
  double weight = 1.0;
  std::unique_ptr<Scorer> scorer;
};

struct Policy {
  std::string name;
  std::string description;
  std::string queue_name;
  std::unique_ptr<QueueOrder> queue;   // within a tenant, when a share order is set
  std::string share_name;              // "" none: one queue for every tenant
  std::unique_ptr<ShareOrder> share;
  std::vector<std::string> admission_names;
  std::vector<std::unique_ptr<AdmissionCheck>> admissions;
  std::vector<std::string> filter_names;
  std::vector<std::unique_ptr<Filter>> filters;
  std::vector<WeightedScorer> scorers;
  CandidateOrder order = CandidateOrder::kTightestFirst;
  int candidate_limit = 8;  // feasible nodes scored per task; 0 = every feasible node
  PreemptionRules preemption;
  BackfillRules backfill;
};

struct PolicyRecipe {
  std::string name;
  std::string description;
  std::string queue;                 // a queue order, or a share order (then FIFO within a tenant)
  std::vector<std::string> admissions;  // empty: every registered stage
  std::vector<std::string> filters;  // empty: every registered filter, in registration order
  std::vector<std::pair<std::string, double>> scorers;
  CandidateOrder order = CandidateOrder::kTightestFirst;
  int candidate_limit = 8;
  PreemptionRules preemption;
  BackfillRules backfill;
};

class Registry {
 public:
  template <typename T>
  using Factory = std::function<std::unique_ptr<T>()>;
  // A factory for a plugin with a default constructor: Registry::Of<QueueOrder, Fifo>().
  template <typename Base, typename T>
  static Factory<Base> Of() {
    return [] { return std::make_unique<T>(); };
  }

  void AddQueueOrder(std::string name, std::string description, Factory<QueueOrder> f);
  // A queue order that takes arguments after its name: "las:3250:7200" calls with_args("3250:7200").
  using ArgsFactory = std::function<Result<std::unique_ptr<QueueOrder>>(std::string_view args)>;
  void AddQueueOrder(std::string name, std::string description, Factory<QueueOrder> f, ArgsFactory with_args);
  void AddFilter(std::string name, std::string description, Factory<Filter> f);
  void AddScorer(std::string name, std::string description, Factory<Scorer> f);
  void AddAdmission(std::string name, std::string description, Factory<AdmissionCheck> f);
  // A share order is named where a queue order is ("fairshare/packing").
  void AddShareOrder(std::string name, std::string description, Factory<ShareOrder> f);
  // A queue order by name (for a tenant's own order), or the error listing the known ones.
  Result<std::unique_ptr<QueueOrder>> MakeQueueOrder(const std::string& name) const;
  void AddPolicy(PolicyRecipe recipe);

  // "las", "fifo", or "QUEUE/POLICY". The error lists what is known.
  Result<Policy> MakePolicy(const std::string& name) const;
  Result<Policy> MakePolicy(const PolicyRecipe& recipe) const;
  // The recipe a made policy came from (to make another instance of it).
  static PolicyRecipe RecipeOf(const Policy& p);

  struct Entry {
    std::string name;
    std::string description;
  };
  std::vector<Entry> QueueOrders() const;
  std::vector<Entry> Filters() const;
  std::vector<Entry> Scorers() const;
  std::vector<Entry> Admissions() const;
  std::vector<Entry> ShareOrders() const;
  std::vector<Entry> Policies() const;  // in registration order

 private:
  template <typename T>
  struct Slot {
    std::string description;
    Factory<T> make;
  };
  std::map<std::string, Slot<QueueOrder>> queues_;
  std::map<std::string, ArgsFactory> queue_args_;
  std::vector<std::string> queue_order_;
  std::map<std::string, Slot<Filter>> filters_;
  std::vector<std::string> filter_order_;
  std::map<std::string, Slot<Scorer>> scorers_;
  std::vector<std::string> scorer_order_;
  std::map<std::string, Slot<AdmissionCheck>> admissions_;
  std::vector<std::string> admission_order_;
  std::map<std::string, Slot<ShareOrder>> shares_;
  std::vector<std::string> share_order_;
  std::vector<PolicyRecipe> policies_;
};

// Registers the built-in plugins (queue_orders.cc, filters.cc, scorers.cc) and policies.
void RegisterQueueOrders(Registry& r);
void RegisterFilters(Registry& r);
void RegisterScorers(Registry& r);
void RegisterTenantPlugins(Registry& r);  // tenant_plugins.cc: quota admission, fairshare, drf
void RegisterPolicies(Registry& r);
const Registry& BuiltinRegistry();

}  // namespace gp
