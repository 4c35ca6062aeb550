#include "common/http/client.h"

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include <charconv>
#include <deque>
#include <future>
#include <map>
#include <thread>
#include <unordered_map>

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include "common/http/detail/connection.h"
#include "common/http/detail/server_internal.h"
#include "common/http/http1_parser.h"
#include "common/http/http1_writer.h"

namespace trellis::http {

using namespace detail;
using base::ErrorCode;
using base::makeError;

base::Result<Origin> Origin::parse(std::string_view url) {
  Origin o;
  size_t sep = url.find("://");
  if (sep == std::string_view::npos) return makeError(ErrorCode::kInvalidArgument, "URL {:?} has no scheme", url);
  o.scheme = std::string(url.substr(0, sep));
  if (o.scheme != "http" && o.scheme != "https") {
    return makeError(ErrorCode::kInvalidArgument, "URL {:?}: unsupported scheme", url);
  }
  std::string_view rest = url.substr(sep + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  o.port = o.scheme == "https" ? 443 : 80;
  std::string_view host = rest;
  if (!rest.empty() && rest.front() == '[') {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) return makeError(ErrorCode::kInvalidArgument, "URL {:?}: bad IPv6 host", url);
    host = rest.substr(1, close - 1);
    rest = rest.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return makeError(ErrorCode::kInvalidArgument, "URL {:?}: bad port", url);
  } else {
    size_t colon = rest.rfind(':');
    host = rest.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon);
  }
  if (!rest.empty()) {
    int port = 0;
    for (char c : rest.substr(1)) {
      if (c < '0' || c > '9' || port > 65535) return makeError(ErrorCode::kInvalidArgument, "URL {:?}: bad port", url);
      port = port * 10 + (c - '0');
    }
    if (port <= 0 || port > 65535) return makeError(ErrorCode::kInvalidArgument, "URL {:?}: bad port", url);
    o.port = static_cast<uint16_t>(port);
  }
  if (host.empty()) return makeError(ErrorCode::kInvalidArgument, "URL {:?} has no host", url);
  o.host = std::string(host);
  return o;
}

std::string Origin::authority() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  bool defaultPort = (scheme == "https" && port == 443) || (scheme == "http" && port == 80);
  return defaultPort ? h : h + ":" + std::to_string(port);
}

namespace {

bool idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE" || method == "OPTIONS";
}

struct Pending {
  Client::RequestId id;
  Origin origin;
  Request request;
  ResponseHandler handler;
  Response response;
  bool headersSeen = false;
  bool done = false;
  bool retried = false;
  std::chrono::steady_clock::time_point lastActivity;
  class ClientConn* conn = nullptr;  // the connection carrying it (tunnels, streamed bodies)
  bool bodyEnded = false;            // a streamed request body was ended (endBody)

  void complete(base::Result<Response> r) {
    if (done) return;
    done = true;
    if (handler.onComplete) handler.onComplete(std::move(r));
  }
  void headers(int status, Headers h) {
    headersSeen = true;
    if (handler.idleTimeout.count()) lastActivity = std::chrono::steady_clock::now();
    response.status = status;
    response.headers = std::move(h);
    if (handler.onHeaders) handler.onHeaders(status, response.headers);
  }
  void data(std::string_view d) {
    if (handler.idleTimeout.count()) lastActivity = std::chrono::steady_clock::now();
    if (handler.onData) handler.onData(d);
    else response.body.append(d);
  }
};
using PendingPtr = std::shared_ptr<Pending>;

class ClientConn;

}  // namespace

struct Client::Impl : std::enable_shared_from_this<Client::Impl> {
  struct Pool {
    std::vector<std::shared_ptr<ClientConn>> conns;
    std::vector<ClientConn*> idle;  // HTTP/1.1 connections with nothing in flight (most recent last)
    std::deque<PendingPtr> waiting;
    int connecting = 0;
    bool knownH1 = false;
  };

  ClientOptions options;
  // Its own loop and thread, or (onServerThread) the server worker's.
  std::unique_ptr<asio::io_context> ownIo;
  std::unique_ptr<Poller> ownPoller;
  asio::io_context& io;
  Poller& poller;
  std::thread thread;
  bool borrowed = false;

