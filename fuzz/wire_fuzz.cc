// libFuzzer harness: the wire codec (agent <-> server messages, REST bodies, journal records).
// The first byte picks the decoder; the rest is its input. Whatever it accepts must encode and
// decode again to the same thing (a record the journal stores must load back).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "wire/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 7) {
    case 0: {
      auto r = gp::ParseSubmitRequest(in);
      if (r) {
        auto back = gp::JobFromJson(gp::JobToJson(*r));
        if (!back || back->command != r->command || back->env != r->env) std::abort();
      }
      break;
    }
    case 1: {
      auto r = gp::ParseRegister(in);
      if (r && !gp::ParseRegister(gp::RegisterToJson(*r))) std::abort();
      break;
    }
    case 2: {
      auto h = gp::ParseHeartbeat(in);
      if (h) {
        auto back = gp::ParseHeartbeat(gp::HeartbeatToJson(*h));
        if (!back || back->tasks.size() != h->tasks.size()) std::abort();
        for (size_t i = 0; i < h->tasks.size(); ++i) {
          if (back->tasks[i].stdout_chunk != h->tasks[i].stdout_chunk) std::abort();  // output is bytes, kept exactly
        }
      }
      break;
    }
    case 3: {
      auto r = gp::ParseReply(in);
      if (r && !gp::ParseReply(gp::ReplyToJson(*r))) std::abort();
      break;
    }
    case 4: {
      auto j = gp::JobFromJson(in);
      if (j && !gp::JobFromJson(gp::JobToJson(*j))) std::abort();
      break;
    }
    case 5: (void)gp::NodeFromJson(in); break;
    case 6: {
      auto b = gp::Base64Decode(in);
      if (b && gp::Base64Decode(gp::Base64Encode(*b)) != b) std::abort();
      (void)gp::ErrorJson(in);
      break;
    }
  }
  return 0;
}
