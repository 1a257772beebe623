// The controller's file I/O, behind two small interfaces: where job output goes (LogStore) and
// where carried checkpoints are kept (CheckpointStore). The file-system implementations are the
// server's; a test may give its own.
#pragma once

#include <filesystem>
#include <memory>
#include <string_view>

#include "core/ids.h"
#include "core/status.h"

namespace gp {

class LogStore {
 public:
  virtual ~LogStore() = default;
  // Appends a chunk of a task's stdout or stderr ("stdout", "stderr"); nothing when off.
  virtual void Append(JobId id, int task, std::string_view stream, std::string_view chunk) = 0;
  // Where that stream is read from (GET /v1/jobs/ID/logs).
  virtual std::filesystem::path PathOf(JobId id, int task, std::string_view stream) const = 0;
};

class CheckpointStore {
 public:
  virtual ~CheckpointStore() = default;
  // Whether the server carries checkpoints (false: jobs checkpoint to shared storage).
  virtual bool enabled() const = 0;
  virtual std::filesystem::path PathOf(JobId id, int task) const = 0;
  // Takes the archive (a file under the same data directory: renamed in, stored whole).
  virtual Status Put(JobId id, int task, const std::filesystem::path& archive) = 0;
  // The job's checkpoints are done with (it succeeded or was cancelled).
  virtual void Discard(JobId id) = 0;
};

// Job output under dir/JOB/task-N.{stdout,stderr}; an empty dir keeps none.
std::unique_ptr<LogStore> FileLogStore(std::filesystem::path dir);
// Checkpoints under dir/JOB/task-N.tar; an empty dir: the server carries none.
std::unique_ptr<CheckpointStore> FileCheckpointStore(std::filesystem::path dir);

}  // namespace gp