  Impl(asio::io_context& loop, Poller& p) : io(loop), poller(p) {}
  explicit Impl(std::unique_ptr<asio::io_context> own)
      : ownIo(std::move(own)), ownPoller(std::make_unique<Poller>(*ownIo)), io(*ownIo), poller(*ownPoller) {}
  void shutdown();
  std::map<std::string, Pool, std::less<>> pools;
  std::string keyBuf;
  std::unordered_map<RequestId, PendingPtr> inflight;
  std::atomic<RequestId> nextId{1};
  std::atomic<size_t> open{0};
  bool stopping = false;

  static std::string key(const Origin& o) { return o.scheme + "://" + o.host + ":" + std::to_string(o.port); }
  // The pool of an origin, found without building a new key string.
  Pool& poolOf(const Origin& o) {
    keyBuf.assign(o.scheme);
    keyBuf += "://";
    keyBuf += o.host;
    keyBuf += ':';
    char port[8];
    auto [end, ec] = std::to_chars(port, port + sizeof port, o.port);
    keyBuf.append(port, end);
    auto it = pools.find(std::string_view(keyBuf));
    if (it == pools.end()) it = pools.emplace(keyBuf, Pool{}).first;
    return it->second;
  }
  void dispatch(PendingPtr p);
  void connect(const Origin& origin);
  void connected(const Origin& origin, Transport transport, bool h2);
  void connectFailed(const Origin& origin, const base::Error& err);
  void released(ClientConn* conn);  // an HTTP/1.1 connection became idle
  void closed(ClientConn* conn);
  void finished(const PendingPtr& p) { inflight.erase(p->id); }
  // Ends a request in flight with `err` (cancel, timeout).
  void abort(RequestId id, base::Error err);
  // Watches requests with an idle timeout (one timer for all of them).
  void armSweep();
  void scheduleSweep();
  std::unique_ptr<asio::steady_timer> sweepTimer;
  void failed(const PendingPtr& p, base::Error err, bool maySafelyRetry);
};

namespace {

class ClientConn : public Connection {
 public:
  ClientConn(std::shared_ptr<Client::Impl> impl, Origin origin, Transport t)
      : Connection(impl->io, impl->poller, std::move(t)), impl_(std::move(impl)), origin_(std::move(origin)) {
    impl_->open++;
  }
  ~ClientConn() override { impl_->open--; }
  virtual bool h2() const = 0;
  virtual bool available() const = 0;  // can take a request now
  virtual void submit(PendingPtr p) = 0;
  virtual void cancel(Client::RequestId id) = 0;
  // Raw bytes into an upgraded request's tunnel, or more of a streamed body.
  virtual void tunnelWrite(Client::RequestId, std::string_view) {}
  // A streamed body is complete.
  virtual void endBody(Client::RequestId) {}
  const Origin& origin() const { return origin_; }

 protected:
  void onClosed() override { impl_->closed(this); }
  std::shared_ptr<Client::Impl> impl_;
  Origin origin_;
};

class H1ClientConn : public ClientConn {
 public:
  H1ClientConn(std::shared_ptr<Client::Impl> impl, Origin origin, Transport t)
      : ClientConn(std::move(impl), std::move(origin), std::move(t)), parser_(Http1Parser::Kind::kResponse, impl_->options.limits) {}

  bool h2() const override { return false; }
  bool available() const override { return !current_ && !closed() && !broken_; }

  void submit(PendingPtr p) override {
    current_ = std::move(p);
    current_->conn = this;
    upgrade_ = current_->request.headers.has("upgrade");
    reused_ = requests_++ > 0;
    parser_.reset();
    parser_.setNoBody(current_->request.method == "HEAD");
    parser_.setStreamBody(static_cast<bool>(current_->handler.onData));
    Request& r = current_->request;
    auto te = r.headers.get("transfer-encoding");
    if (te && equalsIgnoreCase(*te, "chunked")) {
      appendRequestHead(output(), r, BodyFraming::kChunked, 0);
      appendChunk(output(), r.body);
      appendLastChunk(output(), r.trailers);
    } else {
      bool body = !r.body.empty() || r.method == "POST" || r.method == "PUT" || r.method == "PATCH";
      appendRequestHead(output(), r, body ? BodyFraming::kContentLength : BodyFraming::kNone, r.body.size());
      output().append(r.body);
    }
    clearDeadline();
    flushNow();
  }

  void cancel(Client::RequestId id) override {
    if (current_ && current_->id == id) {
      PendingPtr p = std::move(current_);
      impl_->failed(p, makeError(ErrorCode::kAborted, "request cancelled"), false);
      close();
    }
  }

