#include "adapters/run_program.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cstring>

extern char** environ;

namespace gp {
namespace {

struct Pipe {
  int fd[2] = {-1, -1};
  ~Pipe() {
    for (int& f : fd) {
      if (f >= 0) close(f);
      f = -1;
    }
  }
  void CloseEnd(int i) {
    if (fd[i] >= 0) close(fd[i]);
    fd[i] = -1;
  }
};

}  // namespace

CleanSpawnAttr::CleanSpawnAttr(Group group) {
  posix_spawnattr_init(&attr_);
  const short where = group == Group::kSession ? POSIX_SPAWN_SETSID : POSIX_SPAWN_SETPGROUP;
  posix_spawnattr_setflags(&attr_, static_cast<short>(where | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
  if (group == Group::kProcessGroup) posix_spawnattr_setpgroup(&attr_, 0);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr_, &none);
  sigset_t all;
  sigfillset(&all);
  posix_spawnattr_setsigdefault(&attr_, &all);
}

CleanSpawnAttr::~CleanSpawnAttr() { posix_spawnattr_destroy(&attr_); }

Result<ProgramRun> RunProgram(const std::vector<std::string>& argv, const std::string& input, Millis deadline,
                              size_t max_output) {
  if (argv.empty() || argv[0].empty()) return InvalidArgument("no program to run");
  Pipe in, out, err;
  if (pipe2(in.fd, O_CLOEXEC) != 0 || pipe2(out.fd, O_CLOEXEC) != 0 || pipe2(err.fd, O_CLOEXEC) != 0) {
    return Error(StatusCode::kInternal, fmt::format("pipe: {}", std::strerror(errno)));
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in.fd[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out.fd[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err.fd[1], 2);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);  // none of the caller's sockets or files
  const CleanSpawnAttr attr(CleanSpawnAttr::Group::kProcessGroup);  // killed whole at the deadline
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t child = -1;
  const int rc = posix_spawnp(&child, args[0], &fa, attr.get(), args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return Error(StatusCode::kFailedPrecondition, fmt::format("cannot run '{}': {}", argv[0], std::strerror(rc)));
  in.CloseEnd(0);
  out.CloseEnd(1);
  err.CloseEnd(1);
  for (int f : {in.fd[1], out.fd[0], err.fd[0]}) fcntl(f, F_SETFL, fcntl(f, F_GETFL) | O_NONBLOCK);

  ProgramRun run;
  size_t written = 0;
  if (input.empty()) in.CloseEnd(1);
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline.value());
  char buf[65536];
  while (out.fd[0] >= 0 || err.fd[0] >= 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      run.timed_out = true;
      break;
    }
    pollfd fds[3];
    int n = 0;
    int out_at = -1, err_at = -1, in_at = -1;
    if (out.fd[0] >= 0) fds[out_at = n++] = pollfd{out.fd[0], POLLIN, 0};
    if (err.fd[0] >= 0) fds[err_at = n++] = pollfd{err.fd[0], POLLIN, 0};
    if (in.fd[1] >= 0) fds[in_at = n++] = pollfd{in.fd[1], POLLOUT, 0};
    const int ready = poll(fds, static_cast<nfds_t>(n), static_cast<int>(std::min<int64_t>(left, 1000)));
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    if (in_at >= 0 && (fds[in_at].revents & (POLLOUT | POLLERR | POLLHUP))) {
      const ssize_t w = write(in.fd[1], input.data() + written, input.size() - written);
      if (w > 0) written += static_cast<size_t>(w);
      if (w < 0 && errno != EAGAIN) written = input.size();  // the program closed its input
      if (written >= input.size()) in.CloseEnd(1);
    }
    auto drain = [&](Pipe& p, int at, std::string& to, bool* truncated) {
      if (at < 0 || !(fds[at].revents & (POLLIN | POLLHUP | POLLERR))) return;
      const ssize_t r = read(p.fd[0], buf, sizeof(buf));
      if (r > 0) {
        const size_t room = max_output > to.size() ? max_output - to.size() : 0;
        to.append(buf, std::min(room, static_cast<size_t>(r)));
        if (static_cast<size_t>(r) > room && truncated) *truncated = true;
      } else if (r == 0 || errno != EAGAIN) {
        p.CloseEnd(0);
      }
    };
    drain(out, out_at, run.out, &run.out_truncated);
    drain(err, err_at, run.err, nullptr);
  }
  if (run.timed_out) kill(-child, SIGKILL);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!run.timed_out) kill(-child, SIGKILL);  // helpers it left behind in its group
  if (WIFEXITED(status)) run.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) run.signal = WTERMSIG(status);
  return run;
}

}  // namespace gp
