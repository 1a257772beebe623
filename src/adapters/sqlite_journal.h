// The controller's journal in a SQLite file: WAL mode with synchronous=FULL, so a Put has
// reached the disk when it returns. One connection, used from the controller's loop only.
#pragma once

#include <memory>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "state/journal.h"

struct sqlite3;

namespace gp {

class SqliteJournal final : public Journal {
 public:
  static Result<std::unique_ptr<SqliteJournal>> Open(const std::string& path);
  ~SqliteJournal() override;

  Status PutJobs(const std::vector<std::pair<uint64_t, std::string>>& jobs, const Events& events) override;
  Status PutNode(std::string_view name, std::string_view json, const Events& events) override;
  Status PutEvents(const Events& events) override;
  Result<Events> EventsAfter(uint64_t after, size_t limit) override;
  Status PruneEvents(uint64_t up_to) override;
  // How far each event sink has delivered (events/): kept beside the events it delivers.
  Result<uint64_t> SinkOffset(const std::string& sink);
  Status SetSinkOffset(const std::string& sink, uint64_t seq);
  Status PutMeta(std::string_view key, std::string_view value) override;
  Result<JournalContents> Load() override;

 private:
  explicit SqliteJournal(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  Status Exec(const char* sql);
  Status Upsert(const char* sql, std::string_view key, std::string_view value);
  Status Error(const std::string& what) const;
  Status InsertEvents(const Events& events);  // inside a transaction

  void CheckpointLoop();

  sqlite3* db_;
  std::string path_;
  sqlite3* ckpt_db_ = nullptr;
  std::thread checkpointer_;
  std::mutex ckpt_mu_;
  std::condition_variable ckpt_cv_;
  bool ckpt_stop_ = false;
};

}  // namespace gp
