#include "adapters/kafka_sink.h"

#include <fmt/format.h>
#include <librdkafka/rdkafka.h>

#include <chrono>
#include <set>

#include "adapters/etcd.h"
#include "adapters/etcd_journal.h"
#include "adapters/http.h"
#include "adapters/sqlite_journal.h"
#include "wire/codec.h"

namespace gp {
namespace {

class SqliteEventSource final : public EventSource {
 public:
  SqliteEventSource(std::unique_ptr<SqliteJournal> j, std::function<uint64_t()> durable)
      : j_(std::move(j)), durable_(std::move(durable)) {}
  Result<Events> EventsAfter(uint64_t after, size_t limit) override { return j_->EventsBetween(after, durable_(), limit); }
  Result<uint64_t> Delivered(const std::string& sink) override { return j_->SinkOffset(sink); }
  Status SetDelivered(const std::string& sink, uint64_t seq) override { return j_->SetSinkOffset(sink, seq); }

 private:
  std::unique_ptr<SqliteJournal> j_;
  std::function<uint64_t()> durable_;
};

class EtcdEventSource final : public EventSource {
 public:
  EtcdEventSource(std::unique_ptr<EtcdClient> etcd, std::string prefix, EtcdCreated fence, std::function<uint64_t()> durable)
      : etcd_(std::move(etcd)), prefix_(std::move(prefix)), fence_(std::move(fence)), durable_(std::move(durable)) {}
  Result<Events> EventsAfter(uint64_t after, size_t limit) override {
    return EtcdEventsAfter(*etcd_, prefix_, after, limit, durable_());
  }
  Result<uint64_t> Delivered(const std::string& sink) override {
    auto r = etcd_->Range(prefix_ + "/sinks/" + sink);
    if (!r) return tl::unexpected(r.error());
    return r->kvs.empty() ? 0 : std::strtoull(r->kvs[0].value.c_str(), nullptr, 10);
  }
  Status SetDelivered(const std::string& sink, uint64_t seq) override {
    auto r = etcd_->Txn({fence_}, {EtcdOp::Put(prefix_ + "/sinks/" + sink, std::to_string(seq))});
    if (!r) return r.error();
    if (!r->succeeded) return Status(StatusCode::kFailedPrecondition, "this server no longer leads: the offset is not moved");
    return Status::Ok();
  }

