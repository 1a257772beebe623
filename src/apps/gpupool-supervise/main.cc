// gpupool-supervise: the per-attempt supervisor as a small binary of its own (libc and
// libstdc++ only), so that starting one per task costs little. The agent runs
//   gpupool-supervise --lease-file F --lease-ms N --grace-ms M -- CMD ARGS...
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "agent/supervisor.h"

int main(int argc, char** argv) {
  gp::SuperviseOptions o;
  int i = 1;
  for (; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "gpupool-supervise: %s needs a value\n", argv[i]);
      return 2;
    }
    if (a == "--lease-file") o.lease_file = argv[++i];
    else if (a == "--status-file") o.status_file = argv[++i];
    else if (a == "--lease-ms") o.lease_ms = std::atoi(argv[++i]);
    else if (a == "--grace-ms") o.grace_ms = std::atoi(argv[++i]);
    else if (a == "--uid") o.uid = std::atoi(argv[++i]);
    else if (a == "--gid") o.gid = std::atoi(argv[++i]);
    else if (a == "--after") o.after.push_back(argv[++i]);
    else if (a == "--cgroup") o.cgroups.push_back(argv[++i]);
    else {
      std::fprintf(stderr, "gpupool-supervise: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (i >= argc) {
    std::fprintf(stderr, "usage: gpupool-supervise --lease-file F --lease-ms N --grace-ms M -- CMD ARGS...\n");
    return 2;
  }
  const int rc = gp::Supervise(o, std::vector<std::string>(argv + i, argv + argc));
  std::fflush(stderr);
  return rc;
}
