#include "adapters/http.h"

#include <fmt/format.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>

#include "core/units.h"

namespace gp {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

Result<std::pair<std::string, std::string>> SplitHostPort(std::string text) {
  if (text.starts_with("http://")) text = text.substr(7);
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

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const HttpHandler& handler, const BodyLimits& limits)
      : stream_(std::move(socket)), handler_(handler), limits_(limits) {}

  void Start() { Read(); }

 private:
  void Read() {
    parser_.emplace();
    // The header parser checks Content-Length against the limit: the largest until the target
    // is known, then the target's own (OnHeader).
    limit_ = std::max(limits_.normal, limits_.large);
    parser_->body_limit(limit_);
    stream_.expires_after(std::chrono::seconds(120));
    http::async_read_header(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->OnHeader(ec);
    });
  }

  void OnHeader(beast::error_code ec) {
    if (ec) return OnRead(ec);
    const bool large = !limits_.large_prefix.empty() && parser_->get().target().starts_with(limits_.large_prefix);
    limit_ = large ? std::max(limits_.large, limits_.normal) : limits_.normal;
    parser_->body_limit(limit_);
    if (parser_->content_length() && *parser_->content_length() > limit_) return OnRead(http::error::body_limit);
    if (parser_->is_done()) return OnRead(ec);
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code e, size_t) {
      self->OnRead(e);
    });
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      // Answer, then read and discard what the client is still sending (up to 64 MiB, 10 s),
      // so it gets to read the 413 instead of a reset connection.
      draining_ = true;
      Write(HttpResponse{413, fmt::format(R"({{"error":"request body over {} bytes"}})", limit_)}, false);
      return;
    }
    if (ec) return;  // closed, timed out, or not HTTP: drop the connection
    const auto& req = parser_->get();
    HttpRequest r;
    r.method = std::string(req.method_string());
    ParseTarget(req.target(), r);
    r.body = req.body();
    r.authorization = std::string(req[http::field::authorization]);
    r.cookie = std::string(req[http::field::cookie]);
    r.content_type = std::string(req[http::field::content_type]);
    keep_alive_ = req.keep_alive();
    stream_.expires_never();  // a long poll may take a while; the handler answers when it can
    auto self = shared_from_this();
    handler_(std::move(r), [self](HttpResponse resp) {
      asio::post(self->stream_.get_executor(), [self, resp = std::move(resp)]() mutable {
        self->Write(std::move(resp), self->keep_alive_);
      });
    });
  }

  void Write(HttpResponse r, bool keep_alive) {
    auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(r.status), 11);
    res->set(http::field::server, "gpupool");
    res->set(http::field::content_type, r.content_type);
    for (const auto& [name, value] : r.headers) res->insert(name, value);
    res->keep_alive(keep_alive);
    res->body() = std::move(r.body);
    res->prepare_payload();
    http::async_write(stream_, *res, [self = shared_from_this(), res, keep_alive](beast::error_code ec, size_t) {
      if (ec) return;
      if (keep_alive) {
        self->Read();
      } else {
        beast::error_code ignored;
        self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
        if (self->draining_) {
          self->stream_.expires_after(std::chrono::seconds(10));
          self->Discard();
        }
      }
    });
  }

  void Discard() {
    discard_.resize(64 * 1024);
    stream_.async_read_some(asio::buffer(discard_), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->discarded_ += n;
      if (!ec && self->discarded_ < (64u << 20)) self->Discard();
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  const HttpHandler& handler_;
  const BodyLimits& limits_;  // owned by the event loop, which outlives its sessions
  size_t limit_ = 0;
  bool keep_alive_ = false;
  bool draining_ = false;
  std::vector<char> discard_;
  size_t discarded_ = 0;
};

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
  asio::io_context io{1};
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  std::vector<std::unique_ptr<HttpHandler>> handlers;
  std::vector<std::unique_ptr<BodyLimits>> limits;
  std::unique_ptr<asio::signal_set> signals;
  std::vector<std::shared_ptr<std::function<void()>>> ticks;

  void Accept(tcp::acceptor& a, const HttpHandler& h, const BodyLimits& lim) {
    a.async_accept([this, &a, &h, &lim](beast::error_code ec, tcp::socket s) {
      if (!ec) {
        s.set_option(tcp::no_delay(true));
        std::make_shared<Session>(std::move(s), h, lim)->Start();
      }
      if (a.is_open()) Accept(a, h, lim);
    });
  }
};

