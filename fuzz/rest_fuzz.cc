// libFuzzer harness: the REST decoders a request target goes through before any handler: the
// query and form parser, percent-decoding, the UTF-8 check, and the value parsers of query and
// body fields (durations, sizes, job states, node names).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "adapters/http.h"
#include "core/units.h"
#include "state/records.h"
#include "wire/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  for (const auto& [k, v] : gp::ParseForm(in)) {
    (void)gp::IsValidUtf8(k);
    (void)gp::IsValidUtf8(v);
  }
  const std::string decoded = gp::UrlDecode(in);
  if (decoded.size() > in.size()) std::abort();  // decoding never grows text
  (void)gp::IsValidUtf8(in);
  (void)gp::ParseDuration(decoded);
  (void)gp::ParseMiB(decoded);
  (void)gp::ParseBytes(decoded);
  (void)gp::ParseJobState(decoded);
  (void)gp::ValidateNodeName(decoded);
  return 0;
}
