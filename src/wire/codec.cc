// Every codec of wire/codec.h (about 800 lines: one strict reader and one writer per message
// type, over the field helpers they all share; split by type, each file would repeat them).
#include "wire/codec.h"

#include <cctype>
#include <charconv>
#include <ctime>

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <set>
#include <unordered_set>

#include "core/units.h"

namespace gp {
namespace {

// Output keeps its fields in the order written (ordered_json); input is parsed into the
// std::map-backed type, whose inserts cost O(log n): an ordered object's linear lookups made a
// hostile 1 MiB object with 95,000 keys take seconds to parse.
using Json = nlohmann::ordered_json;
using In = nlohmann::json;
constexpr auto kReplace = nlohmann::json::error_handler_t::replace;

// Thrown inside this file only; every public function converts it to a Status.
struct Bad {
  std::string message;
};

// The most a message may nest and hold: a linear pre-scan refuses anything past these before
// the parser builds a value (bounded work and memory per request, and no deep recursion).
constexpr int kMaxDepth = 32;
constexpr size_t kMaxValues = 500'000;

void CheckShape(std::string_view body, std::string_view what) {
  int depth = 0;
  size_t values = 1;
  bool in_string = false;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxDepth) throw Bad{fmt::format("{}: nested deeper than {} levels", what, kMaxDepth)};
    } else if (c == '}' || c == ']') {
      --depth;
    } else if (c == ',' || c == ':') {
      if (++values > kMaxValues) throw Bad{fmt::format("{}: more than {} values", what, kMaxValues)};
    }
  }
}

In ParseObject(std::string_view body, std::string_view what) {
  CheckShape(body, what);
  In j = In::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw Bad{fmt::format("{}: malformed JSON (or text that is not UTF-8)", what)};
  if (!j.is_object()) throw Bad{fmt::format("{}: expected a JSON object", what)};
  return j;
}

// The array at `key` (empty when absent or null); anything else is an error naming the field.
const In& Array(const In& j, const char* key) {
  static const In kEmpty = In::array();
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return kEmpty;
  if (!it->is_array()) throw Bad{fmt::format("field '{}': expected an array", key)};
  return *it;
}

// The object at `key`; an error naming the field when it is anything else.
const In& Object(const In& j, const char* key) {
  static const In kEmpty = In::object();
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return kEmpty;
  if (!it->is_object()) throw Bad{fmt::format("field '{}': expected an object", key)};
  return *it;
}

// A whole number in lo..hi from a JSON value; unsigned values past INT64_MAX are out of range,
// never wrapped (18446744073709551615 is not -1), and 6.7e47 is not a whole number.
int64_t Whole(const In& v, std::string_view name, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) throw Bad{fmt::format("field '{}': expected a whole number {}..{}", name, lo, hi)};
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    throw Bad{fmt::format("field '{}': must be {}..{}, got {}", name, lo, hi, v.get<uint64_t>())};
  }
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) throw Bad{fmt::format("field '{}': must be {}..{}, got {}", name, lo, hi, x)};
  return x;
}

// Text a user gives that reaches a program, a file name or a terminal: no NUL (argv would cut
// it short), and, with `no_control`, no control characters at all.
void CheckText(std::string_view s, std::string_view name, bool no_control) {
  for (unsigned char c : s) {
    if (c == 0) throw Bad{fmt::format("field '{}': contains a NUL byte", name)};
    if (no_control && (c < 0x20 || c == 0x7f)) throw Bad{fmt::format("field '{}': contains a control character", name)};
  }
}

// What a client sends as a command and environment: the checks of CheckText, and variable names
// that a program's environment can hold. (Records already stored are read without them: what
// was accepted before stays loadable.)
void CheckCommand(const std::vector<std::string>& command, const std::vector<std::pair<std::string, std::string>>& env,
                  std::string_view workdir) {
  for (const std::string& a : command) CheckText(a, "command", false);
  for (const auto& [k, v] : env) {
    if (k.empty() || k.find('=') != std::string::npos) throw Bad{"field 'env': names must be non-empty and without '='"};
    CheckText(k, "env", true);
    CheckText(v, "env", false);
  }
  CheckText(workdir, "workdir", false);
}

void OnlyFields(const In& j, std::initializer_list<std::string_view> allowed) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    for (std::string_view a : allowed) ok = ok || it.key() == a;
    if (!ok) {
      std::string list;
      for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      throw Bad{fmt::format("unknown field '{}'; expected one of: {}", it.key(), list)};
    }
  }
}

int64_t Int(const In& j, const char* key, int64_t lo, int64_t hi, int64_t fallback) {
  if (!j.is_object()) throw Bad{fmt::format("field '{}': expected inside an object", key)};
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return Whole(*it, key, lo, hi);
}

bool Bool(const In& j, const char* key, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) throw Bad{fmt::format("field '{}': expected true or false", key)};
  return it->get<bool>();
}

double Number(const In& j, const char* key, double lo, double hi, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const In& v = j[key];
  if (!v.is_number()) throw Bad{fmt::format("field '{}': expected a number {}..{}", key, lo, hi)};
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi)) throw Bad{fmt::format("field '{}': must be {}..{}, got {}", key, lo, hi, x)};
  return x;
}

std::string Str(const In& j, const char* key, std::string fallback = {}) {
  if (!j.is_object()) throw Bad{fmt::format("field '{}': expected inside an object", key)};
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) throw Bad{fmt::format("field '{}': expected a string", key)};
  return it->get<std::string>();
}

std::vector<std::string> Strings(const In& j, const char* key) {
  std::vector<std::string> out;
  if (!j.contains(key) || j[key].is_null()) return out;
  const In& v = j[key];
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array()) throw Bad{fmt::format("field '{}': expected an array of strings", key)};
  for (const In& e : v) {
    if (!e.is_string()) throw Bad{fmt::format("field '{}': expected an array of strings", key)};
    out.push_back(e.get<std::string>());
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> StringMap(const In& j, const char* key) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!j.contains(key) || j[key].is_null()) return out;
  if (!j[key].is_object()) throw Bad{fmt::format("field '{}': expected an object of strings", key)};
  for (auto it = j[key].begin(); it != j[key].end(); ++it) {
    if (!it.value().is_string()) throw Bad{fmt::format("field '{}.{}': expected a string", key, it.key())};
    out.emplace_back(it.key(), it.value().get<std::string>());
  }
  return out;
}

template <typename T, typename Parse>
T Unit(const In& j, const char* key, Parse parse, T fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_string()) throw Bad{fmt::format("field '{}': expected a string with a unit", key)};
  auto r = parse(j[key].get<std::string>());
  if (!r) throw Bad{fmt::format("field '{}': {}", key, r.error().message())};
  return *r;
}

