#include "common/http/http1_parser.h"

#include <algorithm>
#include <cstring>

namespace trellis::http {
namespace {

constexpr size_t kMaxChunkLine = 1024;

bool isFieldValueChar(unsigned char c) { return c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f); }
bool isTargetChar(unsigned char c) { return c >= 0x21 && c != 0x7f; }

std::string_view trimOws(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

bool isAuthorityChar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::strchr("-._~%!$&'()*+,;=:[]", c) != nullptr;
}

bool validAuthority(std::string_view a) {
  return std::all_of(a.begin(), a.end(), [](char c) { return c != 0 && isAuthorityChar(static_cast<unsigned char>(c)); });
}

// Does the comma-separated token list contain `token` (case-insensitive)?
bool hasToken(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view item = trimOws(list.substr(0, comma));
    if (equalsIgnoreCase(item, token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

bool isTokenChar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c != 0 && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr);
}

Http1Parser::Http1Parser(Kind kind, const Limits& limits) : kind_(kind), limits_(limits) {}

void Http1Parser::reset() {
  state_ = State::kHead;
  msg_ = Request();
  status_ = 0;
  head_.clear();
  scanFrom_ = 0;
  contentLength_ = -1;
  remaining_ = 0;
  bodyBytes_ = 0;
  chunk_ = {};
  chunked_ = false;
  keepAlive_ = true;
  expectContinue_ = false;
  noBody_ = false;
  started_ = false;
  errorStatus_ = 0;
  errorMessage_.clear();
}

Http1Parser::Event Http1Parser::fail(int status, std::string message) {
  state_ = State::kError;
  errorStatus_ = status;
  errorMessage_ = std::move(message);
  return Event::kError;
}

Http1Parser::Event Http1Parser::parse(const char* data, size_t len, size_t& consumed) {
  consumed = 0;
  for (;;) {
    const char* p = data + consumed;
    size_t n = len - consumed;
    switch (state_) {
      case State::kError:
        return Event::kError;
      case State::kDone:
        return Event::kMessageComplete;
      case State::kHead: {
        size_t used = 0;
        Event e = parseHead(p, n, used);
        consumed += used;
        return e;
      }
      case State::kBody:
      case State::kUntilClose: {
        if (n == 0) return Event::kNeedMore;
        size_t take = state_ == State::kBody ? static_cast<size_t>(std::min<uint64_t>(remaining_, n)) : n;
        if (state_ == State::kUntilClose && !streamBody_ && bodyBytes_ + take > limits_.maxBodyBytes) {
          return fail(413, "body larger than the limit");
        }
        consumed += take;
        bodyBytes_ += take;
        if (state_ == State::kBody) remaining_ -= take;
        bool done = state_ == State::kBody && remaining_ == 0;
        if (done) state_ = State::kDone;
        if (streamBody_) {
          chunk_ = std::string_view(p, take);
          return Event::kBodyData;
        }
        msg_.body.append(p, take);
        if (done) return Event::kMessageComplete;
        return Event::kNeedMore;
      }
      case State::kChunkSize: {
        if (n == 0) return Event::kNeedMore;
        const char* lf = static_cast<const char*>(std::memchr(p, '\n', n));
        size_t take = lf ? static_cast<size_t>(lf - p) + 1 : n;
        if (head_.size() + take > kMaxChunkLine) return fail(400, "chunk size line too long");
        head_.append(p, take);
        consumed += take;
        if (!lf) return Event::kNeedMore;
        std::string_view line(head_);
        if (line.size() < 2 || line[line.size() - 2] != '\r') return fail(400, "chunk size line not ended by CRLF");
        line.remove_suffix(2);
        size_t i = 0;
        uint64_t size = 0;
        while (i < line.size() && std::isxdigit(static_cast<unsigned char>(line[i]))) {
          if (i >= 16) return fail(400, "chunk size too large");
          char c = line[i];
          size = size * 16 + static_cast<uint64_t>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
          ++i;
        }
        if (i == 0) return fail(400, "invalid chunk size");
        std::string_view ext = trimOws(line.substr(i));
        if (!ext.empty()) {
          if (ext.front() != ';') return fail(400, "invalid chunk extension");
          for (unsigned char c : ext) {
            if (!isFieldValueChar(c)) return fail(400, "invalid character in chunk extension");
          }
        }
        head_.clear();
        if (size == 0) {
          state_ = State::kTrailers;
          scanFrom_ = 0;
          continue;
        }
        if (!streamBody_ && bodyBytes_ + size > limits_.maxBodyBytes) return fail(413, "body larger than the limit");
        remaining_ = size;
        state_ = State::kChunkData;
        continue;
      }
      case State::kChunkData: {
        if (n == 0) return Event::kNeedMore;
        size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, n));
        consumed += take;
        remaining_ -= take;
        bodyBytes_ += take;
        if (remaining_ == 0) state_ = State::kChunkDataEnd;
        if (streamBody_) {
          chunk_ = std::string_view(p, take);
          return Event::kBodyData;
        }
        msg_.body.append(p, take);
        continue;
      }
      case State::kChunkDataEnd: {
        while (head_.size() < 2 && consumed < len) head_.push_back(data[consumed++]);
        if (head_.size() < 2) return Event::kNeedMore;
        if (head_ != "\r\n") return fail(400, "chunk data not followed by CRLF");
        head_.clear();
        state_ = State::kChunkSize;
        continue;
      }
      case State::kTrailers: {
        if (n == 0) return Event::kNeedMore;
        if (head_.empty() && n >= 2 && p[0] == '\r' && p[1] == '\n') {
          consumed += 2;
          state_ = State::kDone;
          return Event::kMessageComplete;
        }
        size_t before = head_.size();
        size_t take = std::min(n, limits_.maxHeaderBytes + 4 - std::min(before, limits_.maxHeaderBytes));
        head_.append(p, take);
        if (head_ == "\r") {
          consumed += take;
          return Event::kNeedMore;
        }
        if (head_.size() >= 2 && head_.compare(0, 2, "\r\n") == 0) {
          consumed += 2 - before;
          head_.clear();
          state_ = State::kDone;
          return Event::kMessageComplete;
        }
        size_t end = head_.find("\r\n\r\n", scanFrom_);
        if (end == std::string::npos) {
          if (head_.size() > limits_.maxHeaderBytes) return fail(431, "trailer section too large");
          consumed += take;
          scanFrom_ = head_.size() >= 3 ? head_.size() - 3 : 0;
          return Event::kNeedMore;
        }
        consumed += end + 4 - before;
        std::string block = head_.substr(0, end + 2);
        head_.clear();
        if (!parseFieldLines(block, msg_.trailers, true)) return Event::kError;
        state_ = State::kDone;
        return Event::kMessageComplete;
      }
    }
  }
}

