#include "common/http/detail/connection.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

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

namespace {

BIO_METHOD* socketBioMethod() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "trellis socket");
    return m;
  }();
  return method;
}

}  // namespace

// OpenSSL reads and writes the socket through this BIO so that we learn when a
// recv came back short (the socket is drained) and can skip an EAGAIN read.
int Transport::bioRead(BIO* bio, char* buf, int len) {
  auto* st = static_cast<BioState*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  for (;;) {
    ssize_t n = ::recv(st->fd, buf, static_cast<size_t>(len), 0);
    if (n >= 0) {
      st->shortRead = n < len;
      return static_cast<int>(n);
    }
    if (errno == EINTR) continue;
    st->lastErrno = errno;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(bio);
    return -1;
  }
}

bool Transport::sendCorked(BioState& st) {
  size_t off = 0;
  while (off < st.corked.size()) {
    ssize_t n = ::send(st.fd, st.corked.data() + off, st.corked.size() - off, MSG_NOSIGNAL);
    if (n >= 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    st.lastErrno = errno;
    st.corked.erase(0, off);
    return false;
  }
  st.corked.clear();
  return true;
}

int Transport::bioWrite(BIO* bio, const char* buf, int len) {
  auto* st = static_cast<BioState*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  if (st->cork) {
    st->corked.append(buf, static_cast<size_t>(len));
    return len;
  }
  for (;;) {
    ssize_t n = ::send(st->fd, buf, static_cast<size_t>(len), MSG_NOSIGNAL);
    if (n >= 0) return static_cast<int>(n);
    if (errno == EINTR) continue;
    st->lastErrno = errno;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(bio);
    return -1;
  }
}

long Transport::bioCtrl(BIO* bio, int cmd, long, void*) {
  if (cmd != BIO_CTRL_FLUSH) return 0;
  auto* st = static_cast<BioState*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  if (st->corked.empty() || sendCorked(*st)) return 1;
  if (st->lastErrno == EAGAIN || st->lastErrno == EWOULDBLOCK) BIO_set_retry_write(bio);
  return 0;
}

Transport::Transport(tcp::socket socket, ssl_st* ssl)
    : socket_(std::move(socket)), fd_(socket_.native_handle()), ssl_(ssl) {
  boost::system::error_code ec;
  socket_.non_blocking(true, ec);
  socket_.set_option(tcp::no_delay(true), ec);
  if (ssl_) {
    static bool init = [] {
      BIO_METHOD* m = socketBioMethod();
      BIO_meth_set_read(m, &Transport::bioRead);
      BIO_meth_set_write(m, &Transport::bioWrite);
      BIO_meth_set_ctrl(m, &Transport::bioCtrl);
      BIO_meth_set_create(m, [](BIO* b) {
        BIO_set_init(b, 1);
        return 1;
      });
      return true;
    }();
    (void)init;
    bio_ = std::make_unique<BioState>();
    bio_->fd = fd_;
    BIO* bio = BIO_new(socketBioMethod());
    BIO_set_data(bio, bio_.get());
    SSL_set_bio(ssl_, bio, bio);
    SSL_set_read_ahead(ssl_, 1);  // one recv may bring several records
  }
}

Transport::Transport(Transport&& o) noexcept
    : socket_(std::move(o.socket_)),
      fd_(o.fd_),
      released_(o.released_),
      ssl_(o.ssl_),
      bio_(std::move(o.bio_)),
      shortRead_(o.shortRead_),
      errno_(o.errno_) {
  o.ssl_ = nullptr;
  o.fd_ = -1;
  o.released_ = false;
}

void Transport::releaseFromAsio() {
  if (released_ || fd_ < 0) return;
  boost::system::error_code ec;
  fd_ = socket_.release(ec);
  released_ = !ec;
}

void Transport::resetDrained() {
  shortRead_ = false;
  if (bio_) bio_->shortRead = false;
}

bool Transport::drained() const {
  if (ssl_) return bio_->shortRead && SSL_has_pending(ssl_) == 0;
  return shortRead_;
}

Transport::~Transport() {
  if (ssl_) SSL_free(ssl_);
  close();
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
      errno_ = bio_ ? bio_->lastErrno : errno;
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
  BioState& st = *bio_;
  st.cork = true;
  Io r = sslResult(SSL_do_handshake(ssl_), 0, unused);
  // Whatever a flight left unflushed goes now; a full socket means: wait to write.
  if (!st.corked.empty() && !sendCorked(st)) {
    if (st.lastErrno != EAGAIN && st.lastErrno != EWOULDBLOCK) return Io::kError;
    return Io::kWantWrite;  // called again when writable: the rest goes then
  }
  if (r == Io::kOk) st.cork = false;  // application data is written as it comes
  return r;
}

Transport::Io Transport::read(char* buf, size_t cap, size_t& n) {
  n = 0;
  if (ssl_) {
    size_t got = 0;
    int ret = SSL_read_ex(ssl_, buf, cap, &got);
    return sslResult(ret, got, n);
  }
  for (;;) {
    ssize_t r = ::recv(fd_, buf, cap, 0);
    if (r > 0) {
      n = static_cast<size_t>(r);
      shortRead_ = n < cap;
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
    ssize_t r = ::send(fd_, buf, len, MSG_NOSIGNAL);
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
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

void Transport::close() {
  if (released_) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    released_ = false;
    return;
  }
  boost::system::error_code ec;
  socket_.close(ec);
  fd_ = -1;
}

std::string Transport::alpn() const {
  if (!ssl_) return {};
  const unsigned char* p = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl_, &p, &len);
  return p ? std::string(reinterpret_cast<const char*>(p), len) : std::string();
}

void Transport::clientIdentity(std::string& commonName, std::vector<std::string>& organizations) const {
  if (!ssl_ || SSL_get_verify_result(ssl_) != X509_V_OK) return;
  X509* cert = SSL_get0_peer_certificate(ssl_);
  if (!cert) return;
  X509_NAME* subject = X509_get_subject_name(cert);
  auto entries = [&](int nid, auto&& each) {
    for (int i = -1; (i = X509_NAME_get_index_by_NID(subject, nid, i)) >= 0;) {
      ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
      unsigned char* utf8 = nullptr;
      int len = ASN1_STRING_to_UTF8(&utf8, data);
      if (len >= 0) each(std::string(reinterpret_cast<char*>(utf8), static_cast<size_t>(len)));
      OPENSSL_free(utf8);
    }
  };
  entries(NID_commonName, [&](std::string v) { commonName = std::move(v); });
  entries(NID_organizationName, [&](std::string v) { organizations.push_back(std::move(v)); });
}

std::string Transport::peer() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (fd_ < 0 || getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  return {};
}

Connection::Connection(asio::io_context& io, Poller& poller, Transport transport)
    : io_(io), poller_(poller), transport_(std::move(transport)), peer_(transport_.peer()), timer_(io) {
  transport_.clientIdentity(clientCn_, clientOrgs_);
}

Connection::~Connection() {
  if (registration_) poller_.remove(registration_);
}

// Edge-triggered: readiness is reported once, so always read until the
// transport says it would block (or the recv came back short) before waiting.
void Connection::start() {
  transport_.releaseFromAsio();
  registration_ = poller_.add(transport_.fd(), this);
  if (!registration_) {
    close();
    return;
  }
  postRead();
}

void Connection::postRead() {
  asio::post(io_, [self = shared_from_this()] {
    if (!self->closed_ && !self->paused_) {
      self->wantRead_ = false;
      self->doRead();
    }
  });
}

void Connection::armRead() {
  if (closed_ || paused_) return;
  wantRead_ = true;
  if (readReady_) postRead();  // an edge came while we were not waiting
}

void Connection::onEvents(uint32_t events) {
  auto self = shared_from_this();
  if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
    if (writing_) {
      writing_ = false;
      flushNow();
    }
    if (readNeedsWrite_ && !closed_) {
      readNeedsWrite_ = false;
      doRead();
    }
  }
  if (closed_) return;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
    readReady_ = true;
    if (wantRead_ && !paused_) {
      wantRead_ = false;
      doRead();
    }
  }
}

void Connection::doRead() {
  char* buf = threadReadBuffer();
  inRead_ = true;
  readReady_ = false;
  transport_.resetDrained();
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
      if (transport_.drained() && !closed_ && !paused_) {
        armRead();  // drained: anything arriving later raises a new edge
        break;
      }
      continue;
    }
    if (r == Transport::Io::kWantRead) {
      armRead();
      break;
    }
    if (r == Transport::Io::kWantWrite) {
      readNeedsWrite_ = true;  // TLS must write before it can read (rare)
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
      writing_ = true;  // resumed by the next EPOLLOUT edge
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
  if (registration_) {
    poller_.remove(registration_);
    registration_ = nullptr;
  }
  transport_.close();
  onClosed();
}

}  // namespace trellis::http::detail
