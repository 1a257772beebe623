#include "adapters/http.h"

#include <fmt/format.h>

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/core/detect_ssl.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <algorithm>
#include <charconv>
#include <thread>
#include <list>
#include <limits>
#include <sys/resource.h>
#include <unistd.h>

#include "adapters/pki.h"
#include "core/units.h"

namespace gp {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using TlsSocket = ssl::stream<tcp::socket>;

namespace {

Result<std::pair<std::string, std::string>> SplitHostPort(std::string text) {
  if (text.starts_with("http://")) text = text.substr(7);
  if (text.starts_with("https://")) text = text.substr(8);
  while (!text.empty() && text.back() == '/') text.pop_back();
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    return InvalidArgument(fmt::format("'{}': expected HOST:PORT, e.g. 127.0.0.1:7070", text));
  }
  return std::pair{text.substr(0, colon), text.substr(colon + 1)};
}

void ParseTarget(std::string_view target, HttpRequest& r) {
  const size_t q = target.find('?');
  r.path = std::string(target.substr(0, q));
  if (q == std::string_view::npos) return;
  r.query = ParseForm(target.substr(q + 1));
}

// A server-side connection, plain or TLS, as the loop's connection count sees it.
class SessionBase : public HttpConnection {
 public:
  // Closes an idle connection to make room for a new one.
  virtual void Evict() = 0;
};

// The connections open now, the most allowed, and those idle (waiting for a request's header),
// oldest first (shared by every listener of a loop). At the limit, a new connection closes the
// oldest idle one rather than being refused: idle and slow clients cannot lock the others out.
struct ConnectionCount {
  size_t open = 0;
  size_t max = 0;
  std::list<std::weak_ptr<SessionBase>> idle;
};

tcp::socket& Lowest(tcp::socket& s) { return s; }
tcp::socket& Lowest(TlsSocket& s) { return s.next_layer(); }
const tcp::socket& Lowest(const tcp::socket& s) { return s; }
const tcp::socket& Lowest(const TlsSocket& s) { return s.next_layer(); }
// Bytes decrypted and not yet read: input waiting as much as the kernel's.
size_t Pending(const tcp::socket&) { return 0; }
size_t Pending(const TlsSocket& s) { return static_cast<size_t>(SSL_pending(const_cast<TlsSocket&>(s).native_handle())); }

// The verified client certificate of a TLS connection, or null.
std::shared_ptr<const PeerCert> PeerOf(SSL* ssl) {
  X509* x = SSL_get1_peer_certificate(ssl);
  if (!x) return nullptr;
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, x);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(bio);
  X509_free(x);
  auto info = ReadCertInfo(pem);
  if (!info) return nullptr;
  return std::make_shared<const PeerCert>(PeerCert{.common_name = info->common_name, .serial = info->serial,
                                                   .not_after_ms = info->not_after_ms});
}

// Answers that the connection layer gives by itself.
HttpResponse TooLong(std::string_view what, size_t limit, int status) {
  return HttpResponse{status, fmt::format(R"({{"error":"request {} over {} bytes"}})", what, limit)};
}

