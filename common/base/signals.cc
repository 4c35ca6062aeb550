#include "common/base/signals.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <mutex>

namespace trellis::base {
namespace {

sigset_t watchedSet() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR2);  // internal: wakes the watcher on destruction
  return set;
}

}  // namespace

void blockShutdownSignals() {
  sigset_t set = watchedSet();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

SignalWatcher::SignalWatcher(std::function<void()> onShutdown, std::function<void()> onReload) {
  thread_ = std::thread([onShutdown = std::move(onShutdown), onReload = std::move(onReload)] {
    sigset_t set = watchedSet();
    bool shuttingDown = false;
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (sig == SIGUSR2) return;
      if (sig == SIGHUP) {
        if (onReload) onReload();
        continue;
      }
      if (shuttingDown) _exit(128 + sig);
      shuttingDown = true;
      if (onShutdown) onShutdown();
    }
  });
}

void waitForShutdownSignal() {
  static std::mutex mu;
  static std::condition_variable cv;
  static bool shutdown = false;
  static SignalWatcher* watcher = new SignalWatcher([] {
    std::lock_guard g(mu);
    shutdown = true;
    cv.notify_all();
  });
  (void)watcher;
  std::unique_lock g(mu);
  cv.wait(g, [] { return shutdown; });
}

SignalWatcher::~SignalWatcher() {
  pthread_kill(thread_.native_handle(), SIGUSR2);
  thread_.join();
}

}  // namespace trellis::base
