// HTTP/1.1 over Boost.Beast, kept in one translation unit (http.cc) behind this header.
// EventLoop: one thread runs every handler and timer, so the controller needs no locks.
// HttpServer: async accept and read on that loop; a handler may answer later (long poll).
// HttpClient: a blocking client with a kept-alive connection, for the CLI and the agent.
// AsyncHttpClient: a client on an EventLoop (one kept-alive connection, one request at a
// time), for many agents in one process (gpupool hollow).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/quantity.h"
#include "core/status.h"

namespace gp {

// The connection a request came on, as its handler may ask of it afterwards (held as a
// weak_ptr: it ends with the connection).
class HttpConnection {
 public:
  virtual ~HttpConnection() = default;
  // More from the client waits on this connection: bytes in the kernel's socket buffer that
  // the server has not read yet, or read and not yet parsed. A server whose loop is behind can
  // tell a client that is silent from one it has not yet listened to.
  virtual bool InputWaiting() const = 0;
};

// The client certificate a TLS connection presented, verified against the listener's client
// CA (mutual TLS): a node's. Its validity in time is the handler's to judge (an expired one
// is let through the handshake so that the answer can say why it is refused).
struct PeerCert {
  std::string common_name;
  std::string serial;  // hex
  int64_t not_after_ms = 0;
};

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // "/v1/jobs/12"
  std::map<std::string, std::string> query;
  std::string body;
  // A body the admission asked to spool (Admission::spool) is in this file instead of `body`;
  // the server removes the file once the answer is written, so a handler that keeps it renames it.
  std::filesystem::path body_file;
  uint64_t body_size = 0;  // of body or body_file
  std::string authorization;
  std::string cookie;        // the Cookie header, as sent
  std::string content_type;  // of the body
  std::weak_ptr<const HttpConnection> connection;
  bool tls = false;                       // it came over TLS
  std::shared_ptr<const PeerCert> peer;   // and with this client certificate (null: none)
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // more (Set-Cookie, Location, ...)
  // Sent from this file instead of `body` (a checkpoint archive): streamed, never read whole.
  std::filesystem::path body_file;
};

using Respond = std::function<void(HttpResponse)>;

// What the server knows of a request once its header is read, before any byte of its body.
struct RequestHead {
  std::string_view method;
  std::string_view target;
  std::string_view authorization;
  std::string_view cookie;
  std::optional<uint64_t> content_length;
  bool tls = false;
};

// The handler's word on a request before its body is read (as nginx's auth_request and
// client_max_body_size are applied before the body): refuse it now (401, 413, ...), so that an
// unauthenticated client never makes the server read or reserve its body; or read a body of at
// most `body_limit` bytes, in memory or, with `spool`, streamed to a file.
struct Admission {
  std::optional<HttpResponse> refuse;
  size_t body_limit = 1 << 20;
  bool spool = false;
  // Back-pressure: the body is read later. The connection calls `hold` with a function that
  // resumes it and reads nothing more until that is called (on the loop's thread): the rest of
  // the body waits in the kernel's socket buffer, not in the server's memory.
  std::function<void(std::function<void()> resume)> hold;
  // With `hold`: called if the connection ends (or its body is refused) after the hold and
  // before the request reaches the handler, so that whoever counted it as arrived knows.
  std::function<void()> dropped;
};
using AdmitFn = std::function<Admission(const RequestHead&)>;

