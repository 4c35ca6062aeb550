// HTTP/1.1 server connection: one exchange at a time (pipelined requests are
// answered in order), keep-alive, chunked streaming responses, 100-continue,
// strict parsing (see http1_parser.h), lingering close after errors.
#include <atomic>

#include "common/http/detail/server_internal.h"
#include "common/http/http1_parser.h"
#include "common/http/http1_writer.h"

namespace trellis::http::detail {
namespace {

constexpr size_t kMaxBufferedWhileBusy = 64 * 1024;

class Http1Connection;

class Http1Writer : public ResponseWriter {
 public:
  Http1Writer(std::weak_ptr<Http1Connection> conn, std::shared_ptr<Worker> worker, uint64_t exchange)
      : conn_(std::move(conn)), worker_(std::move(worker)), exchange_(exchange) {}

  void respond(Response response) override;
  void begin(int status, Headers headers) override;
  void write(std::string data) override;
  void finish(Headers trailers) override;
  void abort() override;
  bool upgrade(Headers headers, std::function<void(std::string_view data)> onData) override;
  bool closed() const override { return closed_.load(std::memory_order_acquire); }
  void onClose(std::function<void()> callback) override;
  size_t pendingBytes() const override { return pending_.load(std::memory_order_relaxed); }

  std::atomic<bool> closed_{false};
  std::atomic<size_t> pending_{0};

 private:
  template <typename Fn>
  void run(Fn&& fn);
  std::weak_ptr<Http1Connection> conn_;
  std::shared_ptr<Worker> worker_;
  uint64_t exchange_;
};

class Http1Connection : public ServerConnection {
 public:
  Http1Connection(std::shared_ptr<Worker> worker, const ServerContext& ctx, Transport transport)
      : ServerConnection(std::move(worker), ctx, std::move(transport)),
        parser_(Http1Parser::Kind::kRequest, ctx.limits) {}

  void startServing() {
    setDeadline(ctx_.limits.idleTimeout);
    start();
  }

  void drain() override {
    draining_ = true;
    if (!busy_) {
      if (parser_.started()) return;  // let the request being read finish
      close();
    }
  }

  // --- called on the connection's thread through the writer ---
  void respond(uint64_t exchange, Response&& r) {
    if (!current(exchange) || streaming_) return;
    bool keepAlive = parser_.keepAlive() && !draining_;
    bool head = request_.method == "HEAD";
    bool noBody = r.status == 204 || r.status == 304 || (r.status >= 100 && r.status < 200);
    appendResponseHead(output(), r.status, r.headers, noBody ? BodyFraming::kNone : BodyFraming::kContentLength,
                       r.body.size(), keepAlive, request_.version == Version::kHttp10);
    if (!head && !noBody) output().append(r.body);
    finishExchange(keepAlive);
  }

  void begin(uint64_t exchange, int status, Headers&& headers) {
    if (!current(exchange) || streaming_) return;
    streaming_ = true;
    bool http10 = request_.version == Version::kHttp10;
    streamKeepAlive_ = parser_.keepAlive() && !draining_ && !http10;
    appendResponseHead(output(), status, headers, http10 ? BodyFraming::kNone : BodyFraming::kChunked, 0,
                       streamKeepAlive_);
    flushNow();
  }

  void upgrade(uint64_t exchange, Headers&& headers, std::function<void(std::string_view)>&& onData) {
    if (!current(exchange) || streaming_) return;
    tunnel_ = std::move(onData);
    std::string& out = output();
    out.append("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n");
    for (const auto& [name, value] : headers) {
      if (name == "connection" || name == "content-length" || name == "transfer-encoding") continue;
      out.append(name);
      out.append(": ");
      out.append(value);
      out.append("\r\n");
    }
    out.append("\r\n");
    clearDeadline();  // a tunnel may be quiet for as long as its ends like
    flushNow();
    // What the client sent after its request belongs to the tunnel.
    if (!pendingInput_.empty()) {
      std::string early = std::move(pendingInput_);
      pendingInput_.clear();
      tunnel_(early);
    }
    resumeReading();
  }

  void write(uint64_t exchange, std::string&& data) {
    if (tunnel_ && current(exchange)) {
      output().append(data);
      flushNow();
      return;
    }
    if (!current(exchange) || !streaming_) return;
    if (request_.version == Version::kHttp10) {
      output().append(data);
    } else {
      appendChunk(output(), data);
    }
    flushNow();
  }

