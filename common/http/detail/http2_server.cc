// HTTP/2 server connection on nghttp2: streams, flow control (nghttp2's
// automatic WINDOW_UPDATE as data is consumed), max concurrent streams,
// streamed responses (DATA frames as written), trailers, GOAWAY on drain.
#include <nghttp2/nghttp2.h>

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <unordered_map>

#include "common/http/detail/server_internal.h"

namespace trellis::http::detail {
namespace {

constexpr size_t kMaxOutputPerFlush = 256 * 1024;

class Http2Connection;

struct Stream {
  int32_t id;
  Request request;
  size_t headerBytes = 0;
  int rejectStatus = 0;   // set while receiving: answer with this instead of dispatching
  bool dispatched = false;
  bool responded = false; // HEADERS submitted
  bool finished = false;  // all body data and trailers given
  bool deferred = false;  // the data source is waiting for more
  bool headOnly = false;
  std::string body;       // response bytes not yet taken by nghttp2
  size_t bodyOff = 0;
  Headers trailers;
  std::shared_ptr<class Http2Writer> writer;
  std::function<void()> closeCallback;
  // A request body that streams to the handler (ServerContext::streamRequestBody).
  bool streamingBody = false;
  bool bodyEnded = false;
  std::string bodyPending;  // arrived before the handler asked for it
  std::function<void(std::string_view, bool)> bodyCallback;
};

class Http2Writer : public ResponseWriter {
 public:
  Http2Writer(std::weak_ptr<Http2Connection> conn, std::shared_ptr<Worker> worker, int32_t stream)
      : conn_(std::move(conn)), worker_(std::move(worker)), stream_(stream) {}

  void respond(Response response) override;
  void begin(int status, Headers headers) override;
  void write(std::string data) override;
  void finish(Headers trailers) override;
  void abort() override;
  void onRequestBody(std::function<void(std::string_view data, bool end)> onData) override;
  bool closed() const override { return closed_.load(std::memory_order_acquire); }
  void onClose(std::function<void()> callback) override;
  size_t pendingBytes() const override { return pending_.load(std::memory_order_relaxed); }

  std::atomic<bool> closed_{false};
  std::atomic<size_t> pending_{0};

 private:
  template <typename Fn>
  void run(Fn&& fn);
  std::weak_ptr<Http2Connection> conn_;
  std::shared_ptr<Worker> worker_;
  int32_t stream_;
};

// Builds nghttp2 name/value pairs that point into `storage`.
class NvList {
 public:
  void add(std::string_view name, std::string_view value) {
    nv_.push_back({const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(name.data())),
                   const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(value.data())), name.size(), value.size(),
                   NGHTTP2_NV_FLAG_NONE});
  }
  const nghttp2_nv* data() const { return nv_.data(); }
  size_t size() const { return nv_.size(); }

 private:
  std::vector<nghttp2_nv> nv_;
};

bool isConnectionSpecific(std::string_view name) {
  return name == "connection" || name == "keep-alive" || name == "proxy-connection" || name == "transfer-encoding" ||
         name == "upgrade" || name == "content-length";
}

class Http2Connection : public ServerConnection {
 public:
  Http2Connection(std::shared_ptr<Worker> worker, const ServerContext& ctx, Transport transport)
      : ServerConnection(std::move(worker), ctx, std::move(transport)) {}

  ~Http2Connection() override {
    if (session_) nghttp2_session_del(session_);
  }