  void tunnelWrite(Client::RequestId id, std::string_view data) override {
    if (!tunnel_ || !current_ || current_->id != id) return;
    output().append(data);
    flushNow();
  }

 protected:
  void onInput(const char* data, size_t n) override {
    if (tunnel_) {
      if (current_) current_->data(std::string_view(data, n));
      return;
    }
    if (!current_) {  // a server may not speak unasked; drop the connection
      broken_ = true;
      close();
      return;
    }
    size_t off = 0;
    while (current_ && !closed()) {
      size_t used = 0;
      auto e = parser_.parse(data + off, n - off, used);
      off += used;
      switch (e) {
        case Http1Parser::Event::kNeedMore:
          return;
        case Http1Parser::Event::kHeadersComplete:
          if (parser_.statusCode() == 101 && upgrade_) {
            // Switched: from here on raw bytes both ways, until either side closes.
            tunnel_ = true;
            broken_ = true;  // never reused for another request
            clearDeadline();
            current_->headers(101, std::move(parser_.message().headers));
            if (off < n && current_) current_->data(std::string_view(data + off, n - off));
            return;
          }
          if (parser_.statusCode() < 200) {  // interim (100 Continue): skip it
            parser_.reset();
            parser_.setNoBody(current_->request.method == "HEAD");
            parser_.setStreamBody(static_cast<bool>(current_->handler.onData));
            continue;
          }
          current_->headers(parser_.statusCode(), std::move(parser_.message().headers));
          continue;
        case Http1Parser::Event::kBodyData:
          current_->data(parser_.bodyChunk());
          continue;
        case Http1Parser::Event::kMessageComplete:
          complete();
          if (off < n && !closed()) {  // bytes nobody asked for
            broken_ = true;
            close();
          }
          return;
        case Http1Parser::Event::kError: {
          PendingPtr p = std::move(current_);
          if (parser_.errorStatus() == 413) {
            impl_->failed(p, makeError(ErrorCode::kResourceExhausted, "response body larger than the limit"), false);
          } else {
            impl_->failed(p, makeError(ErrorCode::kUnavailable, "malformed response: {}", parser_.errorMessage()), false);
          }
          broken_ = true;
          close();
          return;
        }
      }
    }
  }

  void onPeerClosed() override {
    if (!current_) return;
    if (tunnel_) {  // the server ended the tunnel: a complete exchange
      PendingPtr p = std::move(current_);
      impl_->finished(p);
      p->complete(std::move(p->response));
      return;
    }
    if (current_->headersSeen && parser_.finishOnEof() == Http1Parser::Event::kMessageComplete) {
      complete();
      return;
    }
    PendingPtr p = std::move(current_);
    // A reused keep-alive connection the server had already closed: safe to retry once.
    bool retry = reused_ && !p->headersSeen && idempotent(p->request.method);
    impl_->failed(p, makeError(ErrorCode::kUnavailable, "connection closed before the response was complete"), retry);
  }

  void onDeadline() override { close(); }

  void onClosed() override {
    if (current_) {
      PendingPtr p = std::move(current_);
      impl_->failed(p, makeError(ErrorCode::kUnavailable, "connection closed"), false);
    }
    ClientConn::onClosed();
  }

 private:
  void complete() {
    PendingPtr p = std::move(current_);
    if (!parser_.streamBodyEnabled()) p->response.body = std::move(parser_.message().body);
    p->response.trailers = std::move(parser_.message().trailers);
    bool keep = parser_.keepAlive();
    impl_->finished(p);
    p->complete(std::move(p->response));
    if (!keep) {
      broken_ = true;
      closeAfterFlush();
      return;
    }
    setDeadline(impl_->options.idleTimeout);
    impl_->released(this);
  }

  Http1Parser parser_;
  PendingPtr current_;
  uint64_t requests_ = 0;
  bool reused_ = false;
  bool broken_ = false;
  bool upgrade_ = false;  // the request asks to switch protocols
  bool tunnel_ = false;   // it did: raw bytes both ways
};

class H2ClientConn : public ClientConn {
 public:
  H2ClientConn(std::shared_ptr<Client::Impl> impl, Origin origin, Transport t)
      : ClientConn(std::move(impl), std::move(origin), std::move(t)) {}
  ~H2ClientConn() override {
    if (session_) nghttp2_session_del(session_);
  }