  void finish(uint64_t exchange, Headers&& trailers) {
    if (tunnel_ && current(exchange)) {
      closeAfterFlush();
      return;
    }
    if (!current(exchange) || !streaming_) return;
    if (request_.version != Version::kHttp10) appendLastChunk(output(), trailers);
    streaming_ = false;
    finishExchange(streamKeepAlive_);
  }

  void abortExchange(uint64_t exchange) {
    if (current(exchange)) close();
  }

  void addCloseCallback(uint64_t exchange, std::function<void()>&& cb) {
    if (!current(exchange)) {
      cb();
      return;
    }
    closeCallback_ = std::move(cb);
  }

  void updatePending() {
    if (writer_) writer_->pending_.store(pendingOutput(), std::memory_order_relaxed);
  }

 protected:
  void onInput(const char* data, size_t n) override {
    if (tunnel_) {
      tunnel_(std::string_view(data, n));
      return;
    }
    if (busy_ || !pendingInput_.empty()) {
      pendingInput_.append(data, n);
      if (busy_) {
        if (pendingInput_.size() > kMaxBufferedWhileBusy) pauseReading();
        return;
      }
      processPending();
      return;
    }
    // Parse in place; a handler that answered at once leaves us ready for the
    // next pipelined request, one still busy gets the rest stashed.
    size_t off = 0;
    while (off < n && !closed()) {
      if (busy_) {
        pendingInput_.append(data + off, n - off);
        if (pendingInput_.size() > kMaxBufferedWhileBusy) pauseReading();
        return;
      }
      size_t used = parseFrom(data + off, n - off);
      if (used == 0) {  // cannot happen with the parser's contract; never spin
        pendingInput_.append(data + off, n - off);
        return;
      }
      off += used;
    }
  }

  void onDeadline() override {
    if (busy_ || tunnel_) return;
    if (parser_.started()) {
      ctx_.stats->timeouts.inc();
      Response r = errorResponse(ctx_, 408, "request timed out");
      appendResponseHead(output(), r.status, r.headers, BodyFraming::kContentLength, r.body.size(), false);
      output().append(r.body);
      closeAfterFlush();
      return;
    }
    close();  // idle keep-alive connection
  }

  void onDrained() override { updatePending(); }

  void onClosed() override {
    tunnel_ = nullptr;
    if (writer_) writer_->closed_.store(true, std::memory_order_release);
    writer_.reset();
    if (auto cb = std::move(closeCallback_)) cb();
    ServerConnection::onClosed();
  }

 private:
  bool current(uint64_t exchange) const { return !closed() && busy_ && exchange == exchange_; }

  // Parses and dispatches; returns the bytes used. Stops after dispatching a
  // request (the rest waits in pendingInput_ until the response is done).
  size_t parseFrom(const char* data, size_t n) {
    size_t total = 0;
    while (!closed() && !busy_) {
      size_t used = 0;
      Http1Parser::Event e = parser_.parse(data + total, n - total, used);
      total += used;
      switch (e) {
        case Http1Parser::Event::kNeedMore:
          if (headersDone_) {
            setDeadline(ctx_.limits.bodyTimeout);  // between body reads
          } else if (parser_.started() && !headerDeadlineSet_) {
            // From the first byte to the end of the headers, however slowly
            // they trickle in (slowloris).
            headerDeadlineSet_ = true;
            setDeadline(ctx_.limits.headerTimeout);
          } else if (!parser_.started()) {
            setDeadline(ctx_.limits.idleTimeout);
          }
          return total;
        case Http1Parser::Event::kHeadersComplete:
          headersDone_ = true;
          if (parser_.expectContinue()) output().append("HTTP/1.1 100 Continue\r\n\r\n");
          continue;
        case Http1Parser::Event::kBodyData:
          continue;
        case Http1Parser::Event::kMessageComplete:
          dispatch();
          return total;
        case Http1Parser::Event::kError:
          rejectMalformed();
          return n;
      }
    }
    return total;
  }

  void processPending() {
    if (processing_) return;  // an outer call continues the loop
    processing_ = true;
    while (!busy_ && !closed() && !pendingInput_.empty()) {
      std::string input = std::move(pendingInput_);
      pendingInput_.clear();
      size_t used = parseFrom(input.data(), input.size());
      if (used < input.size() && !closed()) pendingInput_.insert(0, input, used, std::string::npos);
      if (used == 0) break;
    }
    processing_ = false;
    if (!busy_ && !closed()) resumeReading();
  }

