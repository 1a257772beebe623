#include "core/status.h"

namespace gp {

std::string Status::ToString() const {
  const char* name = "ok";
  switch (code_) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: name = "invalid argument"; break;
    case StatusCode::kNotFound: name = "not found"; break;
    case StatusCode::kParse: name = "parse error"; break;
    case StatusCode::kFailedPrecondition: name = "failed precondition"; break;
    case StatusCode::kInternal: name = "internal error"; break;
    case StatusCode::kUnavailable: name = "unavailable"; break;
    case StatusCode::kPermissionDenied: name = "permission denied"; break;
    case StatusCode::kTooLarge: name = "too large"; break;
  }
  return std::string(name) + ": " + message_;
}

}  // namespace gp