  bool init() {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, onHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, onFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, onData);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, onStreamClose);
    int rv = nghttp2_session_client_new(&session_, cbs, this);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) return false;
    const Limits& l = impl_->options.limits;
    nghttp2_settings_entry s[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                  {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, l.initialWindowSize},
                                  {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(l.maxHeaderBytes)}};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, s, std::size(s));
    nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, 64 << 20);
    return true;
  }

  bool h2() const override { return true; }
  bool available() const override {
    return !closed() && session_ && nghttp2_session_check_request_allowed(session_) != 0 && !broken_;
  }

  void submit(PendingPtr p) override {
    Request& r = p->request;
    std::vector<nghttp2_nv> nv;
    auto add = [&](std::string_view n, std::string_view v) {
      nv.push_back({const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(n.data())),
                    const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(v.data())), n.size(), v.size(),
                    NGHTTP2_NV_FLAG_NONE});
    };
    std::string target = r.target.empty() ? "/" : r.target;
    add(":method", r.method);
    add(":scheme", origin_.scheme);
    add(":authority", r.authority);
    add(":path", target);
    std::string length = std::to_string(r.body.size());
    if (!r.body.empty() && !r.streamBody) add("content-length", length);
    for (const auto& [name, value] : r.headers) {
      if (name == "host" || name == "connection" || name == "transfer-encoding" || name == "content-length" ||
          name == "keep-alive" || name == "upgrade")
        continue;
      add(name, value);
    }
    nghttp2_data_provider prd{};
    prd.read_callback = readBody;
    auto s = std::make_unique<Stream>();
    s->p = p;
    bool hasBody = !r.body.empty() || (r.streamBody && !p->bodyEnded);
    int32_t id = nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(), hasBody ? &prd : nullptr, s.get());
    if (id < 0) {
      impl_->failed(p, makeError(ErrorCode::kUnavailable, "submitting request: {}", nghttp2_strerror(id)), true);
      return;
    }
    s->id = id;
    p->conn = this;
    byRequest_[p->id] = id;
    streams_.emplace(id, std::move(s));
    clearDeadline();
    scheduleFlush();
  }

  void tunnelWrite(Client::RequestId rid, std::string_view data) override {
    Stream* s = byRequestId(rid);
    if (!s || !s->p || s->p->bodyEnded) return;
    s->p->request.body.append(data);
    nghttp2_session_resume_data(session_, s->id);
    scheduleFlush();
  }

  void endBody(Client::RequestId rid) override {
    Stream* s = byRequestId(rid);
    if (!s || !s->p || s->p->bodyEnded) return;
    s->p->bodyEnded = true;
    nghttp2_session_resume_data(session_, s->id);
    scheduleFlush();
  }

  void cancel(Client::RequestId rid) override {
    for (auto& [id, s] : streams_) {
      if (s->p && s->p->id == rid) {
        PendingPtr p = std::move(s->p);
        impl_->failed(p, makeError(ErrorCode::kAborted, "request cancelled"), false);
        nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
        scheduleFlush();
        return;
      }
    }
  }

 protected:
  void onInput(const char* data, size_t n) override {
    ssize_t rv = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(data), n);
    if (rv < 0) {
      broken_ = true;
      close();
    }
  }

  void beforeFlush() override {
    for (;;) {
      const uint8_t* d = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &d);
      if (n <= 0) break;
      output().append(reinterpret_cast<const char*>(d), static_cast<size_t>(n));
    }
    if (streams_.empty() && !nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_) &&
        pendingOutput() == 0) {
      close();
    }
  }

  void onDeadline() override { close(); }

  void onClosed() override {
    for (auto& [id, s] : streams_) {
      if (s->p) {
        PendingPtr p = std::move(s->p);
        impl_->failed(p, makeError(ErrorCode::kUnavailable, "connection closed"), false);
      }
    }
    streams_.clear();
    ClientConn::onClosed();
  }

 private:
  struct Stream {
    int32_t id = 0;
    PendingPtr p;
    size_t bodyOff = 0;
    int status = 0;
    Headers headers;
  };

  static ssize_t readBody(nghttp2_session* session, int32_t id, uint8_t* buf, size_t len, uint32_t* flags,
                          nghttp2_data_source*, void*) {
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, id));
    if (!s || !s->p) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      return 0;
    }
    std::string& body = s->p->request.body;
    size_t n = std::min(len, body.size() - s->bodyOff);
    if (n == 0 && s->p->request.streamBody && !s->p->bodyEnded) return NGHTTP2_ERR_DEFERRED;  // more to come
    std::memcpy(buf, body.data() + s->bodyOff, n);
    s->bodyOff += n;
    if (s->bodyOff == body.size()) {
      if (s->p->request.streamBody) {  // sent: drop it, a stream may be long
        body.clear();
        s->bodyOff = 0;
      }
      if (!s->p->request.streamBody || s->p->bodyEnded) *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return static_cast<ssize_t>(n);
  }

  static int onHeader(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                      const uint8_t* value, size_t valuelen, uint8_t, void*) {
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
    if (!s || frame->hd.type != NGHTTP2_HEADERS) return 0;
    std::string_view n(reinterpret_cast<const char*>(name), namelen);
    std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    if (frame->headers.cat == NGHTTP2_HCAT_HEADERS && s->status >= 200) {  // trailers
      if (s->p) s->p->response.trailers.add(std::string(n), std::string(v));
      return 0;
    }
    if (n == ":status") {
      s->status = 0;
      for (char c : v) s->status = s->status * 10 + (c - '0');
    } else {
      s->headers.add(std::string(n), std::string(v));
    }
    return 0;
  }

  static int onFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    auto* self = static_cast<H2ClientConn*>(user);
    if (frame->hd.type == NGHTTP2_GOAWAY) {
      self->broken_ = true;  // no new streams here; those in flight finish
      return 0;
    }
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
    if (!s || !s->p) return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && !s->p->headersSeen) {
      if (s->status >= 100 && s->status < 200) {
        s->headers.clear();
        return 0;
      }
      s->p->headers(s->status, std::move(s->headers));
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
      PendingPtr p = std::move(s->p);
      self->impl_->finished(p);
      p->complete(std::move(p->response));
    }
    return 0;
  }

  static int onData(nghttp2_session* session, uint8_t, int32_t id, const uint8_t* data, size_t len, void* user) {
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, id));
    if (!s || !s->p) return 0;
    auto* self = static_cast<H2ClientConn*>(user);
    if (!s->p->handler.onData && s->p->response.body.size() + len > self->impl_->options.limits.maxBodyBytes) {
      PendingPtr p = std::move(s->p);
      self->impl_->failed(p, makeError(ErrorCode::kResourceExhausted, "response body larger than the limit"), false);
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
      return 0;
    }
    s->p->data(std::string_view(reinterpret_cast<const char*>(data), len));
    return 0;
  }

  static int onStreamClose(nghttp2_session*, int32_t id, uint32_t error, void* user) {
    auto* self = static_cast<H2ClientConn*>(user);
    auto it = self->streams_.find(id);
    if (it == self->streams_.end()) return 0;
    if (it->second->p) self->byRequest_.erase(it->second->p->id);
    if (it->second->p) {
      PendingPtr p = std::move(it->second->p);
      bool refused = error == NGHTTP2_REFUSED_STREAM;
      self->impl_->failed(p, makeError(ErrorCode::kUnavailable, "stream reset by server: {}",
                                       nghttp2_http2_strerror(error)), refused);
    }
    self->streams_.erase(it);
    if (self->streams_.empty()) self->setDeadline(self->impl_->options.idleTimeout);
    return 0;
  }

  Stream* byRequestId(Client::RequestId rid) {
    auto it = byRequest_.find(rid);
    if (it == byRequest_.end()) return nullptr;
    auto st = streams_.find(it->second);
    return st == streams_.end() ? nullptr : st->second.get();
  }

  nghttp2_session* session_ = nullptr;
  std::unordered_map<int32_t, std::unique_ptr<Stream>> streams_;
  std::unordered_map<Client::RequestId, int32_t> byRequest_;
  bool broken_ = false;
};