Http1Parser::Event Http1Parser::parseHead(const char* p, size_t n, size_t& consumed) {
  consumed = 0;
  // RFC 9112 §2.2: ignore empty lines before the request line.
  if (!started_ && head_.empty()) {
    while (n - consumed >= 2 && p[consumed] == '\r' && p[consumed + 1] == '\n') consumed += 2;
    if (consumed == n || (n - consumed == 1 && p[consumed] == '\r')) {
      if (consumed < n) return fail(400, "bare CR");  // a lone trailing CR is too rare to carry over
      return Event::kNeedMore;
    }
  }
  if (consumed < n) started_ = true;
  p += consumed;
  n -= consumed;
  size_t before = head_.size();
  size_t cap = limits_.maxHeaderBytes + 4;
  size_t take = std::min(n, cap > before ? cap - before : 0);
  head_.append(p, take);
  size_t end = head_.find("\r\n\r\n", scanFrom_);
  // Reject a bare LF in the head as soon as it arrives (bytes past the head are body).
  size_t headEnd = end == std::string::npos ? head_.size() : end + 4;
  for (size_t i = before; i < headEnd; ++i) {
    if (head_[i] == '\n' && (i == 0 || head_[i - 1] != '\r')) return fail(400, "bare LF in message head");
  }
  if (end == std::string::npos) {
    // Fail fast on a start line that cannot be HTTP (a TLS ClientHello on a
    // cleartext port, binary noise) instead of waiting for a line end.
    for (char c : head_) {
      if (c == ' ' || c == '\r') break;
      if (kind_ == Kind::kRequest && !isTokenChar(static_cast<unsigned char>(c))) return fail(400, "malformed method");
    }
    size_t firstLine = head_.find("\r\n");
    size_t lineLimit = kind_ == Kind::kRequest ? limits_.maxRequestLineBytes : limits_.maxHeaderBytes;
    if (firstLine == std::string::npos && head_.size() > lineLimit) {
      return fail(kind_ == Kind::kRequest ? 414 : 400, "request line too long");
    }
    if (firstLine != std::string::npos && firstLine > lineLimit) {
      return fail(kind_ == Kind::kRequest ? 414 : 400, "request line too long");
    }
    if (head_.size() > limits_.maxHeaderBytes) return fail(431, "header section too large");
    consumed += take;
    scanFrom_ = head_.size() >= 3 ? head_.size() - 3 : 0;
    return Event::kNeedMore;
  }
  if (end + 4 > limits_.maxHeaderBytes + 4) return fail(431, "header section too large");
  consumed += end + 4 - before;
  std::string_view block(head_.data(), end + 2);
  size_t lineEnd = block.find("\r\n");
  std::string_view start = block.substr(0, lineEnd);
  if (kind_ == Kind::kRequest && start.size() > limits_.maxRequestLineBytes) return fail(414, "request line too long");
  if (!parseStartLine(start)) return Event::kError;
  msg_.headers.reserve(16);
  if (!parseFieldLines(block.substr(lineEnd + 2), msg_.headers, false)) return Event::kError;
  head_.clear();
  scanFrom_ = 0;
  if (!finishHead()) return Event::kError;
  return Event::kHeadersComplete;
}