// One connection: plain (Stream = tcp::socket) or TLS (TlsSocket, its handshake done).
template <class Stream>
class Session : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
  using std::enable_shared_from_this<Session<Stream>>::shared_from_this;
  using std::enable_shared_from_this<Session<Stream>>::weak_from_this;

 public:
  // `buffer`: bytes already read (the first ones, read to tell TLS from plain).
  Session(Stream stream, beast::flat_buffer buffer, std::shared_ptr<const PeerCert> peer, const HttpHandler& handler,
          const AdmitFn& admit, const ServerLimits& limits, ConnectionCount& count)
      : socket_(std::move(stream)), deadline_(socket_.get_executor()), buffer_(std::move(buffer)), peer_(std::move(peer)),
        handler_(handler), admit_(admit), limits_(limits), count_(count) {
    ++count_.open;
  }
  ~Session() {
    Uncount();
    NotIdle();
    RemoveSpool();
  }

  void Start() { Read(); }

  bool InputWaiting() const override {
    if (!Lowest(socket_).is_open()) return false;
    boost::system::error_code ec;
    const size_t unread = Lowest(socket_).available(ec);  // FIONREAD: O(1)
    if (!ec && unread > 0) return true;
    if (Pending(socket_) > 0) return true;
    // Bytes read from the kernel and not yet parsed. (A request whose client stopped in the
    // middle does not count: a hung agent must not pass for a speaking one until a timeout.)
    return buffer_.size() > 0;
  }

  // Closes an idle connection to make room for a new one; its descriptor is free at once, so
  // it leaves the count now (its handlers run later).
  void Evict() override {
    NotIdle();
    Uncount();
    Close();
  }

 private:
  // One deadline for what the connection waits on now (a header, a body, a client to read an
  // answer): when it passes, the socket is closed and the pending operation ends with an
  // error. A plain socket and one timer (about 150 bytes) instead of beast::tcp_stream's three
  // timers (736 bytes): at 10,000 agents' connections the difference is 6 MB.
  void Deadline(std::chrono::milliseconds after) {
    deadline_.expires_after(after);  // a wait still pending ends with operation_aborted
    deadline_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
      if (ec) return;
      auto self = weak.lock();
      // A deadline moved after this one fired but before its handler ran does not close.
      if (self && self->deadline_.expiry() <= std::chrono::steady_clock::now()) self->Close();
    });
  }
  void NoDeadline() { deadline_.expires_at(std::chrono::steady_clock::time_point::max()); }
  void Close() {
    boost::system::error_code ignored;
    deadline_.cancel();
    Lowest(socket_).close(ignored);
  }

  void Uncount() {
    if (!counted_) return;
    --count_.open;
    counted_ = false;
  }

  void NotIdle() {
    if (!idle_) return;
    count_.idle.erase(idle_it_);
    idle_ = false;
  }

  void Read() {
    if (!idle_) {
      idle_it_ = count_.idle.insert(count_.idle.end(), weak_from_this());
      idle_ = true;
    }
    parser_ = std::make_unique<http::request_parser<http::string_body>>();
    file_parser_.reset();
    RemoveSpool();
    // The header may be as long as the request line's and the fields' limits together; which
    // of the two it broke is told apart afterwards (414 or 431).
    parser_->header_limit(static_cast<std::uint32_t>(limits_.max_target + limits_.max_header));
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());  // set once the admission has seen the header
    Deadline(std::chrono::milliseconds(limits_.header_timeout.value()));
    http::async_read_header(socket_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->OnHeader(ec);
    });
  }

  // Refuses with `r` and closes: what the client still sends is read and dropped (up to 64 MiB,
  // for 10 s), so that it gets to read the answer instead of a reset connection.
  void Refuse(HttpResponse r) {
    draining_ = true;
    Write(std::move(r), false);
  }

  void OnHeader(beast::error_code ec) {
    NotIdle();
    if (ec == http::error::header_limit) {
      // Which limit: the request line (the first line of what was read) or the fields.
      const std::string_view seen(static_cast<const char*>(buffer_.data().data()), buffer_.size());
      const size_t eol = seen.find("\r\n");
      const bool long_line = eol == std::string_view::npos || eol > limits_.max_target;
      return Refuse(long_line ? TooLong("target", limits_.max_target, 414) : TooLong("header", limits_.max_header, 431));
    }
    if (ec) return;  // closed, timed out, or not HTTP: drop the connection
    const auto& req = parser_->get();
    if (req.target().size() > limits_.max_target) {
      return Refuse(TooLong("target", limits_.max_target, 414));
    }
    size_t fields = 0;
    for (const auto& f : req.base()) fields += f.name_string().size() + f.value().size() + 4;
    if (fields > limits_.max_header) {
      return Refuse(TooLong("header", limits_.max_header, 431));
    }
    Admission adm;
    std::optional<uint64_t> length;
    if (parser_->content_length()) length = *parser_->content_length();
    try {
      adm = admit_(RequestHead{.method = req.method_string(), .target = req.target(),
                               .authorization = req[http::field::authorization], .cookie = req[http::field::cookie],
                               .content_length = length, .tls = kTls});
    } catch (const std::exception&) {
      adm.refuse = HttpResponse{500, R"({"error":"internal error while admitting the request"})"};
    }
    if (adm.refuse) return Refuse(std::move(*adm.refuse));
    limit_ = adm.body_limit;
    const bool chunked = parser_->chunked();
    if ((parser_->content_length() && *parser_->content_length() > limit_) || (chunked && limit_ == 0)) {
      return Refuse(TooLong("body", limit_, 413));
    }
    if (adm.hold) {
      dropped_ = std::move(adm.dropped);
      adm.hold([self = shared_from_this(), spool = adm.spool] { self->Admitted(spool); });
      return;
    }
    Admitted(adm.spool);
  }

  void Admitted(bool spool) {
    Deadline(std::chrono::milliseconds(limits_.body_timeout.value()));
    // A client that asked before sending its body (curl does past 1 MiB) hears yes now, not
    // after its own 1 s wait; only admitted requests get this far.
    if (!parser_->is_done() && beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      asio::async_write(socket_, asio::buffer(kContinue), [self = shared_from_this(), spool](beast::error_code e, size_t) {
        if (e) return;
        self->ReadBody(spool);
      });
      return;
    }
    ReadBody(spool);
  }

  void ReadBody(bool spool) {
    beast::error_code ec;
    if (spool && !parser_->is_done()) {
      // Streamed to a file as it arrives: a 1 GiB upload costs the server a buffer, not 1 GiB.
      static uint64_t serial = 0;
      const auto dir = limits_.spool_dir.empty() ? std::filesystem::temp_directory_path() : limits_.spool_dir;
      spool_ = dir / fmt::format(".upload-{}-{}", getpid(), ++serial);
      file_parser_ = std::make_unique<http::request_parser<http::file_body>>(std::move(*parser_));
      file_parser_->body_limit(limit_);
      file_parser_->get().body().open(spool_.c_str(), beast::file_mode::write, ec);
      if (ec) {
        Dropped();
        return Refuse(HttpResponse{507, fmt::format(R"({{"error":"cannot store the upload: {}"}})", ec.message())});
      }
      http::async_read(socket_, buffer_, *file_parser_, [self = shared_from_this()](beast::error_code e, size_t) {
        self->OnRead(e);
      });
      return;
    }
    parser_->body_limit(limit_);
    if (parser_->is_done()) return OnRead(ec);
    http::async_read(socket_, buffer_, *parser_, [self = shared_from_this()](beast::error_code e, size_t) {
      self->OnRead(e);
    });
  }

  // A held request that will not reach the handler: its holder hears of it once.
  void Dropped() {
    if (!dropped_) return;
    auto d = std::move(dropped_);
    dropped_ = nullptr;
    d();
  }

  void OnRead(beast::error_code ec) {
    if (ec) Dropped();
    if (ec == http::error::body_limit) return Refuse(TooLong("body", limit_, 413));
    if (ec) return;  // closed, timed out, or not HTTP: drop the connection
    dropped_ = nullptr;  // handed over from here on
    HttpRequest r;
    r.connection = weak_from_this();
    r.tls = kTls;
    r.peer = peer_;
    auto fill = [&](const auto& req) {
      r.method = std::string(req.method_string());
      ParseTarget(req.target(), r);
      r.authorization = std::string(req[http::field::authorization]);
      r.cookie = std::string(req[http::field::cookie]);
      r.content_type = std::string(req[http::field::content_type]);
      keep_alive_ = req.keep_alive();
      version_ = req.version();  // answered in kind: an HTTP/1.0 client is told `Connection: keep-alive`
    };
    if (file_parser_) {
      auto& req = file_parser_->get();
      fill(req);
      req.body().close();
      r.body_file = spool_;
      std::error_code fec;
      r.body_size = std::filesystem::file_size(spool_, fec);
    } else {
      auto& req = parser_->get();
      fill(req);
      r.body = std::move(req.body());
      r.body_size = r.body.size();
    }
    parser_.reset();
    file_parser_.reset();
    // Nothing more buffered (no pipelined request): the read buffer goes too. A connection
    // parked in a long poll then holds no buffer; the next read takes a new one (512 bytes).
    if (buffer_.size() == 0) buffer_.shrink_to_fit();
    NoDeadline();  // a long poll may take a while; the handler answers when it can
    auto self = shared_from_this();
    // An answer given while the handler runs is written once it returns; one given later (a
    // long poll, a group commit) is written at once. Never a trip through the loop's queue:
    // under load that queue is long, and a user's request would wait in it twice.
    struct Answer {  // 16 bytes while a long poll is parked; the answer itself only once given
      bool answered = false;
      bool in_handler = true;
      std::unique_ptr<HttpResponse> now;
    };
    auto state = std::make_shared<Answer>();
    Respond respond = [self, state](HttpResponse resp) {
      if (state->answered) return;
      state->answered = true;
      if (state->in_handler) {
        state->now = std::make_unique<HttpResponse>(std::move(resp));
        return;
      }
      self->Write(std::move(resp), self->keep_alive_);
    };
    try {
      handler_(std::move(r), respond);
    } catch (const std::exception&) {
      // A handler's bug answers this request with 500; the server and every other request go on.
      respond(HttpResponse{500, R"({"error":"internal error while handling the request"})"});
    }
    state->in_handler = false;
    if (state->now) Write(std::move(*state->now), keep_alive_);
  }

  void RemoveSpool() {
    if (spool_.empty()) return;
    std::error_code ec;
    std::filesystem::remove(spool_, ec);
    spool_.clear();
  }

  void Write(HttpResponse r, bool keep_alive) {
    if (!r.body_file.empty()) return WriteFile(std::move(r), keep_alive);
    auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(r.status), version_);
    res->set(http::field::server, "gpupool");
    res->set(http::field::content_type, r.content_type);
    for (const auto& [name, value] : r.headers) res->insert(name, value);
    res->keep_alive(keep_alive);
    res->body() = std::move(r.body);
    res->prepare_payload();
    Deadline(std::chrono::milliseconds(limits_.body_timeout.value()));  // a client that never reads
    http::async_write(socket_, *res, [self = shared_from_this(), res, keep_alive](beast::error_code ec, size_t) {
      self->Written(ec, keep_alive);
    });
  }

  void WriteFile(HttpResponse r, bool keep_alive) {
    auto res = std::make_shared<http::response<http::file_body>>(static_cast<http::status>(r.status), version_);
    beast::error_code ec;
    res->body().open(r.body_file.c_str(), beast::file_mode::scan, ec);
    if (ec) return Write(HttpResponse{404, R"({"error":"the file is gone"})"}, keep_alive);
    res->set(http::field::server, "gpupool");
    res->set(http::field::content_type, r.content_type);
    for (const auto& [name, value] : r.headers) res->insert(name, value);
    res->keep_alive(keep_alive);
    res->prepare_payload();
    Deadline(std::chrono::milliseconds(limits_.body_timeout.value()));
    http::async_write(socket_, *res, [self = shared_from_this(), res, keep_alive](beast::error_code e, size_t) {
      self->Written(e, keep_alive);
    });
  }

  void Written(beast::error_code ec, bool keep_alive) {
    RemoveSpool();
    if (ec) return;
    if (keep_alive) {
      Read();
    } else {
      beast::error_code ignored;
      Lowest(socket_).shutdown(tcp::socket::shutdown_send, ignored);
      if (draining_) {
        Deadline(std::chrono::seconds(10));
        Discard();
      }
    }
  }

  void Discard() {
    discard_.resize(64 * 1024);
    socket_.async_read_some(asio::buffer(discard_), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->discarded_ += n;
      if (!ec && self->discarded_ < (64u << 20)) self->Discard();
    });
  }

  static constexpr bool kTls = std::is_same_v<Stream, TlsSocket>;
  Stream socket_;
  asio::steady_timer deadline_;
  beast::flat_buffer buffer_;
  std::shared_ptr<const PeerCert> peer_;
  // Allocated while a request is read and dropped once it is handed over: a connection that
  // waits (a parked long poll, an idle keep-alive) holds no parser and no header fields.
  std::unique_ptr<http::request_parser<http::string_body>> parser_;
  std::unique_ptr<http::request_parser<http::file_body>> file_parser_;
  std::function<void()> dropped_;  // a held request's holder, until it is handed over
  std::filesystem::path spool_;
  const HttpHandler& handler_;
  const AdmitFn& admit_;
  const ServerLimits& limits_;  // owned by the event loop, which outlives its sessions
  ConnectionCount& count_;
  std::list<std::weak_ptr<SessionBase>>::iterator idle_it_;
  bool idle_ = false;
  bool counted_ = true;
  size_t limit_ = 0;
  bool keep_alive_ = false;
  unsigned version_ = 11;
  bool draining_ = false;
  std::vector<char> discard_;
  size_t discarded_ = 0;
};

