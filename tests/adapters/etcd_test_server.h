// A real etcd member for tests (Debian's etcd-server, which scripts/bootstrap installs): started
// on free loopback ports in a temporary directory, stopped and removed at the end.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "adapters/http.h"

namespace gp::testing {

inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

class EtcdTestServer {
 public:
  EtcdTestServer() {
    dir_ = std::filesystem::temp_directory_path() / ("gpupool-etcd-" + std::to_string(::getpid()) + "-" + std::to_string(FreePort()));
    std::filesystem::create_directories(dir_);
    client_port_ = FreePort();
    const int peer = FreePort();
    const std::string client = "http://127.0.0.1:" + std::to_string(client_port_);
    const std::string peer_url = "http://127.0.0.1:" + std::to_string(peer);
    std::vector<std::string> args = {"etcd", "--name", "t", "--data-dir", (dir_ / "data").string(),
                                     "--listen-client-urls", client, "--advertise-client-urls", client,
                                     "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                                     "--initial-cluster", "t=" + peer_url, "--log-level", "error"};
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string log = (dir_ / "etcd.log").string();
      std::freopen(log.c_str(), "w", stdout);
      std::freopen(log.c_str(), "a", stderr);
      std::vector<char*> argv;
      for (std::string& s : args) argv.push_back(s.data());
      argv.push_back(nullptr);
      ::execvp("etcd", argv.data());
      std::_Exit(127);
    }
    auto http = HttpClient::Create(endpoint(), "");
    for (int i = 0; i < 200 && http; ++i) {
      auto r = http->Call("GET", "/health", "", Millis{500});
      if (r && r->status == 200 && r->body.find("true") != std::string::npos) {
        ready_ = true;
        break;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) break;  // it could not start
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ~EtcdTestServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  bool ready() const { return ready_; }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(client_port_); }
  std::filesystem::path dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  int client_port_ = 0;
  pid_t pid_ = -1;
  bool ready_ = false;
};

}  // namespace gp::testing
