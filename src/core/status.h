// Errors are values. `Status` says what went wrong in words a user can act on (naming the file,
// line or field); `Result<T>` is either a T or a Status. Exceptions never cross a module.
// Value types; safe anywhere.
#pragma once

#include <string>
#include <utility>

#include <tl/expected.hpp>

namespace gp {

// kUnavailable: the peer refused the connection (its process is down; the host is reachable).
// kPermissionDenied: the caller is who it says, but may not do this (another node's attempt).
// kTooLarge: over a size limit (an upload, a page).
enum class StatusCode { kOk, kInvalidArgument, kNotFound, kParse, kFailedPrecondition, kInternal, kUnavailable, kPermissionDenied, kTooLarge };

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return {}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid argument: fleet.toml:12: field 'gpus' must be 1..16, got 0"
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// A T or a Status; [[nodiscard]], as Status is: a result that is dropped is a bug the compiler
// reports (cast to void where dropping it is the intent, and say why).
template <typename T>
class [[nodiscard]] Result : public tl::expected<T, Status> {
 public:
  using tl::expected<T, Status>::expected;
  Result(const tl::expected<T, Status>& e) : tl::expected<T, Status>(e) {}  // NOLINT: implicit by design
  Result(tl::expected<T, Status>&& e) : tl::expected<T, Status>(std::move(e)) {}  // NOLINT
};

inline tl::unexpected<Status> Error(StatusCode code, std::string message) {
  return tl::unexpected<Status>(Status(code, std::move(message)));
}
inline tl::unexpected<Status> InvalidArgument(std::string message) {
  return Error(StatusCode::kInvalidArgument, std::move(message));
}
inline tl::unexpected<Status> ParseError(std::string message) {
  return Error(StatusCode::kParse, std::move(message));
}

}  // namespace gp
