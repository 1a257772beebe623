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
#include <ctime>
#include <fstream>
#include <map>

#include "sim/trace.h"

namespace gp {
namespace {

using Json = nlohmann::json;

// "2026-12-02T13:52:41.123Z" -> ms since the epoch.
Result<int64_t> ParseTime(const std::string& s) {
  std::tm tm{};
  int ms = 0;
  char frac[8] = {0};
  const int n = std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3[0-9]Z", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                            &tm.tm_min, &tm.tm_sec, frac);
  if (n < 6) return InvalidArgument(fmt::format("time: '{}' is not an RFC 3339 UTC time", s));
  if (n == 7) ms = std::atoi(frac) * (strlen(frac) == 1 ? 100 : strlen(frac) == 2 ? 10 : 1);
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<int64_t>(timegm(&tm)) * 1000 + ms;
}

struct LiveJob {
  int line = 0;
  int64_t submitted = -1, placed = -1, ended = -1;
  TraceJob job;
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
          t.tasks = data->value("tasks", 1);
          const int per = data->value("gpus_per_task", 1);
          if (t.tasks < 1 || t.tasks > 4096) return fail(fmt::format("field 'data.tasks': {} is out of range (1..4096)", t.tasks));
          if (per < 0 || per > 16) return fail(fmt::format("field 'data.gpus_per_task': {} is out of range (0..16)", per));
          t.gpus = t.tasks * per;
          if (data->contains("gpu_share")) t.gpu_share = GpuMilli{static_cast<int64_t>((*data)["gpu_share"].get<double>() * 1000 + 0.5)};
          t.cpu = MilliCpu{data->value("cpu_per_task_milli", int64_t{0}) * t.tasks};
          t.memory = MiB{data->value("memory_per_task_mib", int64_t{0}) * t.tasks};
          if (data->contains("gpu_models")) t.gpu_models = (*data)["gpu_models"].get<std::vector<std::string>>();
          t.priority = data->value("priority", 0);
          order.push_back(id);
        } else if (what == "placed") {
          if (auto it = jobs.find(id); it != jobs.end()) it->second.placed = *at;
        } else if (what == "succeeded" || what == "failed" || what == "cancelled") {
          if (auto it = jobs.find(id); it != jobs.end()) it->second.ended = *at;
        }
      } catch (const Json::exception& x) {
        return fail(fmt::format("job {}: a field of the wrong type ({})", id, x.what()));
      }
    }
    Trace trace{.path = path, .format = "events"};
    int64_t first = -1;
    for (const std::string& id : order) {
      const LiveJob& j = jobs.at(id);
      if (first < 0) first = j.submitted;
      if (j.placed < 0 || j.ended < j.placed) continue;  // never ran, or still running
      TraceJob t = j.job;
      t.submit = Millis{j.submitted - first};
      t.duration = Millis{j.ended - j.placed};
      trace.jobs.push_back(std::move(t));
    }
    if (order.empty()) return InvalidArgument(fmt::format("{}: no job.submitted event: nothing to replay", path));
    return trace;
  }
};

}  // namespace

std::unique_ptr<TraceReader> MakeEventsReader() { return std::make_unique<EventsReader>(); }

}  // namespace gp
