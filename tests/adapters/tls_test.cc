// TLS on the server's port beside plain HTTP, on real sockets: a client that has the pool's CA
// gets through and one without it (or with another CA, or asking for a name the certificate
// does not carry) does not; a node's client certificate reaches the handler, one of another CA
// never does, an expired one does (so that the answer can say why it is refused); plain HTTP
// from another host is turned away unless the server was told otherwise.
#include <gtest/gtest.h>

#include <ifaddrs.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <future>
#include <thread>

#include <fmt/format.h>

#include "adapters/http.h"
#include "adapters/pki.h"

namespace gp {
namespace {

struct Seen {
  bool tls = false;
  std::shared_ptr<const PeerCert> peer;
};

class TlsServer {
 public:
  TlsServer(const std::string& listen, const CertKey& ca, std::vector<std::string> names, bool plain_from_anywhere = false) {
    auto server = IssueCert(ca, "gpupool server", names, CertUse::kServer, 30);
    EXPECT_TRUE(server);
    auto p = loop_.Listen(
        listen,
        [this](HttpRequest r, Respond respond) {
          seen_ = Seen{r.tls, r.peer};
          respond(HttpResponse{200, R"({"ok":true})"});
        },
        [](const RequestHead&) { return Admission{}; }, ServerLimits{},
        ServerTls{.cert_chain_pem = server->cert_pem + ca.cert_pem, .key_pem = server->key_pem, .client_ca_pem = ca.cert_pem,
                  .plain_from_anywhere = plain_from_anywhere});
    EXPECT_TRUE(p) << p.error().message();
    port_ = p ? *p : 0;
    runner_ = std::thread([this] { loop_.Run(); });
  }
  ~TlsServer() {
    loop_.Stop();
    runner_.join();
  }
  uint16_t port() const { return port_; }
  Seen seen() {
    std::promise<Seen> p;
    loop_.Post([&] { p.set_value(seen_); });
    return p.get_future().get();
  }

