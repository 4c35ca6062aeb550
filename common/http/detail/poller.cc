#include "common/http/detail/poller.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <stdexcept>

namespace trellis::http::detail {

struct Poller::Registration {
  int fd;
  Watcher* watcher;
  bool alive;
};

Poller::Poller(boost::asio::io_context& io) : epfd_(epoll_create1(EPOLL_CLOEXEC)), desc_(io) {
  if (epfd_ < 0) throw std::runtime_error("epoll_create1 failed");
  desc_.assign(epfd_);
  arm();
}

Poller::~Poller() {
  boost::system::error_code ec;
  desc_.close(ec);  // closes epfd_
  for (Registration* r : dead_) delete r;
}

Poller::Registration* Poller::add(int fd, Watcher* watcher) {
  auto* reg = new Registration{fd, watcher, true};
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = reg;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    delete reg;
    return nullptr;
  }
  return reg;
}

void Poller::remove(Registration* reg) {
  if (!reg) return;
  reg->alive = false;
  epoll_ctl(epfd_, EPOLL_CTL_DEL, reg->fd, nullptr);
  if (dispatching_) {
    dead_.push_back(reg);  // an event for it may still be in the batch
  } else {
    delete reg;
  }
}

void Poller::arm() {
  desc_.async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
    if (ec) return;  // closed: the poller is going away
    drain();
  });
}

void Poller::drain() {
  constexpr int kMax = 256;
  epoll_event events[kMax];
  for (int round = 0; round < 4; ++round) {
    int n = epoll_wait(epfd_, events, kMax, 0);
    if (n <= 0) break;
    dispatching_ = true;
    for (int i = 0; i < n; ++i) {
      auto* reg = static_cast<Registration*>(events[i].data.ptr);
      if (reg->alive) reg->watcher->onEvents(events[i].events);
    }
    dispatching_ = false;
    for (Registration* r : dead_) delete r;
    dead_.clear();
    if (n < kMax) break;
  }
  arm();
}

}  // namespace trellis::http::detail