// Connects, does the TLS handshake, and hands the transport over.
class Connector : public std::enable_shared_from_this<Connector> {
 public:
  Connector(std::shared_ptr<Client::Impl> impl, Origin origin)
      : impl_(std::move(impl)), origin_(std::move(origin)), resolver_(impl_->io), socket_(impl_->io), timer_(impl_->io) {}

  void start() {
    timer_.expires_after(impl_->options.connectTimeout);
    timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->fail(makeError(ErrorCode::kDeadlineExceeded, "connecting to {} timed out", self->origin_.authority()));
    });
    resolver_.async_resolve(origin_.host, std::to_string(origin_.port),
                            [self = shared_from_this()](boost::system::error_code ec, tcp::resolver::results_type r) {
                              if (self->done_) return;
                              if (ec) return self->fail(makeError(ErrorCode::kUnavailable, "resolving {}: {}",
                                                                  self->origin_.host, ec.message()));
                              self->connect(std::move(r));
                            });
  }

 private:
  void connect(tcp::resolver::results_type results) {
    asio::async_connect(socket_, results, [self = shared_from_this()](boost::system::error_code ec, const tcp::endpoint&) {
      if (self->done_) return;
      if (ec) return self->fail(makeError(ErrorCode::kUnavailable, "connecting to {}: {}", self->origin_.authority(),
                                          ec.message()));
      SSL* ssl = nullptr;
      if (self->origin_.scheme == "https") {
        if (!self->impl_->options.tls) {
          return self->fail(makeError(ErrorCode::kFailedPrecondition, "https origin {} but no TLS configuration",
                                      self->origin_.authority()));
        }
        ssl = self->impl_->options.tls->newSession(self->origin_.host);
        SSL_set_connect_state(ssl);
      }
      self->transport_.emplace(std::move(self->socket_), ssl);
      self->handshake();
    });
  }

  void handshake() {
    if (done_) return;
    Transport::Io r = transport_->handshake();
    if (r == Transport::Io::kOk) {
      done_ = true;
      timer_.cancel();
      bool h2 = transport_->tls() ? transport_->alpn() == "h2" : impl_->options.protocol == ClientProtocol::kHttp2;
      if (transport_->tls() && impl_->options.protocol == ClientProtocol::kHttp2 && !h2) {
        return impl_->connectFailed(origin_, makeError(ErrorCode::kUnavailable, "{} did not negotiate h2",
                                                       origin_.authority()));
      }
      impl_->connected(origin_, std::move(*transport_), h2);
      return;
    }
    if (r == Transport::Io::kWantRead || r == Transport::Io::kWantWrite) {
      auto type = r == Transport::Io::kWantRead ? tcp::socket::wait_read : tcp::socket::wait_write;
      transport_->socket().async_wait(type, [self = shared_from_this()](boost::system::error_code ec) {
        if (self->done_) return;
        if (ec) return self->fail(makeError(ErrorCode::kUnavailable, "TLS handshake: {}", ec.message()));
        self->handshake();
      });
      return;
    }
    long verify = SSL_get_verify_result(transport_->ssl());
    std::string why = verify != X509_V_OK ? X509_verify_cert_error_string(verify) : opensslErrors();
    fail(makeError(ErrorCode::kUnavailable, "TLS handshake with {} failed: {}", origin_.authority(), why));
  }

  void fail(base::Error err) {
    if (done_) return;
    done_ = true;
    timer_.cancel();
    boost::system::error_code ec;
    resolver_.cancel();
    socket_.close(ec);
    if (transport_) transport_->close();
    impl_->connectFailed(origin_, err);
  }

  std::shared_ptr<Client::Impl> impl_;
  Origin origin_;
  tcp::resolver resolver_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  std::optional<Transport> transport_;
  bool done_ = false;
};

}  // namespace

