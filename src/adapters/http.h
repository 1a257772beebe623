// HTTP/1.1 over Boost.Beast, kept in one translation unit (http.cc) behind this header.
// EventLoop: one thread runs every handler and timer, so the controller needs no locks.
// HttpServer: async accept and read on that loop; a handler may answer later (long poll).
// HttpClient: a blocking client with a kept-alive connection, for the CLI and the agent.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/quantity.h"
#include "core/status.h"

namespace gp {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // "/v1/jobs/12"
  std::map<std::string, std::string> query;
  std::string body;
  std::string authorization;
  std::string cookie;        // the Cookie header, as sent
  std::string content_type;  // of the body
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // more (Set-Cookie, Location, ...)
};

using Respond = std::function<void(HttpResponse)>;

// How big a request body may be: `normal`, or `large` for targets under `large_prefix` (uploads
// such as checkpoint archives). The limit is chosen once the request's header is read.
struct BodyLimits {
  BodyLimits(size_t n = 1 << 20) : normal(n) {}  // NOLINT: a plain size is the common case
  BodyLimits(size_t n, std::string prefix, size_t big) : normal(n), large_prefix(std::move(prefix)), large(big) {}
  size_t normal;
  std::string large_prefix;
  size_t large = 0;
};
using HttpHandler = std::function<void(HttpRequest, Respond)>;

class EventLoop {
 public:
  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Serves HTTP on "ADDR:PORT" (port 0 picks a free one); returns the bound port. Requests
  // with bodies over their limit get 413. Handlers run on the loop thread.
  Result<uint16_t> Listen(const std::string& listen, HttpHandler handler, BodyLimits limits);
  // Runs fn on the loop thread after `delay`; the returned function cancels it.
  std::function<void()> After(Millis delay, std::function<void()> fn);
  void Every(Millis period, std::function<void()> fn);
  void OnSignals(std::function<void(int)> fn);  // SIGINT, SIGTERM
  void Run();
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class HttpClient {
 public:
  // base: "http://127.0.0.1:7070" or "127.0.0.1:7070".
  static Result<HttpClient> Create(const std::string& base, std::string token);
  HttpClient(HttpClient&&) noexcept;
  HttpClient& operator=(HttpClient&&) noexcept;
  ~HttpClient();
  // One request; reconnects once if the kept-alive connection was closed.
  Result<HttpResponse> Call(const std::string& method, const std::string& target, const std::string& body = "",
                            Millis timeout = Millis{30'000});

 private:
  HttpClient();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Percent-decoding of a query component ("a%20b" -> "a b").
std::string UrlDecode(std::string_view s);
// "a=1&b=x%20y" (a query string or an application/x-www-form-urlencoded body) -> {a: 1, b: x y}.
std::map<std::string, std::string> ParseForm(std::string_view text);

}  // namespace gp
