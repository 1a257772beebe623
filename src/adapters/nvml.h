// The NVIDIA driver's NVML, opened at run time with dlopen so that gpupool builds and runs on
// machines without a GPU and needs no CUDA headers. Implements GpuSource: inventory (name, UUID,
// memory, compute capability, NVLink peers) and samples (utilisation, memory, temperature,
// power, uncorrected ECC errors). One instance per process; not thread-safe.
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "telemetry/gpu_source.h"

namespace gp {

// Fails with a message a user can act on when the library or a GPU is missing.
Result<std::unique_ptr<GpuSource>> OpenNvml(const std::string& library = "libnvidia-ml.so.1");

}  // namespace gp
