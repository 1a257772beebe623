#include "core/models.h"

#include <algorithm>
#include <cmath>

#include "core/int128.h"

namespace gp {

LoadTerms ComputeLoad(const Utilisation& u) {
  const double r =
      static_cast<double>(u.cpu.value() + u.gpu.value() + u.memory.value()) / 1000.0;
  const double cap = static_cast<double>(std::max<int64_t>(u.capacity.value(), 1)) / 1000.0;
  return LoadTerms{.r = r, .l = r / cap};
}

double DistanceKm(GeoPoint a, GeoPoint b) {
  constexpr double kEarthRadiusKm = 6371.0;
  constexpr double kRad = 3.14159265358979323846 / 180.0;
  const double dlat = (b.latitude_deg - a.latitude_deg) * kRad;
  const double dlon = (b.longitude_deg - a.longitude_deg) * kRad;
  const double h = std::sin(dlat / 2) * std::sin(dlat / 2) +
                   std::cos(a.latitude_deg * kRad) * std::cos(b.latitude_deg * kRad) *
                       std::sin(dlon / 2) * std::sin(dlon / 2);
  return 2 * kEarthRadiusKm * std::asin(std::min(1.0, std::sqrt(h)));
}

Micros FibreLatency(double km) {
  return Micros{static_cast<int64_t>(std::llround(km / kFibreKmPerSecond * 1e6))};
}

TransferEstimate EstimateTransfer(Bytes size, const NetworkPath& path, BitsPerSecond nic) {
  int64_t bw = path.bandwidth.value();
  if (nic.value() > 0 && (bw == 0 || nic.value() < bw)) bw = nic.value();
  int64_t payload_us = 0;
  if (bw > 0 && size.value() > 0) {
    // bits * 1e6 / (bits/s), in 128-bit so that a petabyte does not overflow.
    const Int128 bits = static_cast<Int128>(size.value()) * 8;
    payload_us = static_cast<int64_t>(bits * 1'000'000 / bw);
  }
  // Egress is billed per GB (1e9 bytes), pro rata.
  const Int128 egress =
      static_cast<Int128>(path.egress_per_gb.value()) * size.value() / 1'000'000'000;
  return TransferEstimate{.time = Micros{path.latency.value() + payload_us},
                          .egress_cost = MicroUsd{static_cast<int64_t>(egress)}};
}

MicroUsd GpuCost(MicroUsd per_gpu_hour, GpuMilli gpus, Millis duration) {
  // micro-USD/h x milli-GPU x ms / (1000 milli-GPU/GPU x 3,600,000 ms/h)
  const Int128 v = static_cast<Int128>(per_gpu_hour.value()) * gpus.value() *
                     duration.value() / (1000LL * 3'600'000LL);
  return MicroUsd{static_cast<int64_t>(v)};
}

}  // namespace gp
