// A client of etcd v3 over its JSON gateway (POST /v3/kv/range, /v3/kv/txn, /v3/lease/...), on
// plain HTTP: no gRPC. Keys and values travel base64-encoded and 64-bit numbers as strings, as
// the gateway wants them. Endpoints are several members ("h1:2379,h2:2379,h3:2379"): a member
// that refuses the connection, or fails the request (a leader change under way, a member
// without quorum), has the request sent to the next, round again until the call's deadline.
// Retrying is safe for what gpupool sends: puts of whole records, range deletes, and
// transactions guarded by a compare. Blocking; one caller thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/http.h"
#include "core/quantity.h"
#include "core/status.h"

namespace gp {

struct EtcdKv {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t lease = 0;
};

// One operation of a transaction.
struct EtcdOp {
  enum class Kind { kPut, kDeleteRange, kRange };
  Kind kind = Kind::kPut;
  std::string key;
  std::string value;      // kPut
  std::string range_end;  // kDeleteRange/kRange: [key, range_end); empty: the key alone
  int64_t lease = 0;      // kPut

  static EtcdOp Put(std::string key, std::string value, int64_t lease = 0) {
    return EtcdOp{.kind = Kind::kPut, .key = std::move(key), .value = std::move(value), .lease = lease};
  }
  static EtcdOp Delete(std::string key, std::string range_end = "") {
    return EtcdOp{.kind = Kind::kDeleteRange, .key = std::move(key), .range_end = std::move(range_end)};
  }
  static EtcdOp Get(std::string key) { return EtcdOp{.kind = Kind::kRange, .key = std::move(key)}; }
};

// A transaction's condition: the key's create revision equals `create_revision` (0: the key
// does not exist). The one compare gpupool needs: "the leader key is still the one I created".
struct EtcdCreated {
  std::string key;
  int64_t create_revision = 0;
};

struct EtcdRange {
  std::vector<EtcdKv> kvs;
  bool more = false;
  int64_t count = 0;
  int64_t revision = 0;  // of the store when it was read
};

struct EtcdTxnResult {
  bool succeeded = false;
  int64_t revision = 0;
  std::vector<EtcdRange> ranges;  // the kRange operations' answers, in order
};

struct EtcdRangeOptions {
  std::string range_end;  // empty: the key alone
  int64_t limit = 0;      // 0: all
  int64_t revision = 0;   // 0: the newest; else a snapshot at that revision
  bool descend = false;   // by key
  bool count_only = false;
};

class EtcdClient {
 public:
  // `endpoints`: "h1:p1,h2:p2" (an http:// prefix is allowed). `timeout`: the most one call
  // waits, over every member it tries.
  static Result<std::unique_ptr<EtcdClient>> Connect(const std::string& endpoints, Millis timeout = Millis{5'000});

  Result<EtcdRange> Range(const std::string& key, const EtcdRangeOptions& o = {});
  Result<int64_t> Put(const std::string& key, const std::string& value, int64_t lease = 0);  // the revision
  Result<EtcdTxnResult> Txn(const std::vector<EtcdCreated>& compare, const std::vector<EtcdOp>& success,
                            const std::vector<EtcdOp>& failure = {});
  Result<int64_t> LeaseGrant(int64_t ttl_s);       // the lease's id
  Result<int64_t> LeaseKeepAlive(int64_t id);      // the TTL left after it (0: the lease is gone)
  Status LeaseRevoke(int64_t id);
  Status Compact(int64_t revision);                // drops the history before `revision`
  Result<int64_t> DbSize();                        // bytes, of the member answering
  Status Defragment();                             // of the member answering

  // The end of a range covering every key that starts with `prefix` (etcd's prefix range).
  static std::string PrefixEnd(std::string_view prefix);
  const std::string& endpoints() const { return endpoints_; }
  Millis timeout() const { return timeout_; }

 private:
  EtcdClient(HttpClient http, std::string endpoints, Millis timeout)
      : http_(std::move(http)), endpoints_(std::move(endpoints)), timeout_(timeout) {}
  // POSTs `body` to `path`, sending it to the next member on a refused connection or an answer
  // that says the member cannot serve now; the parsed JSON answer's text.
  Result<std::string> Post(const std::string& path, const std::string& body);

  HttpClient http_;
  std::string endpoints_;
  Millis timeout_;
};

}  // namespace gp
