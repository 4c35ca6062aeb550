// An incremental, strict HTTP/1.1 message parser (RFC 9112) for requests
// (server side) and responses (client side). Pure: no I/O, fuzzable.
//
// It refuses everything that lets two parsers disagree on where a message
// ends (request smuggling): repeated or malformed Content-Length, Content-Length
// together with Transfer-Encoding, transfer codings other than a lone
// "chunked", obsolete line folding, bare CR or LF line ends, whitespace before
// the colon, control characters in fields, oversized lines and sections.
// On error it reports the status a server should answer with; the connection
// must then be closed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/http/limits.h"
#include "common/http/message.h"

namespace trellis::http {

class Http1Parser {
 public:
  enum class Kind { kRequest, kResponse };
  enum class Event {
    kNeedMore,         // all input consumed, message not complete
    kHeadersComplete,  // head parsed (request()/statusCode() valid); call again for the body
    kBodyData,         // (streaming body mode) bodyChunk() holds the next piece of the body
    kMessageComplete,  // whole message parsed; reset() before the next one
    kError,            // errorStatus()/errorMessage() say why; stop reading
  };

  Http1Parser(Kind kind, const Limits& limits);

  // Parses from `data`; sets `consumed` to the bytes used. Call again with the
  // remaining input after each event other than kNeedMore and kError.
  Event parse(const char* data, size_t len, size_t& consumed);

  // Readies the parser for the next message on the same connection.
  void reset();

  // Client side: the response answers a HEAD request or the like (no body).
  void setNoBody(bool noBody) { noBody_ = noBody; }
  // Client side: deliver the body piece by piece (kBodyData) instead of
  // collecting it in message().body; for long-lived streams.
  void setStreamBody(bool stream) { streamBody_ = stream; }
  bool streamBodyEnabled() const { return streamBody_; }
  // Client side: the connection closed; completes a read-until-close body.
  Event finishOnEof();

  // The parsed message; for responses, method/target are empty and
  // statusCode() holds the status.
  Request& message() { return msg_; }
  int statusCode() const { return status_; }
  std::string_view bodyChunk() const { return chunk_; }

  bool keepAlive() const { return keepAlive_; }
  bool expectContinue() const { return expectContinue_; }
  bool chunked() const { return chunked_; }
  int64_t contentLength() const { return contentLength_; }  // -1 when unknown

  int errorStatus() const { return errorStatus_; }
  const std::string& errorMessage() const { return errorMessage_; }
  // True once any byte of the current message has been seen.
  bool started() const { return started_; }

 private:
  enum class State { kHead, kBody, kChunkSize, kChunkData, kChunkDataEnd, kTrailers, kUntilClose, kDone, kError };

  Event fail(int status, std::string message);
  Event parseHead(const char* data, size_t len, size_t& consumed);
  bool parseStartLine(std::string_view line);
  bool parseFieldLines(std::string_view block, Headers& into, bool trailers);
  bool finishHead();
  Event bodyEvent(const char* p, size_t n);

  Kind kind_;
  const Limits& limits_;
  State state_ = State::kHead;
  Request msg_;
  int status_ = 0;
  std::string head_;        // bytes of an incomplete head or trailer section
  size_t scanFrom_ = 0;     // where to resume looking for the end of the head
  int64_t contentLength_ = -1;
  uint64_t remaining_ = 0;  // bytes left in the body or the current chunk
  uint64_t bodyBytes_ = 0;
  std::string_view chunk_;
  bool chunked_ = false;
  bool keepAlive_ = true;
  bool expectContinue_ = false;
  bool noBody_ = false;
  bool streamBody_ = false;
  bool started_ = false;
  int errorStatus_ = 0;
  std::string errorMessage_;
};

// tchar from RFC 9110 §5.6.2.
bool isTokenChar(unsigned char c);

}  // namespace trellis::http
