// A command running in the background while a test acts: its output lines
// are collected as they arrive, the test waits for a line it names (a
// condition with a deadline, not a sleep) and stops the command with a
// signal when done. The command runs under /bin/sh in its own process group;
// the destructor kills the group if it is still running.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace trellis::testing {

class Background {
 public:
  explicit Background(const std::string& command);
  ~Background();
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;

  // Waits until a line satisfies `match` (lines seen so far count too).
  bool waitForLine(const std::function<bool(const std::string&)>& match, std::chrono::milliseconds timeout);
  // Signals the process group and waits for the command to end; its exit
  // code (-1 when a signal ended it).
  int stop(int signal);
  // Waits for the command to end by itself: its exit code, -1 when a signal
  // ended it, or nullopt when `timeout` passed first (it keeps running).
  std::optional<int> wait(std::chrono::milliseconds timeout);
  std::vector<std::string> lines() const;
  // The process /bin/sh runs as: with "exec COMMAND", the command's own pid.
  pid_t pid() const { return pid_; }
  std::string output() const;  // all lines, newline-terminated

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  int exitCode_ = -1;
  bool reaped_ = false;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;
  bool eof_ = false;
  std::thread reader_;
};

}  // namespace trellis::testing
