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

}  // namespace
}  // namespace gp
