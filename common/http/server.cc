#include "common/http/server.h"

#include <openssl/ssl.h>

#include <atomic>
#include <condition_variable>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include "common/http/detail/server_internal.h"

namespace trellis::http {

using namespace detail;

namespace detail {

ServerStats::ServerStats(base::Registry& r, const std::string& server)
    : connections(r.counter("trellis_http_connections_total", "Connections accepted", {{"server", server}})),
      activeConnections(r.gauge("trellis_http_active_connections", "Connections open now", {{"server", server}})),
      requestsH1(r.counter("trellis_http_requests_total", "Requests received",
                           {{"server", server}, {"protocol", "http/1.1"}})),
      requestsH2(r.counter("trellis_http_requests_total", "Requests received", {{"server", server}, {"protocol", "h2"}})),
      badRequests(r.counter("trellis_http_bad_requests_total", "Malformed or over-limit requests rejected",
                            {{"server", server}})),
      timeouts(r.counter("trellis_http_timeouts_total", "Connections closed by a timeout", {{"server", server}})) {}

ServerConnection::ServerConnection(std::shared_ptr<Worker> worker, const ServerContext& ctx, Transport transport)
    : Connection(worker->io, worker->poller, std::move(transport)), worker_(std::move(worker)), ctx_(ctx) {
  worker_->connections.insert(this);
  ctx_.stats->activeConnections.inc();
}

ServerConnection::~ServerConnection() = default;

void ServerConnection::onClosed() {
  if (worker_->connections.erase(this)) ctx_.stats->activeConnections.dec();
}

Response errorResponse(const ServerContext& ctx, int status, std::string_view message) {
  if (ctx.errorResponse) return ctx.errorResponse(status, message);
  Response r;
  r.status = status;
  r.headers.add("content-type", "text/plain; charset=utf-8");
  r.body = std::string(message);
  r.body += '\n';
  return r;
}

}  // namespace detail

namespace {

constexpr const char kH2Preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr size_t kH2PrefaceLen = sizeof(kH2Preface) - 1;

// Drives a new connection to the point where its protocol is known: the TLS
// handshake (protocol from ALPN), or a peek at the first bytes of a cleartext
// connection (the HTTP/2 preface means h2c with prior knowledge).
class Handshake : public std::enable_shared_from_this<Handshake> {
 public:
  Handshake(std::shared_ptr<Worker> worker, const ServerContext& ctx, Transport transport,
            std::unordered_set<Handshake*>& registry)
      : worker_(std::move(worker)), ctx_(ctx), transport_(std::move(transport)), timer_(worker_->io),
        registry_(registry) {
    registry_.insert(this);
  }

  void start() {
    timer_.expires_after(ctx_.limits.headerTimeout);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->cancel();
    });
    step();
  }

  void cancel() {
    if (done_) return;
    done_ = true;
    registry_.erase(this);
    timer_.cancel();
    transport_.close();
  }

