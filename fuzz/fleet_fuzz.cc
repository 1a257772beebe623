// libFuzzer harness: the fleet loaders (TOML fleet files and node CSV lists). The first byte
// picks the loader; a bad file must be an error naming its line or field.
#include <cstddef>
#include <cstdint>
#include <string>

#include "adapters/fleet_loader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 3 == 0) {
    (void)gp::ParseFleetNodeCsv(text, "fuzz.csv");
  } else if (data[0] % 3 == 1) {
    (void)gp::ParseFleetToml(text, "fuzz.toml");
  } else {
    (void)gp::LoadFleet(text);  // a spec such as 4x8xH100 (or a path, which will not exist)
  }
  return 0;
}
