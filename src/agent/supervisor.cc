#include "agent/supervisor.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace gp {
namespace {

volatile sig_atomic_t g_term = 0;
void OnTerm(int) { g_term = 1; }

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
  struct sigaction sa {};
  sa.sa_handler = OnTerm;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  const pid_t child = fork();
  if (child < 0) return 126;
  if (child == 0) {
    setpgid(0, 0);  // the task's own group: the supervisor can stop it without stopping itself
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::fprintf(stderr, "gpupool agent: cannot run %s: %s\n", args[0], std::strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  setpgid(child, child);
  int64_t kill_at = 0;  // when SIGKILL follows a SIGTERM
  bool fenced = false;
  int status = 0;
  while (true) {
    const pid_t r = waitpid(child, &status, WNOHANG);
    if (r == child) break;
    const int64_t now = MonoMs();
    if (kill_at == 0 && (g_term || (!o.lease_file.empty() && LeaseAgeMs(o.lease_file) > o.lease_ms))) {
      if (!g_term) {
        fenced = true;
        std::fprintf(stderr, "gpupool: this attempt's lease ran out (no word from the server for %d ms); stopping it\n",
                     o.lease_ms);
      }
      kill(-child, SIGTERM);
      kill_at = now + (fenced ? 500 : o.grace_ms);  // a fenced attempt must stop inside the lease margin
    }
    if (kill_at != 0 && now >= kill_at) kill(-child, SIGKILL);
    usleep(20'000);
  }
  kill(-child, SIGKILL);  // anything the task left behind in its group
  if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    signal(WTERMSIG(status), SIG_DFL);
    raise(WTERMSIG(status));
  }
  _exit(1);
}

}  // namespace gp
