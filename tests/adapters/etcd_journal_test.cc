// The journal on a real etcd member: what is written is loaded back, a job goes in the same
// transaction as its events however many jobs a write holds, events are pruned and paged, and
// a server whose leader key was replaced writes nothing more (fencing).
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <mutex>

#include "adapters/etcd.h"
#include "adapters/etcd_journal.h"
#include "etcd_test_server.h"

namespace gp {
namespace {

class EtcdJournalTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new testing::EtcdTestServer(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(server_->ready()) << "etcd did not start (scripts/bootstrap installs etcd-server); log in " << server_->dir();
    auto c = EtcdClient::Connect(server_->endpoint());
    ASSERT_TRUE(c) << c.error().message();
    etcd_ = std::move(*c);
    prefix_ = fmt::format("/t{}", ++n_);
  }
  // Elects this test as leader: the leader key created on a fresh lease; its create revision.
  int64_t Elect() {
    auto lease = etcd_->LeaseGrant(10);
    EXPECT_TRUE(lease) << lease.error().message();
    auto r = etcd_->Txn({EtcdCreated{.key = prefix_ + "/leader", .create_revision = 0}},
                        {EtcdOp::Put(prefix_ + "/leader", "me", *lease), EtcdOp::Get(prefix_ + "/leader")});
    EXPECT_TRUE(r && r->succeeded);
    return r->ranges.at(0).kvs.at(0).create_revision;
  }
  EtcdJournal Journal(int64_t epoch, int* deposed = nullptr) {
    return EtcdJournal(*etcd_, prefix_, EtcdFence{.key = prefix_ + "/leader", .create_revision = epoch},
                       [deposed](const std::string&) {
                         if (deposed) ++*deposed;
                       });
  }

