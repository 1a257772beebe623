#include "adapters/sqlite_journal.h"

#include <fmt/format.h>
#include <sqlite3.h>

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace gp {
namespace {

// Finalises a prepared statement when it leaves scope.
struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

}  // namespace

Result<std::unique_ptr<SqliteJournal>> SqliteJournal::Open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) !=
      SQLITE_OK) {
    std::string why = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return gp::Error(StatusCode::kFailedPrecondition, fmt::format("{}: cannot open the store: {}", path, why));
  }
  std::unique_ptr<SqliteJournal> j(new SqliteJournal(db, path));
  // synchronous=OFF: a commit writes the log and leaves the fsync to Sync() below, which this
  // journal calls itself: at once for the Put calls, on the syncer thread for PutJobsLater, where
  // one fdatasync covers every transaction written before it (group commit at the disk).
  for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=OFF", "PRAGMA busy_timeout=5000",
                          "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, json TEXT NOT NULL)",
                          "CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, json TEXT NOT NULL)",
                          "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                          "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, "
                          "type TEXT NOT NULL, subject TEXT NOT NULL, data TEXT NOT NULL)",
                          "CREATE TABLE IF NOT EXISTS sinks (name TEXT PRIMARY KEY, delivered INTEGER NOT NULL)",
                          "CREATE TABLE IF NOT EXISTS usage (id INTEGER PRIMARY KEY, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, "
                          "kind TEXT NOT NULL, provider TEXT NOT NULL, offer TEXT NOT NULL, tier TEXT NOT NULL, tenant TEXT NOT NULL, "
                          "node TEXT NOT NULL, job INTEGER NOT NULL, gpu_ms INTEGER NOT NULL, usd_micro INTEGER NOT NULL)",
                          "CREATE INDEX IF NOT EXISTS usage_end ON usage (end_ms)"}) {
    if (Status s = j->Exec(sql); !s.ok()) return tl::unexpected(s);
  }
  // The log's own descriptor, for the fsyncs (fdatasync flushes the file, whoever wrote it).
  // SQLite keeps the log (the same file) while this journal's connection is open.
  j->wal_fd_ = ::open((path + "-wal").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (j->wal_fd_ < 0) {
    return gp::Error(StatusCode::kFailedPrecondition, fmt::format("{}-wal: cannot open the store's log: {}", path, std::strerror(errno)));
  }
  if (Status s = j->Sync(); !s.ok()) return tl::unexpected(s);
  {
    sqlite3_stmt* st = j->Cached("SELECT IFNULL(MAX(seq), 0) FROM events");
    if (st && sqlite3_step(st) == SQLITE_ROW) j->written_seq_ = static_cast<uint64_t>(sqlite3_column_int64(st, 0));
    if (st) sqlite3_reset(st);
    j->durable_seq_ = j->written_seq_;
  }
  // Checkpoints (the WAL copied back into the database, with its fsync) run on a thread of
  // their own over a second connection, never inside a commit: a commit costs its own fsync
  // only, however much was written before it. A passive checkpoint blocks no writer.
  if (Status s = j->Exec("PRAGMA wal_autocheckpoint=0"); !s.ok()) return tl::unexpected(s);
  if (sqlite3_open_v2(path.c_str(), &j->ckpt_db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
    return gp::Error(StatusCode::kFailedPrecondition, fmt::format("{}: cannot open the store for checkpoints", path));
  }
  sqlite3_busy_timeout(j->ckpt_db_, 5000);
  // The checkpointer syncs the log before it copies frames into the database, and the database
  // before the log may start again: what was acknowledged stays durable across a restart of the log.
  if (sqlite3_exec(j->ckpt_db_, "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return gp::Error(StatusCode::kFailedPrecondition, fmt::format("{}: cannot open the store for checkpoints", path));
  }
  // A connection learns that the database is in WAL mode when it first reads it; until then a
  // checkpoint through it does nothing.
  if (sqlite3_exec(j->ckpt_db_, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr) != SQLITE_OK) {
    return gp::Error(StatusCode::kFailedPrecondition, fmt::format("{}: cannot open the store for checkpoints", path));
  }
  j->checkpointer_ = std::thread([jp = j.get()] { jp->CheckpointLoop(); });
  return j;
}

void SqliteJournal::CheckpointLoop() {
  pthread_setname_np(pthread_self(), "gp-checkpoint");
  std::unique_lock lock(ckpt_mu_);
  while (!ckpt_stop_) {
    // Five times a second: the WAL stays a few megabytes however fast jobs are stored.
    ckpt_cv_.wait_for(lock, std::chrono::milliseconds(200), [this] { return ckpt_stop_; });
    if (ckpt_stop_) break;
    lock.unlock();
    int log = 0;
    int done = 0;
    sqlite3_wal_checkpoint_v2(ckpt_db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    // Under a steady stream of commits a passive checkpoint never quite catches up, and the
    // log is only started again from its beginning once one has: past 4,096 pages (16 MiB) the
    // rest is copied with writers held off for that moment (what is left is small) and the
    // log started again from its beginning. Restarted, not truncated: the file keeps its
    // size, so a commit's fdatasync overwrites and writes no change of size.
    if (log >= 4096) sqlite3_wal_checkpoint_v2(ckpt_db_, nullptr, SQLITE_CHECKPOINT_RESTART, nullptr, nullptr);
    lock.lock();
  }
}

Status SqliteJournal::Sync() {
  const uint64_t upto = written_seq_;
  if (::fdatasync(wal_fd_) != 0) {
    return Status(StatusCode::kInternal, fmt::format("{}-wal: fdatasync: {}", path_, std::strerror(errno)));
  }
  Durable(upto);
  return Status::Ok();
}

void SqliteJournal::Durable(uint64_t seq) {
  uint64_t d = durable_seq_.load();
  while (d < seq && !durable_seq_.compare_exchange_weak(d, seq)) {
  }
}

void SqliteJournal::PutJobsLater(std::vector<std::pair<uint64_t, std::string>> jobs, Events events, WriteDone done) {
  // Written now (a transaction in the page cache: tens of microseconds), made durable by the
  // syncer's next fdatasync, which every write handed over meanwhile shares.
  Status s = WriteJobs(jobs, events);
  if (!s.ok()) return done(s);
  std::unique_lock lock(sync_mu_);
  if (!syncer_.joinable()) syncer_ = std::thread([this] { SyncLoop(); });
  to_sync_.push_back(ToSync{.done = std::move(done), .seq = written_seq_});
  lock.unlock();
  sync_cv_.notify_one();
}

void SqliteJournal::SyncLoop() {
  pthread_setname_np(pthread_self(), "gp-journal-sync");  // as top and perf show it
  std::unique_lock lock(sync_mu_);
  while (true) {
    sync_cv_.wait(lock, [this] { return sync_stop_ || !to_sync_.empty(); });
    if (to_sync_.empty()) return;  // stopping, and nothing left to sync
    std::vector<ToSync> batch = std::move(to_sync_);
    to_sync_.clear();
    lock.unlock();
    Status s;
    if (::fdatasync(wal_fd_) != 0) {
      s = Status(StatusCode::kInternal, fmt::format("{}-wal: fdatasync: {}", path_, std::strerror(errno)));
    } else {
      Durable(batch.back().seq);
    }
    for (ToSync& t : batch) t.done(s);
    lock.lock();
  }
}

void SqliteJournal::WaitForWrites() {
  std::unique_lock lock(sync_mu_);
  sync_stop_ = true;
  lock.unlock();
  sync_cv_.notify_one();
  if (syncer_.joinable()) syncer_.join();
  lock.lock();
  sync_stop_ = false;  // a later PutJobsLater starts a syncer again
}

SqliteJournal::~SqliteJournal() {
  WaitForWrites();
  {
    std::lock_guard lock(ckpt_mu_);
    ckpt_stop_ = true;
  }
  ckpt_cv_.notify_one();
  if (checkpointer_.joinable()) checkpointer_.join();
  sqlite3_close(ckpt_db_);
  for (auto& [sql, st] : cached_) sqlite3_finalize(st);
  sqlite3_close(db_);
  if (wal_fd_ >= 0) ::close(wal_fd_);
}

Status SqliteJournal::Error(const std::string& what) const {
  return Status(StatusCode::kInternal, fmt::format("{}: {}: {}", path_, what, sqlite3_errmsg(db_)));
}

Status SqliteJournal::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string why = err ? err : "?";
    sqlite3_free(err);
    return Status(StatusCode::kInternal, fmt::format("{}: {}: {}", path_, sql, why));
  }
  return Status::Ok();
}

sqlite3_stmt* SqliteJournal::Cached(const char* sql) {
  auto it = cached_.find(sql);
  if (it != cached_.end()) return it->second;
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, nullptr) != SQLITE_OK) return nullptr;
  cached_.emplace(sql, st);
  return st;
}

