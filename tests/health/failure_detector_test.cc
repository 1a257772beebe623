#include "health/failure_detector.h"

#include <gtest/gtest.h>

#include "core/rng.h"

namespace gp {
namespace {

// The worked example of the header: regular 500 ms heartbeats.
TEST(PhiAccrualTest, RegularHeartbeatsDetectAtAboutOnePointSixSeconds) {
  PhiAccrualDetector d;
  for (int i = 0; i <= 20; ++i) d.Heartbeat(Millis{i * 500});
  const Millis last{20 * 500};
  EXPECT_NEAR(d.Phi(last + Millis{1000}), 0.30, 0.01);  // z = 0
  EXPECT_NEAR(d.Phi(last + Millis{1500}), 6.54, 0.05);  // z = 5
  EXPECT_EQ(d.Judge(last + Millis{900}), Liveness::kAlive);
  EXPECT_EQ(d.Judge(last + Millis{1400}), Liveness::kSuspect);
  EXPECT_EQ(d.Judge(last + Millis{1600}), Liveness::kDown);
  // Where exactly it flips to down, in 10 ms steps: within 2 s of the last heartbeat.
  int64_t t = 0;
  while (d.Judge(last + Millis{t}) != Liveness::kDown) t += 10;
  EXPECT_GE(t, 1500);
  EXPECT_LE(t, 2000);
}

// A busy machine: heartbeats arrive every 500 ms +- up to 400 ms. Over 10,000 of them, none
// is late enough to be called down (no false alarm), and detection still comes within 3 s.
TEST(PhiAccrualTest, JitterIsNotDeath) {
  PhiAccrualDetector d;
  SplitMix64 rng(42);
  int64_t now = 0;
  d.Heartbeat(Millis{now});
  for (int i = 0; i < 10'000; ++i) {
    const int64_t gap = 100 + static_cast<int64_t>(rng.Below(801));  // 100..900 ms
    EXPECT_NE(d.Judge(Millis{now + gap - 1}), Liveness::kDown) << "false alarm at heartbeat " << i;
    now += gap;
    d.Heartbeat(Millis{now});
  }
  int64_t t = 0;
  while (d.Judge(Millis{now + t}) != Liveness::kDown) t += 10;
  EXPECT_LE(t, 3000);
}

TEST(PhiAccrualTest, NothingBeforeTheFirstHeartbeat) {
  PhiAccrualDetector d;
  EXPECT_EQ(d.Phi(Millis{1'000'000}), 0);
  d.Heartbeat(Millis{0});
  // One heartbeat: the configured interval stands in for the mean.
  EXPECT_EQ(d.Judge(Millis{900}), Liveness::kAlive);
  EXPECT_EQ(d.Judge(Millis{2000}), Liveness::kDown);
}

// Judge works from thresholds fitted at each heartbeat; it must say what phi says, for any
// history of gaps and any silence (seeded random histories, jittery and regular).
TEST(PhiAccrualTest, JudgeAgreesWithPhiEverywhere) {
  SplitMix64 rng(7);
  for (int run = 0; run < 200; ++run) {
    PhiOptions o{.acceptable_pause = Millis{static_cast<int64_t>(rng.Below(1000))},
                 .suspect_phi = 1.0 + static_cast<double>(rng.Below(40)) / 10,
                 .down_phi = 6.0 + static_cast<double>(rng.Below(60)) / 10};
    PhiAccrualDetector d(o);
    int64_t now = 0;
    const int beats = static_cast<int>(rng.Below(30));
    for (int i = 0; i <= beats; ++i) {
      now += 50 + static_cast<int64_t>(rng.Below(run % 2 ? 2000 : 200));
      d.Heartbeat(Millis{now});
    }
    for (int64_t t = 0; t < 20'000; t += 7) {
      const double phi = d.Phi(Millis{now + t});
      const Liveness want = phi >= o.down_phi ? Liveness::kDown : phi >= o.suspect_phi ? Liveness::kSuspect : Liveness::kAlive;
      const Liveness got = d.Judge(Millis{now + t});
      if (got != want) {
        // Only at the crossing itself may rounding differ: a millisecond either side agrees.
        EXPECT_TRUE(d.Judge(Millis{now + t - 1}) == want || d.Judge(Millis{now + t + 1}) == want)
            << "run " << run << " silence " << t << " phi " << phi;
      }
    }
  }
}

// A held heartbeat (a long poll the server keeps) is not silence, however long it is held;
// the silence counts again from the server's answer.
TEST(PhiAccrualTest, HeldPollIsNotSilence) {
  PhiAccrualDetector d;
  for (int i = 0; i <= 20; ++i) d.Heartbeat(Millis{i * 500});
  d.Held();
  EXPECT_EQ(d.Judge(Millis{10'000 + 60'000}), Liveness::kAlive);
  d.Replied(Millis{70'000});
  EXPECT_EQ(d.Judge(Millis{70'900}), Liveness::kAlive);
  EXPECT_EQ(d.Judge(Millis{72'000}), Liveness::kDown);
}

}  // namespace
}  // namespace gp