// Answers a connection with `answer` (a whole HTTP response) and closes it, without a session.
void AnswerAndClose(tcp::socket s, const std::string& answer) {
  auto sock = std::make_shared<tcp::socket>(std::move(s));
  asio::async_write(*sock, asio::buffer(answer), [sock](beast::error_code, size_t) {
    beast::error_code ignored;
    sock->shutdown(tcp::socket::shutdown_both, ignored);
    sock->close(ignored);
  });
}

// Answers a connection over the limit with 503 and closes it.
void TurnAway(tcp::socket s) {
  static const std::string kBusy =
      "HTTP/1.1 503 Service Unavailable\r\nServer: gpupool\r\nContent-Type: application/json\r\nConnection: close\r\n"
      "Retry-After: 1\r\nContent-Length: 52\r\n\r\n{\"error\":\"too many open connections; try again soon\"}";
  AnswerAndClose(std::move(s), kBusy);
}

// A TLS context of either side: TLS 1.2 and later only.
std::unique_ptr<ssl::context> TlsContext(ssl::context::method method) {
  auto ctx = std::make_unique<ssl::context>(method);
  beast::error_code ignored;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                       ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                   ignored);
  return ctx;
}

// Plain HTTP that came from another host to a server that takes it only over loopback.
void RefusePlain(tcp::socket s) {
  static const std::string kBody =
      R"({"error":"this server takes plain HTTP over loopback only: use https:// with the pool's CA (the server's )"
      R"(DATA_DIR/tls/ca.crt; `gpupool ca` prints it), or start the server with --insecure-http"})";
  static const std::string kAnswer = fmt::format(
      "HTTP/1.1 400 Bad Request\r\nServer: gpupool\r\nContent-Type: application/json\r\nConnection: close\r\n"
      "Content-Length: {}\r\n\r\n{}", kBody.size(), kBody);
  AnswerAndClose(std::move(s), kAnswer);
}

}  // namespace