bool Http1Parser::parseStartLine(std::string_view line) {
  auto badVersion = [&](std::string_view v) -> bool {
    if (v == "HTTP/1.1") {
      msg_.version = Version::kHttp11;
      return true;
    }
    if (v == "HTTP/1.0") {
      msg_.version = Version::kHttp10;
      keepAlive_ = false;
      return true;
    }
    if (v.size() == 8 && v.substr(0, 5) == "HTTP/" && std::isdigit(static_cast<unsigned char>(v[5])) && v[6] == '.' &&
        std::isdigit(static_cast<unsigned char>(v[7]))) {
      fail(505, "HTTP version not supported");
      return false;
    }
    fail(400, "malformed HTTP version");
    return false;
  };
  if (kind_ == Kind::kResponse) {
    size_t sp = line.find(' ');
    if (sp == std::string_view::npos) return fail(400, "malformed status line"), false;
    if (!badVersion(line.substr(0, sp))) return false;
    std::string_view rest = line.substr(sp + 1);
    if (rest.size() < 3 || !std::isdigit(static_cast<unsigned char>(rest[0])) ||
        !std::isdigit(static_cast<unsigned char>(rest[1])) || !std::isdigit(static_cast<unsigned char>(rest[2])) ||
        (rest.size() > 3 && rest[3] != ' ')) {
      return fail(400, "malformed status code"), false;
    }
    status_ = (rest[0] - '0') * 100 + (rest[1] - '0') * 10 + (rest[2] - '0');
    if (status_ < 100) return fail(400, "malformed status code"), false;
    return true;
  }
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == std::string_view::npos || sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return fail(400, "malformed request line"), false;
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (method.empty() || !std::all_of(method.begin(), method.end(), [](char c) { return isTokenChar(static_cast<unsigned char>(c)); })) {
    return fail(400, "malformed method"), false;
  }
  if (target.empty() || !std::all_of(target.begin(), target.end(), [](char c) { return isTargetChar(static_cast<unsigned char>(c)); })) {
    return fail(400, "malformed request target"), false;
  }
  if (!badVersion(version)) return false;
  msg_.method.assign(method);
  if (target.front() == '/') {
    msg_.target.assign(target);
  } else if (target == "*" && method == "OPTIONS") {
    msg_.target.assign(target);
  } else if (target.substr(0, 7) == "http://" || target.substr(0, 8) == "https://") {
    // absolute-form: the authority in the target overrides Host (RFC 9112 §3.2.2).
    size_t schemeEnd = target.find("://");
    std::string_view rest = target.substr(schemeEnd + 3);
    size_t slash = rest.find_first_of("/?");
    std::string_view authority = rest.substr(0, slash);
    if (authority.empty() || !validAuthority(authority) || authority.find('@') != std::string_view::npos) {
      return fail(400, "malformed request target"), false;
    }
    msg_.authority.assign(authority);
    std::string path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
    if (path.front() == '?') path.insert(0, "/");
    msg_.target = std::move(path);
  } else {
    return fail(400, "unsupported request target form"), false;
  }
  return true;
}

bool Http1Parser::parseFieldLines(std::string_view block, Headers& into, bool trailers) {
  while (!block.empty()) {
    size_t eol = block.find("\r\n");
    std::string_view line = block.substr(0, eol);
    block.remove_prefix(eol + 2);
    if (line.empty()) return fail(400, "unexpected empty line"), false;
    if (line.front() == ' ' || line.front() == '\t') return fail(400, "obsolete line folding"), false;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return fail(400, "malformed header field"), false;
    std::string_view name = line.substr(0, colon);
    for (char c : name) {
      if (!isTokenChar(static_cast<unsigned char>(c))) {
        return fail(400, c == ' ' || c == '\t' ? "whitespace before colon in header field" : "invalid character in header name"), false;
      }
    }
    std::string_view value = trimOws(line.substr(colon + 1));
    for (char c : value) {
      if (!isFieldValueChar(static_cast<unsigned char>(c))) return fail(400, "invalid character in header value"), false;
    }
    if (msg_.headers.size() + msg_.trailers.size() >= limits_.maxHeaderCount) {
      return fail(431, trailers ? "too many trailer fields" : "too many header fields"), false;
    }
    std::string lname(name);
    toLower(lname);
    if (trailers && (lname == "content-length" || lname == "transfer-encoding" || lname == "host")) {
      continue;  // framing and routing fields are not allowed in trailers; drop them
    }
    into.add(std::move(lname), std::string(value));
  }
  return true;
}

