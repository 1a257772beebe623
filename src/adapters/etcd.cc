#include "adapters/etcd.h"

#include <fmt/format.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "wire/codec.h"

namespace gp {

using Json = nlohmann::json;

namespace {

std::string B64(std::string_view s) { return Base64Encode(s); }

// A 64-bit number as the gateway sends it: a string, or absent for zero.
int64_t Num(const Json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return 0;
  if (it->is_string()) {
    try {
      return std::stoll(it->get<std::string>());
    } catch (...) {
      return 0;
    }
  }
  if (it->is_number_integer()) return it->get<int64_t>();
  return 0;
}

Result<std::string> Unb64(const Json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || !it->is_string()) return std::string();
  auto d = Base64Decode(it->get<std::string>());
  if (!d) return Error(StatusCode::kFailedPrecondition, fmt::format("etcd: field '{}' is not base64", name));
  return *d;
}

Result<EtcdRange> ParseRange(const Json& j) {
  EtcdRange r;
  r.count = Num(j, "count");
  r.more = j.value("more", false);
  if (auto h = j.find("header"); h != j.end() && h->is_object()) r.revision = Num(*h, "revision");
  if (auto kvs = j.find("kvs"); kvs != j.end() && kvs->is_array()) {
    for (const Json& kv : *kvs) {
      auto key = Unb64(kv, "key");
      if (!key) return tl::unexpected(key.error());
      auto value = Unb64(kv, "value");
      if (!value) return tl::unexpected(value.error());
      r.kvs.push_back(EtcdKv{.key = std::move(*key), .value = std::move(*value), .create_revision = Num(kv, "create_revision"),
                             .mod_revision = Num(kv, "mod_revision"), .lease = Num(kv, "lease")});
    }
  }
  return r;
}

Json OpJson(const EtcdOp& op) {
  switch (op.kind) {
    case EtcdOp::Kind::kPut: {
      Json p{{"key", B64(op.key)}, {"value", B64(op.value)}};
      if (op.lease != 0) p["lease"] = std::to_string(op.lease);
      return Json{{"request_put", p}};
    }
    case EtcdOp::Kind::kDeleteRange: {
      Json d{{"key", B64(op.key)}};
      if (!op.range_end.empty()) d["range_end"] = B64(op.range_end);
      return Json{{"request_delete_range", d}};
    }
    case EtcdOp::Kind::kRange: {
      Json g{{"key", B64(op.key)}};
      if (!op.range_end.empty()) g["range_end"] = B64(op.range_end);
      return Json{{"request_range", g}};
    }
  }
  return Json::object();
}

}  // namespace

Result<std::unique_ptr<EtcdClient>> EtcdClient::Connect(const std::string& endpoints, Millis timeout) {
  auto http = HttpClient::Create(endpoints, "");
  if (!http) return tl::unexpected(Status(http.error().code(), "etcd endpoints: " + http.error().message()));
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(*http), endpoints, timeout));
}

std::string EtcdClient::PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

