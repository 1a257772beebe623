#include "agent/oci.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace gp {
namespace {

using nlohmann::json;

struct BadSpec {
  std::string message;
};

std::string Text(const YAML::Node& n, const std::string& where) {
  if (!n) return {};
  if (!n.IsScalar()) throw BadSpec{where + ": expected text"};
  return n.as<std::string>();
}

std::vector<std::string> Texts(const YAML::Node& n, const std::string& where) {
  std::vector<std::string> out;
  if (!n || n.IsNull()) return out;
  if (!n.IsSequence()) throw BadSpec{where + ": expected a list"};
  for (size_t i = 0; i < n.size(); ++i) out.push_back(Text(n[i], fmt::format("{}[{}]", where, i)));
  return out;
}

template <typename T>
std::optional<T> Number(const YAML::Node& n, const std::string& where) {
  if (!n || n.IsNull()) return std::nullopt;
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    throw BadSpec{where + ": expected a number"};
  }
}

CdiEdits EditsFrom(const YAML::Node& e, const std::string& where) {
  CdiEdits out;
  if (!e || e.IsNull()) return out;
  if (!e.IsMap()) throw BadSpec{where + ": expected a mapping"};
  out.env = Texts(e["env"], where + ".env");
  if (const YAML::Node nodes = e["deviceNodes"]; nodes && !nodes.IsNull()) {
    if (!nodes.IsSequence()) throw BadSpec{where + ".deviceNodes: expected a list"};
    for (size_t i = 0; i < nodes.size(); ++i) {
      const std::string at = fmt::format("{}.deviceNodes[{}]", where, i);
      CdiDeviceNode d{.path = Text(nodes[i]["path"], at + ".path"), .host_path = Text(nodes[i]["hostPath"], at + ".hostPath"),
                      .type = Text(nodes[i]["type"], at + ".type"), .permissions = Text(nodes[i]["permissions"], at + ".permissions")};
      if (d.path.empty() || d.path[0] != '/') throw BadSpec{at + ".path: expected an absolute path"};
      d.major = Number<int64_t>(nodes[i]["major"], at + ".major").value_or(-1);
      d.minor = Number<int64_t>(nodes[i]["minor"], at + ".minor").value_or(-1);
      d.file_mode = Number<uint32_t>(nodes[i]["fileMode"], at + ".fileMode");
      d.uid = Number<uint32_t>(nodes[i]["uid"], at + ".uid");
      d.gid = Number<uint32_t>(nodes[i]["gid"], at + ".gid");
      out.device_nodes.push_back(std::move(d));
    }
  }
  if (const YAML::Node mounts = e["mounts"]; mounts && !mounts.IsNull()) {
    if (!mounts.IsSequence()) throw BadSpec{where + ".mounts: expected a list"};
    for (size_t i = 0; i < mounts.size(); ++i) {
      const std::string at = fmt::format("{}.mounts[{}]", where, i);
      CdiMount m{.host_path = Text(mounts[i]["hostPath"], at + ".hostPath"),
                 .container_path = Text(mounts[i]["containerPath"], at + ".containerPath"),
                 .type = Text(mounts[i]["type"], at + ".type"), .options = Texts(mounts[i]["options"], at + ".options")};
      if (m.host_path.empty() || m.container_path.empty()) throw BadSpec{at + ": hostPath and containerPath are required"};
      out.mounts.push_back(std::move(m));
    }
  }
  if (const YAML::Node hooks = e["hooks"]; hooks && !hooks.IsNull()) {
    if (!hooks.IsSequence()) throw BadSpec{where + ".hooks: expected a list"};
    static const std::vector<std::string> kPoints = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart",
                                                     "poststop"};
    for (size_t i = 0; i < hooks.size(); ++i) {
      const std::string at = fmt::format("{}.hooks[{}]", where, i);
      CdiHook h{.hook_name = Text(hooks[i]["hookName"], at + ".hookName"), .path = Text(hooks[i]["path"], at + ".path"),
                .args = Texts(hooks[i]["args"], at + ".args"), .env = Texts(hooks[i]["env"], at + ".env"),
                .timeout = Number<int>(hooks[i]["timeout"], at + ".timeout")};
      if (std::find(kPoints.begin(), kPoints.end(), h.hook_name) == kPoints.end()) {
        throw BadSpec{fmt::format("{}.hookName: '{}' is not an OCI hook point", at, h.hook_name)};
      }
      if (h.path.empty()) throw BadSpec{at + ".path: required"};
      out.hooks.push_back(std::move(h));
    }
  }
  return out;
}

}  // namespace

void CdiEdits::Append(const CdiEdits& more) {
  env.insert(env.end(), more.env.begin(), more.env.end());
  device_nodes.insert(device_nodes.end(), more.device_nodes.begin(), more.device_nodes.end());
  mounts.insert(mounts.end(), more.mounts.begin(), more.mounts.end());
  hooks.insert(hooks.end(), more.hooks.begin(), more.hooks.end());
}

