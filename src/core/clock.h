// Time as the core sees it: an injected Clock. The live server injects the wall clock, the
// simulator a virtual one; nothing below apps/ reads the system time itself.
// Implementations say their own thread-safety.
#pragma once

#include "core/quantity.h"

namespace gp {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since an epoch fixed by the implementation.
  virtual Millis Now() const = 0;
};

// A clock that moves only when told to: the simulator's, and the tests'.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(Millis start = Millis{0}) : now_(start) {}
  Millis Now() const override { return now_; }
  void Set(Millis t) { now_ = t; }
  void Advance(Millis d) { now_ += d; }

 private:
  Millis now_;
};

}  // namespace gp
