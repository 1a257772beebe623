// The one source of randomness the scheduling core may use. Injected, seeded, never global:
// the same seed gives the same sequence, so a schedule replays from (snapshot, seed).
// Not thread-safe; each caller owns its Rng.
#pragma once

#include <cstdint>

#include "core/int128.h"

namespace gp {

class Rng {
 public:
  virtual ~Rng() = default;
  virtual uint64_t Next() = 0;
  // Uniform in [0, n) for n > 0 (Lemire's multiply-shift; the bias is below 2^-32 for n < 2^32).
  uint64_t Below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<UInt128>(Next()) * n) >> 64);
  }
  // Uniform in [0, 1).
  double Unit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
};

// SplitMix64 (Steele, Lea, Flood 2014): small, fast, passes BigCrush; ample for tie-breaking.
class SplitMix64 final : public Rng {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() override {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

}  // namespace gp