  void rejectMalformed() {
    ctx_.stats->badRequests.inc();
    ctx_.log.debug("malformed request", {{"peer", peer()}, {"status", parser_.errorStatus()},
                                         {"reason", parser_.errorMessage()}});
    Response r = errorResponse(ctx_, parser_.errorStatus(), parser_.errorMessage());
    appendResponseHead(output(), r.status, r.headers, BodyFraming::kContentLength, r.body.size(), false);
    output().append(r.body);
    pendingInput_.clear();
    closeAfterFlush();
  }

  void dispatch() {
    busy_ = true;
    headersDone_ = false;
    headerDeadlineSet_ = false;
    ++exchange_;
    clearDeadline();
    ctx_.stats->requestsH1.inc();
    request_ = std::move(parser_.message());
    request_.scheme = ctx_.tls ? "https" : "http";
    request_.peer = peer();
    request_.clientCommonName = clientCommonName();
    request_.clientOrganizations = clientOrganizations();
    auto self = std::static_pointer_cast<Http1Connection>(shared_from_this());
    writer_ = std::make_shared<Http1Writer>(self, worker_, exchange_);
    std::shared_ptr<ResponseWriter> w = writer_;
    ctx_.handler(request_, std::move(w));
  }

  void finishExchange(bool keepAlive) {
    busy_ = false;
    writer_.reset();
    closeCallback_ = nullptr;
    request_ = Request();
    if (!keepAlive) {
      pendingInput_.clear();
      closeAfterFlush();
      return;
    }
    parser_.reset();
    scheduleFlush();
    if (draining_) {
      closeAfterFlush();
      return;
    }
    setDeadline(ctx_.limits.idleTimeout);
    processPending();
  }

  Http1Parser parser_;
  Request request_;
  std::string pendingInput_;
  std::shared_ptr<Http1Writer> writer_;
  std::function<void()> closeCallback_;
  std::function<void(std::string_view)> tunnel_;  // set once upgraded: raw bytes from the client
  uint64_t exchange_ = 0;
  bool busy_ = false;
  bool streaming_ = false;
  bool streamKeepAlive_ = true;
  bool draining_ = false;
  bool processing_ = false;
  bool headersDone_ = false;
  bool headerDeadlineSet_ = false;
};

template <typename Fn>
void Http1Writer::run(Fn&& fn) {
  if (closed()) return;
  runOnConnection(conn_, worker_->io, [fn = std::forward<Fn>(fn)](std::shared_ptr<Http1Connection> c) mutable {
    if (c) {
      fn(*c);
      c->updatePending();
    }
  });
}

void Http1Writer::respond(Response response) {
  uint64_t ex = exchange_;
  run([ex, r = std::move(response)](Http1Connection& c) mutable { c.respond(ex, std::move(r)); });
}

void Http1Writer::begin(int status, Headers headers) {
  uint64_t ex = exchange_;
  run([ex, status, h = std::move(headers)](Http1Connection& c) mutable { c.begin(ex, status, std::move(h)); });
}

void Http1Writer::write(std::string data) {
  uint64_t ex = exchange_;
  pending_.fetch_add(data.size(), std::memory_order_relaxed);
  run([ex, d = std::move(data)](Http1Connection& c) mutable { c.write(ex, std::move(d)); });
}

void Http1Writer::finish(Headers trailers) {
  uint64_t ex = exchange_;
  run([ex, t = std::move(trailers)](Http1Connection& c) mutable { c.finish(ex, std::move(t)); });
}

void Http1Writer::abort() {
  uint64_t ex = exchange_;
  run([ex](Http1Connection& c) { c.abortExchange(ex); });
}

bool Http1Writer::upgrade(Headers headers, std::function<void(std::string_view data)> onData) {
  uint64_t ex = exchange_;
  run([ex, h = std::move(headers), cb = std::move(onData)](Http1Connection& c) mutable {
    c.upgrade(ex, std::move(h), std::move(cb));
  });
  return true;
}

void Http1Writer::onClose(std::function<void()> callback) {
  uint64_t ex = exchange_;
  if (closed()) {
    callback();
    return;
  }
  runOnConnection(conn_, worker_->io, [ex, cb = std::move(callback)](std::shared_ptr<Http1Connection> c) mutable {
    if (c) {
      c->addCloseCallback(ex, std::move(cb));
    } else {
      cb();
    }
  });
}

}  // namespace

std::shared_ptr<ServerConnection> makeHttp1Connection(std::shared_ptr<Worker> worker, const ServerContext& ctx,
                                                      Transport transport) {
  auto conn = std::make_shared<Http1Connection>(std::move(worker), ctx, std::move(transport));
  conn->startServing();
  return conn;
}

}  // namespace trellis::http::detail