 private:
  void step() {
    if (done_) return;
    if (transport_.tls()) {
      Transport::Io r = transport_.handshake();
      if (r == Transport::Io::kOk) return finish(transport_.alpn() == "h2");
      if (r == Transport::Io::kWantRead || r == Transport::Io::kWantWrite) return wait(r);
      ctx_.log.debug("tls handshake failed", {{"peer", transport_.peer()}});
      return cancel();
    }
    char buf[kH2PrefaceLen];
    ssize_t n = ::recv(transport_.socket().native_handle(), buf, sizeof buf, MSG_PEEK);
    if (n == 0) return cancel();
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return wait(Transport::Io::kWantRead);
      return cancel();
    }
    size_t len = static_cast<size_t>(n);
    if (std::memcmp(buf, kH2Preface, len) != 0) return finish(false);
    if (len == kH2PrefaceLen) return finish(true);
    // A prefix of the preface so far: wait for more (bounded by the timer).
    waitMore_ = true;
    wait(Transport::Io::kWantRead);
  }

  void wait(Transport::Io r) {
    if (waitMore_) {
      // MSG_PEEK leaves the bytes there, so readiness fires at once; poll gently.
      waitMore_ = false;
      timer2_ = std::make_unique<asio::steady_timer>(worker_->io, std::chrono::milliseconds(5));
      timer2_->async_wait([self = shared_from_this()](boost::system::error_code ec) {
        if (!ec) self->step();
      });
      return;
    }
    auto type = r == Transport::Io::kWantWrite ? tcp::socket::wait_write : tcp::socket::wait_read;
    transport_.socket().async_wait(type, [self = shared_from_this()](boost::system::error_code ec) {
      if (ec) return self->cancel();
      self->step();
    });
  }

  void finish(bool h2) {
    done_ = true;
    registry_.erase(this);
    timer_.cancel();
    if (worker_->draining) {
      transport_.close();
      return;
    }
    ctx_.stats->connections.inc();
    if (h2) {
      makeHttp2Connection(worker_, ctx_, std::move(transport_));
    } else {
      makeHttp1Connection(worker_, ctx_, std::move(transport_));
    }
  }

  std::shared_ptr<Worker> worker_;
  const ServerContext& ctx_;
  Transport transport_;
  asio::steady_timer timer_;
  std::unique_ptr<asio::steady_timer> timer2_;
  std::unordered_set<Handshake*>& registry_;
  bool done_ = false;
  bool waitMore_ = false;
};

}  // namespace

namespace {
thread_local Worker* tlsWorker = nullptr;
}  // namespace

Worker* detail::currentWorker() { return tlsWorker; }

struct Server::Impl {
  struct Loop {
    std::shared_ptr<Worker> worker = std::make_shared<Worker>();
    std::unique_ptr<tcp::acceptor> acceptor;
    std::unordered_set<Handshake*> handshakes;
    std::thread thread;
  };

  ServerOptions options;
  base::Registry ownMetrics;
  std::unique_ptr<ServerStats> stats;
  ServerContext ctx;
  std::vector<std::unique_ptr<Loop>> loops;
  uint16_t port = 0;
  bool running = false;
  std::mutex mu;
  std::condition_variable stoppedCv;
  bool stopped = false;

  Impl(ServerOptions o, Handler handler)
      : options(std::move(o)),
        stats(std::make_unique<ServerStats>(options.metrics ? *options.metrics : ownMetrics, options.name)),
        ctx{std::move(handler), options.limits, base::Logger(options.name), stats.get(), options.tls != nullptr,
            options.errorResponse, options.streamRequestBody} {}

  void accept(Loop& loop) {
    loop.acceptor->async_accept(loop.worker->io, [this, &loop](boost::system::error_code ec, tcp::socket socket) {
      if (ec) {
        if (ec == asio::error::operation_aborted || !loop.acceptor->is_open()) return;
        ctx.log.warn("accept failed", {{"error", ec.message()}});
        // EMFILE and the like: back off briefly rather than spin.
        auto t = std::make_shared<asio::steady_timer>(loop.worker->io, std::chrono::milliseconds(50));
        t->async_wait([this, &loop, t](boost::system::error_code) {
          if (loop.acceptor->is_open()) accept(loop);
        });
        return;
      }
      SSL* ssl = options.tls ? options.tls->newSession() : nullptr;
      if (ssl) SSL_set_accept_state(ssl);
      auto hs = std::make_shared<Handshake>(loop.worker, ctx, Transport(std::move(socket), ssl), loop.handshakes);
      hs->start();
      accept(loop);
    });
  }

  // Runs fn on every loop's thread and waits for all to finish.
  template <typename Fn>
  void onEachLoop(Fn fn) {
    std::atomic<int> left{static_cast<int>(loops.size())};
    std::mutex m;
    std::condition_variable cv;
    for (auto& l : loops) {
      Loop* loop = l.get();
      asio::post(loop->worker->io, [&, loop] {
        fn(*loop);
        std::lock_guard g(m);
        if (--left == 0) cv.notify_all();
      });
    }
    std::unique_lock g(m);
    cv.wait_for(g, std::chrono::seconds(5), [&] { return left.load() == 0; });
  }
};

