#include "adapters/cuda_check.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <vector>

namespace gp {
namespace {

// The few CUDA driver API types used here, as its reference defines them (stable C ABI).
using CuResult = int;  // CUDA_SUCCESS = 0
using CuDevice = int;
using CuContext = struct CuCtxOpaque*;
using CuModule = struct CuModOpaque*;
using CuFunction = struct CuFuncOpaque*;
using CuDevicePtr = unsigned long long;
struct CuUuid {
  unsigned char bytes[16];
};

// y[i] = x[i] * 3 + i for i < n: every element's result depends on the load, the arithmetic
// and the store, so a wrong memory cell or a broken SM shows up as a wrong value.
constexpr const char* kPtx = R"(
.version 6.0
.target sm_60
.address_size 64

.visible .entry gpupool_check(.param .u64 px, .param .u64 py, .param .u32 pn)
{
  .reg .pred %p;
  .reg .b32 %r<8>;
  .reg .b64 %rd<8>;
  ld.param.u64 %rd1, [px];
  ld.param.u64 %rd2, [py];
  ld.param.u32 %r1, [pn];
  mov.u32 %r2, %ctaid.x;
  mov.u32 %r3, %ntid.x;
  mov.u32 %r4, %tid.x;
  mad.lo.s32 %r5, %r2, %r3, %r4;
  setp.ge.u32 %p, %r5, %r1;
  @%p bra DONE;
  cvta.to.global.u64 %rd3, %rd1;
  cvta.to.global.u64 %rd4, %rd2;
  mul.wide.u32 %rd5, %r5, 4;
  add.s64 %rd6, %rd3, %rd5;
  ld.global.u32 %r6, [%rd6];
  mad.lo.s32 %r7, %r6, 3, %r5;
  add.s64 %rd7, %rd4, %rd5;
  st.global.u32 [%rd7], %r7;
DONE:
  ret;
}
)";

struct Cuda {
  void* lib = nullptr;
  CuResult (*Init)(unsigned) = nullptr;
  CuResult (*DeviceGetCount)(int*) = nullptr;
  CuResult (*DeviceGet)(CuDevice*, int) = nullptr;
  CuResult (*DeviceGetUuid)(CuUuid*, CuDevice) = nullptr;
  CuResult (*DeviceGetName)(char*, int, CuDevice) = nullptr;
  CuResult (*CtxCreate)(CuContext*, unsigned, CuDevice) = nullptr;
  CuResult (*CtxDestroy)(CuContext) = nullptr;
  CuResult (*CtxSynchronize)() = nullptr;
  CuResult (*MemAlloc)(CuDevicePtr*, size_t) = nullptr;
  CuResult (*MemFree)(CuDevicePtr) = nullptr;
  CuResult (*MemsetD32)(CuDevicePtr, unsigned, size_t) = nullptr;
  CuResult (*MemcpyHtoD)(CuDevicePtr, const void*, size_t) = nullptr;
  CuResult (*MemcpyDtoH)(void*, CuDevicePtr, size_t) = nullptr;
  CuResult (*ModuleLoadData)(CuModule*, const void*) = nullptr;
  CuResult (*ModuleUnload)(CuModule) = nullptr;
  CuResult (*ModuleGetFunction)(CuFunction*, CuModule, const char*) = nullptr;
  CuResult (*LaunchKernel)(CuFunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void*, void**,
                           void**) = nullptr;
  CuResult (*GetErrorString)(CuResult, const char**) = nullptr;

  ~Cuda() {
    if (lib) dlclose(lib);
  }
  std::string Why(CuResult r) const {
    const char* s = nullptr;
    if (GetErrorString) GetErrorString(r, &s);
    return s ? fmt::format("{} (CUDA error {})", s, r) : fmt::format("CUDA error {}", r);
  }
};

template <typename F>
bool Bind(void* lib, F& fn, const char* name) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  return fn != nullptr;
}

std::string FormatUuid(const CuUuid& u) {
  std::string s = "GPU-";
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += fmt::format("{:02x}", u.bytes[i]);
  }
  return s;
}

}  // namespace

