// An active check of one GPU through the CUDA driver API (libcuda.so.1, opened at run time
// like NVML, so gpupool needs no CUDA toolkit to build): it creates a context on the GPU,
// writes and reads back device memory with a pattern, and runs a small kernel (PTX text,
// compiled by the driver's JIT) whose every result is checked on the host. This is what
// `gpupool gpu-selftest` runs for an agent's quarantined GPU when no other command is given.
// Run it in a process of its own: a broken GPU can hang the driver.
#pragma once

#include <string>

#include "core/status.h"

namespace gp {

struct CudaCheckOptions {
  std::string uuid;          // the GPU, as NVML names it ("GPU-6a3e...")
  int ordinal = 0;           // used when no UUID is given
  size_t megabytes = 256;    // device memory written and read back
  std::string library = "libcuda.so.1";
};

// A line saying what was checked on success; an error naming the step that failed otherwise.
Result<std::string> CudaCheck(const CudaCheckOptions& options);

}  // namespace gp
