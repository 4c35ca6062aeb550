#include "common/http/detail/connection.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <boost/asio/post.hpp>

namespace trellis::http::detail {
namespace {

constexpr size_t kReadBufferSize = 64 * 1024;
constexpr int kMaxReadsPerTurn = 8;
constexpr std::chrono::milliseconds kLingerTime{2000};

char* threadReadBuffer() {
  thread_local std::unique_ptr<char[]> buf(new char[kReadBufferSize]);
  return buf.get();
}

}  // namespace

Transport::Transport(tcp::socket socket, ssl_st* ssl) : socket_(std::move(socket)), ssl_(ssl) {
  boost::system::error_code ec;
  socket_.non_blocking(true, ec);
  socket_.set_option(tcp::no_delay(true), ec);
  if (ssl_) SSL_set_fd(ssl_, socket_.native_handle());
}

Transport::Transport(Transport&& o) noexcept : socket_(std::move(o.socket_)), ssl_(o.ssl_), errno_(o.errno_) {
  o.ssl_ = nullptr;
}

Transport::~Transport() {
  if (ssl_) SSL_free(ssl_);
}

Transport::Io Transport::sslResult(int ret, size_t done, size_t& n) {
  if (ret == 1) {
    n = done;
    return Io::kOk;
  }
  int err = SSL_get_error(ssl_, ret);
  switch (err) {
    case SSL_ERROR_WANT_READ: return Io::kWantRead;
    case SSL_ERROR_WANT_WRITE: return Io::kWantWrite;
    case SSL_ERROR_ZERO_RETURN: return Io::kClosed;
    case SSL_ERROR_SYSCALL:
      errno_ = errno;
      ERR_clear_error();
      return errno_ == 0 ? Io::kClosed : Io::kError;
    default:
      ERR_clear_error();
      return Io::kError;
  }
}

Transport::Io Transport::handshake() {
  if (!ssl_) return Io::kOk;
  size_t unused;
  return sslResult(SSL_do_handshake(ssl_), 0, unused);
}

Transport::Io Transport::read(char* buf, size_t cap, size_t& n) {
  n = 0;
  if (ssl_) {
    size_t got = 0;
    int ret = SSL_read_ex(ssl_, buf, cap, &got);
    return sslResult(ret, got, n);
  }
  for (;;) {
    ssize_t r = ::recv(socket_.native_handle(), buf, cap, 0);
    if (r > 0) {
      n = static_cast<size_t>(r);
      return Io::kOk;
    }
    if (r == 0) return Io::kClosed;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Io::kWantRead;
    errno_ = errno;
    return Io::kError;
  }
}

Transport::Io Transport::write(const char* buf, size_t len, size_t& n) {
  n = 0;
  if (ssl_) {
    size_t put = 0;
    int ret = SSL_write_ex(ssl_, buf, len, &put);
    return sslResult(ret, put, n);
  }
  for (;;) {
    ssize_t r = ::send(socket_.native_handle(), buf, len, MSG_NOSIGNAL);
    if (r >= 0) {
      n = static_cast<size_t>(r);
      return Io::kOk;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Io::kWantWrite;
    errno_ = errno;
    return Io::kError;
  }
}

void Transport::shutdownWrite() {
  if (ssl_) {
    SSL_shutdown(ssl_);  // one close_notify; we do not wait for the peer's
    ERR_clear_error();
  }
  boost::system::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_send, ec);
}

void Transport::close() {
  boost::system::error_code ec;
  socket_.close(ec);
}

std::string Transport::alpn() const {
  if (!ssl_) return {};
  const unsigned char* p = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl_, &p, &len);
  return p ? std::string(reinterpret_cast<const char*>(p), len) : std::string();
}

std::string Transport::peer() const {
  boost::system::error_code ec;
  auto ep = socket_.remote_endpoint(ec);
  if (ec) return {};
  std::string addr = ep.address().to_string();
  if (ep.address().is_v6()) addr = "[" + addr + "]";
  return addr + ":" + std::to_string(ep.port());
}

Connection::Connection(asio::io_context& io, Transport transport)
    : io_(io), transport_(std::move(transport)), peer_(transport_.peer()), timer_(io) {}

Connection::~Connection() = default;

// Asio's epoll reactor is edge-triggered: readiness that came while nothing
// waited (during the handshake, or while paused) is not reported again, so
// always read until the transport says it would block before waiting.
void Connection::start() { postRead(); }

void Connection::postRead() {
  asio::post(io_, [self = shared_from_this()] {
    if (!self->closed_ && !self->paused_ && !self->reading_) self->doRead();
  });
}

void Connection::armRead() {
  if (reading_ || closed_ || paused_) return;
  reading_ = true;
  transport_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this()](boost::system::error_code ec) {
    self->reading_ = false;
    if (self->closed_ || ec) return;
    self->doRead();
  });
}