Server::Server(ServerOptions options, Handler handler)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler))) {}

Server::~Server() {
  if (impl_->running) stop(std::chrono::milliseconds(0));
}

uint16_t Server::port() const { return impl_->port; }

base::Status Server::start() {
  Impl& im = *impl_;
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(im.options.address, ec);
  if (ec) return base::makeError(base::ErrorCode::kInvalidArgument, "invalid listen address {:?}", im.options.address);
  int threads = std::max(1, im.options.threads);
  uint16_t port = im.options.port;
  for (int i = 0; i < threads; ++i) {
    auto loop = std::make_unique<Impl::Loop>();
    auto acc = std::make_unique<tcp::acceptor>(loop->worker->io);
    tcp::endpoint ep(addr, port);
    acc->open(ep.protocol(), ec);
    if (!ec) acc->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) {
      int one = 1;
      if (setsockopt(acc->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        ec = boost::system::error_code(errno, boost::system::system_category());
      }
    }
    if (!ec) acc->bind(ep, ec);
    if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return base::makeError(base::ErrorCode::kUnavailable, "listening on {}:{}: {}", im.options.address, port,
                             ec.message());
    }
    port = acc->local_endpoint().port();
    loop->acceptor = std::move(acc);
    im.loops.push_back(std::move(loop));
  }
  im.port = port;
  for (auto& l : im.loops) {
    Impl::Loop* loop = l.get();
    im.accept(*loop);
    loop->thread = std::thread([loop] {
      auto guard = asio::make_work_guard(loop->worker->io);
      tlsWorker = loop->worker.get();
      loop->worker->io.run();
      tlsWorker = nullptr;
    });
  }
  im.running = true;
  im.ctx.log.info("listening", {{"address", im.options.address}, {"port", port}, {"threads", threads},
                                {"tls", im.options.tls ? "true" : "false"}});
  return {};
}

void Server::stop(std::chrono::milliseconds drain) {
  Impl& im = *impl_;
  {
    std::lock_guard g(im.mu);
    if (!im.running) return;
    im.running = false;
  }
  // 1. stop accepting; ask every connection to finish what it has.
  im.onEachLoop([](Impl::Loop& loop) {
    loop.worker->draining = true;
    boost::system::error_code ec;
    loop.acceptor->close(ec);
    for (Handshake* hs : std::vector<Handshake*>(loop.handshakes.begin(), loop.handshakes.end())) hs->cancel();
    for (ServerConnection* c : std::vector<ServerConnection*>(loop.worker->connections.begin(),
                                                              loop.worker->connections.end())) {
      c->drain();
    }
  });
  // 2. wait for them, up to `drain`.
  auto until = std::chrono::steady_clock::now() + drain;
  for (;;) {
    std::atomic<size_t> open{0};
    im.onEachLoop([&](Impl::Loop& loop) { open += loop.worker->connections.size(); });
    if (open == 0 || std::chrono::steady_clock::now() >= until) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // 3. close what is left and stop the loops.
  im.onEachLoop([](Impl::Loop& loop) {
    for (ServerConnection* c : std::vector<ServerConnection*>(loop.worker->connections.begin(),
                                                              loop.worker->connections.end())) {
      c->close();
    }
    loop.worker->io.stop();
  });
  for (auto& l : im.loops) {
    if (l->thread.joinable()) l->thread.join();
    // Run the handlers that closing left queued, so every connection is freed.
    l->worker->io.restart();
    l->worker->io.poll();
  }
  im.ctx.log.info("stopped", {{"port", im.port}});
  std::lock_guard g(im.mu);
  im.stopped = true;
  im.stoppedCv.notify_all();
}

void Server::wait() {
  std::unique_lock g(impl_->mu);
  impl_->stoppedCv.wait(g, [&] { return impl_->stopped; });
}

}  // namespace trellis::http