 private:
  EventLoop loop_;
  uint16_t port_ = 0;
  Seen seen_;
  std::thread runner_;
};

Result<HttpResponse> Get(const std::string& base, const ClientTls& tls = {}) {
  auto c = HttpClient::Create(base, "", tls);
  if (!c) return tl::unexpected(c.error());
  return c->Call("GET", "/x", "", Millis{5'000});
}

TEST(TlsTest, TlsAndPlainShareThePortAndTheCaDecides) {
  auto ca = MakeCa("gpupool CA", 10);
  ASSERT_TRUE(ca);
  TlsServer s("127.0.0.1:0", *ca, {"127.0.0.1"});
  const std::string https = fmt::format("https://127.0.0.1:{}", s.port());

  auto ok = Get(https, ClientTls{.ca_pem = ca->cert_pem});
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->status, 200);
  EXPECT_TRUE(s.seen().tls);
  EXPECT_EQ(s.seen().peer, nullptr) << "no client certificate sent";

  auto plain = Get(fmt::format("127.0.0.1:{}", s.port()));
  ASSERT_TRUE(plain) << plain.error().message();
  EXPECT_EQ(plain->status, 200) << "plain HTTP over loopback, same port";
  EXPECT_FALSE(s.seen().tls);

  auto no_ca = HttpClient::Create(https, "", ClientTls{});
  ASSERT_FALSE(no_ca);
  EXPECT_NE(no_ca.error().message().find("--ca"), std::string::npos) << no_ca.error().message();

  auto other = MakeCa("another CA", 10);
  ASSERT_TRUE(other);
  auto wrong = Get(https, ClientTls{.ca_pem = other->cert_pem});
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(wrong.error().message().find("TLS"), std::string::npos) << wrong.error().message();

  // The certificate names 127.0.0.1, not localhost: asking for localhost is refused.
  auto misnamed = Get(fmt::format("https://localhost:{}", s.port()), ClientTls{.ca_pem = ca->cert_pem});
  EXPECT_FALSE(misnamed);
}

TEST(TlsTest, ClientCertificatesOfThePoolsCaReachTheHandler) {
  auto ca = MakeCa("gpupool CA", 10);
  ASSERT_TRUE(ca);
  TlsServer s("127.0.0.1:0", *ca, {"127.0.0.1", "localhost"});
  const std::string https = fmt::format("https://localhost:{}", s.port());
  auto csr = MakeCsr("node-a");
  ASSERT_TRUE(csr);
  auto cert = SignClientCsr(*ca, csr->csr_pem, "node-a", 600);
  ASSERT_TRUE(cert);
  auto ok = Get(https, ClientTls{.ca_pem = ca->cert_pem, .cert_pem = *cert, .key_pem = csr->key_pem});
  ASSERT_TRUE(ok) << ok.error().message();
  Seen seen = s.seen();
  ASSERT_NE(seen.peer, nullptr);
  EXPECT_EQ(seen.peer->common_name, "node-a");
  EXPECT_EQ(seen.peer->serial, ReadCertInfo(*cert)->serial);

  // A client certificate of another CA: the handshake fails, no request reaches the handler.
  auto other = MakeCa("another CA", 10);
  ASSERT_TRUE(other);
  auto forged = SignClientCsr(*other, csr->csr_pem, "node-b", 600);
  ASSERT_TRUE(forged);
  auto refused = Get(https, ClientTls{.ca_pem = ca->cert_pem, .cert_pem = *forged, .key_pem = csr->key_pem});
  EXPECT_FALSE(refused && refused->status == 200);
  EXPECT_EQ(s.seen().peer->common_name, "node-a") << "the forged one never got as far as a request";

  // An expired one gets through the handshake, its end in the past for the handler to refuse.
  auto brief = SignClientCsr(*ca, csr->csr_pem, "node-a", 1);
  ASSERT_TRUE(brief);
  std::this_thread::sleep_for(std::chrono::milliseconds(2'100));
  auto late = Get(https, ClientTls{.ca_pem = ca->cert_pem, .cert_pem = *brief, .key_pem = csr->key_pem});
  ASSERT_TRUE(late) << late.error().message();
  seen = s.seen();
  ASSERT_NE(seen.peer, nullptr);
  EXPECT_EQ(seen.peer->serial, ReadCertInfo(*brief)->serial);
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_LT(seen.peer->not_after_ms, now);
}

// This host's first IPv4 address that is not loopback, or "" (then the test cannot run).
std::string OtherAddress() {
  ifaddrs* all = nullptr;
  if (getifaddrs(&all) != 0) return "";
  std::string out;
  for (ifaddrs* i = all; i && out.empty(); i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof(text));
    if (std::string(text).rfind("127.", 0) != 0) out = text;
  }
  freeifaddrs(all);
  return out;
}

TEST(TlsTest, PlainHttpFromAnotherHostIsTurnedAwayUnlessAllowed) {
  const std::string ip = OtherAddress();
  if (ip.empty()) GTEST_SKIP() << "this host has no address but loopback";
  auto ca = MakeCa("gpupool CA", 10);
  ASSERT_TRUE(ca);
  {
    TlsServer s("0.0.0.0:0", *ca, {"127.0.0.1", ip});
    auto plain = Get(fmt::format("{}:{}", ip, s.port()));
    ASSERT_TRUE(plain) << plain.error().message();
    EXPECT_EQ(plain->status, 400);
    EXPECT_NE(plain->body.find("https://"), std::string::npos) << plain->body;
    EXPECT_NE(plain->body.find("--insecure-http"), std::string::npos) << plain->body;
    auto tls = Get(fmt::format("https://{}:{}", ip, s.port()), ClientTls{.ca_pem = ca->cert_pem});
    ASSERT_TRUE(tls) << tls.error().message();
    EXPECT_EQ(tls->status, 200);
    auto loopback = Get(fmt::format("127.0.0.1:{}", s.port()));
    ASSERT_TRUE(loopback);
    EXPECT_EQ(loopback->status, 200) << "the same listener, over loopback";
  }
  TlsServer insecure("0.0.0.0:0", *ca, {"127.0.0.1", ip}, /*plain_from_anywhere=*/true);
  auto plain = Get(fmt::format("{}:{}", ip, insecure.port()));
  ASSERT_TRUE(plain) << plain.error().message();
  EXPECT_EQ(plain->status, 200);
}

TEST(TlsTest, LoopbackHostsAreToldFromOthers) {
  for (const char* host : {"localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"}) EXPECT_TRUE(IsLoopbackHost(host)) << host;
  for (const char* host : {"10.0.0.5", "192.0.2.2", "example.org", "127.example.org", "", "[::2]"}) {
    EXPECT_FALSE(IsLoopbackHost(host)) << host;
  }
}

}  // namespace
}  // namespace gp
