// The proxy half of trellis-ingress: an http::Handler that routes each
// request through the current RouteTable to one endpoint of its backend.
//
// Each server thread keeps its own copy of the table pointer (refreshed when
// setTable() publishes a new one: one atomic load per request), its own
// upstream connection pools (http::Client::onServerThread: the upstream side
// runs on the same event loop, no thread hop) and its own per-endpoint load
// and health: power-of-two-choices on outstanding requests, and an endpoint
// whose connections fail three times in a row (or is refused) is passed over
// for 10 s. An idempotent request that failed before any answer is retried
// once on another endpoint.
//
// Requests in flight keep the table and backends they started with, so a new
// table never cuts them.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common/base/metrics.h"
#include "common/base/result.h"
#include "common/http/client.h"
#include "common/http/handler.h"
#include "common/http/message.h"
#include "ingress/routes.h"

namespace trellis::ingress {

struct ProxyOptions {
  base::Registry* metrics = nullptr;
  bool accessLog = true;     // one JSON line per request on stdout
  // Responses up to this size (by Content-Length) are relayed whole; larger
  // ones, and those without a length (streams, long polls), piece by piece.
  size_t bufferResponsesUpTo = 256 * 1024;
};

class Proxy {
 public:
  explicit Proxy(ProxyOptions options);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  // Publishes a new table (any thread); requests that start afterwards use it.
  void setTable(std::shared_ptr<const RouteTable> table);
  std::shared_ptr<const RouteTable> table() const;
  // The ports clients reach us on: redirects go to the HTTPS one, and
  // X-Forwarded-Port tells backends which one a request came to.
  void setPorts(uint16_t http, uint16_t https);

  // The handler for one listener; `tls`: whether it terminates TLS.
  http::Handler handler(bool tls);
  // Which requests' bodies stream through the proxy as they arrive (for
  // http::ServerOptions::streamRequestBody): gRPC (both ways at once).
  static bool streamsBody(const http::Request& request);

  struct ThreadState;

 private:
  ThreadState& state();
  void serve(ThreadState& ts, bool tls, http::Request& req, std::shared_ptr<http::ResponseWriter> w);
  // Sends one attempt of an exchange (owned by the attempt) to an endpoint other than `avoid`.
  void send(ThreadState& ts, void* exchange, http::Request request, const void* avoid);
  // A 101 from the backend: the client's connection becomes a tunnel to it.
  void switched(void* exchange, const http::Headers& headers);
  // The attempt's end: the answer relayed, a retry sent, or an error answered.
  void completed(void* exchange, base::Result<http::Response> response);

  ProxyOptions options_;
  mutable std::mutex mu_;
  std::shared_ptr<const RouteTable> table_;
  std::atomic<uint64_t> version_{0};
  std::atomic<uint16_t> httpPort_{80}, httpsPort_{443};
  base::Registry ownMetrics_;
  base::Registry& metrics_;
  base::Gauge& generation_;
  base::Counter& notFound_;
};

}  // namespace trellis::ingress
