#include "controller/stores.h"

#include <fmt/format.h>

#include <fstream>
#include <string>

namespace gp {
namespace {

class FileLogs final : public LogStore {
 public:
  explicit FileLogs(std::filesystem::path dir) : dir_(std::move(dir)) {}
  void Append(JobId id, int task, std::string_view stream, std::string_view chunk) override {
    if (chunk.empty() || dir_.empty()) return;
    const auto path = PathOf(id, task, stream);
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    std::ofstream(path, std::ios::app | std::ios::binary).write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
  }
  std::filesystem::path PathOf(JobId id, int task, std::string_view stream) const override {
    return dir_ / std::to_string(id.value()) / fmt::format("task-{}.{}", task, stream);
  }

 private:
  std::filesystem::path dir_;
};

class FileCheckpoints final : public CheckpointStore {
 public:
  explicit FileCheckpoints(std::filesystem::path dir) : dir_(std::move(dir)) {}
  bool enabled() const override { return !dir_.empty(); }
  std::filesystem::path PathOf(JobId id, int task) const override {
    return dir_ / std::to_string(id.value()) / fmt::format("task-{}.tar", task);
  }
  Status Put(JobId id, int task, const std::filesystem::path& archive) override {
    const auto path = PathOf(id, task);
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    // The upload was streamed to a file under the same data directory: a rename stores it whole.
    std::filesystem::rename(archive, path, ec);
    if (ec) {
      std::filesystem::copy_file(archive, path.string() + ".tmp", std::filesystem::copy_options::overwrite_existing, ec);
      if (!ec) std::filesystem::rename(path.string() + ".tmp", path, ec);
    }
    if (ec) return Status(StatusCode::kInternal, fmt::format("{}: {}", path.string(), ec.message()));
    return Status::Ok();
  }
  void Discard(JobId id) override {
    if (dir_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(dir_ / std::to_string(id.value()), ec);
  }

 private:
  std::filesystem::path dir_;
};

}  // namespace

std::unique_ptr<LogStore> FileLogStore(std::filesystem::path dir) { return std::make_unique<FileLogs>(std::move(dir)); }
std::unique_ptr<CheckpointStore> FileCheckpointStore(std::filesystem::path dir) {
  return std::make_unique<FileCheckpoints>(std::move(dir));
}

}  // namespace gp
