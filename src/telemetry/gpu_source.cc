#include "telemetry/gpu_source.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>

#include "core/gpu_catalog.h"

namespace gp {

Result<SimulatedGpuSource> SimulatedGpuSource::Parse(std::string_view spec, std::string_view host) {
  const size_t x = spec.find('x');
  int count = 0;
  const char* end = spec.data() + (x == std::string_view::npos ? 0 : x);
  auto [p, ec] = std::from_chars(spec.data(), end, count);
  if (x == std::string_view::npos || ec != std::errc() || p != end || count < 1 || count > 16 || x + 1 >= spec.size()) {
    return InvalidArgument(fmt::format("simulated GPUs '{}': expected COUNTxMODEL with COUNT 1..16, such as 8xH100", spec));
  }
  const std::string model(spec.substr(x + 1));
  const GpuModelInfo* info = FindKnownGpuModel(model);
  SimulatedGpuSource s;
  for (int i = 0; i < count; ++i) {
    GpuDevice d{.index = i, .uuid = fmt::format("GPU-sim-{}-{:02d}", host, i),
                .name = "Simulated " + (info ? info->name : model), .memory = info ? info->memory : MiB{0},
                .compute_capability = info ? info->compute_capability : 0,
                .nvlink_peers = static_cast<uint16_t>(((1u << count) - 1) & ~(1u << i))};
    s.load_.push_back(GpuSample{.index = i, .memory_total = d.memory, .temperature_c = 30, .power_mw = 60'000});
    s.devices_.push_back(std::move(d));
  }
  return s;
}

Result<std::vector<GpuSample>> SimulatedGpuSource::Sample() { return load_; }

Status SimulatedGpuSource::SetBusy(int index, PerMille share, MiB memory) {
  if (index < 0 || index >= static_cast<int>(load_.size())) {
    return Status(StatusCode::kInvalidArgument, fmt::format("no simulated GPU {}", index));
  }
  GpuSample& s = load_[static_cast<size_t>(index)];
  s.utilisation = PerMille{std::clamp<int64_t>(share.value(), 0, 1000)};
  s.memory_utilisation = PerMille{s.utilisation.value() / 2};
  s.memory_used = MiB{std::clamp<int64_t>(memory.value(), 0, s.memory_total.value())};
  // A rough thermal model: idle 30 C, +45 C at full load; 60 W idle, +640 W at full load.
  s.temperature_c = 30 + static_cast<int>(45 * s.utilisation.value() / 1000);
  s.power_mw = 60'000 + 640'000 * s.utilisation.value() / 1000;
  return Status::Ok();
}

std::string ModelFromDeviceName(std::string_view name) {
  for (std::string_view prefix : {"Simulated ", "NVIDIA ", "Tesla ", "Quadro ", "GeForce "}) {
    if (name.starts_with(prefix)) name.remove_prefix(prefix.size());
  }
  const size_t cut = name.find_first_of(" -");
  std::string base(name.substr(0, cut));
  if (base.empty()) return std::string(name);
  // Keep the memory variant where the catalog knows one ("A100-40GB" stays distinct).
  if (cut != std::string_view::npos && name.substr(cut).find("40GB") != std::string_view::npos &&
      FindKnownGpuModel(base + "-40GB")) {
    return base + "-40GB";
  }
  return base;
}

KeptGpuSample::KeptGpuSample(const GpuSample& s) {
  auto clamp = [](int64_t v, int64_t lo, int64_t hi) { return std::clamp(v, lo, hi); };
  ecc_uncorrected_ = s.ecc_uncorrected ? std::max<int64_t>(0, *s.ecc_uncorrected) : -1;
  memory_used_mib_ = static_cast<uint32_t>(clamp(s.memory_used.value(), 0, UINT32_MAX));
  memory_total_mib_ = static_cast<uint32_t>(clamp(s.memory_total.value(), 0, UINT32_MAX));
  power_mw_ = s.power_mw ? static_cast<uint32_t>(clamp(*s.power_mw, 0, kNoPower - 1)) : kNoPower;
  utilisation_ = static_cast<uint16_t>(clamp(s.utilisation.value(), 0, UINT16_MAX));
  memory_utilisation_ = static_cast<uint16_t>(clamp(s.memory_utilisation.value(), 0, UINT16_MAX));
  temperature_c_ = s.temperature_c ? static_cast<int16_t>(clamp(*s.temperature_c, kNoTemperature + 1, INT16_MAX)) : kNoTemperature;
  index_ = static_cast<uint8_t>(clamp(s.index, 0, UINT8_MAX));
}

GpuSample KeptGpuSample::sample() const {
  GpuSample s{.index = index_,
              .utilisation = PerMille{utilisation_},
              .memory_utilisation = PerMille{memory_utilisation_},
              .memory_used = MiB{memory_used_mib_},
              .memory_total = MiB{memory_total_mib_}};
  if (temperature_c_ != kNoTemperature) s.temperature_c = temperature_c_;
  if (power_mw_ != kNoPower) s.power_mw = power_mw_;
  if (ecc_uncorrected_ >= 0) s.ecc_uncorrected = ecc_uncorrected_;
  return s;
}

}  // namespace gp
