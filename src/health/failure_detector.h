// The phi accrual failure detector (Hayashibara et al., 2004; as in Akka and Cassandra). It
// keeps a window of heartbeat inter-arrival times and, at any instant, gives phi: how unlikely
// it is, on a -log10 scale, that a heartbeat is merely late. phi = 1 means a 10% chance that
// the node is alive and slow, phi = 8 one in 10^8. Adaptive: a node whose heartbeats jitter
// (a busy machine) needs a longer silence before phi climbs.
//
// Worked example: heartbeats every 500 ms with little jitter (sigma at its 100 ms floor) and an
// acceptable pause of 500 ms. After 1,000 ms of silence, z = (1000 - 500 - 500) / 100 = 0:
// phi = 0.3. After 1,500 ms, z = 5: phi = 6.5. After 1,600 ms, z = 6: phi = 9.0, past the
// default "down" threshold of 8: detection at about 1.6 s.
//
// Pure: time comes from the caller (the injected clock). Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/quantity.h"

namespace gp {

struct PhiOptions {
  int window = 100;                  // inter-arrival samples kept
  Millis min_stddev{100};            // floor on sigma: regular heartbeats are not "perfect"
  Millis acceptable_pause{500};      // added to the mean: a GC pause or a busy core is not death
  Millis first_interval{500};        // assumed before any sample: the configured heartbeat interval
  double suspect_phi = 3.0;
  double down_phi = 8.0;
};

enum class Liveness : uint8_t { kAlive, kSuspect, kDown };

class PhiAccrualDetector {
 public:
  explicit PhiAccrualDetector(PhiOptions o = {});
  void Heartbeat(Millis now);
  // The server answered the node at `now`: the silence that counts starts again here. With long
  // polls the server, not the node, decides how long a request is held; measuring from the
  // answer keeps an idle node's cadence (held 0.5 s) and a busy one's (answered at once) alike.
  void Replied(Millis now) {
    held_ = false;
    if (started() && now > last_) last_ = now;
  }
  // The node's next heartbeat has reached the server, which has not read it yet (its loop is
  // behind): the silence restarts at `now`; the sample is taken when the heartbeat is read.
  void Heard(Millis now) {
    if (started() && now > last_) last_ = now;
  }
  // The server holds the node's heartbeat (a long poll): the node is waiting on the server,
  // not silent, until Replied.
  void Held() { held_ = started(); }
  bool held() const { return held_; }
  double Phi(Millis now) const;
  // What phi says now, in O(1) without evaluating it: phi is monotonic in the silence, so the
  // silences at which it crosses the thresholds are worked out when a heartbeat arrives (the
  // server judges every node on every tick; 10,000 nodes cost 10,000 comparisons).
  Liveness Judge(Millis now) const;
  bool started() const { return last_.value() >= 0; }
  Millis last() const { return last_; }

 private:
  PhiOptions o_;
  void Refit();  // the mean and sigma of the window, and the silences that cross the thresholds

  Millis last_{-1};
  bool held_ = false;
  double z_suspect_ = 0;    // the z at which phi reaches suspect_phi, and down_phi (constants)
  double z_down_ = 0;
  double mean_ = 0;
  double sigma_ = 0;
  double suspect_after_ = 0;  // silence (ms) from which the node is suspect, and down
  double down_after_ = 0;
  // The window as a ring (gaps in ms, clamped to 16 bits: 65.5 s, far past any interval the
  // server asks for; a longer silence has made the node down already): 2 bytes a sample, with
  // no allocation per sample. At 10,000 nodes that is 2 MB, not the 11 MB a deque of int64 took.
  std::vector<uint16_t> ring_;
  size_t head_ = 0;   // the oldest sample once the ring is full
  size_t count_ = 0;
  double sum_ = 0;
  double sum_sq_ = 0;
};

}  // namespace gp
