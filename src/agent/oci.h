// The `oci` driver: a task in an OCI container that runc runs (docs/live-pool.md). The agent
// writes the bundle's config.json (runtime-spec 1.0): the job's root file system, namespaces
// (pid, ipc, uts, mount; the host's network, for MASTER_ADDR), no capabilities, cgroup limits
// (memory, CPU, processes; devices denied but those given), the task's directory mounted at
// /task, and the GPUs given passed the CDI way: the Container Device Interface specs under
// /etc/cdi and /var/run/cdi (as `nvidia-ctk cdi generate` writes them on GPU hosts) are read,
// and exactly the given GPUs' device nodes, mounts, environment and hooks applied.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace gp {

// What a CDI spec's containerEdits say (CDI 0.5-0.8).
struct CdiDeviceNode {
  std::string path;       // in the container
  std::string host_path;  // default: path
  std::string type;       // "c" or "b"; default: the host node's
  int64_t major = -1;     // default: the host node's
  int64_t minor = -1;
  std::string permissions;  // "rwm" by default
  std::optional<uint32_t> file_mode, uid, gid;
};
struct CdiMount {
  std::string host_path;
  std::string container_path;
  std::string type;  // default "bind"
  std::vector<std::string> options;
};
struct CdiHook {
  std::string hook_name;  // an OCI hook point: prestart, createRuntime, createContainer, startContainer, poststart, poststop
  std::string path;
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::optional<int> timeout;
};
struct CdiEdits {
  std::vector<std::string> env;  // NAME=VALUE
  std::vector<CdiDeviceNode> device_nodes;
  std::vector<CdiMount> mounts;
  std::vector<CdiHook> hooks;
  void Append(const CdiEdits& more);
  bool empty() const { return env.empty() && device_nodes.empty() && mounts.empty() && hooks.empty(); }
};

struct CdiSpec {
  std::string file;  // where it was read from
  std::string kind;  // vendor.com/class, e.g. nvidia.com/gpu
  CdiEdits common;   // the spec's own containerEdits: applied with any of its devices
  std::vector<std::pair<std::string, CdiEdits>> devices;  // by name ("0", a UUID, "all")
};

// Parses one CDI spec (YAML or JSON, which YAML reads too); the error names the file and field.
Result<CdiSpec> ParseCdiSpec(std::string_view text, const std::string& file);

// The CDI specs of a node.
class CdiRegistry {
 public:
  // Every *.json, *.yaml and *.yml file in `dirs` (a directory that does not exist is
  // skipped); a spec that does not parse is an error naming its file.
  static Result<CdiRegistry> Load(const std::vector<std::filesystem::path>& dirs);
  bool has(std::string_view kind) const;
  // The edits that give a container the devices `names` of `kind` (CDI's fully-qualified
  // kind=name), their specs' common edits once; a name no spec has is an error.
  Result<CdiEdits> Resolve(std::string_view kind, const std::vector<std::string>& names) const;
  // One device's own edits, without its spec's common ones; nullptr when no spec has it.
  const CdiEdits* Own(std::string_view kind, std::string_view name) const;
  size_t size() const { return specs_.size(); }

 private:
  std::vector<CdiSpec> specs_;
};

// A task as the container's config sees it.
struct OciTask {
  std::vector<std::string> args;
  std::vector<std::string> env;  // NAME=VALUE
  std::string cwd;
  uint32_t uid = 65534;
  uint32_t gid = 65534;
  std::filesystem::path rootfs;
  bool read_only_root = false;
  std::string hostname;
  int64_t memory_bytes = 0;     // 0: no limit
  int64_t cpu_millicores = 0;   // 0: no limit
  int64_t pids_limit = 0;       // 0: no limit
  bool memory_swap_limit = false;  // the host has swap accounting: swap is limited to nothing more
  std::vector<std::pair<std::filesystem::path, std::string>> binds;  // host directory -> container path, read-write
  std::string cgroups_path;     // "/gpupool/..."
};

// config.json for the task, with the CDI edits applied; device nodes without type, major and
// minor take them from the host's node (an error names a node that is not there).
Result<std::string> OciConfig(const OciTask& t, const CdiEdits& cdi);

// The kills of the container's cgroup for memory (cgroup v1: memory.oom_control's oom_kill;
// v2: memory.events'), read after it exited (runc run --keep leaves the cgroup until delete).
int64_t OomKills(const std::string& cgroups_path);

// Whether the host accounts swap in its memory cgroups (v1: memory.memsw.*; v2: memory.swap.max).
bool SwapAccounting();

}  // namespace gp
