#include "adapters/nvml.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <array>
#include <cstring>

namespace gp {
namespace {

// The few NVML types used here, as NVML's API reference defines them (stable C ABI).
using NvmlReturn = int;  // NVML_SUCCESS = 0
constexpr NvmlReturn kNvmlSuccess = 0;
using NvmlDevice = struct NvmlDeviceOpaque*;
struct NvmlMemory {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
struct NvmlUtilization {
  unsigned int gpu;
  unsigned int memory;
};
struct NvmlPciInfo {
  char bus_id_legacy[16];
  unsigned int domain;
  unsigned int bus;
  unsigned int device;
  unsigned int pci_device_id;
  unsigned int pci_subsystem_id;
  char bus_id[32];
};
constexpr int kTemperatureGpu = 0;       // NVML_TEMPERATURE_GPU
constexpr int kEccUncorrected = 1;       // NVML_MEMORY_ERROR_TYPE_UNCORRECTED
constexpr int kEccVolatile = 0;          // NVML_VOLATILE_ECC
constexpr unsigned kMaxNvLinks = 18;     // NVML_NVLINK_MAX_LINKS
constexpr unsigned kNameBuffer = 96;     // NVML_DEVICE_NAME_V2_BUFFER_SIZE / UUID_V2
using NvmlEventSet = struct NvmlEventSetOpaque*;
struct NvmlEventData {
  NvmlDevice device;
  unsigned long long event_type;
  unsigned long long event_data;  // the XID, for XID events
  unsigned int gpu_instance_id;
  unsigned int compute_instance_id;
};
constexpr unsigned long long kEventXidCritical = 0x8;  // nvmlEventTypeXidCriticalError
constexpr NvmlReturn kNvmlTimeout = 10;                 // NVML_ERROR_TIMEOUT

class NvmlSource final : public GpuSource {
 public:
  ~NvmlSource() override {
    if (events_ && event_free_) event_free_(events_);
    if (shutdown_) shutdown_();
    if (lib_) dlclose(lib_);
  }
  static Result<std::unique_ptr<GpuSource>> Open(const std::string& library);
  std::string_view kind() const override { return "nvml"; }
  Result<std::vector<GpuDevice>> Devices() override;
  Result<std::vector<GpuSample>> Sample() override;
  std::string_view xid_events() const override { return xid_status_; }

 private:
  void WatchXids(const std::vector<NvmlDevice>& handles);
  template <typename F>
  bool Load(F& fn, const char* name) {
    fn = reinterpret_cast<F>(dlsym(lib_, name));
    return fn != nullptr;
  }
  std::string Why(NvmlReturn r) const { return error_string_ ? error_string_(r) : fmt::format("NVML error {}", r); }
  Result<std::vector<NvmlDevice>> Handles();