Status SqliteJournal::Step(const char* sql) {
  sqlite3_stmt* st = Cached(sql);
  if (!st) return Error(fmt::format("prepare {}", sql));
  const int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_DONE ? Status::Ok() : Error(sql);
}

Status SqliteJournal::InsertEvents(const Events& events) {
  if (events.empty()) return Status::Ok();
  sqlite3_stmt* st = Cached("INSERT INTO events (seq, time_ms, type, subject, data) VALUES (?, ?, ?, ?, ?)");
  if (!st) return Error("prepare");
  for (const EventRecord& e : events) {
    sqlite3_bind_int64(st, 1, static_cast<sqlite3_int64>(e.seq));
    sqlite3_bind_int64(st, 2, e.time_ms);
    sqlite3_bind_text(st, 3, e.type.data(), static_cast<int>(e.type.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 4, e.subject.data(), static_cast<int>(e.subject.size()), SQLITE_STATIC);
    sqlite3_bind_text(st, 5, e.data.data(), static_cast<int>(e.data.size()), SQLITE_STATIC);
    const int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return Error("insert event");
  }
  return Status::Ok();
}

Status SqliteJournal::PutJobs(const std::vector<std::pair<uint64_t, std::string>>& jobs, const Events& events) {
  if (jobs.empty() && events.empty()) return Status::Ok();
  if (Status s = WriteJobs(jobs, events); !s.ok()) return s;
  return Sync();
}

Status SqliteJournal::WriteJobs(const std::vector<std::pair<uint64_t, std::string>>& jobs, const Events& events) {
  if (jobs.empty() && events.empty()) return Status::Ok();
  if (Status s = Step("BEGIN IMMEDIATE"); !s.ok()) return s;
  auto write = [&]() -> Status {
    sqlite3_stmt* st = Cached("INSERT OR REPLACE INTO jobs (id, json) VALUES (?, ?)");
    if (!st) return Error("prepare");
    for (const auto& [id, json] : jobs) {
      sqlite3_bind_int64(st, 1, static_cast<sqlite3_int64>(id));
      sqlite3_bind_text(st, 2, json.data(), static_cast<int>(json.size()), SQLITE_STATIC);
      const int rc = sqlite3_step(st);
      sqlite3_reset(st);
      if (rc != SQLITE_DONE) return Error("insert job");
    }
    return InsertEvents(events);
  };
  if (Status e = write(); !e.ok()) {
    (void)Step("ROLLBACK");
    return e;
  }
  if (Status e = Step("COMMIT"); !e.ok()) return e;
  if (!events.empty()) written_seq_ = std::max(written_seq_, events.back().seq);
  return Status::Ok();
}

Status SqliteJournal::PutEvents(const Events& events) { return PutJobs({}, events); }

Status SqliteJournal::PruneEvents(uint64_t up_to) {
  Stmt st;
  if (sqlite3_prepare_v2(db_, "DELETE FROM events WHERE seq <= ?", -1, &st.s, nullptr) != SQLITE_OK) return Error("prepare");
  sqlite3_bind_int64(st.s, 1, static_cast<sqlite3_int64>(up_to));
  return sqlite3_step(st.s) == SQLITE_DONE ? Sync() : Error("prune events");
}

Result<uint64_t> SqliteJournal::SinkOffset(const std::string& sink) {
  Stmt st;
  if (sqlite3_prepare_v2(db_, "SELECT delivered FROM sinks WHERE name = ?", -1, &st.s, nullptr) != SQLITE_OK) {
    return tl::unexpected(Error("prepare"));
  }
  sqlite3_bind_text(st.s, 1, sink.data(), static_cast<int>(sink.size()), SQLITE_STATIC);
  const int rc = sqlite3_step(st.s);
  if (rc == SQLITE_ROW) return static_cast<uint64_t>(sqlite3_column_int64(st.s, 0));
  if (rc == SQLITE_DONE) return uint64_t{0};
  return tl::unexpected(Error("read sink offset"));
}

Status SqliteJournal::SetSinkOffset(const std::string& sink, uint64_t seq) {
  if (Status s = Upsert("INSERT OR REPLACE INTO sinks (name, delivered) VALUES (?, ?)", sink, std::to_string(seq)); !s.ok()) return s;
  return Sync();
}

Result<Events> SqliteJournal::EventsAfter(uint64_t after, size_t limit) {
  return EventsBetween(after, durable_seq_.load(), limit);
}

Result<Events> SqliteJournal::EventsBetween(uint64_t after, uint64_t up_to, size_t limit) {
  Stmt st;
  if (sqlite3_prepare_v2(db_, "SELECT seq, time_ms, type, subject, data FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                         -1, &st.s, nullptr) != SQLITE_OK) {
    return tl::unexpected(Error("prepare"));
  }
  sqlite3_bind_int64(st.s, 1, static_cast<sqlite3_int64>(after));
  sqlite3_bind_int64(st.s, 2, static_cast<sqlite3_int64>(std::min<uint64_t>(up_to, INT64_MAX)));
  sqlite3_bind_int64(st.s, 3, static_cast<sqlite3_int64>(limit));
  auto text = [&](int col) {
    const unsigned char* p = sqlite3_column_text(st.s, col);
    return std::string(p ? reinterpret_cast<const char*>(p) : "", static_cast<size_t>(sqlite3_column_bytes(st.s, col)));
  };
  Events out;
  int rc;
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
    out.push_back(EventRecord{.seq = static_cast<uint64_t>(sqlite3_column_int64(st.s, 0)), .time_ms = sqlite3_column_int64(st.s, 1),
                              .type = text(2), .subject = text(3), .data = text(4)});
  }
  if (rc != SQLITE_DONE) return tl::unexpected(Error("read events"));
  return out;
}

Status SqliteJournal::Upsert(const char* sql, std::string_view key, std::string_view value) {
  Stmt st;
  if (sqlite3_prepare_v2(db_, sql, -1, &st.s, nullptr) != SQLITE_OK) return Error("prepare");
  sqlite3_bind_text(st.s, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
  sqlite3_bind_text(st.s, 2, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
  return sqlite3_step(st.s) == SQLITE_DONE ? Status::Ok() : Error(sql);
}

Status SqliteJournal::PutNode(std::string_view name, std::string_view json, const Events& events) {
  if (Status s = Step("BEGIN IMMEDIATE"); !s.ok()) return s;
  Status s = Upsert("INSERT OR REPLACE INTO nodes (name, json) VALUES (?, ?)", name, json);
  if (s.ok()) s = InsertEvents(events);
  if (!s.ok()) {
    (void)Step("ROLLBACK");
    return s;
  }
  if (Status c = Step("COMMIT"); !c.ok()) return c;
  if (!events.empty()) written_seq_ = std::max(written_seq_, events.back().seq);
  return Sync();
}

Status SqliteJournal::PutUsage(const std::vector<UsageRecord>& rows) {
  if (rows.empty()) return Status::Ok();
  if (Status s = Step("BEGIN IMMEDIATE"); !s.ok()) return s;
  auto write = [&]() -> Status {
    sqlite3_stmt* st = Cached(
        "INSERT INTO usage (start_ms, end_ms, kind, provider, offer, tier, tenant, node, job, gpu_ms, usd_micro) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    if (!st) return Error("prepare");
    for (const UsageRecord& r : rows) {
      sqlite3_bind_int64(st, 1, r.start_ms);
      sqlite3_bind_int64(st, 2, r.end_ms);
      int col = 3;
      for (const std::string* t : {&r.kind, &r.provider, &r.offer, &r.tier, &r.tenant, &r.node}) {
        sqlite3_bind_text(st, col++, t->data(), static_cast<int>(t->size()), SQLITE_STATIC);
      }
      sqlite3_bind_int64(st, 9, static_cast<sqlite3_int64>(r.job));
      sqlite3_bind_int64(st, 10, r.gpu_ms);
      sqlite3_bind_int64(st, 11, r.usd_micro);
      const int rc = sqlite3_step(st);
      sqlite3_reset(st);
      if (rc != SQLITE_DONE) return Error("insert usage");
    }
    return Status::Ok();
  };
  if (Status e = write(); !e.ok()) {
    (void)Step("ROLLBACK");
    return e;
  }
  if (Status e = Step("COMMIT"); !e.ok()) return e;
  return Sync();
}

Result<std::vector<UsageTotal>> SqliteJournal::UsageTotals(int64_t since_ms, const std::vector<std::string>& by) {
  std::string cols;
  for (const std::string& c : by) {
    if (std::find(std::begin(kUsageColumns), std::end(kUsageColumns), c) == std::end(kUsageColumns)) {
      return gp::Error(StatusCode::kInvalidArgument, fmt::format("no usage column '{}'", c));
    }
    // The day a record ended, as SQLite writes a UTC date; the other columns as they are.
    cols += (cols.empty() ? "" : ", ") + (c == "day" ? std::string("strftime('%Y-%m-%d', end_ms / 1000, 'unixepoch')") : c);
  }
  const std::string sql = fmt::format("SELECT {}{}SUM(gpu_ms), SUM(usd_micro), COUNT(*) FROM usage WHERE end_ms >= ?{}", cols,
                                      cols.empty() ? "" : ", ", cols.empty() ? "" : " GROUP BY " + cols + " ORDER BY " + cols);
  Stmt st;
  if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st.s, nullptr) != SQLITE_OK) return tl::unexpected(Error("prepare"));
  sqlite3_bind_int64(st.s, 1, since_ms);
  std::vector<UsageTotal> out;
  int rc;
  const int n = static_cast<int>(by.size());
  while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) {
    if (sqlite3_column_int64(st.s, n + 2) == 0) continue;  // no record at all (the ungrouped sum's one row)
    UsageTotal t;
    for (int i = 0; i < n; ++i) {
      const unsigned char* p = sqlite3_column_text(st.s, i);
      t.key.emplace_back(p ? reinterpret_cast<const char*>(p) : "", static_cast<size_t>(sqlite3_column_bytes(st.s, i)));
    }
    t.gpu_ms = sqlite3_column_int64(st.s, n);
    t.usd_micro = sqlite3_column_int64(st.s, n + 1);
    t.records = sqlite3_column_int64(st.s, n + 2);
    out.push_back(std::move(t));
  }
  if (rc != SQLITE_DONE) return tl::unexpected(Error("read usage"));
  return out;
}

Status SqliteJournal::PutMeta(std::string_view key, std::string_view value) {
  const char* sql = value.empty() ? "DELETE FROM meta WHERE key = ? AND ? IS NOT NULL" : "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)";
  if (Status s = Upsert(sql, key, value); !s.ok()) return s;
  return Sync();
}

Result<JournalContents> SqliteJournal::Load() {
  JournalContents c;
  auto read = [&](const char* sql, auto&& row) -> Status {
    Stmt st;
    if (sqlite3_prepare_v2(db_, sql, -1, &st.s, nullptr) != SQLITE_OK) return Error("prepare");
    int rc;
    while ((rc = sqlite3_step(st.s)) == SQLITE_ROW) row(st.s);
    return rc == SQLITE_DONE ? Status::Ok() : Error("read");
  };
  auto text = [](sqlite3_stmt* s, int col) {
    const unsigned char* p = sqlite3_column_text(s, col);
    return std::string(p ? reinterpret_cast<const char*>(p) : "", static_cast<size_t>(sqlite3_column_bytes(s, col)));
  };
  Status s = read("SELECT id, json FROM jobs", [&](sqlite3_stmt* st) {
    c.jobs[static_cast<uint64_t>(sqlite3_column_int64(st, 0))] = text(st, 1);
  });
  if (!s.ok()) return tl::unexpected(s);
  s = read("SELECT name, json FROM nodes", [&](sqlite3_stmt* st) { c.nodes[text(st, 0)] = text(st, 1); });
  if (!s.ok()) return tl::unexpected(s);
  s = read("SELECT key, value FROM meta", [&](sqlite3_stmt* st) { c.meta[text(st, 0)] = text(st, 1); });
  if (!s.ok()) return tl::unexpected(s);
  s = read("SELECT IFNULL(MAX(seq), 0), IFNULL(MIN(seq), 0) FROM events", [&](sqlite3_stmt* st) {
    c.last_event_seq = static_cast<uint64_t>(sqlite3_column_int64(st, 0));
    c.first_event_seq = static_cast<uint64_t>(sqlite3_column_int64(st, 1));
  });
  if (!s.ok()) return tl::unexpected(s);
  return c;
}

}  // namespace gp
