// `gpupool sbatch`: a Slurm batch script, unchanged, as a gpupool job (docs/slurm.md). Its
// #SBATCH directives (and the command line's options, which override them) become the job's
// fields; the job runs the script under a small wrapper that sets the SLURM_* variables the
// script reads, puts `srun` and `scontrol` shims first on its PATH, and writes its output where
// --output and --error say (%j, %A, %a, %x, %N, %n, %%). A directive gpupool does not take is an
// error naming it and its line.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace gp {

struct SbatchInput {
  std::string script_path;               // for messages
  std::string script_text;
  std::vector<std::string> options;      // the command line's, before the script
  std::vector<std::string> script_args;  // after it
  std::string submit_dir;                // SLURM_SUBMIT_DIR
  std::string submit_host;
  std::map<std::string, std::string> environment;  // the submitter's, for --export
  std::vector<std::string> gpu_models;   // the pool's (to tell a model from a partition's other names)
  int node_gpus = 0;                     // GPUs of the pool's largest node (for --exclusive)
};

// The submission (POST /v1/jobs) for the script, or an error naming the directive and line.
Result<nlohmann::json> SbatchRequest(const SbatchInput& in);

}  // namespace gp
