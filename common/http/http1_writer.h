// HTTP/1.1 serialization: response and request heads, chunk framing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/http/message.h"

namespace trellis::http {

enum class BodyFraming { kNone, kContentLength, kChunked };

// Appends "HTTP/1.1 <status> <reason>\r\n", Date, framing and Connection
// fields, the given headers and the blank line. Framing fields in `headers`
// (Content-Length, Transfer-Encoding, Connection) are replaced.
// An HTTP/1.0 peer keeps the connection only when told "connection: keep-alive":
// pass `http10` for those.
void appendResponseHead(std::string& out, int status, const Headers& headers, BodyFraming framing,
                        uint64_t contentLength, bool keepAlive, bool http10 = false);

// Appends a request head; Host comes from `authority`.
void appendRequestHead(std::string& out, const Request& request, BodyFraming framing, uint64_t contentLength);

void appendChunk(std::string& out, std::string_view data);
void appendDecimal(std::string& out, uint64_t value);
void appendLastChunk(std::string& out, const Headers& trailers);

// "Sun, 06 Nov 1994 08:49:37 GMT" for now, cached per thread per second.
std::string_view httpDate();

}  // namespace trellis::http