// Whether `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing past
// U+10FFFF), as the JSON parser on the other side requires.
bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = cp << 6 | (d & 0x3F);
    }
    static constexpr uint32_t kLeast[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kLeast[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

// Output written straight to text in the order written (RapidJSON's SAX writer), for the
// messages written thousands of times a second at fleet scale: the job rows the store keeps,
// the launches agents receive, the agents' heartbeats. Building a value tree first and dumping
// it (nlohmann's ordered_json: an allocation per value, a linear search per key) was 40% of the
// server's loop in a 100,000-job storm. Text that is not UTF-8 is written with U+FFFD in place
// of the bad bytes, as the tree's dump does.
class Out {
 public:
  Out& Key(std::string_view k) {
    w_.Key(k.data(), static_cast<rapidjson::SizeType>(k.size()));
    return *this;
  }
  void Str(std::string_view v) {
    if (ValidUtf8(v)) {
      w_.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
    } else {
      const std::string replaced = Json(std::string(v)).dump(-1, ' ', false, kReplace);
      w_.RawValue(replaced.data(), replaced.size(), rapidjson::kStringType);
    }
  }
  void Int(int64_t v) { w_.Int64(v); }
  void UInt(uint64_t v) { w_.Uint64(v); }
  void Bool(bool v) { w_.Bool(v); }
  void Double(double v) { w_.Double(v); }
  void Null() { w_.Null(); }
  template <typename T>
  void IntOrNull(const std::optional<T>& v) {
    if (v) Int(*v);
    else Null();
  }
  void Strs(const std::vector<std::string>& v) {
    w_.StartArray();
    for (const std::string& e : v) Str(e);
    w_.EndArray();
  }
  template <typename T>
  void Ints(const std::vector<T>& v) {
    w_.StartArray();
    for (const T& e : v) Int(e);
    w_.EndArray();
  }
  // Names to values as a JSON object: a name given twice appears once, where it first did,
  // with the last value (what an environment's later assignment means).
  void Env(const std::vector<std::pair<std::string, std::string>>& env) {
    w_.StartObject();
    if (!HasDuplicateName(env)) {  // the usual case: as they come
      for (const auto& [k, v] : env) Key(k).Str(v);
      w_.EndObject();
      return;
    }
    std::unordered_set<std::string_view> seen;
    for (size_t i = 0; i < env.size(); ++i) {
      const std::string& k = env[i].first;
      if (!seen.insert(k).second) continue;
      const std::string* v = &env[i].second;
      for (size_t j = i + 1; j < env.size(); ++j) {
        if (env[j].first == k) v = &env[j].second;
      }
      Key(k).Str(*v);
    }
    w_.EndObject();
  }
  static bool HasDuplicateName(const std::vector<std::pair<std::string, std::string>>& env) {
    if (env.size() > 32) {
      std::unordered_set<std::string_view> names;
      for (const auto& e : env) {
        if (!names.insert(e.first).second) return true;
      }
      return false;
    }
    for (size_t i = 0; i < env.size(); ++i) {
      for (size_t j = i + 1; j < env.size(); ++j) {
        if (env[i].first == env[j].first) return true;
      }
    }
    return false;
  }
  void Object() { w_.StartObject(); }
  void EndObject() { w_.EndObject(); }
  void Array() { w_.StartArray(); }
  void EndArray() { w_.EndArray(); }
  std::string Text() const { return std::string(buf_.GetString(), buf_.GetSize()); }

 private:
  rapidjson::StringBuffer buf_;
  rapidjson::Writer<rapidjson::StringBuffer> w_{buf_};
};

template <typename F>
auto Guard(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Bad& b) {
    return InvalidArgument(b.message);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(fmt::format("malformed message: {}", e.what()));
  }
}

}  // namespace

// `dependency`, `driver`, and an oci job's `image` or `rootfs` and `read_only_root`: the fields
// of a submission and of a stored record alike.
static void ParseJobExtras(const In& j, JobRecord& r) {
  if (j.contains("dependency") && !j["dependency"].is_null()) {
    JobExtras deps;
    if (Status s = ParseDependencies(Str(j, "dependency"), deps); !s.ok()) throw Bad{s.message()};
    if (deps.has_dependencies()) {
      r.extras.ensure().after = std::move(deps.after);
      r.extras.ensure().singleton = deps.singleton;
    }
  }
  const std::string driver = Str(j, "driver", "process");
  auto d = ParseDriver(driver);
  if (!d) throw Bad{fmt::format("field 'driver': '{}' is not a driver; expected process or oci", driver.substr(0, 64))};
  r.spec.driver = *d;
  ContainerSpec c{.image = Str(j, "image"), .rootfs = Str(j, "rootfs"), .read_only = Bool(j, "read_only_root", false)};
  if (*d == Driver::kProcess) {
    for (const char* f : {"image", "rootfs", "read_only_root"}) {
      if (j.contains(f) && !j[f].is_null()) throw Bad{fmt::format("field '{}': only for driver \"oci\"", f)};
    }
    return;
  }
  if (c.image.empty() == c.rootfs.empty()) {
    throw Bad{"field 'rootfs': driver \"oci\" wants a root file system: 'rootfs' (a directory on the node) or 'image', one of them"};
  }
  CheckText(c.image, "image", true);
  CheckText(c.rootfs, "rootfs", true);
  if (c.image.size() > 512) throw Bad{"field 'image': at most 512 characters"};
  if (!c.rootfs.empty() && (c.rootfs[0] != '/' || c.rootfs.size() > 4096 || c.rootfs.find("/../") != std::string::npos ||
                            c.rootfs.ends_with("/.."))) {
    throw Bad{"field 'rootfs': expected an absolute path on the node, without '..'"};
  }
  r.extras.ensure().container = std::move(c);
}