Result<CdiSpec> ParseCdiSpec(std::string_view text, const std::string& file) {
  try {
    const YAML::Node root = YAML::Load(std::string(text));
    if (!root.IsMap()) throw BadSpec{"expected a mapping with cdiVersion, kind and devices"};
    CdiSpec spec{.file = file, .kind = Text(root["kind"], "kind")};
    if (Text(root["cdiVersion"], "cdiVersion").empty()) throw BadSpec{"cdiVersion: required"};
    const size_t slash = spec.kind.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == spec.kind.size()) {
      throw BadSpec{fmt::format("kind: '{}' is not VENDOR/CLASS (e.g. nvidia.com/gpu)", spec.kind)};
    }
    spec.common = EditsFrom(root["containerEdits"], "containerEdits");
    const YAML::Node devices = root["devices"];
    if (!devices || !devices.IsSequence()) throw BadSpec{"devices: expected a list"};
    for (size_t i = 0; i < devices.size(); ++i) {
      const std::string at = fmt::format("devices[{}]", i);
      const std::string name = Text(devices[i]["name"], at + ".name");
      if (name.empty()) throw BadSpec{at + ".name: required"};
      spec.devices.emplace_back(name, EditsFrom(devices[i]["containerEdits"], at + ".containerEdits"));
    }
    return spec;
  } catch (const BadSpec& b) {
    return InvalidArgument(fmt::format("CDI spec {}: {}", file, b.message));
  } catch (const YAML::Exception& e) {
    return InvalidArgument(fmt::format("CDI spec {}: line {}: {}", file, e.mark.line + 1, e.msg));
  }
}

Result<CdiRegistry> CdiRegistry::Load(const std::vector<std::filesystem::path>& dirs) {
  CdiRegistry r;
  for (const auto& dir : dirs) {
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) continue;
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      const std::string ext = entry.path().extension().string();
      if (entry.is_regular_file(ec) && (ext == ".json" || ext == ".yaml" || ext == ".yml")) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());  // one order on every host
    for (const auto& f : files) {
      std::ifstream in(f);
      std::stringstream text;
      text << in.rdbuf();
      auto spec = ParseCdiSpec(text.str(), f.string());
      if (!spec) return tl::unexpected(spec.error());
      r.specs_.push_back(std::move(*spec));
    }
  }
  return r;
}

bool CdiRegistry::has(std::string_view kind) const {
  return std::any_of(specs_.begin(), specs_.end(), [&](const CdiSpec& s) { return s.kind == kind; });
}

const CdiEdits* CdiRegistry::Own(std::string_view kind, std::string_view name) const {
  for (const CdiSpec& s : specs_) {
    if (s.kind != kind) continue;
    for (const auto& [n, edits] : s.devices) {
      if (n == name) return &edits;
    }
  }
  return nullptr;
}

Result<CdiEdits> CdiRegistry::Resolve(std::string_view kind, const std::vector<std::string>& names) const {
  CdiEdits out;
  std::vector<const CdiSpec*> used;
  for (const std::string& name : names) {
    const CdiEdits* found = nullptr;
    for (const CdiSpec& s : specs_) {
      if (s.kind != kind) continue;
      for (const auto& [n, edits] : s.devices) {
        if (n != name) continue;
        found = &edits;
        if (std::find(used.begin(), used.end(), &s) == used.end()) used.push_back(&s);
        break;
      }
      if (found) break;
    }
    if (!found) return Error(StatusCode::kNotFound, fmt::format("no CDI device {}={} in this node's specs", kind, name));
    out.Append(*found);
  }
  for (const CdiSpec* s : used) out.Append(s->common);
  return out;
}

