// The REST API (docs/api.md) over the Controller: routing, bearer-token checks, status codes,
// and the agents' long-poll heartbeats. Runs on the event loop's thread, as the Controller does.
#pragma once

#include <absl/container/btree_map.h>
#include <absl/container/btree_set.h>

#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "adapters/http.h"
#include "controller/access.h"
#include "controller/controller.h"

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace gp {

struct ApiOptions {
  std::string admin_token;
  std::string join_token;
  std::string event_source = "gpupool";  // CloudEvents `source` (the server's name or address)
  std::filesystem::path web_dir;          // the dashboard's built files (web/dist); empty: none
  Millis max_poll{2'000};  // the longest a heartbeat is held
  size_t body_limit = 1 << 20;  // request bodies, except checkpoint uploads (the controller's limit)
  // Past this many heartbeats waiting to be handled, a node's next one is held at its header
  // (its body left in the kernel) until the queue has room: back-pressure on the fleet. 0: no
  // limit (the default until its effect on a loaded server's liveness is understood).
  size_t max_queued_heartbeats = 0;
  // /metrics repeats every GPU's series (dcgm-exporter's) for fleets of at most this many
  // nodes; past it they come from the agents' own /metrics (8 GPUs a node: 10,000 nodes
  // would be 480,000 series, 54 MB a scrape). Every node's own series stay.
  size_t metrics_gpu_series_nodes = 1'000;
  // When set, /metrics wants this bearer token (or the admin's): for deployments where node
  // and tenant names are themselves sensitive. Empty: Prometheus scrapes without one.
  std::string metrics_token;
  // TLS: the CA that vouches for this server (GET /v1/ca, for agents that check it against
  // their join token's hash) and the signer of nodes' client certificates (a CSR for a node;
  // unset: none are issued).
  std::string ca_pem;
  std::function<Result<std::string>(const std::string& node, const std::string& csr_pem)> sign_node_certificate;
};

class Api {
 public:
  Api(Controller& controller, EventLoop& loop, ApiOptions options);
  void Handle(HttpRequest request, Respond respond);
  // Decides on a request from its header alone, before its body is read (EventLoop::Listen):
  // unauthenticated requests are refused here, so their bodies are never read or reserved.
  Admission Admit(const RequestHead& head) const;
  // Runs a scheduling pass soon (coalesced): after anything that may change a placement.
  void Poke();
  // A one-time sign-in code for the dashboard link the server prints (`/?code=CODE`): used once,
  // within 15 minutes, it becomes the session cookie, so the admin token itself is never shown.
  std::string IssueLoginCode();
  // Called when new events are in the store (an event sink's wake-up).
  void AddEventListener(std::function<void()> fn) { event_listeners_.push_back(std::move(fn)); }
  // More series for /metrics (an event sink's progress).
  void AddMetrics(std::function<void(Families&)> fn) { metric_sources_.push_back(std::move(fn)); }
  // GET /v1/offers: the autoscaler's view (offers, nodes held, blocked scopes); unset: the
  // fleet's offers alone.
  std::function<std::string()> offers;

 private:
  // Who is calling: nobody, an agent that has only the join token (it may register), a node
  // (its own credential, issued at registration), or the administrator.
  struct Caller {
    enum class Kind { kNone, kJoin, kNode, kAdmin, kTenant } kind = Kind::kNone;
    std::string node;
    std::string tenant;        // kTenant: its tenant
    Role role = Role::kUser;   // kTenant: user or viewer
    std::string token_id;      // kTenant: which token
    std::string token_name;    // kTenant: whom it was made for
  };
  // The actor of a user's change (Controller::set_actor): JSON, "" for agents and nobody.
  static std::string ActorOf(const Caller& caller);
  // Why a tenant's token may not make this request ("" if it may): users submit and cancel
  // their tenant's jobs and read; viewers only read; the rest is the admin's.
  static std::string TenantMayNot(const Caller& caller, const std::string& method, const std::vector<std::string_view>& path);
  // Whether the event is about a job of `tenant` (what a tenant's event stream shows).
  bool EventOfTenant(const EventRecord& e, const std::string& tenant) const;
  // Events after `since` for `caller` (a tenant's: its own jobs' only, reading on past pages
  // of others'), and the last sequence looked at.
  Result<std::pair<Events, uint64_t>> EventsFor(const Caller& caller, uint64_t since, size_t limit) const;
  void AccessRoute(const HttpRequest& r, const Caller& caller, const std::vector<std::string_view>& p, Respond& respond);
  Caller Identify(std::string_view authorization, std::string_view cookie) const;
  Caller TenantCaller(std::string_view token) const;  // a tenant's token, or kNone
  // Why `caller` may not call `path` ("" if it may): each credential opens its own endpoints.
  std::string Forbidden(const Caller& caller, std::string_view method, std::string_view path) const;
  void Route(const HttpRequest& r, const Caller& caller, Respond& respond);
  void HeartbeatRoute(const HttpRequest& r, const Caller& caller, Respond respond);
  // Over TLS a node's requests come with its client certificate, in force and its own: why
  // not ("" when they do), and the HTTP status to say it with.
  std::pair<int, std::string> NodeCertificateRefused(const HttpRequest& r, const Caller& caller);
  // Signs `csr` for `node` and records it: {"certificate": PEM}.
  Result<std::string> IssueNodeCertificate(const std::string& node, const std::string& csr);
  void DrainBeats();
  void HandleBeat(const std::string& body, const std::string& caller_node, Respond respond);
  struct PendingBeat {
    std::string body;
    std::string node;  // the caller's, by its credential
    Respond respond;
  };
  static constexpr int kBeatsPerTurn = 64;
  // Past options_.max_queued_heartbeats waiting, a node's next heartbeat is held at its header
  // (the node's silence is the server's, as for a queued one) and its body left in the kernel
  // until the queue has room: 10,000 nodes reporting at once cost their headers, not bodies.
  mutable std::deque<std::function<void()>> held_beats_;  // connections to resume, oldest first
  prometheus::Counter* beats_held_ = nullptr;
  std::deque<PendingBeat> beats_;
  bool draining_ = false;
  // The heartbeat's answer once its news is stored: at once when there is work (or the agent
  // asked not to wait), else held (long poll) until work arrives or the wait ends.
  void Answer(const std::string& node, int wait_ms, const HeartbeatReply& reply, Respond respond);
  HttpResponse CheckpointFile(JobId id, int task) const;
  void Wake(const std::string& node);

  std::string Metrics() const;
  // The dashboard: `/` (the page, or a login form), `/?token=` and POST /login (the token
  // exchanged for an HttpOnly cookie), `/assets/...` (scripts and styles, no data).
  bool WebRoute(const HttpRequest& r, const Respond& respond) const;
  std::string CookieToken(std::string_view cookie) const;
  // GET /v1/events?since=N&limit=L&wait=D: NDJSON, one CloudEvent per line.
  void EventsRoute(const HttpRequest& r, const Caller& caller, Respond respond);
  void AnswerEventWaiters();
  struct EventWaiter {
    uint64_t since = 0;
    size_t limit = 0;
    Caller caller;
    Respond respond;
    std::function<void()> cancel_timer;
  };
  std::map<uint64_t, EventWaiter> event_waiters_;
  std::vector<std::function<void()>> event_listeners_;
  std::vector<std::function<void(Families&)>> metric_sources_;
  uint64_t next_waiter_ = 0;

  Controller& c_;
  EventLoop& loop_;
  // Histograms of the controller's hooks; everything else is read at scrape time.
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  prometheus::Histogram* decision_seconds_ = nullptr;
  prometheus::Histogram* detection_seconds_ = nullptr;
  prometheus::Histogram* pass_jobs_ = nullptr;
  ApiOptions options_;
  bool tick_pending_ = false;
  bool commit_pending_ = false;  // a group commit is posted for this loop turn
  struct Parked {
    Respond respond;
    int64_t deadline_ms = 0;  // steady clock: answered (with nothing) then
  };
  // B-trees: one entry a parked node, 10,000 at fleet scale (about half std::map's bytes).
  absl::btree_map<std::string, Parked> parked_;
  absl::btree_set<std::pair<int64_t, std::string>> due_;  // parked polls by deadline
  std::set<std::string> woken_;                      // parked polls whose node has work now
  // The connection each node's last heartbeat came on: asked, before the node is declared
  // down, whether its next heartbeat already waits there unread (Controller::node_speaking).
  absl::btree_map<std::string, std::weak_ptr<const HttpConnection>> links_;
  static constexpr Millis kPollTick{10};             // how often due polls are looked for
  // A heartbeat reply as sent: with the controller's epoch.
  std::string ReplyText(HeartbeatReply reply) const;
  void Unpark(const std::string& node, bool always);
  void ScheduleDrain();
  static int64_t SteadyMs();
  mutable std::map<std::string, int64_t> login_codes_;  // code -> when it was issued (steady ms); used up by WebRoute
};

}  // namespace gp
