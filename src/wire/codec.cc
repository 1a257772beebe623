#include "wire/codec.h"

#include <ctime>

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <set>

#include "core/units.h"

namespace gp {
namespace {

using Json = nlohmann::ordered_json;

// Thrown inside this file only; every public function converts it to a Status.
struct Bad {
  std::string message;
};

Json ParseObject(std::string_view body, std::string_view what) {
  Json j = Json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw Bad{fmt::format("{}: malformed JSON", what)};
  if (!j.is_object()) throw Bad{fmt::format("{}: expected a JSON object", what)};
  return j;
}

void OnlyFields(const Json& j, std::initializer_list<std::string_view> allowed) {
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

int64_t Int(const Json& j, const char* key, int64_t lo, int64_t hi, int64_t fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const Json& v = j[key];
  if (!v.is_number_integer()) throw Bad{fmt::format("field '{}': expected a whole number {}..{}", key, lo, hi)};
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) throw Bad{fmt::format("field '{}': must be {}..{}, got {}", key, lo, hi, x)};
  return x;
}

double Number(const Json& j, const char* key, double lo, double hi, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const Json& v = j[key];
  if (!v.is_number()) throw Bad{fmt::format("field '{}': expected a number {}..{}", key, lo, hi)};
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi)) throw Bad{fmt::format("field '{}': must be {}..{}, got {}", key, lo, hi, x)};
  return x;
}

std::string Str(const Json& j, const char* key, std::string fallback = {}) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_string()) throw Bad{fmt::format("field '{}': expected a string", key)};
  return j[key].get<std::string>();
}

