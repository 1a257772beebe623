#include "health/gpu_health.h"

namespace gp {

XidClass ClassifyXid(int xid) {
  switch (xid) {
    case 13: return {GpuFaultAction::kJobsFault, "graphics engine exception (usually the application)"};
    case 31: return {GpuFaultAction::kJobsFault, "GPU memory page fault (usually an illegal address in the application)"};
    case 43: return {GpuFaultAction::kJobsFault, "GPU stopped processing (the application was killed or faulted)"};
    case 45: return {GpuFaultAction::kNone, "preemptive cleanup after the application ended"};
    case 63: return {GpuFaultAction::kNone, "ECC page retirement or row remapping recorded"};
    case 92: return {GpuFaultAction::kNone, "high single-bit ECC error rate"};
    case 94: return {GpuFaultAction::kJobsFault, "contained ECC error: the affected application is stopped, the GPU is fine"};
    case 48: return {GpuFaultAction::kQuarantine, "double-bit ECC error"};
    case 64: return {GpuFaultAction::kQuarantine, "ECC page retirement or row remapping failed"};
    case 74: return {GpuFaultAction::kQuarantine, "NVLink error"};
    case 79: return {GpuFaultAction::kQuarantine, "GPU has fallen off the bus"};
    case 95: return {GpuFaultAction::kQuarantine, "uncontained ECC error: the GPU needs a reset"};
    case 119: return {GpuFaultAction::kQuarantine, "GSP RPC timeout"};
    case 120: return {GpuFaultAction::kQuarantine, "GSP error"};
    default: return {GpuFaultAction::kQuarantine, "unrecognised XID: treated as a GPU fault"};
  }
}

}  // namespace gp
