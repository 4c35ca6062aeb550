// Internal to common/http: the byte-level connection every HTTP session
// (server or client, HTTP/1.1 or HTTP/2) runs on.
//
// Reactor style: the socket is non-blocking and we wait for readiness, then
// read/write directly (plain recv/send, or SSL_read/SSL_write over the same
// fd), so TLS costs no extra copies. Input is read into a per-thread buffer
// and handed to onInput(); output accumulates in out_ and is flushed once per
// event-loop turn, so many small responses share one write (and one TLS
// record). One deadline timer per connection serves every timeout.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/http/detail/poller.h"

struct ssl_st;
struct bio_st;

namespace trellis::http::detail {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// A TCP socket plus an optional TLS session (owned), non-blocking.
class Transport {
 public:
  enum class Io { kOk, kWantRead, kWantWrite, kClosed, kError };

  Transport(tcp::socket socket, ssl_st* ssl);
  ~Transport();
  Transport(Transport&&) noexcept;
  Transport& operator=(Transport&&) = delete;

  Io handshake();
  Io read(char* buf, size_t cap, size_t& n);
  Io write(const char* buf, size_t len, size_t& n);
  // Sends close_notify (TLS) and shuts the write side down.
  void shutdownWrite();
  void close();
  // Takes the fd out of Asio's reactor (it is then watched by a Poller).
  void releaseFromAsio();
  int fd() const { return fd_; }

  std::string alpn() const;
  // True when the last read took everything the socket had (a short recv and,
  // for TLS, nothing left buffered in OpenSSL): waiting is then safe without
  // another read that would only return EAGAIN.
  bool drained() const;
  // Forgets the last recv's shortness: a read turn that starts after a new
  // readiness edge may only trust recvs it did itself.
  void resetDrained();
  bool tls() const { return ssl_ != nullptr; }
  ssl_st* ssl() const { return ssl_; }
  // The Asio socket, for waits during connect and handshake (before releaseFromAsio()).
  tcp::socket& socket() { return socket_; }
  std::string peer() const;
  // The verified client certificate's CN and O values (empty when none).
  void clientIdentity(std::string& commonName, std::vector<std::string>& organizations) const;
  int lastErrno() const { return errno_; }

 private:
  Io sslResult(int ret, size_t done, size_t& n);
  // State the socket BIO under OpenSSL shares with us.
  struct BioState {
    int fd = -1;
    bool shortRead = false;
    int lastErrno = 0;
    // During the handshake writes are gathered here and sent at each flush
    // (OpenSSL flushes at the end of a flight): one send per flight, not per record.
    bool cork = false;
    std::string corked;
  };
  // Sends what the handshake gathered; false when the socket is full (retry on writable).
  static bool sendCorked(BioState& st);
  static int bioRead(bio_st* bio, char* buf, int len);
  static int bioWrite(bio_st* bio, const char* buf, int len);
  static long bioCtrl(bio_st* bio, int cmd, long num, void* ptr);
  tcp::socket socket_;
  int fd_;
  bool released_ = false;
  ssl_st* ssl_;
  std::unique_ptr<BioState> bio_;
  bool shortRead_ = false;  // plain sockets
  int errno_ = 0;
};

class Connection : public std::enable_shared_from_this<Connection>, private Poller::Watcher {
 public:
  Connection(asio::io_context& io, Poller& poller, Transport transport);
  virtual ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Starts reading; the TLS handshake, if any, is already done.
  void start();
  // Closes at once (idempotent).
  void close();
  bool closed() const { return closed_; }
  asio::io_context& io() { return io_; }
  Transport& transport() { return transport_; }
  const std::string& peer() const { return peer_; }
  const std::string& clientCommonName() const { return clientCn_; }
  const std::vector<std::string>& clientOrganizations() const { return clientOrgs_; }
  size_t pendingOutput() const { return out_.size() - outOff_; }
  void scheduleFlushPublic() { scheduleFlush(); }

 protected:
  // Called with data read from the peer; copy what must be kept.
  virtual void onInput(const char* data, size_t n) = 0;
  // The peer closed (or the connection failed); close() follows.
  virtual void onPeerClosed() {}
  // The deadline passed.
  virtual void onDeadline() { close(); }
  // Right before each flush: HTTP/2 pulls its frames into out_ here.
  virtual void beforeFlush() {}
  // out_ was fully written.
  virtual void onDrained() {}
  // Called once from close().
  virtual void onClosed() {}

  void send(std::string_view data) { out_.append(data); }
  std::string& output() { return out_; }
  // Flushes at the end of the current event-loop turn (coalescing writes).
  void scheduleFlush();
  void flushNow();
  // Flushes, then a lingering close: FIN, discard input for a while, close.
  void closeAfterFlush();
  void setDeadline(std::chrono::milliseconds after);
  void clearDeadline() { deadline_ = Clock::time_point::max(); }
  // Stop/resume reading (back-pressure); EOF is still noticed when resumed.
  void pauseReading();
  void resumeReading();

 private:
  void onEvents(uint32_t events) override;
  void armRead();
  void postRead();
  void flushLoop();
  void doRead();
  void armTimer();
  void lingerDone();

  asio::io_context& io_;
  Poller& poller_;
  Poller::Registration* registration_ = nullptr;
  Transport transport_;
  std::string peer_;
  std::string clientCn_;
  std::vector<std::string> clientOrgs_;
  std::string out_;
  size_t outOff_ = 0;
  asio::steady_timer timer_;
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point timerAt_ = Clock::time_point::max();
  bool closed_ = false;
  bool wantRead_ = false;      // waiting for readability
  bool readReady_ = false;     // an edge came while we were not waiting
  bool readNeedsWrite_ = false;  // TLS read wants the socket writable
  bool paused_ = false;
  bool writing_ = false;       // waiting for writability
  bool writeWantsRead_ = false;
  bool inRead_ = false;        // inside doRead: flush happens at its end
  bool flushPosted_ = false;
  bool inFlush_ = false;
  bool closeWhenDrained_ = false;
  bool lingering_ = false;
};

}  // namespace trellis::http::detail