 private:
  std::unique_ptr<EtcdClient> etcd_;
  std::string prefix_;
  EtcdCreated fence_;
  std::function<uint64_t()> durable_;
};

// A job's events share a key, and so do a node's and its GPUs' ("node/a/gpu/1" -> "node/a").
std::string KeyOf(const std::string& subject) {
  const size_t first = subject.find('/');
  if (first == std::string::npos) return subject;
  const size_t second = subject.find('/', first + 1);
  return second == std::string::npos ? subject : subject.substr(0, second);
}

}  // namespace

Result<std::unique_ptr<EventSource>> OpenSqliteEventSource(const std::string& path, std::function<uint64_t()> durable) {
  auto j = SqliteJournal::Open(path);
  if (!j) return tl::unexpected(j.error());
  return std::unique_ptr<EventSource>(new SqliteEventSource(std::move(*j), std::move(durable)));
}

Result<std::unique_ptr<EventSource>> OpenEtcdEventSource(const std::string& endpoints, Millis timeout, std::string prefix,
                                                         std::string fence_key, int64_t fence_revision,
                                                         std::function<uint64_t()> durable) {
  auto c = EtcdClient::Connect(endpoints, timeout);
  if (!c) return tl::unexpected(c.error());
  return std::unique_ptr<EventSource>(new EtcdEventSource(std::move(*c), std::move(prefix),
                                                          EtcdCreated{.key = std::move(fence_key), .create_revision = fence_revision},
                                                          std::move(durable)));
}

Result<KafkaSinkOptions> ParseKafkaUrl(std::string_view url) {
  constexpr std::string_view kScheme = "kafka://";
  auto bad = [&](std::string_view why) {
    return InvalidArgument(fmt::format("--events '{}': {}; expected kafka://BROKER[,BROKER]/TOPIC[?property=value&...]", url, why));
  };
  if (!url.starts_with(kScheme)) return bad("not a kafka:// address");
  std::string_view rest = url.substr(kScheme.size());
  const size_t slash = rest.find('/');
  if (slash == std::string_view::npos || slash == 0) return bad("no broker or no topic");
  KafkaSinkOptions o;
  o.brokers = std::string(rest.substr(0, slash));
  rest = rest.substr(slash + 1);
  const size_t q = rest.find('?');
  o.topic = std::string(rest.substr(0, q));
  if (o.topic.empty() || o.topic.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
                             std::string::npos) {
    return bad("a topic is letters, digits, '.', '_' and '-'");
  }
  if (q != std::string_view::npos) {
    std::string_view props = rest.substr(q + 1);
    while (!props.empty()) {
      const size_t amp = props.find('&');
      const std::string_view kv = props.substr(0, amp);
      const size_t eq = kv.find('=');
      if (eq == std::string_view::npos || eq == 0) return bad(fmt::format("'{}' is not property=value", kv));
      o.config.emplace_back(UrlDecode(kv.substr(0, eq)), UrlDecode(kv.substr(eq + 1)));
      props = amp == std::string_view::npos ? std::string_view() : props.substr(amp + 1);
    }
  }
  return o;
}

struct KafkaSink::Impl {
  rd_kafka_t* rk = nullptr;
  rd_kafka_topic_t* topic = nullptr;
  // Delivered numbers above the contiguous watermark (partitions confirm out of order).
  std::set<uint64_t> confirmed;
  uint64_t watermark = 0;
  uint64_t failed = 0;
  bool brokers_up = true;
  std::string last_error;
  bool headers = true;  // brokers before Kafka 0.11 take no message headers

  // Done with `seq` (delivered, or refused for good): the watermark moves over every
  // contiguous number.
  void Confirm(uint64_t seq) {
    confirmed.insert(seq);
    while (!confirmed.empty() && *confirmed.begin() == watermark + 1) {
      watermark = *confirmed.begin();
      confirmed.erase(confirmed.begin());
    }
  }

  ~Impl() {
    if (topic) rd_kafka_topic_destroy(topic);
    if (rk) rd_kafka_destroy(rk);
  }
};

namespace {

void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
  auto* impl = static_cast<KafkaSink::Impl*>(opaque);
  const auto seq = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(m->_private));
  if (m->err) {
    // With message.timeout.ms=0 only a permanent refusal ends here (too large, not allowed).
    ++impl->failed;
    impl->last_error = fmt::format("event {}: {}", seq, rd_kafka_err2str(m->err));
    fmt::print(stderr, "gpupool server: kafka refused {}; skipped\n", impl->last_error);
  } else {
    impl->brokers_up = true;
  }
  impl->Confirm(seq);
}

void OnError(rd_kafka_t*, int err, const char* reason, void* opaque) {
  auto* impl = static_cast<KafkaSink::Impl*>(opaque);
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || err == RD_KAFKA_RESP_ERR__TRANSPORT) {
    if (impl->brokers_up) fmt::print(stderr, "gpupool server: kafka: {}; events wait in the store\n", reason);
    impl->brokers_up = false;
  }
  impl->last_error = reason;
}

// librdkafka's own log: the error callback already reports outages, once; only critical
// messages are worth a line of their own.
void OnLog(const rd_kafka_t*, int level, const char* facility, const char* message) {
  if (level <= 2) fmt::print(stderr, "gpupool server: kafka {}: {}\n", facility, message);
}

}  // namespace

