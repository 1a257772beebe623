// A live pool's event log as a trace: NDJSON CloudEvents as GET /v1/events streams them and
// `gpupool events --json` prints them (and `gpupool sim --events` writes them). Each job is
// submitted when its job.submitted event says, with the shape it was submitted with (tasks, GPUs
// per task, GPU share, CPU and memory per task, allowed models, priority), and holds its
// resources for as long as its last attempt did: from its last job.placed to its end
// (job.succeeded, job.failed or job.cancelled). Jobs that never ran (cancelled while queued,
// refused) and jobs still running when the log was taken are left out. Times are relative to
// the first submission. Any other event is skipped; a line that is not an event is an error
// naming the line.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <fstream>
#include <map>

#include "sim/trace.h"

namespace gp {
namespace {

using Json = nlohmann::json;

// "2026-12-02T13:52:41.123Z" -> ms since the epoch.
Result<int64_t> ParseTime(const std::string& s) {
  auto ms = s.size() > 19 && s[10] == 'T' && s.back() == 'Z' ? CivilTimeMs(s) : std::nullopt;
  if (!ms) return InvalidArgument(fmt::format("time: '{}' is not an RFC 3339 UTC time", s));
  return *ms;
}

constexpr int64_t kBad = INT64_MIN;

// A whole number field of `data` in [lo, hi], `absent` when it is not there; anything else is
// kBad.
int64_t Whole(const Json& data, const char* name, int64_t absent, int64_t lo, int64_t hi) {
  const auto it = data.find(name);
  if (it == data.end()) return absent;
  if (!it->is_number_integer()) return kBad;
  const int64_t v = it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX) ? kBad : it->get<int64_t>();
  return v < lo || v > hi ? kBad : v;
}

// A number field of `data` in [lo, hi], or -1.
double Number(const Json& data, const char* name, double lo, double hi) {
  const auto it = data.find(name);
  if (it == data.end() || !it->is_number()) return -1;
  const double v = it->get<double>();
  return v >= lo && v <= hi ? v : -1;
}

struct LiveJob {
  int line = 0;
  int64_t submitted = -1, placed = -1, ended = -1;
  TraceJob job;
  JobExtras dependencies;  // as submitted, by the live pool's ids
  bool cancelled = false;
};

class EventsReader final : public TraceReader {
 public:
  std::string_view name() const override { return "events"; }
  std::string_view description() const override { return "a gpupool event log (NDJSON CloudEvents: gpupool events --json)"; }
  bool Recognises(std::string_view path, std::string_view first) const override {
    return first.starts_with("{") && (first.find("\"io.gpupool.") != std::string_view::npos || path.ends_with(".ndjson"));
  }
  Result<Trace> Read(const std::string& path, const TraceOptions&) const override {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Error(StatusCode::kNotFound, fmt::format("{}: cannot open", path));
    std::map<std::string, LiveJob> jobs;  // by the live pool's job id
    std::vector<std::string> order;       // ids in submission order
    std::string line;
    int n = 0;
    auto fail = [&](const std::string& what) { return InvalidArgument(fmt::format("{}:{}: {}", path, n, what)); };
    while (std::getline(in, line)) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const Json e = Json::parse(line, nullptr, false);
      if (!e.is_object()) return fail("not a JSON object (one CloudEvent per line expected)");
      const auto type_it = e.find("type");
      if (type_it == e.end() || !type_it->is_string()) return fail("field 'type': missing");
      const std::string type = type_it->get<std::string>();
      if (!type.starts_with("io.gpupool.job.")) continue;
      const auto data = e.find("data");
      if (data == e.end() || !data->is_object()) return fail("field 'data': missing or not an object");
      if (!data->contains("id") || !(*data)["id"].is_string()) return fail("field 'data.id': missing");
      const std::string id = (*data)["id"].get<std::string>();
      const auto time_it = e.find("time");
      if (time_it == e.end() || !time_it->is_string()) return fail("field 'time': missing");
      auto at = ParseTime(time_it->get<std::string>());
      if (!at) return fail(at.error().message());
      const std::string what = type.substr(15);
      try {
        if (what == "submitted") {
          LiveJob& j = jobs[id];
          if (j.submitted >= 0) return fail(fmt::format("job {} submitted twice", id));
          j.line = n;
          j.submitted = *at;
          TraceJob& t = j.job;
          t.line = n;
          t.name = data->value("name", "job-" + id);
          const int64_t tasks = Whole(*data, "tasks", 1, 1, 4096);
          const int64_t per = Whole(*data, "gpus_per_task", 1, 0, 16);
          if (tasks == kBad) return fail("field 'data.tasks': expected a whole number in 1..4096");
          if (per == kBad) return fail("field 'data.gpus_per_task': expected a whole number in 0..16");
          t.tasks = static_cast<int>(tasks);
          t.gpus = t.tasks * static_cast<int>(per);
          if (data->contains("gpu_share")) {
            const double share = Number(*data, "gpu_share", 0.001, 1.0);
            if (share < 0) return fail("field 'data.gpu_share': expected a number in 0.001..1");
            t.gpu_share = GpuMilli{static_cast<int64_t>(share * 1000 + 0.5)};
          }
          const int64_t cpu = Whole(*data, "cpu_per_task_milli", 0, 0, int64_t{1} << 30);
          const int64_t memory = Whole(*data, "memory_per_task_mib", 0, 0, int64_t{1} << 40);
          const int64_t priority = Whole(*data, "priority", 0, -1'000'000, 1'000'000);
          if (cpu < 0 || memory < 0 || priority == kBad) {
            return fail("a field of data is out of range (cpu_per_task_milli 0..2^30, memory_per_task_mib 0..2^40, "
                        "priority -1e6..1e6)");
          }
          t.cpu = MilliCpu{cpu * t.tasks};
          t.memory = MiB{memory * t.tasks};
          if (data->contains("gpu_models")) t.gpu_models = (*data)["gpu_models"].get<std::vector<std::string>>();
          t.priority = static_cast<int>(priority);
          if (auto tn = data->find("tenant"); tn != data->end() && tn->is_string()) t.tenant = tn->get<std::string>();
          if (auto dep = data->find("dependency"); dep != data->end()) {
            if (!dep->is_string()) return fail("field 'data.dependency': expected text such as afterok:12");
            if (Status s = ParseDependencies(dep->get<std::string>(), j.dependencies); !s.ok()) return fail(s.message());
          }
          order.push_back(id);
        } else if (what == "placed") {
          if (auto it = jobs.find(id); it != jobs.end()) it->second.placed = *at;
        } else if (what == "succeeded" || what == "failed" || what == "cancelled") {
          if (auto it = jobs.find(id); it != jobs.end()) {
            it->second.ended = *at;
            it->second.job.fails = what == "failed";
            it->second.cancelled = what == "cancelled";
          }
        }
      } catch (const Json::exception& x) {
        return fail(fmt::format("job {}: a field of the wrong type ({})", id, x.what()));
      }
    }
    Trace trace{.path = path, .format = "events"};
    int64_t first = -1;
    std::map<uint64_t, uint64_t> position;  // live id -> the replay's (its place in the trace + 1)
    for (const std::string& id : order) {
      const LiveJob& j = jobs.at(id);
      if (first < 0) first = j.submitted;
      if (j.submitted < first) {
        return InvalidArgument(fmt::format("{}:{}: job {} was submitted before the first submission: the log is out of order",
                                           path, j.line, id));
      }
      // A job its dependencies ended before it ran is replayed too, so that the replay judges
      // them again (it runs for no time if they are met there).
      const bool held_out = j.placed < 0 && j.cancelled && j.dependencies.has_dependencies();
      if (!held_out && (j.placed < 0 || j.ended < j.placed)) continue;  // never ran, or still running
      TraceJob t = j.job;
      t.submit = Millis{j.submitted - first};
      t.duration = held_out ? Millis{0} : Millis{j.ended - j.placed};
      t.singleton = j.dependencies.singleton;
      for (const Dependency& d : j.dependencies.after) {
        // On a job the replay has (an earlier one): its position; on one it left out, dropped.
        if (auto p = position.find(d.job); p != position.end()) t.after.push_back(Dependency{.kind = d.kind, .job = p->second});
      }
      trace.jobs.push_back(std::move(t));
      position[std::stoull(id)] = trace.jobs.size();
    }
    if (order.empty()) return InvalidArgument(fmt::format("{}: no job.submitted event: nothing to replay", path));
    return trace;
  }
};

}  // namespace

std::unique_ptr<TraceReader> MakeEventsReader() { return std::make_unique<EventsReader>(); }

}  // namespace gp