  bool init() {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, onBeginHeaders);
    nghttp2_session_callbacks_set_on_header_callback(cbs, onHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, onFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, onDataChunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, onStreamClose);
    nghttp2_option* opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    int rv = nghttp2_session_server_new2(&session_, cbs, this, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) return false;
    const Limits& l = ctx_.limits;
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, l.maxConcurrentStreams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, l.initialWindowSize},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(l.maxHeaderBytes)},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},  // sent only with streamed bodies (below)
    };
    size_t count = std::size(settings) - (ctx_.streamRequestBody ? 0 : 1);
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, count);
    // Let the whole connection receive as much as all its streams together.
    nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                          static_cast<int32_t>(std::min<uint64_t>(
                                              uint64_t(l.initialWindowSize) * 4, (1u << 31) - 1)));
    return true;
  }

  void feedForFuzzing(const uint8_t* data, size_t n) {
    if (!closed()) onInput(reinterpret_cast<const char*>(data), n);
    if (!closed()) flushNow();
  }

  void startServing() {
    setDeadline(ctx_.limits.idleTimeout);
    start();
    scheduleFlush();  // our SETTINGS go out at once
  }

  void drain() override {
    if (goaway_) return;
    goaway_ = true;
    nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
                          NGHTTP2_NO_ERROR, nullptr, 0);
    scheduleFlush();
  }

  // --- called on the connection's thread through the writer ---
  void respond(int32_t id, Response&& r) {
    Stream* s = stream(id);
    if (!s || s->responded) return;
    s->responded = true;
    s->finished = true;
    bool noBody = s->headOnly || r.status == 204 || r.status == 304 || (r.status >= 100 && r.status < 200);
    s->body = noBody ? std::string() : std::move(r.body);
    s->trailers = std::move(r.trailers);
    std::string status = std::to_string(r.status);
    std::string length = std::to_string(noBody && !s->headOnly ? 0 : s->body.size());
    if (s->headOnly) length = std::to_string(r.body.size());
    NvList nv;
    nv.add(":status", status);
    bool sendLength = !(r.status == 204 || r.status == 304 || r.status < 200);
    if (sendLength) nv.add("content-length", length);
    for (const auto& [name, value] : r.headers) {
      if (!isConnectionSpecific(name)) nv.add(name, value);
    }
    submit(*s, nv, !s->body.empty() || !s->trailers.empty());
  }

  void begin(int32_t id, int status, Headers&& headers) {
    Stream* s = stream(id);
    if (!s || s->responded) return;
    s->responded = true;
    std::string st = std::to_string(status);
    NvList nv;
    nv.add(":status", st);
    for (const auto& [name, value] : headers) {
      if (!isConnectionSpecific(name)) nv.add(name, value);
    }
    submit(*s, nv, !s->headOnly);
    if (s->headOnly) s->finished = true;
  }

  void write(int32_t id, std::string&& data) {
    Stream* s = stream(id);
    if (!s || !s->responded || s->finished || s->headOnly) return;
    if (s->body.size() == s->bodyOff) {
      s->body = std::move(data);
      s->bodyOff = 0;
    } else {
      s->body.append(data);
    }
    resume(*s);
  }

  void reset(int32_t id) {
    Stream* s = stream(id);
    if (!s || s->finished) return;
    s->finished = true;
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
    scheduleFlush();
  }

  void setBodyCallback(int32_t id, std::function<void(std::string_view, bool)>&& cb) {
    Stream* s = stream(id);
    if (!s || !s->streamingBody || s->bodyCallback) return;
    s->bodyCallback = std::move(cb);
    std::string early = std::move(s->bodyPending);
    s->bodyPending.clear();
    if (!early.empty()) s->bodyCallback(early, false);
    if (s->bodyEnded) s->bodyCallback({}, true);
  }

  void finish(int32_t id, Headers&& trailers) {
    Stream* s = stream(id);
    if (!s || !s->responded || s->finished) return;
    s->finished = true;
    s->trailers = std::move(trailers);
    resume(*s);
  }

  void addCloseCallback(int32_t id, std::function<void()>&& cb) {
    Stream* s = stream(id);
    if (!s) {
      cb();
      return;
    }
    s->closeCallback = std::move(cb);
  }

  void updatePending(int32_t id) {
    Stream* s = stream(id);
    if (s && s->writer) s->writer->pending_.store(s->body.size() - s->bodyOff, std::memory_order_relaxed);
  }

 protected:
  void onInput(const char* data, size_t n) override {
    ssize_t rv = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(data), n);
    if (rv < 0) {
      ctx_.stats->badRequests.inc();
      ctx_.log.debug("http2 protocol error", {{"peer", peer()}, {"error", nghttp2_strerror(static_cast<int>(rv))}});
      // nghttp2 has queued a GOAWAY where the protocol asks for one.
      broken_ = true;
      closeAfterFlush();
      return;
    }
    updateDeadline();
  }

  void beforeFlush() override {
    while (output().size() < kMaxOutputPerFlush) {
      const uint8_t* data = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) {
        close();
        return;
      }
      if (n == 0) break;
      output().append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    if (!broken_ && pendingOutput() == 0 && nghttp2_session_want_read(session_) == 0 &&
        nghttp2_session_want_write(session_) == 0) {
      closeAfterFlush();
    }
  }

  void onDeadline() override {
    if (!streams_.empty()) return;
    ctx_.stats->timeouts.inc();
    drain();
    // Closed once the GOAWAY is out and nghttp2 wants nothing more.
    nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);
    flushNow();
  }

  void onClosed() override {
    for (auto& [id, s] : streams_) closeStream(*s);
    streams_.clear();
    ServerConnection::onClosed();
  }

 private:
  Stream* stream(int32_t id) {
    if (closed()) return nullptr;
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
  }

  void updateDeadline() {
    if (streams_.empty()) {
      setDeadline(ctx_.limits.idleTimeout);
    } else {
      clearDeadline();
    }
  }

  void closeStream(Stream& s) {
    if (s.writer) s.writer->closed_.store(true, std::memory_order_release);
    if (!s.finished || s.body.size() > s.bodyOff) {
      if (auto cb = std::move(s.closeCallback)) cb();
    }
    s.writer.reset();
  }

  void submit(Stream& s, const NvList& nv, bool withBody) {
    nghttp2_data_provider prd;
    prd.source.ptr = &s;
    prd.read_callback = readBody;
    nghttp2_submit_response(session_, s.id, nv.data(), nv.size(), withBody ? &prd : nullptr);
    scheduleFlush();
  }

  void resume(Stream& s) {
    if (s.deferred) {
      s.deferred = false;
      nghttp2_session_resume_data(session_, s.id);
    }
    scheduleFlush();
  }

  static ssize_t readBody(nghttp2_session* session, int32_t id, uint8_t* buf, size_t length, uint32_t* flags,
                          nghttp2_data_source* source, void* user) {
    auto* self = static_cast<Http2Connection*>(user);
    auto* s = static_cast<Stream*>(source->ptr);
    size_t avail = s->body.size() - s->bodyOff;
    size_t n = std::min(avail, length);
    std::memcpy(buf, s->body.data() + s->bodyOff, n);
    s->bodyOff += n;
    if (s->bodyOff == s->body.size()) {
      s->body.clear();
      s->bodyOff = 0;
      if (s->finished) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (!s->trailers.empty()) {
          *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
          NvList nv;
          for (const auto& [name, value] : s->trailers) {
            if (!isConnectionSpecific(name)) nv.add(name, value);
          }
          nghttp2_submit_trailer(session, id, nv.data(), nv.size());
        }
      } else if (n == 0) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
      }
    }
    if (s->writer) s->writer->pending_.store(s->body.size() - s->bodyOff, std::memory_order_relaxed);
    (void)self;
    return static_cast<ssize_t>(n);
  }

  static int onBeginHeaders(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    auto* self = static_cast<Http2Connection*>(user);
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    if (self->goaway_) {
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
      return 0;
    }
    auto s = std::make_unique<Stream>();
    s->id = frame->hd.stream_id;
    s->request.version = Version::kHttp2;
    s->request.peer = self->peer();
    s->request.clientCommonName = self->clientCommonName();
    s->request.clientOrganizations = self->clientOrganizations();
    nghttp2_session_set_stream_user_data(session, s->id, s.get());
    self->streams_.emplace(s->id, std::move(s));
    self->clearDeadline();
    return 0;
  }

  static int onHeader(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                      const uint8_t* value, size_t valuelen, uint8_t flags, void* user) {
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
    if (!s) return 0;
    auto* self = static_cast<Http2Connection*>(user);
    std::string_view n(reinterpret_cast<const char*>(name), namelen);
    std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
      // trailers
      if (!n.empty() && n[0] != ':') s->request.trailers.add(std::string(n), std::string(v));
      return 0;
    }
    s->headerBytes += namelen + valuelen + 32;
    if (s->headerBytes > self->ctx_.limits.maxHeaderBytes ||
        s->request.headers.size() >= self->ctx_.limits.maxHeaderCount) {
      s->rejectStatus = 431;
      return 0;
    }
    if (n == ":method") s->request.method.assign(v);
    else if (n == ":path") s->request.target.assign(v);
    else if (n == ":scheme") s->request.scheme.assign(v);
    else if (n == ":authority") s->request.authority.assign(v);
    else if (n == "host") {
      if (s->request.authority.empty()) s->request.authority.assign(v);
      s->request.headers.add(std::string(n), std::string(v));
    } else {
      s->request.headers.add(std::string(n), std::string(v));
    }
    return 0;
  }

  static int onDataChunk(nghttp2_session* session, uint8_t flags, int32_t id, const uint8_t* data, size_t len,
                         void* user) {
    auto* self = static_cast<Http2Connection*>(user);
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, id));
    if (!s || s->rejectStatus) return 0;
    if (s->streamingBody) {
      std::string_view piece(reinterpret_cast<const char*>(data), len);
      if (s->bodyCallback) {
        s->bodyCallback(piece, false);
        return 0;
      }
      if (s->bodyPending.size() + len > self->ctx_.limits.maxBodyBytes) {  // nobody reads it
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_ENHANCE_YOUR_CALM);
        return 0;
      }
      s->bodyPending.append(piece);
      return 0;
    }
    if (s->request.body.size() + len > self->ctx_.limits.maxBodyBytes) {
      s->rejectStatus = 413;
      self->reject(*s);
      return 0;
    }
    s->request.body.append(reinterpret_cast<const char*>(data), len);
    return 0;
  }

  static int onFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    auto* self = static_cast<Http2Connection*>(user);
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
    if (!s) return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST && s->rejectStatus) {
      self->reject(*s);
      return 0;
    }
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (s->streamingBody) {
      if (end && !s->bodyEnded) {
        s->bodyEnded = true;
        if (s->bodyCallback) s->bodyCallback({}, true);
      }
      return 0;
    }
    if (!end && frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST && !s->dispatched &&
        self->ctx_.streamRequestBody && self->ctx_.streamRequestBody(s->request)) {
      s->streamingBody = true;  // the handler now; the body as it comes
      s->request.streamBody = true;
      self->dispatch(*s);
      return 0;
    }
    if (!end || s->dispatched || s->rejectStatus) return 0;
    self->dispatch(*s);
    return 0;
  }

  static int onStreamClose(nghttp2_session* session, int32_t id, uint32_t error, void* user) {
    auto* self = static_cast<Http2Connection*>(user);
    auto it = self->streams_.find(id);
    if (it == self->streams_.end()) return 0;
    self->closeStream(*it->second);
    self->streams_.erase(it);
    if (!self->closed()) self->updateDeadline();
    return 0;
  }

  void reject(Stream& s) {
    if (s.responded) return;
    s.dispatched = true;
    ctx_.stats->badRequests.inc();
    respond(s.id, errorResponse(ctx_, s.rejectStatus, s.rejectStatus == 413 ? "body larger than the limit"
                                                                      : "request header fields too large"));
  }

  void dispatch(Stream& s) {
    s.dispatched = true;
    ctx_.stats->requestsH2.inc();
    Request& req = s.request;
    if (req.method.empty() || req.target.empty() || req.scheme.empty()) {
      // nghttp2 checks pseudo-headers; CONNECT without :path is the one case left.
      s.rejectStatus = 400;
      respond(s.id, errorResponse(ctx_, 400, "missing request pseudo-header"));
      return;
    }
    s.headOnly = req.method == "HEAD";
    auto self = std::static_pointer_cast<Http2Connection>(shared_from_this());
    s.writer = std::make_shared<Http2Writer>(self, worker_, s.id);
    std::shared_ptr<ResponseWriter> w = s.writer;
    ctx_.handler(req, std::move(w));
  }

  nghttp2_session* session_ = nullptr;
  std::unordered_map<int32_t, std::unique_ptr<Stream>> streams_;
  bool goaway_ = false;
  bool broken_ = false;
};

