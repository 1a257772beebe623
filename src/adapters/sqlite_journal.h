// The controller's journal in a SQLite file in WAL mode. A Put returns once its transaction is
// on the disk: the connection runs with synchronous=OFF and the journal fdatasyncs the log
// itself after each commit (what synchronous=FULL does inside the commit). PutJobsLater writes
// its transaction at once and leaves the fdatasync to a syncer thread, whose one fdatasync
// covers every transaction written before it began: group commit at the disk, while the
// caller's thread goes on. Readers see events only once they are durable (EventsAfter stops at
// durable_event_seq), so nothing a crash could take back is ever shown or delivered.
// Threads: the connection is the controller's loop's only; the syncer touches nothing but the
// log's descriptor; a checkpointer thread copies the log back into the database over a
// connection of its own.
#pragma once

#include <memory>
#include <condition_variable>
#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "state/journal.h"

struct sqlite3;
struct sqlite3_stmt;

namespace gp {

class SqliteJournal final : public Journal {
 public:
  static Result<std::unique_ptr<SqliteJournal>> Open(const std::string& path);
  ~SqliteJournal() override;

  Status PutJobs(const std::vector<std::pair<uint64_t, std::string>>& jobs, const Events& events) override;
  void PutJobsLater(std::vector<std::pair<uint64_t, std::string>> jobs, Events events, WriteDone done) override;
  Status PutNode(std::string_view name, std::string_view json, const Events& events) override;
  Status PutEvents(const Events& events) override;
  Result<Events> EventsAfter(uint64_t after, size_t limit) override;
  Status PruneEvents(uint64_t up_to) override;
  // How far each event sink has delivered (events/): kept beside the events it delivers.
  Result<uint64_t> SinkOffset(const std::string& sink);
  Status SetSinkOffset(const std::string& sink, uint64_t seq);
  Status PutMeta(std::string_view key, std::string_view value) override;
  Status PutUsage(const std::vector<UsageRecord>& rows) override;
  Result<std::vector<UsageTotal>> UsageTotals(int64_t since_ms, const std::vector<std::string>& by) override;
  Result<JournalContents> Load() override;
  // Events after `after` up to `up_to`, whether durable or not (the Kafka sink's own
  // connection reads with the controller's journal's durable_event_seq as `up_to`).
  Result<Events> EventsBetween(uint64_t after, uint64_t up_to, size_t limit);
  uint64_t durable_event_seq() const { return durable_seq_.load(); }
  // Makes the writes handed to the syncer durable, calls their `done`, and stops the syncer
  // (the server does it before its loop and controller go; a later PutJobsLater starts one).
  void WaitForWrites();

 private:
  explicit SqliteJournal(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  Status Exec(const char* sql);
  Status Upsert(const char* sql, std::string_view key, std::string_view value);
  Status Error(const std::string& what) const;
  Status InsertEvents(const Events& events);  // inside a transaction
  // A statement prepared once and kept for the connection's life (nullptr: it did not
  // prepare); `sql` is a literal, its address the key. Step runs one that takes no values.
  sqlite3_stmt* Cached(const char* sql);
  Status Step(const char* sql);

  void CheckpointLoop();
  void SyncLoop();
  // fdatasync of the log: every transaction committed so far is durable when it returns.
  Status Sync();
  void Durable(uint64_t seq);  // events up to seq are on the disk
  Status WriteJobs(const std::vector<std::pair<uint64_t, std::string>>& jobs, const Events& events);

  sqlite3* db_;
  std::string path_;
  int wal_fd_ = -1;
  std::map<const char*, sqlite3_stmt*> cached_;
  uint64_t written_seq_ = 0;               // the newest event committed (the loop's thread)
  std::atomic<uint64_t> durable_seq_ = 0;  // the newest event known to be on the disk

  sqlite3* ckpt_db_ = nullptr;
  std::thread checkpointer_;
  std::mutex ckpt_mu_;
  std::condition_variable ckpt_cv_;
  bool ckpt_stop_ = false;

  struct ToSync {
    WriteDone done;
    uint64_t seq = 0;  // the newest event written with it
  };
  std::thread syncer_;  // started by the first PutJobsLater
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;
  std::vector<ToSync> to_sync_;
  bool sync_stop_ = false;
};

}  // namespace gp
