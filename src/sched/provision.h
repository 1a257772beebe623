// Acquiring capacity, the decision: which nodes to buy from the fleet's offers for the jobs
// that wait because no node can take them. Pure (no clock, no I/O; time comes in), shared by
// the server and the simulator, deterministic (explicit tie-breaks everywhere).
//
// The plan packs the waiting jobs, largest first, onto hypothetical nodes (first-fit
// decreasing): first onto nodes already booting for earlier plans (so nothing is bought twice),
// then onto nodes this plan has opened, and only then onto a new node of the cheapest feasible
// offer that still has room under its own maximum, its provider's quota and the pool's
// spending cap. For a job whose data lives at a site, "cheapest" counts the data: the run at
// the offer's price (its estimate, else an hour), plus the time to copy the data there at
// that price, plus the egress of the link. A gang's tasks all go to one site (the site that costs least to complete it).
// Scopes blocked after capacity or quota errors (an offer, a site, a region, a provider) are
// not asked until their time is up. Cost: O(jobs x feasible offers + jobs x log jobs); shapes
// of jobs share one feasibility list.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/fleet.h"
#include "core/ids.h"
#include "core/job.h"
#include "core/quantity.h"

namespace gp {

// What a waiting job asks of new capacity.
struct CapacityDemand {
  JobId job;
  int tasks = 1;
  int gpus_per_task = 1;
  std::vector<GpuModelId> models;  // allowed; empty: any
  MiB min_gpu_memory{0};
  MilliCpu cpu_per_task{0};
  MiB memory_per_task{0};
  std::optional<MicroUsd> max_price_per_gpu_hour;
  bool spot_ok = true;  // may run on spot capacity
  // Where its data lives, and how much: an offer elsewhere costs the time to copy it there
  // (its GPUs held meanwhile) and the egress (fleet links), weighed with the run's price.
  std::optional<SiteId> data_site;
  Bytes data_size{0};
  Millis expected_run{0};  // the job's estimate (0: one hour is assumed)

  int total_gpus() const { return tasks * gpus_per_task; }
};

// A node being created for an earlier plan, with what is not yet promised to a job.
struct BootingNode {
  size_t offer = 0;  // index into Fleet::offers
  int free_gpus = 0;
  MilliCpu free_cpu{0};
  MiB free_memory{0};
};

// Where the pool stands with an offer: nodes it holds from it, up and booting.
struct OfferHeld {
  int running = 0;
  int booting = 0;
};

enum class Scope : uint8_t { kOffer, kSite, kRegion, kProvider };
std::string_view ScopeName(Scope s);

// Scopes not to ask until a time: what a capacity or quota error blocked (SkyPilot's
// blocklists, Karpenter's unavailable-offerings cache).
class Blocklist {
 public:
  // Blocks the scope of `offer` of this kind until `until` (a later block extends it).
  void Block(const Fleet& fleet, size_t offer, Scope scope, Millis until);
  // Whether `offer` is inside a scope blocked at `now`; O(blocked scopes).
  bool Blocked(const Fleet& fleet, size_t offer, Millis now) const;
  // The blocks still in force at `now`, for `gpupool offers` (scope, what, until).
  struct Entry {
    Scope scope;
    std::string what;  // the offer's, site's, region's or provider's name
    Millis until;
  };
  std::vector<Entry> Active(Millis now) const;

