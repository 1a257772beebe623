// The SQLite store: what is written is what a reopened store loads, and the write-ahead log is
// checkpointed into the database by the store's own thread (never inside a commit), so the
// log stays small however much is written.
#include "adapters/sqlite_journal.h"

#include <gtest/gtest.h>
#include <fmt/format.h>

#include <chrono>
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

}  // namespace
}  // namespace gp
