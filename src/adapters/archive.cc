#include "adapters/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <vector>

namespace gp {
namespace fs = std::filesystem;
namespace {

struct ArchiveFree {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct ReaderFree {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct EntryFree {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

// The tree's entries, relative, in name order (so that one tree always packs the same way).
std::vector<fs::path> Entries(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    out.push_back(it->path().lexically_relative(dir));
  }
  std::sort(out.begin(), out.end());
  return out;
}

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h;
}

// A name in an archive is safe to unpack under a directory: relative, no "..", not empty.
bool SafeName(std::string_view name) {
  if (name.empty() || name.front() == '/') return false;
  for (const auto& part : fs::path(name)) {
    if (part == "..") return false;
  }
  return true;
}

// The components of an entry's name, without "." and empty ones ("a/", "a/." and "./a/./" are
// all "a"): the name as the file system will resolve it.
std::vector<std::string> Components(std::string_view name) {
  std::vector<std::string> out;
  for (const auto& part : fs::path(name)) {
    if (part != "." && !part.empty()) out.push_back(part.string());
  }
  return out;
}

// A link target stays inside the tree when followed from the directory the link is in. The
// link's own depth is that of its resolved name: a link named "a/" sits at the top, so ".."
// from it leaves the tree (a trailing slash once fooled this check).
bool SafeLink(std::string_view name, std::string_view target) {
  if (target.empty() || target.front() == '/') return false;
  const auto parts = Components(name);
  if (parts.empty()) return false;
  int depth = static_cast<int>(parts.size()) - 1;
  for (const auto& part : fs::path(target)) {
    if (part == "..") {
      if (--depth < 0) return false;
    } else if (part != "." && !part.empty()) {
      ++depth;
    }
  }
  return true;
}

}  // namespace

TreeSignature SignTree(const fs::path& dir) {
  TreeSignature sig;
  for (const fs::path& rel : Entries(dir)) {
    struct stat st {};
    if (lstat((dir / rel).c_str(), &st) != 0) continue;
    sig.hash = Mix(sig.hash, std::hash<std::string>{}(rel.string()));
    sig.hash = Mix(sig.hash, static_cast<uint64_t>(st.st_size));
    sig.hash = Mix(sig.hash, static_cast<uint64_t>(st.st_mtim.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(st.st_mtim.tv_nsec));
    sig.hash = Mix(sig.hash, st.st_mode);
    if (S_ISREG(st.st_mode)) {
      ++sig.files;
      sig.bytes += st.st_size;
    }
  }
  return sig;
}

Result<std::string> PackTree(const fs::path& dir, int64_t limit) {
  struct Sink {
    std::string data;
    int64_t limit;
    bool over = false;
  } sink{.data = {}, .limit = limit};
  std::unique_ptr<archive, ArchiveFree> a(archive_write_new());
  archive_write_set_format_pax_restricted(a.get());
  archive_write_set_bytes_in_last_block(a.get(), 1);  // no padding to 10 KiB
  auto write = [](archive*, void* p, const void* buf, size_t n) -> la_ssize_t {
    auto* s = static_cast<Sink*>(p);
    if (static_cast<int64_t>(s->data.size() + n) > s->limit) {
      s->over = true;
      return -1;
    }
    s->data.append(static_cast<const char*>(buf), n);
    return static_cast<la_ssize_t>(n);
  };
  if (archive_write_open(a.get(), &sink, nullptr, write, nullptr) != ARCHIVE_OK) {
    return Error(StatusCode::kInternal, fmt::format("archive: {}", archive_error_string(a.get())));
  }
  auto fail = [&](const fs::path& what) -> Result<std::string> {
    if (sink.over) {
      return Error(StatusCode::kFailedPrecondition,
                   fmt::format("{}: the archive is over the pool's limit of {} bytes (gpupool server --checkpoint-max-mib)",
                               dir.string(), limit));
    }
    const char* why = archive_error_string(a.get());
    return Error(StatusCode::kInternal, fmt::format("{}: {}", (dir / what).string(), why ? why : "cannot archive"));
  };
  std::vector<char> buf(1 << 20);
  for (const fs::path& rel : Entries(dir)) {
    const fs::path full = dir / rel;
    struct stat st {};
    if (lstat(full.c_str(), &st) != 0) continue;  // gone meanwhile
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode)) continue;
    std::unique_ptr<archive_entry, EntryFree> e(archive_entry_new());
    archive_entry_copy_pathname(e.get(), rel.c_str());
    archive_entry_copy_stat(e.get(), &st);
    archive_entry_set_uname(e.get(), "");
    archive_entry_set_gname(e.get(), "");
    std::ifstream in;
    if (S_ISLNK(st.st_mode)) {
      std::error_code ec;
      const fs::path target = fs::read_symlink(full, ec);
      if (ec) continue;
      archive_entry_copy_symlink(e.get(), target.c_str());
    } else if (S_ISREG(st.st_mode)) {
      in.open(full, std::ios::binary);
      if (!in) continue;
    }
    if (archive_write_header(a.get(), e.get()) != ARCHIVE_OK) return fail(rel);
    if (S_ISREG(st.st_mode)) {
      // As many bytes as the header said, even if the file changed size meanwhile.
      int64_t left = st.st_size;
      while (left > 0) {
        in.read(buf.data(), static_cast<std::streamsize>(std::min<int64_t>(left, static_cast<int64_t>(buf.size()))));
        std::streamsize got = in.gcount();
        if (got <= 0) {  // shrank: pad with zeros
          got = static_cast<std::streamsize>(std::min<int64_t>(left, static_cast<int64_t>(buf.size())));
          std::fill_n(buf.begin(), got, '\0');
        }
        if (archive_write_data(a.get(), buf.data(), static_cast<size_t>(got)) < 0) return fail(rel);
        left -= got;
      }
    }
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK) return fail("");
  return std::move(sink.data);
}

Status UnpackTree(std::string_view data, const fs::path& dir) {
  std::error_code ec;
  const fs::path incoming = fs::path(dir.string() + ".incoming");
  const fs::path old = fs::path(dir.string() + ".old");
  fs::remove_all(incoming, ec);
  fs::create_directories(incoming, ec);
  if (ec) return Status(StatusCode::kFailedPrecondition, fmt::format("{}: {}", incoming.string(), ec.message()));
  std::unique_ptr<archive, ReaderFree> r(archive_read_new());
  archive_read_support_format_tar(r.get());
  archive_read_support_format_gnutar(r.get());
  std::unique_ptr<archive, ArchiveFree> w(archive_write_disk_new());
  archive_write_disk_set_options(w.get(), ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                              ARCHIVE_EXTRACT_SECURE_SYMLINKS);
  auto fail = [&](std::string why) {
    fs::remove_all(incoming, ec);
    return Status(StatusCode::kParse, "checkpoint archive: " + why);
  };
  if (archive_read_open_memory(r.get(), data.data(), data.size()) != ARCHIVE_OK) {
    return fail(archive_error_string(r.get()) ? archive_error_string(r.get()) : "not a tar archive");
  }
  archive_entry* e = nullptr;
  int rc;
  while ((rc = archive_read_next_header(r.get(), &e)) == ARCHIVE_OK) {
    const std::string name = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
    if (!SafeName(name)) return fail(fmt::format("unsafe name '{}'", name));
    const mode_t type = archive_entry_filetype(e);
    if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) continue;  // devices, fifos: not carried
    if (Components(name).empty()) {
      if (type == AE_IFDIR) continue;  // "./": the tree itself
      return fail(fmt::format("entry '{}' names the directory itself", name));
    }
    // Plain permissions only: no setuid, setgid or sticky bit comes out of a checkpoint.
    archive_entry_set_perm(e, archive_entry_perm(e) & 0777);
    if (type == AE_IFLNK) {
      const char* target = archive_entry_symlink(e);
      if (!target || !SafeLink(name, target)) return fail(fmt::format("link '{}' points out of the directory", name));
    }
    if (const char* hard = archive_entry_hardlink(e)) {
      if (!SafeName(hard)) return fail(fmt::format("unsafe link '{}'", hard));
      archive_entry_copy_hardlink(e, (incoming / hard).c_str());
    }
    std::string resolved;
    for (const auto& part : Components(name)) resolved += (resolved.empty() ? "" : "/") + part;
    archive_entry_copy_pathname(e, (incoming / resolved).c_str());
    if (archive_write_header(w.get(), e) != ARCHIVE_OK) return fail(fmt::format("{}: {}", name, archive_error_string(w.get())));
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    int d;
    while ((d = archive_read_data_block(r.get(), &block, &size, &offset)) == ARCHIVE_OK) {
      if (archive_write_data_block(w.get(), block, size, offset) != ARCHIVE_OK) {
        return fail(fmt::format("{}: {}", name, archive_error_string(w.get())));
      }
    }
    if (d != ARCHIVE_EOF) return fail(fmt::format("{}: {}", name, archive_error_string(r.get())));
    if (archive_write_finish_entry(w.get()) != ARCHIVE_OK) return fail(fmt::format("{}: {}", name, archive_error_string(w.get())));
  }
  if (rc != ARCHIVE_EOF) return fail(archive_error_string(r.get()) ? archive_error_string(r.get()) : "truncated");
  archive_write_close(w.get());
  // Swap the new tree in whole.
  fs::remove_all(old, ec);
  if (fs::exists(dir)) fs::rename(dir, old, ec);
  if (ec) return fail(fmt::format("{}: {}", dir.string(), ec.message()));
  fs::rename(incoming, dir, ec);
  if (ec) return fail(fmt::format("{}: {}", dir.string(), ec.message()));
  fs::remove_all(old, ec);
  return Status::Ok();
}

}  // namespace gp
