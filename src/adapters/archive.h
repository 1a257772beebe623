// A directory as one tar archive in memory, through libarchive: how the pool carries a job's
// checkpoint directory from the node it left to the node it runs on next, without storage that
// both share. Regular files, directories and symbolic links (inside the tree) travel, with their
// modes and times; device files, sockets and the like are skipped.
// Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "core/status.h"

namespace gp {

// What a directory holds, cheaply (names, sizes, mtimes; no contents): equal signatures mean
// nothing was written in between, as far as the file system tells.
struct TreeSignature {
  int64_t files = 0;
  int64_t bytes = 0;
  uint64_t hash = 0;  // over names, sizes and modification times
  bool operator==(const TreeSignature&) const = default;
  bool empty() const { return files == 0; }
};
TreeSignature SignTree(const std::filesystem::path& dir);

// The tree under `dir` as a pax tar archive; over `limit` bytes of archive is an error.
Result<std::string> PackTree(const std::filesystem::path& dir, int64_t limit);

// Replaces the contents of `dir` with the archive's. Refuses absolute names, names with "..",
// and links that point out of the tree; a broken archive is an error and leaves `dir` as it was
// (the archive is unpacked beside it first, then swapped in).
Status UnpackTree(std::string_view archive, const std::filesystem::path& dir);

}  // namespace gp
