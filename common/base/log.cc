#include "common/base/log.h"

#include <sys/time.h>
#include <unistd.h>

#include <ctime>

namespace trellis::base {
namespace {

std::atomic<int> gLevel{static_cast<int>(LogLevel::kInfo)};
std::atomic<int> gFd{2};

std::string_view levelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
    case LogLevel::kOff: return "off";
  }
  return "info";
}

bool needsQuotes(std::string_view v) {
  if (v.empty()) return true;
  for (unsigned char c : v) {
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f) return true;
  }
  return false;
}

void appendValue(std::string& out, std::string_view v) {
  if (!needsQuotes(v)) {
    out.append(v);
    return;
  }
  out.push_back('"');
  for (unsigned char c : v) {
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      default:
        if (c < 0x20 || c == 0x7f) {
          fmt::format_to(std::back_inserter(out), "\\x{:02x}", c);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

}  // namespace

bool parseLogLevel(std::string_view text, LogLevel& out) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError, LogLevel::kOff}) {
    if (text == levelName(l)) {
      out = l;
      return true;
    }
  }
  return false;
}

void setLogLevel(LogLevel level) { gLevel.store(static_cast<int>(level), std::memory_order_relaxed); }
LogLevel logLevel() { return static_cast<LogLevel>(gLevel.load(std::memory_order_relaxed)); }
void setLogFd(int fd) { gFd.store(fd, std::memory_order_relaxed); }

std::string Logger::format(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields) const {
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm t;
  gmtime_r(&tv.tv_sec, &t);
  std::string out;
  out.reserve(128);
  fmt::format_to(std::back_inserter(out), "ts={:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z level={} logger={} msg=",
                 t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                 static_cast<long>(tv.tv_usec), levelName(level), name_);
  appendValue(out, msg);
  for (const LogField& f : fields) {
    out.push_back(' ');
    out.append(f.key);
    out.push_back('=');
    appendValue(out, f.value);
  }
  out.push_back('\n');
  return out;
}

void Logger::log(LogLevel level, std::string_view msg, std::initializer_list<LogField> fields) const {
  if (!enabled(level)) return;
  std::string line = format(level, msg, fields);
  int fd = gFd.load(std::memory_order_relaxed);
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace trellis::base