template <typename Fn>
void Http2Writer::run(Fn&& fn) {
  if (closed()) return;
  int32_t id = stream_;
  runOnConnection(conn_, worker_->io, [id, fn = std::forward<Fn>(fn)](std::shared_ptr<Http2Connection> c) mutable {
    if (c) {
      fn(*c, id);
      c->updatePending(id);
    }
  });
}

void Http2Writer::respond(Response response) {
  run([r = std::move(response)](Http2Connection& c, int32_t id) mutable { c.respond(id, std::move(r)); });
}

void Http2Writer::begin(int status, Headers headers) {
  run([status, h = std::move(headers)](Http2Connection& c, int32_t id) mutable { c.begin(id, status, std::move(h)); });
}

void Http2Writer::write(std::string data) {
  pending_.fetch_add(data.size(), std::memory_order_relaxed);
  run([d = std::move(data)](Http2Connection& c, int32_t id) mutable { c.write(id, std::move(d)); });
}

void Http2Writer::finish(Headers trailers) {
  run([t = std::move(trailers)](Http2Connection& c, int32_t id) mutable { c.finish(id, std::move(t)); });
}

void Http2Writer::abort() {
  run([](Http2Connection& c, int32_t id) { c.reset(id); });
}

void Http2Writer::onRequestBody(std::function<void(std::string_view data, bool end)> onData) {
  run([cb = std::move(onData)](Http2Connection& c, int32_t id) mutable { c.setBodyCallback(id, std::move(cb)); });
}

