// common/http against real clients: curl, nghttp, h2load, openssl s_client,
// raw sockets, and our own Client. Each test starts a server on port 0.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "common/http/client.h"
#include "common/http/server.h"
#include "common/testing/testing.h"

namespace trellis::http {
namespace {

using namespace std::chrono_literals;
using testing::run;

// Routes shared by the tests: / (fixed body), /echo, /stream?n=&ms=, /slow?ms=
// /slow requests the handler has begun and not yet answered: what a drain
// test waits for (a condition, not a sleep) before it stops the server.
std::atomic<int> slowInFlight{0};

void testHandler(Request& req, std::shared_ptr<ResponseWriter> w) {
  auto param = [&](std::string_view key, int def) {
    std::string_view q = req.query();
    size_t at = q.find(std::string(key) + "=");
    return at == std::string_view::npos ? def : std::atoi(std::string(q.substr(at + key.size() + 1)).c_str());
  };
  std::string_view path = req.path();
  if (path == "/stream") {
    int n = param("n", 5), ms = param("ms", 10);
    Headers h;
    h.add("content-type", "text/plain");
    w->begin(200, std::move(h));
    std::thread([w, n, ms] {
      for (int i = 0; i < n && !w->closed(); ++i) {
        w->write("event " + std::to_string(i) + "\n");
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      }
      Headers t;
      t.add("x-events", std::to_string(n));
      w->finish(std::move(t));
    }).detach();
    return;
  }
  if (path == "/slow") {
    int ms = param("ms", 200);
    ++slowInFlight;
    std::thread([w, ms] {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));  // the slow work itself
      Response r;
      r.body = "slow done";
      w->respond(std::move(r));
      --slowInFlight;
    }).detach();
    return;
  }
  Response r;
  if (path == "/echo") {
    r.body = req.body;
    r.headers.add("x-method", req.method);
    r.headers.add("x-version", std::string(versionName(req.version)));
    r.headers.add("x-authority", req.authority);
    r.headers.add("x-transfer-encoding", std::string(req.headers.get("transfer-encoding").value_or("")));
    r.headers.add("x-trailer", std::string(req.trailers.get("x-checksum").value_or("")));
  } else {
    r.headers.add("content-type", "text/plain");
    r.body = std::string(100, 'x');
  }
  w->respond(std::move(r));
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::makeCertificate(dir_.path(), "a", "a.test", {"a.test", "localhost"});
    testing::makeCertificate(dir_.path(), "b", "b.test", {"b.test"});
  }
  void TearDown() override {
    if (server_) server_->stop(1s);
  }

  void startServer(bool tls, Limits limits = {}, int threads = 2) {
    ServerOptions o;
    o.threads = threads;
    o.limits = limits;
    if (tls) {
      auto cfg = TlsServerConfig::fromFiles(dir_.file("a.crt"), dir_.file("a.key"));
      ASSERT_TRUE(cfg.ok()) << cfg.error().message();
      tls_ = *cfg;
      o.tls = tls_;
    }
    server_ = std::make_unique<Server>(o, testHandler);
    auto st = server_->start();
    ASSERT_TRUE(st.ok()) << st.error().message();
    port_ = server_->port();
  }

  std::string https(const std::string& path = "/") { return "https://localhost:" + std::to_string(port_) + path; }
  std::string http(const std::string& path = "/") { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  std::string cacert() { return " --cacert " + dir_.file("a.crt") + " "; }

  testing::TempDir dir_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<TlsServerConfig> tls_;
  uint16_t port_ = 0;
};

TEST_F(HttpServerTest, CurlHttp11OverTls) {
  startServer(true);
  auto r = run("curl -sS --http1.1" + cacert() + "-w '|%{http_version}|%{http_code}' " + https());
  EXPECT_EQ(r.exitCode, 0) << r.out;
  EXPECT_EQ(r.out, std::string(100, 'x') + "|1.1|200");
}

TEST_F(HttpServerTest, CurlHttp2OverTlsByAlpn) {
  startServer(true);
  auto r = run("curl -sS --http2" + cacert() + "-d 'ping' -w '|%{http_version}|%{http_code}' " + https("/echo"));
  EXPECT_EQ(r.out, "ping|2|200");
}

