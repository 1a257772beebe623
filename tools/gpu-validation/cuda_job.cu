// A small real CUDA job for validating gpupool on a GPU machine: it reports the device it was
// given (by CUDA_VISIBLE_DEVICES), its UUID in NVML's "GPU-..." form, allocates memory, and keeps
// the GPU busy for the requested seconds with a compute loop, then checks the result.
// Build: nvcc -O2 -arch=sm_90 -o cuda_job cuda_job.cu     Run: ./cuda_job SECONDS MiB
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#define CHECK(x)                                                                 \
  do {                                                                           \
    cudaError_t e = (x);                                                         \
    if (e != cudaSuccess) {                                                      \
      std::fprintf(stderr, "cuda_job: %s: %s\n", #x, cudaGetErrorString(e));     \
      return 2;                                                                  \
    }                                                                            \
  } while (0)

__global__ void Burn(float* data, size_t n, int rounds) {
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  float v = data[i];
  for (int r = 0; r < rounds; ++r) v = v * 0.999999f + 0.000001f;
  data[i] = v;
}

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 10.0;
  const size_t mib = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 4096;
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  int count = 0;
  CHECK(cudaGetDeviceCount(&count));
  cudaDeviceProp p{};
  CHECK(cudaGetDeviceProperties(&p, 0));
  std::printf("CUDA_VISIBLE_DEVICES=%s devices_seen=%d name=%s cc=%d.%d uuid=GPU-", visible ? visible : "(unset)", count,
              p.name, p.major, p.minor);
  const unsigned char* u = reinterpret_cast<const unsigned char*>(p.uuid.bytes);
  for (int i = 0; i < 16; ++i) std::printf("%s%02x", (i == 4 || i == 6 || i == 8 || i == 10) ? "-" : "", u[i]);
  std::printf("\n");
  const size_t n = mib * 1024 * 1024 / sizeof(float);
  float* d = nullptr;
  CHECK(cudaMalloc(&d, n * sizeof(float)));
  CHECK(cudaMemset(d, 0, n * sizeof(float)));
  const auto start = std::chrono::steady_clock::now();
  int launches = 0;
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds) {
    Burn<<<static_cast<unsigned>((n + 255) / 256), 256>>>(d, n, 64);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    ++launches;
  }
  float probe = -1;
  CHECK(cudaMemcpy(&probe, d, sizeof(float), cudaMemcpyDeviceToHost));
  CHECK(cudaFree(d));
  // Each round maps v -> v * (1 - 1e-6) + 1e-6, which moves 0 towards 1; it must have moved.
  const bool ok = probe > 0.0f && probe < 1.0f;
  std::printf("launches=%d first_element=%.6f result=%s\n", launches, probe, ok ? "ok" : "WRONG");
  return ok ? 0 : 3;
}