  static testing::EtcdTestServer* server_;
  static int n_;
  std::unique_ptr<EtcdClient> etcd_;
  std::string prefix_;
};
testing::EtcdTestServer* EtcdJournalTest::server_ = nullptr;
int EtcdJournalTest::n_ = 0;

EventRecord Ev(uint64_t seq, std::string subject) {
  return EventRecord{.seq = seq, .time_ms = 1000 + static_cast<int64_t>(seq), .type = "job.submitted", .subject = std::move(subject),
                     .data = fmt::format("{{\"n\":{}}}", seq)};
}

TEST_F(EtcdJournalTest, WhatIsWrittenLoadsBackAndJobsGoWithTheirEvents) {
  EtcdJournal j = Journal(Elect());
  std::vector<std::pair<uint64_t, std::string>> jobs;
  Events events;
  for (uint64_t id = 1; id <= 300; ++id) {
    jobs.emplace_back(id, fmt::format("{{\"id\":{}}}", id));
    events.push_back(Ev(id, fmt::format("job/{}", id)));
  }
  events.push_back(Ev(301, "node/a"));
  ASSERT_TRUE(j.PutJobs(jobs, events).ok());
  // 300 jobs and 301 events cannot go in one transaction of at most 128 operations.
  EXPECT_GE(j.transactions(), 5);
  ASSERT_TRUE(j.PutNode("a", "{\"name\":\"a\"}", {Ev(302, "node/a")}).ok());
  ASSERT_TRUE(j.PutMeta("next_job_id", "301").ok());
  ASSERT_TRUE(j.PutMeta("gone", "x").ok());
  ASSERT_TRUE(j.PutMeta("gone", "").ok());  // an empty value removes the key

  auto c = j.Load();
  ASSERT_TRUE(c) << c.error().message();
  ASSERT_EQ(c->jobs.size(), 300u);
  EXPECT_EQ(c->jobs.at(1), "{\"id\":1}");
  EXPECT_EQ(c->jobs.at(300), "{\"id\":300}");
  EXPECT_EQ(c->nodes.at("a"), "{\"name\":\"a\"}");
  EXPECT_EQ(c->meta.at("next_job_id"), "301");
  EXPECT_EQ(c->meta.count("gone"), 0u);
  EXPECT_EQ(c->first_event_seq, 1u);
  EXPECT_EQ(c->last_event_seq, 302u);

  // Each job and its event were written by the same transaction (the same mod revision).
  for (uint64_t id : {1u, 127u, 128u, 200u, 300u}) {
    auto job = etcd_->Range(j.JobKey(id));
    auto ev = etcd_->Range(j.EventKey(id));
    ASSERT_TRUE(job && ev && job->kvs.size() == 1 && ev->kvs.size() == 1);
    EXPECT_EQ(job->kvs[0].mod_revision, ev->kvs[0].mod_revision) << "job " << id;
  }

  auto after = j.EventsAfter(150, 10);
  ASSERT_TRUE(after);
  ASSERT_EQ(after->size(), 10u);
  EXPECT_EQ(after->front().seq, 151u);
  EXPECT_EQ(after->front().subject, "job/151");
  EXPECT_EQ(after->front().data, "{\"n\":151}");
  EXPECT_EQ(after->front().time_ms, 1151);

  ASSERT_TRUE(j.PruneEvents(100).ok());
  auto pruned = j.Load();
  ASSERT_TRUE(pruned);
  EXPECT_EQ(pruned->first_event_seq, 101u);
  auto first = j.EventsAfter(0, 1);
  ASSERT_TRUE(first && first->size() == 1);
  EXPECT_EQ(first->front().seq, 101u);
}

TEST_F(EtcdJournalTest, WritesHandedLaterAreCommittedTogetherInOrder) {
  EtcdJournal j = Journal(Elect());
  std::mutex mu;
  std::vector<uint64_t> done;
  for (uint64_t id = 1; id <= 60; ++id) {
    j.PutJobsLater({{id, fmt::format("{{\"id\":{}}}", id)}}, {Ev(id, fmt::format("job/{}", id))}, [&, id](Status s) {
      EXPECT_TRUE(s.ok()) << s.message();
      std::lock_guard lock(mu);
      done.push_back(id);
    });
  }
  // A write of the caller's own goes after those handed before it.
  ASSERT_TRUE(j.PutJobs({{61, "{}"}}, {Ev(61, "job/61")}).ok());
  {
    std::lock_guard lock(mu);
    ASSERT_EQ(done.size(), 60u) << "every write handed earlier was done before";
    for (size_t k = 0; k < done.size(); ++k) EXPECT_EQ(done[k], k + 1) << "in the order handed";
  }
  // Handed while a transaction was under way, they went in fewer transactions than writes.
  EXPECT_LT(j.transactions(), 61);
  auto c = j.Load();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->jobs.size(), 61u);
  EXPECT_EQ(c->last_event_seq, 61u);
}

