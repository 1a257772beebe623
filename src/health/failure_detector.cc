#include "health/failure_detector.h"

#include <algorithm>
#include <cmath>

namespace gp {

void PhiAccrualDetector::Heartbeat(Millis now) {
  if (started()) {
    const int64_t gap = std::max<int64_t>(0, (now - last_).value());
    intervals_.push_back(gap);
    sum_ += static_cast<double>(gap);
    sum_sq_ += static_cast<double>(gap) * static_cast<double>(gap);
    if (static_cast<int>(intervals_.size()) > o_.window) {
      const double old = static_cast<double>(intervals_.front());
      sum_ -= old;
      sum_sq_ -= old * old;
      intervals_.pop_front();
    }
  }
  last_ = now;
  held_ = false;
}

double PhiAccrualDetector::Phi(Millis now) const {
  if (!started() || held_) return 0;
  const double n = static_cast<double>(intervals_.size());
  const double mean = n > 0 ? sum_ / n : static_cast<double>(o_.first_interval.value());
  const double var = n > 1 ? std::max(0.0, sum_sq_ / n - mean * mean) : 0.0;
  const double sigma = std::max(std::sqrt(var), static_cast<double>(o_.min_stddev.value()));
  const double elapsed = static_cast<double>((now - last_).value());
  const double z = (elapsed - mean - static_cast<double>(o_.acceptable_pause.value())) / sigma;
  // P(a later heartbeat) = 1 - CDF(z) = erfc(z / sqrt 2) / 2; erfc keeps precision in the tail.
  const double p_later = 0.5 * std::erfc(z / std::sqrt(2.0));
  return p_later <= 0 ? 300.0 : -std::log10(p_later);
}

Liveness PhiAccrualDetector::Judge(Millis now) const {
  const double phi = Phi(now);
  if (phi >= o_.down_phi) return Liveness::kDown;
  if (phi >= o_.suspect_phi) return Liveness::kSuspect;
  return Liveness::kAlive;
}

}  // namespace gp
