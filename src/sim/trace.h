// Cluster traces as the simulator reads them. A reader turns one file format into TraceJobs;
// readers register by format name and say whether they recognise a file, so the format can be
// detected or given. Rows keep their source line, and every error is "file:line: what".
// Formats: philly (Pollux's philly.csv), tiresias (60_job.csv), gavel (.trace, 7 or 10
// fields), shockwave (.trace, 12 fields), alibaba (openb pod CSV), events (a live pool's
// event log, NDJSON CloudEvents). Pollux and Sia workload CSVs
// are recognised and refused with a reason: they need a throughput model from app profiles.
// Readers do file I/O and run on the caller's thread.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "state/records.h"
#include "core/quantity.h"
#include "core/status.h"

namespace gp {

struct TraceJob {
  std::string name;
  int line = 0;                 // source line, for messages
  Millis submit{0};             // from the trace's start
  Millis duration{0};           // run time on the reference GPU model (or the only one given)
  int gpus = 0;                 // total GPUs; the simulator splits them into tasks
  int tasks = 0;                // the tasks, when the trace says (a live pool's log); 0: split
  GpuMilli gpu_share = kWholeGpu;
  std::vector<std::string> gpu_models;  // allowed models; empty = any
  MilliCpu cpu{0};              // total for the job
  MiB memory{0};
  int priority = 0;
  std::string tenant;           // the team it belongs to, where the trace says (Philly's virtual cluster)
  // When the trace's throughput table gives a run time per GPU model (Gavel): model -> time.
  std::vector<std::pair<std::string, Millis>> duration_by_model;
  // Slurm's dependencies, on other jobs of the trace by their position + 1 (a live pool's log
  // has them): held until met, cancelled when they never can be.
  std::vector<Dependency> after;
  bool singleton = false;
  bool fails = false;  // it ends failed (as it did in the log), for its afterok/afternotok dependents
};

struct Trace {
  std::string path;
  std::string format;
  std::vector<TraceJob> jobs;  // in file order
};

struct TraceOptions {
  std::string throughputs;     // Gavel/Shockwave throughput table; found beside the trace if empty
};

class TraceReader {
 public:
  virtual ~TraceReader() = default;
  virtual std::string_view name() const = 0;
  virtual std::string_view description() const = 0;
  // Whether this reader recognises the file from its name and first line.
  virtual bool Recognises(std::string_view path, std::string_view first_line) const = 0;
  virtual Result<Trace> Read(const std::string& path, const TraceOptions& options) const = 0;
};

const std::vector<std::unique_ptr<TraceReader>>& TraceReaders();

// Reads a trace; `format` empty means detect. Errors name the file and line.
Result<Trace> ReadTrace(const std::string& path, std::string_view format, const TraceOptions& options);

// Reader factories (one per file).
std::unique_ptr<TraceReader> MakePhillyReader();
std::unique_ptr<TraceReader> MakeTiresiasReader();
std::unique_ptr<TraceReader> MakeGavelReader();
std::unique_ptr<TraceReader> MakeShockwaveReader();
std::unique_ptr<TraceReader> MakeAlibabaReader();
std::unique_ptr<TraceReader> MakeProfileWorkloadReader();
std::unique_ptr<TraceReader> MakeEventsReader();

// "YYYY-MM-DD HH:MM:SS" or RFC 3339's "YYYY-MM-DDTHH:MM:SS[.fff]Z": ms since the epoch, the
// time taken as UTC; nullopt when the text is not one.
std::optional<int64_t> CivilTimeMs(std::string_view text);

// Seconds (possibly fractional) to Millis, rounded to nearest; the error names the field.
Result<Millis> SecondsField(std::string_view name, std::string_view text);

}  // namespace gp
