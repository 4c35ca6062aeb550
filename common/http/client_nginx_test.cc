// Our client against a real peer: nginx (Debian's), over TLS with h2 and
// HTTP/1.1, chunked responses and keep-alive.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <future>
#include <thread>

#include "common/http/client.h"
#include "common/testing/testing.h"

namespace trellis::http {
namespace {

using namespace std::chrono_literals;

class ClientAgainstNginx : public ::testing::Test {
 protected:
  void SetUp() override {
    if (testing::run("command -v nginx").exitCode != 0) GTEST_FAIL() << "nginx is not installed (scripts/setup.sh)";
    testing::makeCertificate(dir_.path(), "srv", "nginx.test", {"localhost"});
    // A free port: bind 0, read it, release it.
    port_ = testing::freeTcpPort();
    std::string conf = R"(worker_processes 1;
daemon off;
pid @D@/nginx.pid;
error_log @D@/error.log info;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path @D@/body; proxy_temp_path @D@/proxy; fastcgi_temp_path @D@/fcgi;
  uwsgi_temp_path @D@/uwsgi; scgi_temp_path @D@/scgi;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_certificate @D@/srv.crt; ssl_certificate_key @D@/srv.key;
  server {
    listen 127.0.0.1:@P@ ssl http2;
    location = /fixed { return 200 "fixed body"; }
    location = /chunked { default_type text/plain; chunked_transfer_encoding on; return 200 "x"; }
    location /static/ { alias @D@/static/; }
    location = /missing { return 404 "nope"; }
  }
})";
    auto replace = [](std::string& s, const std::string& a, const std::string& b) {
      for (size_t p; (p = s.find(a)) != std::string::npos;) s.replace(p, a.size(), b);
    };
    replace(conf, "@D@", dir_.path());
    replace(conf, "@P@", std::to_string(port_));
    testing::writeFile(dir_.file("nginx.conf"), conf);
    // nginx's worker runs as nobody: let it read what it serves.
    testing::run("mkdir -p " + dir_.file("static") + " && chmod 755 " + dir_.path() + " " + dir_.file("static"));
    big_ = std::string(3 << 20, 'q');
    for (size_t i = 0; i < big_.size(); i += 4096) big_[i] = static_cast<char>('a' + (i / 4096) % 26);
    testing::writeFile(dir_.file("static/big"), big_);
    testing::run("chmod 644 " + dir_.file("static/big"));
    pid_ = fork();
    if (pid_ == 0) {
      setpgid(0, 0);
      execlp("nginx", "nginx", "-p", dir_.path().c_str(), "-e", dir_.file("error.log").c_str(), "-c",
             dir_.file("nginx.conf").c_str(), nullptr);
      _exit(127);
    }
    ASSERT_TRUE(testing::waitFor([&] {
      return testing::run("curl -sk -o /dev/null https://127.0.0.1:" + std::to_string(port_) + "/fixed").exitCode == 0;
    }, 30s)) << testing::readFile(dir_.file("error.log"));
  }

  void TearDown() override {
    if (pid_ > 0) {
      kill(-pid_, SIGTERM);
      kill(pid_, SIGTERM);
      int st;
      waitpid(pid_, &st, 0);
    }
  }


  std::string url(const std::string& path) { return "https://localhost:" + std::to_string(port_) + path; }

  testing::TempDir dir_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
  std::string big_;
};

TEST_F(ClientAgainstNginx, Http2AndHttp1BothWork) {
  for (bool h2 : {true, false}) {
    TlsClientOptions o{.caFile = dir_.file("srv.crt")};
    if (!h2) o.alpn = {"http/1.1"};
    Client c({.tls = *TlsClientConfig::create(o)});
    auto r = c.fetch(url("/fixed"));
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "fixed body");
    auto missing = c.fetch(url("/missing"));
    ASSERT_TRUE(missing.ok());
    EXPECT_EQ(missing->status, 404);
    // A 3 MiB body: HTTP/2 flow control (windows must be updated) or a long Content-Length.
    Limits big;
    big.maxBodyBytes = 8 << 20;
    Client large({.tls = *TlsClientConfig::create(o), .limits = big});
    auto b = large.fetch(url("/static/big"));
    ASSERT_TRUE(b.ok()) << b.error().message();
    ASSERT_EQ(b->status, 200) << b->body;
    EXPECT_EQ(b->body.size(), big_.size());
    EXPECT_TRUE(b->body == big_) << (h2 ? "h2" : "h1") << ": body differs";
    EXPECT_EQ(large.openConnections(), 1u);
  }
}

TEST_F(ClientAgainstNginx, ResponseBodyLimitIsEnforced) {
  testing::writeFile(dir_.file("static/huge"), std::string(4 << 20, 'h'));
  testing::run("chmod 644 " + dir_.file("static/huge"));
  for (bool h2 : {true, false}) {
    TlsClientOptions o{.caFile = dir_.file("srv.crt")};
    if (!h2) o.alpn = {"http/1.1"};
    Client c({.tls = *TlsClientConfig::create(o)});  // default limit 3 MiB
    auto r = c.fetch(url("/static/huge"));
    ASSERT_FALSE(r.ok()) << (h2 ? "h2" : "h1");
    EXPECT_EQ(r.error().code(), base::ErrorCode::kResourceExhausted) << r.error().message();
  }
}

TEST_F(ClientAgainstNginx, ManyConcurrentRequestsOverOneHttp2Connection) {
  Client c({.tls = *TlsClientConfig::create({.caFile = dir_.file("srv.crt")})});
  std::atomic<int> ok{0}, done{0};
  auto origin = *Origin::parse(url("/"));
  for (int i = 0; i < 300; ++i) {
    c.start(origin, Request{.method = "GET", .target = "/fixed"}, {.onComplete = [&](base::Result<Response> r) {
                                                                      if (r.ok() && r->body == "fixed body") ok++;
                                                                      done++;
                                                                    }});
  }
  ASSERT_TRUE(testing::waitFor([&] { return done == 300; }, 30s)) << "completed " << done << " of 300, " << ok << " ok; nginx log:\n"
      << testing::readFile(dir_.file("error.log"));
  EXPECT_EQ(ok, 300);
  EXPECT_EQ(c.openConnections(), 1u);
}

}  // namespace
}  // namespace trellis::http
