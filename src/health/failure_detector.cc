#include "health/failure_detector.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace gp {
namespace {

// phi of a silence z standard deviations past the expected one.
double PhiOfZ(double z) {
  // P(a later heartbeat) = 1 - CDF(z) = erfc(z / sqrt 2) / 2; erfc keeps precision in the tail.
  const double p_later = 0.5 * std::erfc(z / std::sqrt(2.0));
  return p_later <= 0 ? 300.0 : -std::log10(p_later);
}

// The least z at which phi reaches `phi` (phi is increasing in z): bisection, once per detector.
double ZForPhi(double phi) {
  double lo = -40;
  double hi = 40;
  for (int i = 0; i < 100; ++i) {
    const double mid = (lo + hi) / 2;
    (PhiOfZ(mid) >= phi ? hi : lo) = mid;
  }
  return hi;
}

}  // namespace

PhiAccrualDetector::PhiAccrualDetector(PhiOptions o) : o_(o), z_suspect_(ZForPhi(o.suspect_phi)), z_down_(ZForPhi(o.down_phi)) {
  Refit();
}

void PhiAccrualDetector::Refit() {
  const double n = static_cast<double>(count_);
  mean_ = n > 0 ? sum_ / n : static_cast<double>(o_.first_interval.value());
  const double var = n > 1 ? std::max(0.0, sum_sq_ / n - mean_ * mean_) : 0.0;
  sigma_ = std::max(std::sqrt(var), static_cast<double>(o_.min_stddev.value()));
  const double base = mean_ + static_cast<double>(o_.acceptable_pause.value());
  suspect_after_ = base + z_suspect_ * sigma_;
  down_after_ = base + z_down_ * sigma_;
}

void PhiAccrualDetector::Heartbeat(Millis now) {
  if (started()) {
    const int64_t gap = std::max<int64_t>(0, (now - last_).value());
    const auto sample = static_cast<uint16_t>(std::min<int64_t>(gap, UINT16_MAX));
    const size_t window = static_cast<size_t>(std::max(1, o_.window));
    if (ring_.empty()) ring_.resize(window);
    if (count_ == window) {
      const double old = static_cast<double>(ring_[head_]);
      sum_ -= old;
      sum_sq_ -= old * old;
      ring_[head_] = sample;
      head_ = (head_ + 1) % window;
    } else {
      ring_[(head_ + count_) % window] = sample;
      ++count_;
    }
    sum_ += static_cast<double>(sample);
    sum_sq_ += static_cast<double>(sample) * static_cast<double>(sample);
  }
  last_ = now;
  held_ = false;
  Refit();
}

double PhiAccrualDetector::Phi(Millis now) const {
  if (!started() || held_) return 0;
  const double elapsed = static_cast<double>((now - last_).value());
  return PhiOfZ((elapsed - mean_ - static_cast<double>(o_.acceptable_pause.value())) / sigma_);
}

Liveness PhiAccrualDetector::Judge(Millis now) const {
  if (!started() || held_) return Liveness::kAlive;
  const double elapsed = static_cast<double>((now - last_).value());
  if (elapsed >= down_after_) return Liveness::kDown;
  if (elapsed >= suspect_after_) return Liveness::kSuspect;
  return Liveness::kAlive;
}

}  // namespace gp
