// Gavel and Shockwave .trace files: tab-separated, no header. Job length is total steps divided
// by the isolated throughput of (job type, scale factor) from the throughput table, per GPU
// model, so a job runs longer on a K80 than on a V100 exactly as the table says. Where the
// table has only (job type, 1), that throughput is used: the job gets no speed-up from more GPUs.
//   Gavel 2019 (msr traces), 7 fields: job_type, command, num_steps_arg, needs_data_dir,
//     total_steps, arrival_time, scale_factor
//   Gavel current (physical_cluster), 10 fields: job_type, command, working_directory,
//     num_steps_arg, needs_data_dir, total_steps, scale_factor, priority_weight, SLO, arrival_time
//   Shockwave, 12 fields: ... total_steps, scale_factor, mode, priority_weight, SLO, duration,
//     arrival_time
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>

#include "sim/read_file.h"
#include "sim/throughput.h"
#include "sim/trace.h"

namespace gp {
namespace {

struct Layout {
  size_t fields;
  size_t steps, scale, arrival;
  std::optional<size_t> priority;
};
constexpr Layout kGavel2019{7, 4, 6, 5, std::nullopt};
constexpr Layout kGavelCurrent{10, 5, 6, 9, 7};
constexpr Layout kShockwave{12, 5, 6, 11, 8};

size_t TabFields(std::string_view line) {
  return static_cast<size_t>(std::count(line.begin(), line.end(), '\t')) + 1;
}

std::string FindTable(const std::string& trace_path, const std::string& given) {
  if (!given.empty()) return given;
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(trace_path).parent_path();
  for (const fs::path& d : {dir, dir.parent_path()}) {
    for (const char* name : {"simulation_throughputs.json", "tacc_throughputs.json"}) {
      std::error_code ec;
      if (fs::exists(d / name, ec)) return (d / name).string();
    }
  }
  return {};
}

class GavelReader final : public TraceReader {
 public:
  GavelReader(std::string_view name, std::vector<Layout> layouts) : name_(name), layouts_(std::move(layouts)) {}
  std::string_view name() const override { return name_; }
  std::string_view description() const override {
    return name_ == "shockwave" ? "Shockwave .trace (12 tab-separated fields) + throughput table"
                                : "Gavel .trace (7 or 10 tab-separated fields) + throughput table";
  }
  bool Recognises(std::string_view path, std::string_view first) const override {
    if (!path.ends_with(".trace")) return false;
    const size_t n = TabFields(first);
    return std::any_of(layouts_.begin(), layouts_.end(), [&](const Layout& l) { return l.fields == n; });
  }
  Result<Trace> Read(const std::string& path, const TraceOptions& options) const override;

 private:
  std::string name_;
  std::vector<Layout> layouts_;
};

Result<Trace> GavelReader::Read(const std::string& path, const TraceOptions& options) const {
  const std::string table_path = FindTable(path, options.throughputs);
  if (table_path.empty()) {
    return InvalidArgument(fmt::format(
        "{}: no throughput table given (--throughputs) or found beside the trace "
        "(simulation_throughputs.json or tacc_throughputs.json)", path));
  }
  auto table = ThroughputTable::Load(table_path);
  if (!table) return tl::unexpected(table.error());
  const std::vector<std::string> workers = table->workers();
  auto file = OpenDelimited(path, '\t');
  if (!file) return tl::unexpected(file.error());
  Trace trace{.path = path, .format = name_};
  std::vector<std::string_view> f;
  const Layout* layout = nullptr;
  while (file->Next(f)) {
    auto fail = [&](const std::string& m) { return tl::unexpected(file->ErrorAt(file->line(), m)); };
    if (!layout) {
      for (const Layout& l : layouts_) {
        if (l.fields == f.size()) layout = &l;
      }
      if (!layout) return fail(fmt::format("{} fields; a {} trace has {}", f.size(), name_, layouts_.front().fields));
    }
    if (f.size() != layout->fields) return fail(fmt::format("expected {} tab-separated fields, got {}", layout->fields, f.size()));
    TraceJob j{.name = fmt::format("{}#{}", f[0], file->line()), .line = file->line()};
    auto steps = FieldInt("total_steps", f[layout->steps]);
    if (!steps || *steps <= 0) return fail(steps ? fmt::format("total_steps: {} must be positive", *steps) : steps.error().message());
    auto scale = FieldInt("scale_factor", f[layout->scale]);
    if (!scale || *scale < 1 || *scale > 100'000) {
      return fail(scale ? fmt::format("scale_factor: {} is out of range (1..100000)", *scale) : scale.error().message());
    }
    auto arrival = SecondsField("arrival_time", f[layout->arrival]);
    if (!arrival) return fail(arrival.error().message());
    if (layout->priority) {
      auto p = FieldNumber("priority_weight", f[*layout->priority]);
      if (!p) return fail(p.error().message());
      j.priority = static_cast<int>(std::lround(*p));
    }
    j.gpus = static_cast<int>(*scale);
    j.submit = *arrival;
    const std::string type(f[0]);
    for (const std::string& w : workers) {
      // Jobs the table measured only on one GPU (Gavel's Recommendation, CycleGAN, A3C are not
      // data-parallel) hold all their GPUs but run at single-GPU speed: no speed-up assumed.
      auto thr = table->Get(w, type, j.gpus);
      if (!thr) thr = table->Get(w, type, 1);
      if (!thr) continue;
      std::string model = w;
      std::transform(model.begin(), model.end(), model.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
      const Millis d{static_cast<int64_t>(std::llround(static_cast<double>(*steps) / *thr * 1000.0))};
      j.duration_by_model.emplace_back(model, d);
      if (w == "v100" || j.duration.value() == 0) j.duration = d;
    }
    if (j.duration_by_model.empty()) {
      return fail(fmt::format("no throughput for ('{}', {}) in {}", type, j.gpus, table_path));
    }
    trace.jobs.push_back(std::move(j));
  }
  return trace;
}

}  // namespace

std::unique_ptr<TraceReader> MakeGavelReader() {
  return std::make_unique<GavelReader>("gavel", std::vector<Layout>{kGavel2019, kGavelCurrent});
}
std::unique_ptr<TraceReader> MakeShockwaveReader() {
  return std::make_unique<GavelReader>("shockwave", std::vector<Layout>{kShockwave});
}

}  // namespace gp
