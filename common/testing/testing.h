// Fixtures shared by tests: temporary directories, self-signed certificates,
// running real client programs, raw TCP exchanges, waiting on conditions.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace trellis::testing {

// A directory under $TMPDIR removed (recursively) when this goes away.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes <dir>/<name>.crt and .key: an ECDSA P-256 self-signed certificate for
// `cn` with the given DNS names and IP 127.0.0.1 as subjectAltName.
void makeCertificate(const std::string& dir, const std::string& name, const std::string& cn,
                     const std::vector<std::string>& dnsNames);

struct CommandResult {
  int exitCode = -1;
  std::string out;  // stdout and stderr, interleaved
};
// Runs `command` with /bin/sh; the command's own timeout is the caller's business.
CommandResult run(const std::string& command);
// The same, calling onLine with each line of output as it arrives.
CommandResult runStreaming(const std::string& command, const std::function<void(const std::string& line)>& onLine);

// Connects to 127.0.0.1:port, sends `data`, and reads until the peer closes
// or `timeout` passes. Returns what was read; `closed` tells whether the peer closed.
std::string rawExchange(uint16_t port, const std::string& data, std::chrono::milliseconds timeout, bool* closed = nullptr);

// Like rawExchange, but after `data` sends `filler` one byte every `every`
// until the peer answers or closes (a slowloris client).
std::string rawTrickle(uint16_t port, const std::string& data, char filler, std::chrono::milliseconds every,
                       std::chrono::milliseconds timeout, bool* closed = nullptr);

// The first line of a sanitizer report (AddressSanitizer, LeakSanitizer, an
// UndefinedBehaviorSanitizer "runtime error:") among a process's output
// lines, or "" when there is none.
std::string sanitizerReport(const std::vector<std::string>& lines);

// Polls `cond` until it holds or `timeout` passes; returns its last value.
bool waitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout);

std::string readFile(const std::string& path);

// A loopback TCP port that was free a moment ago (bound to port 0, closed).
uint16_t freeTcpPort();
void writeFile(const std::string& path, const std::string& data);

}  // namespace trellis::testing
