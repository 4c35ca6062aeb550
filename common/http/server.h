// An HTTP server for HTTP/1.1 and HTTP/2 (over TLS via ALPN, or cleartext
// h2c with prior knowledge), on Boost.Asio with one io_context per thread and
// one SO_REUSEPORT listener per thread.
//
//   http::Server server({.address = "127.0.0.1", .port = 0, .threads = 2, .tls = tlsConfig},
//                       [](http::Request& req, std::shared_ptr<http::ResponseWriter> w) { ... });
//   if (auto st = server.start(); !st) ...;   // binds; port() is then known
//   ...
//   server.stop(std::chrono::seconds(10));    // graceful drain, then force-close
//
// Handlers run on the connection's thread; they may answer later from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/base/metrics.h"
#include "common/base/result.h"
#include "common/http/handler.h"
#include "common/http/limits.h"
#include "common/http/tls.h"

namespace trellis::http {

struct ServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 0;  // 0: pick a free port (see Server::port())
  int threads = 1;
  std::shared_ptr<TlsServerConfig> tls;  // null: cleartext (HTTP/1.1 and h2c prior knowledge)
  Limits limits;
  std::string name = "http";  // logger name and metrics label
  base::Registry* metrics = nullptr;  // optional: server metrics are registered here
  // The response for a request the server itself refuses (413, 431, 400,
  // 408, ...) before any handler sees it; unset: a text/plain body. The API
  // server answers with a Kubernetes Status here.
  std::function<Response(int status, std::string_view message)> errorResponse;
  // Asked when an HTTP/2 request's headers are in and a body is to follow:
  // true calls the handler at once, and the body then comes piece by piece
  // through ResponseWriter::onRequestBody (a proxy's gRPC streams and
  // WebSockets over extended CONNECT, RFC 8441, which setting it also
  // advertises). Unset, or false: the handler gets the whole body. HTTP/1.1
  // bodies are always read whole.
  std::function<bool(const Request& request)> streamRequestBody;
};

class Server {
 public:
  Server(ServerOptions options, Handler handler);
  ~Server();  // stops (without drain) if still running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts the threads.
  base::Status start();
  // The bound port (after start()).
  uint16_t port() const;
  // Stops accepting, lets in-flight requests finish (HTTP/2 gets GOAWAY,
  // HTTP/1.1 connections close after their current response) for up to
  // `drain`, then closes everything and joins the threads.
  void stop(std::chrono::milliseconds drain = std::chrono::milliseconds(5000));
  // Blocks until stop() has finished.
  void wait();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::http