 private:
  std::vector<Entry> entries_;
};

struct ProvisionInput {
  std::span<const CapacityDemand> demands;
  std::span<const OfferHeld> held;       // one per offer (Fleet::offers), or empty: none held
  std::span<const BootingNode> booting;  // nodes booting now, with their unpromised room
  const Blocklist* blocked = nullptr;
  // One per offer: 0 where the pool cannot buy (its provider has no provisioner: someone else
  // starts its agents). Empty: every offer may be bought.
  std::span<const uint8_t> buyable;
  MicroUsd spend_per_hour{0};            // what the nodes held from offers cost now
  Millis now{0};
};

struct ProvisionPlan {
  // A node to create: its offer and the jobs it is bought for.
  struct NewNode {
    size_t offer = 0;
    std::vector<JobId> jobs;
  };
  std::vector<NewNode> create;           // in the order decided
  std::vector<JobId> on_booting;         // jobs that fit nodes already booting
  // Jobs no offer can take now, and why ("no offer has 16 GPUs of H100 ...", "offer X: at its
  // maximum of 4 nodes", "spending cap of $50.00 an hour reached").
  std::vector<std::pair<JobId, std::string>> unmet;
  MicroUsd added_per_hour{0};            // what the new nodes cost an hour
  // Nodes to create per offer (index into Fleet::offers), summed from `create`.
  std::vector<int> CountByOffer(size_t offers) const;
};

ProvisionPlan PlanCapacity(const Fleet& fleet, const ProvisionInput& in);

// Whether a node of offer `o` could take one task of `d` (model, GPUs, GPU memory, CPU,
// memory, the job's price limit and tier), whatever the offer's availability and blocks.
bool OfferCanTake(const Offer& o, const CapacityDemand& d);

// One per offer: whether some job of `demands` could use a node of it. Idle nodes of such
// offers are kept while those jobs wait (they are about to run there); the others may go.
// O(shapes of job x offers).
std::vector<uint8_t> OffersWanted(const Fleet& fleet, std::span<const CapacityDemand> demands);

// What a waiting job asks of new capacity (its models interned in `fleet`); nullopt for a job
// that asks for no GPU, or only for models no offer or node of the fleet names.
std::optional<CapacityDemand> CapacityDemandOf(const Fleet& fleet, const JobSpec& spec);

// The price per GPU-hour of the cheapest offer that could ever take one of the job's tasks
// (its model, GPUs a node, memory, CPU, price limit, tier; blocks aside; an offer marked
// unavailable left out), or nullopt when none could. O(offers).
std::optional<MicroUsd> CheapestPerGpuHour(const Fleet& fleet, const CapacityDemand& d);

// --- Giving capacity back ---

// What a node held `age` since its creation has been billed: at least the offer's minimum,
// then whole billing increments (a node of an hourly offer 61 minutes old has been billed
// two hours).
Millis BilledTime(const Offer& offer, Millis age);
MicroUsd BilledCost(const Offer& offer, Millis age);

// A node acquired from an offer, as the release decision needs it.
struct AcquiredNode {
  size_t offer = 0;
  Millis created{0};                 // when billing began
  std::optional<Millis> idle_since;  // none: it runs work (or is booting)
};

struct ReleasePlan {
  std::vector<size_t> release;  // indexes into the nodes given, to drain and release now
  // Idle nodes kept, and why: "keeps offer X at its minimum of 2 nodes", "billed until 14:00;
  // released in its last 5 minutes" (the time in `until`), "idle for 40 s of 120 s".
  struct Kept {
    size_t node = 0;
    std::string why;
    Millis until{0};  // when it will be looked at again for this reason (0: not by time)
  };
  std::vector<Kept> kept;
};

// Which idle nodes to give back at `now`. A node is released once it has been idle for
// `idle_after`, never taking its offer below `min_nodes`, and, billing-aware, only in the last
// moments of the period it is already billed for (the last tenth of a billing increment, from
// 1 s to 5 min): releasing a node billed by the hour 20 minutes into its hour saves nothing, so
// it stays, ready for work, until just before its next hour would begin. Among an offer's idle
// nodes the ones idle longest go first (then the oldest); deterministic.
// With `billing_aware` false, an idle node goes as soon as it has been idle long enough (what
// the other autoscalers do; the simulator compares the two).
ReleasePlan PlanRelease(const Fleet& fleet, std::span<const AcquiredNode> nodes, Millis idle_after, Millis now,
                        bool billing_aware = true);

}  // namespace gp
