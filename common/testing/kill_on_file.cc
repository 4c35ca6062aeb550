#include "common/testing/kill_on_file.h"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <stdexcept>

namespace trellis::testing {

KillOnFile::KillOnFile(const std::string& dir, std::function<bool(std::string_view)> match, pid_t pid,
                       std::chrono::microseconds delay)
    : match_(std::move(match)), pid_(pid), delay_(delay) {
  inotify_ = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  stop_ = ::eventfd(0, EFD_CLOEXEC);
  if (inotify_ < 0 || stop_ < 0 || ::inotify_add_watch(inotify_, dir.c_str(), IN_CREATE | IN_MOVED_TO) < 0) {
    throw std::runtime_error("KillOnFile: cannot watch " + dir);  // a broken fixture, not a test verdict
  }
  thread_ = std::thread([this] { watch(); });
}

KillOnFile::~KillOnFile() {
  uint64_t one = 1;
  (void)!::write(stop_, &one, sizeof one);
  thread_.join();
  ::close(inotify_);
  ::close(stop_);
}

void KillOnFile::watch() {
  alignas(inotify_event) char buf[4096];
  for (;;) {
    pollfd fds[2] = {{inotify_, POLLIN, 0}, {stop_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents) return;
    ssize_t n = ::read(inotify_, buf, sizeof buf);
    for (ssize_t off = 0; off < n;) {
      auto* ev = reinterpret_cast<inotify_event*>(buf + off);
      off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      if (ev->len == 0 || !match_(ev->name)) continue;
      if (delay_.count() > 0) {
        // Wait out the delay unless told to stop meanwhile.
        pollfd s{stop_, POLLIN, 0};
        timespec ts{static_cast<time_t>(delay_.count() / 1000000), static_cast<long>(delay_.count() % 1000000) * 1000};
        if (::ppoll(&s, 1, &ts, nullptr) > 0) return;
      }
      while (pid_ == 0) {  // not armed yet
        pollfd s{stop_, POLLIN, 0};
        if (::poll(&s, 1, 1) > 0) return;
      }
      firedBy_ = ev->name;
      ::kill(pid_, SIGKILL);
      fired_ = true;
      return;
    }
  }
}

}  // namespace trellis::testing
