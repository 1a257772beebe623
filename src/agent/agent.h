// The node agent: registers the node's inventory with the server, then heartbeats with
// telemetry and task news, and runs the tasks the server hands it as real process groups.
// The heartbeat is a long poll while idle (new work arrives at once) and short while tasks run
// (exits are reported within ~20 ms). Single-threaded; Run() blocks until `stop` is set.
#pragma once

#include <atomic>
#include <filesystem>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "adapters/http.h"
#include "adapters/procfs.h"
#include "agent/cgroup.h"
#include "agent/checkpoints.h"
#include "agent/oci.h"
#include "observe/metrics.h"
#include "telemetry/gpu_source.h"
#include "wire/codec.h"

namespace gp {

struct AgentOptions {
  std::string server = "127.0.0.1:7070";
  std::string join_token;
  std::string name;            // default: the host name
  std::string claim;           // the claim this machine was created for (by the pool's provisioner)
  std::string site = "local";
  std::string provider = "local";
  std::string tier = "on-demand";
  std::string address = "127.0.0.1";  // how other nodes reach this one (MASTER_ADDR)
  std::string simulate_gpus;   // "8xH100"; empty: NVML
  std::filesystem::path work_dir = "/tmp/gpupool-agent";
  Millis interval{500};
  Millis kill_grace{5'000};    // SIGTERM, then SIGKILL after this
  std::string self_exe;        // this binary, to run `gpupool supervise` (default /proc/self/exe)
  // Carried checkpoints: how often a running task's directory is looked at (a change that has
  // stayed still for one period is shipped), and the largest archive shipped.
  Millis checkpoint_sync{5'000};
  int64_t checkpoint_max_mib = 1024;
  // A GPU's self-test: this command (exit 0 = healthy), else the built-in CUDA check on real
  // GPUs; simulated GPUs pass when no command is given.
  std::string selftest_command;
  Millis selftest_timeout{120'000};
  // Prometheus /metrics (dcgm-exporter's names, on its port); "off": none.
  std::string metrics_listen = "127.0.0.1:9400";
  // When the agent runs as root, tasks run as this user (they never get root, nor the agent's
  // files or environment); ignored otherwise (an agent cannot give what it does not have).
  std::string job_user = "nobody";
  // TLS (https:// servers): the pool's CA, when not checked against the join token's hash
  // (the agent keeps the one it checked in its work dir); and plain HTTP to another host,
  // refused unless this is set.
  std::string ca_file;
  bool insecure_http = false;
  // Drivers (docs/live-pool.md): "auto" (process, and oci where the agent is root and runc
  // runs), or a list: "process", "process,oci".
  std::string drivers = "auto";
  std::string runc = "runc";
  // The operator's OCI tool that unpacks a job's `image` into a root file system, with {image}
  // and {dir} replaced (e.g. "umoci unpack --image {image} {dir}": the root is DIR/rootfs).
  std::string oci_unpack;
  std::vector<std::string> cdi_dirs = {"/etc/cdi", "/var/run/cdi"};
  std::string cdi_kind = "nvidia.com/gpu";  // the CDI kind whose devices are this node's GPUs
  int64_t pids_limit = 4096;  // processes (and threads) a task may have at once; 0: no limit
};

}  // namespace gp
namespace prometheus {
class Exposer;
}
namespace gp {

class Agent {
 public:
  ~Agent();
  static Result<std::unique_ptr<Agent>> Create(AgentOptions options);
  Status Run(const std::atomic<bool>& stop);

 private:
  struct Task {
    TaskLaunch launch;
    pid_t pid = -1;
    int64_t started_ms = 0;
    bool reported_running = false;
    std::optional<int> exit_code;
    std::optional<int> signal;
    std::string error;
    std::array<int64_t, 2> sent{};   // bytes of stdout, stderr shipped
    int64_t kill_at_ms = 0;          // SIGKILL deadline after a cancel
    bool adopted = false;            // started by an earlier agent process: watch its status file
    std::array<int64_t, 2> saved{};  // shipped offsets last written to the task's directory
    int64_t dropped = 0;             // output bytes skipped (written faster than shipped), unreported
    bool log_backlog = false;
    std::array<int64_t, 2> in_flight{};  // bytes of stdout, stderr read into the heartbeat being sent        // output left unshipped at the last look: look again next heartbeat
    bool lost = false;               // its lease ran out: the supervisor stopped it
    // Carried checkpoint (launch.carry_checkpoint): its directory here, what it held at the last
    // look and at the last shipment, and whether its last shipment after the end is done.
    std::filesystem::path ckpt_dir;
    TreeSignature ckpt_seen;
    TreeSignature ckpt_sent;
    bool ckpt_busy = false;
    bool ckpt_final = false;
    int ckpt_failures = 0;
  };
  struct SelfTestRun {
    int gpu = 0;
    int64_t deadline_ms = 0;
    std::filesystem::path log;
  };

  Agent(AgentOptions o, std::unique_ptr<GpuSource> gpus, HttpClient client);
  Status Register();
  void Start(const TaskLaunch& l, const std::string& note = {});
  // Starts what the server gave, 100 ms of it at a time; a later attempt that carries a
  // checkpoint waits for it to be restored first.
  void StartSome();
  void CarryCheckpoints(int64_t now);  // ship changed checkpoints; hold ended tasks until shipped
  void StartSelfTest(int gpu);
  void SelfTestEnded(pid_t pid, int status);
  std::filesystem::path CheckpointDir(const TaskKey& key) const;
  void Cancel(const TaskKey& key, int grace_ms = -1);
  void RenewLease();
  void Adopt();           // the tasks an earlier agent process left running here
  void SaveShipped();     // how much output went out, per task, for a later agent
  void Reap();
  void MarkGpus();
  void StartMetrics();
  void UpdateMetrics();
  std::filesystem::path TaskDir(const TaskKey& key) const;
  // Appends up to `budget` bytes of new output to the report (less what it used); true when
  // everything written so far has been shipped.
  bool ShipLogs(Task& t, TaskReport& r, int64_t& budget);
  void ReadStatus(const TaskKey& key, Task& t);  // the supervisor's status file: a lost lease
  std::filesystem::path CredentialPath() const { return o_.work_dir / "node.credential"; }
  std::filesystem::path CaPath() const { return o_.work_dir / "ca.crt"; }
  std::filesystem::path CertPath() const { return o_.work_dir / "node.crt"; }
  std::filesystem::path KeyPath() const { return o_.work_dir / "node.key"; }
  // TLS: the pool's CA, fetched from the server and checked against the join token's hash
  // (kubeadm's discovery) unless one is given or kept; a mismatch is refused (kInvalidArgument).
  Status TrustServer();
  // Keeps a client certificate the server issued (and its key) and uses it from now on; it is
  // renewed at two thirds of what is left of it now.
  Status UseCertificate(const std::string& cert_pem, const std::string& key_pem);
  // A new key and certificate before the one in use expires (POST /v1/agent/certificate).
  Status RotateCertificate();
  // The oci driver: whether this node offers it (and why not), at start.
  void DetectDrivers();
  // Writes the task's bundle (TASK_DIR/bundle/config.json) and returns runc's command line;
  // the error says why the task cannot run here.
  Result<std::vector<std::string>> PrepareContainer(const TaskKey& key, const TaskLaunch& l,
                                                    std::vector<std::pair<std::string, std::string>> env, int uid, int gid,
                                                    const std::string& user, const std::filesystem::path& cwd);
  // A job's image as a root file system: unpacked once by --oci-unpack, kept in the work dir.
  Result<std::filesystem::path> ImageRootfs(const std::string& image);
  // After an oci task ended: why (an OOM kill, from its cgroup), then its container deleted.
  void ContainerEnded(const TaskKey& key, Task& t);
  // The kernel killed the task for its memory limit: said in its error and its stderr.
  void NoteOom(const TaskKey& key, Task& t, int64_t memory_mib);
  // The user tasks run as: --job-user when the agent is root, else the agent's own.
  std::string TaskUser() const { return job_uid_ >= 0 ? o_.job_user : (getenv("USER") ? getenv("USER") : ""); }
  void RenewLeaseWhileAway(int64_t& backoff);
  void Exited(Task& t, int status);

  AgentOptions o_;
  std::unique_ptr<GpuSource> gpus_;
  HttpClient client_;
  ProcfsHost host_;
  std::map<TaskKey, Task> tasks_;
  std::set<TaskKey> seen_;  // every task attempt ever launched: a repeated launch is ignored
  std::map<pid_t, TaskKey> by_pid_;
  std::deque<TaskLaunch> to_start_;  // accepted, not yet started: spawned 100 ms at a time
  std::map<TaskKey, TaskLaunch> restoring_;  // waiting for their checkpoint to arrive
  std::map<TaskKey, std::string> restored_;  // arrived (or given up on): what to tell the task
  std::unique_ptr<CheckpointCarrier> carrier_;
  int64_t last_ckpt_scan_ms_ = 0;
  std::map<pid_t, SelfTestRun> selftests_;
  std::vector<GpuSelfTest> selftest_results_;  // to report in the next heartbeat
  int lease_ms_ = 2500;     // as the server says at registration
  int server_interval_ms_ = 0;  // the idle heartbeat interval the server asks for
  bool registered_once_ = false;  // client_ holds a server that answered
  uint64_t epoch_ = 0;          // the newest leader epoch seen (several servers): older replies are not acted on
  std::string supervisor_;  // gpupool-supervise beside the agent's binary, else the binary itself
  int64_t last_log_scan_ms_ = 0;
  CgroupLimiter cgroups_;  // detected at start (Create), with this agent's scope
  int64_t last_sample_ms_ = 0;
  bool telemetry_due_ = true;  // a sample taken since the last heartbeat that carried one
  HostSample host_sample_;
  std::vector<GpuSample> gpu_sample_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<SnapshotCollectable> metrics_;
  std::array<int, kMaxGpusPerNode> last_xid_{};
  std::vector<GpuDevice> devices_;
  std::string credential_;  // this node's own, from the server (kept in the work dir)
  bool use_tls_ = false;     // the server is https://
  std::string ca_hash_;      // from the join token: the CA the server must have
  ClientTls tls_;            // the CA, and the node's client certificate once issued
  std::string pending_key_;  // the key of the CSR in flight (registration)
  int64_t cert_renew_at_ms_ = 0;  // wall clock; 0: no certificate
  bool oci_ = false;             // this node runs oci tasks
  std::string oci_why_not_;
  std::string runc_;             // runc's path
  CdiRegistry cdi_;
  std::string cgroup_prefix_;    // "/gpupool/<this agent>": its containers' cgroups below it
  // Per GPU, the device rules ("c 195:1 rwm") of its own nodes: denied to a process task that
  // was not given it (cgroup v1's devices controller).
  std::array<std::vector<std::string>, kMaxGpusPerNode> gpu_device_rules_;
  int job_uid_ = -1;         // tasks' user when the agent is root
  int job_gid_ = -1;
  std::string job_home_user_;
};

}  // namespace gp