  void* lib_ = nullptr;
  NvmlReturn (*init_)() = nullptr;
  NvmlReturn (*shutdown_)() = nullptr;
  const char* (*error_string_)(NvmlReturn) = nullptr;
  NvmlReturn (*count_)(unsigned*) = nullptr;
  NvmlReturn (*handle_)(unsigned, NvmlDevice*) = nullptr;
  NvmlReturn (*name_)(NvmlDevice, char*, unsigned) = nullptr;
  NvmlReturn (*uuid_)(NvmlDevice, char*, unsigned) = nullptr;
  NvmlReturn (*memory_)(NvmlDevice, NvmlMemory*) = nullptr;
  NvmlReturn (*utilisation_)(NvmlDevice, NvmlUtilization*) = nullptr;
  // Optional: absent on old drivers, NOT_SUPPORTED on some boards.
  NvmlReturn (*temperature_)(NvmlDevice, int, unsigned*) = nullptr;
  NvmlReturn (*power_)(NvmlDevice, unsigned*) = nullptr;
  NvmlReturn (*capability_)(NvmlDevice, int*, int*) = nullptr;
  NvmlReturn (*ecc_)(NvmlDevice, int, int, unsigned long long*) = nullptr;
  NvmlReturn (*nvlink_state_)(NvmlDevice, unsigned, int*) = nullptr;
  NvmlReturn (*nvlink_remote_)(NvmlDevice, unsigned, NvmlPciInfo*) = nullptr;
  NvmlReturn (*pci_)(NvmlDevice, NvmlPciInfo*) = nullptr;
  NvmlReturn (*event_create_)(NvmlEventSet*) = nullptr;
  NvmlReturn (*event_register_)(NvmlDevice, unsigned long long, NvmlEventSet) = nullptr;
  NvmlReturn (*event_wait_)(NvmlEventSet, NvmlEventData*, unsigned) = nullptr;
  NvmlReturn (*event_free_)(NvmlEventSet) = nullptr;
  NvmlEventSet events_ = nullptr;
  std::string xid_status_ = "not watched";
  bool xid_tried_ = false;
};

Result<std::unique_ptr<GpuSource>> NvmlSource::Open(const std::string& library) {
  auto s = std::make_unique<NvmlSource>();
  s->lib_ = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!s->lib_) {
    const char* why = dlerror();
    return Error(StatusCode::kNotFound, fmt::format("NVML: cannot load {} ({}); is the NVIDIA driver installed? "
                                                    "Without a GPU, use simulated GPUs", library, why ? why : "?"));
  }
  const bool required = s->Load(s->init_, "nvmlInit_v2") && s->Load(s->shutdown_, "nvmlShutdown") &&
                        s->Load(s->error_string_, "nvmlErrorString") && s->Load(s->count_, "nvmlDeviceGetCount_v2") &&
                        s->Load(s->handle_, "nvmlDeviceGetHandleByIndex_v2") && s->Load(s->name_, "nvmlDeviceGetName") &&
                        s->Load(s->uuid_, "nvmlDeviceGetUUID") && s->Load(s->memory_, "nvmlDeviceGetMemoryInfo") &&
                        s->Load(s->utilisation_, "nvmlDeviceGetUtilizationRates");
  if (!required) {
    s->shutdown_ = nullptr;
    return Error(StatusCode::kFailedPrecondition, fmt::format("NVML: {} lacks a required function; driver too old?", library));
  }
  s->Load(s->temperature_, "nvmlDeviceGetTemperature");
  s->Load(s->power_, "nvmlDeviceGetPowerUsage");
  s->Load(s->capability_, "nvmlDeviceGetCudaComputeCapability");
  s->Load(s->ecc_, "nvmlDeviceGetTotalEccErrors");
  s->Load(s->nvlink_state_, "nvmlDeviceGetNvLinkState");
  s->Load(s->nvlink_remote_, "nvmlDeviceGetNvLinkRemotePciInfo_v2");
  s->Load(s->pci_, "nvmlDeviceGetPciInfo_v3");
  s->Load(s->event_create_, "nvmlEventSetCreate");
  s->Load(s->event_register_, "nvmlDeviceRegisterEvents");
  s->Load(s->event_wait_, "nvmlEventSetWait_v2");
  s->Load(s->event_free_, "nvmlEventSetFree");
  if (NvmlReturn r = s->init_(); r != kNvmlSuccess) {
    const std::string why = s->Why(r);
    s->shutdown_ = nullptr;
    return Error(StatusCode::kFailedPrecondition, fmt::format("NVML: init failed: {}", why));
  }
  return std::unique_ptr<GpuSource>(std::move(s));
}

Result<std::vector<NvmlDevice>> NvmlSource::Handles() {
  unsigned n = 0;
  if (NvmlReturn r = count_(&n); r != kNvmlSuccess) return Error(StatusCode::kInternal, "NVML: device count: " + Why(r));
  std::vector<NvmlDevice> out(n);
  for (unsigned i = 0; i < n; ++i) {
    if (NvmlReturn r = handle_(i, &out[i]); r != kNvmlSuccess) {
      return Error(StatusCode::kInternal, fmt::format("NVML: device {}: {}", i, Why(r)));
    }
  }
  return out;
}

Result<std::vector<GpuDevice>> NvmlSource::Devices() {
  auto handles = Handles();
  if (!handles) return tl::unexpected(handles.error());
  std::vector<GpuDevice> out;
  std::vector<NvmlPciInfo> pci(handles->size());
  for (size_t i = 0; i < handles->size(); ++i) {
    NvmlDevice h = (*handles)[i];
    GpuDevice d{.index = static_cast<int>(i)};
    std::array<char, kNameBuffer> buf{};
    if (name_(h, buf.data(), kNameBuffer) == kNvmlSuccess) d.name = buf.data();
    buf.fill(0);
    if (uuid_(h, buf.data(), kNameBuffer) == kNvmlSuccess) d.uuid = buf.data();
    NvmlMemory m{};
    if (NvmlReturn r = memory_(h, &m); r != kNvmlSuccess) {
      return Error(StatusCode::kInternal, fmt::format("NVML: device {} memory: {}", i, Why(r)));
    }
    d.memory = MiB{static_cast<int64_t>(m.total / (1024 * 1024))};
    int major = 0;
    int minor = 0;
    if (capability_ && capability_(h, &major, &minor) == kNvmlSuccess) d.compute_capability = major * 10 + minor;
    if (pci_) pci_(h, &pci[i]);
    out.push_back(std::move(d));
  }
  // NVLink peers: each active link's remote PCI address matched against the local GPUs.
  if (nvlink_state_ && nvlink_remote_ && pci_) {
    for (size_t i = 0; i < handles->size(); ++i) {
      for (unsigned link = 0; link < kMaxNvLinks; ++link) {
        int active = 0;
        if (nvlink_state_((*handles)[i], link, &active) != kNvmlSuccess || !active) continue;
        NvmlPciInfo remote{};
        if (nvlink_remote_((*handles)[i], link, &remote) != kNvmlSuccess) continue;
        for (size_t j = 0; j < pci.size() && j < 16; ++j) {
          if (j != i && pci[j].domain == remote.domain && pci[j].bus == remote.bus && pci[j].device == remote.device) {
            out[i].nvlink_peers = static_cast<uint16_t>(out[i].nvlink_peers | (1u << j));
          }
        }
      }
    }
  }
  return out;
}

// Critical XID events (nvmlEventTypeXidCriticalError) on every GPU that supports them.
void NvmlSource::WatchXids(const std::vector<NvmlDevice>& handles) {
  xid_tried_ = true;
  if (!event_create_ || !event_register_ || !event_wait_) {
    xid_status_ = "not watched: this NVML has no event API";
    return;
  }
  if (NvmlReturn r = event_create_(&events_); r != kNvmlSuccess) {
    xid_status_ = "not watched: " + Why(r);
    events_ = nullptr;
    return;
  }
  int watched = 0;
  std::string why;
  for (NvmlDevice h : handles) {
    const NvmlReturn r = event_register_(h, kEventXidCritical, events_);
    if (r == kNvmlSuccess) ++watched;
    else why = Why(r);
  }
  xid_status_ = watched == static_cast<int>(handles.size())
                    ? fmt::format("watched on {} GPU(s)", watched)
                    : fmt::format("watched on {} of {} GPU(s) ({})", watched, handles.size(), why);
}

Result<std::vector<GpuSample>> NvmlSource::Sample() {
  auto handles = Handles();
  if (!handles) return tl::unexpected(handles.error());
  if (!xid_tried_) WatchXids(*handles);
  std::vector<GpuSample> out;
  for (size_t i = 0; i < handles->size(); ++i) {
    NvmlDevice h = (*handles)[i];
    GpuSample s{.index = static_cast<int>(i)};
    NvmlUtilization u{};
    if (NvmlReturn r = utilisation_(h, &u); r != kNvmlSuccess) {
      return Error(StatusCode::kInternal, fmt::format("NVML: device {} utilisation: {}", i, Why(r)));
    }
    s.utilisation = PerMille{u.gpu * 10LL};
    s.memory_utilisation = PerMille{u.memory * 10LL};
    NvmlMemory m{};
    if (memory_(h, &m) == kNvmlSuccess) {
      s.memory_used = MiB{static_cast<int64_t>(m.used / (1024 * 1024))};
      s.memory_total = MiB{static_cast<int64_t>(m.total / (1024 * 1024))};
    }
    unsigned v = 0;
    if (temperature_ && temperature_(h, kTemperatureGpu, &v) == kNvmlSuccess) s.temperature_c = static_cast<int>(v);
    if (power_ && power_(h, &v) == kNvmlSuccess) s.power_mw = v;
    unsigned long long ecc = 0;
    if (ecc_ && ecc_(h, kEccUncorrected, kEccVolatile, &ecc) == kNvmlSuccess) s.ecc_uncorrected = static_cast<int64_t>(ecc);
    out.push_back(s);
  }
  // Drain the XID events that arrived since the last sample (never blocking: timeout 0).
  if (events_) {
    NvmlEventData e{};
    while (event_wait_(events_, &e, 0) == kNvmlSuccess) {
      for (size_t i = 0; i < handles->size(); ++i) {
        if ((*handles)[i] == e.device && (e.event_type & kEventXidCritical)) out[i].xids.push_back(static_cast<int>(e.event_data));
      }
    }
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<GpuSource>> OpenNvml(const std::string& library) { return NvmlSource::Open(library); }

}  // namespace gp
