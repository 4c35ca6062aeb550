#include "common/kube/workqueue.h"

#include <algorithm>

namespace trellis::kube {

WorkQueue::WorkQueue(std::chrono::milliseconds baseDelay, std::chrono::milliseconds maxDelay)
    : baseDelay_(baseDelay), maxDelay_(maxDelay), timer_([this] { runTimer(); }) {}

WorkQueue::~WorkQueue() {
  shutDown();
  if (timer_.joinable()) timer_.join();
}

void WorkQueue::addLocked(const std::string& key) {
  if (shutdown_ || dirty_.count(key)) return;
  dirty_.insert(key);
  if (processing_.count(key)) return;  // queued again when done()
  queue_.push_back(key);
  cv_.notify_one();
}

void WorkQueue::add(const std::string& key) {
  std::lock_guard g(mu_);
  addLocked(key);
}

void WorkQueue::addAfter(const std::string& key, std::chrono::milliseconds delay) {
  std::lock_guard g(mu_);
  if (shutdown_) return;
  if (delay.count() <= 0) return addLocked(key);
  delayed_.emplace(std::chrono::steady_clock::now() + delay, key);
  timerCv_.notify_one();
}

void WorkQueue::addRateLimited(const std::string& key) {
  std::chrono::milliseconds delay;
  {
    std::lock_guard g(mu_);
    int n = failures_[key]++;
    double d = static_cast<double>(baseDelay_.count()) * static_cast<double>(1ull << std::min(n, 40));
    delay = std::chrono::milliseconds(static_cast<int64_t>(std::min<double>(d, static_cast<double>(maxDelay_.count()))));
  }
  addAfter(key, delay);
}

void WorkQueue::forget(const std::string& key) {
  std::lock_guard g(mu_);
  failures_.erase(key);
}

int WorkQueue::numRequeues(const std::string& key) const {
  std::lock_guard g(mu_);
  auto it = failures_.find(key);
  return it == failures_.end() ? 0 : it->second;
}

std::optional<std::string> WorkQueue::get() {
  std::unique_lock g(mu_);
  cv_.wait(g, [&] { return !queue_.empty() || (shutdown_ && (!drain_ || queue_.empty())); });
  if (queue_.empty() || (shutdown_ && !drain_)) return std::nullopt;
  std::string key = std::move(queue_.front());
  queue_.pop_front();
  dirty_.erase(key);
  processing_.insert(key);
  return key;
}

void WorkQueue::done(const std::string& key) {
  std::lock_guard g(mu_);
  processing_.erase(key);
  if (dirty_.count(key)) {
    queue_.push_back(key);
    cv_.notify_one();
  }
  if (processing_.empty()) cv_.notify_all();  // a draining shutDown waits for this
}

void WorkQueue::shutDown() {
  {
    std::lock_guard g(mu_);
    shutdown_ = true;
  }
  cv_.notify_all();
  timerCv_.notify_all();
}

void WorkQueue::shutDownWithDrain() {
  std::unique_lock g(mu_);
  shutdown_ = true;
  drain_ = true;
  cv_.notify_all();
  timerCv_.notify_all();
  cv_.wait(g, [&] { return processing_.empty() && queue_.empty(); });
}

bool WorkQueue::shuttingDown() const {
  std::lock_guard g(mu_);
  return shutdown_;
}

size_t WorkQueue::length() const {
  std::lock_guard g(mu_);
  return queue_.size();
}

void WorkQueue::runTimer() {
  std::unique_lock g(mu_);
  while (!shutdown_) {
    if (delayed_.empty()) {
      timerCv_.wait(g);
      continue;
    }
    auto next = delayed_.begin()->first;
    if (timerCv_.wait_until(g, next) == std::cv_status::no_timeout) continue;
    auto now = std::chrono::steady_clock::now();
    while (!delayed_.empty() && delayed_.begin()->first <= now) {
      std::string key = delayed_.begin()->second;
      delayed_.erase(delayed_.begin());
      addLocked(key);
    }
  }
}

}  // namespace trellis::kube
