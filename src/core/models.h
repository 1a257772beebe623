// The models the scheduler reasons with, each a small pure function with its arithmetic shown.
//
// Load (seed article, section 4): R_i = sum_j C_j, the node's usage fractions of CPU, GPU and
// memory; L_i = R_i / U_i, with U_i the node's available capacity (1 unless told otherwise).
//   Node 1 of section 4.2: CPU 60%, GPU 40%, memory 80% -> R = 0.6 + 0.4 + 0.8 = 1.8, L = 1.8.
//
// Transfer: T = one-way latency + size / bottleneck bandwidth. Latency is the link's measured
// one, else distance / 200,000 km/s (light in fibre).
//   100 GB over 10 Gbit/s across 100 km: 8e11 bit / 1e10 bit/s = 80 s, plus 100 / 200,000 s =
//   0.5 ms: T = 80.0005 s. (The seed's "0.01 ms" mixes units.)
//
// Cost: price per GPU-hour x GPUs x hours.
//   $3.00/GPU-h x 8 GPUs x 1.5 h = $36.00.
// Pure; thread-safe.
#pragma once

#include <cstdint>

#include "core/quantity.h"

namespace gp {

// Utilisation fractions in per-mille (600 = 60%); capacity is U_i (1000 = 1.0).
struct Utilisation {
  PerMille cpu{0};
  PerMille gpu{0};
  PerMille memory{0};
  PerMille capacity{1000};
};

struct LoadTerms {
  double r = 0;  // R_i, the sum of the usage fractions (0..3)
  double l = 0;  // L_i = R_i / U_i
};
LoadTerms ComputeLoad(const Utilisation& u);

struct GeoPoint {
  double latitude_deg = 0;
  double longitude_deg = 0;
};
// Great-circle distance (haversine, Earth radius 6,371 km).
double DistanceKm(GeoPoint a, GeoPoint b);
inline constexpr double kFibreKmPerSecond = 200'000.0;
// 100 km -> 500 us.
Micros FibreLatency(double km);

struct NetworkPath {
  BitsPerSecond bandwidth{0};  // 0 = unbounded (same site: the NIC bounds it)
  Micros latency{0};
  MicroUsd egress_per_gb{0};
  bool same_site = false;
};

struct TransferEstimate {
  Micros time{0};
  MicroUsd egress_cost{0};
};
// Bottleneck = the smaller of the path's bandwidth and the receiving NIC's (0 means unbounded
// for either; both 0 means the data is already there and only latency remains).
TransferEstimate EstimateTransfer(Bytes size, const NetworkPath& path, BitsPerSecond nic);

// price x GPUs x duration, where GPUs may be fractional (GpuMilli: 460 = 0.46 GPU).
MicroUsd GpuCost(MicroUsd per_gpu_hour, GpuMilli gpus, Millis duration);

}  // namespace gp
