// Internal to common/http: what the server's per-protocol connections share.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_set>

#include "common/base/log.h"
#include "common/base/metrics.h"
#include "common/http/detail/connection.h"
#include "common/http/handler.h"
#include "common/http/limits.h"

namespace trellis::http::detail {

struct ServerStats {
  explicit ServerStats(base::Registry& r, const std::string& server);
  base::Counter& connections;
  base::Gauge& activeConnections;
  base::Counter& requestsH1;
  base::Counter& requestsH2;
  base::Counter& badRequests;
  base::Counter& timeouts;
};

class ServerConnection;
struct Worker;

// The worker whose loop runs on this thread (null off server threads).
Worker* currentWorker();

// One event-loop thread of the server and the connections it owns.
struct Worker {
  asio::io_context io{1};
  Poller poller{io};
  std::unordered_set<ServerConnection*> connections;  // touched only on this thread
  bool draining = false;
};

// Everything a server connection needs from its server.
struct ServerContext {
  Handler handler;
  Limits limits;
  base::Logger log;
  ServerStats* stats;
  bool tls;
  std::function<Response(int status, std::string_view message)> errorResponse;  // optional
  std::function<bool(const Request&)> streamRequestBody;                         // optional
};

class ServerConnection : public Connection {
 public:
  ServerConnection(std::shared_ptr<Worker> worker, const ServerContext& ctx, Transport transport);
  ~ServerConnection() override;
  // Graceful: finish what is in flight, accept nothing new, then close.
  virtual void drain() = 0;

 protected:
  void onClosed() override;
  std::shared_ptr<Worker> worker_;  // writers hold it too, to post to its loop
  const ServerContext& ctx_;
};

std::shared_ptr<ServerConnection> makeHttp1Connection(std::shared_ptr<Worker> worker, const ServerContext& ctx, Transport transport);
std::shared_ptr<ServerConnection> makeHttp2Connection(std::shared_ptr<Worker> worker, const ServerContext& ctx, Transport transport);

// Runs `fn` on the connection's thread: at once if already there, else posted.
// The connection may be gone by then; `fn` gets null.
template <typename Conn, typename Fn>
void runOnConnection(const std::weak_ptr<Conn>& weak, asio::io_context& io, Fn&& fn) {
  if (io.get_executor().running_in_this_thread()) {
    fn(weak.lock());
  } else {
    asio::post(io, [weak, fn = std::forward<Fn>(fn)]() mutable { fn(weak.lock()); });
  }
}

// A small plain-text error body.
// The server's own error answer: ctx.errorResponse when set, else text/plain.
Response errorResponse(const ServerContext& ctx, int status, std::string_view message);

}  // namespace trellis::http::detail

namespace trellis::http::detail {
// Fuzzing entry point: feeds `data` to a fresh server-side HTTP/2 session
// (over a socketpair, with a handler that answers every request), then closes it.
void fuzzHttp2ServerInput(const uint8_t* data, size_t size);
}  // namespace trellis::http::detail
