// Readers for the header-first CSV traces: Philly (Pollux's philly.csv), Tiresias, Alibaba
// openb pods, and the Pollux/Sia workload lists (recognised, refused with a reason).
#include <fmt/format.h>

#include <array>
#include <charconv>
#include <functional>

#include "sim/read_file.h"
#include "sim/trace.h"

namespace gp {
namespace {

using Row = std::function<Status(const std::vector<std::string_view>& fields, const std::vector<size_t>& col,
                                 TraceJob& job)>;

// Opens `path`, finds the named columns in its header (a name ending in '?' is optional and
// gets kAbsent when missing), and turns each row into a TraceJob with `row`; any error comes
// back as "path:line: ...".
constexpr size_t kAbsent = SIZE_MAX;
Result<Trace> ReadCsv(const std::string& path, std::string_view format,
                      const std::vector<std::string_view>& columns, const Row& row) {
  auto file = OpenDelimited(path, ',');
  if (!file) return tl::unexpected(file.error());
  std::vector<std::string_view> fields;
  if (!file->Next(fields)) return tl::unexpected(file->ErrorAt(1, "empty file; expected a header"));
  const Header header(fields);
  const size_t width = fields.size();
  std::vector<size_t> col;
  for (std::string_view c : columns) {
    if (c.ends_with('?')) {
      c.remove_suffix(1);
      auto i = header.Require(*file, c);
      col.push_back(i ? *i : kAbsent);
      continue;
    }
    auto i = header.Require(*file, c);
    if (!i) return tl::unexpected(i.error());
    col.push_back(*i);
  }
  Trace trace{.path = path, .format = std::string(format)};
  while (file->Next(fields)) {
    if (fields.size() != width) {
      return tl::unexpected(file->ErrorAt(file->line(), fmt::format("expected {} fields, got {}", width, fields.size())));
    }
    TraceJob job{.line = file->line()};
    if (Status s = row(fields, col, job); !s.ok()) return tl::unexpected(file->ErrorAt(file->line(), s.message()));
    trace.jobs.push_back(std::move(job));
  }
  return trace;
}

#define GP_TRY_ASSIGN(lhs, expr)                              \
  auto lhs##_r = (expr);                                      \
  if (!lhs##_r) return lhs##_r.error();                       \
  auto lhs = *lhs##_r

Status CheckGpus(int64_t gpus) {
  if (gpus < 0 || gpus > 100'000) {
    return Status(StatusCode::kInvalidArgument, fmt::format("GPU count {} is out of range (0..100000)", gpus));
  }
  return Status::Ok();
}

// "2017-10-09 07:01:55" -> seconds since the epoch (the trace's local time, taken as is).
Result<int64_t> ParseTimestamp(std::string_view t) {
  auto ms = t.size() == 19 && t[10] == ' ' ? CivilTimeMs(t) : std::nullopt;
  if (!ms) return InvalidArgument(fmt::format("timestamp: '{}' is not YYYY-MM-DD HH:MM:SS", t));
  return *ms / 1000;
}

class PhillyReader final : public TraceReader {
 public:
  std::string_view name() const override { return "philly"; }
  std::string_view description() const override {
    return "Pollux's philly.csv: timestamp,duration,num_gpus,gpu_time,cluster";
  }
  bool Recognises(std::string_view, std::string_view first) const override {
    return first.starts_with("timestamp,duration,num_gpus");
  }
  Result<Trace> Read(const std::string& path, const TraceOptions&) const override {
    auto trace = ReadCsv(path, name(), {"timestamp", "duration", "num_gpus", "cluster"},
                         [](const auto& f, const auto& c, TraceJob& j) -> Status {
                           GP_TRY_ASSIGN(ts, ParseTimestamp(f[c[0]]));
                           GP_TRY_ASSIGN(dur, SecondsField("duration", f[c[1]]));
                           GP_TRY_ASSIGN(gpus, FieldInt("num_gpus", f[c[2]]));
                           if (Status s = CheckGpus(gpus); !s.ok()) return s;
                           j.submit = Millis{ts * 1000};
                           j.duration = dur;
                           j.gpus = static_cast<int>(gpus);
                           j.name = fmt::format("{}-{}", f[c[3]], j.line);
                           j.tenant = std::string(f[c[3]]);  // the virtual cluster: a team
                           return Status::Ok();
                         });
    if (!trace) return trace;
    // Timestamps are absolute: make them relative to the first submission.
    Millis first{INT64_MAX};
    for (const TraceJob& j : trace->jobs) first = std::min(first, j.submit);
    for (TraceJob& j : trace->jobs) j.submit -= first;
    return trace;
  }
};

class TiresiasReader final : public TraceReader {
 public:
  std::string_view name() const override { return "tiresias"; }
  std::string_view description() const override {
    return "Tiresias CSV: job_id,num_gpu,submit_time,iterations,model_name,duration,interval";
  }
  bool Recognises(std::string_view, std::string_view first) const override {
    return first.starts_with("job_id,num_gpu,submit_time");
  }
  Result<Trace> Read(const std::string& path, const TraceOptions&) const override {
    return ReadCsv(path, name(), {"job_id", "num_gpu", "submit_time", "model_name", "duration"},
                   [](const auto& f, const auto& c, TraceJob& j) -> Status {
                     GP_TRY_ASSIGN(gpus, FieldInt("num_gpu", f[c[1]]));
                     if (Status s = CheckGpus(gpus); !s.ok()) return s;
                     GP_TRY_ASSIGN(submit, SecondsField("submit_time", f[c[2]]));
                     GP_TRY_ASSIGN(dur, SecondsField("duration", f[c[4]]));
                     j.name = fmt::format("{}-{}", f[c[3]], f[c[0]]);
                     j.gpus = static_cast<int>(gpus);
                     j.submit = submit;
                     j.duration = dur;
                     return Status::Ok();
                   });
  }
};

// Alibaba PAI openb pods: a pod asks num_gpu GPUs (or, with num_gpu 1 and gpu_milli < 1000, a
// share of one), cpu_milli and memory_mib, and may name allowed models in gpu_spec ("A|B").
// Run time = deletion_time - scheduled_time (creation_time when never scheduled).
class AlibabaReader final : public TraceReader {
 public:
  std::string_view name() const override { return "alibaba"; }
  std::string_view description() const override {
    return "Alibaba openb pod CSV: name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,...,creation_time,...";
  }
  bool Recognises(std::string_view, std::string_view first) const override {
    return first.starts_with("name,cpu_milli,memory_mib,num_gpu");
  }
  Result<Trace> Read(const std::string& path, const TraceOptions&) const override {
    return ReadCsv(
        path, name(),
        {"name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec?", "qos?", "creation_time",
         "deletion_time", "scheduled_time?"},
        [](const auto& f, const auto& c, TraceJob& j) -> Status {
          GP_TRY_ASSIGN(cpu, FieldInt("cpu_milli", f[c[1]]));
          GP_TRY_ASSIGN(mem, FieldInt("memory_mib", f[c[2]]));
          GP_TRY_ASSIGN(gpus, FieldInt("num_gpu", f[c[3]]));
          GP_TRY_ASSIGN(milli, FieldInt("gpu_milli", f[c[4]]));
          GP_TRY_ASSIGN(created, SecondsField("creation_time", f[c[7]]));
          GP_TRY_ASSIGN(deleted, SecondsField("deletion_time", f[c[8]]));
          if (Status s = CheckGpus(gpus); !s.ok()) return s;
          if (cpu < 0 || mem < 0) return Status(StatusCode::kInvalidArgument, "cpu_milli and memory_mib must not be negative");
          if (milli < 0 || milli > 1000) {
            return Status(StatusCode::kInvalidArgument, fmt::format("gpu_milli: {} is out of range (0..1000)", milli));
          }
          Millis start = created;
          if (c[9] != kAbsent && !f[c[9]].empty()) {
            GP_TRY_ASSIGN(sched, SecondsField("scheduled_time", f[c[9]]));
            start = sched;
          }
          if (deleted < start) {
            return Status(StatusCode::kInvalidArgument,
                          fmt::format("deletion_time {} is before the pod started ({})", f[c[8]], start.value() / 1000));
          }
          j.name = std::string(f[c[0]]);
          j.submit = created;
          j.duration = deleted - start;
          j.gpus = static_cast<int>(gpus);
          if (gpus == 1 && milli > 0 && milli < 1000) j.gpu_share = GpuMilli{milli};
          j.cpu = MilliCpu{cpu};
          j.memory = MiB{mem};
          const std::string_view qos = c[6] == kAbsent ? std::string_view("BE") : f[c[6]];
          j.priority = qos == "LS" ? 2 : (qos == "BE" ? 0 : 1);
          std::string_view spec = c[5] == kAbsent ? std::string_view() : f[c[5]];
          while (!spec.empty()) {
            const size_t bar = spec.find('|');
            if (std::string_view m = spec.substr(0, bar); !m.empty()) j.gpu_models.emplace_back(m);
            spec = bar == std::string_view::npos ? std::string_view() : spec.substr(bar + 1);
          }
          return Status::Ok();
        });
  }
};

class ProfileWorkloadReader final : public TraceReader {
 public:
  std::string_view name() const override { return "pollux"; }
  std::string_view description() const override {
    return "Pollux/Sia workload CSV (name,time,application,num_replicas,batch_size): recognised, not yet replayable";
  }
  bool Recognises(std::string_view, std::string_view first) const override {
    return first.starts_with("name,time,application,num_replicas");
  }
  Result<Trace> Read(const std::string& path, const TraceOptions&) const override {
    return ParseError(fmt::format(
        "{}:1: a Pollux/Sia workload gives no job length: it ends when its application reaches its target "
        "epochs, which needs the throughput and efficiency model of the app profiles (not implemented yet)",
        path));
  }
};

}  // namespace

std::unique_ptr<TraceReader> MakePhillyReader() { return std::make_unique<PhillyReader>(); }
std::unique_ptr<TraceReader> MakeTiresiasReader() { return std::make_unique<TiresiasReader>(); }
std::unique_ptr<TraceReader> MakeAlibabaReader() { return std::make_unique<AlibabaReader>(); }
std::unique_ptr<TraceReader> MakeProfileWorkloadReader() { return std::make_unique<ProfileWorkloadReader>(); }

}  // namespace gp
