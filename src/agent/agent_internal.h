// What the agent's two translation units share (agent.cc: registration, heartbeats and the
// loop; agent_tasks.cc: the tasks): the wall clock in ms, touching a lease file, and the
// bounds on shipped output.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>

namespace gp::agent_internal {

inline int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Creates the file or sets its times to now (a lease renewed).
inline void Touch(const std::filesystem::path& p) {
  const int fd = open(p.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0) {
    futimens(fd, nullptr);
    close(fd);
  }
}

// Output shipping, bounded so that a heartbeat stays small whatever a job prints: at most this
// much per stream and per heartbeat (raw bytes; base64 makes 4/3 of it on the wire, never the
// 6x that JSON escapes cost control characters).
constexpr int64_t kLogChunk = 128 * 1024;
constexpr int64_t kLogBudget = 384 * 1024;
// A stream whose unshipped output grows past this (a job writing faster than its node ships)
// skips ahead to its newest kLogKeep bytes; the bytes skipped are counted, reported and marked
// in the log. An ended task keeps only kLogKeep unshipped, so its end is reported at once.
constexpr int64_t kLogBacklog = 32 << 20;
constexpr int64_t kLogEndBacklog = 4 << 20;
constexpr int64_t kLogKeep = 1 << 20;

}  // namespace gp::agent_internal
