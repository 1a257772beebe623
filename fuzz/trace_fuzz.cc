// libFuzzer harness: the trace readers (Philly, Tiresias, Gavel, Shockwave, Alibaba, profiles,
// a live pool's event log).
// The first byte picks the reader; the rest is the file, written to a temporary file as the
// readers take a path. A broken row must be an error naming its line, never a crash.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "sim/trace.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto& readers = gp::TraceReaders();
  const gp::TraceReader& reader = *readers[data[0] % readers.size()];
  static const std::string path = "/dev/shm/gpupool-fuzz-trace-" + std::to_string(getpid()) + ".csv";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data + 1, 1, size - 1, f);
  std::fclose(f);
  (void)reader.Read(path, gp::TraceOptions{.throughputs = "/nonexistent"});
  return 0;
}