Result<std::string> EtcdClient::Post(const std::string& path, const std::string& body) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_.value());
  Status last(StatusCode::kUnavailable, "etcd: no member answered");
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    // One member at a time gets at most 2 s: a member cut off from its peers answers late or not.
    auto res = http_.Call("POST", path, body, Millis{std::min<int64_t>(left, 2'000)}, 64u << 20);
    if (res && res->status == 200) return std::move(res->body);
    if (res && res->status < 500) {
      // A request the store refuses (too large, too many operations, a bad field): no member
      // will take it.
      const Json e = Json::parse(res->body, nullptr, false);
      const std::string msg = e.is_object() && e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>()
                                                                                                 : res->body.substr(0, 300);
      return Error(StatusCode::kInvalidArgument, fmt::format("etcd {}: HTTP {}: {}", path, res->status, msg));
    }
    last = res ? Status(StatusCode::kUnavailable, fmt::format("etcd {} at {}: HTTP {}: {}", path, http_.server(), res->status,
                                                              res->body.substr(0, 300)))
               : Status(StatusCode::kUnavailable, fmt::format("etcd {}: {}", path, res.error().message()));
    http_.Failover();  // a member without a leader, or gone mid-request: the next one
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return tl::unexpected(last);
}

Result<EtcdRange> EtcdClient::Range(const std::string& key, const EtcdRangeOptions& o) {
  Json req{{"key", B64(key)}};
  if (!o.range_end.empty()) req["range_end"] = B64(o.range_end);
  if (o.limit > 0) req["limit"] = std::to_string(o.limit);
  if (o.revision > 0) req["revision"] = std::to_string(o.revision);
  if (o.descend) {
    req["sort_order"] = "DESCEND";
    req["sort_target"] = "KEY";
  }
  if (o.count_only) req["count_only"] = true;
  auto body = Post("/v3/kv/range", req.dump());
  if (!body) return tl::unexpected(body.error());
  const Json j = Json::parse(*body, nullptr, false);
  if (!j.is_object()) return Error(StatusCode::kFailedPrecondition, "etcd range: the answer is not JSON");
  return ParseRange(j);
}

Result<int64_t> EtcdClient::Put(const std::string& key, const std::string& value, int64_t lease) {
  Json req{{"key", B64(key)}, {"value", B64(value)}};
  if (lease != 0) req["lease"] = std::to_string(lease);
  auto body = Post("/v3/kv/put", req.dump());
  if (!body) return tl::unexpected(body.error());
  const Json j = Json::parse(*body, nullptr, false);
  if (!j.is_object() || !j.contains("header")) return Error(StatusCode::kFailedPrecondition, "etcd put: the answer is not JSON");
  return Num(j["header"], "revision");
}

Result<EtcdTxnResult> EtcdClient::Txn(const std::vector<EtcdCreated>& compare, const std::vector<EtcdOp>& success,
                                      const std::vector<EtcdOp>& failure) {
  Json req = Json::object();
  Json cmp = Json::array();
  for (const EtcdCreated& c : compare) {
    // create_revision 0 is omitted by the gateway's own encoding, and read back as 0.
    cmp.push_back(Json{{"result", "EQUAL"}, {"target", "CREATE"}, {"key", B64(c.key)}, {"create_revision", std::to_string(c.create_revision)}});
  }
  req["compare"] = cmp;
  Json ok = Json::array();
  for (const EtcdOp& op : success) ok.push_back(OpJson(op));
  req["success"] = ok;
  Json no = Json::array();
  for (const EtcdOp& op : failure) no.push_back(OpJson(op));
  req["failure"] = no;
  auto body = Post("/v3/kv/txn", req.dump());
  if (!body) return tl::unexpected(body.error());
  const Json j = Json::parse(*body, nullptr, false);
  if (!j.is_object()) return Error(StatusCode::kFailedPrecondition, "etcd txn: the answer is not JSON");
  EtcdTxnResult r;
  r.succeeded = j.value("succeeded", false);
  if (auto h = j.find("header"); h != j.end() && h->is_object()) r.revision = Num(*h, "revision");
  if (auto rs = j.find("responses"); rs != j.end() && rs->is_array()) {
    for (const Json& one : *rs) {
      if (auto g = one.find("response_range"); g != one.end()) {
        auto range = ParseRange(*g);
        if (!range) return tl::unexpected(range.error());
        r.ranges.push_back(std::move(*range));
      }
    }
  }
  return r;
}

Result<int64_t> EtcdClient::LeaseGrant(int64_t ttl_s) {
  auto body = Post("/v3/lease/grant", Json{{"TTL", std::to_string(ttl_s)}}.dump());
  if (!body) return tl::unexpected(body.error());
  const Json j = Json::parse(*body, nullptr, false);
  if (!j.is_object() || Num(j, "ID") == 0) return Error(StatusCode::kFailedPrecondition, "etcd lease grant: no lease in the answer");
  return Num(j, "ID");
}

Result<int64_t> EtcdClient::LeaseKeepAlive(int64_t id) {
  auto body = Post("/v3/lease/keepalive", Json{{"ID", std::to_string(id)}}.dump());
  if (!body) return tl::unexpected(body.error());
  const Json j = Json::parse(*body, nullptr, false);
  if (!j.is_object() || !j.contains("result") || !j["result"].is_object()) {
    return Error(StatusCode::kFailedPrecondition, "etcd lease keepalive: no result in the answer");
  }
  return Num(j["result"], "TTL");  // absent (0): the lease expired or was revoked
}

Status EtcdClient::LeaseRevoke(int64_t id) {
  auto body = Post("/v3/lease/revoke", Json{{"ID", std::to_string(id)}}.dump());
  return body ? Status::Ok() : body.error();
}

Status EtcdClient::Compact(int64_t revision) {
  auto body = Post("/v3/kv/compaction", Json{{"revision", std::to_string(revision)}}.dump());
  return body ? Status::Ok() : body.error();
}

Result<int64_t> EtcdClient::DbSize() {
  auto body = Post("/v3/maintenance/status", "{}");
  if (!body) return tl::unexpected(body.error());
  const Json j = Json::parse(*body, nullptr, false);
  if (!j.is_object()) return Error(StatusCode::kFailedPrecondition, "etcd status: the answer is not JSON");
  return Num(j, "dbSize");
}

Status EtcdClient::Defragment() {
  auto body = Post("/v3/maintenance/defragment", "{}");
  return body ? Status::Ok() : body.error();
}

}  // namespace gp
