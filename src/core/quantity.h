// Fixed-point quantities. Every resource amount is an integer in a named unit so that sums are
// exact and the same on every machine; `double` appears only in scores.
//   MilliCpu:  1 core = 1000.            MiB: memory in mebibytes.
//   GpuMilli:  1 whole GPU = 1000 (a 0.46 GPU share, as in the Alibaba trace, is 460).
//   PerMille:  a fraction, 1.0 = 1000 (utilisation, load terms).
//   Bytes, BitsPerSecond, MicroUsd (1 USD = 1,000,000), Millis (durations and simulated time),
//   Micros (latencies).
// Value types; safe anywhere.
#pragma once

#include <compare>
#include <cstdint>

namespace gp {

template <typename Tag>
class Quantity {
 public:
  constexpr Quantity() = default;
  constexpr explicit Quantity(int64_t v) : v_(v) {}
  constexpr int64_t value() const { return v_; }
  constexpr auto operator<=>(const Quantity&) const = default;
  constexpr Quantity operator+(Quantity o) const { return Quantity(v_ + o.v_); }
  constexpr Quantity operator-(Quantity o) const { return Quantity(v_ - o.v_); }
  constexpr Quantity operator*(int64_t k) const { return Quantity(v_ * k); }
  constexpr Quantity& operator+=(Quantity o) {
    v_ += o.v_;
    return *this;
  }
  constexpr Quantity& operator-=(Quantity o) {
    v_ -= o.v_;
    return *this;
  }

 private:
  int64_t v_ = 0;
};

using MilliCpu = Quantity<struct MilliCpuTag>;
using MiB = Quantity<struct MiBTag>;
using GpuMilli = Quantity<struct GpuMilliTag>;
using PerMille = Quantity<struct PerMilleTag>;
using Bytes = Quantity<struct BytesTag>;
using BitsPerSecond = Quantity<struct BitsPerSecondTag>;
using MicroUsd = Quantity<struct MicroUsdTag>;
using Millis = Quantity<struct MillisTag>;
using Micros = Quantity<struct MicrosTag>;

inline constexpr GpuMilli kWholeGpu{1000};
inline constexpr int64_t kMicroUsdPerUsd = 1'000'000;

}  // namespace gp
