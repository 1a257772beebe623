// How the pool gets nodes from a provider: one contract (docs/providers.md), two kinds behind
// it. `exec` runs an external program in the manner of Slurm's ResumeProgram: a verb as its
// argument, a JSON request on its standard input, a JSON answer on its standard output, under
// a hard deadline, its standard error handed to the log. Any cloud's CLI fits behind it.
// (`local`, which starts agents on this machine, follows the same contract.)
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/fleet.h"
#include "core/quantity.h"
#include "core/status.h"
#include "sched/provision.h"

namespace gp {

// What kind of failure a provider reported, and how far it reaches: capacity and quota errors
// block their scope for a while (the planner then asks elsewhere); auth and invalid ones need
// an operator; transient ones are retried.
enum class ProvisionErrorClass : uint8_t { kCapacity, kQuota, kAuth, kInvalid, kTransient };
std::string_view ProvisionErrorClassName(ProvisionErrorClass c);

struct ProvisionError {
  ProvisionErrorClass error_class = ProvisionErrorClass::kTransient;
  Scope scope = Scope::kOffer;
  std::string message;
  std::optional<Millis> retry_after;
};

// An instance as the provider knows it.
struct Instance {
  std::string id;
  std::string claim;   // the claim it was created for
  std::string offer;   // the offer's name
  std::string state;   // "pending", "running", "deleting" (the provider's word)
};

struct ProviderDescription {
  int max_parallel_creates = 1;
  std::string billing;  // free text for `gpupool offers` ("per second", "hourly")
};

// A create: idempotent on `claim` (asked again, the same instances come back).
struct CreateRequest {
  std::string claim;
  const Offer* offer = nullptr;
  std::string offer_site;      // names, so the program needs no fleet file
  std::string offer_model;
  int count = 1;
  std::string server;          // what a new node needs to join: the server's address
  std::string join_token;      //   and the join token
};

struct CreateOutcome {
  std::vector<Instance> instances;
  std::optional<ProvisionError> error;  // none: every instance asked for is being created
};

// An offer as a provider states it at run time (its `offers` verb), by names: the pool adds it
// to the fleet's offers, or updates the one of that name (price, availability, limits).
struct ProviderOffer {
  std::string name;
  std::string site;
  std::string gpu_model;
  int gpus = 0;
  std::string tier = "on-demand";
  double price_per_hour = 0;
  int64_t gpu_memory_mib = 0;  // 0: the model's
  int cpu_cores = 0;           // 0: 8 a GPU
  int64_t memory_mib = 0;      // 0: 64 GiB a GPU
  int max_nodes = 16;
  int64_t boot_time_s = 120;
  int64_t billing_increment_s = 1;
  int64_t min_billed_s = 60;
  bool available = true;
};

// An interruption notice: the instance goes away at `deadline_ms` (wall clock).
struct Interruption {
  std::string instance;
  int64_t deadline_ms = 0;
};

class Provisioner {
 public:
  virtual ~Provisioner() = default;
  virtual Result<ProviderDescription> Describe() = 0;
  virtual CreateOutcome Create(const CreateRequest& request) = 0;
  virtual Status Delete(const std::vector<std::string>& instance_ids) = 0;  // not found is success
  virtual Result<std::vector<Instance>> List() = 0;
  virtual Result<std::vector<Interruption>> Events() = 0;
  // What the provider offers now, beyond the fleet file's offers (none by default).
  virtual Result<std::vector<ProviderOffer>> Offers() { return std::vector<ProviderOffer>{}; }
};

// The `local` provisioner's "cloud": where it keeps its instances, what it starts, and its
// seeded faults.
struct LocalProvisionerOptions {
  std::filesystem::path dir;        // instances.json, the join token, each instance's work directory and log
  std::string gpupool = "gpupool";  // the binary whose `agent` an instance runs
  std::string provider;             // the agents' --provider
  uint64_t seed = 1;
  Millis boot_delay_min{0};         // from create to the agent's start: uniform in [min, max]
  Millis boot_delay_max{0};
  std::vector<std::string> stockout_offers;  // answer capacity errors (scope: the offer)
  Millis stockout_retry{60'000};
  int quota_gpus = 0;               // GPUs held at once before quota errors (0: none)
  Millis spot_mtbf{0};              // spot instances are reclaimed after an exponential time with this mean (0: never)
  Millis spot_lifetime{0};          // or after exactly this long from their start (for tests; 0: by spot_mtbf)
  Millis notice{30'000};            // how long before a reclaim `events` tells of it
};
std::unique_ptr<Provisioner> MakeLocalProvisioner(LocalProvisionerOptions options);

// `program` is run as `program VERB` for every call; each call must end within `deadline`.
// `log` receives the program's standard error, a line at a time, prefixed with the verb.
std::unique_ptr<Provisioner> MakeExecProvisioner(std::vector<std::string> program, Millis deadline,
                                                 std::function<void(const std::string& line)> log);

}  // namespace gp
