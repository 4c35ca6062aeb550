// The router-neutral handler interface: a request in, a response or a stream
// out. apiserver-lite and the ingress plug their own routing in here; the same
// handler serves HTTP/1.1 and HTTP/2 (a stream is chunked on HTTP/1.1 and DATA
// frames on HTTP/2).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "common/http/message.h"

namespace trellis::http {

// One response in progress. Every method may be called from any thread: calls
// from elsewhere than the connection's own thread are posted to it, in order.
// A writer that outlives its connection drops what it is given.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;

  // A whole response at once (Content-Length set from the body).
  virtual void respond(Response response) = 0;

  // A streamed response: begin() once, write() any number of times (each
  // write is sent to the peer at once, not held back), then finish(), with
  // trailers if wanted (HTTP/2 trailers; chunked trailers on HTTP/1.1).
  virtual void begin(int status, Headers headers) = 0;
  virtual void write(std::string data) = 0;
  virtual void finish(Headers trailers = {}) = 0;
  // Answers an HTTP/1.1 Upgrade request (WebSocket and the like) with 101
  // Switching Protocols and `headers` (Upgrade and the protocol's own), and
  // turns the connection into a tunnel of raw bytes: `onData` gets what the
  // client sends from then on, write() sends bytes to it as they are,
  // finish() closes the tunnel, and `onClose` runs once when the client goes
  // away. False (nothing sent) when the request is not an HTTP/1.1 one.
  virtual bool upgrade(Headers headers, std::function<void(std::string_view data)> onData) { return false; }

  // For a request whose body streams (ServerOptions::streamRequestBody):
  // `onData` gets each piece as it arrives (what came before the call first),
  // with `end` true once, on the last call. Never called for other requests.
  virtual void onRequestBody(std::function<void(std::string_view data, bool end)> onData) {}

  // Ends the response as failed, so the peer cannot take it for complete: the
  // HTTP/1.1 connection is closed, the HTTP/2 stream reset (INTERNAL_ERROR).
  virtual void abort() = 0;

  // True once the peer is gone, the stream was reset, or the server stopped.
  virtual bool closed() const = 0;
  // Runs `callback` once on the connection's thread if the peer goes away
  // before finish() (a watch uses it to unregister itself).
  virtual void onClose(std::function<void()> callback) = 0;
  // Bytes given to write() that are not yet on the wire: a slow reader's backlog.
  virtual size_t pendingBytes() const = 0;
};

using Handler = std::function<void(Request& request, std::shared_ptr<ResponseWriter> writer)>;

}  // namespace trellis::http