void Client::Impl::dispatch(PendingPtr p) {
  if (stopping) return p->complete(makeError(ErrorCode::kUnavailable, "client is shutting down"));
  Pool& pool = poolOf(p->origin);
  while (!pool.idle.empty()) {  // HTTP/1.1: the most recently used idle connection
    ClientConn* c = pool.idle.back();
    pool.idle.pop_back();
    if (c->available()) return c->submit(std::move(p));
  }
  if (!pool.knownH1) {  // HTTP/2: any connection that takes another stream
    for (auto& c : pool.conns) {
      if (c->available()) return c->submit(std::move(p));
    }
  }
  pool.waiting.push_back(std::move(p));
  // HTTP/2 (or not yet known): one connection serves all. HTTP/1.1: one per request.
  size_t want = pool.knownH1 ? pool.waiting.size() : 1;
  if (static_cast<size_t>(pool.connecting) < want) connect(pool.waiting.back()->origin);
}

void Client::Impl::connect(const Origin& origin) {
  poolOf(origin).connecting++;
  std::make_shared<Connector>(shared_from_this(), origin)->start();
}

void Client::Impl::connected(const Origin& origin, Transport transport, bool h2) {
  Pool& pool = poolOf(origin);
  pool.connecting--;
  std::shared_ptr<ClientConn> conn;
  if (h2) {
    auto c = std::make_shared<H2ClientConn>(shared_from_this(), origin, std::move(transport));
    if (!c->init()) return connectFailed(origin, makeError(ErrorCode::kInternal, "nghttp2 session"));
    conn = c;
  } else {
    pool.knownH1 = true;
    conn = std::make_shared<H1ClientConn>(shared_from_this(), origin, std::move(transport));
  }
  pool.conns.push_back(conn);
  conn->start();
  while (!pool.waiting.empty() && conn->available()) {
    PendingPtr p = std::move(pool.waiting.front());
    pool.waiting.pop_front();
    conn->submit(std::move(p));
  }
  if (h2) conn->scheduleFlushPublic();
  else if (conn->available()) pool.idle.push_back(conn.get());
}

