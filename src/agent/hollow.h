// Hollow agents: one process, one event loop, many nodes that speak the real agent protocol
// over real sockets (register, heartbeat with telemetry, receive tasks, report starts and
// ends), with no processes behind the tasks. A hollow task "runs" for a set time, then exits 0.
// The idea of Kubernetes' kubemark hollow nodes and Nomad's node simulator: it loads a server
// as a fleet would, and is how a user sizes a server before buying one.
//
// Each node keeps one kept-alive connection and one request in flight at a time, as a real
// agent does. It records every task attempt it starts (in memory and, if asked, in a file), so
// a test can check that nothing was started twice. A control endpoint (loopback HTTP, off by
// default) shows the counts and stops or resumes one node's heartbeats, as a dead host would.
//
// Threading: everything runs on the loop's one thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "adapters/http.h"
#include "core/quantity.h"
#include "core/status.h"

namespace gp {

struct HollowOptions {
  std::string server = "127.0.0.1:7070";
  std::string join_token;
  int nodes = 100;
  std::string gpus = "8xH100";   // per node, COUNTxMODEL
  std::string prefix = "hollow-";
  int sites = 1;                 // nodes spread over sites hollow-site-0 .. N-1, round robin
  std::string provider = "hollow";
  Millis duration{0};            // how long a task runs; 0: it ends at once
  Millis interval{500};          // idle heartbeat interval (the server may ask for longer)
  int cpu_cores = 64;
  int64_t memory_mib = 512 * 1024;
  int max_tasks = 256;           // tasks at once per node
  int connect_concurrency = 256; // registrations in flight at once
  std::string control_listen;    // "127.0.0.1:PORT": the control endpoint; empty: none
  std::filesystem::path record;  // every start, "node job task attempt ms" per line; empty: none
};

class Hollow {
 public:
  static Result<std::unique_ptr<Hollow>> Create(EventLoop& loop, HollowOptions options);
  ~Hollow();
  // Starts registering the nodes; the loop's Run() drives everything after.
  void Start();
  // The control endpoint's port (0: none).
  uint16_t control_port() const { return control_port_; }

  struct Counts {
    int nodes = 0;
    int registered = 0;
    int64_t running = 0;     // tasks running now
    int64_t started = 0;     // task attempts started
    int64_t ended = 0;       // reported ended
    int64_t repeats = 0;     // launches of an attempt this process had already started
    int64_t heartbeats = 0;  // answered
    int64_t errors = 0;      // heartbeats or registrations that failed
    std::vector<std::string> stopped;
  };
  Counts counts() const;
  Status StopNode(const std::string& name);
  Status ResumeNode(const std::string& name);

 private:
  struct Node;
  Hollow(EventLoop& loop, HollowOptions options);
  void Register(Node& n);
  void Beat(Node& n);
  void Retry(Node& n, int64_t delay_ms);
  void Handle(HttpRequest r, Respond respond);
  void RegisterMore();
  void Record(const Node& n, uint64_t job, int task, int attempt, int64_t now);

  EventLoop& loop_;
  HollowOptions o_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::map<std::string, Node*> by_name_;
  size_t next_to_register_ = 0;
  int registering_ = 0;
  uint16_t control_port_ = 0;
  int lease_ms_ = 1800;
  int server_interval_ms_ = 0;
  Counts counts_;
  std::FILE* record_ = nullptr;
};

}  // namespace gp
