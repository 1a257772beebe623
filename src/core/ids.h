// Strong id types: every id that crosses a module boundary is one of these, never a raw int.
// A value type; no ownership; safe to copy between threads.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>

namespace gp {

template <typename Tag, typename Rep = uint32_t>
class StrongId {
 public:
  using rep_type = Rep;
  constexpr StrongId() = default;
  constexpr explicit StrongId(Rep v) : v_(v) {}
  constexpr Rep value() const { return v_; }
  constexpr auto operator<=>(const StrongId&) const = default;

 private:
  Rep v_{};
};

using NodeId = StrongId<struct NodeTag>;
using SiteId = StrongId<struct SiteTag>;
using ProviderId = StrongId<struct ProviderTag>;
using GpuModelId = StrongId<struct GpuModelTag, uint8_t>;
using TenantId = StrongId<struct TenantTag>;
using JobId = StrongId<struct JobTag, uint64_t>;

}  // namespace gp

template <typename Tag, typename Rep>
struct std::hash<gp::StrongId<Tag, Rep>> {
  size_t operator()(gp::StrongId<Tag, Rep> id) const noexcept { return std::hash<Rep>{}(id.value()); }
};
