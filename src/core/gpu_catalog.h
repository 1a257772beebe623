// Known GPU models with their memory, compute capability and a list-price ballpark, used when a
// fleet names a model without those details. Pure data; thread-safe.
#pragma once

#include <string_view>

#include "core/fleet.h"

namespace gp {

// Case-insensitive; accepts common aliases ("a100-80gb", "v100m32"). nullptr when unknown.
const GpuModelInfo* FindKnownGpuModel(std::string_view name);

}  // namespace gp