std::map<std::string, std::string> ParseForm(std::string_view rest) {
  std::map<std::string, std::string> out;
  while (!rest.empty()) {
    const size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    const size_t eq = pair.find('=');
    out[UrlDecode(pair.substr(0, eq))] = eq == std::string_view::npos ? "" : UrlDecode(pair.substr(eq + 1));
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
  }
  return out;
}

size_t RaiseOpenFileLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 1 << 20);
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur == RLIM_INFINITY ? SIZE_MAX : static_cast<size_t>(rl.rlim_cur);
}

bool IsLoopbackHost(std::string_view host) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host == "localhost") return true;
  beast::error_code ec;
  const auto address = asio::ip::make_address(std::string(host), ec);
  return !ec && address.is_loopback();
}

std::string UrlDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size()) {
      int v = 0;
      auto [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
      if (ec == std::errc() && p == s.data() + i + 3) {
        out += static_cast<char>(v);
        i += 2;
      } else {
        out += s[i];
      }
    } else {
      out += s[i];
    }
  }
  return out;
}

struct EventLoop::Impl {
  struct Detect;
  // First, so it is destroyed last: sessions still queued in `io` when it goes update it.
  ConnectionCount connections;
  asio::io_context io{1};
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  struct Listener {
    HttpHandler handler;
    AdmitFn admit;
    ServerLimits limits;
    std::unique_ptr<ssl::context> tls;  // null: plain HTTP only
    bool plain_from_anywhere = false;
  };
  std::vector<std::unique_ptr<Listener>> listeners;
  std::unique_ptr<asio::signal_set> signals;
  std::vector<std::shared_ptr<std::function<void()>>> ticks;

  // Closes the oldest idle connection, if there is one.
  void EvictIdle() {
    while (!connections.idle.empty()) {
      std::shared_ptr<SessionBase> oldest = connections.idle.front().lock();
      if (!oldest) {
        connections.idle.pop_front();
        continue;
      }
      oldest->Evict();
      return;
    }
  }

  void Accept(tcp::acceptor& a, const Listener& l);
};

// A new connection on a listener with TLS: its first bytes tell a TLS handshake from plain
// HTTP (Beast's detect_ssl); TLS is then shaken hands on, and either way a session takes the
// connection with what was read. The whole of it within the header's timeout.
struct EventLoop::Impl::Detect : std::enable_shared_from_this<Detect> {
  Detect(tcp::socket s, const Listener& listener, ConnectionCount& count)
      : socket(std::move(s)), timer(socket.get_executor()), l(listener), connections(count) {}
  tcp::socket socket;
  std::optional<TlsSocket> tls;
  beast::flat_buffer buffer;
  asio::steady_timer timer;
  const Listener& l;
  ConnectionCount& connections;

  void Run() {
    timer.expires_after(std::chrono::milliseconds(l.limits.header_timeout.value()));
    timer.async_wait([weak = weak_from_this()](beast::error_code ec) {
      auto self = weak.lock();
      if (ec || !self) return;
      beast::error_code ignored;
      (self->tls ? self->tls->next_layer() : self->socket).close(ignored);
    });
    beast::async_detect_ssl(socket, buffer, [self = shared_from_this()](beast::error_code ec, bool is_tls) {
      self->Detected(ec, is_tls);
    });
  }

  void Detected(beast::error_code ec, bool is_tls) {
    if (ec) return;  // closed, or silent past the timeout
    if (!is_tls) {
      timer.cancel();
      beast::error_code e;
      const auto local = socket.local_endpoint(e);
      if (!l.plain_from_anywhere && (e || !local.address().is_loopback())) return RefusePlain(std::move(socket));
      std::make_shared<Session<tcp::socket>>(std::move(socket), std::move(buffer), nullptr, l.handler, l.admit, l.limits,
                                             connections)
          ->Start();
      return;
    }
    tls.emplace(std::move(socket), *l.tls);
    tls->async_handshake(ssl::stream_base::server, buffer.data(), [self = shared_from_this()](beast::error_code e, size_t used) {
      self->timer.cancel();
      if (e) return;  // a client that does not trust this server, or whose certificate is not the pool's
      self->buffer.consume(used);
      auto peer = PeerOf(self->tls->native_handle());
      std::make_shared<Session<TlsSocket>>(std::move(*self->tls), std::move(self->buffer), std::move(peer), self->l.handler,
                                           self->l.admit, self->l.limits, self->connections)
          ->Start();
    });
  }
};

void EventLoop::Impl::Accept(tcp::acceptor& a, const Listener& l) {
  a.async_accept([this, &a, &l](beast::error_code ec, tcp::socket s) {
    if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space || ec == asio::error::no_memory) {
      // Out of file descriptors: accepting again at once would spin; wait for some to close.
      auto pause = std::make_shared<asio::steady_timer>(io, std::chrono::milliseconds(50));
      pause->async_wait([this, &a, &l, pause](beast::error_code) {
        if (a.is_open()) Accept(a, l);
      });
      return;
    }
    if (!ec) {
      if (connections.open >= connections.max) EvictIdle();
      if (connections.open >= connections.max) {
        TurnAway(std::move(s));
      } else {
        beast::error_code ignored;
        s.set_option(tcp::no_delay(true), ignored);
        if (l.tls) {
          std::make_shared<Detect>(std::move(s), l, connections)->Run();
        } else {
          std::make_shared<Session<tcp::socket>>(std::move(s), beast::flat_buffer(), nullptr, l.handler, l.admit, l.limits,
                                                 connections)
              ->Start();
        }
      }
    }
    if (a.is_open()) Accept(a, l);
  });
}

