#include "common/http/http1_writer.h"

#include <gtest/gtest.h>

#include "common/http/http1_parser.h"

namespace trellis::http {
namespace {

TEST(Http1Writer, ResponseHeadRoundTripsThroughParser) {
  Headers h;
  h.add("content-type", "text/plain");
  h.add("content-length", "999");  // replaced by the real framing
  std::string out;
  appendResponseHead(out, 404, h, BodyFraming::kContentLength, 5, false);
  out += "nope\n";
  EXPECT_EQ(out.rfind("HTTP/1.1 404 Not Found\r\n", 0), 0u);
  Limits l;
  Http1Parser p(Http1Parser::Kind::kResponse, l);
  size_t used;
  ASSERT_EQ(p.parse(out.data(), out.size(), used), Http1Parser::Event::kHeadersComplete) << p.errorMessage();
  EXPECT_EQ(p.message().headers.count("content-length"), 1u);
  EXPECT_FALSE(p.keepAlive());
  ASSERT_EQ(p.parse(out.data() + used, out.size() - used, used), Http1Parser::Event::kMessageComplete);
  EXPECT_EQ(p.message().body, "nope\n");
}

TEST(Http1Writer, ChunksAndTrailers) {
  std::string out;
  appendChunk(out, "hello");
  appendChunk(out, "");  // ignored: an empty chunk would end the body
  Headers t;
  t.add("x-done", "1");
  appendLastChunk(out, t);
  EXPECT_EQ(out, "5\r\nhello\r\n0\r\nx-done: 1\r\n\r\n");
}

TEST(Http1Writer, RequestHead) {
  Request r;
  r.method = "POST";
  r.target = "/a";
  r.authority = "h:1";
  r.headers.add("x", "y");
  std::string out;
  appendRequestHead(out, r, BodyFraming::kChunked, 0);
  EXPECT_EQ(out, "POST /a HTTP/1.1\r\nhost: h:1\r\ntransfer-encoding: chunked\r\nx: y\r\n\r\n");
}

}  // namespace
}  // namespace trellis::http
