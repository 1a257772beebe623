// Runs an external program to completion under a hard deadline: its standard input given,
// its standard output and error captured (each up to a limit). The program runs in a process
// group of its own, and the whole group is killed (SIGKILL) when the deadline passes, so a
// helper it started cannot outlive the call. Blocking; safe to call from any one thread.
#pragma once

#include <spawn.h>

#include <string>
#include <vector>

#include "core/quantity.h"
#include "core/status.h"

namespace gp {

// posix_spawn attributes for a child that starts clean: a session (or a process group) of its
// own, so it can be stopped whole; no blocked signal; every signal at its default action.
class CleanSpawnAttr {
 public:
  enum class Group { kSession, kProcessGroup };
  explicit CleanSpawnAttr(Group group);
  ~CleanSpawnAttr();
  CleanSpawnAttr(const CleanSpawnAttr&) = delete;
  CleanSpawnAttr& operator=(const CleanSpawnAttr&) = delete;
  const posix_spawnattr_t* get() const { return &attr_; }

 private:
  posix_spawnattr_t attr_;
};

struct ProgramRun {
  int exit_code = -1;  // -1: killed by a signal (see `signal`) or not started
  int signal = 0;
  bool timed_out = false;
  std::string out;  // standard output, at most `max_output` bytes (the rest is read and dropped)
  std::string err;  // standard error, likewise
  bool out_truncated = false;
};

// argv[0] is looked up in PATH. An error only when the program could not be started at all.
Result<ProgramRun> RunProgram(const std::vector<std::string>& argv, const std::string& input, Millis deadline,
                              size_t max_output = 1 << 20);

}  // namespace gp
