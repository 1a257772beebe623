// The Kafka sink against librdkafka's own mock cluster (rdkafka_mock.h, in process, speaking
// the modern protocol): events delivered exactly once across a broker outage, in order per
// key, by an idempotent producer, and resumed from the stored offset after a restart.
#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "adapters/kafka_sink.h"

namespace gp {
namespace {

// The store as the sink sees it, in memory; the test appends while the sink reads.
class MemorySource final : public EventSource {
 public:
  void Add(const std::string& type, const std::string& subject) {
    std::lock_guard lock(mu_);
    const uint64_t seq = events_.size() + 1;
    events_.push_back(EventRecord{.seq = seq, .time_ms = 1'795'000'000'000 + static_cast<int64_t>(seq), .type = type,
                                  .subject = subject, .data = R"({"n":)" + std::to_string(seq) + "}"});
  }
  Result<Events> EventsAfter(uint64_t after, size_t limit) override {
    std::lock_guard lock(mu_);
    Events out;
    for (size_t i = after; i < events_.size() && out.size() < limit; ++i) out.push_back(events_[i]);
    return out;
  }
  Result<uint64_t> Delivered(const std::string& sink) override {
    std::lock_guard lock(mu_);
    return offsets_[sink];
  }
  Status SetDelivered(const std::string& sink, uint64_t seq) override {
    std::lock_guard lock(mu_);
    offsets_[sink] = seq;
    return Status::Ok();
  }
  uint64_t Stored(const std::string& sink) {
    std::lock_guard lock(mu_);
    return offsets_[sink];
  }

 private:
  std::mutex mu_;
  Events events_;
  std::map<std::string, uint64_t> offsets_;
};

// Forwards to a MemorySource the test keeps (the sink owns its source).
class Shared final : public EventSource {
 public:
  explicit Shared(MemorySource& m) : m_(m) {}
  Result<Events> EventsAfter(uint64_t after, size_t limit) override { return m_.EventsAfter(after, limit); }
  Result<uint64_t> Delivered(const std::string& sink) override { return m_.Delivered(sink); }
  Status SetDelivered(const std::string& sink, uint64_t seq) override { return m_.SetDelivered(sink, seq); }