EventLoop::EventLoop() : impl_(std::make_unique<Impl>()) {}
EventLoop::~EventLoop() = default;

Result<uint16_t> EventLoop::Listen(const std::string& listen, HttpHandler handler, BodyLimits body_limits) {
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
  impl_->handlers.push_back(std::make_unique<HttpHandler>(std::move(handler)));
  impl_->limits.push_back(std::make_unique<BodyLimits>(std::move(body_limits)));
  impl_->Accept(*acceptor, *impl_->handlers.back(), *impl_->limits.back());
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

void EventLoop::Run() {
  auto guard = asio::make_work_guard(impl_->io);
  impl_->io.run();
}

void EventLoop::Stop() { impl_->io.stop(); }

struct HttpClient::Impl {
  asio::io_context io;
  std::string host;
  std::string port;
  std::string token;
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
};

HttpClient::HttpClient() : impl_(std::make_unique<Impl>()) {}
HttpClient::HttpClient(HttpClient&&) noexcept = default;
HttpClient& HttpClient::operator=(HttpClient&&) noexcept = default;
HttpClient::~HttpClient() = default;

Result<HttpClient> HttpClient::Create(const std::string& base, std::string token) {
  auto hp = SplitHostPort(base);
  if (!hp) return tl::unexpected(hp.error());
  HttpClient c;
  c.impl_->host = hp->first;
  c.impl_->port = hp->second;
  c.impl_->token = std::move(token);
  return c;
}

Result<HttpResponse> HttpClient::Call(const std::string& method, const std::string& target, const std::string& body,
                                      Millis timeout) {
  // Asynchronous operations run to completion on this client's own io_context: Beast enforces
  // a stream's timeout only on asynchronous operations, and a call must never hang on a server
  // that went away mid-request.
  Impl& c = *impl_;
  const auto limit = std::chrono::milliseconds(timeout.value());
  for (int attempt = 0; attempt < 2; ++attempt) {
    beast::error_code ec;
    auto run = [&] {
      c.io.restart();
      c.io.run();
    };
    if (!c.stream) {
      tcp::resolver resolver(c.io);
      auto endpoints = resolver.resolve(c.host, c.port, ec);
      if (ec) return Error(StatusCode::kNotFound, fmt::format("cannot resolve {}: {}", c.host, ec.message()));
      c.stream.emplace(c.io);
      c.stream->expires_after(limit);
      c.stream->async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) {
        ec = e;
        c.stream->expires_never();  // done: stop the timer, or run() would wait for it
      });
      run();
      if (ec) {
        c.stream.reset();
        return Error(ec == asio::error::connection_refused ? StatusCode::kUnavailable : StatusCode::kFailedPrecondition,
                     fmt::format("cannot reach the server at {}:{}: {}", c.host, c.port, ec.message()));
      }
      c.stream->socket().set_option(tcp::no_delay(true));
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
    parser.body_limit(256ull << 20);
    c.stream->expires_after(limit);
    http::async_write(*c.stream, req, [&](beast::error_code e, size_t) {
      ec = e;
      if (e) {
        c.stream->expires_never();
        return;
      }
      http::async_read(*c.stream, c.buffer, parser, [&](beast::error_code e2, size_t) {
        ec = e2;
        c.stream->expires_never();
      });
    });
    run();
    if (ec) {
      c.stream.reset();
      c.buffer.clear();
      if (attempt == 0 && (ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
                           ec == asio::error::broken_pipe)) {
        continue;  // the kept-alive connection had closed: once more on a fresh one
      }
      if (ec == beast::error::timeout) {
        return Error(StatusCode::kFailedPrecondition, fmt::format("{} {}: no answer within {}", method, target, FormatMillis(timeout)));
      }
      return Error(StatusCode::kFailedPrecondition, fmt::format("{} {}: {}", method, target, ec.message()));
    }
    auto& res = parser.get();
    HttpResponse out{.status = static_cast<int>(res.result_int()), .body = std::move(res.body())};
    if (!res.keep_alive()) c.stream.reset();
    return out;
  }
  return Error(StatusCode::kFailedPrecondition, "unreachable");
}

}  // namespace gp
