// Delivers the event log to Kafka through librdkafka (docs/events.md). It reads events from
// the store (the outbox) on a thread of its own and produces each as a CloudEvents JSON message
// (structured mode) keyed by its job or node ("job/12", "node/a"), so each key's events keep
// their order in one partition. The producer is idempotent with acks=all and never gives up
// on a message (message.timeout.ms=0). A broker outage therefore leaves events waiting: first
// in librdkafka's queue, then in the store. Scheduling never waits on Kafka. The sink records
// in the store the highest number up to which every event was delivered, and resumes from
// there after a restart.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/quantity.h"
#include "core/status.h"
#include "state/journal.h"

namespace gp {

// Where a sink reads events and keeps its progress. Used from the sink's thread only.
class EventSource {
 public:
  virtual ~EventSource() = default;
  virtual Result<Events> EventsAfter(uint64_t after, size_t limit) = 0;
  virtual Result<uint64_t> Delivered(const std::string& sink) = 0;
  virtual Status SetDelivered(const std::string& sink, uint64_t seq) = 0;
};

// The server's store, through a connection of the sink's own (SQLite WAL: it reads while the
// controller writes). It reads events up to `durable()` only (the controller's journal's
// durable_event_seq): an event committed but not yet on the disk is not delivered.
Result<std::unique_ptr<EventSource>> OpenSqliteEventSource(const std::string& path, std::function<uint64_t()> durable);
// The store in etcd, through a connection of the sink's own: events up to `durable()` (the
// leader's journal's durable_event_seq), and the delivered offset at PREFIX/sinks/NAME,
// written only while `fence` holds (a deposed leader's sink moves no offset). A new leader's
// sink resumes from that offset: at least once across a change of leader.
Result<std::unique_ptr<EventSource>> OpenEtcdEventSource(const std::string& endpoints, Millis timeout, std::string prefix,
                                                         std::string fence_key, int64_t fence_revision,
                                                         std::function<uint64_t()> durable);

struct KafkaSinkOptions {
  std::string brokers;  // "host:port,host:port"
  std::string topic;
  std::vector<std::pair<std::string, std::string>> config;  // librdkafka properties laid over ours
  std::string source = "gpupool";                            // CloudEvents source
};

// "kafka://BROKER[,BROKER...]/TOPIC[?property=value&...]", e.g.
// kafka://127.0.0.1:9092/gpupool-events?api.version.request=false
Result<KafkaSinkOptions> ParseKafkaUrl(std::string_view url);

class KafkaSink {
 public:
  struct Stats {
    uint64_t delivered = 0;  // every event up to this number is in Kafka
    uint64_t produced = 0;   // handed to the producer up to this number
    uint64_t failed = 0;     // events Kafka refused for good (logged, then skipped)
    bool brokers_up = true;
    std::string last_error;
  };

  static Result<std::unique_ptr<KafkaSink>> Start(KafkaSinkOptions options, std::unique_ptr<EventSource> source);
  ~KafkaSink();  // delivers what it can for up to 5 s, then stops
  KafkaSink(const KafkaSink&) = delete;
  KafkaSink& operator=(const KafkaSink&) = delete;

  void Wake();  // new events are in the store
  Stats stats() const;
  std::string name() const { return "kafka:" + options_.topic; }
  // A producer property as librdkafka reports it ("enable.idempotence" -> "true").
  std::string ProducerConfig(const std::string& key) const;

  struct Impl;

 private:
  KafkaSink(KafkaSinkOptions options, std::unique_ptr<EventSource> source);
  void Loop();

  KafkaSinkOptions options_;
  std::unique_ptr<EventSource> source_;
  std::unique_ptr<Impl> impl_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool woken_ = false;
  Stats stats_;
  std::thread thread_;
};

}  // namespace gp
