#include "common/testing/background.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace trellis::testing {

Background::Background(const std::string& command) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return;
  pid_ = fork();
  if (pid_ == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  fd_ = fds[0];
  if (pid_ > 0) setpgid(pid_, pid_);  // also from here: no race with the first kill
  reader_ = std::thread([this] {
    std::string partial;
    char buf[4096];
    for (;;) {
      ssize_t n = read(fd_, buf, sizeof buf);
      if (n <= 0) break;
      partial.append(buf, static_cast<size_t>(n));
      std::lock_guard g(mu_);
      for (size_t nl; (nl = partial.find('\n')) != std::string::npos; partial.erase(0, nl + 1)) {
        lines_.push_back(partial.substr(0, nl));
      }
      cv_.notify_all();
    }
    std::lock_guard g(mu_);
    if (!partial.empty()) lines_.push_back(partial);
    eof_ = true;
    cv_.notify_all();
  });
}

Background::~Background() {
  if (pid_ > 0 && !reaped_) stop(SIGKILL);
  if (reader_.joinable()) reader_.join();
  if (fd_ >= 0) close(fd_);
}

bool Background::waitForLine(const std::function<bool(const std::string&)>& match, std::chrono::milliseconds timeout) {
  std::unique_lock g(mu_);
  size_t seen = 0;
  auto found = [&] {
    for (; seen < lines_.size(); ++seen) {
      if (match(lines_[seen])) return true;
    }
    return false;
  };
  return cv_.wait_for(g, timeout, [&] { return found() || eof_; }) && found();
}

int Background::stop(int signal) {
  if (pid_ <= 0 || reaped_) return exitCode_;
  kill(-pid_, signal);
  int status = 0;
  waitpid(pid_, &status, 0);
  reaped_ = true;
  exitCode_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (reader_.joinable()) reader_.join();  // the group is gone: the pipe reaches EOF
  return exitCode_;
}

std::optional<int> Background::wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0 || reaped_) return exitCode_;
  auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      reaped_ = true;
      exitCode_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      kill(-pid_, SIGKILL);  // what it left in its group
      if (reader_.joinable()) reader_.join();
      return exitCode_;
    }
    if (std::chrono::steady_clock::now() >= until) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::vector<std::string> Background::lines() const {
  std::lock_guard g(mu_);
  return lines_;
}

std::string Background::output() const {
  std::string out;
  for (const std::string& l : lines()) out += l + "\n";
  return out;
}

}  // namespace trellis::testing
