#include "agent/checkpoints.h"

#include <fmt/format.h>

#include <chrono>

#include "adapters/http.h"

namespace gp {

CheckpointCarrier::CheckpointCarrier(std::string server, std::string token, int64_t max_bytes)
    : server_(std::move(server)), token_(std::move(token)), max_bytes_(max_bytes), thread_([this] { Loop(); }) {}

CheckpointCarrier::~CheckpointCarrier() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void CheckpointCarrier::Upload(const TaskKey& key, const std::filesystem::path& dir) {
  {
    std::lock_guard lock(mu_);
    work_.push_back(Work{key, true, dir});
  }
  cv_.notify_all();
}

void CheckpointCarrier::Download(const TaskKey& key, const std::filesystem::path& dir) {
  {
    std::lock_guard lock(mu_);
    work_.push_back(Work{key, false, dir});
  }
  cv_.notify_all();
}

std::vector<CheckpointCarrier::Done> CheckpointCarrier::Take() {
  std::lock_guard lock(mu_);
  return std::exchange(done_, {});
}

void CheckpointCarrier::Loop() {
  for (;;) {
    Work w;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !work_.empty(); });
      if (stop_) return;
      w = std::move(work_.front());
      work_.pop_front();
    }
    Done d = Transfer(w);
    std::lock_guard lock(mu_);
    done_.push_back(std::move(d));
  }
}

void CheckpointCarrier::SetCredentials(std::string token, ClientTls tls) {
  std::lock_guard lock(mu_);
  token_ = std::move(token);
  tls_ = std::move(tls);
}

void CheckpointCarrier::SetLeader(std::string server) {
  std::lock_guard lock(mu_);
  leader_ = std::move(server);
}

void CheckpointCarrier::SetMaxBytes(int64_t max_bytes) {
  std::lock_guard lock(mu_);
  max_bytes_ = max_bytes;
}

CheckpointCarrier::Done CheckpointCarrier::Transfer(const Work& w) {
  Done d{.key = w.key, .upload = w.upload, .status = Status::Ok(), .shipped = {}, .note = {}};
  std::string token;
  ClientTls tls;
  std::string servers = server_;
  int64_t max_bytes = 0;
  {
    std::lock_guard lock(mu_);
    token = token_;
    tls = tls_;
    max_bytes = max_bytes_;
    if (!leader_.empty() && server_.find(',') != std::string::npos) servers = leader_ + "," + server_;
  }
  auto client = HttpClient::Create(servers, token, tls);
  if (!client) {
    d.status = client.error();
    return d;
  }
  const std::string path = fmt::format("/v1/agent/checkpoints/{}/{}", w.key.job, w.key.task);
  // A transfer may take a while: a minute, plus a second per 10 MiB.
  const auto timeout = [](size_t bytes) { return Millis{60'000 + static_cast<int64_t>(bytes / (10 << 20)) * 1'000}; };
  if (w.upload) {
    d.shipped = SignTree(w.dir);
    auto archive = PackTree(w.dir, max_bytes);
    if (!archive) {
      d.status = archive.error();
      return d;
    }
    auto res = client->Call("PUT", fmt::format("{}?attempt={}", path, w.key.attempt), *archive, timeout(archive->size()));
    if (!res) {
      d.status = res.error();
    } else if (res->status == 409 || res->status == 413 || res->status == 403) {
      d.status = Status(StatusCode::kFailedPrecondition, res->body);
    } else if (res->status != 200) {
      d.status = Status(StatusCode::kUnavailable, fmt::format("HTTP {}: {}", res->status, res->body));
    } else {
      d.note = fmt::format("{} file(s), {} bytes", d.shipped.files, d.shipped.bytes);
    }
    return d;
  }
  // Fetch: a few tries, for a server that restarts meanwhile.
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(500 << attempt));
    auto res = client->Call("GET", path, "", timeout(static_cast<size_t>(max_bytes)), static_cast<size_t>(max_bytes) + (1 << 20));
    if (!res) {
      d.status = res.error();
      continue;
    }
    if (res->status == 404) {
      d.status = Status::Ok();
      d.note = "no checkpoint carried for this task yet";
      return d;
    }
    if (res->status != 200) {
      d.status = Status(StatusCode::kUnavailable, fmt::format("HTTP {}: {}", res->status, res->body));
      continue;
    }
    d.status = UnpackTree(res->body, w.dir);
    if (d.status.ok()) {
      const TreeSignature sig = SignTree(w.dir);
      d.shipped = sig;
      d.note = fmt::format("restored {} file(s), {} bytes, from the pool", sig.files, sig.bytes);
    }
    return d;
  }
  return d;
}

}  // namespace gp
