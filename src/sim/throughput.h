// Gavel-schema throughput tables (Gavel's simulation_throughputs.json, Shockwave's
// tacc_throughputs.json): worker type -> "(job type, scale factor)" -> {"null": steps per
// second when the job runs alone, ...co-location pairs}. Only the isolated figure is used.
// Loaded once; read-only after; safe to share.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"

namespace gp {

class ThroughputTable {
 public:
  static Result<ThroughputTable> Load(const std::string& path);

  // Steps per second of job_type on `scale` workers of `worker` ("v100"), if measured.
  std::optional<double> Get(const std::string& worker, const std::string& job_type, int scale) const;
  // The consolidated worker types, e.g. {"k80", "p100", "v100"} (not "*_unconsolidated").
  std::vector<std::string> workers() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::map<std::string, std::map<std::pair<std::string, int>, double>> table_;
};

}  // namespace gp
