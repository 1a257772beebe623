#include "controller/autoscaler.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/models.h"
#include "core/units.h"

namespace gp {

namespace {
constexpr double kBootBuckets[] = {5, 10, 30, 60, 120, 300, 600, 1800};
}  // namespace

Autoscaler::Autoscaler(Controller& c, EventLoop& loop, std::vector<std::unique_ptr<Provisioner>> provisioners, AutoscalerOptions o)
    : c_(c), loop_(loop), provisioners_(std::move(provisioners)), o_(std::move(o)) {
  // Claim ids unique across restarts: this server's start, then a counter.
  claim_prefix_ = fmt::format("c{}", WallMs());
  worker_ = std::thread([this] {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !work_.empty(); });
        if (stop_) return;
        fn = std::move(work_.front());
        work_.pop_front();
      }
      fn();
    }
  });
  c_.on_joined = [this](const std::string& node, const std::string& claim) { Joined(node, claim); };
  c_.explain_capacity = [this](JobId id) { return ExplainJob(id); };
}

Autoscaler::~Autoscaler() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
  c_.on_joined = nullptr;
  c_.explain_capacity = nullptr;
}

int64_t Autoscaler::NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void Autoscaler::Work(std::function<void()> fn, bool counted) {
  if (counted) ++in_flight_;
  {
    std::lock_guard lock(mu_);
    work_.push_back(std::move(fn));
  }
  cv_.notify_one();
}

Provisioner* Autoscaler::ProvisionerOf(size_t offer) const {
  const size_t p = c_.fleet().offers[offer].provider.value();
  return p < provisioners_.size() ? provisioners_[p].get() : nullptr;
}

