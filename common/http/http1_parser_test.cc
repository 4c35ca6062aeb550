#include "common/http/http1_parser.h"

#include <gtest/gtest.h>

namespace trellis::http {
namespace {

struct Parsed {
  Http1Parser::Event last;
  int status = 0;
  std::string error;
  Request msg;
  size_t consumed = 0;
  bool keepAlive = true;
};

// Feeds `input` in pieces of `step` bytes (0: all at once) until complete or error.
Parsed parseRequest(std::string_view input, size_t step = 0, Limits limits = {}) {
  Http1Parser p(Http1Parser::Kind::kRequest, limits);
  Parsed out;
  size_t pos = 0;
  std::string pending;
  for (;;) {
    size_t take = step ? std::min(step, input.size() - pos) : input.size() - pos;
    pending.append(input.substr(pos, take));
    pos += take;
    size_t used = 0;
    Http1Parser::Event e;
    do {
      e = p.parse(pending.data(), pending.size(), used);
      pending.erase(0, used);
      out.consumed += used;
    } while (e == Http1Parser::Event::kHeadersComplete || e == Http1Parser::Event::kBodyData);
    out.last = e;
    if (e == Http1Parser::Event::kError) {
      out.status = p.errorStatus();
      out.error = p.errorMessage();
      return out;
    }
    if (e == Http1Parser::Event::kMessageComplete) {
      out.msg = p.message();
      out.keepAlive = p.keepAlive();
      return out;
    }
    if (pos == input.size()) return out;
  }
}

TEST(Http1Parser, SimpleGet) {
  auto r = parseRequest("GET /api/v1/pods?limit=5 HTTP/1.1\r\nHost: example.test\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
  ASSERT_EQ(r.last, Http1Parser::Event::kMessageComplete) << r.error;
  EXPECT_EQ(r.msg.method, "GET");
  EXPECT_EQ(r.msg.path(), "/api/v1/pods");
  EXPECT_EQ(r.msg.query(), "limit=5");
  EXPECT_EQ(r.msg.authority, "example.test");
  EXPECT_EQ(r.msg.headers.count("x-a"), 2u);
  EXPECT_TRUE(r.keepAlive);
}

TEST(Http1Parser, ByteByByteEqualsWhole) {
  std::string req = "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
  auto whole = parseRequest(req);
  auto bytes = parseRequest(req, 1);
  ASSERT_EQ(whole.last, Http1Parser::Event::kMessageComplete) << whole.error;
  ASSERT_EQ(bytes.last, Http1Parser::Event::kMessageComplete) << bytes.error;
  EXPECT_EQ(whole.msg.body, "hello world");
  EXPECT_EQ(bytes.msg.body, "hello world");
  EXPECT_EQ(bytes.msg.trailers.get("x-trailer").value_or(""), "t");
  EXPECT_EQ(whole.consumed, req.size());
  EXPECT_EQ(bytes.consumed, req.size());
}

TEST(Http1Parser, ContentLengthBody) {
  auto r = parseRequest("PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET", 2);
  ASSERT_EQ(r.last, Http1Parser::Event::kMessageComplete);
  EXPECT_EQ(r.msg.body, "abc");
}

TEST(Http1Parser, LeadingEmptyLinesIgnored) {
  auto r = parseRequest("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
  EXPECT_EQ(r.last, Http1Parser::Event::kMessageComplete) << r.error;
}

TEST(Http1Parser, Http10ClosesUnlessKeepAlive) {
  EXPECT_FALSE(parseRequest("GET / HTTP/1.0\r\n\r\n").keepAlive);
  EXPECT_TRUE(parseRequest("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keepAlive);
  EXPECT_FALSE(parseRequest("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keepAlive);
}

TEST(Http1Parser, AbsoluteFormOverridesHost) {
  auto r = parseRequest("GET http://other.test:8080/p?q HTTP/1.1\r\nHost: h\r\n\r\n");
  ASSERT_EQ(r.last, Http1Parser::Event::kMessageComplete) << r.error;
  EXPECT_EQ(r.msg.authority, "other.test:8080");
  EXPECT_EQ(r.msg.target, "/p?q");
}

struct Bad {
  const char* name;
  std::string input;
  int status;
};

class Http1ParserRejects : public ::testing::TestWithParam<Bad> {};

TEST_P(Http1ParserRejects, WithStatus) {
  const Bad& b = GetParam();
  for (size_t step : {size_t(0), size_t(1), size_t(7)}) {
    auto r = parseRequest(b.input, step);
    EXPECT_EQ(r.last, Http1Parser::Event::kError) << b.name << " step=" << step;
    EXPECT_EQ(r.status, b.status) << b.name << " step=" << step << ": " << r.error;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Smuggling, Http1ParserRejects,
    ::testing::Values(
        Bad{"DuplicateContentLength", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400},
        Bad{"ConflictingContentLength", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
        Bad{"ContentLengthList", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc", 400},
        Bad{"ContentLengthSign", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc", 400},
        Bad{"ContentLengthAndChunked", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
        Bad{"ChunkedNotLast", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400},
        Bad{"UnknownCoding", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
        Bad{"DuplicateTransferEncoding", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        Bad{"TransferEncodingInHttp10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
        Bad{"ObsFold", "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n 2\r\n\r\n", 400},
        Bad{"SpaceBeforeColon", "GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 3\r\n\r\nabc", 400},
        Bad{"BareLF", "GET / HTTP/1.1\nHost: h\n\n", 400},
        Bad{"BareLFInHeaders", "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400},
        Bad{"BareCRInValue", "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400},
        Bad{"NulInValue", std::string("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 36), 400},
        Bad{"CtlInName", "GET / HTTP/1.1\r\nHost: h\r\nX\x01Y: a\r\n\r\n", 400},
        Bad{"MissingHost", "GET / HTTP/1.1\r\n\r\n", 400},
        Bad{"DuplicateHost", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        Bad{"InvalidHost", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
        Bad{"BadChunkSize", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
        Bad{"ChunkSizeOverflow", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n", 400},
        Bad{"ChunkWithoutCRLF", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", 400},
        Bad{"ChunkSizeBareLF", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n", 400},
        Bad{"DoubleSpaceRequestLine", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        Bad{"BadMethod", "G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        Bad{"SpaceInTarget", "GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        Bad{"UnsupportedVersion", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505},
        Bad{"GarbageVersion", "GET / HTTQ/1.1\r\nHost: h\r\n\r\n", 400},
        Bad{"UnsupportedExpectation", "GET / HTTP/1.1\r\nHost: h\r\nExpect: fly\r\n\r\n", 417}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Http1ParserLimits, OversizedRequestLineIs414) {
  Limits l;
  l.maxRequestLineBytes = 64;
  auto r = parseRequest("GET /" + std::string(100, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n", 0, l);
  EXPECT_EQ(r.status, 414);
  auto partial = parseRequest("GET /" + std::string(100, 'a'), 10, l);  // no CRLF yet
  EXPECT_EQ(partial.status, 414);
}

TEST(Http1ParserLimits, OversizedHeaderSectionIs431) {
  Limits l;
  l.maxHeaderBytes = 256;
  auto r = parseRequest("GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(300, 'a') + "\r\n\r\n", 0, l);
  EXPECT_EQ(r.status, 431);
  auto streamed = parseRequest("GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(300, 'a'), 16, l);
  EXPECT_EQ(streamed.status, 431);
}

TEST(Http1ParserLimits, TooManyFieldsIs431) {
  Limits l;
  l.maxHeaderCount = 5;
  std::string req = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 6; ++i) req += "X-" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(parseRequest(req + "\r\n", 0, l).status, 431);
}

TEST(Http1ParserLimits, BodyTooLargeIs413) {
  Limits l;
  l.maxBodyBytes = 10;
  EXPECT_EQ(parseRequest("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", 0, l).status, 413);
  auto chunked = parseRequest("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n", 0, l);
  EXPECT_EQ(chunked.status, 413);
  EXPECT_EQ(parseRequest("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789", 0, l).last,
            Http1Parser::Event::kMessageComplete);
}

TEST(Http1ParserResponse, FramingRules) {
  Limits l;
  Http1Parser p(Http1Parser::Kind::kResponse, l);
  std::string in = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  size_t used;
  ASSERT_EQ(p.parse(in.data(), in.size(), used), Http1Parser::Event::kHeadersComplete);
  EXPECT_EQ(p.statusCode(), 200);
  in.erase(0, used);
  ASSERT_EQ(p.parse(in.data(), in.size(), used), Http1Parser::Event::kMessageComplete);
  EXPECT_EQ(p.message().body, "ok");

  p.reset();
  std::string nc = "HTTP/1.1 204 No Content\r\n\r\n";
  ASSERT_EQ(p.parse(nc.data(), nc.size(), used), Http1Parser::Event::kHeadersComplete);
  ASSERT_EQ(p.parse(nc.data() + used, nc.size() - used, used), Http1Parser::Event::kMessageComplete);

  p.reset();
  std::string close = "HTTP/1.1 200 OK\r\n\r\nuntil close";
  ASSERT_EQ(p.parse(close.data(), close.size(), used), Http1Parser::Event::kHeadersComplete);
  size_t used2;
  EXPECT_EQ(p.parse(close.data() + used, close.size() - used, used2), Http1Parser::Event::kNeedMore);
  EXPECT_EQ(p.finishOnEof(), Http1Parser::Event::kMessageComplete);
  EXPECT_EQ(p.message().body, "until close");
  EXPECT_FALSE(p.keepAlive());
}

TEST(Http1ParserResponse, StreamBodyDeliversPieces) {
  Limits l;
  l.maxBodyBytes = 4;  // streaming is not bound by the collected-body limit
  Http1Parser p(Http1Parser::Kind::kResponse, l);
  p.setStreamBody(true);
  std::string in = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nevent1\r\n6\r\nevent2\r\n0\r\n\r\n";
  std::string got;
  size_t off = 0, used;
  for (;;) {
    auto e = p.parse(in.data() + off, in.size() - off, used);
    off += used;
    if (e == Http1Parser::Event::kBodyData) got.append(p.bodyChunk());
    if (e == Http1Parser::Event::kMessageComplete || e == Http1Parser::Event::kError || e == Http1Parser::Event::kNeedMore) {
      ASSERT_EQ(e, Http1Parser::Event::kMessageComplete) << p.errorMessage();
      break;
    }
  }
  EXPECT_EQ(got, "event1event2");
}

}  // namespace
}  // namespace trellis::http
