// The HTTP layer's word on a connection after a request was answered: whether more of the
// client's bytes wait on it (what keeps a server that is behind from declaring a node down
// whose heartbeat already arrived). A real server on loopback and a raw client socket.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <thread>

#include "adapters/http.h"

namespace gp {
namespace {

TEST(HttpConnectionTest, InputWaitingTellsUnreadBytesFromSilence) {
  EventLoop loop;
  std::weak_ptr<const HttpConnection> link;
  auto port = loop.Listen(
      "127.0.0.1:0",
      [&](HttpRequest r, Respond respond) {
        link = r.connection;
        respond(HttpResponse{200, "{}"});
      },
      [](const RequestHead&) { return Admission{}; });
  ASSERT_TRUE(port) << port.error().message();
  std::thread runner([&] { loop.Run(); });
  // Asked on the loop's thread, as the server asks it.
  auto waiting = [&] {
    std::promise<int> p;
    loop.Post([&] {
      auto l = link.lock();
      p.set_value(l ? (l->InputWaiting() ? 1 : 0) : -1);
    });
    return p.get_future().get();
  };

  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(*port);
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string req = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
  ASSERT_EQ(write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  char buf[512];
  ASSERT_GT(read(fd, buf, sizeof(buf)), 0);  // answered
  EXPECT_EQ(waiting(), 0) << "answered, nothing more sent: silence";
  const std::string part = "POST /v1/agent/heartbeat HTTP/1.1\r\nHost: a\r\n";  // the next one, its header in part
  ASSERT_EQ(write(fd, part.data(), part.size()), static_cast<ssize_t>(part.size()));
  int seen = 0;
  for (int i = 0; i < 100 && (seen = waiting()) != 1; ++i) usleep(10'000);
  EXPECT_EQ(seen, 1) << "bytes of the next request wait (unread, or read and not yet parsed)";
  close(fd);
  for (int i = 0; i < 100 && (seen = waiting()) == 1; ++i) usleep(10'000);
  EXPECT_NE(seen, 1) << "a closed connection has nothing waiting";
  loop.Stop();
  runner.join();
}

}  // namespace
}  // namespace gp
