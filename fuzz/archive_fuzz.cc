// libFuzzer harness: the checkpoint unpacker. Any archive must either be refused or unpack
// entirely inside the target directory: nothing may appear beside it, and no setuid bit.
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "adapters/archive.h"

namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path root = "/dev/shm/gpupool-fuzz-archive-" + std::to_string(getpid());
  static const bool made = [] {
    fs::create_directories(root);
    return true;
  }();
  (void)made;
  const fs::path dir = root / "ckpt";
  const gp::Status s = gp::UnpackTree(std::string_view(reinterpret_cast<const char*>(data), size), dir);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    if (e.path() != dir) std::abort();  // something escaped (or was left behind)
  }
  if (s.ok()) {
    for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      struct stat st {};
      if (lstat(it->path().c_str(), &st) == 0 && (st.st_mode & 06000)) std::abort();
    }
  }
  fs::remove_all(dir, ec);
  return 0;
}