KafkaSink::KafkaSink(KafkaSinkOptions options, std::unique_ptr<EventSource> source)
    : options_(std::move(options)), source_(std::move(source)), impl_(std::make_unique<Impl>()) {}

Result<std::unique_ptr<KafkaSink>> KafkaSink::Start(KafkaSinkOptions options, std::unique_ptr<EventSource> source) {
  std::unique_ptr<KafkaSink> sink(new KafkaSink(std::move(options), std::move(source)));
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  std::vector<std::pair<std::string, std::string>> props = {
      {"bootstrap.servers", sink->options_.brokers},
      {"enable.idempotence", "true"},  // no duplicates or reordering from retries
      {"acks", "all"},
      {"message.timeout.ms", "0"},     // never give up: an outage only delays
      {"linger.ms", "5"},
      {"client.id", "gpupool-server"}};
  for (const auto& kv : sink->options_.config) props.push_back(kv);
  for (const auto& [k, v] : props) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof(err)) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return InvalidArgument(fmt::format("--events: kafka property {}={}: {}", k, v, err));
    }
  }
  rd_kafka_conf_set_opaque(conf, sink->impl_.get());
  rd_kafka_conf_set_dr_msg_cb(conf, OnDelivery);
  rd_kafka_conf_set_error_cb(conf, OnError);
  rd_kafka_conf_set_log_cb(conf, OnLog);
  sink->impl_->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!sink->impl_->rk) {
    rd_kafka_conf_destroy(conf);
    return Error(StatusCode::kFailedPrecondition, fmt::format("--events: kafka producer: {}", err));
  }
  sink->impl_->topic = rd_kafka_topic_new(sink->impl_->rk, sink->options_.topic.c_str(), nullptr);
  auto delivered = sink->source_->Delivered(sink->name());
  if (!delivered) return tl::unexpected(delivered.error());
  sink->impl_->watermark = *delivered;
  sink->stats_.delivered = sink->stats_.produced = *delivered;
  sink->thread_ = std::thread([s = sink.get()] { s->Loop(); });
  return sink;
}