void Client::Impl::connectFailed(const Origin& origin, const base::Error& err) {
  Pool& pool = poolOf(origin);
  pool.connecting--;
  // Fail the requests that no other pending connection will serve.
  size_t keep = pool.knownH1 ? static_cast<size_t>(std::max(pool.connecting, 0)) : (pool.connecting > 0 ? SIZE_MAX : 0);
  while (pool.waiting.size() > keep) {
    PendingPtr p = std::move(pool.waiting.back());
    pool.waiting.pop_back();
    inflight.erase(p->id);
    p->complete(err);
  }
}

void Client::Impl::released(ClientConn* conn) {
  Pool& pool = poolOf(conn->origin());
  if (!pool.waiting.empty()) {
    PendingPtr p = std::move(pool.waiting.front());
    pool.waiting.pop_front();
    conn->submit(std::move(p));
    return;
  }
  if (pool.idle.size() >= options.maxIdlePerOrigin) {
    conn->close();
    return;
  }
  pool.idle.push_back(conn);
}

void Client::Impl::closed(ClientConn* conn) {
  auto it = pools.find(key(conn->origin()));
  if (it == pools.end()) return;
  std::erase(it->second.idle, conn);
  std::erase_if(it->second.conns, [&](const std::shared_ptr<ClientConn>& c) { return c.get() == conn; });
}

void Client::Impl::failed(const PendingPtr& p, base::Error err, bool maySafelyRetry) {
  if (maySafelyRetry && !p->retried && !stopping) {
    p->retried = true;
    auto self = shared_from_this();
    asio::post(io, [self, p] { self->dispatch(p); });
    return;
  }
  inflight.erase(p->id);
  p->complete(std::move(err));
}

Client::Client(ClientOptions options) : impl_(std::make_shared<Impl>(std::make_unique<asio::io_context>(1))) {
  impl_->options = std::move(options);
  Impl* im = impl_.get();
  impl_->thread = std::thread([im] {
    auto guard = asio::make_work_guard(im->io);
    im->io.run();
  });
}

void Client::Impl::shutdown() {
  stopping = true;
  if (sweepTimer) sweepTimer->cancel();
  std::vector<std::shared_ptr<ClientConn>> all;
  for (auto& [k, pool] : pools) {
    all.insert(all.end(), pool.conns.begin(), pool.conns.end());
    for (auto& p : pool.waiting) p->complete(makeError(ErrorCode::kUnavailable, "client is shutting down"));
    pool.waiting.clear();
  }
  for (auto& c : all) c->close();
  inflight.clear();
}