// Limits that answer as HTTP does.
struct ServerLimits {
  size_t max_target = 8 * 1024;    // a longer request line: 414
  size_t max_header = 16 * 1024;   // more header bytes: 431
  size_t max_connections = 0;      // open at once; past it new ones get 503. 0: from RLIMIT_NOFILE
  Millis header_timeout{15'000};   // a request's header, from its first byte or the last answer
  Millis body_timeout{120'000};    // its body
  std::filesystem::path spool_dir; // spooled bodies (Admission::spool); empty: the temp directory
};
using HttpHandler = std::function<void(HttpRequest, Respond)>;

// TLS on a listener (OpenSSL through Boost.Asio), on the same port as plain HTTP: a connection
// whose first bytes are a TLS handshake gets TLS (Beast's detect_ssl), any other is plain HTTP,
// answered only when it came over loopback or with `plain_from_anywhere` (--insecure-http);
// from elsewhere it gets 400 saying to use HTTPS.
struct ServerTls {
  std::string cert_chain_pem;  // the server's certificate, then the CAs above it
  std::string key_pem;
  // Client certificates signed by this CA are taken (mutual TLS); a client need not send one.
  std::string client_ca_pem;
  bool plain_from_anywhere = false;
};

// TLS for a client: taken for https:// addresses.
struct ClientTls {
  std::string ca_pem;    // the CA that vouches for the server (its name is checked as well)
  std::string cert_pem;  // a client certificate (a node's) and its key; empty: none
  std::string key_pem;
  // Off only to fetch what the caller checks itself (a CA against the join token's hash).
  bool verify = true;
};

class EventLoop {
 public:
  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Serves HTTP on "ADDR:PORT" (port 0 picks a free one); returns the bound port. `admit` sees
  // each request's header first; requests with bodies over its limit get 413. Handlers run on
  // the loop thread; an exception out of one is answered with 500, never the server's end.
  // With `tls`, TLS and plain HTTP share the port (ServerTls).
  Result<uint16_t> Listen(const std::string& listen, HttpHandler handler, AdmitFn admit, ServerLimits limits = {},
                          std::optional<ServerTls> tls = std::nullopt);
  // Connections open now, over every listener.
  size_t open_connections() const;
  // Runs fn on the loop thread after `delay`; the returned function cancels it.
  std::function<void()> After(Millis delay, std::function<void()> fn);
  // Runs fn on the loop thread once the handlers already ready have run (no timer: one queue
  // entry). What those handlers did, fn sees whole: the end of one turn of the loop.
  void Post(std::function<void()> fn);
  void Every(Millis period, std::function<void()> fn);
  void OnSignals(std::function<void(int)> fn);  // SIGINT, SIGTERM
  void Run();
  void Stop();

 private:
  friend class AsyncHttpClient;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class HttpClient {
 public:
  // base: "http://127.0.0.1:7070" or "127.0.0.1:7070"; or several, comma-separated (a leader
  // and its standbys): see Call. "https://" on any of them: TLS to all, with `tls` (whose CA
  // must then be given, unless tls.verify is off).
  static Result<HttpClient> Create(const std::string& base, std::string token, ClientTls tls = {});
  HttpClient(HttpClient&&) noexcept;
  HttpClient& operator=(HttpClient&&) noexcept;
  ~HttpClient();
  // One request; reconnects once if the kept-alive connection was closed.
  // Answers over `max_response` bytes are refused (an error naming the limit).
  // With several servers, a call that one of them refused or passed on (a standby: 503 with
  // X-Gpupool-Role: follower, or 307 naming the leader in X-Gpupool-Leader) goes to the next or
  // to the leader named, round again while `timeout` lasts; what was sent and not answered is
  // never sent again.
  Result<HttpResponse> Call(const std::string& method, const std::string& target, const std::string& body = "",
                            Millis timeout = Millis{30'000}, size_t max_response = 256u << 20);
  std::string server() const;  // HOST:PORT the next call goes to
  size_t servers() const;      // how many were given (and learnt from redirects)
  // Off: once every server has refused or passed the call on, it fails at once (kUnavailable)
  // rather than going round again (an agent, which keeps its tasks' leases meanwhile).
  void set_wait_for_leader(bool wait);
  void Failover();             // the next call goes to the next server given
  bool tls() const;
  // Another client certificate (a rotated one) from the next connection on; the one open now
  // is closed.
  void set_client_certificate(std::string cert_pem, std::string key_pem);

 private:
  HttpClient();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// An asynchronous HTTP/1.1 client on an EventLoop's thread: one kept-alive connection, one
// request at a time (the caller waits for `done` before the next; a second call meanwhile is
// answered with an error). A connection the server closed is opened again once, as HttpClient
// does. Errors: kUnavailable when the server refused the connection (its process is down),
// kFailedPrecondition otherwise (a timeout among them, said so).
class AsyncHttpClient {
 public:
  using Done = std::function<void(Result<HttpResponse>)>;
  static Result<std::unique_ptr<AsyncHttpClient>> Create(EventLoop& loop, const std::string& base, std::string token);
  ~AsyncHttpClient();
  AsyncHttpClient(const AsyncHttpClient&) = delete;
  AsyncHttpClient& operator=(const AsyncHttpClient&) = delete;
  void set_token(std::string token);
  void Call(std::string method, std::string target, std::string body, Millis timeout, Done done);
  bool busy() const;
  void Close();  // drops the connection (a request in flight is answered with an error)

 private:
  AsyncHttpClient();
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Raises this process's soft limit on open files to its hard limit (a server's connections, a
// hollow fleet's sockets); returns the limit now in force (SIZE_MAX: none).
size_t RaiseOpenFileLimit();

// Whether `host` (a name or an address, as in HOST:PORT) is this machine's loopback: where
// plain HTTP stays allowed.
bool IsLoopbackHost(std::string_view host);

// Percent-decoding of a query component ("a%20b" -> "a b").
std::string UrlDecode(std::string_view s);
// "a=1&b=x%20y" (a query string or an application/x-www-form-urlencoded body) -> {a: 1, b: x y}.
std::map<std::string, std::string> ParseForm(std::string_view text);

}  // namespace gp