Result<std::string> CudaCheck(const CudaCheckOptions& o) {
  Cuda cu;
  cu.lib = dlopen(o.library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!cu.lib) return Error(StatusCode::kUnavailable, fmt::format("cannot load {}: {}", o.library, dlerror()));
  bool ok = Bind(cu.lib, cu.Init, "cuInit") && Bind(cu.lib, cu.DeviceGetCount, "cuDeviceGetCount") &&
            Bind(cu.lib, cu.DeviceGet, "cuDeviceGet") && Bind(cu.lib, cu.DeviceGetUuid, "cuDeviceGetUuid") &&
            Bind(cu.lib, cu.DeviceGetName, "cuDeviceGetName") && Bind(cu.lib, cu.CtxCreate, "cuCtxCreate_v2") &&
            Bind(cu.lib, cu.CtxDestroy, "cuCtxDestroy_v2") && Bind(cu.lib, cu.CtxSynchronize, "cuCtxSynchronize") &&
            Bind(cu.lib, cu.MemAlloc, "cuMemAlloc_v2") && Bind(cu.lib, cu.MemFree, "cuMemFree_v2") &&
            Bind(cu.lib, cu.MemsetD32, "cuMemsetD32_v2") && Bind(cu.lib, cu.MemcpyHtoD, "cuMemcpyHtoD_v2") &&
            Bind(cu.lib, cu.MemcpyDtoH, "cuMemcpyDtoH_v2") && Bind(cu.lib, cu.ModuleLoadData, "cuModuleLoadData") &&
            Bind(cu.lib, cu.ModuleUnload, "cuModuleUnload") && Bind(cu.lib, cu.ModuleGetFunction, "cuModuleGetFunction") &&
            Bind(cu.lib, cu.LaunchKernel, "cuLaunchKernel") && Bind(cu.lib, cu.GetErrorString, "cuGetErrorString");
  if (!ok) return Error(StatusCode::kUnavailable, fmt::format("{} lacks a CUDA driver API function", o.library));
  auto fail = [&](const char* step, CuResult r) { return Error(StatusCode::kInternal, fmt::format("{}: {}", step, cu.Why(r))); };
  const auto t0 = std::chrono::steady_clock::now();
  if (CuResult r = cu.Init(0)) return fail("cuInit", r);
  int count = 0;
  if (CuResult r = cu.DeviceGetCount(&count)) return fail("cuDeviceGetCount", r);
  CuDevice dev = -1;
  for (int i = 0; i < count; ++i) {
    CuDevice d = 0;
    CuUuid u{};
    if (cu.DeviceGet(&d, i) != 0 || cu.DeviceGetUuid(&u, d) != 0) continue;
    if (o.uuid.empty() ? i == o.ordinal : FormatUuid(u) == o.uuid) dev = d;
  }
  if (dev < 0) {
    return Error(StatusCode::kNotFound, o.uuid.empty() ? fmt::format("no CUDA device {} ({} visible)", o.ordinal, count)
                                                       : fmt::format("no CUDA device with UUID {} ({} visible)", o.uuid, count));
  }
  char name[128] = {};
  cu.DeviceGetName(name, sizeof(name) - 1, dev);
  CuContext ctx = nullptr;
  if (CuResult r = cu.CtxCreate(&ctx, 0, dev)) return fail("cuCtxCreate", r);
  struct Guard {
    Cuda& c;
    CuContext ctx;
    CuDevicePtr x = 0, y = 0;
    CuModule mod = nullptr;
    ~Guard() {
      if (mod) c.ModuleUnload(mod);
      if (x) c.MemFree(x);
      if (y) c.MemFree(y);
      c.CtxDestroy(ctx);
    }
  } g{cu, ctx};
  const size_t n = o.megabytes * (1 << 20) / 4 / 2;  // two buffers of n words
  const size_t bytes = n * 4;
  if (CuResult r = cu.MemAlloc(&g.x, bytes)) return fail("cuMemAlloc", r);
  if (CuResult r = cu.MemAlloc(&g.y, bytes)) return fail("cuMemAlloc", r);
  // 1. Memory: a pattern written by the GPU, read back by the host, in both buffers.
  std::vector<uint32_t> host(n);
  for (const uint32_t pattern : {0xA5A5A5A5u, 0x5A5A5A5Au}) {
    for (CuDevicePtr p : {g.x, g.y}) {
      if (CuResult r = cu.MemsetD32(p, pattern, n)) return fail("cuMemsetD32", r);
      if (CuResult r = cu.MemcpyDtoH(host.data(), p, bytes)) return fail("cuMemcpyDtoH", r);
      for (size_t i = 0; i < n; ++i) {
        if (host[i] != pattern) {
          return Error(StatusCode::kInternal, fmt::format("memory: word {} reads {:#x}, wrote {:#x}", i, host[i], pattern));
        }
      }
    }
  }
  // 2. Compute: the kernel over every element, checked on the host.
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<uint32_t>(i * 2654435761u);
  if (CuResult r = cu.MemcpyHtoD(g.x, host.data(), bytes)) return fail("cuMemcpyHtoD", r);
  if (CuResult r = cu.ModuleLoadData(&g.mod, kPtx)) return fail("cuModuleLoadData (PTX JIT)", r);
  CuFunction fn = nullptr;
  if (CuResult r = cu.ModuleGetFunction(&fn, g.mod, "gpupool_check")) return fail("cuModuleGetFunction", r);
  unsigned nn = static_cast<unsigned>(n);
  void* args[] = {&g.x, &g.y, &nn};
  const unsigned threads = 256;
  const unsigned blocks = static_cast<unsigned>((n + threads - 1) / threads);
  if (CuResult r = cu.LaunchKernel(fn, blocks, 1, 1, threads, 1, 1, 0, nullptr, args, nullptr)) return fail("cuLaunchKernel", r);
  if (CuResult r = cu.CtxSynchronize()) return fail("kernel", r);
  std::vector<uint32_t> out(n);
  if (CuResult r = cu.MemcpyDtoH(out.data(), g.y, bytes)) return fail("cuMemcpyDtoH", r);
  size_t wrong = 0;
  size_t first = 0;
  for (size_t i = 0; i < n; ++i) {
    if (out[i] != static_cast<uint32_t>(host[i] * 3u + static_cast<uint32_t>(i)) && wrong++ == 0) first = i;
  }
  if (wrong > 0) return Error(StatusCode::kInternal, fmt::format("kernel: {} of {} results wrong, first at {}", wrong, n, first));
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  return fmt::format("{} {}: {} MiB written and read back, kernel results checked on {} elements, in {} ms", name,
                     o.uuid.empty() ? fmt::format("#{}", o.ordinal) : o.uuid, o.megabytes, n, ms);
}

}  // namespace gp