namespace {
// The server's TLS context: TLS 1.2 and later, its certificate chain, and client certificates
// of the given CA asked for but not required; an expired one passes the handshake (its request
// is refused saying so).
Result<std::unique_ptr<ssl::context>> ServerContext(const ServerTls& t) {
  auto ctx = TlsContext(ssl::context::tls_server);
  beast::error_code ec;
  ctx->use_certificate_chain(asio::buffer(t.cert_chain_pem), ec);
  if (ec) return Error(StatusCode::kInvalidArgument, fmt::format("the server's certificate: {}", ec.message()));
  ctx->use_private_key(asio::buffer(t.key_pem), ssl::context::pem, ec);
  if (ec) return Error(StatusCode::kInvalidArgument, fmt::format("the server's key: {}", ec.message()));
  if (!t.client_ca_pem.empty()) {
    ctx->add_certificate_authority(asio::buffer(t.client_ca_pem), ec);
    if (ec) return Error(StatusCode::kInvalidArgument, fmt::format("the client CA: {}", ec.message()));
    static const unsigned char kContext[] = "gpupool";
    SSL_CTX_set_session_id_context(ctx->native_handle(), kContext, sizeof(kContext) - 1);
    ctx->set_verify_mode(ssl::verify_peer);
    ctx->set_verify_callback([](bool preverified, ssl::verify_context& v) {
      if (preverified) return true;
      X509_STORE_CTX* x = v.native_handle();
      return X509_STORE_CTX_get_error(x) == X509_V_ERR_CERT_HAS_EXPIRED && X509_STORE_CTX_get_error_depth(x) == 0;
    });
  }
  return ctx;
}
}  // namespace

EventLoop::EventLoop() : impl_(std::make_unique<Impl>()) {}
EventLoop::~EventLoop() = default;

