// Box<T>: a value kept out of line, read like std::optional<T> (test it, *, ->, emplace, reset,
// assign a T or nullopt) but one pointer wide when empty. Copies copy the value; moves move the
// pointer. For what only a few records have (an array's spec and progress, a job's data set):
// a job record sits in the server's memory 100,000 times over, and each byte of it counts.
// Not thread-safe beyond what the value itself is.
#pragma once

#include <concepts>
#include <memory>
#include <optional>
#include <utility>

namespace gp {

template <typename T>
class Box {
 public:
  Box() = default;
  Box(std::nullopt_t) {}                                    // NOLINT: as std::optional
  Box(T value) : p_(std::make_unique<T>(std::move(value))) {}  // NOLINT: as std::optional
  Box(const Box& o) : p_(o.p_ ? std::make_unique<T>(*o.p_) : nullptr) {}
  Box(Box&&) noexcept = default;
  Box& operator=(const Box& o) {
    if (this != &o) p_ = o.p_ ? std::make_unique<T>(*o.p_) : nullptr;
    return *this;
  }
  Box& operator=(Box&&) noexcept = default;
  Box& operator=(T value) {
    p_ = std::make_unique<T>(std::move(value));
    return *this;
  }
  Box& operator=(std::nullopt_t) {
    p_.reset();
    return *this;
  }
  ~Box() = default;

  bool has_value() const { return p_ != nullptr; }
  explicit operator bool() const { return has_value(); }
  T& operator*() { return *p_; }
  const T& operator*() const { return *p_; }
  T* operator->() { return p_.get(); }
  const T* operator->() const { return p_.get(); }
  template <typename... Args>
  T& emplace(Args&&... args) {
    p_ = std::make_unique<T>(std::forward<Args>(args)...);
    return *p_;
  }
  void reset() { p_.reset(); }
  // The value, made (defaulted) on first use: what a writer calls.
  T& ensure() {
    if (!p_) p_ = std::make_unique<T>();
    return *p_;
  }
  // The value, or a shared default one when there is none: what a reader calls (no allocation).
  const T& value_or_default() const {
    static const T kNone{};
    return p_ ? *p_ : kNone;
  }

  friend bool operator==(const Box& a, const Box& b)
    requires std::equality_comparable<T>
  {
    return a.p_ ? (b.p_ && *a.p_ == *b.p_) : !b.p_;
  }

 private:
  std::unique_ptr<T> p_;
};

}  // namespace gp
