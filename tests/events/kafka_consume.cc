// A small Kafka consumer for the end-to-end tests (librdkafka): reads every partition of a topic
// from the start and prints each message as KEY<TAB>VALUE on a line, until N messages or the
// timeout.
// Usage: kafka_consume BROKERS TOPIC N TIMEOUT_MS [property=value ...]
#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: kafka_consume BROKERS TOPIC N TIMEOUT_MS [property=value ...]\n");
    return 2;
  }
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  auto set = [&](const std::string& k, const std::string& v) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof(err)) != RD_KAFKA_CONF_OK) {
      std::fprintf(stderr, "kafka_consume: %s=%s: %s\n", k.c_str(), v.c_str(), err);
      std::exit(2);
    }
  };
  set("bootstrap.servers", argv[1]);
  set("group.id", "gpupool-test-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  set("auto.offset.reset", "earliest");
  set("enable.auto.commit", "false");
  for (int i = 5; i < argc; ++i) {
    const std::string kv = argv[i];
    const size_t eq = kv.find('=');
    if (eq == std::string::npos) {
      std::fprintf(stderr, "kafka_consume: '%s' is not property=value\n", argv[i]);
      return 2;
    }
    set(kv.substr(0, eq), kv.substr(eq + 1));
  }
  rd_kafka_t* c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  if (!c) {
    std::fprintf(stderr, "kafka_consume: %s\n", err);
    return 2;
  }
  rd_kafka_poll_set_consumer(c);
  const long want = std::atol(argv[3]);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::atol(argv[4]));
  // Every partition of the topic from its first offset, assigned directly: no group
  // coordinator to wait for (on a 0.9 broker under load that can take a minute).
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(c, argv[2], nullptr);
  const rd_kafka_metadata_t* md = nullptr;
  while (std::chrono::steady_clock::now() < deadline) {
    if (rd_kafka_metadata(c, 0, rkt, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1 &&
        md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topics[0].partition_cnt > 0) {
      break;
    }
    if (md) rd_kafka_metadata_destroy(md);
    md = nullptr;
  }
  if (!md) {
    std::fprintf(stderr, "kafka_consume: no metadata for topic %s\n", argv[2]);
    return 1;
  }
  rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
  for (int i = 0; i < md->topics[0].partition_cnt; ++i) {
    rd_kafka_topic_partition_list_add(parts, argv[2], md->topics[0].partitions[i].id)->offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  rd_kafka_metadata_destroy(md);
  rd_kafka_topic_destroy(rkt);
  rd_kafka_assign(c, parts);
  rd_kafka_topic_partition_list_destroy(parts);
  long got = 0;
  while (got < want && std::chrono::steady_clock::now() < deadline) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(c, 200);
    if (!m) continue;
    if (!m->err) {
      std::printf("%.*s\t%.*s\n", static_cast<int>(m->key_len), static_cast<const char*>(m->key), static_cast<int>(m->len),
                  static_cast<const char*>(m->payload));
      std::fflush(stdout);
      ++got;
    } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      std::fprintf(stderr, "kafka_consume: %s\n", rd_kafka_message_errstr(m));
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
  return got >= want ? 0 : 1;
}
