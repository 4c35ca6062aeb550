// A work queue of keys for controllers, with client-go's semantics:
//  - a key waiting in the queue is there once, however often it is added;
//  - a key being processed is never handed to a second worker; adding it
//    meanwhile queues it again for after done();
//  - addRateLimited() requeues with per-key exponential backoff (base delay
//    doubling up to a maximum) until forget(key);
//  - shutDown() wakes every get() (which then returns nullopt);
//    shutDownWithDrain() also waits until keys being processed are done.
//
//   while (auto key = queue.get()) {
//     auto st = reconcile(*key);
//     if (st) queue.forget(*key); else queue.addRateLimited(*key);
//     queue.done(*key);
//   }
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

namespace trellis::kube {

class WorkQueue {
 public:
  explicit WorkQueue(std::chrono::milliseconds baseDelay = std::chrono::milliseconds(5),
                     std::chrono::milliseconds maxDelay = std::chrono::seconds(300));
  ~WorkQueue();  // shuts down
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  void add(const std::string& key);
  void addAfter(const std::string& key, std::chrono::milliseconds delay);
  void addRateLimited(const std::string& key);  // after the key's current backoff
  void forget(const std::string& key);          // resets the key's backoff
  int numRequeues(const std::string& key) const;

  // Blocks for the next key; nullopt once shut down (and, with drain, empty).
  std::optional<std::string> get();
  void done(const std::string& key);

  void shutDown();
  void shutDownWithDrain();  // waits for keys being processed
  bool shuttingDown() const;
  size_t length() const;  // keys waiting (not delayed ones)

 private:
  void addLocked(const std::string& key);
  void runTimer();

  std::chrono::milliseconds baseDelay_, maxDelay_;
  mutable std::mutex mu_;
  std::condition_variable cv_;       // get() waiters and drain
  std::condition_variable timerCv_;  // the delay thread
  std::deque<std::string> queue_;
  std::set<std::string> dirty_, processing_;
  std::map<std::string, int> failures_;
  std::multimap<std::chrono::steady_clock::time_point, std::string> delayed_;
  bool shutdown_ = false;
  bool drain_ = false;
  std::thread timer_;
};

}  // namespace trellis::kube
