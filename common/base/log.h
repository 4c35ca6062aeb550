// Structured, leveled logging: one line per event, logfmt-style
// (`ts=… level=info logger=http msg="…" conn=12 peer=127.0.0.1:5555`).
//
// One named Logger per component; every line carries its context as fields.
// Lines are written whole with a single write(2) so concurrent threads never
// interleave. Secrets must never be passed as fields.
#pragma once

#include <atomic>
#include <initializer_list>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace trellis::base {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

// Parses "debug", "info", "warn", "error", "off"; false on anything else.
bool parseLogLevel(std::string_view text, LogLevel& out);

// The process-wide threshold and destination (a file descriptor, default stderr).
void setLogLevel(LogLevel level);
LogLevel logLevel();
void setLogFd(int fd);

struct LogField {
  template <typename T>
  LogField(std::string_view k, const T& v) : key(k), value(fmt::format("{}", v)) {}
  LogField(std::string_view k, std::string_view v) : key(k), value(v) {}
  LogField(std::string_view k, const char* v) : key(k), value(v) {}
  LogField(std::string_view k, const std::string& v) : key(k), value(v) {}
  std::string_view key;
  std::string value;
};

class Logger {
 public:
  explicit Logger(std::string name) : name_(std::move(name)) {}

  bool enabled(LogLevel level) const { return level >= logLevel(); }
  void log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields = {}) const;

  void debug(std::string_view msg, std::initializer_list<LogField> f = {}) const { log(LogLevel::kDebug, msg, f); }
  void info(std::string_view msg, std::initializer_list<LogField> f = {}) const { log(LogLevel::kInfo, msg, f); }
  void warn(std::string_view msg, std::initializer_list<LogField> f = {}) const { log(LogLevel::kWarn, msg, f); }
  void error(std::string_view msg, std::initializer_list<LogField> f = {}) const { log(LogLevel::kError, msg, f); }

  // Formats a line without writing it (used by tests and by log().
  std::string format(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields) const;

 private:
  std::string name_;
};

}  // namespace trellis::base
