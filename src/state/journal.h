// Where the controller makes its records durable. A Put returns only once the record would
// survive a crash (the SQLite journal fsyncs its write-ahead log), so the controller
// acknowledges a job only after its write succeeded. Records are opaque JSON text
// (wire/ encodes them). Called from the controller's event loop only (PutJobsLater's `done`
// may come from the journal's own syncer thread).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace gp {

// A state change as an event (docs/events.md): numbered in the order the changes happened,
// and stored in the same transaction as the change it describes (an outbox), so a sink that
// delivers from the store after a crash misses nothing and invents nothing.
struct EventRecord {
  uint64_t seq = 0;
  int64_t time_ms = 0;
  std::string type;     // "job.placed", "node.down", "gpu.quarantined", ...
  std::string subject;  // "job/12", "node/a", "node/a/gpu/1"
  std::string data;     // a JSON object
};
using Events = std::vector<EventRecord>;

// What the pool used and paid for (docs/api.md, GET /v1/usage): a job attempt's GPU time on
// one node at that node's price, or the billed time of an acquired node that no job used
// ("idle": billed in whole increments after a minimum, as its offer says).
struct UsageRecord {
  int64_t start_ms = 0;  // wall clock
  int64_t end_ms = 0;
  std::string kind;      // "job" or "idle"
  std::string provider;
  std::string offer;     // "" for a node the pool did not acquire
  std::string tier;
  std::string tenant;    // the job's; "" for idle time
  std::string node;
  uint64_t job = 0;
  int64_t gpu_ms = 0;    // GPU-milliseconds (a share of a GPU counts as its part)
  int64_t usd_micro = 0;
};
// Usage summed over the records that ended at or after a time, grouped by the columns asked
// (provider, offer, tier, tenant, kind, node, and day: the UTC date a record ended,
// "2026-12-03"), in the order of those columns.
struct UsageTotal {
  std::vector<std::string> key;  // one value per column asked
  int64_t gpu_ms = 0;
  int64_t usd_micro = 0;
  int64_t records = 0;
};
inline constexpr const char* kUsageColumns[] = {"provider", "offer", "tier", "tenant", "kind", "node", "day"};
// "2026-12-03": the UTC date of a wall-clock time in ms.
std::string UtcDay(int64_t ms);

struct JournalContents {
  std::map<uint64_t, std::string> jobs;     // id -> JSON
  std::map<std::string, std::string> nodes; // name -> JSON
  std::map<std::string, std::string> meta;
  uint64_t last_event_seq = 0;
  uint64_t first_event_seq = 0;  // the oldest kept (0: none)
};

class Journal {
 public:
  virtual ~Journal() = default;
  // Each writes its records and the events given in one transaction.
  virtual Status PutJobs(const std::vector<std::pair<uint64_t, std::string>>& jobs, const Events& events) = 0;
  // As PutJobs, but the caller need not wait for the disk: `done` gets the outcome once the
  // write is durable (or failed). SqliteJournal writes the transaction now, in call order with
  // every other write, and calls `done` from its syncer thread after the fsync that covers it,
  // so the caller's thread goes on meanwhile. This default writes and syncs now and calls
  // `done` before it returns.
  using WriteDone = std::function<void(Status)>;
  virtual void PutJobsLater(std::vector<std::pair<uint64_t, std::string>> jobs, Events events, WriteDone done) {
    done(PutJobs(jobs, events));
  }
  virtual Status PutNode(std::string_view name, std::string_view json, const Events& events) = 0;
  virtual Status PutEvents(const Events& events) = 0;
  // An empty value removes the key.
  virtual Status PutMeta(std::string_view key, std::string_view value) = 0;
  virtual Result<JournalContents> Load() = 0;
  // Events with seq > after, oldest first, at most `limit`.
  virtual Result<Events> EventsAfter(uint64_t after, size_t limit) = 0;
  // Deletes the events numbered up to `up_to` (retention).
  virtual Status PruneEvents(uint64_t up_to) = 0;
  // Usage records, in one transaction, durable when it returns.
  virtual Status PutUsage(const std::vector<UsageRecord>& rows) = 0;
  // `by`: columns from kUsageColumns (checked by the caller); O(records since).
  virtual Result<std::vector<UsageTotal>> UsageTotals(int64_t since_ms, const std::vector<std::string>& by) = 0;
};

// The totals of `rows` (those ended at or after since_ms), as UsageTotals gives them; for
// journals that keep their records in memory.
std::vector<UsageTotal> SumUsage(const std::vector<UsageRecord>& rows, int64_t since_ms, const std::vector<std::string>& by);

// For tests and `sim`: keeps everything in memory.
class MemoryJournal final : public Journal {
 public:
  // From now on every write fails with `s` and stores nothing (a full or failing disk); Ok
  // heals it.
  void FailWrites(Status s) { fail_ = std::move(s); }

  // Writes of jobs so far (a transaction each, in a real store).
  int64_t job_writes() const { return job_writes_; }

  Status PutJobs(const std::vector<std::pair<uint64_t, std::string>>& jobs, const Events& events) override {
    if (!fail_.ok()) return fail_;
    ++job_writes_;
    for (const auto& [id, json] : jobs) c_.jobs[id] = json;
    return PutEvents(events);
  }
  Status PutNode(std::string_view name, std::string_view json, const Events& events) override {
    if (!fail_.ok()) return fail_;
    c_.nodes[std::string(name)] = json;
    return PutEvents(events);
  }
  Status PutEvents(const Events& events) override {
    if (!fail_.ok()) return fail_;
    for (const EventRecord& e : events) {
      events_.push_back(e);
      c_.last_event_seq = e.seq;
    }
    return Status::Ok();
  }
  Status PruneEvents(uint64_t up_to) override {
    std::erase_if(events_, [&](const EventRecord& e) { return e.seq <= up_to; });
    return Status::Ok();
  }
  Result<Events> EventsAfter(uint64_t after, size_t limit) override {
    Events out;
    for (const EventRecord& e : events_) {
      if (e.seq > after && out.size() < limit) out.push_back(e);
    }
    return out;
  }
  Status PutMeta(std::string_view key, std::string_view value) override {
    if (value.empty()) {
      c_.meta.erase(std::string(key));
    } else {
      c_.meta[std::string(key)] = value;
    }
    return Status::Ok();
  }
  Status PutUsage(const std::vector<UsageRecord>& rows) override {
    if (!fail_.ok()) return fail_;
    usage_.insert(usage_.end(), rows.begin(), rows.end());
    return Status::Ok();
  }
  Result<std::vector<UsageTotal>> UsageTotals(int64_t since_ms, const std::vector<std::string>& by) override {
    return SumUsage(usage_, since_ms, by);
  }
  Result<JournalContents> Load() override {
    c_.first_event_seq = events_.empty() ? 0 : events_.front().seq;
    return c_;
  }

 private:
  JournalContents c_;
  Events events_;
  std::vector<UsageRecord> usage_;
  Status fail_;
  int64_t job_writes_ = 0;
};

}  // namespace gp