Result<std::string> OciConfig(const OciTask& t, const CdiEdits& cdi) {
  json mounts = json::array({
      {{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}, {"options", {"nosuid", "noexec", "nodev"}}},
      {{"destination", "/dev"}, {"type", "tmpfs"}, {"source", "tmpfs"}, {"options", {"nosuid", "strictatime", "mode=755", "size=65536k"}}},
      {{"destination", "/dev/pts"},
       {"type", "devpts"},
       {"source", "devpts"},
       {"options", {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}}},
      {{"destination", "/dev/shm"}, {"type", "tmpfs"}, {"source", "shm"}, {"options", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}}},
      {{"destination", "/dev/mqueue"}, {"type", "mqueue"}, {"source", "mqueue"}, {"options", {"nosuid", "noexec", "nodev"}}},
      {{"destination", "/sys"}, {"type", "sysfs"}, {"source", "sysfs"}, {"options", {"nosuid", "noexec", "nodev", "ro"}}},
      {{"destination", "/tmp"}, {"type", "tmpfs"}, {"source", "tmpfs"}, {"options", {"nosuid", "nodev", "mode=1777"}}},
  });
  for (const auto& [host, inside] : t.binds) {
    mounts.push_back({{"destination", inside}, {"type", "bind"}, {"source", host.string()}, {"options", {"rbind", "rw", "nosuid", "nodev"}}});
  }
  for (const CdiMount& m : cdi.mounts) {
    json options = m.options.empty() ? json::array({"rbind", "ro", "nosuid", "nodev"}) : json(m.options);
    mounts.push_back({{"destination", m.container_path}, {"type", m.type.empty() ? "bind" : m.type}, {"source", m.host_path},
                      {"options", options}});
  }
  // Devices: every one denied, then the default ones (null, zero, ...: runc adds them) and
  // exactly the given GPUs' nodes.
  json devices = json::array();
  json allow = json::array({{{"allow", false}, {"access", "rwm"}}});
  for (const CdiDeviceNode& d : cdi.device_nodes) {
    const std::string host = d.host_path.empty() ? d.path : d.host_path;
    std::string type = d.type;
    int64_t maj = d.major;
    int64_t min = d.minor;
    uint32_t mode = d.file_mode.value_or(0666);
    if (type.empty() || maj < 0 || min < 0) {
      struct stat st {};
      if (stat(host.c_str(), &st) != 0 || !(S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))) {
        return Error(StatusCode::kFailedPrecondition, fmt::format("CDI device node {}: {} is not a device on this host", d.path, host));
      }
      if (type.empty()) type = S_ISCHR(st.st_mode) ? "c" : "b";
      if (maj < 0) maj = gnu_dev_major(st.st_rdev);
      if (min < 0) min = gnu_dev_minor(st.st_rdev);
      if (!d.file_mode) mode = st.st_mode & 07777;
    }
    json dev{{"path", d.path}, {"type", type}, {"major", maj}, {"minor", min}, {"fileMode", mode}};
    dev["uid"] = d.uid.value_or(0);
    dev["gid"] = d.gid.value_or(0);
    devices.push_back(dev);
    allow.push_back({{"allow", true}, {"type", type}, {"major", maj}, {"minor", min},
                     {"access", d.permissions.empty() ? "rwm" : d.permissions}});
  }
  json resources{{"devices", allow}};
  if (t.memory_bytes > 0) {
    resources["memory"] = {{"limit", t.memory_bytes}};
    if (t.memory_swap_limit) resources["memory"]["swap"] = t.memory_bytes;  // memory and swap together: no swap
  }
  if (t.cpu_millicores > 0) resources["cpu"] = {{"period", 100000}, {"quota", t.cpu_millicores * 100}};
  if (t.pids_limit > 0) resources["pids"] = {{"limit", t.pids_limit}};
  std::vector<std::string> env = t.env;
  env.insert(env.end(), cdi.env.begin(), cdi.env.end());
  json hooks = json::object();
  for (const CdiHook& h : cdi.hooks) {
    json hook{{"path", h.path}};
    if (!h.args.empty()) hook["args"] = h.args;
    if (!h.env.empty()) hook["env"] = h.env;
    if (h.timeout) hook["timeout"] = *h.timeout;
    hooks[h.hook_name].push_back(hook);
  }
  const json none = json::array();
  json config{
      {"ociVersion", "1.0.2"},
      {"process",
       {{"terminal", false},
        {"user", {{"uid", t.uid}, {"gid", t.gid}}},
        {"args", t.args},
        {"env", env},
        {"cwd", t.cwd},
        {"capabilities", {{"bounding", none}, {"effective", none}, {"permitted", none}, {"inheritable", none}, {"ambient", none}}},
        {"noNewPrivileges", true}}},
      {"root", {{"path", t.rootfs.string()}, {"readonly", t.read_only_root}}},
      {"hostname", t.hostname},
      {"mounts", mounts},
      {"linux",
       {{"resources", resources},
        {"cgroupsPath", t.cgroups_path},
        // The host's network (a distributed job's tasks reach MASTER_ADDR as processes do).
        {"namespaces", {{{"type", "pid"}}, {{"type", "ipc"}}, {{"type", "uts"}}, {{"type", "mount"}}}},
        {"devices", devices},
        {"maskedPaths",
         {"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
          "/proc/sched_debug", "/sys/firmware", "/proc/scsi"}},
        {"readonlyPaths", {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}}}},
  };
  if (!hooks.empty()) config["hooks"] = hooks;
  return config.dump(1);
}

int64_t OomKills(const std::string& cgroups_path) {
  for (const auto& [file, key] : {std::pair{"/sys/fs/cgroup/memory" + cgroups_path + "/memory.oom_control", "oom_kill"},
                                  std::pair{"/sys/fs/cgroup" + cgroups_path + "/memory.events", "oom_kill"}}) {
    std::ifstream in(file);
    std::string name;
    int64_t value = 0;
    while (in >> name >> value) {
      if (name == key) return value;
    }
  }
  return 0;
}

bool SwapAccounting() {
  std::error_code ec;
  return std::filesystem::exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", ec) ||
         std::filesystem::exists("/sys/fs/cgroup/cgroup.controllers", ec);
}

}  // namespace gp
