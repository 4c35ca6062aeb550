// An HTTP client for HTTP/1.1 and HTTP/2, over TLS (protocol by ALPN) or
// cleartext (HTTP/1.1, or h2c with prior knowledge). It owns one event-loop
// thread. Per origin (scheme, host, port) it multiplexes every request over
// one HTTP/2 connection, or keeps a pool of keep-alive HTTP/1.1 connections.
//
//   http::Client client({.tls = tlsConfig});
//   auto resp = client.fetch("https://127.0.0.1:6443/api", req);          // blocking
//   client.start(origin, req, {.onHeaders = ..., .onData = ..., .onComplete = ...});  // streaming
//
// Callbacks run on the client's thread; keep them short.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/base/result.h"
#include "common/http/limits.h"
#include "common/http/message.h"
#include "common/http/tls.h"

namespace trellis::http {

struct Origin {
  std::string scheme = "http";  // "http" or "https"
  std::string host;             // name or IP (no brackets)
  uint16_t port = 80;

  // Parses "https://host:port" (a path after it is ignored).
  static base::Result<Origin> parse(std::string_view url);
  std::string authority() const;
};

enum class ClientProtocol { kAuto, kHttp1, kHttp2 };

struct ClientOptions {
  std::shared_ptr<TlsClientConfig> tls;  // needed for https origins
  // kAuto: ALPN decides on TLS, HTTP/1.1 on cleartext. kHttp2 on cleartext: h2c prior knowledge.
  ClientProtocol protocol = ClientProtocol::kAuto;
  std::chrono::milliseconds connectTimeout{10'000};
  size_t maxIdlePerOrigin = 16;  // HTTP/1.1 keep-alive connections kept
  std::chrono::milliseconds idleTimeout{90'000};  // an idle connection is closed after this
  Limits limits;                 // bounds on what servers send back
};

struct ResponseHandler {
  // Status and headers, before any body.
  std::function<void(int status, const Headers& headers)> onHeaders;
  // When set, the body is delivered piece by piece here and not collected.
  std::function<void(std::string_view data)> onData;
  // Exactly once: the whole response (body empty when streamed), or why it failed.
  std::function<void(base::Result<Response> response)> onComplete;
  // Fails the request (kDeadlineExceeded) when the server sends nothing for
  // this long: before the headers, or between body pieces. 0: no limit.
  // Checked a few times a second, so it fires up to ~100 ms late.
  std::chrono::milliseconds idleTimeout{0};
};

class Client {
 public:
  explicit Client(ClientOptions options = {});
  // A client with no thread of its own that runs on the event loop of the
  // http::Server thread calling this (a proxy's upstream side: no hop
  // between threads per request). Use and destroy it only on that thread;
  // blocking fetch() would deadlock there. Null when not called on a server thread.
  static std::unique_ptr<Client> onServerThread(ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  using RequestId = uint64_t;
  // Starts a request (method, target, headers, body from `request`; authority
  // defaults to the origin's). On HTTP/1.1 the body goes with Content-Length,
  // or chunked (with `request.trailers`) when the request carries
  // "transfer-encoding: chunked". Thread-safe.
  RequestId start(const Origin& origin, Request request, ResponseHandler handler);
  // Cancels a request in flight (HTTP/2: RST_STREAM; HTTP/1.1: closes its
  // connection). onComplete then reports kAborted. Thread-safe.
  void cancel(RequestId id);
  // Sends raw bytes into the tunnel of a request that asked to switch
  // protocols (an "upgrade" header, sent with "connection: upgrade") and got
  // 101: onHeaders saw the 101, onData then gets the server's bytes, and
  // onComplete runs when the server closes (or cancel() closes). Thread-safe.
  // For a request with `streamBody` (HTTP/2 origins): appends to its body.
  void write(RequestId id, std::string data);
  // Ends a streamed request body.
  void endBody(RequestId id);

  // Blocking convenience: the whole response or an error.
  base::Result<Response> fetch(const Origin& origin, Request request,
                               std::chrono::milliseconds timeout = std::chrono::seconds(30));
  base::Result<Response> fetch(std::string_view url, Request request = {},
                               std::chrono::milliseconds timeout = std::chrono::seconds(30));

  // Connections currently open, by protocol (for tests and metrics).
  size_t openConnections() const;

  struct Impl;

 private:
  explicit Client(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace trellis::http
