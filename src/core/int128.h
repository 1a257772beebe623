// 128-bit intermediates for products that can pass 2^63 (price x GPUs x milliseconds).
#pragma once

namespace gp {
__extension__ typedef __int128 Int128;
__extension__ typedef unsigned __int128 UInt128;
}  // namespace gp
