// The controller's journal in etcd, for several servers of which one leads (docs/live-pool.md).
// Every write is a transaction whose compare says "the leader key still has the create
// revision I saw when I was elected": a server that stopped leading (paused past its lease, cut
// off) can never write again, and learns it from the first write it tries (fencing). A write
// of jobs with their events goes in as few transactions as etcd's limits allow (128 operations,
// 1.5 MiB a request), a job always with its own events.
//
// Keys under the prefix P (default /gpupool): P/leader (the leader's address, on its lease),
// P/jobs/<id, 20 digits>, P/nodes/<name>, P/meta/<key>, P/events/<seq, 20 digits>,
// P/usage/<end ms>/<start ms>/<node>/<job>/<kind>, P/sinks/<name>.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "adapters/etcd.h"
#include "state/journal.h"

namespace gp {

struct EtcdFence {
  std::string key;             // the leader key
  int64_t create_revision = 0; // as created by this server's election: its epoch
};

class EtcdJournal final : public Journal {
 public:
  // `deposed` is called once, from the writing thread, when a write finds that this server no
  // longer leads; the write fails (kFailedPrecondition).
  EtcdJournal(EtcdClient& etcd, std::string prefix, EtcdFence fence, std::function<void(const std::string&)> deposed);
  ~EtcdJournal() override;

  // Handed to a writer thread of its own (a connection of its own to etcd), which commits what
  // was handed to it meanwhile together, in order, and calls each `done` from that thread: the
  // loop goes on accepting while a transaction is under way, and the next one carries all that
  // arrived (group commit, as SqliteJournal's syncer). Every other write waits for those
  // handed before it.
  void PutJobsLater(std::vector<std::pair<uint64_t, std::string>> jobs, Events events, WriteDone done) override;
  // Waits until everything handed to the writer is committed (or failed) and its `done` called.
  void WaitForWrites();

  Status PutJobs(const std::vector<std::pair<uint64_t, std::string>>& jobs, const Events& events) override;
  Status PutNode(std::string_view name, std::string_view json, const Events& events) override;
  Status PutEvents(const Events& events) override;
  Status PutMeta(std::string_view key, std::string_view value) override;
  Result<JournalContents> Load() override;
  Result<Events> EventsAfter(uint64_t after, size_t limit) override;
  Status PruneEvents(uint64_t up_to) override;
  Status PutUsage(const std::vector<UsageRecord>& rows) override;
  Result<std::vector<UsageTotal>> UsageTotals(int64_t since_ms, const std::vector<std::string>& by) override;

  // Drops etcd's history older than the revision the last call saw (so at least one period of
  // history stays), and defragments the member answering when its file is over `defrag_bytes`.
  Status Maintain(int64_t defrag_bytes);
  // Every event up to this number is committed (writes are committed in order, so a later
  // one's success covers every earlier one): readers and sinks go no further, so that none
  // skips an event whose transaction is still under way.
  uint64_t durable_event_seq() const { return durable_seq_.load(); }
  int64_t transactions() const { return transactions_.load(); }
  int64_t revision() const { return revision_.load(); }

  // Keys, for tests and tools.
  std::string JobKey(uint64_t id) const;
  std::string EventKey(uint64_t seq) const;

 private:
  // Each unit stays in one transaction; units are packed in order into as few as the limits
  // allow, sent over `client` (the loop's, or the writer thread's own).
  Status Commit(const std::vector<std::vector<EtcdOp>>& units, EtcdClient* client = nullptr);
  Status CommitOne(std::vector<EtcdOp> ops, EtcdClient& client);
  std::vector<std::vector<EtcdOp>> JobUnits(const std::vector<std::pair<uint64_t, std::string>>& jobs, const Events& events) const;
  void WriterLoop();
  std::vector<EtcdOp> EventOps(const Events& events) const;
  // Every key from `start` ("": `prefix`) to the end of `prefix`'s keys, at one revision (the
  // first page's when `revision` is 0), page by page.
  Status Scan(const std::string& prefix, const std::string& start, const std::function<Status(const EtcdKv&)>& each,
              int64_t& revision);

  EtcdClient& etcd_;
  std::string prefix_;
  EtcdFence fence_;
  std::function<void(const std::string&)> deposed_;
  std::atomic<bool> is_deposed_ = false;
  std::atomic<int64_t> transactions_ = 0;
  std::atomic<int64_t> revision_ = 0;
  std::atomic<uint64_t> durable_seq_ = 0;
  int64_t compact_to_ = 0;  // the revision seen at the last Maintain

  struct Later {
    std::vector<std::pair<uint64_t, std::string>> jobs;
    Events events;
    WriteDone done;
  };
  std::unique_ptr<EtcdClient> writer_etcd_;  // the writer thread's connection
  std::thread writer_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::deque<Later> queue_;
  bool writing_ = false;
  bool stop_ = false;
};

// Events after `after` up to `durable`, oldest first, at most `limit` (and 10,000): for
// EtcdJournal and for an event sink's connection of its own.
Result<Events> EtcdEventsAfter(EtcdClient& etcd, const std::string& prefix, uint64_t after, size_t limit, uint64_t durable);

}  // namespace gp