Result<uint16_t> EventLoop::Listen(const std::string& listen, HttpHandler handler, AdmitFn admit, ServerLimits limits,
                                   std::optional<ServerTls> tls) {
  std::unique_ptr<ssl::context> context;
  if (tls) {
    auto ctx = ServerContext(*tls);
    if (!ctx) return tl::unexpected(ctx.error());
    context = std::move(*ctx);
  }
  auto hp = SplitHostPort(listen);
  if (!hp) return tl::unexpected(hp.error());
  beast::error_code ec;
  const auto address = asio::ip::make_address(hp->first, ec);
  if (ec) return InvalidArgument(fmt::format("--listen: '{}' is not an IP address", hp->first));
  uint16_t port = 0;
  auto [p, pec] = std::from_chars(hp->second.data(), hp->second.data() + hp->second.size(), port);
  if (pec != std::errc() || p != hp->second.data() + hp->second.size()) {
    return InvalidArgument(fmt::format("--listen: '{}' is not a port", hp->second));
  }
  auto acceptor = std::make_unique<tcp::acceptor>(impl_->io);
  const tcp::endpoint ep(address, port);
  acceptor->open(ep.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(ep, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Error(StatusCode::kFailedPrecondition, fmt::format("cannot listen on {}: {}", listen, ec.message()));
  const uint16_t bound = acceptor->local_endpoint().port();
  if (impl_->connections.max == 0) {
    // As many as the file descriptor limit allows, less a reserve for the store, logs and
    // uploads: the soft limit is raised to the hard one first.
    const size_t limit = RaiseOpenFileLimit();
    const size_t fds = limit == SIZE_MAX ? 65536 : limit;
    impl_->connections.max = fds > 256 ? fds - 128 : fds / 2;
  }
  if (limits.max_connections > 0) impl_->connections.max = limits.max_connections;
  impl_->listeners.push_back(std::make_unique<Impl::Listener>(Impl::Listener{
      std::move(handler), std::move(admit), std::move(limits), std::move(context), tls && tls->plain_from_anywhere}));
  impl_->Accept(*acceptor, *impl_->listeners.back());
  impl_->acceptors.push_back(std::move(acceptor));
  return bound;
}

std::function<void()> EventLoop::After(Millis delay, std::function<void()> fn) {
  auto timer = std::make_shared<asio::steady_timer>(impl_->io, std::chrono::milliseconds(delay.value()));
  timer->async_wait([timer, fn = std::move(fn)](beast::error_code ec) {
    if (!ec) fn();
  });
  return [timer] { timer->cancel(); };
}

void EventLoop::Post(std::function<void()> fn) { asio::post(impl_->io, std::move(fn)); }

void EventLoop::Every(Millis period, std::function<void()> fn) {
  auto timer = std::make_shared<asio::steady_timer>(impl_->io);
  auto tick = std::make_shared<std::function<void()>>();
  *tick = [timer, period, fn = std::move(fn), tick_weak = std::weak_ptr<std::function<void()>>(tick)] {
    timer->expires_after(std::chrono::milliseconds(period.value()));
    timer->async_wait([timer, &fn, tick_weak](beast::error_code ec) {
      if (ec) return;
      fn();
      if (auto t = tick_weak.lock()) (*t)();
    });
  };
  impl_->ticks.push_back(tick);  // the loop owns its periodic timers
  (*tick)();
}

void EventLoop::OnSignals(std::function<void(int)> fn) {
  impl_->signals = std::make_unique<asio::signal_set>(impl_->io, SIGINT, SIGTERM);
  impl_->signals->async_wait([fn = std::move(fn)](beast::error_code ec, int sig) {
    if (!ec) fn(sig);
  });
}

size_t EventLoop::open_connections() const { return impl_->connections.open; }

void EventLoop::Run() {
  auto guard = asio::make_work_guard(impl_->io);
  impl_->io.run();
}

void EventLoop::Stop() { impl_->io.stop(); }

// The client's TLS context for `t`, or an error naming what is wrong with it.
Result<std::unique_ptr<ssl::context>> ClientContext(const ClientTls& t) {
  auto ctx = TlsContext(ssl::context::tls_client);
  beast::error_code ec;
  if (t.verify) {
    if (t.ca_pem.empty()) {
      return Error(StatusCode::kInvalidArgument,
                   "https:// needs the pool's CA to check the server: give --ca FILE, set GPUPOOL_CA, or put ca = PATH in "
                   "~/.config/gpupool/config (the server's DATA_DIR/tls/ca.crt)");
    }
    ctx->add_certificate_authority(asio::buffer(t.ca_pem), ec);
    if (ec) return Error(StatusCode::kInvalidArgument, fmt::format("the CA: {}", ec.message()));
    ctx->set_verify_mode(ssl::verify_peer);
  } else {
    ctx->set_verify_mode(ssl::verify_none);
  }
  if (!t.cert_pem.empty()) {
    ctx->use_certificate_chain(asio::buffer(t.cert_pem), ec);
    if (!ec) ctx->use_private_key(asio::buffer(t.key_pem), ssl::context::pem, ec);
    if (ec) return Error(StatusCode::kInvalidArgument, fmt::format("the client certificate: {}", ec.message()));
  }
  return ctx;
}

struct HttpClient::Impl {
  asio::io_context io;
  std::vector<std::pair<std::string, std::string>> servers;  // host, port
  size_t current = 0;
  std::string host;
  std::string port;
  std::string token;
  ClientTls tls_config;
  std::unique_ptr<ssl::context> tls;  // https: one context, every connection
  std::optional<beast::tcp_stream> stream;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_stream;
  beast::flat_buffer buffer;
  bool connect_failed = false;  // the last call never reached a server: nothing was sent
  bool wait_for_leader = true;

  void Use(size_t i) {
    current = i % servers.size();
    host = servers[current].first;
    port = servers[current].second;
    Drop();
  }
  void Drop() {
    stream.reset();
    tls_stream.reset();
    buffer.clear();
  }
  bool connected() const { return stream || tls_stream; }
  // Connects to host:port (and shakes hands, with TLS) within `limit`.
  beast::error_code Connect(std::chrono::milliseconds limit);
  // Writes `req` and reads the answer into `parser` within `limit`, on whichever stream is open.
  template <class Body>
  beast::error_code Exchange(http::request<http::string_body>& req, http::response_parser<Body>& parser,
                             std::chrono::milliseconds limit);
  // One request to the current server; reconnects once if the kept-alive connection was closed.
  Result<HttpResponse> CallOne(const std::string& method, const std::string& target, const std::string& body, Millis timeout,
                               Millis connect_timeout, size_t max_response);
};

HttpClient::HttpClient() : impl_(std::make_unique<Impl>()) {}
HttpClient::HttpClient(HttpClient&&) noexcept = default;
HttpClient& HttpClient::operator=(HttpClient&&) noexcept = default;
HttpClient::~HttpClient() = default;

Result<HttpClient> HttpClient::Create(const std::string& base, std::string token, ClientTls tls) {
  HttpClient c;
  if (base.find("https://") != std::string::npos) {
    auto ctx = ClientContext(tls);
    if (!ctx) return tl::unexpected(ctx.error());
    c.impl_->tls = std::move(*ctx);
    c.impl_->tls_config = std::move(tls);
  }
  for (std::string_view rest = base; !rest.empty();) {
    const size_t comma = rest.find(',');
    std::string one(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    while (!one.empty() && one.front() == ' ') one.erase(0, 1);
    while (!one.empty() && one.back() == ' ') one.pop_back();
    if (one.empty()) continue;
    auto hp = SplitHostPort(one);
    if (!hp) return tl::unexpected(hp.error());
    c.impl_->servers.push_back(*hp);
  }
  if (c.impl_->servers.empty()) return InvalidArgument(fmt::format("'{}': expected HOST:PORT[,HOST:PORT...]", base));
  c.impl_->Use(0);
  c.impl_->token = std::move(token);
  return c;
}

std::string HttpClient::server() const { return impl_->host + ":" + impl_->port; }

void HttpClient::Failover() { impl_->Use(impl_->current + 1); }

size_t HttpClient::servers() const { return impl_->servers.size(); }

bool HttpClient::tls() const { return impl_->tls != nullptr; }

void HttpClient::set_client_certificate(std::string cert_pem, std::string key_pem) {
  if (!impl_->tls) return;
  ClientTls t = impl_->tls_config;
  t.cert_pem = std::move(cert_pem);
  t.key_pem = std::move(key_pem);
  auto ctx = ClientContext(t);
  if (!ctx) return;
  impl_->Drop();
  impl_->tls = std::move(*ctx);
  impl_->tls_config = std::move(t);
}

void HttpClient::set_wait_for_leader(bool wait) { impl_->wait_for_leader = wait; }

namespace {
std::string HeaderOf(const HttpResponse& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (boost::beast::iequals(k, name)) return v;
  }
  return "";
}
}  // namespace

// With several servers (a leader and its standbys): a server that refuses the connection, or a
// standby that says it is one (503, X-Gpupool-Role: follower), sends the call to the next; a
// redirect (307/308: a standby naming the leader) is followed. Either way nothing was done by
// the server left, so even a submission is safe to send again. When every server refused, the
// call waits a little and goes round again while its time lasts (an election under way).
Result<HttpResponse> HttpClient::Call(const std::string& method, const std::string& target, const std::string& body,
                                      Millis timeout, size_t max_response) {
  Impl& c = *impl_;
  const auto start = std::chrono::steady_clock::now();
  auto left = [&] {
    const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
    return Millis{std::max<int64_t>(0, timeout.value() - spent)};
  };
  const bool many = c.servers.size() > 1;
  size_t passed = 0;  // servers passed over in a row
  int redirects = 0;
  for (;;) {
    const Millis budget = left();
    auto r = c.CallOne(method, target, body, budget, many ? std::min(budget, Millis{2'000}) : budget, max_response);
    bool next = false;
    if (!r) {
      next = many && c.connect_failed;
    } else if (r->status == 307 || r->status == 308) {
      auto hp = SplitHostPort(HeaderOf(*r, "X-Gpupool-Leader"));
      if (hp && redirects < 4) {
        ++redirects;
        auto it = std::find(c.servers.begin(), c.servers.end(), *hp);
        if (it == c.servers.end()) it = c.servers.insert(c.servers.end(), *hp);
        c.Use(static_cast<size_t>(it - c.servers.begin()));
        continue;
      }
      next = hp.has_value();  // a leader named that does not answer (its lease has not run out yet)
    } else if (r->status == 503 && HeaderOf(*r, "X-Gpupool-Role") == "follower") {
      next = true;  // a standby that knows no leader yet
    }
    if (!next) return r;
    c.Use(c.current + 1);
    if (++passed < c.servers.size()) continue;
    if (!c.wait_for_leader || left() <= Millis{250}) {
      // Every server refused, or is a standby that knows no leader that answers: none leads now.
      return Error(StatusCode::kUnavailable, fmt::format("{} {}: no server leads now ({}{})", method, target,
                                                         r ? fmt::format("HTTP {} from ", r->status) : r.error().message() + "; last ",
                                                         c.host + ":" + c.port));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    passed = 0;
    redirects = 0;
  }
}

beast::error_code HttpClient::Impl::Connect(std::chrono::milliseconds limit) {
  beast::error_code ec;
  tcp::resolver resolver(io);
  auto endpoints = resolver.resolve(host, port, ec);
  if (ec) return ec;
  auto run = [&] {
    io.restart();
    io.run();
  };
  beast::tcp_stream s(io);
  s.expires_after(limit);
  s.async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) {
    ec = e;
    s.expires_never();  // done: stop the timer, or run() would wait for it
  });
  run();
  if (ec) return ec;
  s.socket().set_option(tcp::no_delay(true), ec);
  if (!tls) {
    stream.emplace(std::move(s));
    return {};
  }
  tls_stream.emplace(std::move(s), *tls);
  beast::error_code addr_ec;
  asio::ip::make_address(host, addr_ec);
  // SNI for a name (not for an address), and the server's certificate must name what was asked.
  if (addr_ec) SSL_set_tlsext_host_name(tls_stream->native_handle(), host.c_str());
  if (tls_config.verify) tls_stream->set_verify_callback(ssl::host_name_verification(host));
  beast::get_lowest_layer(*tls_stream).expires_after(limit);
  tls_stream->async_handshake(ssl::stream_base::client, [&](beast::error_code e) {
    ec = e;
    beast::get_lowest_layer(*tls_stream).expires_never();
  });
  run();
  if (ec) tls_stream.reset();
  return ec;
}

template <class Body>
beast::error_code HttpClient::Impl::Exchange(http::request<http::string_body>& req, http::response_parser<Body>& parser,
                                             std::chrono::milliseconds limit) {
  beast::error_code ec;
  auto go = [&](auto& s) {
    beast::get_lowest_layer(s).expires_after(limit);
    http::async_write(s, req, [&](beast::error_code e, size_t) {
      ec = e;
      if (e) {
        beast::get_lowest_layer(s).expires_never();
        return;
      }
      http::async_read(s, buffer, parser, [&](beast::error_code e2, size_t) {
        ec = e2;
        beast::get_lowest_layer(s).expires_never();
      });
    });
    io.restart();
    io.run();
  };
  if (tls_stream) go(*tls_stream);
  else go(*stream);
  return ec;
}

Result<HttpResponse> HttpClient::Impl::CallOne(const std::string& method, const std::string& target, const std::string& body,
                                               Millis timeout, Millis connect_timeout, size_t max_response) {
  // Asynchronous operations run to completion on this client's own io_context: Beast enforces
  // a stream's timeout only on asynchronous operations, and a call must never hang on a server
  // that went away mid-request.
  Impl& c = *this;
  c.connect_failed = false;
  const auto limit = std::chrono::milliseconds(timeout.value());
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!c.connected()) {
      beast::error_code ec = c.Connect(std::chrono::milliseconds(connect_timeout.value()));
      if (ec) {
        c.Drop();
        c.connect_failed = true;
        if (ec.category() == asio::error::get_ssl_category() || ec.category() == ssl::error::get_stream_category()) {
          // Nothing was sent: the server's certificate is not the pool's (or names another host),
          // or it refused this client's.
          return Error(StatusCode::kPermissionDenied,
                       fmt::format("TLS with {}:{} failed: {}{}", c.host, c.port, ec.message(),
                                   tls_config.verify ? " (is the CA given the pool's, and the address one its certificate names?)" : ""));
        }
        if (ec.category() == asio::error::get_netdb_category() || ec.category() == asio::error::get_addrinfo_category()) {
          return Error(StatusCode::kNotFound, fmt::format("cannot resolve {}: {}", c.host, ec.message()));
        }
        return Error(ec == asio::error::connection_refused ? StatusCode::kUnavailable : StatusCode::kFailedPrecondition,
                     fmt::format("cannot reach the server at {}:{}: {}", c.host, c.port, ec.message()));
      }
    }
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, c.host);
    req.set(http::field::user_agent, "gpupool");
    if (!c.token.empty()) req.set(http::field::authorization, "Bearer " + c.token);
    req.set(http::field::content_type, "application/json");
    req.keep_alive(true);
    req.body() = body;
    req.prepare_payload();
    http::response_parser<http::string_body> parser;
    parser.body_limit(max_response);
    beast::error_code ec = c.Exchange(req, parser, limit);
    if (ec) {
      c.Drop();
      if (attempt == 0 && (ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
                           ec == asio::error::broken_pipe || ec == ssl::error::stream_truncated)) {
        continue;  // the kept-alive connection had closed: once more on a fresh one
      }
      if (ec == http::error::body_limit) {
        return Error(StatusCode::kTooLarge, fmt::format("{} {}: the answer is over {} bytes", method, target, max_response));
      }
      if (ec == beast::error::timeout) {
        return Error(StatusCode::kFailedPrecondition, fmt::format("{} {}: no answer within {}", method, target, FormatMillis(timeout)));
      }
      return Error(StatusCode::kFailedPrecondition, fmt::format("{} {}: {}", method, target, ec.message()));
    }
    auto& res = parser.get();
    HttpResponse out{.status = static_cast<int>(res.result_int()), .body = std::move(res.body())};
    for (const char* name : {"Location", "X-Gpupool-Leader", "X-Gpupool-Role", "X-Gpupool-Epoch", "Retry-After"}) {
      if (auto it = res.find(name); it != res.end()) out.headers.emplace_back(name, std::string(it->value()));
    }
    if (!res.keep_alive()) c.Drop();
    return out;
  }
  return Error(StatusCode::kFailedPrecondition, "unreachable");
}

struct AsyncHttpClient::Impl : std::enable_shared_from_this<AsyncHttpClient::Impl> {
  explicit Impl(asio::io_context& context) : io(context) {}
  asio::io_context& io;
  std::string host;
  tcp::endpoint endpoint;
  std::string token;
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
  bool busy = false;
  uint64_t generation = 0;  // bumped by Close: answers of an older connection are dropped

  struct Op {
    http::request<http::string_body> req;
    std::optional<http::response_parser<http::string_body>> parser;
    Done done;
    void NewParser() {
      parser.emplace();
      parser->body_limit(64u << 20);
    }
    std::chrono::milliseconds limit{0};
    int attempt = 0;
    std::string what;
    uint64_t generation = 0;
  };

  void Finish(const std::shared_ptr<Op>& op, Result<HttpResponse> r) {
    busy = false;
    Done done = std::move(op->done);
    done(std::move(r));
  }

  void Fail(const std::shared_ptr<Op>& op, beast::error_code ec, bool connecting) {
    stream.reset();
    buffer.clear();
    if (!connecting && op->attempt == 0 &&
        (ec == http::error::end_of_stream || ec == asio::error::connection_reset || ec == asio::error::broken_pipe)) {
      ++op->attempt;  // the kept-alive connection had closed: once more on a fresh one
      op->NewParser();
      return Start(op);
    }
    if (ec == beast::error::timeout) {
      return Finish(op, Error(StatusCode::kFailedPrecondition, fmt::format("{}: no answer within {} ms", op->what, op->limit.count())));
    }
    if (connecting && ec == asio::error::connection_refused) {
      return Finish(op, Error(StatusCode::kUnavailable, fmt::format("cannot reach the server at {}: {}", host, ec.message())));
    }
    Finish(op, Error(StatusCode::kFailedPrecondition, fmt::format("{}: {}", op->what, ec.message())));
  }

  void Start(const std::shared_ptr<Op>& op) {
    auto self = shared_from_this();
    if (!stream) {
      stream.emplace(io);
      stream->expires_after(op->limit);
      stream->async_connect(endpoint, [self, op](beast::error_code ec) {
        if (op->generation != self->generation) return;
        if (ec) return self->Fail(op, ec, true);
        beast::error_code ignored;
        self->stream->socket().set_option(tcp::no_delay(true), ignored);
        self->Write(op);
      });
      return;
    }
    Write(op);
  }

  void Write(const std::shared_ptr<Op>& op) {
    auto self = shared_from_this();
    stream->expires_after(op->limit);
    http::async_write(*stream, op->req, [self, op](beast::error_code ec, size_t) {
      if (op->generation != self->generation) return;
      if (ec) return self->Fail(op, ec, false);
      http::async_read(*self->stream, self->buffer, *op->parser, [self, op](beast::error_code e2, size_t) {
        if (op->generation != self->generation) return;
        if (e2) return self->Fail(op, e2, false);
        self->stream->expires_never();
        auto& res = op->parser->get();
        HttpResponse out{.status = static_cast<int>(res.result_int()), .body = std::move(res.body())};
        if (!res.keep_alive()) self->stream.reset();
        self->Finish(op, std::move(out));
      });
    });
  }
};

AsyncHttpClient::AsyncHttpClient() = default;
AsyncHttpClient::~AsyncHttpClient() {
  if (impl_) {
    ++impl_->generation;
    if (impl_->stream) impl_->stream->cancel();
  }
}

Result<std::unique_ptr<AsyncHttpClient>> AsyncHttpClient::Create(EventLoop& loop, const std::string& base, std::string token) {
  if (base.starts_with("https://")) {
    return InvalidArgument(fmt::format("{}: this client speaks plain HTTP (over loopback, or to a server with --insecure-http)", base));
  }
  auto hp = SplitHostPort(base);
  if (!hp) return tl::unexpected(hp.error());
  beast::error_code ec;
  tcp::resolver resolver(loop.impl_->io);
  auto endpoints = resolver.resolve(hp->first, hp->second, ec);
  if (ec || endpoints.empty()) return Error(StatusCode::kNotFound, fmt::format("cannot resolve {}: {}", hp->first, ec.message()));
  auto c = std::unique_ptr<AsyncHttpClient>(new AsyncHttpClient());
  c->impl_ = std::make_shared<Impl>(loop.impl_->io);
  c->impl_->host = hp->first + ":" + hp->second;
  c->impl_->endpoint = endpoints.begin()->endpoint();
  c->impl_->token = std::move(token);
  return c;
}

void AsyncHttpClient::set_token(std::string token) { impl_->token = std::move(token); }
bool AsyncHttpClient::busy() const { return impl_->busy; }

void AsyncHttpClient::Close() {
  Impl& c = *impl_;
  ++c.generation;
  c.stream.reset();
  c.buffer.clear();
  c.busy = false;
}

void AsyncHttpClient::Call(std::string method, std::string target, std::string body, Millis timeout, Done done) {
  Impl& c = *impl_;
  if (c.busy) {
    asio::post(c.io, [done = std::move(done), target] {
      done(Error(StatusCode::kFailedPrecondition, fmt::format("{}: a request is already in flight on this connection", target)));
    });
    return;
  }
  c.busy = true;
  auto op = std::make_shared<Impl::Op>();
  op->req = http::request<http::string_body>{http::string_to_verb(method), target, 11};
  op->req.set(http::field::host, c.host);
  op->req.set(http::field::user_agent, "gpupool");
  if (!c.token.empty()) op->req.set(http::field::authorization, "Bearer " + c.token);
  op->req.set(http::field::content_type, "application/json");
  op->req.keep_alive(true);
  op->req.body() = std::move(body);
  op->req.prepare_payload();
  op->NewParser();
  op->done = std::move(done);
  op->limit = std::chrono::milliseconds(timeout.value());
  op->what = method + " " + target;
  op->generation = c.generation;
  c.Start(op);
}

}  // namespace gp
