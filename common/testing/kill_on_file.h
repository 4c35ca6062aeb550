// Aims a kill -9 at a point the process under test reaches on disk: a fault
// test names the directory where the process writes its work in progress
// and the files that mark it, and the kill lands `delay` after such a file
// is created in (or renamed into) that directory. The test then looks at
// the disk to prove the work was interrupted, instead of hoping a random
// sleep landed mid-work on a machine of unknown speed.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

namespace trellis::testing {

class KillOnFile {
 public:
  // Starts watching `dir` at once; `match` sees each new name in it. With
  // pid 0 the target is named later by arm() (a process started after the
  // watch, so that none of its files is missed); a kill due before then
  // waits for it.
  KillOnFile(const std::string& dir, std::function<bool(std::string_view name)> match, pid_t pid,
             std::chrono::microseconds delay);
  void arm(pid_t pid) { pid_ = pid; }
  ~KillOnFile();  // stops watching (the kill, if not yet sent, is not sent)
  KillOnFile(const KillOnFile&) = delete;
  KillOnFile& operator=(const KillOnFile&) = delete;

  // Whether the kill was sent, and for which file.
  bool fired() const { return fired_; }
  const std::string& firedBy() const { return firedBy_; }

 private:
  void watch();

  int inotify_ = -1, stop_ = -1;
  std::function<bool(std::string_view)> match_;
  std::atomic<pid_t> pid_;
  std::chrono::microseconds delay_;
  std::atomic<bool> fired_{false};
  std::string firedBy_;
  std::thread thread_;
};

}  // namespace trellis::testing
