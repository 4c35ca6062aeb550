// Internal to common/http: an edge-triggered epoll set for established
// connections, nested in an Asio io_context as a single descriptor.
//
// Asio re-arms a descriptor with epoll_ctl on every async_wait; a busy
// HTTP/1.1 connection would pay that syscall per request. Connections here
// are registered once (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET) and the poller's
// own epoll fd is what Asio waits on: one re-arm per batch of events.
#pragma once

#include <cstdint>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

namespace trellis::http::detail {

class Poller {
 public:
  class Watcher {
   public:
    virtual void onEvents(uint32_t events) = 0;

   protected:
    ~Watcher() = default;
  };
  struct Registration;

  explicit Poller(boost::asio::io_context& io);
  ~Poller();
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

  // Watches `fd` until remove(); events are delivered on the io_context's thread.
  Registration* add(int fd, Watcher* watcher);
  // Stops delivery at once (also for events already gathered in this batch).
  void remove(Registration* reg);

 private:
  void arm();
  void drain();

  int epfd_;
  boost::asio::posix::stream_descriptor desc_;
  bool dispatching_ = false;
  std::vector<Registration*> dead_;
};

}  // namespace trellis::http::detail