std::vector<std::string> Strings(const Json& j, const char* key) {
  std::vector<std::string> out;
  if (!j.contains(key) || j[key].is_null()) return out;
  const Json& v = j[key];
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array()) throw Bad{fmt::format("field '{}': expected an array of strings", key)};
  for (const Json& e : v) {
    if (!e.is_string()) throw Bad{fmt::format("field '{}': expected an array of strings", key)};
    out.push_back(e.get<std::string>());
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> StringMap(const Json& j, const char* key) {
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
T Unit(const Json& j, const char* key, Parse parse, T fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_string()) throw Bad{fmt::format("field '{}': expected a string with a unit", key)};
  auto r = parse(j[key].get<std::string>());
  if (!r) throw Bad{fmt::format("field '{}': {}", key, r.error().message())};
  return *r;
}

Json EnvJson(const std::vector<std::pair<std::string, std::string>>& env) {
  Json o = Json::object();
  for (const auto& [k, v] : env) o[k] = v;
  return o;
}

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

Result<JobRecord> ParseSubmitRequest(std::string_view body) {
  return Guard([&]() -> Result<JobRecord> {
    const Json j = ParseObject(body, "request body");
    OnlyFields(j, {"command", "gpus", "tasks", "gpu_model", "gpu_memory", "cpu", "memory", "priority", "tenant", "name",
                   "data", "duration", "max_price", "env", "workdir", "max_retries"});
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
    s.priority = static_cast<int>(Int(j, "priority", -1'000'000, 1'000'000, 0));
    s.tenant = Str(j, "tenant", "default");
    s.name = Str(j, "name");
    if (s.name.size() > 256) throw Bad{"field 'name': at most 256 characters"};
    if (j.contains("data") && !j["data"].is_null()) {
      const Json& d = j["data"];
      if (!d.is_object()) throw Bad{"field 'data': expected {\"site\": ..., \"size\": \"100GB\"}"};
      OnlyFields(d, {"site", "size"});
      s.data = DataSet{.site = Str(d, "site"), .size = Unit<Bytes>(d, "size", ParseBytes, Bytes{0})};
      if (s.data->site.empty()) throw Bad{"field 'data.site': required"};
    }
    if (j.contains("duration") && !j["duration"].is_null()) s.estimated_duration = Unit<Millis>(j, "duration", ParseDuration, Millis{0});
    if (j.contains("max_price") && !j["max_price"].is_null()) s.max_price_per_gpu_hour = UsdToMicro(Number(j, "max_price", 0, 1e6, 0));
    r.env = StringMap(j, "env");
    r.workdir = Str(j, "workdir");
    r.max_retries = static_cast<int>(Int(j, "max_retries", 0, 100, -1));
    if (Status st = ValidateJobSpec(s); !st.ok()) throw Bad{st.message()};
    return r;
  });
}

std::string JobToJson(const JobRecord& r) {
  const JobSpec& s = r.spec;
  Json j;
  j["id"] = std::to_string(s.id.value());
  j["name"] = s.name;
  j["state"] = JobStateName(r.state);
  j["command"] = r.command;
  j["tasks"] = s.tasks;
  j["gpus_per_task"] = s.gpus_per_task;
  j["node"] = r.tasks.empty() ? Json(nullptr) : Json(r.tasks.front().node);
  Json gpus = Json::array();
  if (!r.tasks.empty()) {
    for (int i = 0; i < 16; ++i) {
      if (r.tasks.front().allocation.gpu_mask >> i & 1) gpus.push_back(i);
    }
  }
  j["gpus"] = gpus;
  j["exit_code"] = r.exit_code ? Json(*r.exit_code) : Json(nullptr);
  j["signal"] = r.signal ? Json(*r.signal) : Json(nullptr);
  j["priority"] = s.priority;
  j["tenant"] = s.tenant;
  j["gpu_model"] = s.gpu_models;
  j["gpu_memory_mib"] = s.min_gpu_memory.value();
  j["cpu_millicores"] = s.cpu_per_task.value();
  j["memory_mib"] = s.memory_per_task.value();
  if (s.data) j["data"] = {{"site", s.data->site}, {"bytes", s.data->size.value()}};
  if (s.estimated_duration) j["duration_ms"] = s.estimated_duration->value();
  if (s.max_price_per_gpu_hour) j["max_price_micro_usd"] = s.max_price_per_gpu_hour->value();
  j["env"] = EnvJson(r.env);
  j["workdir"] = r.workdir;
  j["submit_ms"] = s.submit_time.value();
  j["start_ms"] = r.start_ms;
  j["end_ms"] = r.end_ms;
  j["message"] = r.message;
  j["cancel_requested"] = r.cancel_requested;
  Json tasks = Json::array();
  for (const TaskRecord& t : r.tasks) {
    tasks.push_back({{"node", t.node}, {"gpu_mask", t.allocation.gpu_mask}, {"share", t.allocation.share.value()},
                     {"cpu", t.allocation.cpu.value()}, {"memory", t.allocation.memory.value()}, {"started", t.started},
                     {"exit_code", t.exit_code ? Json(*t.exit_code) : Json(nullptr)},
                     {"signal", t.signal ? Json(*t.signal) : Json(nullptr)}});
  }
  j["placement"] = tasks;
  j["attempt"] = r.attempt;
  j["max_retries"] = r.max_retries;
  j["failures"] = r.failures;
  Json attempts = Json::array();
  for (const AttemptRecord& a : r.attempts) {
    attempts.push_back({{"attempt", a.attempt}, {"nodes", a.nodes}, {"start_ms", a.start_ms}, {"end_ms", a.end_ms},
                        {"outcome", a.outcome}});
  }
  j["attempts"] = attempts;
  j["failing_over"] = r.failing_over;
  j["fence_until_ms"] = r.fence_until_ms;
  j["not_before_ms"] = r.not_before_ms;
  return j.dump();
}

Result<JobRecord> JobFromJson(std::string_view json) {
  return Guard([&]() -> Result<JobRecord> {
    const Json j = ParseObject(json, "job record");
    JobRecord r;
    JobSpec& s = r.spec;
    s.id = JobId{std::stoull(Str(j, "id", "0"))};
    s.name = Str(j, "name");
    auto st = ParseJobState(Str(j, "state"));
    if (!st) throw Bad{st.error().message()};
    r.state = *st;
    r.command = Strings(j, "command");
    s.tasks = static_cast<int>(Int(j, "tasks", 1, kMaxTasksPerJob, 1));
    s.gpus_per_task = static_cast<int>(Int(j, "gpus_per_task", 0, kMaxGpusPerNode, 0));
    if (j.contains("exit_code") && !j["exit_code"].is_null()) r.exit_code = j["exit_code"].get<int>();
    if (j.contains("signal") && !j["signal"].is_null()) r.signal = j["signal"].get<int>();
    s.priority = static_cast<int>(Int(j, "priority", INT32_MIN, INT32_MAX, 0));
    s.tenant = Str(j, "tenant");
    s.gpu_models = Strings(j, "gpu_model");
    s.min_gpu_memory = MiB{Int(j, "gpu_memory_mib", 0, INT64_MAX, 0)};
    s.cpu_per_task = MilliCpu{Int(j, "cpu_millicores", 0, INT64_MAX, 0)};
    s.memory_per_task = MiB{Int(j, "memory_mib", 0, INT64_MAX, 0)};
    if (j.contains("data")) s.data = DataSet{.site = Str(j["data"], "site"), .size = Bytes{Int(j["data"], "bytes", 0, INT64_MAX, 0)}};
    if (j.contains("duration_ms")) s.estimated_duration = Millis{Int(j, "duration_ms", 0, INT64_MAX, 0)};
    if (j.contains("max_price_micro_usd")) s.max_price_per_gpu_hour = MicroUsd{Int(j, "max_price_micro_usd", 0, INT64_MAX, 0)};
    r.env = StringMap(j, "env");
    r.workdir = Str(j, "workdir");
    s.submit_time = Millis{Int(j, "submit_ms", 0, INT64_MAX, 0)};
    r.start_ms = Int(j, "start_ms", 0, INT64_MAX, 0);
    r.end_ms = Int(j, "end_ms", 0, INT64_MAX, 0);
    r.message = Str(j, "message");
    r.cancel_requested = j.value("cancel_requested", false);
    r.attempt = static_cast<int>(Int(j, "attempt", 0, 1'000'000, 0));
    r.max_retries = static_cast<int>(Int(j, "max_retries", -1, 100, -1));
    r.failures = static_cast<int>(Int(j, "failures", 0, 1'000'000, 0));
    for (const Json& a : j.value("attempts", Json::array())) {
      r.attempts.push_back(AttemptRecord{.attempt = static_cast<int>(Int(a, "attempt", 0, 1'000'000, 0)),
                                         .nodes = Strings(a, "nodes"), .start_ms = Int(a, "start_ms", 0, INT64_MAX, 0),
                                         .end_ms = Int(a, "end_ms", 0, INT64_MAX, 0), .outcome = Str(a, "outcome")});
    }
    r.failing_over = j.value("failing_over", false);
    r.fence_until_ms = Int(j, "fence_until_ms", 0, INT64_MAX, 0);
    r.not_before_ms = Int(j, "not_before_ms", 0, INT64_MAX, 0);
    if (j.contains("placement")) {
      for (const Json& t : j["placement"]) {
        TaskRecord tr{.node = Str(t, "node")};
        tr.allocation.gpu_mask = static_cast<uint16_t>(Int(t, "gpu_mask", 0, 0xFFFF, 0));
        tr.allocation.share = GpuMilli{Int(t, "share", 1, 1000, 1000)};
        tr.allocation.cpu = MilliCpu{Int(t, "cpu", 0, INT64_MAX, 0)};
        tr.allocation.memory = MiB{Int(t, "memory", 0, INT64_MAX, 0)};
        tr.started = t.value("started", false);
        if (t.contains("exit_code") && !t["exit_code"].is_null()) tr.exit_code = t["exit_code"].get<int>();
        if (t.contains("signal") && !t["signal"].is_null()) tr.signal = t["signal"].get<int>();
        r.tasks.push_back(std::move(tr));
      }
    }
    return r;
  });
}

namespace {

Json GpuDeviceJson(const GpuDevice& d) {
  return {{"index", d.index}, {"uuid", d.uuid}, {"name", d.name}, {"memory_mib", d.memory.value()},
          {"compute_capability", d.compute_capability}, {"nvlink_peers", d.nvlink_peers}};
}

GpuDevice GpuDeviceFrom(const Json& g) {
  return GpuDevice{.index = static_cast<int>(Int(g, "index", 0, 15, 0)), .uuid = Str(g, "uuid"), .name = Str(g, "name"),
                   .memory = MiB{Int(g, "memory_mib", 0, INT64_MAX, 0)},
                   .compute_capability = static_cast<int>(Int(g, "compute_capability", 0, 1000, 0)),
                   .nvlink_peers = static_cast<uint16_t>(Int(g, "nvlink_peers", 0, 0xFFFF, 0))};
}

Json GpuSampleJson(const GpuSample& s) {
  Json j{{"index", s.index}, {"utilisation", s.utilisation.value()}, {"memory_utilisation", s.memory_utilisation.value()},
         {"memory_used_mib", s.memory_used.value()}, {"memory_total_mib", s.memory_total.value()}};
  if (s.temperature_c) j["temperature_c"] = *s.temperature_c;
  if (s.power_mw) j["power_mw"] = *s.power_mw;
  if (s.ecc_uncorrected) j["ecc_uncorrected"] = *s.ecc_uncorrected;
  if (!s.xids.empty()) j["xids"] = s.xids;
  return j;
}

GpuSample GpuSampleFrom(const Json& g) {
  GpuSample s{.index = static_cast<int>(Int(g, "index", 0, 15, 0)),
              .utilisation = PerMille{Int(g, "utilisation", 0, 1000, 0)},
              .memory_utilisation = PerMille{Int(g, "memory_utilisation", 0, 1000, 0)},
              .memory_used = MiB{Int(g, "memory_used_mib", 0, INT64_MAX, 0)},
              .memory_total = MiB{Int(g, "memory_total_mib", 0, INT64_MAX, 0)}};
  if (g.contains("temperature_c")) s.temperature_c = static_cast<int>(Int(g, "temperature_c", -100, 1000, 0));
  if (g.contains("power_mw")) s.power_mw = Int(g, "power_mw", 0, INT64_MAX, 0);
  if (g.contains("ecc_uncorrected")) s.ecc_uncorrected = Int(g, "ecc_uncorrected", 0, INT64_MAX, 0);
  if (g.contains("xids")) {
    for (const Json& x : g["xids"]) {
      if (!x.is_number_integer()) throw Bad{"field 'gpus[].xids': expected whole numbers"};
      s.xids.push_back(x.get<int>());
    }
  }
  return s;
}

Json HostJson(const HostSample& h) {
  return {{"cpu_cores", h.cpu_cores}, {"cpu_busy", h.cpu_busy.value()}, {"memory_total_mib", h.memory.total.value()},
          {"memory_available_mib", h.memory.available.value()}, {"net_rx_bytes", h.net.rx.value()},
          {"net_tx_bytes", h.net.tx.value()}};
}

HostSample HostFrom(const Json& h) {
  return HostSample{.cpu_cores = static_cast<int>(Int(h, "cpu_cores", 0, 100'000, 0)),
                    .cpu_busy = PerMille{Int(h, "cpu_busy", 0, 1000, 0)},
                    .memory = {.total = MiB{Int(h, "memory_total_mib", 0, INT64_MAX, 0)},
                               .available = MiB{Int(h, "memory_available_mib", 0, INT64_MAX, 0)}},
                    .net = {.rx = Bytes{Int(h, "net_rx_bytes", 0, INT64_MAX, 0)}, .tx = Bytes{Int(h, "net_tx_bytes", 0, INT64_MAX, 0)}}};
}

}  // namespace

std::string NodeToJson(const NodeRecord& n, const Fleet& fleet, std::string_view state, int free_gpus) {
  Json j;
  j["name"] = n.spec.name;
  j["state"] = state;
  j["site"] = n.site;
  j["provider"] = n.provider;
  j["tier"] = PriceTierName(n.spec.tier);
  j["address"] = n.agent_address;
  j["gpu_source"] = n.gpu_source;
  j["model"] = n.spec.gpu_model() ? fleet.model(*n.spec.gpu_model()).name : "";
  j["cpu_cores"] = n.spec.cpu.value() / 1000;
  j["memory_mib"] = n.spec.memory.value();
  j["free_gpus"] = free_gpus;
  j["draining"] = n.draining;
  j["last_heartbeat_ms"] = n.last_heartbeat_ms;
  j["price_per_gpu_hour"] = static_cast<double>(fleet.PricePerGpuHour(n.spec).value()) / kMicroUsdPerUsd;
  Json gpus = Json::array();
  for (const Gpu& g : n.spec.gpus) {
    Json e = GpuDeviceJson(GpuDevice{.index = g.index, .uuid = g.uuid, .name = fleet.model(g.model).name,
                                     .memory = g.memory, .compute_capability = g.compute_capability,
                                     .nvlink_peers = g.nvlink_peers});
    for (const GpuSample& s : n.gpus) {
      if (s.index == g.index) e["load"] = GpuSampleJson(s);
    }
    e["health"] = static_cast<size_t>(g.index) < n.gpu_health.size() ? n.gpu_health[static_cast<size_t>(g.index)] : "ok";
    if (static_cast<size_t>(g.index) < n.gpu_check.size() && !n.gpu_check[static_cast<size_t>(g.index)].empty()) {
      e["check"] = n.gpu_check[static_cast<size_t>(g.index)];
    }
    gpus.push_back(e);
  }
  j["gpus"] = gpus;
  j["host"] = HostJson(n.host);
  Json labels = Json::object();
  for (const auto& [k, v] : n.spec.labels) labels[k] = v;
  j["labels"] = labels;
  return j.dump();
}

Result<NodeRecord> NodeFromJson(std::string_view json) {
  return Guard([&]() -> Result<NodeRecord> {
    const Json j = ParseObject(json, "node record");
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
    n.draining = j.value("draining", false);
    n.last_heartbeat_ms = Int(j, "last_heartbeat_ms", 0, INT64_MAX, 0);
    // GPUs come back as devices; the controller re-interns their models.
    n.gpu_model = Str(j, "model");
    for (const Json& g : j["gpus"]) {
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
  Json j{{"name", r.name}, {"site", r.site}, {"provider", r.provider}, {"tier", r.tier}, {"address", r.address},
         {"cpu_cores", r.cpu_cores}, {"memory_mib", r.memory_mib}, {"gpu_source", r.gpu_source}};
  Json gpus = Json::array();
  for (const GpuDevice& d : r.gpus) gpus.push_back(GpuDeviceJson(d));
  j["gpus"] = gpus;
  j["labels"] = EnvJson(r.labels);
  return j.dump();
}

Result<RegisterRequest> ParseRegister(std::string_view body) {
  return Guard([&]() -> Result<RegisterRequest> {
    const Json j = ParseObject(body, "register");
    OnlyFields(j, {"name", "site", "provider", "tier", "address", "cpu_cores", "memory_mib", "gpu_source", "gpus", "labels"});
    RegisterRequest r;
    r.name = Str(j, "name");
    if (r.name.empty() || r.name.size() > 128) throw Bad{"field 'name': 1..128 characters required"};
    r.site = Str(j, "site", "local");
    r.provider = Str(j, "provider", "local");
    r.tier = Str(j, "tier", "on-demand");
    r.address = Str(j, "address", "127.0.0.1");
    r.cpu_cores = static_cast<int>(Int(j, "cpu_cores", 0, 100'000, 0));
    r.memory_mib = Int(j, "memory_mib", 0, INT64_MAX, 0);
    r.gpu_source = Str(j, "gpu_source");
    if (j.contains("gpus")) {
      if (!j["gpus"].is_array() || j["gpus"].size() > kMaxGpusPerNode) throw Bad{"field 'gpus': expected at most 16 GPUs"};
      for (const Json& g : j["gpus"]) r.gpus.push_back(GpuDeviceFrom(g));
    }
    r.labels = StringMap(j, "labels");
    return r;
  });
}

std::string HeartbeatToJson(const Heartbeat& h) {
  Json j{{"node", h.node}, {"host", HostJson(h.host)}, {"wait_ms", h.wait_ms}};
  Json gpus = Json::array();
  for (const GpuSample& s : h.gpus) gpus.push_back(GpuSampleJson(s));
  j["gpus"] = gpus;
  Json tasks = Json::array();
  for (const TaskReport& t : h.tasks) {
    Json e{{"job", t.job}, {"task", t.task}, {"attempt", t.attempt},
           {"state", t.state == TaskReport::State::kRunning ? "running" : "exited"},
           {"started_ms", t.started_ms}};
    if (t.exit_code) e["exit_code"] = *t.exit_code;
    if (t.signal) e["signal"] = *t.signal;
    if (!t.stdout_chunk.empty()) e["stdout"] = t.stdout_chunk;
    if (!t.stderr_chunk.empty()) e["stderr"] = t.stderr_chunk;
    if (!t.error.empty()) e["error"] = t.error;
    tasks.push_back(e);
  }
  j["tasks"] = tasks;
  Json running = Json::array();
  for (const TaskKey& k : h.running) running.push_back({k.job, k.task, k.attempt});
  j["running"] = running;
  if (!h.selftests.empty()) {
    Json tests = Json::array();
    for (const GpuSelfTest& t : h.selftests) tests.push_back({{"gpu", t.gpu}, {"passed", t.passed}, {"detail", t.detail}});
    j["selftests"] = tests;
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Result<Heartbeat> ParseHeartbeat(std::string_view body) {
  return Guard([&]() -> Result<Heartbeat> {
    const Json j = ParseObject(body, "heartbeat");
    Heartbeat h;
    h.node = Str(j, "node");
    if (j.contains("host")) h.host = HostFrom(j["host"]);
    h.wait_ms = static_cast<int>(Int(j, "wait_ms", 0, 60'000, 0));
    if (j.contains("gpus")) {
      for (const Json& g : j["gpus"]) h.gpus.push_back(GpuSampleFrom(g));
    }
    if (j.contains("tasks")) {
      for (const Json& t : j["tasks"]) {
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
        r.error = Str(t, "error");
        h.tasks.push_back(std::move(r));
      }
    }
    if (j.contains("running")) {
      for (const Json& p : j["running"]) {
        if (!p.is_array() || p.size() != 3) throw Bad{"field 'running': expected [[job, task, attempt], ...]"};
        h.running.push_back(TaskKey{p[0].get<uint64_t>(), p[1].get<int>(), p[2].get<int>()});
      }
    }
    for (const Json& t : j.value("selftests", Json::array())) {
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
  Json start = Json::array();
  for (const TaskLaunch& t : r.start) {
    start.push_back({{"job", t.job}, {"task", t.task}, {"attempt", t.attempt}, {"command", t.command}, {"env", EnvJson(t.env)},
                     {"workdir", t.workdir}, {"gpu_mask", t.gpu_mask}, {"cpu", t.cpu.value()}, {"memory", t.memory.value()}});
    if (t.carry_checkpoint) start.back()["carry_checkpoint"] = true;
  }
  Json cancel = Json::array();
  for (const TaskKey& k : r.cancel) {
    auto g = r.grace_ms.find(k);
    if (g == r.grace_ms.end()) cancel.push_back({k.job, k.task, k.attempt});
    else cancel.push_back({k.job, k.task, k.attempt, g->second});
  }
  Json out{{"start", start}, {"cancel", cancel}};
  if (!r.selftest.empty()) out["selftest"] = r.selftest;
  return out.dump();
}

Result<HeartbeatReply> ParseReply(std::string_view body) {
  return Guard([&]() -> Result<HeartbeatReply> {
    const Json j = ParseObject(body, "heartbeat reply");
    HeartbeatReply r;
    for (const Json& t : j.value("start", Json::array())) {
      r.start.push_back(TaskLaunch{.job = static_cast<uint64_t>(Int(t, "job", 0, INT64_MAX, 0)),
                                   .task = static_cast<int>(Int(t, "task", 0, kMaxTasksPerJob, 0)),
                                   .attempt = static_cast<int>(Int(t, "attempt", 0, 1'000'000, 0)),
                                   .command = Strings(t, "command"), .env = StringMap(t, "env"), .workdir = Str(t, "workdir"),
                                   .gpu_mask = static_cast<uint16_t>(Int(t, "gpu_mask", 0, 0xFFFF, 0)),
                                   .cpu = MilliCpu{Int(t, "cpu", 0, INT64_MAX, 0)}, .memory = MiB{Int(t, "memory", 0, INT64_MAX, 0)},
                                   .carry_checkpoint = t.value("carry_checkpoint", false)});
    }
    for (const Json& g : j.value("selftest", Json::array())) {
      if (!g.is_number_integer() || g.get<int>() < 0 || g.get<int>() >= kMaxGpusPerNode) throw Bad{"field 'selftest': expected GPU indexes"};
      r.selftest.push_back(g.get<int>());
    }
    for (const Json& p : j.value("cancel", Json::array())) {
      if (!p.is_array() || (p.size() != 3 && p.size() != 4)) throw Bad{"field 'cancel': expected [[job, task, attempt(, grace_ms)], ...]"};
      r.cancel.push_back(TaskKey{p[0].get<uint64_t>(), p[1].get<int>(), p[2].get<int>()});
      if (p.size() == 4) r.grace_ms[r.cancel.back()] = p[3].get<int>();
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
  Json data = Json::parse(e.data, nullptr, false);
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

std::string ErrorJson(std::string_view message) { return Json{{"error", message}}.dump(); }

}  // namespace gp
