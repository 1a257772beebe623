// Carries tasks' checkpoint directories between nodes through the server: packs a directory
// and ships it (PUT /v1/agent/checkpoints/JOB/TASK?attempt=A), or fetches and unpacks one
// before a later attempt starts (GET). Transfers run on a thread of their own with their own
// connection, so a big checkpoint never holds up the agent's heartbeats.
// Thread-safety: the public methods are called from the agent's thread only.
#pragma once

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "adapters/archive.h"
#include "adapters/http.h"
#include "core/status.h"
#include "wire/codec.h"

namespace gp {

class CheckpointCarrier {
 public:
  struct Done {
    TaskKey key;
    bool upload = false;
    Status status;           // kFailedPrecondition on upload: the server fenced the attempt off
    TreeSignature shipped;   // what an upload sent
    std::string note;        // for the task's stderr ("restored 3 files, 12 MiB from the pool")
  };

  CheckpointCarrier(std::string server, std::string token, int64_t max_bytes);
  ~CheckpointCarrier();
  CheckpointCarrier(const CheckpointCarrier&) = delete;
  CheckpointCarrier& operator=(const CheckpointCarrier&) = delete;

  // The node's credential (after registration) and TLS (its client certificate), and the
  // server's limit, for later transfers.
  void SetCredentials(std::string token, ClientTls tls);
  // With several servers, transfers go first to the one that answers the agent now.
  void SetLeader(std::string server);
  void SetMaxBytes(int64_t max_bytes);
  void Upload(const TaskKey& key, const std::filesystem::path& dir);
  void Download(const TaskKey& key, const std::filesystem::path& dir);
  std::vector<Done> Take();  // finished transfers, oldest first

 private:
  struct Work {
    TaskKey key;
    bool upload = false;
    std::filesystem::path dir;
  };
  void Loop();
  Done Transfer(const Work& w);

  std::string server_;
  std::string leader_;  // with several servers: the one the agent's heartbeats reach now (tried first)
  std::string token_;
  ClientTls tls_;
  int64_t max_bytes_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Work> work_;
  std::vector<Done> done_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace gp
