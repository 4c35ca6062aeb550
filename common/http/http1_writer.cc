#include "common/http/http1_writer.h"

#include <time.h>

#include <fmt/format.h>

namespace trellis::http {
void appendDecimal(std::string& out, uint64_t v);

namespace {

bool isFramingField(std::string_view name) {
  return name == "content-length" || name == "transfer-encoding" || name == "connection" || name == "date";
}

void appendFields(std::string& out, const Headers& headers) {
  for (const auto& [name, value] : headers) {
    if (isFramingField(name)) continue;
    out.append(name);
    out.append(": ");
    out.append(value);
    out.append("\r\n");
  }
}

void appendFraming(std::string& out, BodyFraming framing, uint64_t contentLength) {
  if (framing == BodyFraming::kContentLength) {
    out.append("content-length: ");
    appendDecimal(out, contentLength);
    out.append("\r\n");
  } else if (framing == BodyFraming::kChunked) {
    out.append("transfer-encoding: chunked\r\n");
  }
}

}  // namespace

std::string_view httpDate() {
  thread_local time_t cachedAt = 0;
  thread_local char buf[32];
  time_t now = time(nullptr);
  if (now != cachedAt) {
    tm t;
    gmtime_r(&now, &t);
    strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &t);
    cachedAt = now;
  }
  return buf;
}

void appendDecimal(std::string& out, uint64_t v) {
  char buf[20];
  char* p = buf + sizeof buf;
  do {
    *--p = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  out.append(p, static_cast<size_t>(buf + sizeof buf - p));
}

void appendResponseHead(std::string& out, int status, const Headers& headers, BodyFraming framing,
                        uint64_t contentLength, bool keepAlive, bool http10) {
  out.append("HTTP/1.1 ");
  appendDecimal(out, static_cast<uint64_t>(status));
  out.push_back(' ');
  out.append(reasonPhrase(status));
  out.append("\r\ndate: ");
  out.append(httpDate());
  out.append("\r\n");
  appendFraming(out, framing, contentLength);
  if (!keepAlive) {
    out.append("connection: close\r\n");
  } else if (http10) {
    out.append("connection: keep-alive\r\n");
  }
  appendFields(out, headers);
  out.append("\r\n");
}

void appendRequestHead(std::string& out, const Request& request, BodyFraming framing, uint64_t contentLength) {
  out.append(request.method);
  out.push_back(' ');
  out.append(request.target.empty() ? "/" : request.target);
  out.append(" HTTP/1.1\r\nhost: ");
  out.append(request.authority);
  out.append("\r\n");
  appendFraming(out, framing, contentLength);
  if (request.headers.has("upgrade")) out.append("connection: upgrade\r\n");
  for (const auto& [name, value] : request.headers) {
    if (isFramingField(name) || name == "host") continue;
    out.append(name);
    out.append(": ");
    out.append(value);
    out.append("\r\n");
  }
  out.append("\r\n");
}

void appendChunk(std::string& out, std::string_view data) {
  if (data.empty()) return;  // a zero-size chunk would end the body
  fmt::format_to(std::back_inserter(out), "{:x}\r\n", data.size());
  out.append(data);
  out.append("\r\n");
}

void appendLastChunk(std::string& out, const Headers& trailers) {
  out.append("0\r\n");
  appendFields(out, trailers);
  out.append("\r\n");
}

}  // namespace trellis::http
