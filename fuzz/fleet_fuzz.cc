// libFuzzer harness: the fleet loaders (TOML fleet files and node CSV lists). The first byte
// picks the loader; a bad file must be an error naming its line or field.
//
// Fleets of thousands of nodes cost tens of milliseconds a run under the sanitizers and bury
// the search (the first long run stalled at 2,000 runs a second on them); the node limit
// itself is covered by unit tests (FleetTest). So a spec or a `count` written with four or
// more digits (in any TOML integer form) is skipped.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "adapters/fleet_loader.h"

namespace {

bool LongNumberAt(std::string_view t, size_t i) {
  while (i < t.size() && (t[i] == ' ' || t[i] == '\t' || t[i] == '=' || t[i] == '"' || t[i] == '+')) ++i;
  size_t n = 0;
  while (i + n < t.size() && (std::isxdigit(static_cast<unsigned char>(t[i + n])) || t[i + n] == '_' || t[i + n] == 'x' ||
                              t[i + n] == 'o' || t[i + n] == 'b')) {
    ++n;
  }
  return n >= 4;
}

bool ManyNodes(std::string_view t) {
  if (LongNumberAt(t, 0)) return true;
  for (size_t p = t.find("count"); p != std::string_view::npos; p = t.find("count", p + 1)) {
    if (LongNumberAt(t, p + 5)) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (ManyNodes(text)) return 0;
  if (data[0] % 3 == 0) {
    (void)gp::ParseFleetNodeCsv(text, "fuzz.csv");
  } else if (data[0] % 3 == 1) {
    (void)gp::ParseFleetToml(text, "fuzz.toml");
  } else {
    (void)gp::LoadFleet(text);  // a spec such as 4x8xH100 (or a path, which will not exist)
  }
  return 0;
}
