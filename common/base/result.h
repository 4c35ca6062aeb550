// Result<T>: the one way Trellis returns expected failures.
//
// An Error carries a code (a small portable enum each component maps to its
// wire format in exactly one place), a user-facing message, and a context
// chain added with wrap() as the error travels up ("starting server: binding
// 127.0.0.1:443: Address already in use"). Exceptions are for programming
// errors only.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace trellis::base {

enum class ErrorCode {
  kUnknown,
  kInvalidArgument,
  kNotFound,
  kAlreadyExists,
  kConflict,
  kPermissionDenied,
  kUnauthenticated,
  kResourceExhausted,
  kFailedPrecondition,
  kAborted,
  kOutOfRange,
  kUnavailable,
  kDeadlineExceeded,
  kInternal,
  kIo,
};

std::string_view errorCodeName(ErrorCode code);

class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  // An error from a failed OS call: names the call and the object, keeps errno's text.
  static Error fromErrno(int err, std::string_view what);

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Adds context in front: "context: previous message".
  template <typename... Args>
  Error wrap(fmt::format_string<Args...> f, Args&&... args) && {
    message_ = fmt::format(f, std::forward<Args>(args)...) + ": " + message_;
    return std::move(*this);
  }
  template <typename... Args>
  Error wrap(fmt::format_string<Args...> f, Args&&... args) const& {
    Error copy = *this;
    return std::move(copy).wrap(f, std::forward<Args>(args)...);
  }

 private:
  ErrorCode code_;
  std::string message_;
};

template <typename... Args>
Error makeError(ErrorCode code, fmt::format_string<Args...> f, Args&&... args) {
  return Error(code, fmt::format(f, std::forward<Args>(args)...));
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const& { assert(!ok()); return std::get<1>(v_); }
  Error&& error() && { assert(!ok()); return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : err_(std::move(error)), ok_(false) {}

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const& { assert(!ok_); return err_; }
  Error&& error() && { assert(!ok_); return std::move(err_); }

 private:
  Error err_{ErrorCode::kUnknown, {}};
  bool ok_ = true;
};

using Status = Result<void>;

inline Status okStatus() { return {}; }

}  // namespace trellis::base