TEST_F(HttpServerTest, CurlH2cPriorKnowledge) {
  startServer(false);
  auto r = run("curl -sS --http2-prior-knowledge -D - -d 'h2c body' " + http("/echo"));
  EXPECT_NE(r.out.find("HTTP/2 200"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("x-version: HTTP/2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("h2c body"), std::string::npos) << r.out;
}

TEST_F(HttpServerTest, CurlChunkedUploadAndLargeBodyWithExpectContinue) {
  startServer(false);
  auto r = run("printf 'abc%.0s' $(seq 1 1000) | curl -sS -H 'Transfer-Encoding: chunked' --data-binary @- " + http("/echo"));
  EXPECT_EQ(r.out.size(), 3000u) << r.out.substr(0, 200);
  // curl sends "Expect: 100-continue" for bodies over 1 MiB.
  testing::writeFile(dir_.file("big"), std::string(2 << 20, 'b'));
  r = run("curl -sS -v --data-binary @" + dir_.file("big") + " -o " + dir_.file("big.out") + " " + http("/echo"));
  EXPECT_NE(r.out.find("Expect: 100-continue"), std::string::npos);
  EXPECT_NE(r.out.find("HTTP/1.1 100 Continue"), std::string::npos) << r.out;
  EXPECT_EQ(testing::readFile(dir_.file("big.out")).size(), size_t(2 << 20));
}

// A response that emits an event every 10 ms arrives at curl event by event.
void expectStreamedEventByEvent(const std::string& cmd) {
  std::vector<std::chrono::steady_clock::time_point> at;
  auto r = testing::runStreaming(cmd, [&](const std::string& line) {
    if (line.rfind("event ", 0) == 0) at.push_back(std::chrono::steady_clock::now());
  });
  EXPECT_EQ(r.exitCode, 0) << r.out;
  ASSERT_EQ(at.size(), 20u) << r.out;
  // 19 gaps of 10 ms: buffered delivery would bunch them into one read.
  auto spread = std::chrono::duration_cast<std::chrono::milliseconds>(at.back() - at.front());
  EXPECT_GE(spread.count(), 120) << "events arrived together, not as they were written";
  int distinct = 1;
  for (size_t i = 1; i < at.size(); ++i) distinct += (at[i] - at[i - 1]) > 2ms;
  EXPECT_GE(distinct, 10);
}

TEST_F(HttpServerTest, StreamingEventByEventHttp1) {
  startServer(true);
  expectStreamedEventByEvent("curl -sSN --http1.1" + cacert() + https("/stream?n=20&ms=10"));
}

TEST_F(HttpServerTest, StreamingEventByEventHttp2) {
  startServer(true);
  expectStreamedEventByEvent("curl -sSN --http2" + cacert() + https("/stream?n=20&ms=10"));
}

TEST_F(HttpServerTest, NghttpSeesTrailersAndStreams) {
  startServer(false);
  auto r = run("nghttp -v " + http("/stream?n=3&ms=5"));
  EXPECT_EQ(r.exitCode, 0) << r.out;
  EXPECT_NE(r.out.find("event 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("x-events: 3"), std::string::npos) << r.out;
  // trailers arrive in a HEADERS frame with END_STREAM after the DATA
  EXPECT_NE(r.out.find("flags=0x05"), std::string::npos) << r.out;
}

TEST_F(HttpServerTest, NghttpOverTlsManyParallelStreams) {
  startServer(true);
  std::string urls;
  for (int i = 0; i < 50; ++i) urls += " " + https("/?" + std::to_string(i));
  auto r = run("nghttp -n -s" + urls);
  EXPECT_EQ(r.exitCode, 0) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n') >= 50, true) << r.out;
}

TEST_F(HttpServerTest, H2loadAllSucceedOverTlsBothProtocols) {
  startServer(true);
  auto h2 = run("h2load -n 20000 -c 8 -m 32 " + https());
  EXPECT_NE(h2.out.find("20000 succeeded, 0 failed"), std::string::npos) << h2.out;
  EXPECT_NE(h2.out.find("Application protocol: h2"), std::string::npos) << h2.out;
  auto h1 = run("h2load --h1 -n 5000 -c 8 " + https());
  EXPECT_NE(h1.out.find("5000 succeeded, 0 failed"), std::string::npos) << h1.out;
  EXPECT_NE(h1.out.find("Application protocol: http/1.1"), std::string::npos) << h1.out;
}

TEST_F(HttpServerTest, MaxConcurrentStreamsAdvertisedAndHonoured) {
  Limits l;
  l.maxConcurrentStreams = 16;
  startServer(false, l);
  auto r = run("nghttp -nv " + http());
  EXPECT_NE(r.out.find("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):16"), std::string::npos) << r.out;
  auto within = run("h2load -n 2000 -c 2 -m 16 " + http());
  EXPECT_NE(within.out.find("2000 succeeded, 0 failed"), std::string::npos) << within.out;
  // h2load opens 100 streams before it sees our SETTINGS: the excess is refused
  // (RST_STREAM REFUSED_STREAM), and the connection carries on.
  auto over = run("h2load -n 2000 -c 2 -m 100 " + http());
  EXPECT_NE(over.out.find("2000 done"), std::string::npos) << over.out;
  EXPECT_EQ(over.out.find(" 0 failed"), std::string::npos) << "more than 16 streams were served at once";
}

TEST_F(HttpServerTest, LargeResponseBodiesRespectFlowControl) {
  startServer(true);
  testing::writeFile(dir_.file("4m"), std::string(4 << 20, 'z'));
  auto r = run("curl -sS --http2" + cacert() + "--data-binary @" + dir_.file("4m") + " -o " + dir_.file("4m.out") +
               " -w '%{http_code}' " + https("/echo"));
  EXPECT_EQ(r.out, "413");  // over the 3 MiB default
  testing::writeFile(dir_.file("2m"), std::string(2 << 20, 'z'));
  r = run("curl -sS --http2" + cacert() + "--data-binary @" + dir_.file("2m") + " -o " + dir_.file("2m.out") +
          " -w '%{http_code}' " + https("/echo"));
  EXPECT_EQ(r.out, "200");
  EXPECT_EQ(testing::readFile(dir_.file("2m.out")), std::string(2 << 20, 'z'));
}

struct WireCase {
  const char* name;
  std::string request;
  const char* status;
};

TEST_F(HttpServerTest, MalformedRequestsGetStatusAndClose) {
  Limits l;
  l.maxHeaderBytes = 4096;
  l.maxRequestLineBytes = 1024;
  l.maxBodyBytes = 1000;
  startServer(false, l);
  std::vector<WireCase> cases = {
      {"dup CL", "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "400"},
      {"CL+TE", "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"},
      {"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", "400"},
      {"bad char", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f" "b\r\n\r\n", "400"},
      {"long line", "GET /" + std::string(2000, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n", "414"},
      {"big header", "GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(5000, 'a') + "\r\n\r\n", "431"},
      {"big body", "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n", "413"},
      {"bad version", "GET / HTTP/3.0\r\nHost: h\r\n\r\n", "505"},
      {"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "400"},
  };
  for (const auto& c : cases) {
    bool closed = false;
    std::string out = testing::rawExchange(port_, c.request, 2s, &closed);
    EXPECT_EQ(out.rfind(std::string("HTTP/1.1 ") + c.status, 0), 0u) << c.name << ": " << out;
    EXPECT_NE(out.find("connection: close"), std::string::npos) << c.name;
    EXPECT_TRUE(closed) << c.name << ": connection left open";
  }
  // The server is still fine afterwards.
  auto r = run("curl -sS -o /dev/null -w '%{http_code}' " + http());
  EXPECT_EQ(r.out, "200");
}

TEST_F(HttpServerTest, SmuggledSecondRequestIsNeverServed) {
  startServer(false);
  // If the TE header won over CL, the bytes after "0\r\n\r\n" would be a second request.
  std::string attack = "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
  std::string out = testing::rawExchange(port_, attack, 1s);
  EXPECT_EQ(out.rfind("HTTP/1.1 400", 0), 0u) << out;
  EXPECT_EQ(out.find("HTTP/1.1 200"), std::string::npos) << out;
}

TEST_F(HttpServerTest, PipelinedRequestsAnsweredInOrder) {
  startServer(false);
  std::string reqs = "GET /slow?ms=50 HTTP/1.1\r\nHost: h\r\n\r\n"
                     "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nsecond"
                     "GET /echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
  bool closed = false;
  std::string out = testing::rawExchange(port_, reqs, 3s, &closed);
  size_t a = out.find("slow done"), b = out.find("second"), c = out.find("x-method: GET", b);
  ASSERT_NE(a, std::string::npos) << out;
  ASSERT_NE(b, std::string::npos) << out;
  EXPECT_LT(a, b);
  EXPECT_NE(c, std::string::npos) << out;
  EXPECT_TRUE(closed);
}

TEST_F(HttpServerTest, Http10KeepAliveIsAnnouncedAndHonoured) {
  startServer(false);
  bool closed = false;
  std::string out = testing::rawExchange(port_,
                                         "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                                         "GET /echo HTTP/1.0\r\n\r\n",
                                         2s, &closed);
  size_t second = out.find("HTTP/1.1 200", 1);
  ASSERT_NE(second, std::string::npos) << out;
  EXPECT_NE(out.substr(0, second).find("connection: keep-alive"), std::string::npos) << out;
  EXPECT_NE(out.substr(second).find("connection: close"), std::string::npos) << out;
  EXPECT_TRUE(closed);
  // ApacheBench speaks HTTP/1.0 with keep-alive: it must not stall.
  auto ab = run("timeout 20 ab -k -n 2000 -c 4 " + http());
  EXPECT_NE(ab.out.find("Complete requests:      2000"), std::string::npos) << ab.out;
  EXPECT_NE(ab.out.find("Keep-Alive requests:    2000"), std::string::npos) << ab.out;
}

TEST_F(HttpServerTest, HeaderTimeoutGives408AndIdleTimeoutCloses) {
  Limits l;
  l.headerTimeout = 200ms;
  l.idleTimeout = 300ms;
  startServer(false, l);
  bool closed = false;
  auto start = std::chrono::steady_clock::now();
  std::string out = testing::rawExchange(port_, "GET / HTTP/1.1\r\nHost: h\r\n", 3s, &closed);
  EXPECT_EQ(out.rfind("HTTP/1.1 408", 0), 0u) << out;
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  out = testing::rawExchange(port_, "", 3s, &closed);  // connect, say nothing
  EXPECT_EQ(out, "");
  EXPECT_TRUE(closed);
}

TEST_F(HttpServerTest, SlowlorisHitsTheHeaderTimeout) {
  Limits l;
  l.headerTimeout = 300ms;
  l.idleTimeout = 5s;
  startServer(false, l);
  // One byte every 50 ms: each read is "progress", but the headers never end in time.
  bool closed = false;
  auto start = std::chrono::steady_clock::now();
  std::string out = testing::rawTrickle(port_, "GET / HTTP/1.1\r\nX-Slow: ", 'x', 50ms, 4s, &closed);
  EXPECT_EQ(out.rfind("HTTP/1.1 408", 0), 0u) << out;
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST_F(HttpServerTest, SlowBodyHitsTheBodyTimeout) {
  Limits l;
  l.bodyTimeout = 200ms;
  startServer(false, l);
  bool closed = false;
  auto start = std::chrono::steady_clock::now();
  std::string out = testing::rawExchange(port_, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc", 3s, &closed);
  EXPECT_EQ(out.rfind("HTTP/1.1 408", 0), 0u) << out;
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST_F(HttpServerTest, Http2BadPrefaceOrFramesGetGoaway) {
  startServer(false);
  std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  // A DATA frame on stream 0 is a connection error (PROTOCOL_ERROR).
  std::string frame("\x00\x00\x01\x00\x00\x00\x00\x00\x00" "x", 10);
  bool closed = false;
  std::string out = testing::rawExchange(port_, preface + std::string("\x00\x00\x00\x04\x00\x00\x00\x00\x00", 9) + frame, 2s, &closed);
  EXPECT_TRUE(closed);
  // somewhere in the reply: a GOAWAY frame header (type 0x07)
  bool sawGoaway = false;
  for (size_t i = 0; i + 9 <= out.size();) {
    uint32_t len = (uint8_t(out[i]) << 16) | (uint8_t(out[i + 1]) << 8) | uint8_t(out[i + 2]);
    if (out[i + 3] == 0x07) sawGoaway = true;
    i += 9 + len;
  }
  EXPECT_TRUE(sawGoaway);
}

TEST_F(HttpServerTest, TlsOnly12AndUpWithModernCiphers) {
  startServer(true);
  std::string target = " -connect 127.0.0.1:" + std::to_string(port_) + " </dev/null";
  auto t11 = run("openssl s_client -tls1_1" + target);
  EXPECT_NE(t11.exitCode, 0) << t11.out;
  auto t12 = run("openssl s_client -tls1_2" + target);
  EXPECT_EQ(t12.exitCode, 0) << t12.out;
  EXPECT_NE(t12.out.find("ECDHE"), std::string::npos) << t12.out;
  auto cbc = run("openssl s_client -tls1_2 -cipher ECDHE-ECDSA-AES128-SHA" + target);
  EXPECT_NE(cbc.exitCode, 0) << "a CBC suite was accepted";
  auto alpn = run("openssl s_client -alpn h2,http/1.1" + target);
  EXPECT_NE(alpn.out.find("ALPN protocol: h2"), std::string::npos) << alpn.out;
}

TEST_F(HttpServerTest, SniPicksCertificatePerName) {
  startServer(true);
  auto b = ServerCertificate::fromFiles(dir_.file("b.crt"), dir_.file("b.key"));
  ASSERT_TRUE(b.ok());
  std::shared_ptr<ServerCertificate> bCert = *b;
  tls_->setSniResolver([bCert](std::string_view name) { return name == "b.test" ? bCert : nullptr; });
  std::string resolve = " --resolve b.test:" + std::to_string(port_) + ":127.0.0.1 --resolve a.test:" +
                        std::to_string(port_) + ":127.0.0.1 ";
  auto rb = run("curl -sS --cacert " + dir_.file("b.crt") + resolve + "-o /dev/null -w '%{http_code}' https://b.test:" +
                std::to_string(port_) + "/");
  EXPECT_EQ(rb.out, "200");
  auto ra = run("curl -sS --cacert " + dir_.file("a.crt") + resolve + "-o /dev/null -w '%{http_code}' https://a.test:" +
                std::to_string(port_) + "/");
  EXPECT_EQ(ra.out, "200");
  auto wrong = run("curl -sS --cacert " + dir_.file("a.crt") + resolve + "https://b.test:" + std::to_string(port_) + "/");
  EXPECT_NE(wrong.exitCode, 0) << "b.test was served a.test's certificate";
}

TEST_F(HttpServerTest, CertificateReloadWithoutRestart) {
  startServer(true);
  auto before = run("curl -sS" + cacert() + "-o /dev/null -w '%{http_code}' " + https());
  EXPECT_EQ(before.out, "200");
  // Replace the files with b's certificate (which also names localhost) and reload.
  testing::makeCertificate(dir_.path(), "a", "a2.test", {"localhost"});
  ASSERT_TRUE(tls_->reload().ok());
  auto s = run("openssl s_client -connect 127.0.0.1:" + std::to_string(port_) + " </dev/null");
  EXPECT_NE(s.out.find("CN = a2.test"), std::string::npos) << s.out;
  // A broken file keeps the old certificate.
  testing::writeFile(dir_.file("a.key"), "not a key");
  EXPECT_FALSE(tls_->reload().ok());
  auto after = run("curl -sS" + cacert() + "-o /dev/null -w '%{http_code}' " + https());
  EXPECT_EQ(after.out, "200");
}

TEST_F(HttpServerTest, GracefulDrainFinishesInFlightAndRefusesNew) {
  startServer(true);
  std::atomic<bool> h1done{false}, h2done{false};
  std::string h1out, h2out;
  std::thread t1([&] {
    h1out = run("curl -sS --http1.1" + cacert() + https("/slow?ms=400")).out;
    h1done = true;
  });
  std::thread t2([&] {
    h2out = run("curl -sS --http2" + cacert() + https("/slow?ms=400")).out;
    h2done = true;
  });
  // Both requests are in the handler (not merely connected) when the drain begins.
  ASSERT_TRUE(testing::waitFor([&] { return slowInFlight.load() >= 2; }, 30s));
  auto start = std::chrono::steady_clock::now();
  server_->stop(3s);
  t1.join();
  t2.join();
  EXPECT_EQ(h1out, "slow done");
  EXPECT_EQ(h2out, "slow done");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s) << "drain waited for its deadline instead of the requests";
  auto refused = run("curl -sS" + cacert() + https());
  EXPECT_NE(refused.exitCode, 0);
  server_.reset();
}

TEST_F(HttpServerTest, Http2DrainSendsGoaway) {
  startServer(false);
  std::string out;
  std::thread t([&] { out = run("nghttp -v " + http("/slow?ms=300")).out; });
  ASSERT_TRUE(testing::waitFor([&] { return slowInFlight.load() >= 1; }, 30s));
  server_->stop(3s);
  t.join();
  EXPECT_NE(out.find("recv GOAWAY frame"), std::string::npos) << out;
  EXPECT_NE(out.find("slow done"), std::string::npos) << out;
  server_.reset();
}

// ---- our own client against our server ----

TEST_F(HttpServerTest, ClientSpeaksAllFourWays) {
  startServer(true);
  auto tlsClient = TlsClientConfig::create({.caFile = dir_.file("a.crt")});
  ASSERT_TRUE(tlsClient.ok()) << tlsClient.error().message();
  for (ClientProtocol proto : {ClientProtocol::kAuto, ClientProtocol::kHttp1}) {
    TlsClientOptions o{.caFile = dir_.file("a.crt")};
    if (proto == ClientProtocol::kHttp1) o.alpn = {"http/1.1"};
    Client c({.tls = *TlsClientConfig::create(o), .protocol = proto});
    Request req;
    req.method = "POST";
    req.body = "body";
    auto r = c.fetch(https("/echo"), req);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->body, "body");
    EXPECT_EQ(r->headers.get("x-version").value_or(""), proto == ClientProtocol::kAuto ? "HTTP/2" : "HTTP/1.1");
  }
  server_->stop(1s);
  startServer(false);
  for (ClientProtocol proto : {ClientProtocol::kHttp2, ClientProtocol::kHttp1}) {
    Client c({.protocol = proto});
    auto r = c.fetch(http("/echo"));
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->headers.get("x-version").value_or(""), proto == ClientProtocol::kHttp2 ? "HTTP/2" : "HTTP/1.1");
  }
}

TEST_F(HttpServerTest, ClientMultiplexesOnOneHttp2Connection) {
  startServer(false);
  Client c({.protocol = ClientProtocol::kHttp2});
  std::atomic<int> ok{0};
  std::atomic<int> done{0};
  for (int i = 0; i < 200; ++i) {
    c.start(*Origin::parse(http()), Request{.method = "GET", .target = "/slow?ms=100"},
            {.onComplete = [&](base::Result<Response> r) {
               if (r.ok() && r->body == "slow done") ok++;
               done++;
             }});
  }
  ASSERT_TRUE(testing::waitFor([&] { return done == 200; }, 30s));
  EXPECT_EQ(ok, 200);
  EXPECT_EQ(c.openConnections(), 1u);
}

TEST_F(HttpServerTest, ClientQueuesBeyondThePeersStreamLimit) {
  Limits l;
  l.maxConcurrentStreams = 8;  // far fewer than the requests in flight
  startServer(true, l);
  Client c({.tls = *TlsClientConfig::create({.caFile = dir_.file("a.crt")})});
  std::atomic<int> ok{0}, done{0};
  for (int i = 0; i < 300; ++i) {
    c.start(*Origin::parse(https()), Request{.method = "GET", .target = "/"},
            {.onComplete = [&](base::Result<Response> r) {
               if (r.ok() && r->status == 200) ok++;
               done++;
             }});
  }
  ASSERT_TRUE(testing::waitFor([&] { return done == 300; }, 30s)) << "completed " << done << " of 300";
  EXPECT_EQ(ok, 300);
  EXPECT_EQ(c.openConnections(), 1u);
}

TEST_F(HttpServerTest, ClientStreamsAndCancels) {
  startServer(true);
  Client c({.tls = *TlsClientConfig::create({.caFile = dir_.file("a.crt")})});
  std::atomic<int> events{0};
  std::promise<base::Result<Response>> done;
  Headers trailersSeen;
  c.start(*Origin::parse(https()), Request{.method = "GET", .target = "/stream?n=5&ms=5"},
          {.onData = [&](std::string_view d) { events += static_cast<int>(std::count(d.begin(), d.end(), '\n')); },
           .onComplete = [&](base::Result<Response> r) { done.set_value(std::move(r)); }});
  auto r = done.get_future().get();
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(events, 5);
  EXPECT_EQ(r->trailers.get("x-events").value_or(""), "5");
  // A cancelled long stream completes with Aborted.
  std::promise<base::Result<Response>> cancelled;
  auto received = std::make_shared<std::atomic<int>>(0);  // the client may outlive this scope's locals
  auto id = c.start(*Origin::parse(https()), Request{.method = "GET", .target = "/stream?n=1000&ms=10"},
                    {.onData = [received](std::string_view d) { *received += static_cast<int>(d.size()); },
                     .onComplete = [&](base::Result<Response> r) { cancelled.set_value(std::move(r)); }});
  ASSERT_TRUE(testing::waitFor([&] { return received->load() > 0; }, 30s)) << "the stream never started";
  c.cancel(id);
  auto cr = cancelled.get_future().get();
  ASSERT_FALSE(cr.ok());
  EXPECT_EQ(cr.error().code(), base::ErrorCode::kAborted);
}

TEST_F(HttpServerTest, ClientRejectsUntrustedCertificate) {
  startServer(true);
  Client c({.tls = *TlsClientConfig::create({.caFile = dir_.file("b.crt")})});
  auto r = c.fetch(https());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("certificate"), std::string::npos) << r.error().message();
}

TEST_F(HttpServerTest, ClientErrorsOnRefusedConnection) {
  startServer(false);
  uint16_t port = port_;
  server_->stop(0ms);
  server_.reset();
  Client c;
  auto r = c.fetch("http://127.0.0.1:" + std::to_string(port) + "/");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), base::ErrorCode::kUnavailable);
}

TEST_F(HttpServerTest, ClientSendsChunkedBodyWithTrailers) {
  startServer(false);
  Client c({.protocol = ClientProtocol::kHttp1});
  Request req;
  req.method = "POST";
  req.target = "/echo";
  req.headers.add("transfer-encoding", "chunked");
  req.body = std::string(100000, 'c');
  req.trailers.add("x-checksum", "abc");
  auto r = c.fetch(*Origin::parse(http()), req);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, req.body);
  EXPECT_EQ(r->headers.get("x-transfer-encoding").value_or(""), "chunked");
  EXPECT_EQ(r->headers.get("x-trailer").value_or(""), "abc");
}

TEST_F(HttpServerTest, ClientKeepAliveReusesHttp1Connections) {
  startServer(false);
  Client c({.protocol = ClientProtocol::kHttp1});
  for (int i = 0; i < 20; ++i) {
    auto r = c.fetch(http("/"));
    ASSERT_TRUE(r.ok()) << r.error().message();
  }
  EXPECT_EQ(c.openConnections(), 1u);
}

}  // namespace
}  // namespace trellis::http
