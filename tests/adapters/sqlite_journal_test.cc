// The SQLite store: what is written is what a reopened store loads, and the write-ahead log is
// checkpointed into the database by the store's own thread (never inside a commit), so the
// log stays small however much is written.
#include "adapters/sqlite_journal.h"

#include <gtest/gtest.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <filesystem>
#include <thread>

namespace gp {
namespace {

TEST(SqliteJournalTest, WritesAreLoadedAgainAndTheLogIsCheckpointed) {
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("gpupool-journal-{}", ::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "store.db").string();
  {
    auto j = SqliteJournal::Open(path);
    ASSERT_TRUE(j) << j.error().message();
    for (uint64_t batch = 0; batch < 50; ++batch) {
      std::vector<std::pair<uint64_t, std::string>> rows;
      for (uint64_t k = 0; k < 100; ++k) {
        const uint64_t id = batch * 100 + k + 1;
        rows.emplace_back(id, fmt::format(R"({{"id":"{}","pad":"{}"}})", id, std::string(200, 'x')));
      }
      ASSERT_TRUE((*j)->PutJobs(rows, {}).ok());
    }
    // The checkpointer runs five times a second: within two seconds the database holds it all.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::filesystem::file_size(path) < 1'000'000 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_GE(std::filesystem::file_size(path), 1'000'000u) << "the log was never checkpointed into the database";
  }
  auto again = SqliteJournal::Open(path);
  ASSERT_TRUE(again) << again.error().message();
  auto contents = (*again)->Load();
  ASSERT_TRUE(contents) << contents.error().message();
  EXPECT_EQ(contents->jobs.size(), 5000u);
  std::filesystem::remove_all(dir);
}

// PutJobsLater: written at once, made durable by the syncer's fdatasync (one for every write
// handed over before it began), each `done` called in the order handed over, from the syncer's
// thread. Events are read only once durable; a reopened store has every acknowledged write.
TEST(SqliteJournalTest, LaterWritesAreDurableInOrderAndEventsShowOnlyOnceDurable) {
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("gpupool-journal-later-{}", ::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "store.db").string();
  constexpr int kWrites = 200;
  {
    auto j = SqliteJournal::Open(path);
    ASSERT_TRUE(j) << j.error().message();
    std::mutex mu;
    std::vector<int> order;
    std::vector<bool> durable_when_done;
    const std::thread::id caller = std::this_thread::get_id();
    bool on_caller = false;
    for (int w = 0; w < kWrites; ++w) {
      const uint64_t id = static_cast<uint64_t>(w) + 1;
      Events ev{EventRecord{.seq = id, .time_ms = 1, .type = "job.submitted", .subject = fmt::format("job/{}", id), .data = "{}"}};
      (*j)->PutJobsLater({{id, fmt::format(R"({{"id":"{}"}})", id)}}, std::move(ev), [&, w, id, jp = j->get()](Status s) {
        std::lock_guard lock(mu);
        EXPECT_TRUE(s.ok()) << s.message();
        order.push_back(w);
        durable_when_done.push_back(jp->durable_event_seq() >= id);
        on_caller = on_caller || std::this_thread::get_id() == caller;
      });
      // Whatever is shown is durable already.
      auto shown = (*j)->EventsAfter(0, 1000);
      ASSERT_TRUE(shown);
      EXPECT_LE(shown->size(), (*j)->durable_event_seq());
    }
    (*j)->WaitForWrites();
    std::vector<int> expected(kWrites);
    for (int w = 0; w < kWrites; ++w) expected[static_cast<size_t>(w)] = w;
    EXPECT_EQ(order, expected) << "each done called once, in the order handed over";
    EXPECT_EQ(std::count(durable_when_done.begin(), durable_when_done.end(), false), 0) << "done only once durable";
    EXPECT_FALSE(on_caller) << "done comes from the syncer's thread";
    auto all = (*j)->EventsAfter(0, 1000);
    ASSERT_TRUE(all);
    EXPECT_EQ(all->size(), static_cast<size_t>(kWrites));
    // A reader bounded by another journal's watermark (the Kafka sink's connection) stops there.
    auto bounded = (*j)->EventsBetween(0, 50, 1000);
    ASSERT_TRUE(bounded);
    EXPECT_EQ(bounded->size(), 50u);
    // Writes handed over after the syncer was stopped still get their answers, however far
    // apart they come.
    std::atomic<int> answered = 0;
    (*j)->PutJobsLater({{kWrites + 1, R"({"id":"x"})"}}, {}, [&](Status s) { answered += s.ok(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    (*j)->PutJobsLater({{kWrites + 2, R"({"id":"y"})"}}, {}, [&](Status s) { answered += s.ok(); });
    (*j)->WaitForWrites();
    EXPECT_EQ(answered.load(), 2) << "a stopped syncer starts again";
  }
  auto again = SqliteJournal::Open(path);
  ASSERT_TRUE(again) << again.error().message();
  auto contents = (*again)->Load();
  ASSERT_TRUE(contents) << contents.error().message();
  EXPECT_EQ(contents->jobs.size(), static_cast<size_t>(kWrites) + 2);
  EXPECT_EQ(contents->last_event_seq, static_cast<uint64_t>(kWrites));
  EXPECT_EQ((*again)->durable_event_seq(), static_cast<uint64_t>(kWrites)) << "what a store opens with is durable";
  std::filesystem::remove_all(dir);
}

// Usage totals, table-driven: the store's GROUP BY and the in-memory SumUsage agree with
// each other and with sums worked out by hand; records that ended before `since` are left
// out; a reopened store has them all.
// Meta keys (decayed usage, a preemption's hold) are put, replaced and, with an empty value,
// removed, in the store and in the memory journal alike.
TEST(SqliteJournalTest, MetaIsPutReplacedAndRemoved) {
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("gpupool-meta-{}", ::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  MemoryJournal mem;
  auto disk = SqliteJournal::Open((dir / "store.db").string());
  ASSERT_TRUE(disk) << disk.error().message();
  for (Journal* j : std::vector<Journal*>{&mem, disk->get()}) {
    ASSERT_TRUE(j->PutMeta("nomination/7", "{\"a\":1}").ok());
    ASSERT_TRUE(j->PutMeta("nomination/8", "{}").ok());
    ASSERT_TRUE(j->PutMeta("nomination/7", "{\"a\":2}").ok());
    ASSERT_TRUE(j->PutMeta("nomination/8", "").ok());
    auto c = j->Load();
    ASSERT_TRUE(c) << c.error().message();
    EXPECT_EQ(c->meta.count("nomination/8"), 0u);
    ASSERT_EQ(c->meta.count("nomination/7"), 1u);
    EXPECT_EQ(c->meta.at("nomination/7"), "{\"a\":2}");
  }
  disk->reset();
  std::filesystem::remove_all(dir);
}

TEST(SqliteJournalTest, UsageTotalsByColumnsAndSince) {
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("gpupool-usage-{}", ::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::vector<UsageRecord> rows = {
      {.start_ms = 0, .end_ms = 100, .kind = "job", .provider = "cloud", .offer = "a", .tier = "spot", .tenant = "t1", .node = "n1", .job = 1, .gpu_ms = 1000, .usd_micro = 10},
      {.start_ms = 0, .end_ms = 200, .kind = "job", .provider = "cloud", .offer = "b", .tier = "on-demand", .tenant = "t2", .node = "n2", .job = 2, .gpu_ms = 2000, .usd_micro = 40},
      {.start_ms = 0, .end_ms = 300, .kind = "idle", .provider = "cloud", .offer = "a", .tier = "spot", .tenant = "", .node = "n1", .gpu_ms = 500, .usd_micro = 5},
      {.start_ms = 0, .end_ms = 400, .kind = "job", .provider = "own", .offer = "", .tier = "reserved", .tenant = "t1", .node = "n3", .job = 3, .gpu_ms = 4000, .usd_micro = 8},
  };
  {
    auto j = SqliteJournal::Open((dir / "store.db").string());
    ASSERT_TRUE(j) << j.error().message();
    ASSERT_TRUE((*j)->PutUsage({rows[0], rows[1]}).ok());
    ASSERT_TRUE((*j)->PutUsage({rows[2], rows[3]}).ok());
  }
  auto j = SqliteJournal::Open((dir / "store.db").string());
  ASSERT_TRUE(j) << j.error().message();
  using Key = std::vector<std::string>;
  const struct {
    int64_t since;
    std::vector<std::string> by;
    std::vector<std::tuple<Key, int64_t, int64_t, int64_t>> want;  // key, gpu_ms, usd, records
  } cases[] = {
      {0, {}, {{Key{}, 7500, 63, 4}}},
      {0, {"provider"}, {{Key{"cloud"}, 3500, 55, 3}, {Key{"own"}, 4000, 8, 1}}},
      {0, {"offer", "kind"}, {{Key{"", "job"}, 4000, 8, 1}, {Key{"a", "idle"}, 500, 5, 1}, {Key{"a", "job"}, 1000, 10, 1}, {Key{"b", "job"}, 2000, 40, 1}}},
      {150, {"tenant"}, {{Key{""}, 500, 5, 1}, {Key{"t1"}, 4000, 8, 1}, {Key{"t2"}, 2000, 40, 1}}},
      {1000, {"tier"}, {}},
      {0, {"day", "kind"}, {{Key{"1970-01-01", "idle"}, 500, 5, 1}, {Key{"1970-01-01", "job"}, 7000, 58, 3}}},
  };
  for (const auto& c : cases) {
    auto got = (*j)->UsageTotals(c.since, c.by);
    ASSERT_TRUE(got) << got.error().message();
    const std::vector<UsageTotal> mem = SumUsage(rows, c.since, c.by);
    ASSERT_EQ(got->size(), c.want.size()) << c.since;
    ASSERT_EQ(mem.size(), c.want.size()) << c.since;
    for (size_t i = 0; i < c.want.size(); ++i) {
      const auto& [key, gpu_ms, usd, records] = c.want[i];
      for (const UsageTotal* t : std::initializer_list<const UsageTotal*>{&(*got)[i], &mem[i]}) {
        EXPECT_EQ(t->key, key);
        EXPECT_EQ(t->gpu_ms, gpu_ms);
        EXPECT_EQ(t->usd_micro, usd);
        EXPECT_EQ(t->records, records);
      }
    }
  }
  EXPECT_FALSE((*j)->UsageTotals(0, {"colour"})) << "columns are checked: no SQL from a request";
  // Days are UTC dates, the same in the store and in memory.
  EXPECT_EQ(UtcDay(1'796'294'892'000), "2026-12-03");
  EXPECT_EQ(UtcDay(86'399'999), "1970-01-01");
  EXPECT_EQ(UtcDay(86'400'000), "1970-01-02");
  ASSERT_TRUE((*j)->PutUsage({{.start_ms = 0, .end_ms = 1'796'294'892'000, .kind = "job", .tenant = "t1", .gpu_ms = 9, .usd_micro = 1}}).ok());
  auto days = (*j)->UsageTotals(1'000'000, {"day"});
  ASSERT_TRUE(days && days->size() == 1u);
  EXPECT_EQ((*days)[0].key, std::vector<std::string>{"2026-12-03"});
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace gp
