// Acquiring and releasing capacity in the live pool: the loop around the planner
// (sched/provision.h) and the providers' provisioners (adapters/provisioner.h). Every second,
// on the server's loop: jobs that no node can take (after a quiet second, or ten seconds at
// most) are planned onto new nodes of the cheapest feasible offers, counting the nodes already
// booting; each node bought is a claim, created by its provider's provisioner on a thread of
// its own (provisioners block: programs, processes); a capacity or quota error blocks its
// scope and the next plan asks elsewhere. A claim is ready when an agent registers carrying
// it. Nodes idle long enough are drained and released, billing-aware. At start, the
// provisioners' `list` is read and every instance found is adopted as a claim, so a restarted
// server buys nothing twice and leaves nothing orphaned. Every step is an event:
// node.provisioning, node.provision_failed, node.ready, node.releasing, node.released.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "adapters/http.h"
#include "adapters/provisioner.h"
#include "controller/controller.h"
#include "observe/metrics.h"
#include "sched/provision.h"

namespace gp {

struct AutoscalerOptions {
  std::string server;      // the address new nodes join (HOST:PORT)
  std::string join_token;
  Millis batch_quiet{1'000};  // plan once the waiting jobs have not changed for this long
  Millis batch_max{10'000};   // or after this long at most
  Millis idle_after{60'000};  // a node idle this long may be released
  Millis block_for{180'000};  // a capacity or quota error's block when the provider says no time
  Millis events_every{2'000};  // how often the provisioners' interruption notices are read
  Millis offers_every{60'000};  // how often the provisioners' own offers are read (their `offers` verb)
};

// The offers of `fleet` as GET /v1/offers shows them; `held` (one per offer, or empty) and
// the blocked scopes from the autoscaler when there is one.
std::string OffersJson(const Fleet& fleet, std::span<const OfferHeld> held, const std::vector<Blocklist::Entry>& blocked, Millis now);

class Autoscaler {
 public:
  // `provisioners[p]`: provider p's (null: its nodes are not acquired by the pool).
  Autoscaler(Controller& c, EventLoop& loop, std::vector<std::unique_ptr<Provisioner>> provisioners, AutoscalerOptions o);
  ~Autoscaler();
  Autoscaler(const Autoscaler&) = delete;
  Autoscaler& operator=(const Autoscaler&) = delete;
  void Start();  // adopts what the provisioners list, then runs every second
  // Deletes every instance the provisioners list, on the calling thread (`gpupool dev` at its
  // end; the loop has stopped).
  void DeleteEverything();

  struct ClaimView {
    std::string id;
    std::string offer;
    std::string state;  // creating, booting, ready, releasing
    std::vector<std::string> instances;
    std::string node;
  };
  std::vector<ClaimView> Claims() const;
  // GET /v1/offers: every offer with its price, availability, nodes held (ready and booting),
  // and the blocked scopes with the seconds left.
  std::string OffersJson() const;
  const Blocklist& blocked() const { return blocked_; }
  // For `gpupool explain`: what a waiting job waits for from the autoscaler ("a node of offer
  // X, claim C, booting for 35 s"), or why nothing is bought for it; "" when it is not waiting
  // on capacity.
  std::string ExplainJob(JobId id) const;
  // gpupool_autoscaler_nodes{offer,state}, gpupool_provision_failures_total{offer,class},
  // gpupool_provision_seconds (a histogram: create to the agent's registration),
  // gpupool_autoscaler_spend_usd_per_hour.
  void CollectMetrics(Families& out) const;

 private:
  struct Claim {
    std::string id;
    size_t offer = 0;
    enum class State : uint8_t { kCreating, kBooting, kReady, kReleasing } state = State::kCreating;
    std::vector<std::string> instances;
    std::string node;          // the node that registered with it
    int64_t created_ms = 0;    // steady clock of this server (billing start, approximately)
    std::optional<int64_t> idle_since_ms;
    std::vector<JobId> jobs;     // what it was bought for
    int64_t used_base_gpu_ms = 0;  // the controller's count of GPU time used on its node when it joined
    bool interrupted = false;    // its provider takes it back (a spot reclaim) at release_at_ms
    int64_t release_at_ms = 0;
    bool deleting = false;
  };
  void Tick();
  void Plan(const std::vector<CapacityDemand>& demands, int64_t now);
  void Release(const std::vector<uint8_t>& wanted, int64_t now);  // wanted: OffersWanted by the waiting jobs
  void OnCreated(const std::string& claim, CreateOutcome outcome);
  void Joined(const std::string& node, const std::string& claim);
  void PollEvents(int64_t now);
  void PollOffers(int64_t now);
  void MergeOffers(size_t provider, const Result<std::vector<ProviderOffer>>& offers);
  void OnInterruptions(const std::vector<Interruption>& notices);
  void DeleteClaim(const std::string& id);  // delete its instances; then forgotten, and node.released
  Provisioner* ProvisionerOf(size_t offer) const;
  // On the worker thread; its result posted back to the loop. `counted` work (creates, deletes,
  // lists) holds planning back until it is answered.
  void Work(std::function<void()> fn, bool counted = true);
  static int64_t NowMs();
  int64_t WallMs() const;  // the controller's clock (wall time in the server)
  void Forget(const std::string& id);  // records its billed idle time, then drops it

  Controller& c_;
  EventLoop& loop_;
  std::vector<std::unique_ptr<Provisioner>> provisioners_;
  AutoscalerOptions o_;
  std::map<std::string, Claim> claims_;
  Blocklist blocked_;
  uint64_t next_claim_ = 1;
  std::string claim_prefix_;
  int64_t demand_since_ms_ = 0;
  int64_t demand_changed_ms_ = 0;
  size_t last_demand_ = 0;
  int in_flight_ = 0;
  int64_t events_at_ms_ = 0;
  std::map<uint64_t, std::string> unmet_;       // the last plan's jobs it could buy nothing for, and why
  std::map<uint64_t, bool> on_booting_;         // the last plan's jobs that fit nodes already booting
  std::map<std::pair<std::string, std::string>, int64_t> failures_;  // (offer, class) -> count
  std::vector<int64_t> boot_buckets_;            // provisioning seconds, cumulative per kBootBuckets
  double boot_sum_s_ = 0;
  int64_t boot_count_ = 0;
  int events_in_flight_ = 0;
  int64_t offers_at_ms_ = 0;
  int offers_in_flight_ = 0;
  std::map<size_t, std::string> offers_error_;  // per provider: the last error logged (logged once)

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> work_;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace gp
