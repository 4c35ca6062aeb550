#include "ingress/proxy.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "common/base/base64.h"
#include "common/base/log.h"
#include "common/kube/object.h"

namespace trellis::ingress {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kEjectAfterFailures = 3;
constexpr auto kEjectFor = std::chrono::seconds(10);

// Hop-by-hop fields (RFC 9110 §7.6.1) and those the proxy sets itself.
bool hopByHop(std::string_view name) {
  switch (name.size()) {
    case 2: return name == "te";
    case 7: return name == "upgrade" || name == "trailer";
    case 10: return name == "connection" || name == "keep-alive";
    case 14: return name == "content-length";
    case 16: return name == "proxy-connection";
    case 17: return name == "transfer-encoding";
    default: return false;
  }
}

bool idempotent(std::string_view m) {
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "PUT" || m == "DELETE" || m == "TRACE";
}

// The peer's address without the port ("10.0.0.1:5555" → "10.0.0.1", "[::1]:5" → "::1").
std::string_view peerIp(std::string_view peer) {
  if (!peer.empty() && peer.front() == '[') {
    size_t close = peer.find(']');
    return close == std::string_view::npos ? peer : peer.substr(1, close - 1);
  }
  size_t colon = peer.rfind(':');
  return colon == std::string_view::npos ? peer : peer.substr(0, colon);
}

// JSON string escaping for the access log.
void appendJsonString(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

struct Upstream {
  int outstanding = 0;
  int failures = 0;  // in a row
  Clock::time_point ejectedUntil{};
};

struct RouteStats {
  std::vector<std::pair<int, base::Counter*>> byCode;
  base::Histogram* latency = nullptr;
  base::Counter* upstreamErrors = nullptr;
};

}  // namespace

struct Proxy::ThreadState {
  const Proxy* owner = nullptr;
  uint64_t version = ~0ull;
  std::shared_ptr<const RouteTable> table;
  std::map<std::tuple<UpstreamProtocol, int64_t, int64_t>, std::unique_ptr<http::Client>> clients;
  std::unordered_map<std::string, Upstream> upstreams;  // by protocol + endpoint
  // For the current table (cleared when it changes; exchanges keep theirs).
  std::unordered_map<const Route*, std::shared_ptr<RouteStats>> stats;
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  uint64_t requestIds = 0;
  std::string pid;
  std::string keyBuf;   // scratch for upstream keys
  std::string hostBuf;  // the current request's normalized host

  uint64_t random() {  // xorshift64*
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
  }

