#include "agent/supervisor.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

extern char** environ;

namespace gp {
namespace {

int g_term = 0;

int64_t MonoMs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

// Age of the lease in ms (the file's modification time against now; both wall clock).
int64_t LeaseAgeMs(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return INT64_MAX;
  const int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000;
  return MonoMs() - mtime;
}

}  // namespace

int Supervise(const SuperviseOptions& o, const std::vector<std::string>& argv) {
  if (argv.empty()) return 2;
  for (const std::string& dir : o.cgroups) {
    const std::string procs = dir + "/cgroup.procs";
    const int fd = open(procs.c_str(), O_WRONLY | O_CLOEXEC);
    char pid[32];
    const int n = std::snprintf(pid, sizeof(pid), "%d", static_cast<int>(getpid()));
    if (fd < 0 || write(fd, pid, static_cast<size_t>(n)) != n) {
      std::fprintf(stderr, "gpupool: cannot join the task's cgroup %s: %s; it runs without that limit\n", dir.c_str(),
                   std::strerror(errno));
    }
    if (fd >= 0) close(fd);
  }
  // SIGCHLD, SIGTERM and SIGINT are taken synchronously with sigtimedwait: the supervisor
  // reacts to the task's exit at once and looks at the lease every 100 ms.
  sigset_t wait_for;
  sigemptyset(&wait_for);
  sigaddset(&wait_for, SIGCHLD);
  sigaddset(&wait_for, SIGTERM);
  sigaddset(&wait_for, SIGINT);
  sigprocmask(SIG_BLOCK, &wait_for, nullptr);
  // The task in a process group of its own (so the supervisor can stop the whole group without
  // stopping itself), with the signals the supervisor blocked unblocked again.
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  pid_t child = -1;
  int rc = 0;
  if (o.uid >= 0) {
    // Another user: fork, drop every privilege in the child (supplementary groups, group, then
    // user, which cannot be undone), then exec. A failure is reported through a pipe.
    posix_spawnattr_destroy(&attr);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) return 126;
    child = fork();
    if (child < 0) return 126;
    if (child == 0) {
      setpgid(0, 0);
      sigprocmask(SIG_UNBLOCK, &wait_for, nullptr);
      const gid_t gid = static_cast<gid_t>(o.gid >= 0 ? o.gid : o.uid);
      int err = 0;
      if (setgroups(1, &gid) != 0 || setgid(gid) != 0 || setuid(static_cast<uid_t>(o.uid)) != 0) err = errno;
      if (err == 0 && o.uid != 0 && setuid(0) == 0) err = EPERM;  // must not be able to get root back
      if (err == 0) {
        execvp(args[0], args.data());
        err = errno;
      }
      (void)!write(pipefd[1], &err, sizeof(err));
      _exit(err == ENOENT ? 127 : 126);
    }
    close(pipefd[1]);
    int err = 0;
    if (read(pipefd[0], &err, sizeof(err)) == static_cast<ssize_t>(sizeof(err))) rc = err;
    close(pipefd[0]);
    if (rc != 0) {
      waitpid(child, nullptr, 0);
      std::fprintf(stderr, "gpupool agent: cannot run %s as uid %d: %s\n", args[0], o.uid, std::strerror(rc));
      return rc == ENOENT ? 127 : 126;
    }
  } else {
    rc = posix_spawnp(&child, args[0], nullptr, &attr, args.data(), environ);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
      std::fprintf(stderr, "gpupool agent: cannot run %s: %s\n", args[0], std::strerror(rc));
      return rc == ENOENT ? 127 : 126;
    }
  }
  setpgid(child, child);
  int64_t kill_at = 0;  // when SIGKILL follows a SIGTERM
  bool fenced = false;
  int status = 0;
  while (true) {
    const pid_t r = waitpid(child, &status, WNOHANG);
    if (r == child) break;
    const timespec tick{0, 100'000'000};
    const int sig = sigtimedwait(&wait_for, nullptr, &tick);
    if (sig == SIGTERM || sig == SIGINT) g_term = 1;
    if (sig == SIGCHLD) continue;  // reap at the top
    const int64_t now = MonoMs();
    // A lost lease stops the task before the lease's end, so that it is gone by the time the
    // server (whose clock started a little earlier, when it answered) may place it again.
    const int stop_at = std::max(100, o.lease_ms - 600);
    if (kill_at == 0 && (g_term || (!o.lease_file.empty() && LeaseAgeMs(o.lease_file) > stop_at))) {
      if (!g_term) {
        fenced = true;
        std::fprintf(stderr, "gpupool: this attempt's lease ran out (no word from the server for %d ms); stopping it\n",
                     o.lease_ms);
      }
      kill(-child, SIGTERM);
      kill_at = now + (fenced ? 400 : o.grace_ms);  // a fenced attempt is killed 200 ms before its lease ends
    }
    if (kill_at != 0 && now >= kill_at) kill(-child, SIGKILL);
  }
  kill(-child, SIGKILL);  // anything the task left behind in its group
  if (!o.after.empty()) {
    std::vector<char*> after;
    for (const std::string& a : o.after) after.push_back(const_cast<char*>(a.c_str()));
    after.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid = -1;
    if (posix_spawnp(&pid, after[0], &fa, nullptr, after.data(), environ) == 0) {
      int ignored = 0;
      while (waitpid(pid, &ignored, 0) < 0 && errno == EINTR) {
      }
    }
    posix_spawn_file_actions_destroy(&fa);
  }
  if (!o.status_file.empty()) {
    const std::string tmp = o.status_file + ".tmp";
    if (FILE* f = std::fopen(tmp.c_str(), "w")) {
      const char* lost = fenced ? " lost" : "";
      if (WIFSIGNALED(status)) std::fprintf(f, "signal %d%s\n", WTERMSIG(status), lost);
      else std::fprintf(f, "exit %d%s\n", WIFEXITED(status) ? WEXITSTATUS(status) : 1, lost);
      std::fclose(f);
      std::rename(tmp.c_str(), o.status_file.c_str());
    }
  }
  if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    sigprocmask(SIG_UNBLOCK, &wait_for, nullptr);
    signal(WTERMSIG(status), SIG_DFL);
    raise(WTERMSIG(status));
  }
  _exit(1);
}

}  // namespace gp