Result<JobRecord> ParseSubmitRequest(std::string_view body, const PriorityResolver& priority_class) {
  return Guard([&]() -> Result<JobRecord> {
    const In j = ParseObject(body, "request body");
    OnlyFields(j, {"command", "gpus", "tasks", "gpu_model", "gpu_memory", "cpu", "memory", "priority", "tenant", "name",
                   "data", "duration", "time", "max_price", "env", "secrets", "workdir", "max_retries", "array", "driver",
                   "image", "rootfs", "read_only_root", "dependency"});
    JobRecord r;
    if (!j.contains("command")) throw Bad{"field 'command': required, e.g. [\"sh\", \"-c\", \"nvidia-smi\"]"};
    r.command = Strings(j, "command");
    if (r.command.empty() || r.command[0].empty()) throw Bad{"field 'command': must name a program"};
    if (r.command.size() > 4096) throw Bad{"field 'command': at most 4096 arguments"};
    JobSpec& s = r.spec;
    s.gpus_per_task = static_cast<int>(Int(j, "gpus", 0, kMaxGpusPerNode, 0));
    s.tasks = static_cast<int>(Int(j, "tasks", 1, kMaxTasksPerJob, 1));
    s.gpu_models = Strings(j, "gpu_model");
    s.min_gpu_memory = Unit<MiB>(j, "gpu_memory", ParseMiB, MiB{0});
    s.cpu_per_task = MilliCpu{static_cast<int64_t>(Number(j, "cpu", 0, 100'000, 0) * 1000)};
    s.memory_per_task = Unit<MiB>(j, "memory", ParseMiB, MiB{0});
    if (j.contains("priority") && j["priority"].is_string()) {
      // A priority class by name.
      const std::string name = j["priority"].get<std::string>();
      if (!priority_class) throw Bad{fmt::format("field 'priority': '{}': this pool has no priority classes (give a number)", name.substr(0, 64))};
      auto v = priority_class(name);
      if (!v) throw Bad{"field 'priority': " + v.error().message()};
      s.priority = *v;
    } else {
      s.priority = static_cast<int>(Int(j, "priority", -1'000'000, 1'000'000, 0));
    }
    r.priority_unset = !j.contains("priority") || j["priority"].is_null();
    s.tenant = Str(j, "tenant", "default");
    s.name = Str(j, "name");
    if (s.name.size() > 256) throw Bad{"field 'name': at most 256 characters"};
    if (j.contains("data") && !j["data"].is_null()) {
      const In& d = j["data"];
      if (!d.is_object()) throw Bad{"field 'data': expected {\"site\": ..., \"size\": \"100GB\"}"};
      OnlyFields(d, {"site", "size"});
      s.data = DataSet{.site = Str(d, "site"), .size = Unit<Bytes>(d, "size", ParseBytes, Bytes{0})};
      if (s.data->site.empty()) throw Bad{"field 'data.site': required"};
    }
    if (j.contains("duration") && !j["duration"].is_null()) s.estimated_duration = Unit<Millis>(j, "duration", ParseDuration, Millis{0});
    if (j.contains("time") && !j["time"].is_null()) {
      s.time_limit = Unit<Millis>(j, "time", ParseTimeLimit, Millis{0});
      if (s.time_limit.value() < 1'000 || s.time_limit.value() > 366LL * 86'400'000) throw Bad{"field 'time': must be 1s..366 days"};
    }
    if (j.contains("max_price") && !j["max_price"].is_null()) s.max_price_per_gpu_hour = UsdToMicro(Number(j, "max_price", 0, 1e6, 0));
    r.env = StringMap(j, "env");
    r.workdir = Str(j, "workdir");
    if (r.workdir.size() > 4096) throw Bad{"field 'workdir': at most 4096 characters"};
    if (r.env.size() > 1024) throw Bad{"field 'env': at most 1024 variables"};
    if (j.contains("secrets") && !j["secrets"].is_null()) {
      // The values as given: the API seals them before anything else sees the job.
      auto items = StringMap(j, "secrets");
      if (items.size() > 64) throw Bad{"field 'secrets': at most 64"};
      for (const auto& [k, v] : items) {
        CheckText(k, "secrets", true);
        if (k.empty() || k.size() > 128 || k.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
                                               std::string::npos || (k[0] >= '0' && k[0] <= '9')) {
          throw Bad{fmt::format("field 'secrets': '{}' is not a variable name (letters, digits, _; not a digit first)", k.substr(0, 64))};
        }
        if (v.size() > 65536) throw Bad{fmt::format("field 'secrets': '{}' is over 64 KiB", k)};
        for (const auto& [ek, ev] : r.env) {
          if (ek == k) throw Bad{fmt::format("field 'secrets': '{}' is also in 'env'", k)};
        }
      }
      if (!items.empty()) r.extras.ensure().secrets = std::move(items);
    }
    ParseJobExtras(j, r);
    CheckCommand(r.command, r.env, r.workdir);
    CheckText(s.name, "name", true);
    CheckText(s.tenant, "tenant", true);
    if (s.tenant.size() > 128) throw Bad{"field 'tenant': at most 128 characters"};
    r.max_retries = static_cast<int>(Int(j, "max_retries", 0, 100, -1));
    if (j.contains("array") && !j["array"].is_null()) {
      auto a = ParseArraySpec(Str(j, "array"));
      if (!a) throw Bad{"field 'array': " + a.error().message()};
      r.array = std::move(*a);
    }
    if (Status st = ValidateJobSpec(s); !st.ok()) throw Bad{st.message()};
    return r;
  });
}

std::string JobToJson(const JobRecord& r, std::optional<std::string_view> message, bool store) {
  const JobSpec& s = r.spec;
  Out o;
  o.Object();
  o.Key("id").Str(std::to_string(s.id.value()));
  o.Key("name").Str(s.name);
  o.Key("state").Str(JobStateName(r.state));
  o.Key("command").Strs(r.command);
  o.Key("tasks").Int(s.tasks);
  o.Key("gpus_per_task").Int(s.gpus_per_task);
  if (r.tasks.empty()) o.Key("node").Null();
  else o.Key("node").Str(r.tasks.front().node);
  o.Key("gpus").Array();
  if (!r.tasks.empty()) {
    for (int i = 0; i < 16; ++i) {
      if (r.tasks.front().allocation.gpu_mask >> i & 1) o.Int(i);
    }
  }
  o.EndArray();
  o.Key("exit_code").IntOrNull(r.exit_code);
  o.Key("signal").IntOrNull(r.signal);
  o.Key("priority").Int(s.priority);
  o.Key("tenant").Str(s.tenant);
  o.Key("gpu_model").Strs(s.gpu_models);
  o.Key("gpu_memory_mib").Int(s.min_gpu_memory.value());
  o.Key("cpu_millicores").Int(s.cpu_per_task.value());
  o.Key("memory_mib").Int(s.memory_per_task.value());
  if (s.data) {
    o.Key("data").Object();
    o.Key("site").Str(s.data->site);
    o.Key("bytes").Int(s.data->size.value());
    o.EndObject();
  }
  if (s.estimated_duration) o.Key("duration_ms").Int(s.estimated_duration->value());
  if (s.time_limit.value() > 0) o.Key("time_limit_ms").Int(s.time_limit.value());
  if (s.max_price_per_gpu_hour) o.Key("max_price_micro_usd").Int(s.max_price_per_gpu_hour->value());
  o.Key("env").Env(r.env);
  if (r.extras && !r.extras->secrets.empty()) {
    if (store) {
      o.Key("secrets").Env(r.extras->secrets);  // sealed
    } else {
      std::vector<std::string> names;
      for (const auto& [name, sealed] : r.extras->secrets) names.push_back(name);
      o.Key("secrets").Strs(names);  // set, never shown
    }
  }
  o.Key("workdir").Str(r.workdir);
  if (s.driver != Driver::kProcess) o.Key("driver").Str(DriverName(s.driver));
  if (r.extras && r.extras->has_dependencies()) o.Key("dependency").Str(DependencyText(*r.extras));
  if (r.extras && r.extras->container) {
    const ContainerSpec& c = *r.extras->container;
    if (!c.image.empty()) o.Key("image").Str(c.image);
    if (!c.rootfs.empty()) o.Key("rootfs").Str(c.rootfs);
    if (c.read_only) o.Key("read_only_root").Bool(true);
  }
  o.Key("submit_ms").Int(s.submit_time.value());
  o.Key("start_ms").Int(r.start_ms);
  o.Key("end_ms").Int(r.end_ms);
  o.Key("message").Str(message ? *message : std::string_view(r.message));
  o.Key("cancel_requested").Bool(r.cancel_requested);
  if (r.timed_out) o.Key("timed_out").Bool(true);
  o.Key("placement").Array();
  for (const TaskRecord& t : r.tasks) {
    o.Object();
    o.Key("node").Str(t.node);
    o.Key("gpu_mask").Int(t.allocation.gpu_mask);
    o.Key("share").Int(t.allocation.share.value());
    o.Key("cpu").Int(t.allocation.cpu.value());
    o.Key("memory").Int(t.allocation.memory.value());
    o.Key("started").Bool(t.started);
    o.Key("exit_code").IntOrNull(t.exit_code);
    o.Key("signal").IntOrNull(t.signal);
    o.EndObject();
  }
  o.EndArray();
  o.Key("attempt").Int(r.attempt);
  o.Key("max_retries").Int(r.max_retries);
  o.Key("failures").Int(r.failures);
  o.Key("attempts").Array();
  for (const AttemptRecord& a : r.attempts) {
    o.Object();
    o.Key("attempt").Int(a.attempt);
    o.Key("nodes").Strs(a.nodes);
    o.Key("start_ms").Int(a.start_ms);
    o.Key("end_ms").Int(a.end_ms);
    o.Key("outcome").Str(a.outcome);
    o.EndObject();
  }
  o.EndArray();
  o.Key("failing_over").Bool(r.failing_over);
  o.Key("fence_until_ms").Int(r.fence_until_ms);
  o.Key("not_before_ms").Int(r.not_before_ms);
  if (r.attained_gpu_ms > 0) o.Key("attained_gpu_ms").Int(r.attained_gpu_ms);
  if (r.array) {
    o.Key("array").Str(r.array->ToString());
    o.Key("array_size").Int(r.array->size());
    o.Key("array_expanded").Int(r.arr().expanded);
    if (r.arr().skipped > 0) o.Key("array_skipped").Int(r.arr().skipped);
    if (!r.arr().early_cancel.empty()) {
      o.Key("array_early_cancel").Array();
      for (int64_t e : r.arr().early_cancel) o.Int(e);
      o.EndArray();
    }
    // By state: elements with records, plus those not yet expanded (queued) or cancelled
    // before they were (shown, not stored: rebuilt from the elements on recovery).
    o.Key("array_counts").Object();
    for (auto st : {JobState::kQueued, JobState::kStarting, JobState::kRunning, JobState::kSucceeded, JobState::kFailed,
                    JobState::kCancelled}) {
      int64_t n = r.arr().element_counts[static_cast<size_t>(st)];
      const auto early = static_cast<int64_t>(r.arr().early_cancel.size());
      if (st == JobState::kQueued) n += r.array->size() - r.arr().expanded - early;
      if (st == JobState::kCancelled) n += r.arr().skipped + early;
      o.Key(JobStateName(st)).Int(n);
    }
    o.EndObject();
  }
  if (r.array_of != 0) {
    o.Key("array_job").Str(std::to_string(r.array_of));
    o.Key("array_index").Int(r.array_index);
  }
  o.EndObject();
  return o.Text();
}

Result<JobRecord> JobFromJson(std::string_view json) {
  return Guard([&]() -> Result<JobRecord> {
    const In j = ParseObject(json, "job record");
    JobRecord r;
    JobSpec& s = r.spec;
    const std::string id = Str(j, "id", "0");
    uint64_t idv = 0;
    auto [ip, iec] = std::from_chars(id.data(), id.data() + id.size(), idv);
    if (iec != std::errc() || ip != id.data() + id.size()) throw Bad{fmt::format("field 'id': expected a job number, got '{}'", id)};
    s.id = JobId{idv};
    s.name = Str(j, "name");
    auto st = ParseJobState(Str(j, "state"));
    if (!st) throw Bad{st.error().message()};
    r.state = *st;
    r.command = Strings(j, "command");
    s.tasks = static_cast<int>(Int(j, "tasks", 1, kMaxTasksPerJob, 1));
    s.gpus_per_task = static_cast<int>(Int(j, "gpus_per_task", 0, kMaxGpusPerNode, 0));
    if (j.contains("exit_code") && !j["exit_code"].is_null()) r.exit_code = static_cast<int>(Int(j, "exit_code", INT32_MIN, INT32_MAX, 0));
    if (j.contains("signal") && !j["signal"].is_null()) r.signal = static_cast<int>(Int(j, "signal", 0, 128, 0));
    s.priority = static_cast<int>(Int(j, "priority", INT32_MIN, INT32_MAX, 0));
    s.tenant = Str(j, "tenant");
    s.gpu_models = Strings(j, "gpu_model");
    s.min_gpu_memory = MiB{Int(j, "gpu_memory_mib", 0, INT64_MAX, 0)};
    s.cpu_per_task = MilliCpu{Int(j, "cpu_millicores", 0, INT64_MAX, 0)};
    s.memory_per_task = MiB{Int(j, "memory_mib", 0, INT64_MAX, 0)};
    if (j.contains("data")) s.data = DataSet{.site = Str(Object(j, "data"), "site"), .size = Bytes{Int(Object(j, "data"), "bytes", 0, INT64_MAX, 0)}};
    if (j.contains("duration_ms")) s.estimated_duration = Millis{Int(j, "duration_ms", 0, INT64_MAX, 0)};
    if (j.contains("time_limit_ms")) s.time_limit = Millis{Int(j, "time_limit_ms", 1'000, INT64_MAX, 1'000)};
    if (j.contains("max_price_micro_usd")) s.max_price_per_gpu_hour = MicroUsd{Int(j, "max_price_micro_usd", 0, INT64_MAX, 0)};
    r.env = StringMap(j, "env");
    if (j.contains("secrets") && j["secrets"].is_object()) r.extras.ensure().secrets = StringMap(j, "secrets");
    r.workdir = Str(j, "workdir");
    ParseJobExtras(j, r);
    s.submit_time = Millis{Int(j, "submit_ms", 0, INT64_MAX, 0)};
    r.start_ms = Int(j, "start_ms", 0, INT64_MAX, 0);
    r.end_ms = Int(j, "end_ms", 0, INT64_MAX, 0);
    r.message = Str(j, "message");
    r.cancel_requested = Bool(j, "cancel_requested", false);
    r.timed_out = Bool(j, "timed_out", false);
    r.attempt = static_cast<int>(Int(j, "attempt", 0, 1'000'000, 0));
    r.max_retries = static_cast<int>(Int(j, "max_retries", -1, 100, -1));
    r.failures = static_cast<int>(Int(j, "failures", 0, 1'000'000, 0));
    for (const In& a : Array(j, "attempts")) {
      r.attempts.push_back(AttemptRecord{.attempt = static_cast<int>(Int(a, "attempt", 0, 1'000'000, 0)),
                                         .nodes = Strings(a, "nodes"), .start_ms = Int(a, "start_ms", 0, INT64_MAX, 0),
                                         .end_ms = Int(a, "end_ms", 0, INT64_MAX, 0), .outcome = Str(a, "outcome")});
    }
    r.failing_over = Bool(j, "failing_over", false);
    r.fence_until_ms = Int(j, "fence_until_ms", 0, INT64_MAX, 0);
    r.not_before_ms = Int(j, "not_before_ms", 0, INT64_MAX, 0);
    r.attained_gpu_ms = Int(j, "attained_gpu_ms", 0, INT64_MAX, 0);
    if (j.contains("array")) {
      auto a = ParseArraySpec(Str(j, "array"));
      if (!a) throw Bad{"field 'array': " + a.error().message()};
      r.array = std::move(*a);
      r.arr().expanded = Int(j, "array_expanded", 0, r.array->size(), 0);
      r.arr().skipped = Int(j, "array_skipped", 0, r.arr().expanded, 0);
      for (const In& p : Array(j, "array_early_cancel")) {
        r.arr().early_cancel.insert(Whole(p, "array_early_cancel[]", r.arr().expanded, r.array->size() - 1));
      }
    }
    if (j.contains("array_job")) {
      const std::string parent = Str(j, "array_job");
      uint64_t pv = 0;
      auto [pp, pec] = std::from_chars(parent.data(), parent.data() + parent.size(), pv);
      if (pec != std::errc() || pp != parent.data() + parent.size() || pv == 0) {
        throw Bad{fmt::format("field 'array_job': expected a job number, got '{}'", parent)};
      }
      r.array_of = pv;
      r.array_index = static_cast<uint32_t>(Int(j, "array_index", 0, 4'000'000'000, 0));
    }
    if (j.contains("placement")) {
      for (const In& t : Array(j, "placement")) {
        TaskRecord tr{.node = Str(t, "node")};
        tr.allocation.gpu_mask = static_cast<uint16_t>(Int(t, "gpu_mask", 0, 0xFFFF, 0));
        tr.allocation.share = GpuMilli{Int(t, "share", 1, 1000, 1000)};
        tr.allocation.cpu = MilliCpu{Int(t, "cpu", 0, INT64_MAX, 0)};
        tr.allocation.memory = MiB{Int(t, "memory", 0, INT64_MAX, 0)};
        tr.started = Bool(t, "started", false);
        if (t.contains("exit_code") && !t["exit_code"].is_null()) tr.exit_code = static_cast<int>(Int(t, "exit_code", INT32_MIN, INT32_MAX, 0));
        if (t.contains("signal") && !t["signal"].is_null()) tr.signal = static_cast<int>(Int(t, "signal", 0, 128, 0));
        r.tasks.push_back(std::move(tr));
      }
    }
    return r;
  });
}

namespace {

// A device's fields, inside an object the caller opened (a node's view adds its own).
void GpuDeviceFields(Out& o, const GpuDevice& d) {
  o.Key("index").Int(d.index);
  o.Key("uuid").Str(d.uuid);
  o.Key("name").Str(d.name);
  o.Key("memory_mib").Int(d.memory.value());
  o.Key("compute_capability").Int(d.compute_capability);
  o.Key("nvlink_peers").Int(d.nvlink_peers);
}

GpuDevice GpuDeviceFrom(const In& g) {
  return GpuDevice{.index = static_cast<int>(Int(g, "index", 0, 15, 0)), .uuid = Str(g, "uuid"), .name = Str(g, "name"),
                   .memory = MiB{Int(g, "memory_mib", 0, INT64_MAX, 0)},
                   .compute_capability = static_cast<int>(Int(g, "compute_capability", 0, 1000, 0)),
                   .nvlink_peers = static_cast<uint16_t>(Int(g, "nvlink_peers", 0, 0xFFFF, 0))};
}

void GpuSampleOut(Out& o, const GpuSample& s) {
  o.Object();
  o.Key("index").Int(s.index);
  o.Key("utilisation").Int(s.utilisation.value());
  o.Key("memory_utilisation").Int(s.memory_utilisation.value());
  o.Key("memory_used_mib").Int(s.memory_used.value());
  o.Key("memory_total_mib").Int(s.memory_total.value());
  if (s.temperature_c) o.Key("temperature_c").Int(*s.temperature_c);
  if (s.power_mw) o.Key("power_mw").Int(*s.power_mw);
  if (s.ecc_uncorrected) o.Key("ecc_uncorrected").Int(*s.ecc_uncorrected);
  if (!s.xids.empty()) o.Key("xids").Ints(s.xids);
  o.EndObject();
}

GpuSample GpuSampleFrom(const In& g) {
  GpuSample s{.index = static_cast<int>(Int(g, "index", 0, 15, 0)),
              .utilisation = PerMille{Int(g, "utilisation", 0, 1000, 0)},
              .memory_utilisation = PerMille{Int(g, "memory_utilisation", 0, 1000, 0)},
              .memory_used = MiB{Int(g, "memory_used_mib", 0, INT64_MAX, 0)},
              .memory_total = MiB{Int(g, "memory_total_mib", 0, INT64_MAX, 0)}};
  if (g.contains("temperature_c")) s.temperature_c = static_cast<int>(Int(g, "temperature_c", -100, 1000, 0));
  if (g.contains("power_mw")) s.power_mw = Int(g, "power_mw", 0, INT64_MAX, 0);
  if (g.contains("ecc_uncorrected")) s.ecc_uncorrected = Int(g, "ecc_uncorrected", 0, INT64_MAX, 0);
  if (g.contains("xids")) {
    for (const In& x : Array(g, "xids")) s.xids.push_back(static_cast<int>(Whole(x, "gpus[].xids", 0, 100'000)));
  }
  return s;
}

void HostOut(Out& o, const HostSample& h) {
  o.Object();
  o.Key("cpu_cores").Int(h.cpu_cores);
  o.Key("cpu_busy").Int(h.cpu_busy.value());
  o.Key("memory_total_mib").Int(h.memory.total.value());
  o.Key("memory_available_mib").Int(h.memory.available.value());
  o.Key("net_rx_bytes").Int(h.net.rx.value());
  o.Key("net_tx_bytes").Int(h.net.tx.value());
  o.EndObject();
}

HostSample HostFrom(const In& h) {
  return HostSample{.cpu_cores = static_cast<int>(Int(h, "cpu_cores", 0, 100'000, 0)),
                    .cpu_busy = PerMille{Int(h, "cpu_busy", 0, 1000, 0)},
                    .memory = {.total = MiB{Int(h, "memory_total_mib", 0, INT64_MAX, 0)},
                               .available = MiB{Int(h, "memory_available_mib", 0, INT64_MAX, 0)}},
                    .net = {.rx = Bytes{Int(h, "net_rx_bytes", 0, INT64_MAX, 0)}, .tx = Bytes{Int(h, "net_tx_bytes", 0, INT64_MAX, 0)}}};
}

}  // namespace

std::string NodeToJson(const NodeRecord& n, const Fleet& fleet, std::string_view state, int free_gpus) {
  Out o;
  o.Object();
  o.Key("name").Str(n.spec.name);
  o.Key("state").Str(state);
  o.Key("site").Str(n.site);
  o.Key("provider").Str(n.provider);
  o.Key("tier").Str(PriceTierName(n.spec.tier));
  o.Key("address").Str(n.agent_address);
  o.Key("gpu_source").Str(n.gpu_source);
  o.Key("model").Str(n.spec.gpu_model() ? std::string_view(fleet.model(*n.spec.gpu_model()).name) : std::string_view());
  o.Key("cpu_cores").Int(n.spec.cpu.value() / 1000);
  o.Key("memory_mib").Int(n.spec.memory.value());
  o.Key("free_gpus").Int(free_gpus);
  o.Key("draining").Bool(n.draining);
  o.Key("last_heartbeat_ms").Int(n.last_heartbeat_ms);
  o.Key("price_per_gpu_hour").Double(static_cast<double>(fleet.PricePerGpuHour(n.spec).value()) / kMicroUsdPerUsd);
  o.Key("gpus").Array();
  for (const Gpu& g : n.spec.gpus) {
    o.Object();
    GpuDeviceFields(o, GpuDevice{.index = g.index, .uuid = g.uuid, .name = fleet.model(g.model).name, .memory = g.memory,
                                 .compute_capability = g.compute_capability, .nvlink_peers = g.nvlink_peers});
    for (const KeptGpuSample& s : n.gpus) {
      if (s.index() != g.index) continue;
      o.Key("load");
      GpuSampleOut(o, s.sample());
      break;
    }
    const auto i = static_cast<size_t>(g.index);
    o.Key("health").Str(i < n.gpu_health.size() ? std::string_view(n.gpu_health[i]) : std::string_view("ok"));
    if (i < n.gpu_check.size() && !n.gpu_check[i].empty()) o.Key("check").Str(n.gpu_check[i]);
    o.EndObject();
  }
  o.EndArray();
  o.Key("host");
  HostOut(o, n.host);
  o.Key("labels").Env(n.spec.labels);
  if (!n.credential_hash.empty()) o.Key("credential_sha256").Str(n.credential_hash);
  if (!n.cert_serials.empty()) o.Key("cert_serials").Strs(n.cert_serials);
  if (!n.drivers.empty()) o.Key("drivers").Strs(n.drivers);
  if (n.max_tasks > 0) o.Key("max_tasks").Int(n.max_tasks);
  if (!n.claim.empty()) o.Key("claim").Str(n.claim);
  if (!n.offer.empty()) o.Key("offer").Str(n.offer);
  if (n.released) o.Key("released").Bool(true);
  o.EndObject();
  return o.Text();
}

Result<NodeRecord> NodeFromJson(std::string_view json) {
  return Guard([&]() -> Result<NodeRecord> {
    const In j = ParseObject(json, "node record");
    NodeRecord n;
    n.spec.name = Str(j, "name");
    n.site = Str(j, "site");
    n.provider = Str(j, "provider");
    auto tier = ParsePriceTier(Str(j, "tier", "on-demand"));
    n.spec.tier = tier ? *tier : PriceTier::kOnDemand;
    n.agent_address = Str(j, "address");
    n.gpu_source = Str(j, "gpu_source");
    n.spec.cpu = MilliCpu{Int(j, "cpu_cores", 0, 100'000, 0) * 1000};
    n.spec.memory = MiB{Int(j, "memory_mib", 0, INT64_MAX, 0)};
    n.draining = Bool(j, "draining", false);
    n.last_heartbeat_ms = Int(j, "last_heartbeat_ms", 0, INT64_MAX, 0);
    // GPUs come back as devices; the controller re-interns their models.
    n.gpu_model = Str(j, "model");
    n.credential_hash = Str(j, "credential_sha256");
    n.cert_serials = Strings(j, "cert_serials");
    n.drivers = Strings(j, "drivers");
    n.max_tasks = static_cast<int>(Int(j, "max_tasks", 0, kMaxTaskSlots, 0));
    n.claim = Str(j, "claim");
    n.offer = Str(j, "offer");
    n.released = Bool(j, "released", false);
    for (const In& g : Array(j, "gpus")) {
      const GpuDevice d = GpuDeviceFrom(g);
      n.spec.gpus.push_back(Gpu{.index = d.index, .memory = d.memory, .compute_capability = d.compute_capability,
                                .uuid = d.uuid, .nvlink_peers = d.nvlink_peers});
      n.gpu_health.push_back(Str(g, "health", "ok"));
      n.gpu_check.push_back(Str(g, "check"));
    }
    for (const auto& [k, v] : StringMap(j, "labels")) n.spec.labels.emplace_back(k, v);
    return n;
  });
}

std::string RegisterToJson(const RegisterRequest& r) {
  Out o;
  o.Object();
  o.Key("name").Str(r.name);
  o.Key("site").Str(r.site);
  o.Key("provider").Str(r.provider);
  o.Key("tier").Str(r.tier);
  o.Key("address").Str(r.address);
  o.Key("cpu_cores").Int(r.cpu_cores);
  o.Key("memory_mib").Int(r.memory_mib);
  o.Key("gpu_source").Str(r.gpu_source);
  o.Key("gpus").Array();
  for (const GpuDevice& d : r.gpus) {
    o.Object();
    GpuDeviceFields(o, d);
    o.EndObject();
  }
  o.EndArray();
  o.Key("labels").Env(r.labels);
  if (!r.credential.empty()) o.Key("credential").Str(r.credential);
  if (r.max_tasks > 0) o.Key("max_tasks").Int(r.max_tasks);
  if (!r.claim.empty()) o.Key("claim").Str(r.claim);
  if (!r.drivers.empty()) o.Key("drivers").Strs(r.drivers);
  if (!r.csr.empty()) o.Key("csr").Str(r.csr);
  o.EndObject();
  return o.Text();
}

Result<RegisterRequest> ParseRegister(std::string_view body) {
  return Guard([&]() -> Result<RegisterRequest> {
    const In j = ParseObject(body, "register");
    OnlyFields(j, {"name", "site", "provider", "tier", "address", "cpu_cores", "memory_mib", "gpu_source", "gpus", "labels",
                   "credential", "max_tasks", "claim", "csr", "drivers"});
    RegisterRequest r;
    r.name = Str(j, "name");
    if (Status s = ValidateNodeName(r.name); !s.ok()) throw Bad{s.message()};
    r.site = Str(j, "site", "local");
    r.provider = Str(j, "provider", "local");
    r.tier = Str(j, "tier", "on-demand");
    r.address = Str(j, "address", "127.0.0.1");
    for (const auto& [field, value] : {std::pair<const char*, const std::string*>{"site", &r.site}, {"provider", &r.provider},
                                       {"tier", &r.tier}, {"address", &r.address}}) {
      if (value->empty() || value->size() > 128) throw Bad{fmt::format("field '{}': 1..128 characters required", field)};
      CheckText(*value, field, true);
    }
    // What a real machine can have (a claim past these is a lie, not a big node).
    r.cpu_cores = static_cast<int>(Int(j, "cpu_cores", 0, 8'192, 0));
    r.memory_mib = Int(j, "memory_mib", 0, int64_t{64} << 20, 0);  // 64 TiB
    r.gpu_source = Str(j, "gpu_source");
    CheckText(r.gpu_source, "gpu_source", true);
    r.credential = Str(j, "credential");
    r.max_tasks = static_cast<int>(Int(j, "max_tasks", 0, kMaxTaskSlots, 0));
    r.claim = Str(j, "claim");
    if (r.claim.size() > 128) throw Bad{"field 'claim': at most 128 characters"};
    CheckText(r.claim, "claim", true);
    r.csr = Str(j, "csr");
    if (r.csr.size() > 16 * 1024) throw Bad{"field 'csr': at most 16 KiB of PEM"};
    r.drivers = Strings(j, "drivers");
    for (const std::string& d : r.drivers) {
      if (!ParseDriver(d)) throw Bad{fmt::format("field 'drivers': '{}' is not a driver; expected process or oci", d.substr(0, 64))};
    }
    if (j.contains("gpus")) {
      if (!j["gpus"].is_array() || j["gpus"].size() > kMaxGpusPerNode) throw Bad{"field 'gpus': expected at most 16 GPUs"};
      for (const In& g : j["gpus"]) {
        GpuDevice d = GpuDeviceFrom(g);
        if (d.memory.value() > kMaxGpuMemoryMib) {
          throw Bad{fmt::format("field 'gpus[{}].memory_mib': {} MiB is more than any GPU has (at most {})", d.index,
                                d.memory.value(), kMaxGpuMemoryMib)};
        }
        CheckText(d.name, "gpus[].name", true);
        CheckText(d.uuid, "gpus[].uuid", true);
        r.gpus.push_back(std::move(d));
      }
    }
    r.labels = StringMap(j, "labels");
    if (r.labels.size() > 64) throw Bad{"field 'labels': at most 64"};
    for (const auto& [k, v] : r.labels) {
      CheckText(k, "labels", true);
      CheckText(v, "labels", true);
    }
    return r;
  });
}

std::string HeartbeatToJson(const Heartbeat& h) {
  Out o;
  o.Object();
  o.Key("node").Str(h.node);
  o.Key("wait_ms").Int(h.wait_ms);
  if (h.telemetry) {
    o.Key("host");
    HostOut(o, h.host);
    o.Key("gpus").Array();
    for (const GpuSample& g : h.gpus) GpuSampleOut(o, g);
    o.EndArray();
  }
  o.Key("tasks").Array();
  for (const TaskReport& t : h.tasks) {
    o.Object();
    o.Key("job").UInt(t.job);
    o.Key("task").Int(t.task);
    o.Key("attempt").Int(t.attempt);
    o.Key("state").Str(t.state == TaskReport::State::kRunning ? "running" : "exited");
    o.Key("started_ms").Int(t.started_ms);
    if (t.exit_code) o.Key("exit_code").Int(*t.exit_code);
    if (t.signal) o.Key("signal").Int(*t.signal);
    if (!t.stdout_chunk.empty()) o.Key("stdout_b64").Str(Base64Encode(t.stdout_chunk));
    if (!t.stderr_chunk.empty()) o.Key("stderr_b64").Str(Base64Encode(t.stderr_chunk));
    if (t.dropped > 0) o.Key("dropped").Int(t.dropped);
    if (t.lost) o.Key("lost").Bool(true);
    if (!t.error.empty()) o.Key("error").Str(t.error);
    o.EndObject();
  }
  o.EndArray();
  o.Key("running").Array();
  for (const TaskKey& k : h.running) {
    o.Array();
    o.UInt(k.job);
    o.Int(k.task);
    o.Int(k.attempt);
    o.EndArray();
  }
  o.EndArray();
  if (!h.selftests.empty()) {
    o.Key("selftests").Array();
    for (const GpuSelfTest& t : h.selftests) {
      o.Object();
      o.Key("gpu").Int(t.gpu);
      o.Key("passed").Bool(t.passed);
      o.Key("detail").Str(t.detail);
      o.EndObject();
    }
    o.EndArray();
  }
  o.EndObject();
  return o.Text();
}


Result<Heartbeat> ParseHeartbeat(std::string_view body) {
  return Guard([&]() -> Result<Heartbeat> {
    const In j = ParseObject(body, "heartbeat");
    Heartbeat h;
    h.node = Str(j, "node");
    h.telemetry = j.contains("host") || j.contains("gpus");
    if (j.contains("host")) h.host = HostFrom(Object(j, "host"));
    h.wait_ms = static_cast<int>(Int(j, "wait_ms", 0, 60'000, 0));
    for (const In& g : Array(j, "gpus")) h.gpus.push_back(GpuSampleFrom(g));
    {
      for (const In& t : Array(j, "tasks")) {
        TaskReport r{.job = static_cast<uint64_t>(Int(t, "job", 0, INT64_MAX, 0)),
                     .task = static_cast<int>(Int(t, "task", 0, kMaxTasksPerJob, 0)),
                     .attempt = static_cast<int>(Int(t, "attempt", 0, 1'000'000, 0))};
        const std::string state = Str(t, "state");
        if (state != "running" && state != "exited") throw Bad{"field 'tasks[].state': expected running or exited"};
        r.state = state == "running" ? TaskReport::State::kRunning : TaskReport::State::kExited;
        if (t.contains("exit_code")) r.exit_code = static_cast<int>(Int(t, "exit_code", -1'000'000, 1'000'000, 0));
        if (t.contains("signal")) r.signal = static_cast<int>(Int(t, "signal", 0, 128, 0));
        r.started_ms = Int(t, "started_ms", 0, INT64_MAX, 0);
        r.stdout_chunk = Str(t, "stdout");
        r.stderr_chunk = Str(t, "stderr");
        // Output as sent: any bytes, base64 (binary and control characters cost 4/3, not 6x).
        if (auto b = Base64Decode(Str(t, "stdout_b64")); b) r.stdout_chunk += *b;
        else throw Bad{"field 'tasks[].stdout_b64': not base64"};
        if (auto b = Base64Decode(Str(t, "stderr_b64")); b) r.stderr_chunk += *b;
        else throw Bad{"field 'tasks[].stderr_b64': not base64"};
        r.dropped = Int(t, "dropped", 0, INT64_MAX, 0);
        r.lost = Bool(t, "lost", false);
        r.error = Str(t, "error");
        h.tasks.push_back(std::move(r));
      }
    }
    for (const In& p : Array(j, "running")) {
      if (!p.is_array() || p.size() != 3) throw Bad{"field 'running': expected [[job, task, attempt], ...]"};
      h.running.push_back(TaskKey{static_cast<uint64_t>(Whole(p[0], "running[][0]", 0, INT64_MAX)),
                                  static_cast<int>(Whole(p[1], "running[][1]", 0, kMaxTasksPerJob)),
                                  static_cast<int>(Whole(p[2], "running[][2]", 0, 1'000'000))});
    }
    for (const In& t : Array(j, "selftests")) {
      if (!t.is_object() || !t.contains("passed") || !t["passed"].is_boolean()) {
        throw Bad{"field 'selftests': expected [{\"gpu\": N, \"passed\": true|false, \"detail\": \"...\"}, ...]"};
      }
      h.selftests.push_back(GpuSelfTest{.gpu = static_cast<int>(Int(t, "gpu", 0, kMaxGpusPerNode - 1, 0)),
                                        .passed = t["passed"].get<bool>(), .detail = Str(t, "detail")});
    }
    return h;
  });
}

std::string ReplyToJson(const HeartbeatReply& r) {
  Out o;
  o.Object();
  o.Key("start").Array();
  for (const TaskLaunch& t : r.start) {
    o.Object();
    o.Key("job").UInt(t.job);
    o.Key("task").Int(t.task);
    o.Key("attempt").Int(t.attempt);
    o.Key("command").Strs(t.command);
    o.Key("env").Env(t.env);
    o.Key("workdir").Str(t.workdir);
    o.Key("gpu_mask").Int(t.gpu_mask);
    o.Key("cpu").Int(t.cpu.value());
    o.Key("memory").Int(t.memory.value());
    if (t.carry_checkpoint) o.Key("carry_checkpoint").Bool(true);
    if (!t.user.empty()) o.Key("user").Str(t.user);
    if (!t.driver.empty()) o.Key("driver").Str(t.driver);
    if (!t.image.empty()) o.Key("image").Str(t.image);
    if (!t.rootfs.empty()) o.Key("rootfs").Str(t.rootfs);
    if (t.read_only_root) o.Key("read_only_root").Bool(true);
    o.EndObject();
  }
  o.EndArray();
  o.Key("cancel").Array();
  for (const TaskKey& k : r.cancel) {
    o.Array();
    o.UInt(k.job);
    o.Int(k.task);
    o.Int(k.attempt);
    if (auto g = r.grace_ms.find(k); g != r.grace_ms.end()) o.Int(g->second);
    o.EndArray();
  }
  o.EndArray();
  if (!r.selftest.empty()) o.Key("selftest").Ints(r.selftest);
  if (r.interval_ms > 0) o.Key("interval_ms").Int(r.interval_ms);
  if (r.epoch > 0) o.Key("epoch").UInt(r.epoch);
  o.EndObject();
  return o.Text();
}

Result<HeartbeatReply> ParseReply(std::string_view body) {
  return Guard([&]() -> Result<HeartbeatReply> {
    const In j = ParseObject(body, "heartbeat reply");
    HeartbeatReply r;
    for (const In& t : Array(j, "start")) {
      r.start.push_back(TaskLaunch{.job = static_cast<uint64_t>(Int(t, "job", 0, INT64_MAX, 0)),
                                   .task = static_cast<int>(Int(t, "task", 0, kMaxTasksPerJob, 0)),
                                   .attempt = static_cast<int>(Int(t, "attempt", 0, 1'000'000, 0)),
                                   .command = Strings(t, "command"), .env = StringMap(t, "env"), .workdir = Str(t, "workdir"),
                                   .gpu_mask = static_cast<uint16_t>(Int(t, "gpu_mask", 0, 0xFFFF, 0)),
                                   .cpu = MilliCpu{Int(t, "cpu", 0, INT64_MAX, 0)}, .memory = MiB{Int(t, "memory", 0, INT64_MAX, 0)},
                                   .carry_checkpoint = Bool(t, "carry_checkpoint", false), .user = Str(t, "user"),
                                   .driver = Str(t, "driver"), .image = Str(t, "image"), .rootfs = Str(t, "rootfs"),
                                   .read_only_root = Bool(t, "read_only_root", false)});
    }
    r.interval_ms = static_cast<int>(Int(j, "interval_ms", 0, 600'000, 0));
    r.epoch = static_cast<uint64_t>(Int(j, "epoch", 0, INT64_MAX, 0));
    for (const In& g : Array(j, "selftest")) r.selftest.push_back(static_cast<int>(Whole(g, "selftest[]", 0, kMaxGpusPerNode - 1)));
    for (const In& p : Array(j, "cancel")) {
      if (!p.is_array() || (p.size() != 3 && p.size() != 4)) throw Bad{"field 'cancel': expected [[job, task, attempt(, grace_ms)], ...]"};
      r.cancel.push_back(TaskKey{static_cast<uint64_t>(Whole(p[0], "cancel[][0]", 0, INT64_MAX)),
                                 static_cast<int>(Whole(p[1], "cancel[][1]", 0, kMaxTasksPerJob)),
                                 static_cast<int>(Whole(p[2], "cancel[][2]", 0, 1'000'000))});
      if (p.size() == 4) r.grace_ms[r.cancel.back()] = static_cast<int>(Whole(p[3], "cancel[][3]", 0, 86'400'000));
    }
    return r;
  });
}

std::string EventToCloudEvent(const EventRecord& e, std::string_view source) {
  const std::time_t secs = static_cast<std::time_t>(e.time_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char when[32];
  std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
  Json data = Json::parse(e.data, nullptr, false);  // our own text: ordered, as written
  if (data.is_discarded()) data = Json::object();
  return Json{{"specversion", "1.0"},
              {"id", std::to_string(e.seq)},
              {"sequence", e.seq},
              {"source", source},
              {"type", "io.gpupool." + e.type},
              {"subject", e.subject},
              {"time", fmt::format("{}.{:03d}Z", when, static_cast<int>(e.time_ms % 1000))},
              {"datacontenttype", "application/json"},
              {"data", data}}
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Error texts quote what the client sent, which may be any bytes: invalid UTF-8 is replaced,
// never a reason to throw.
std::string ErrorJson(std::string_view message) { return Json{{"error", message}}.dump(-1, ' ', false, kReplace); }

// Whether `s` is well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, at most U+10FFFF).
bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n = 0;
    uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) n = 1, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) n = 2, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) n = 3, cp = c & 0x07;
    else return false;
    if (i + n >= s.size()) return false;  // cut short
    for (size_t k = 1; k <= n; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = cp << 6 | (d & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

Status ValidateNodeName(std::string_view name) {
  if (name.empty() || name.size() > 128) return Status(StatusCode::kInvalidArgument, "field 'name': 1..128 characters required");
  for (unsigned char c : name) {
    if (!(std::isalnum(c) || c == '.' || c == '-' || c == '_')) {
      return Status(StatusCode::kInvalidArgument, "field 'name': letters, digits, '.', '-' and '_' only (a host name)");
    }
  }
  if (name.front() == '.' || name.front() == '-') return Status(StatusCode::kInvalidArgument, "field 'name': must begin with a letter, a digit or '_'");
  return Status::Ok();
}

namespace {
constexpr std::string_view kB64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string Base64Encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = static_cast<uint8_t>(bytes[i]) << 16 | static_cast<uint8_t>(bytes[i + 1]) << 8 | static_cast<uint8_t>(bytes[i + 2]);
    out += kB64[v >> 18 & 63];
    out += kB64[v >> 12 & 63];
    out += kB64[v >> 6 & 63];
    out += kB64[v & 63];
  }
  if (i < bytes.size()) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out += kB64[v >> 18 & 63];
    out += kB64[v >> 12 & 63];
    out += i + 1 < bytes.size() ? kB64[v >> 6 & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  auto value = [](char c) -> int {
    const size_t p = kB64.find(c);
    return p == std::string_view::npos ? -1 : static_cast<int>(p);
  };
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    const int a = value(text[i]), b = value(text[i + 1]);
    const bool pad2 = last && text[i + 2] == '=' && text[i + 3] == '=';
    const bool pad1 = last && !pad2 && text[i + 3] == '=';
    const int c = pad2 ? 0 : value(text[i + 2]);
    const int d = (pad1 || pad2) ? 0 : value(text[i + 3]);
    if (a < 0 || b < 0 || c < 0 || d < 0) return std::nullopt;
    const uint32_t v = static_cast<uint32_t>(a) << 18 | static_cast<uint32_t>(b) << 12 | static_cast<uint32_t>(c) << 6 | static_cast<uint32_t>(d);
    out += static_cast<char>(v >> 16 & 0xff);
    if (!pad2) out += static_cast<char>(v >> 8 & 0xff);
    if (!pad1 && !pad2) out += static_cast<char>(v & 0xff);
  }
  return out;
}

}  // namespace gp