TEST_F(EtcdJournalTest, UsageIsSummedFromATime) {
  EtcdJournal j = Journal(Elect());
  std::vector<UsageRecord> rows = {
      {.start_ms = 0, .end_ms = 1'000, .kind = "job", .tenant = "a", .node = "n1", .job = 1, .gpu_ms = 10, .usd_micro = 1},
      {.start_ms = 0, .end_ms = 5'000, .kind = "job", .tenant = "a", .node = "n1", .job = 2, .gpu_ms = 20, .usd_micro = 2},
      {.start_ms = 1, .end_ms = 6'000, .kind = "job", .tenant = "b", .node = "n2", .job = 3, .gpu_ms = 40, .usd_micro = 4}};
  ASSERT_TRUE(j.PutUsage(rows).ok());
  auto t = j.UsageTotals(2'000, {"tenant"});
  ASSERT_TRUE(t) << t.error().message();
  ASSERT_EQ(t->size(), 2u);
  EXPECT_EQ((*t)[0].key, std::vector<std::string>{"a"});
  EXPECT_EQ((*t)[0].gpu_ms, 20);  // the record that ended at 1,000 is before the time asked
  EXPECT_EQ((*t)[1].gpu_ms, 40);
}

TEST_F(EtcdJournalTest, ADeposedLeaderWritesNothing) {
  const int64_t epoch = Elect();
  int deposed = 0;
  EtcdJournal j = Journal(epoch, &deposed);
  ASSERT_TRUE(j.PutJobs({{1, "{}"}}, {}).ok());
  // Its lease ran out and another server was elected: the leader key is created anew.
  auto del = etcd_->Txn({}, {EtcdOp::Delete(prefix_ + "/leader")});
  ASSERT_TRUE(del);
  const int64_t other = Elect();
  ASSERT_GT(other, epoch);

  Status s = j.PutJobs({{2, "{}"}}, {Ev(1, "job/2")});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("no longer leads"), std::string::npos) << s.message();
  EXPECT_EQ(deposed, 1);
  EXPECT_FALSE(j.PutMeta("k", "v").ok());
  EXPECT_FALSE(j.PutNode("a", "{}", {}).ok());
  EXPECT_EQ(deposed, 1) << "told once";
  // Nothing of it landed.
  auto job = etcd_->Range(j.JobKey(2));
  ASSERT_TRUE(job);
  EXPECT_TRUE(job->kvs.empty());
  auto ev = etcd_->Range(j.EventKey(1));
  ASSERT_TRUE(ev);
  EXPECT_TRUE(ev->kvs.empty());
  auto meta = etcd_->Range(prefix_ + "/meta/k");
  ASSERT_TRUE(meta);
  EXPECT_TRUE(meta->kvs.empty());
  // The new leader's journal writes.
  EXPECT_TRUE(Journal(other).PutJobs({{2, "{}"}}, {}).ok());
}

TEST_F(EtcdJournalTest, ARecordTooLargeForOneTransactionIsRefusedByName) {
  EtcdJournal j = Journal(Elect());
  Events many;
  for (uint64_t s = 1; s <= 200; ++s) many.push_back(Ev(s, "job/1"));
  Status st = j.PutJobs({{1, "{}"}}, many);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("128"), std::string::npos) << st.message();
  auto job = etcd_->Range(j.JobKey(1));
  ASSERT_TRUE(job);
  EXPECT_TRUE(job->kvs.empty());
}

TEST_F(EtcdJournalTest, MaintainDropsHistoryBeforeThePreviousCall) {
  EtcdJournal j = Journal(Elect());
  ASSERT_TRUE(j.PutMeta("k", "1").ok());
  const int64_t old = j.revision();
  ASSERT_TRUE(j.PutMeta("k", "2").ok());
  ASSERT_TRUE(j.Maintain(0).ok());  // remembers the revision now; drops nothing yet
  auto still = etcd_->Range(prefix_ + "/meta/k", EtcdRangeOptions{.revision = old});
  ASSERT_TRUE(still) << still.error().message();
  ASSERT_EQ(still->kvs.size(), 1u);
  EXPECT_EQ(still->kvs[0].value, "1");
  ASSERT_TRUE(j.PutMeta("k", "3").ok());
  ASSERT_TRUE(j.Maintain(0).ok());  // drops what came before the previous call
  auto gone = etcd_->Range(prefix_ + "/meta/k", EtcdRangeOptions{.revision = old});
  EXPECT_FALSE(gone) << "the history before the previous Maintain is compacted";
  auto now = etcd_->Range(prefix_ + "/meta/k");
  ASSERT_TRUE(now && now->kvs.size() == 1);
  EXPECT_EQ(now->kvs[0].value, "3");
}

TEST_F(EtcdJournalTest, LeaseKeepAliveAndExpiry) {
  auto lease = etcd_->LeaseGrant(5);
  ASSERT_TRUE(lease);
  auto ttl = etcd_->LeaseKeepAlive(*lease);
  ASSERT_TRUE(ttl);
  EXPECT_GT(*ttl, 0);
  ASSERT_TRUE(etcd_->LeaseRevoke(*lease).ok());
  auto gone = etcd_->LeaseKeepAlive(*lease);
  ASSERT_TRUE(gone);
  EXPECT_EQ(*gone, 0) << "a revoked lease has no time left";
}

TEST(EtcdClientTest, PrefixEnd) {
  EXPECT_EQ(EtcdClient::PrefixEnd("/a/"), "/a0");
  EXPECT_EQ(EtcdClient::PrefixEnd(std::string("a\xff", 2)), "b");
  EXPECT_EQ(EtcdClient::PrefixEnd(""), std::string(1, '\0'));
}

}  // namespace
}  // namespace gp
