// What a GPU error means for scheduling. NVIDIA reports driver-detected faults as XID codes
// (and ECC counts); some say the application faulted (the job's own problem), some that the
// GPU can no longer be trusted. The table follows NVIDIA's XID catalog; an unknown code is
// treated as a fault of the GPU (safer to move work off it than to keep using it).
// Pure; thread-safe.
#pragma once

#include <string_view>

namespace gp {

enum class GpuFaultAction : unsigned char {
  kNone,        // informational: keep using the GPU
  kJobsFault,   // the application faulted (e.g. an illegal address): the job fails as it will
  kQuarantine,  // the GPU is unreliable: take it out of service and move its jobs elsewhere
};

struct XidClass {
  GpuFaultAction action;
  std::string_view meaning;
};

XidClass ClassifyXid(int xid);

}  // namespace gp