Client::Client(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<Client> Client::onServerThread(ClientOptions options) {
  Worker* worker = currentWorker();
  if (!worker) return nullptr;
  auto impl = std::make_shared<Impl>(worker->io, worker->poller);
  impl->options = std::move(options);
  impl->borrowed = true;
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Client::~Client() {
  auto im = impl_;
  if (im->borrowed) {  // on the server thread that owns the loop
    im->shutdown();
    im->pools.clear();
    return;
  }
  std::promise<void> done;
  asio::post(im->io, [im, &done] {
    im->shutdown();
    done.set_value();
  });
  done.get_future().wait();
  im->io.stop();
  im->thread.join();
  im->pools.clear();
  im->io.restart();
  im->io.poll();  // frees what the closes left queued
}

Client::RequestId Client::start(const Origin& origin, Request request, ResponseHandler handler) {
  auto p = std::make_shared<Pending>();
  p->id = impl_->nextId++;
  p->origin = origin;
  p->request = std::move(request);
  if (p->request.method.empty()) p->request.method = "GET";
  if (p->request.target.empty()) p->request.target = "/";
  if (p->request.authority.empty()) p->request.authority = origin.authority();
  p->handler = std::move(handler);
  if (p->handler.idleTimeout.count()) p->lastActivity = std::chrono::steady_clock::now();
  auto im = impl_;
  if (im->borrowed) {  // callers are on the loop's own thread
    RequestId id = p->id;
    if (p->handler.idleTimeout.count()) im->armSweep();
    im->inflight[id] = p;
    im->dispatch(std::move(p));
    return id;
  }
  asio::post(im->io, [im, p] {
    if (p->handler.idleTimeout.count()) im->armSweep();
    im->inflight[p->id] = p;
    im->dispatch(p);
  });
  return p->id;
}

void Client::Impl::abort(RequestId id, base::Error err) {
  auto it = inflight.find(id);
  if (it == inflight.end()) return;
  PendingPtr p = it->second;
  p->complete(err);  // first: the connections' cancel reports kAborted, which p then ignores
  for (auto& [k, pool] : pools) {
    for (auto& c : std::vector<std::shared_ptr<ClientConn>>(pool.conns)) c->cancel(id);
    auto w = std::find(pool.waiting.begin(), pool.waiting.end(), p);
    if (w != pool.waiting.end()) pool.waiting.erase(w);
  }
  inflight.erase(id);
}

void Client::Impl::armSweep() {
  if (sweepTimer) return;
  sweepTimer = std::make_unique<asio::steady_timer>(io);
  scheduleSweep();
}

void Client::Impl::scheduleSweep() {
  sweepTimer->expires_after(std::chrono::milliseconds(100));
  sweepTimer->async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->stopping) return;
    auto now = std::chrono::steady_clock::now();
    std::vector<std::pair<RequestId, std::chrono::milliseconds>> late;
    for (auto& [id, p] : self->inflight) {
      auto limit = p->handler.idleTimeout;
      if (limit.count() && now - p->lastActivity > limit) late.emplace_back(id, limit);
    }
    for (auto& [id, limit] : late) {
      self->abort(id, makeError(ErrorCode::kDeadlineExceeded, "no answer from the server for {} ms", limit.count()));
    }
    self->scheduleSweep();
  });
}

void Client::write(RequestId id, std::string data) {
  auto im = impl_;
  auto run = [im, id, d = std::move(data)] {
    auto it = im->inflight.find(id);
    if (it == im->inflight.end()) return;
    Pending& p = *it->second;
    if (p.conn) {
      p.conn->tunnelWrite(id, d);
    } else if (p.request.streamBody && !p.bodyEnded) {
      p.request.body.append(d);  // not on a connection yet: sent first when it is
    }
  };
  if (im->borrowed) return run();
  asio::post(im->io, std::move(run));
}

void Client::endBody(RequestId id) {
  auto im = impl_;
  auto run = [im, id] {
    auto it = im->inflight.find(id);
    if (it == im->inflight.end()) return;
    if (it->second->conn) it->second->conn->endBody(id);
    else it->second->bodyEnded = true;
  };
  if (im->borrowed) return run();
  asio::post(im->io, std::move(run));
}

void Client::cancel(RequestId id) {
  auto im = impl_;
  auto run = [im, id] { im->abort(id, makeError(ErrorCode::kAborted, "request cancelled")); };
  if (im->borrowed) return run();
  asio::post(im->io, run);
}

base::Result<Response> Client::fetch(const Origin& origin, Request request, std::chrono::milliseconds timeout) {
  auto promise = std::make_shared<std::promise<base::Result<Response>>>();
  auto future = promise->get_future();
  RequestId id = start(origin, std::move(request), {.onComplete = [promise](base::Result<Response> r) {
                                                      promise->set_value(std::move(r));
                                                    }});
  if (future.wait_for(timeout) != std::future_status::ready) {
    cancel(id);
    future.wait();
    return makeError(ErrorCode::kDeadlineExceeded, "request to {} timed out after {} ms", origin.authority(),
                     timeout.count());
  }
  return future.get();
}

base::Result<Response> Client::fetch(std::string_view url, Request request, std::chrono::milliseconds timeout) {
  auto origin = Origin::parse(url);
  if (!origin) return std::move(origin).error();
  if (request.target.empty()) {
    size_t sep = url.find("://");
    size_t path = url.find_first_of("/?", sep + 3);
    request.target = path == std::string_view::npos ? "/" : std::string(url.substr(path));
    if (request.target.front() == '?') request.target.insert(0, "/");
  }
  return fetch(*origin, std::move(request), timeout);
}

size_t Client::openConnections() const { return impl_->open.load(); }

}  // namespace trellis::http