 private:
  MemorySource& m_;
};

struct Mock {
  rd_kafka_t* rk = nullptr;  // the handle the mock cluster lives on
  rd_kafka_mock_cluster_t* cluster = nullptr;
  Mock() {
    char err[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    cluster = rd_kafka_mock_cluster_new(rk, 3);
    rd_kafka_mock_topic_create(cluster, "gpupool-events", 4, 3);
  }
  ~Mock() {
    rd_kafka_mock_cluster_destroy(cluster);
    rd_kafka_destroy(rk);
  }
  std::string bootstraps() const { return rd_kafka_mock_cluster_bootstraps(cluster); }
};

struct Received {
  uint64_t seq;
  std::string key;
  int32_t partition;
};

std::vector<Received> ConsumeAll(const std::string& bootstraps, size_t want, std::chrono::seconds timeout) {
  char err[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps.c_str(), err, sizeof(err));
  rd_kafka_conf_set(conf, "group.id", "test", err, sizeof(err));
  rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof(err));
  rd_kafka_t* c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  rd_kafka_poll_set_consumer(c);
  rd_kafka_topic_partition_list_t* topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, "gpupool-events", RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(c, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  std::vector<Received> got;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (got.size() < want && std::chrono::steady_clock::now() < deadline) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(c, 100);
    if (!m) continue;
    if (!m->err) {
      const auto j = nlohmann::json::parse(std::string(static_cast<const char*>(m->payload), m->len));
      got.push_back(Received{j["sequence"].get<uint64_t>(), std::string(static_cast<const char*>(m->key), m->key_len), m->partition});
      EXPECT_EQ(j["specversion"], "1.0");
      EXPECT_EQ(j["id"], std::to_string(got.back().seq));
      EXPECT_EQ(j["data"]["n"], got.back().seq);
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
  return got;
}

void WaitDelivered(KafkaSink& sink, uint64_t n, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (sink.stats().delivered < n && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

const char* kSubjects[] = {"job/1", "job/2", "job/3", "node/a", "node/a/gpu/1", "node/b", "job/4", "job/5"};

TEST(KafkaSinkTest, NothingLostAcrossABrokerOutageOrderKeptPerKey) {
  Mock mock;
  MemorySource store;
  for (int i = 0; i < 300; ++i) store.Add("job.placed", kSubjects[i % 8]);
  KafkaSinkOptions o{.brokers = mock.bootstraps(), .topic = "gpupool-events", .config = {}, .source = "gpupool://test"};
  auto sink = KafkaSink::Start(o, std::make_unique<Shared>(store));
  ASSERT_TRUE(sink) << sink.error().message();
  EXPECT_EQ((*sink)->ProducerConfig("enable.idempotence"), "true");
  EXPECT_EQ((*sink)->ProducerConfig("acks"), "-1") << "acks=all";
  WaitDelivered(**sink, 300, std::chrono::seconds(20));
  ASSERT_EQ((*sink)->stats().delivered, 300u);
  // Every broker goes down; events keep coming (the scheduler does not wait).
  for (int32_t b = 1; b <= 3; ++b) rd_kafka_mock_broker_set_down(mock.cluster, b);
  for (int i = 300; i < 600; ++i) store.Add("job.started", kSubjects[i % 8]);
  (*sink)->Wake();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_LT((*sink)->stats().delivered, 600u) << "nothing can be delivered while every broker is down";
  for (int32_t b = 1; b <= 3; ++b) rd_kafka_mock_broker_set_up(mock.cluster, b);
  WaitDelivered(**sink, 600, std::chrono::seconds(30));
  EXPECT_EQ((*sink)->stats().delivered, 600u);
  EXPECT_EQ((*sink)->stats().failed, 0u);
  sink->reset();  // stops; the offset is stored
  EXPECT_EQ(store.Stored("kafka:gpupool-events"), 600u);

  const auto got = ConsumeAll(mock.bootstraps(), 600, std::chrono::seconds(30));
  std::map<uint64_t, int> times;
  std::map<std::string, uint64_t> last_of_key;
  std::map<std::string, int32_t> partition_of_key;
  for (const Received& r : got) {
    ++times[r.seq];
    EXPECT_GT(r.seq, last_of_key[r.key]) << "key " << r.key << ": order kept";
    last_of_key[r.key] = r.seq;
    auto [it, fresh] = partition_of_key.emplace(r.key, r.partition);
    EXPECT_EQ(it->second, r.partition) << "one key, one partition";
  }
  EXPECT_EQ(got.size(), 600u) << "no duplicates, nothing missing";
  for (uint64_t s = 1; s <= 600; ++s) EXPECT_EQ(times[s], 1) << "event " << s;
  EXPECT_EQ(partition_of_key.count("node/a/gpu/1"), 0u) << "a GPU's events share its node's key";
}

TEST(KafkaSinkTest, ResumesFromTheStoredOffset) {
  Mock mock;
  MemorySource store;
  for (int i = 0; i < 50; ++i) store.Add("node.telemetry", "node/a");
  KafkaSinkOptions o{.brokers = mock.bootstraps(), .topic = "gpupool-events", .config = {}, .source = "gpupool://test"};
  {
    auto sink = KafkaSink::Start(o, std::make_unique<Shared>(store));
    ASSERT_TRUE(sink);
    WaitDelivered(**sink, 50, std::chrono::seconds(20));
  }
  for (int i = 0; i < 10; ++i) store.Add("node.down", "node/a");
  auto again = KafkaSink::Start(o, std::make_unique<Shared>(store));
  ASSERT_TRUE(again);
  EXPECT_GE((*again)->stats().delivered, 50u) << "a restarted sink starts from the stored offset";
  WaitDelivered(**again, 60, std::chrono::seconds(20));
  again->reset();
  const auto got = ConsumeAll(mock.bootstraps(), 60, std::chrono::seconds(20));
  EXPECT_EQ(got.size(), 60u) << "the first 50 were not sent twice";
}

TEST(KafkaSinkTest, UrlsAreCheckedAndNamed) {
  auto ok = ParseKafkaUrl("kafka://a:9092,b:9092/gpupool-events?api.version.request=false&broker.version.fallback=0.9.0.1");
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->brokers, "a:9092,b:9092");
  EXPECT_EQ(ok->topic, "gpupool-events");
  ASSERT_EQ(ok->config.size(), 2u);
  EXPECT_EQ(ok->config[1].second, "0.9.0.1");
  for (const char* bad : {"http://a/t", "kafka://a", "kafka:///t", "kafka://a/t?x", "kafka://a/bad topic"}) {
    auto r = ParseKafkaUrl(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message().find("--events"), std::string::npos) << r.error().message();
  }
  KafkaSinkOptions o{.brokers = "127.0.0.1:1", .topic = "t", .config = {{"no.such.property", "1"}}, .source = "x"};
  MemorySource store;
  auto sink = KafkaSink::Start(o, std::make_unique<Shared>(store));
  ASSERT_FALSE(sink);
  EXPECT_NE(sink.error().message().find("no.such.property"), std::string::npos);
}

}  // namespace
}  // namespace gp