void Http2Writer::onClose(std::function<void()> callback) {
  if (closed()) {
    callback();
    return;
  }
  int32_t id = stream_;
  runOnConnection(conn_, worker_->io, [id, cb = std::move(callback)](std::shared_ptr<Http2Connection> c) mutable {
    if (c) {
      c->addCloseCallback(id, std::move(cb));
    } else {
      cb();
    }
  });
}

}  // namespace

std::shared_ptr<ServerConnection> makeHttp2Connection(std::shared_ptr<Worker> worker, const ServerContext& ctx,
                                                      Transport transport) {
  auto conn = std::make_shared<Http2Connection>(std::move(worker), ctx, std::move(transport));
  if (!conn->init()) return nullptr;
  conn->startServing();
  return conn;
}

}  // namespace trellis::http::detail

namespace trellis::http::detail {

void fuzzHttp2ServerInput(const uint8_t* data, size_t size) {
  static base::Registry registry;
  static ServerStats stats(registry, "fuzz");
  static ServerContext ctx{[](Request& req, std::shared_ptr<ResponseWriter> w) {
                             Response r;
                             r.body = req.body;
                             w->respond(std::move(r));
                           },
                           Limits{}, base::Logger("fuzz"), &stats, false};
  base::setLogLevel(base::LogLevel::kOff);
  auto worker = std::make_shared<Worker>();
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) != 0) return;
  {
    tcp::socket sock(worker->io);
    boost::system::error_code ec;
    sock.assign(tcp::v4(), fds[0], ec);
    auto conn = std::make_shared<Http2Connection>(worker, ctx, Transport(std::move(sock), nullptr));
    if (conn->init()) {
      // Feed in two pieces so frames split across reads are covered too.
      size_t half = size / 2;
      conn->feedForFuzzing(data, half);
      conn->feedForFuzzing(data + half, size - half);
      worker->io.poll();
    }
    conn->close();
    worker->io.restart();
    worker->io.poll();
  }
  ::close(fds[1]);
}

}  // namespace trellis::http::detail