  http::Client& client(const Backend& b, const RoutePolicy& p) {
    auto key = std::make_tuple(b.protocol, p.connectTimeoutMs, p.idleTimeoutMs);
    auto it = clients.find(key);
    if (it != clients.end()) return *it->second;
    http::ClientOptions o;
    o.protocol = b.protocol == UpstreamProtocol::kH2c ? http::ClientProtocol::kHttp2 : http::ClientProtocol::kAuto;
    o.connectTimeout = std::chrono::milliseconds(p.connectTimeoutMs);
    o.idleTimeout = std::chrono::milliseconds(p.idleTimeoutMs);
    o.maxIdlePerOrigin = 512;
    o.limits.maxBodyBytes = SIZE_MAX;  // bodies are relayed, not held (beyond bufferResponsesUpTo)
    if (b.protocol == UpstreamProtocol::kHttps) {
      // Backends inside the cluster present certificates no CA of ours signed
      // (as with ingress-nginx's default): encrypted, not verified.
      http::TlsClientOptions t;
      t.insecureSkipVerify = true;
      t.alpn = {"http/1.1"};
      o.tls = *http::TlsClientConfig::create(t);
    }
    return *clients.emplace(key, http::Client::onServerThread(std::move(o))).first->second;
  }
};

namespace {

// One request on its way through the proxy. Owned by the upstream attempt in
// flight: created for the first, kept for a retry, deleted when the last
// attempt completes (the client calls onComplete exactly once per attempt).
struct Exchange {
  Proxy* proxy = nullptr;
  Proxy::ThreadState* ts = nullptr;
  std::shared_ptr<http::ResponseWriter> w;
  std::shared_ptr<const RouteTable> table;  // keeps route and backend alive
  const Route* route = nullptr;
  const Backend* backend = nullptr;
  std::shared_ptr<RouteStats> stats;
  Upstream* up = nullptr;
  const Endpoint* endpoint = nullptr;
  std::optional<http::Request> retryCopy;
  bool retried = false;
  // The answer so far.
  int status = 0;
  std::string body;
  bool streaming = false;
  bool upgrade = false;    // asked to switch protocols (WebSocket)
  bool connectWs = false;  // ... by extended CONNECT over HTTP/2
  bool tunnel = false;   // switched: raw bytes both ways
  http::Client* client = nullptr;
  http::Client::RequestId upstreamId = 0;
  bool streamUp = false;               // the request body streams up as it arrives
  std::optional<http::Request> held;   // a streamed body gathered for an HTTP/1.1 backend
  bool accessLog = false;
  size_t bytes = 0;
  Clock::time_point start;
  std::string requestId, method, host, target, peer, protocol;
};

}  // namespace

Proxy::Proxy(ProxyOptions options)
    : options_(std::move(options)),
      metrics_(options_.metrics ? *options_.metrics : ownMetrics_),
      generation_(metrics_.gauge("trellis_ingress_route_table_generation", "Generation of the route table in use")),
      notFound_(metrics_.counter("trellis_ingress_requests_total", "Requests answered, by Ingress, Service and status",
                                 {{"ingress", ""}, {"service", ""}, {"code", "404"}})) {}

Proxy::~Proxy() = default;

void Proxy::setTable(std::shared_ptr<const RouteTable> table) {
  std::lock_guard g(mu_);
  generation_.set(static_cast<double>(table->generation()));
  table_ = std::move(table);
  version_.fetch_add(1, std::memory_order_release);
}

void Proxy::setPorts(uint16_t http, uint16_t https) {
  httpPort_.store(http);
  httpsPort_.store(https);
}

std::shared_ptr<const RouteTable> Proxy::table() const {
  std::lock_guard g(mu_);
  return table_;
}

Proxy::ThreadState& Proxy::state() {
  thread_local std::vector<std::unique_ptr<ThreadState>> states;
  for (auto& s : states) {
    if (s->owner == this) return *s;
  }
  auto s = std::make_unique<ThreadState>();
  s->owner = this;
  s->rng ^= reinterpret_cast<uintptr_t>(s.get()) * 0x2545F4914F6CDD1Dull;
  s->pid = std::to_string(getpid());
  states.push_back(std::move(s));
  return *states.back();
}

bool Proxy::streamsBody(const http::Request& request) {
  if (request.method == "CONNECT") return true;  // extended CONNECT (RFC 8441): a tunnel
  auto type = request.headers.get("content-type");
  return type && type->starts_with("application/grpc");
}

http::Handler Proxy::handler(bool tls) {
  return [this, tls](http::Request& req, std::shared_ptr<http::ResponseWriter> w) { serve(state(), tls, req, std::move(w)); };
}

namespace {

void logAccess(const Exchange& ex, int status) {
  std::string line;
  line.reserve(384);
  line += "{\"ts\":";
  appendJsonString(line, kube::rfc3339Now());
  line += ",\"msg\":\"request\",\"id\":";
  appendJsonString(line, ex.requestId);
  line += ",\"method\":";
  appendJsonString(line, ex.method);
  line += ",\"host\":";
  appendJsonString(line, ex.host);
  line += ",\"path\":";
  appendJsonString(line, ex.target);
  line += fmt::format(",\"status\":{},\"bytes\":{},\"ms\":{:.3f},\"ingress\":", status, ex.bytes,
                      std::chrono::duration<double, std::milli>(Clock::now() - ex.start).count());
  appendJsonString(line, ex.route ? ex.route->source : "");
  line += ",\"rule\":";
  appendJsonString(line, ex.route ? ex.route->rule : "");
  line += ",\"service\":";
  appendJsonString(line, ex.backend ? ex.backend->id() : "");
  line += ",\"upstream\":";
  appendJsonString(line, ex.endpoint ? ex.endpoint->hostPort : "");
  line += ",\"peer\":";
  appendJsonString(line, ex.peer);
  line += ",\"protocol\":";
  appendJsonString(line, ex.protocol);
  line += "}\n";
  (void)!::write(1, line.data(), line.size());
}


// Power of two choices on outstanding requests among endpoints not ejected
// (all of them when every one is); `avoid` is skipped when there is another.
const Endpoint* pick(Proxy::ThreadState& ts, const Backend& b, const Endpoint* avoid, Upstream** upOut,
                     std::string& keyBuf) {  // keyBuf: scratch
  auto now = Clock::now();
  const auto& eps = b.endpoints;
  auto upstreamOf = [&](const Endpoint& e) -> Upstream& {
    keyBuf.assign(upstreamProtocolName(b.protocol));
    keyBuf += '|';
    keyBuf += e.hostPort;
    return ts.upstreams[keyBuf];
  };
  auto usable = [&](const Endpoint& e, Upstream& u) { return &e != avoid && u.ejectedUntil <= now; };
  const Endpoint* best = nullptr;
  Upstream* bestUp = nullptr;
  if (eps.size() == 1) {
    best = &eps[0];
    bestUp = &upstreamOf(eps[0]);
  } else {
    for (int tries = 0; tries < 2 && !best; ++tries) {
      // Two random candidates; on the second try, scan for anything usable.
      for (int i = 0; i < 2; ++i) {
        const Endpoint& e = eps[ts.random() % eps.size()];
        Upstream& u = upstreamOf(e);
        if (!usable(e, u)) continue;
        if (!best || u.outstanding < bestUp->outstanding) best = &e, bestUp = &u;
      }
      if (!best && tries == 1) {
        for (const Endpoint& e : eps) {
          Upstream& u = upstreamOf(e);
          if (usable(e, u) && (!best || u.outstanding < bestUp->outstanding)) best = &e, bestUp = &u;
        }
      }
    }
    if (!best) {  // everything ejected (or only `avoid` left): take any but `avoid`
      const Endpoint& e = eps[ts.random() % eps.size()];
      best = &e == avoid ? &eps[(&e - eps.data() + 1) % eps.size()] : &e;
      bestUp = &upstreamOf(*best);
    }
  }
  *upOut = bestUp;
  return best;
}

std::shared_ptr<RouteStats> statsFor(base::Registry& m, Proxy::ThreadState& ts, const Route& r, const Backend* b) {
  std::shared_ptr<RouteStats>& slot = ts.stats[&r];
  if (!slot) slot = std::make_shared<RouteStats>();
  RouteStats& s = *slot;
  if (!s.latency) {
    s.latency = &m.histogram("trellis_ingress_request_duration_seconds", "Time from request to the end of the response",
                             base::latencyBuckets(), {{"ingress", r.source}});
    s.upstreamErrors = &m.counter("trellis_ingress_upstream_errors_total",
                                  "Upstream connections or exchanges that failed", {{"service", b ? b->id() : ""}});
  }
  return slot;
}

void countCode(base::Registry& m, const Exchange& ex, int code) {
  if (!ex.stats) return;
  for (auto& [c, counter] : ex.stats->byCode) {
    if (c == code) {
      counter->inc();
      return;
    }
  }
  base::Counter* counter = &m.counter("trellis_ingress_requests_total", "Requests answered, by Ingress, Service and status",
                                      {{"ingress", ex.route->source},
                                       {"service", ex.backend ? ex.backend->id() : ""},
                                       {"code", std::to_string(code)}});
  ex.stats->byCode.emplace_back(code, counter);
  counter->inc();
}

http::Response textResponse(int status, std::string_view body) {
  http::Response r;
  r.status = status;
  r.headers.add("content-type", "text/plain; charset=utf-8");
  r.body = std::string(body);
  r.body += '\n';
  return r;
}

}  // namespace

void Proxy::serve(ThreadState& ts, bool tls, http::Request& req, std::shared_ptr<http::ResponseWriter> w) {
  if (uint64_t v = version_.load(std::memory_order_acquire); v != ts.version) {
    std::lock_guard g(mu_);
    ts.table = table_;
    ts.version = version_.load(std::memory_order_relaxed);
    ts.stats.clear();
  }
  if (!ts.table) {
    w->respond(textResponse(503, "the ingress has no route table yet"));
    return;
  }
  auto ex = std::make_unique<Exchange>();
  ex->proxy = this;
  ex->ts = &ts;
  ex->start = Clock::now();
  ex->table = ts.table;
  ex->accessLog = options_.accessLog;
  normalizeHostInto(req.authority, ts.hostBuf);
  const std::string& host = ts.hostBuf;
  std::string_view path = req.path();
  RouteTable::Match m = ts.table->match(host, path);
  if (ex->accessLog) {
    ex->method = req.method;
    ex->host = host;
    ex->target = req.target;
    ex->peer = req.peer;
    ex->protocol = std::string(http::versionName(req.version));
  }
  auto finishLocal = [&](http::Response r) {
    if (ex->route) countCode(metrics_, *ex, r.status);
    else if (r.status == 404) notFound_.inc();
    if (ex->accessLog) {
      ex->bytes = r.body.size();
      logAccess(*ex, r.status);
    }
    w->respond(std::move(r));
  };
  if (!m.route) return finishLocal(textResponse(404, "404 page not found: no Ingress rule matches this host and path"));
  ex->route = m.route;
  const Route& route = *m.route;
  const RoutePolicy& policy = *route.policy;
  // One backend per Ingress rule; weighted ones (HTTPRoute) by weight.
  const Backend* backend = route.backends.front().backend.get();
  if (route.backends.size() > 1) {
    uint64_t total = 0;
    for (const auto& wb : route.backends) total += wb.weight;
    uint64_t x = total ? ts.random() % total : 0;
    for (const auto& wb : route.backends) {
      if (x < wb.weight) {
        backend = wb.backend.get();
        break;
      }
      x -= wb.weight;
    }
  }
  ex->backend = backend;
  ex->stats = statsFor(metrics_, ts, route, backend);
  if (!tls && policy.sslRedirect) {
    http::Response r;
    r.status = 308;
    std::string authority = host;
    if (uint16_t port = httpsPort_.load(std::memory_order_relaxed); port != 443) authority += fmt::format(":{}", port);
    r.headers.add("location", fmt::format("https://{}{}", authority, req.target));
    return finishLocal(std::move(r));
  }
  if (!req.streamBody && req.body.size() > policy.maxBodyBytes) {
    return finishLocal(textResponse(413, fmt::format("request body larger than {} bytes", policy.maxBodyBytes)));
  }
  if (backend->endpoints.empty()) {
    return finishLocal(textResponse(503, fmt::format("Service {} has no ready endpoints", backend->id())));
  }

  // A WebSocket over HTTP/2 (extended CONNECT, RFC 8441): to the backend, an
  // HTTP/1.1 Upgrade with a key of ours; to the client, 200 and DATA frames.
  bool connectWs = req.version == http::Version::kHttp2 && req.method == "CONNECT" &&
                   req.headers.get(":protocol") == std::optional<std::string_view>("websocket");
  if (req.method == "CONNECT" && !connectWs) {
    return finishLocal(textResponse(405, "CONNECT is not proxied (only WebSockets by extended CONNECT)"));
  }
  // The request as the backend sees it.
  http::Request up;
  up.method = std::move(req.method);
  up.target = std::move(req.target);
  up.authority = std::move(req.authority);
  up.body = std::move(req.body);
  up.trailers = std::move(req.trailers);
  up.headers.reserve(req.headers.size() + 6);
  std::string_view xff;
  bool teTrailers = false, hasRequestId = false;
  // Fields the client's Connection header names are hop-by-hop too.
  std::vector<std::string> listed;
  if (auto c = req.headers.get("connection")) {
    for (std::string_view rest = *c; !rest.empty();) {
      size_t comma = rest.find(',');
      std::string_view tok = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      while (!tok.empty() && (tok.front() == ' ' || tok.front() == '\t')) tok.remove_prefix(1);
      while (!tok.empty() && (tok.back() == ' ' || tok.back() == '\t')) tok.remove_suffix(1);
      if (!tok.empty()) {
        listed.emplace_back(tok);
        http::toLower(listed.back());
      }
    }
  }
  // An HTTP/1.1 Upgrade (WebSocket): the backend is asked to switch too.
  bool upgrade = req.version == http::Version::kHttp11 && req.headers.has("upgrade") &&
                 std::find(listed.begin(), listed.end(), "upgrade") != listed.end();
  ex->upgrade = upgrade || connectWs;
  ex->connectWs = connectWs;
  if (connectWs) {
    up.method = "GET";
    up.headers.add("upgrade", "websocket");
    std::string key(16, '\0');
    for (size_t i = 0; i < key.size(); i += 8) {
      uint64_t r = ts.random();
      std::memcpy(key.data() + i, &r, 8);
    }
    up.headers.add("sec-websocket-key", base::base64Encode(key));
  }
  for (auto& [name, value] : req.headers) {
    if (!name.empty() && name[0] == ':') continue;  // :protocol
    if (!listed.empty() && std::find(listed.begin(), listed.end(), name) != listed.end() && name != "upgrade") continue;
    if (hopByHop(name)) {
      if (name == "te" && value.find("trailers") != std::string::npos) teTrailers = true;
      if (name == "upgrade" && upgrade) up.headers.add("upgrade", value);  // carried on: the backend switches too
      continue;
    }
    if (name == "x-forwarded-for") { xff = value; continue; }
    if (name == "x-request-id") {
      hasRequestId = true;
      if (ex->accessLog) ex->requestId = value;  // copied: the value moves on below
    }
    if (name == "host" || name == "x-forwarded-proto" || name == "x-forwarded-host" || name == "x-forwarded-port" ||
        name == "forwarded")
      continue;
    up.headers.add(std::move(const_cast<std::string&>(name)), std::move(const_cast<std::string&>(value)));
  }
  if (teTrailers) up.headers.add("te", "trailers");
  std::string_view ip = peerIp(req.peer);
  up.headers.add("x-forwarded-for", xff.empty() ? std::string(ip) : fmt::format("{}, {}", xff, ip));
  up.headers.add("x-forwarded-proto", tls ? "https" : "http");
  up.headers.add("x-forwarded-host", host);
  // Our own port as the client reached it.
  up.headers.add("x-forwarded-port", std::to_string((tls ? httpsPort_ : httpPort_).load(std::memory_order_relaxed)));
  if (!hasRequestId) {
    std::string id = fmt::format("{:016x}{:016x}", ts.random(), ++ts.requestIds);
    if (ex->accessLog) ex->requestId = id;
    up.headers.add("x-request-id", std::move(id));
  }
  bool v6 = ip.find(':') != std::string_view::npos;
  up.headers.add("forwarded", v6 ? fmt::format("for=\"[{}]\";host={};proto={}", ip, host, tls ? "https" : "http")
                                 : fmt::format("for={};host={};proto={}", ip, host, tls ? "https" : "http"));
  if (idempotent(up.method) && backend->endpoints.size() > 1 && !upgrade) ex->retryCopy = up;
  ex->w = std::move(w);
  if (req.streamBody && !connectWs) {
    if (backend->protocol == UpstreamProtocol::kH2c) {
      // gRPC and other streams both ways: the body goes up as it arrives.
      up.streamBody = true;
      ex->streamUp = true;
    } else {
      // An HTTP/1.1 backend takes whole bodies: gather it first. Until it goes
      // up, the exchange belongs to these two callbacks (shared state: the
      // close callback may run after the exchange is long done).
      struct Gather {
        Exchange* ex;
        bool sent = false;
      };
      auto g = std::make_shared<Gather>(Gather{ex.release()});
      g->ex->held = std::move(up);
      g->ex->w->onClose([g] {
        if (!g->sent) delete g->ex;  // the client left before its body was whole
        g->sent = true;
      });
      g->ex->w->onRequestBody([g](std::string_view data, bool end) {
        if (g->sent) return;
        Exchange* held = g->ex;
        held->held->body.append(data);
        if (held->held->body.size() > held->route->policy->maxBodyBytes) {
          g->sent = true;
          held->w->respond(textResponse(413, "request body larger than the limit"));
          delete held;
          return;
        }
        if (!end) return;
        g->sent = true;
        http::Request whole = std::move(*held->held);
        whole.streamBody = false;
        held->proxy->send(*held->ts, held, std::move(whole), nullptr);
      });
      return;
    }
  }
  send(ts, ex.release(), std::move(up), nullptr);
}

void Proxy::send(ThreadState& ts, void* exchange, http::Request request, const void* avoidv) {
  auto* ex = static_cast<Exchange*>(exchange);
  const Backend& backend = *ex->backend;
  const RoutePolicy& policy = *ex->route->policy;
  ex->endpoint = pick(ts, backend, static_cast<const Endpoint*>(avoidv), &ex->up, ts.keyBuf);
  ex->up->outstanding++;
  http::Origin origin;
  origin.scheme = backend.protocol == UpstreamProtocol::kHttps ? "https" : "http";
  origin.host = ex->endpoint->ip;
  origin.port = ex->endpoint->port;
  http::ResponseHandler h;
  // A tunnel may be quiet for long: the read timeout covers requests, not WebSockets.
  h.idleTimeout = std::chrono::milliseconds(ex->upgrade ? 0 : policy.readTimeoutMs);
  // The callbacks capture only the raw pointer: small enough for std::function
  // to hold without allocating.
  h.onHeaders = [ex](int status, const http::Headers& headers) {
    ex->status = status;
    if (status == 101 && ex->upgrade) return ex->proxy->switched(ex, headers);
    bool buffered = false;
    if (auto len = headers.get("content-length")) {
      size_t n = 0;
      for (char c : *len) n = n * 10 + static_cast<size_t>(c - '0');
      buffered = n <= ex->proxy->options_.bufferResponsesUpTo;
    }
    if (buffered) return;  // relayed whole from onComplete, headers and all
    // A stream, a long poll or a large body: relay as it comes.
    ex->streaming = true;
    http::Headers relay;
    relay.reserve(headers.size());
    for (const auto& [name, value] : headers) {
      if (!hopByHop(name)) relay.add(name, value);
    }
    ex->w->begin(status, std::move(relay));
  };
  h.onData = [ex](std::string_view data) {
    ex->bytes += data.size();
    if (ex->streaming || ex->tunnel) ex->w->write(std::string(data));
    else ex->body.append(data);
  };
  h.onComplete = [ex](base::Result<http::Response> r) { ex->proxy->completed(ex, std::move(r)); };
  ex->client = &ts.client(backend, policy);
  ex->upstreamId = ex->client->start(origin, std::move(request), std::move(h));
  if (ex->streamUp) {
    http::Client* client = ex->client;
    http::Client::RequestId id = ex->upstreamId;
    ex->w->onRequestBody([client, id](std::string_view data, bool end) {
      if (!data.empty()) client->write(id, std::string(data));
      if (end) client->endBody(id);
    });
    ex->w->onClose([client, id] { client->cancel(id); });  // the client reset the stream
  }
}

void Proxy::switched(void* exchange, const http::Headers& headers) {
  auto* ex = static_cast<Exchange*>(exchange);
  ex->tunnel = true;
  http::Headers relay;
  for (const auto& [name, value] : headers) {
    if (!hopByHop(name) || name == "upgrade") relay.add(name, value);
  }
  // Bytes from the client go up the upstream tunnel; the client leaving closes it.
  http::Client* client = ex->client;
  http::Client::RequestId id = ex->upstreamId;
  ex->w->onClose([client, id] { client->cancel(id); });
  if (ex->connectWs) {  // HTTP/2: 200, then the stream's DATA both ways (what came early was kept)
    relay.removeIf([](std::string_view n) { return n == "upgrade" || n == "sec-websocket-accept"; });
    ex->w->begin(200, std::move(relay));
    ex->w->onRequestBody([client, id](std::string_view data, bool end) {
      if (!data.empty()) client->write(id, std::string(data));
      if (end) client->cancel(id);  // the client ended its side: close the backend's
    });
    return;
  }
  ex->w->upgrade(std::move(relay), [client, id](std::string_view data) { client->write(id, std::string(data)); });
}

void Proxy::completed(void* exchange, base::Result<http::Response> r) {
  std::unique_ptr<Exchange> ex(static_cast<Exchange*>(exchange));
  ThreadState& ts = *ex->ts;
  ex->up->outstanding--;
  if (!r) {
    ex->stats->upstreamErrors->inc();
    bool unavailable = r.error().code() == base::ErrorCode::kUnavailable;
    if (unavailable && ++ex->up->failures >= kEjectAfterFailures) ex->up->ejectedUntil = Clock::now() + kEjectFor;
    if (!ex->streaming && ex->status == 0 && unavailable && ex->retryCopy && !ex->retried) {
      // Failed before any answer: once more, on another endpoint.
      ex->retried = true;
      http::Request again = std::move(*ex->retryCopy);
      ex->retryCopy.reset();
      const Endpoint* failed = ex->endpoint;
      send(ts, ex.release(), std::move(again), failed);
      return;
    }
    if (ex->tunnel) {  // the client left (cancelled) or the backend's connection failed
      ex->w->finish();
      countCode(metrics_, *ex, 101);
      if (ex->accessLog) logAccess(*ex, 101);
      return;
    }
    if (ex->streaming) {  // the status line is out: the client must not take a cut answer for a whole one
      ex->w->abort();
      countCode(metrics_, *ex, ex->status);
      if (ex->accessLog) logAccess(*ex, ex->status);
      return;
    }
    int status = r.error().code() == base::ErrorCode::kDeadlineExceeded ? 504 : 502;
    countCode(metrics_, *ex, status);
    if (ex->accessLog) logAccess(*ex, status);
    ex->w->respond(textResponse(status, fmt::format("upstream {}: {}", ex->endpoint->hostPort, r.error().message())));
    return;
  }
  ex->up->failures = 0;
  ex->stats->latency->observe(std::chrono::duration<double>(Clock::now() - ex->start).count());
  countCode(metrics_, *ex, r->status);
  if (ex->accessLog) logAccess(*ex, r->status);
  if (ex->streaming || ex->tunnel) {
    ex->w->finish(std::move(r->trailers));
    return;
  }
  http::Response resp = std::move(*r);
  resp.headers.removeIf(hopByHop);
  resp.body = std::move(ex->body);
  ex->w->respond(std::move(resp));
}

}  // namespace trellis::ingress