KafkaSink::~KafkaSink() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void KafkaSink::Wake() {
  {
    std::lock_guard lock(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

KafkaSink::Stats KafkaSink::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

std::string KafkaSink::ProducerConfig(const std::string& key) const {
  const rd_kafka_conf_t* conf = rd_kafka_conf(impl_->rk);
  char value[256];
  size_t size = sizeof(value);
  if (rd_kafka_conf_get(conf, key.c_str(), value, &size) != RD_KAFKA_CONF_OK) return {};
  return value;
}

// The topic exists and every partition has a leader. Asking is what makes an old broker
// create a missing topic (auto.create.topics.enable); producing before its partitions have
// leaders lost messages on Kafka 0.9 under load in our tests, with success reported.
bool TopicReady(rd_kafka_t* rk, rd_kafka_topic_t* topic, std::string& why) {
  const rd_kafka_metadata_t* md = nullptr;
  const rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, topic, &md, 2000);
  if (err) {
    why = fmt::format("topic metadata: {}", rd_kafka_err2str(err));
    return false;
  }
  bool ready = md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topics[0].partition_cnt > 0;
  for (int i = 0; ready && i < md->topics[0].partition_cnt; ++i) {
    ready = md->topics[0].partitions[i].err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topics[0].partitions[i].leader >= 0;
  }
  if (!ready) {
    why = md->topic_cnt == 1 && md->topics[0].err ? fmt::format("topic: {}", rd_kafka_err2str(md->topics[0].err))
                                                   : "the topic's partitions have no leader yet";
  }
  rd_kafka_metadata_destroy(md);
  return ready;
}

void KafkaSink::Loop() {
  Impl& k = *impl_;
  uint64_t next = k.watermark;  // the last event handed to the producer
  uint64_t saved = k.watermark;
  auto last_save = std::chrono::steady_clock::now();
  bool topic_ready = false;
  for (;;) {
    bool stopping;
    {
      std::lock_guard lock(mu_);
      stopping = stop_;
    }
    if (stopping) break;
    if (!topic_ready) {
      std::string why;
      topic_ready = TopicReady(k.rk, k.topic, why);
      if (!topic_ready) {
        k.last_error = why;
        std::unique_lock lock(mu_);
        stats_.last_error = why;
        cv_.wait_for(lock, std::chrono::milliseconds(500), [&] { return stop_; });
        continue;
      }
    }
    // Read on only while librdkafka's queue has room: beyond that the store is the buffer.
    size_t handed = 0;
    if (rd_kafka_outq_len(k.rk) < 50'000) {
      auto events = source_->EventsAfter(next, 500);
      if (events) {
        for (const EventRecord& e : *events) {
          for (uint64_t gap = next + 1; gap < e.seq; ++gap) k.Confirm(gap);  // none, unless pruned
          const std::string value = EventToCloudEvent(e, options_.source);
          const std::string key = KeyOf(e.subject);
          auto produce = [&](bool with_header) {
            void* opaque = reinterpret_cast<void*>(static_cast<uintptr_t>(e.seq));
            auto* v = const_cast<char*>(value.data());
            auto* kk = const_cast<char*>(key.data());
            if (!with_header) {
              return rd_kafka_producev(k.rk, RD_KAFKA_V_RKT(k.topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                       RD_KAFKA_V_VALUE(v, value.size()), RD_KAFKA_V_KEY(kk, key.size()),
                                       RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
            }
            // CloudEvents' Kafka binding, structured mode, names the format in content-type.
            return rd_kafka_producev(k.rk, RD_KAFKA_V_RKT(k.topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                     RD_KAFKA_V_VALUE(v, value.size()), RD_KAFKA_V_KEY(kk, key.size()),
                                     RD_KAFKA_V_HEADER("content-type", "application/cloudevents+json", -1),
                                     RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
          };
          rd_kafka_resp_err_t err = produce(k.headers);
          if (err == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE && k.headers) {
            fmt::print(stderr, "gpupool server: kafka: the brokers take no message headers (before Kafka 0.11); "
                               "events go without the content-type header\n");
            k.headers = false;
            err = produce(false);
          }
          if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) break;  // later
          if (err) {
            // Cannot be produced at all: counted, reported, skipped.
            if (k.failed++ == 0) fmt::print(stderr, "gpupool server: kafka: event {}: {}\n", e.seq, rd_kafka_err2str(err));
            k.last_error = fmt::format("event {}: {}", e.seq, rd_kafka_err2str(err));
            k.Confirm(e.seq);
          }
          next = e.seq;
          ++handed;
        }
      } else {
        k.last_error = events.error().message();
      }
    }
    rd_kafka_poll(k.rk, handed > 0 ? 0 : 20);  // delivery reports run here, on this thread
    const auto now = std::chrono::steady_clock::now();
    if (k.watermark != saved && now - last_save > std::chrono::milliseconds(200)) {
      if (source_->SetDelivered(name(), k.watermark).ok()) saved = k.watermark;
      last_save = now;
    }
    {
      std::unique_lock lock(mu_);
      stats_ = Stats{.delivered = k.watermark, .produced = next, .failed = k.failed, .brokers_up = k.brokers_up,
                     .last_error = k.last_error};
      if (handed == 0 && rd_kafka_outq_len(k.rk) == 0) {
        cv_.wait_for(lock, std::chrono::milliseconds(100), [&] { return stop_ || woken_; });
      }
      woken_ = false;
    }
  }
  rd_kafka_flush(k.rk, 5'000);
  rd_kafka_poll(k.rk, 0);
  if (k.watermark != saved) (void)source_->SetDelivered(name(), k.watermark);
  std::lock_guard lock(mu_);
  stats_.delivered = k.watermark;
}

}  // namespace gp
