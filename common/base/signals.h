// Graceful shutdown on SIGINT/SIGTERM and a reload hook on SIGHUP.
//
// Call blockShutdownSignals() first thing in main (before any thread starts,
// so every thread inherits the mask); then start a SignalWatcher whose thread
// waits for the signals with sigwait and calls the callbacks. A second SIGINT
// or SIGTERM while shutting down exits at once.
#pragma once

#include <functional>
#include <thread>

namespace trellis::base {

void blockShutdownSignals();

// Blocks until SIGINT or SIGTERM arrives — main's wait once everything runs.
// The watcher stays for the rest of the process, so a second signal while
// the caller shuts down still exits at once.
void waitForShutdownSignal();

class SignalWatcher {
 public:
  SignalWatcher(std::function<void()> onShutdown, std::function<void()> onReload = {});
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

 private:
  std::thread thread_;
};

}  // namespace trellis::base