void Connection::doRead() {
  char* buf = threadReadBuffer();
  inRead_ = true;
  bool again = false;
  for (int i = 0; !closed_ && !paused_; ++i) {
    if (i == kMaxReadsPerTurn) {
      again = true;  // let other connections run; continue on the next turn
      break;
    }
    size_t n = 0;
    Transport::Io r = transport_.read(buf, kReadBufferSize, n);
    if (r == Transport::Io::kOk) {
      if (lingering_) continue;
      onInput(buf, n);
      continue;
    }
    if (r == Transport::Io::kWantRead) {
      armRead();
      break;
    }
    if (r == Transport::Io::kWantWrite) {
      // TLS must write before it can read (rare): read again once writable.
      reading_ = true;
      transport_.socket().async_wait(tcp::socket::wait_write, [self = shared_from_this()](boost::system::error_code ec) {
        self->reading_ = false;
        if (!self->closed_ && !ec) self->doRead();
      });
      break;
    }
    inRead_ = false;
    if (lingering_) {
      lingerDone();
      return;
    }
    onPeerClosed();
    close();
    return;
  }
  inRead_ = false;
  if (closed_) return;
  if (writeWantsRead_) writeWantsRead_ = false;
  flushNow();
  if (again && !closed_) {
    asio::post(io_, [self = shared_from_this()] {
      if (!self->closed_) self->doRead();
    });
  }
}

void Connection::scheduleFlush() {
  if (closed_ || flushPosted_ || inRead_) return;
  flushPosted_ = true;
  asio::post(io_, [self = shared_from_this()] {
    self->flushPosted_ = false;
    self->flushNow();
  });
}

void Connection::flushNow() {
  if (closed_ || writing_ || inFlush_) return;
  inFlush_ = true;
  flushLoop();
  inFlush_ = false;
}

void Connection::flushLoop() {
  for (;;) {
    beforeFlush();
    if (closed_) return;
    if (outOff_ == out_.size()) break;
    size_t n = 0;
    Transport::Io r = transport_.write(out_.data() + outOff_, out_.size() - outOff_, n);
    if (r == Transport::Io::kOk) {
      outOff_ += n;
      if (outOff_ == out_.size()) {
        out_.clear();
        outOff_ = 0;
        onDrained();
        if (closed_) return;
        continue;  // onDrained or beforeFlush may have produced more
      }
      continue;
    }
    if (r == Transport::Io::kWantWrite) {
      writing_ = true;
      transport_.socket().async_wait(tcp::socket::wait_write, [self = shared_from_this()](boost::system::error_code ec) {
        self->writing_ = false;
        if (!self->closed_ && !ec) self->flushNow();
      });
      return;
    }
    if (r == Transport::Io::kWantRead) {
      writeWantsRead_ = true;
      postRead();
      return;
    }
    onPeerClosed();
    close();
    return;
  }
  if (outOff_ > 0 && outOff_ == out_.size()) {
    out_.clear();
    outOff_ = 0;
  }
  if (closeWhenDrained_ && !lingering_) {
    lingering_ = true;
    transport_.shutdownWrite();
    deadline_ = Clock::now() + kLingerTime;
    armTimer();
    paused_ = false;
    postRead();
  }
}

void Connection::closeAfterFlush() {
  if (closeWhenDrained_) return;
  closeWhenDrained_ = true;
  if (!inRead_ && !inFlush_) flushNow();
}

void Connection::lingerDone() { close(); }

void Connection::pauseReading() { paused_ = true; }

void Connection::resumeReading() {
  if (!paused_) return;
  paused_ = false;
  postRead();
}

void Connection::setDeadline(std::chrono::milliseconds after) {
  if (lingering_) return;
  deadline_ = Clock::now() + after;
  armTimer();
}

void Connection::armTimer() {
  if (closed_ || deadline_ == Clock::time_point::max()) return;
  if (timerAt_ != Clock::time_point::max() && timerAt_ <= deadline_) return;  // fires early enough; re-checks then
  timerAt_ = deadline_;
  timer_.expires_at(deadline_);
  timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec) return;  // cancelled or superseded
    self->timerAt_ = Clock::time_point::max();
    if (self->closed_) return;
    if (self->deadline_ == Clock::time_point::max()) return;
    if (Clock::now() < self->deadline_) {
      self->armTimer();
      return;
    }
    self->deadline_ = Clock::time_point::max();
    if (self->lingering_) {
      self->close();
      return;
    }
    self->onDeadline();
  });
}

void Connection::close() {
  if (closed_) return;
  closed_ = true;
  timer_.cancel();
  transport_.close();
  onClosed();
}

}  // namespace trellis::http::detail