bool Http1Parser::finishHead() {
  const Headers& h = msg_.headers;
  size_t clCount = 0, teCount = 0, hostCount = 0;
  std::string_view cl, te, host, connection, expect;
  for (const auto& [name, value] : h) {
    if (name == "content-length") {
      ++clCount;
      cl = value;
    } else if (name == "transfer-encoding") {
      ++teCount;
      te = value;
    } else if (name == "host") {
      ++hostCount;
      host = value;
    } else if (name == "connection") {
      if (hasToken(value, "close")) keepAlive_ = false;
      else if (hasToken(value, "keep-alive") && msg_.version == Version::kHttp10) keepAlive_ = true;
    } else if (name == "expect") {
      expect = value;
    }
  }
  if (clCount > 1) return fail(400, "duplicate Content-Length"), false;
  if (teCount > 1) return fail(400, "duplicate Transfer-Encoding"), false;
  if (clCount && teCount) return fail(400, "both Content-Length and Transfer-Encoding"), false;
  if (clCount) {
    if (cl.empty() || cl.size() > 18 || !std::all_of(cl.begin(), cl.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return fail(400, "invalid Content-Length"), false;
    }
    contentLength_ = 0;
    for (char c : cl) contentLength_ = contentLength_ * 10 + (c - '0');
  }
  if (teCount) {
    if (kind_ == Kind::kRequest && msg_.version == Version::kHttp10) {
      return fail(400, "Transfer-Encoding in an HTTP/1.0 request"), false;
    }
    if (!equalsIgnoreCase(te, "chunked")) {
      // chunked must be the final coding (else the length is unknowable: 400);
      // other codings before it are valid HTTP we do not implement (501).
      std::string_view last = te.substr(te.rfind(',') == std::string_view::npos ? 0 : te.rfind(',') + 1);
      return fail(equalsIgnoreCase(trimOws(last), "chunked") ? 501 : 400, "unsupported Transfer-Encoding"), false;
    }
    chunked_ = true;
  }
  if (kind_ == Kind::kRequest) {
    if (hostCount > 1) return fail(400, "duplicate Host"), false;
    if (hostCount == 0 && msg_.version == Version::kHttp11) return fail(400, "missing Host"), false;
    if (hostCount && !validAuthority(host)) return fail(400, "invalid Host"), false;
    if (msg_.authority.empty()) msg_.authority.assign(host);
    if (!expect.empty()) {
      if (!equalsIgnoreCase(expect, "100-continue")) return fail(417, "unsupported expectation"), false;
      expectContinue_ = msg_.version == Version::kHttp11;
    }
    if (chunked_) {
      state_ = State::kChunkSize;
    } else if (contentLength_ > 0) {
      if (static_cast<uint64_t>(contentLength_) > limits_.maxBodyBytes) return fail(413, "body larger than the limit"), false;
      remaining_ = static_cast<uint64_t>(contentLength_);
      if (!streamBody_) msg_.body.reserve(remaining_);
      state_ = State::kBody;
    } else {
      state_ = State::kDone;
    }
    return true;
  }
  // Response framing, RFC 9112 §6.3.
  if (noBody_ || (status_ >= 100 && status_ < 200) || status_ == 204 || status_ == 304) {
    state_ = State::kDone;
  } else if (chunked_) {
    state_ = State::kChunkSize;
  } else if (contentLength_ >= 0) {
    if (!streamBody_ && static_cast<uint64_t>(contentLength_) > limits_.maxBodyBytes) {
      return fail(413, "body larger than the limit"), false;
    }
    remaining_ = static_cast<uint64_t>(contentLength_);
    state_ = remaining_ ? State::kBody : State::kDone;
  } else {
    keepAlive_ = false;
    state_ = State::kUntilClose;
  }
  return true;
}

Http1Parser::Event Http1Parser::finishOnEof() {
  if (state_ == State::kUntilClose) {
    state_ = State::kDone;
    return Event::kMessageComplete;
  }
  if (state_ == State::kDone) return Event::kMessageComplete;
  return fail(502, "connection closed before the message was complete");
}

}  // namespace trellis::http