void Autoscaler::Start() {
  // Adopt what every provisioner holds: a restarted server neither buys a claim again nor
  // leaves an instance orphaned.
  for (size_t p = 0; p < provisioners_.size(); ++p) {
    Provisioner* prov = provisioners_[p].get();
    if (!prov) continue;
    Work([this, prov, p] {
      auto stated = prov->Offers();
      auto listed = prov->List();
      // Instances whose machine is gone (stopped, reclaimed) still exist for the provider, and
      // may still cost: deleted now, never adopted.
      std::vector<std::string> dead;
      if (listed) {
        for (const Instance& i : *listed) {
          if (i.state == "terminated" || i.state == "stopped") dead.push_back(i.id);
        }
        if (!dead.empty()) {
          if (Status s = prov->Delete(dead); !s.ok()) fmt::print(stderr, "gpupool server: provisioner delete: {}\n", s.message());
        }
      }
      loop_.Post([this, p, stated = std::move(stated), listed = std::move(listed)] {
        --in_flight_;
        MergeOffers(p, stated);  // first: instances of offers stated at run time are adopted too
        if (!listed) {
          fmt::print(stderr, "gpupool server: provisioner list: {}\n", listed.error().message());
          return;
        }
        for (const Instance& i : *listed) {
          if (i.claim.empty() || i.state == "terminated" || i.state == "stopped") continue;
          auto [it, fresh] = claims_.try_emplace(i.claim);
          Claim& cl = it->second;
          if (fresh) {
            cl.id = i.claim;
            cl.created_ms = NowMs();
            cl.state = Claim::State::kBooting;
            for (size_t o = 0; o < c_.fleet().offers.size(); ++o) {
              if (c_.fleet().offers[o].name == i.offer) cl.offer = o;
            }
          }
          cl.instances.push_back(i.id);
        }
        for (const Controller::ClaimedNode& n : c_.ClaimedNodes()) {
          auto it = claims_.find(n.claim);
          if (it == claims_.end()) continue;
          Claim& cl = it->second;
          cl.node = n.name;
          if (n.draining) {
            // It was being released when the server stopped: finish that.
            cl.state = Claim::State::kReleasing;
            Work([this, owner = ProvisionerOf(cl.offer), id = cl.id, node = n.name, instances = cl.instances] {
              const Status s = owner ? owner->Delete(instances) : Status::Ok();
              loop_.Post([this, id, node, s] {
                --in_flight_;
                if (!s.ok()) return;
                Forget(id);
                c_.Announce("node.released", "node/" + node, nlohmann::json{{"node", node}, {"claim", id}}.dump());
              });
            });
          } else if (!n.down) {
            cl.state = Claim::State::kReady;
          }
        }
      });
    });
  }
  loop_.Every(Millis{1'000}, [this] { Tick(); });
}

void Autoscaler::DeleteEverything() {
  for (const auto& prov : provisioners_) {
    if (!prov) continue;
    auto listed = prov->List();
    if (!listed) continue;
    std::vector<std::string> ids;
    for (const Instance& i : *listed) ids.push_back(i.id);
    if (Status s = prov->Delete(ids); !s.ok()) fmt::print(stderr, "gpupool: deleting instances: {}\n", s.message());
  }
}

void Autoscaler::Joined(const std::string& node, const std::string& claim) {
  auto it = claims_.find(claim);
  if (it == claims_.end()) return;  // a claim this server does not know (adopted later, or foreign)
  Claim& cl = it->second;
  if (cl.node != node) {
    cl.used_base_gpu_ms = c_.UsedGpuMs(node);
    if (Status s = c_.SetNodeOffer(node, c_.fleet().offers[cl.offer].name); !s.ok()) {
      fmt::print(stderr, "gpupool server: node {}: {}\n", node, s.message());
    }
  }
  if (cl.state == Claim::State::kReady && cl.node == node) return;  // an agent registering again
  cl.node = node;
  cl.state = Claim::State::kReady;
  cl.idle_since_ms.reset();
  const double boot_s = static_cast<double>(NowMs() - cl.created_ms) / 1000.0;
  boot_buckets_.resize(std::size(kBootBuckets), 0);
  for (size_t b = 0; b < std::size(kBootBuckets); ++b) boot_buckets_[b] += boot_s <= kBootBuckets[b] ? 1 : 0;
  boot_sum_s_ += boot_s;
  ++boot_count_;
  c_.Announce("node.ready", "node/" + node,
              nlohmann::json{{"node", node}, {"claim", claim}, {"offer", c_.fleet().offers[cl.offer].name},
                             {"boot_s", static_cast<double>(NowMs() - cl.created_ms) / 1000.0}}
                  .dump());
}

void Autoscaler::Tick() {
  const int64_t now = NowMs();
  // A claim whose node never registered (three times the offer's boot time, and a minute):
  // given up, its instances deleted, its offer blocked for a while.
  for (auto& [id, cl] : claims_) {
    if (cl.state != Claim::State::kBooting) continue;
    const Offer& o = c_.fleet().offers[cl.offer];
    if (now - cl.created_ms < 3 * o.boot_time.value() + 60'000) continue;
    ++failures_[{o.name, "registration"}];
    c_.Announce("node.provision_failed", "claim/" + id,
                nlohmann::json{{"claim", id}, {"offer", o.name}, {"class", "transient"},
                               {"message", "no agent registered with the claim in time"}}
                    .dump());
    blocked_.Block(c_.fleet(), cl.offer, Scope::kOffer, Millis{now + o_.block_for.value()});
    cl.state = Claim::State::kReleasing;
    Provisioner* prov = ProvisionerOf(cl.offer);
    Work([this, prov, id = id, instances = cl.instances] {
      const Status s = prov ? prov->Delete(instances) : Status::Ok();
      loop_.Post([this, id, s] {
        --in_flight_;
        if (s.ok()) Forget(id);
      });
    });
  }
  PollEvents(now);
  PollOffers(now);
  // Interrupted nodes are deleted once their deadline has come (their jobs moved by then).
  for (auto& [id, cl] : claims_) {
    if (cl.interrupted && !cl.deleting && cl.release_at_ms <= now) DeleteClaim(id);
  }
  // O(queued jobs), once a tick: what waits decides both what to buy and whether to release.
  std::vector<CapacityDemand> demands;
  for (const JobRecord* j : c_.WaitingForCapacity()) {
    if (auto d = CapacityDemandOf(c_.fleet(), j->spec)) demands.push_back(std::move(*d));
  }
  Plan(demands, now);
  Release(OffersWanted(c_.fleet(), demands), now);
}

// Interruption notices (spot reclaims), read from every provisioner every few seconds.
void Autoscaler::PollEvents(int64_t now) {
  if (events_in_flight_ > 0 || now - events_at_ms_ < o_.events_every.value()) return;
  bool any = false;
  for (const auto& [id, cl] : claims_) any = any || (cl.state == Claim::State::kReady || cl.state == Claim::State::kBooting);
  if (!any) return;
  events_at_ms_ = now;
  for (const auto& prov : provisioners_) {
    if (!prov) continue;
    ++events_in_flight_;
    Work([this, p = prov.get()] {
      auto notices = p->Events();
      loop_.Post([this, notices = std::move(notices)] {
        --events_in_flight_;
        if (!notices) {
          fmt::print(stderr, "gpupool server: provisioner events: {}\n", notices.error().message());
          return;
        }
        OnInterruptions(*notices);
      });
    }, /*counted=*/false);
  }
}

// The providers' own offers (their `offers` verb), read now and then: new offers join the
// fleet's, known ones get their current price and availability.
void Autoscaler::PollOffers(int64_t now) {
  if (offers_in_flight_ > 0 || now - offers_at_ms_ < o_.offers_every.value()) return;
  offers_at_ms_ = now;
  for (size_t p = 0; p < provisioners_.size(); ++p) {
    if (!provisioners_[p]) continue;
    ++offers_in_flight_;
    Work([this, p, prov = provisioners_[p].get()] {
      auto stated = prov->Offers();
      loop_.Post([this, p, stated = std::move(stated)] {
        --offers_in_flight_;
        MergeOffers(p, stated);
      });
    }, /*counted=*/false);
  }
}

void Autoscaler::MergeOffers(size_t provider, const Result<std::vector<ProviderOffer>>& stated) {
  const std::string name = c_.fleet().provider(ProviderId{static_cast<uint32_t>(provider)}).name;
  auto complain = [&](const std::string& why) {
    if (offers_error_[provider] == why) return;  // said once, not every minute
    offers_error_[provider] = why;
    fmt::print(stderr, "gpupool server: provider {}: its offers: {}\n", name, why);
  };
  if (!stated) return complain(stated.error().message());
  std::vector<Controller::StatedOffer> offers;
  for (const ProviderOffer& s : *stated) {
    auto tier = ParsePriceTier(s.tier);
    if (!tier) return complain(fmt::format("offer '{}': tier: {}", s.name, tier.error().message()));
    Offer o{.name = s.name, .gpus = s.gpus, .gpu_memory = MiB{s.gpu_memory_mib}, .cpu = MilliCpu{static_cast<int64_t>(s.cpu_cores) * 1000},
            .memory = MiB{s.memory_mib}, .tier = *tier, .price_per_hour = UsdToMicro(s.price_per_hour), .max_nodes = s.max_nodes,
            .boot_time = Millis{s.boot_time_s * 1000}, .billing_increment = Millis{s.billing_increment_s * 1000},
            .min_billed = Millis{s.min_billed_s * 1000}, .available = s.available};
    offers.push_back(Controller::StatedOffer{.offer = std::move(o), .site = s.site, .gpu_model = s.gpu_model});
  }
  if (Status st = c_.MergeOffers(ProviderId{static_cast<uint32_t>(provider)}, offers); !st.ok()) return complain(st.message());
  offers_error_.erase(provider);
}

// A node its provider takes back: its jobs get SIGTERM with the notice as their grace (time to
// checkpoint) and move; the offer is blocked for a while, so that their replacement comes
// from the next feasible offer (on-demand when the spot one is blocked).
void Autoscaler::OnInterruptions(const std::vector<Interruption>& notices) {
  const Fleet& fleet = c_.fleet();
  const int64_t wall = WallMs();
  for (const Interruption& n : notices) {
    for (auto& [id, cl] : claims_) {
      if (cl.interrupted || std::find(cl.instances.begin(), cl.instances.end(), n.instance) == cl.instances.end()) continue;
      const Offer& o = fleet.offers[cl.offer];
      const Millis notice{std::max<int64_t>(0, n.deadline_ms - wall)};
      cl.interrupted = true;
      cl.release_at_ms = NowMs() + notice.value();
      blocked_.Block(fleet, cl.offer, Scope::kOffer, Millis{NowMs() + o_.block_for.value()});
      c_.Announce("node.interrupted", cl.node.empty() ? "claim/" + id : "node/" + cl.node,
                  nlohmann::json{{"node", cl.node}, {"claim", id}, {"offer", o.name}, {"instance", n.instance},
                                 {"notice_s", static_cast<double>(notice.value()) / 1000.0},
                                 {"blocked_s", static_cast<double>(o_.block_for.value()) / 1000.0}}
                      .dump());
      if (cl.state == Claim::State::kReady && !cl.node.empty()) {
        if (Status s = c_.Reclaim(cl.node, notice); !s.ok()) fmt::print(stderr, "gpupool server: reclaim {}: {}\n", cl.node, s.message());
      }
      cl.state = Claim::State::kReleasing;
      demand_changed_ms_ = 0;  // plan the replacements at once
    }
  }
}

void Autoscaler::DeleteClaim(const std::string& id) {
  Claim& cl = claims_[id];
  cl.deleting = true;
  Work([this, prov = ProvisionerOf(cl.offer), id, node = cl.node, offer = c_.fleet().offers[cl.offer].name, instances = cl.instances] {
    const Status s = prov ? prov->Delete(instances) : Status::Ok();
    loop_.Post([this, id, node, offer, s] {
      --in_flight_;
      if (!s.ok()) {
        fmt::print(stderr, "gpupool server: deleting claim {}: {}\n", id, s.message());
        claims_[id].deleting = false;  // tried again next tick
        return;
      }
      Forget(id);
      c_.Announce("node.released", node.empty() ? "claim/" + id : "node/" + node,
                  nlohmann::json{{"node", node}, {"claim", id}, {"offer", offer}}.dump());
    });
  });
}

void Autoscaler::Plan(const std::vector<CapacityDemand>& demands, int64_t now) {
  const Fleet& fleet = c_.fleet();
  if (fleet.offers.empty()) return;
  // Batching: plan once the waiting set has been quiet a while, or has waited long enough.
  if (demands.empty()) {
    demand_since_ms_ = 0;
    last_demand_ = 0;
    return;
  }
  if (demand_since_ms_ == 0) demand_since_ms_ = now;
  if (demands.size() != last_demand_) {
    last_demand_ = demands.size();
    demand_changed_ms_ = now;
  }
  if (now - demand_changed_ms_ < o_.batch_quiet.value() && now - demand_since_ms_ < o_.batch_max.value()) return;
  if (in_flight_ > 0) return;  // the last plan's creates are not all answered yet

  std::vector<OfferHeld> held(fleet.offers.size());
  std::vector<BootingNode> booting;
  MicroUsd spend{0};
  for (const auto& [id, cl] : claims_) {
    const Offer& o = fleet.offers[cl.offer];
    if (cl.state == Claim::State::kReady) {
      ++held[cl.offer].running;
    } else {
      ++held[cl.offer].booting;
      if (cl.state != Claim::State::kReleasing) {
        booting.push_back(BootingNode{.offer = cl.offer, .free_gpus = o.gpus, .free_cpu = o.cpu, .free_memory = o.memory});
      }
    }
    spend = MicroUsd{spend.value() + o.price_per_hour.value()};
  }
  // Only offers of providers with a provisioner are bought from; the others are listed only.
  std::vector<uint8_t> buyable(fleet.offers.size());
  for (size_t i = 0; i < buyable.size(); ++i) buyable[i] = ProvisionerOf(i) != nullptr;
  const ProvisionPlan plan = PlanCapacity(
      fleet, ProvisionInput{.demands = demands, .held = held, .booting = booting, .blocked = &blocked_, .buyable = buyable,
                            .spend_per_hour = spend, .now = Millis{now}});
  demand_since_ms_ = 0;
  unmet_.clear();
  for (const auto& [job, why] : plan.unmet) unmet_[job.value()] = why;
  on_booting_.clear();
  for (JobId j : plan.on_booting) on_booting_[j.value()] = true;
  for (const ProvisionPlan::NewNode& n : plan.create) {
    Provisioner* prov = ProvisionerOf(n.offer);  // never null: the plan buys only where one is
    const std::string id = fmt::format("{}-{}", claim_prefix_, next_claim_++);
    Claim& cl = claims_[id];
    cl.id = id;
    cl.offer = n.offer;
    cl.created_ms = now;
    cl.jobs = n.jobs;
    const Offer& o = fleet.offers[n.offer];
    nlohmann::json jobs = nlohmann::json::array();
    for (JobId j : n.jobs) jobs.push_back(std::to_string(j.value()));
    c_.Announce("node.provisioning", "claim/" + id,
                nlohmann::json{{"claim", id}, {"offer", o.name}, {"provider", fleet.provider(o.provider).name},
                               {"price_per_hour", static_cast<double>(o.price_per_hour.value()) / kMicroUsdPerUsd}, {"jobs", jobs}}
                    .dump());
    CreateRequest req{.claim = id, .offer = &o, .offer_site = fleet.site(o.site).name, .offer_model = fleet.model(o.model).name,
                      .count = 1, .server = o_.server, .join_token = o_.join_token};
    Work([this, prov, req] {
      CreateOutcome out = prov->Create(req);
      loop_.Post([this, claim = req.claim, out = std::move(out)]() mutable {
        --in_flight_;
        OnCreated(claim, std::move(out));
      });
    });
  }
}

void Autoscaler::OnCreated(const std::string& claim, CreateOutcome out) {
  auto it = claims_.find(claim);
  if (it == claims_.end()) return;
  Claim& cl = it->second;
  const Offer& o = c_.fleet().offers[cl.offer];
  cl.instances.clear();
  for (const Instance& i : out.instances) cl.instances.push_back(i.id);
  if (out.error) {
    const ProvisionError& e = *out.error;
    ++failures_[{o.name, std::string(ProvisionErrorClassName(e.error_class))}];
    const int64_t until = NowMs() + e.retry_after.value_or(o_.block_for).value();
    if (e.error_class == ProvisionErrorClass::kCapacity || e.error_class == ProvisionErrorClass::kQuota) {
      blocked_.Block(c_.fleet(), cl.offer, e.scope, Millis{until});
    } else {
      blocked_.Block(c_.fleet(), cl.offer, Scope::kOffer, Millis{until});
    }
    c_.Announce("node.provision_failed", "claim/" + claim,
                nlohmann::json{{"claim", claim}, {"offer", o.name}, {"class", ProvisionErrorClassName(e.error_class)},
                               {"scope", ScopeName(e.scope)}, {"message", e.message},
                               {"blocked_s", static_cast<double>(until - NowMs()) / 1000.0}}
                    .dump());
    if (cl.instances.empty()) {
      claims_.erase(it);
      demand_changed_ms_ = 0;  // ask elsewhere at once, not after another quiet second
      return;
    }
  }
  if (cl.state == Claim::State::kCreating) cl.state = Claim::State::kBooting;
}

void Autoscaler::Release(const std::vector<uint8_t>& wanted, int64_t now) {
  const Fleet& fleet = c_.fleet();
  std::map<std::string, Controller::ClaimedNode> nodes;
  for (Controller::ClaimedNode& n : c_.ClaimedNodes()) nodes[n.claim] = std::move(n);
  std::vector<AcquiredNode> acquired;
  std::vector<std::string> ids;
  for (auto& [id, cl] : claims_) {
    if (cl.state != Claim::State::kReady) continue;
    auto n = nodes.find(id);
    const bool busy = n != nodes.end() && n->second.busy;
    if (busy) {
      cl.idle_since_ms.reset();
    } else if (!cl.idle_since_ms) {
      cl.idle_since_ms = now;
    }
    // Jobs waiting for capacity that could run on this node's offer keep it, idle or not (the
    // scheduler is about to use it; a gang may wait for its other nodes).
    if (cl.offer < wanted.size() && wanted[cl.offer]) continue;
    acquired.push_back(AcquiredNode{.offer = cl.offer, .created = Millis{cl.created_ms},
                                    .idle_since = cl.idle_since_ms ? std::optional<Millis>(Millis{*cl.idle_since_ms}) : std::nullopt});
    ids.push_back(id);
  }
  const ReleasePlan plan = PlanRelease(fleet, acquired, o_.idle_after, Millis{now});
  for (size_t k : plan.release) {
    Claim& cl = claims_[ids[k]];
    cl.state = Claim::State::kReleasing;
    (void)c_.SetDraining(cl.node, true);
    c_.Announce("node.releasing", "node/" + cl.node,
                nlohmann::json{{"node", cl.node}, {"claim", cl.id}, {"offer", fleet.offers[cl.offer].name},
                               {"idle_s", static_cast<double>(now - cl.idle_since_ms.value_or(now)) / 1000.0}}
                    .dump());
    Provisioner* prov = ProvisionerOf(cl.offer);
    Work([this, prov, id = cl.id, node = cl.node, offer = fleet.offers[cl.offer].name, instances = cl.instances] {
      const Status s = prov ? prov->Delete(instances) : Status::Ok();
      loop_.Post([this, id, node, offer, s] {
        --in_flight_;
        if (!s.ok()) {
          fmt::print(stderr, "gpupool server: releasing {}: {}\n", node, s.message());
          claims_[id].state = Claim::State::kReady;  // tried again later
          return;
        }
        Forget(id);
        c_.Announce("node.released", "node/" + node, nlohmann::json{{"node", node}, {"claim", id}, {"offer", offer}}.dump());
      });
    });
  }
}

std::vector<Autoscaler::ClaimView> Autoscaler::Claims() const {
  std::vector<ClaimView> out;
  for (const auto& [id, cl] : claims_) {
    static constexpr const char* kStates[] = {"creating", "booting", "ready", "releasing"};
    out.push_back(ClaimView{.id = id, .offer = c_.fleet().offers[cl.offer].name,
                            .state = kStates[static_cast<size_t>(cl.state)], .instances = cl.instances, .node = cl.node});
  }
  return out;
}

std::string OffersJson(const Fleet& fleet, std::span<const OfferHeld> held, const std::vector<Blocklist::Entry>& blocked, Millis now) {
  nlohmann::json offers = nlohmann::json::array();
  for (size_t i = 0; i < fleet.offers.size(); ++i) {
    const Offer& o = fleet.offers[i];
    const OfferHeld h = i < held.size() ? held[i] : OfferHeld{};
    offers.push_back({{"name", o.name}, {"provider", fleet.provider(o.provider).name}, {"site", fleet.site(o.site).name},
                      {"region", fleet.site(o.site).region}, {"gpu_model", fleet.model(o.model).name}, {"gpus", o.gpus},
                      {"tier", PriceTierName(o.tier)}, {"price_per_hour", static_cast<double>(o.price_per_hour.value()) / kMicroUsdPerUsd},
                      {"price_per_gpu_hour", static_cast<double>(o.price_per_gpu_hour().value()) / kMicroUsdPerUsd},
                      {"min_nodes", o.min_nodes}, {"max_nodes", o.max_nodes}, {"boot_time_s", static_cast<double>(o.boot_time.value()) / 1000},
                      {"billing_increment_s", static_cast<double>(o.billing_increment.value()) / 1000},
                      {"available", o.available}, {"running", h.running}, {"booting", h.booting},
                      {"provisioner", fleet.provider(o.provider).provisioner.kind == ProvisionerSpec::Kind::kNone ? "none"
                                      : fleet.provider(o.provider).provisioner.kind == ProvisionerSpec::Kind::kLocal ? "local" : "exec"}});
  }
  nlohmann::json blocks = nlohmann::json::array();
  for (const Blocklist::Entry& e : blocked) {
    blocks.push_back({{"scope", ScopeName(e.scope)}, {"what", e.what}, {"seconds_left", static_cast<double>(e.until.value() - now.value()) / 1000}});
  }
  return nlohmann::json{{"offers", offers}, {"blocked", blocks}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string Autoscaler::OffersJson() const {
  std::vector<OfferHeld> held(c_.fleet().offers.size());
  for (const auto& [id, cl] : claims_) {
    if (cl.state == Claim::State::kReady) ++held[cl.offer].running;
    else ++held[cl.offer].booting;
  }
  return gp::OffersJson(c_.fleet(), held, blocked_.Active(Millis{NowMs()}), Millis{NowMs()});
}

// The claim is given back: what its provider billed and no job used is recorded as idle usage
// (jobs' own GPU time was recorded as each attempt ended), then it is forgotten.
void Autoscaler::Forget(const std::string& id) {
  auto it = claims_.find(id);
  if (it == claims_.end()) return;
  const Claim& cl = it->second;
  const Fleet& fleet = c_.fleet();
  const Offer& o = fleet.offers[cl.offer];
  const Millis age{std::max<int64_t>(0, NowMs() - cl.created_ms)};
  const int64_t billed_gpu_ms = static_cast<int64_t>(o.gpus) * BilledTime(o, age).value();
  const int64_t used = cl.node.empty() ? 0 : std::max<int64_t>(0, c_.UsedGpuMs(cl.node) - cl.used_base_gpu_ms);
  const int64_t idle = std::max<int64_t>(0, billed_gpu_ms - used);
  const int64_t used_usd = GpuCost(o.price_per_gpu_hour(), GpuMilli{1000}, Millis{used}).value();
  const int64_t wall = WallMs();
  if (!cl.node.empty()) {
    if (Status s = c_.NodeReleased(cl.node); !s.ok()) fmt::print(stderr, "gpupool server: node {}: {}\n", cl.node, s.message());
  }
  c_.AddUsage(UsageRecord{.start_ms = wall - age.value(), .end_ms = wall, .kind = "idle", .provider = fleet.provider(o.provider).name,
                          .offer = o.name, .tier = std::string(PriceTierName(o.tier)), .tenant = "", .node = cl.node, .job = 0,
                          .gpu_ms = idle, .usd_micro = std::max<int64_t>(0, BilledCost(o, age).value() - used_usd)});
  claims_.erase(it);
}

int64_t Autoscaler::WallMs() const { return c_.Now().value(); }

std::string Autoscaler::ExplainJob(JobId id) const {
  const int64_t now = NowMs();
  for (const auto& [cid, cl] : claims_) {
    if (std::find(cl.jobs.begin(), cl.jobs.end(), id) == cl.jobs.end()) continue;
    const std::string offer = c_.fleet().offers[cl.offer].name;
    const std::string age = FormatMillis(Millis{now - cl.created_ms});
    switch (cl.state) {
      case Claim::State::kCreating: return fmt::format("a node of offer {}, claim {}, being created for {}", offer, cid, age);
      case Claim::State::kBooting: return fmt::format("a node of offer {}, claim {}, booting for {}", offer, cid, age);
      case Claim::State::kReady:
        return fmt::format("a node of offer {}, claim {}, up as {} (the next pass places the job there or elsewhere)", offer, cid, cl.node);
      case Claim::State::kReleasing: break;
    }
  }
  if (auto it = unmet_.find(id.value()); it != unmet_.end()) return "no node can be bought for it: " + it->second;
  if (on_booting_.count(id.value())) return "a node already booting for earlier jobs";
  return {};
}

void Autoscaler::CollectMetrics(Families& out) const {
  using prometheus::MetricType;
  static constexpr const char* kStates[] = {"creating", "booting", "ready", "releasing"};
  const Fleet& fleet = c_.fleet();
  std::vector<std::array<int, 4>> by(fleet.offers.size(), std::array<int, 4>{});
  double spend = 0;
  for (const auto& [id, cl] : claims_) {
    ++by[cl.offer][static_cast<size_t>(cl.state)];
    spend += static_cast<double>(fleet.offers[cl.offer].price_per_hour.value()) / kMicroUsdPerUsd;
  }
  auto& nodes = FamilyIn(out, "gpupool_autoscaler_nodes", "Nodes the pool holds from each offer, by state.", MetricType::Gauge);
  for (size_t o = 0; o < fleet.offers.size(); ++o) {
    for (size_t s = 0; s < 4; ++s) AddValue(nodes, {{"offer", fleet.offers[o].name}, {"state", kStates[s]}}, by[o][s]);
  }
  auto& failed = FamilyIn(out, "gpupool_provision_failures_total",
                          "Creates refused (by class: capacity, quota, auth, invalid, transient) or never registered.", MetricType::Counter);
  for (const auto& [k, n] : failures_) AddValue(failed, {{"offer", k.first}, {"class", k.second}}, static_cast<double>(n));
  AddValue(FamilyIn(out, "gpupool_autoscaler_spend_usd_per_hour", "What the nodes held from offers cost an hour.", MetricType::Gauge), {},
           spend);
  prometheus::MetricFamily boot{.name = "gpupool_provision_seconds",
                                .help = "From a node's create to its agent's registration with the claim.",
                                .type = MetricType::Histogram, .metric = {}};
  prometheus::ClientMetric m;
  for (size_t b = 0; b < std::size(kBootBuckets); ++b) {
    m.histogram.bucket.push_back({.cumulative_count = b < boot_buckets_.size() ? static_cast<uint64_t>(boot_buckets_[b]) : 0,
                                  .upper_bound = kBootBuckets[b]});
  }
  m.histogram.bucket.push_back({.cumulative_count = static_cast<uint64_t>(boot_count_), .upper_bound = std::numeric_limits<double>::infinity()});
  m.histogram.sample_count = static_cast<uint64_t>(boot_count_);
  m.histogram.sample_sum = boot_sum_s_;
  boot.metric.push_back(std::move(m));
  out.push_back(std::move(boot));
}

}  // namespace gp
