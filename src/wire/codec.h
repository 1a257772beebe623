// JSON on the wire and on disk: the REST API's request and response bodies, the agent's
// messages, and the records the journal stores. Parsing is strict: an unknown field, a wrong
// type or a value out of range is an error that names the field and what was expected.
// Pure functions; thread-safe.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <functional>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "state/journal.h"
#include "state/records.h"

namespace gp {

// POST /v1/jobs. The id and submit time are left for the controller to set.
// A priority class's value by name (nullptr: the pool has none); its error names what is known.
using PriorityResolver = std::function<Result<int>(std::string_view name)>;
Result<JobRecord> ParseSubmitRequest(std::string_view body, const PriorityResolver& priority_class = nullptr);

// A job as the API shows it and the journal stores it (the one form serves both).
// `message`, when given, is shown instead of the record's (a waiting job's, which its class keeps).
// The job as the API shows it (its secrets by name only), or with `store` as the journal keeps
// it (its secrets sealed).
std::string JobToJson(const JobRecord& job, std::optional<std::string_view> message = std::nullopt, bool store = false);
Result<JobRecord> JobFromJson(std::string_view json);


// A node as the API shows it and the journal stores it. `free_gpus` and `load` are
// the controller's view at the time; `state` is ready, draining or down.
std::string NodeToJson(const NodeRecord& node, const Fleet& fleet, std::string_view state, int free_gpus);
Result<NodeRecord> NodeFromJson(std::string_view json);

// Agent -> server: POST /v1/agent/register.
struct RegisterRequest {
  std::string name;
  std::string site = "local";
  std::string provider = "local";
  std::string tier = "on-demand";
  std::string address = "127.0.0.1";
  int cpu_cores = 0;
  int64_t memory_mib = 0;
  std::string gpu_source;
  std::vector<GpuDevice> gpus;
  std::vector<std::pair<std::string, std::string>> labels;
  // The node's own credential, from an earlier registration: proves a restarted agent is the
  // node it claims to be (never logged; the server keeps only its hash).
  std::string credential;
  // Tasks it can run at once (its CPUs and process limit; each task has a supervisor); 0: none said.
  int max_tasks = 0;
  // The claim it was created for, when the pool acquired it from a provider (docs/providers.md).
  std::string claim;
  // The drivers the node runs tasks with ("process", "oci"); empty: process only.
  std::vector<std::string> drivers;
  // A certificate signing request (PEM) for the node's client certificate (mutual TLS): over
  // TLS the server answers with the certificate.
  std::string csr;
};
// Node names are host names: letters, digits, '.', '-', '_' (so they are safe in paths, URLs
// and terminals).
Status ValidateNodeName(std::string_view name);
// The most memory one GPU can claim (1 TiB: no GPU made has more than a fifth of that).
inline constexpr int64_t kMaxGpuMemoryMib = int64_t{1} << 20;
inline constexpr int kMaxTaskSlots = 4096;  // tasks at once on one node
std::string RegisterToJson(const RegisterRequest& r);
Result<RegisterRequest> ParseRegister(std::string_view body);

// One task's news in a heartbeat.
struct TaskReport {
  uint64_t job = 0;
  int task = 0;
  int attempt = 0;
  enum class State : uint8_t { kRunning, kExited } state = State::kRunning;
  std::optional<int> exit_code;
  std::optional<int> signal;
  int64_t started_ms = 0;
  std::string stdout_chunk;  // new output since the last report
  std::string stderr_chunk;
  // The attempt's lease ran out and its supervisor stopped it: the attempt was lost (no word
  // from the server in time), not the job's own failure.
  bool lost = false;
  int64_t dropped = 0;       // output bytes the agent dropped (a job that wrote faster than it ships)
  std::string error;         // the agent could not start it (bad command, ...)
};

// The result of an active health check of one GPU (agent/selftest.h).
struct GpuSelfTest {
  int gpu = 0;
  bool passed = false;
  std::string detail;
};

// Agent -> server: POST /v1/agent/heartbeat. Held by the server up to `wait_ms` when it has
// nothing to say (long poll), so new work reaches the agent at once.
struct Heartbeat {
  std::string node;
  // Telemetry is sent when it changed (and now and then): a heartbeat without it keeps the
  // node's last host and GPU samples, and costs the server only its task news.
  bool telemetry = true;
  HostSample host;
  std::vector<GpuSample> gpus;
  std::vector<TaskReport> tasks;
  std::vector<TaskKey> running;  // every task attempt the agent runs now
  std::vector<GpuSelfTest> selftests;  // results of GPU self-tests the server asked for
  int wait_ms = 0;
};
std::string HeartbeatToJson(const Heartbeat& h);
Result<Heartbeat> ParseHeartbeat(std::string_view body);

// Server -> agent: what to start and what to stop.
struct TaskLaunch {
  uint64_t job = 0;
  int task = 0;
  int attempt = 0;
  std::vector<std::string> command;
  std::vector<std::pair<std::string, std::string>> env;
  std::string workdir;
  uint16_t gpu_mask = 0;
  MilliCpu cpu{0};
  MiB memory{0};
  // No shared storage: the agent gives the task a local GPUPOOL_CHECKPOINT_DIR, restores it
  // from the server before a later attempt starts, and ships it back as it changes.
  bool carry_checkpoint = false;
  // The unix user to run it as (its tenant's); "": the agent's --job-user.
  std::string user;
  // How to run it: "process" (empty) or "oci", with the container's root (JobRecord::container).
  std::string driver;
  std::string image;
  std::string rootfs;
  bool read_only_root = false;
};
struct HeartbeatReply {
  std::vector<TaskLaunch> start;
  std::vector<TaskKey> cancel;
  std::vector<int> selftest;  // GPUs (indexes) to check now: quarantined ones on probation
  std::map<TaskKey, int> grace_ms;  // a cancel's own grace before SIGKILL (else the agent's)
  // The idle heartbeat interval the server asks for (it grows with the fleet); 0: unchanged.
  int interval_ms = 0;
  // The leader's epoch (several servers on etcd; 0: one server): an agent that has seen a
  // newer one acts on nothing in this reply, which comes from a server that no longer leads.
  uint64_t epoch = 0;
};
std::string ReplyToJson(const HeartbeatReply& r);
Result<HeartbeatReply> ParseReply(std::string_view body);

// An event as a CloudEvents 1.0 JSON object (structured mode): id and the `sequence`
// extension are the event's number, type is "io.gpupool." + its type, source names the
// server, data is the event's JSON object.
std::string EventToCloudEvent(const EventRecord& e, std::string_view source);

// {"error": "..."} bodies.
std::string ErrorJson(std::string_view message);

// Whether `s` is well-formed UTF-8 (RFC 3629): request targets and queries must be.
bool IsValidUtf8(std::string_view s);

// Base64 (RFC 4648, with padding): how task output, any bytes, travels in a heartbeat.
std::string Base64Encode(std::string_view bytes);
std::optional<std::string> Base64Decode(std::string_view text);

}  // namespace gp
