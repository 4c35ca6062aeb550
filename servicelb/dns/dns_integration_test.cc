// trellis-dns against a real trellis-apiserver, queried with dig (Debian's
// bind9-dnsutils) over UDP and TCP. The server runs as user "trellis-dns"
// with only the RBAC a deployment grants it (read Services, EndpointSlices,
// Pods). Names outside the zone go to upstream resolvers this test runs on
// loopback (small DNS servers written here), one as the default upstream and
// one for a stub domain.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "common/testing/apiserver_process.h"
#include "common/testing/background.h"
#include "common/testing/testing.h"

namespace trellis {
namespace {

using namespace std::chrono_literals;
using testing::Background;
using testing::run;
using testing::waitFor;

constexpr const char* kRbac = R"(apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: trellis-dns}
rules:
- apiGroups: [""]
  resources: [services, pods]
  verbs: [list, watch]
- apiGroups: ["discovery.k8s.io"]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: trellis-dns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: trellis-dns}
subjects: [{kind: User, name: trellis-dns}]
)";

// A tiny authoritative server for the test's upstream names, on UDP and TCP
// of one loopback port: "<anything>.<domain>" A → `address`, except
// "big.<domain>" (60 A records: larger than 512 bytes) and "nx.<domain>"
// (NXDOMAIN with an SOA whose minimum is 30).
class FakeUpstream {
 public:
  FakeUpstream(std::string domain, std::string address) : domain_(std::move(domain)), address_(std::move(address)) {
    udp_ = socket(AF_INET, SOCK_DGRAM, 0);
    tcp_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int tries = 0; tries < 20; ++tries) {
      a.sin_port = 0;
      if (bind(udp_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) continue;
      socklen_t len = sizeof a;
      getsockname(udp_, reinterpret_cast<sockaddr*>(&a), &len);
      int one = 1;
      setsockopt(tcp_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (bind(tcp_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && listen(tcp_, 16) == 0) break;
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeUpstream() {
    stop_ = true;
    thread_.join();
    close(udp_);
    close(tcp_);
  }
  uint16_t port() const { return port_; }
  int queries() const { return queries_; }

 private:
  static std::string u16(size_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v)}; }

  std::string answer(const std::string& q) {
    ++queries_;
    if (q.size() < 17) return {};
    size_t p = 12;
    std::string name;
    while (p < q.size() && q[p] != 0) {
      size_t l = static_cast<uint8_t>(q[p]);
      name += q.substr(p + 1, l) + ".";
      p += 1 + l;
    }
    std::string question = q.substr(12, p + 5 - 12);
    for (char& c : name) c = static_cast<char>(tolower(c));
    bool nx = name == "nx." + domain_ + ".";
    bool big = name == "big." + domain_ + ".";
    int count = nx ? 0 : big ? 60 : 1;
    std::string r = q.substr(0, 2) + "\x81\x80" + u16(1) + u16(count) + u16(nx ? 1 : 0) + u16(0) + question;
    if (nx) r[3] = static_cast<char>(0x83);
    in_addr ip{};
    inet_pton(AF_INET, address_.c_str(), &ip);
    for (int i = 0; i < count; ++i) {
      std::string rdata(reinterpret_cast<char*>(&ip), 4);
      rdata[3] = static_cast<char>(rdata[3] + i);
      r += std::string("\xC0\x0C", 2) + u16(1) + u16(1) + u16(0) + u16(300) + u16(4) + rdata;
    }
    if (nx) {
      std::string soa = std::string("\x02ns\x00", 4) + std::string("\x04root\x00", 6) + std::string(16, '\0') + u16(0) + u16(30);
      r += std::string("\xC0\x0C", 2) + u16(6) + u16(1) + u16(0) + u16(300) + u16(soa.size()) + soa;
    }
    return r;
  }

  void serve() {
    while (!stop_) {
      pollfd fds[2] = {{udp_, POLLIN, 0}, {tcp_, POLLIN, 0}};
      if (poll(fds, 2, 50) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        char buf[4096];
        sockaddr_storage from{};
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(udp_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
        std::string r = answer(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0));
        if (r.size() > 512) {  // too large for UDP here: header + question with TC
          r = r.substr(0, 12) + r.substr(12, r.find(std::string("\xC0\x0C", 2), 12) - 12);
          r[2] = static_cast<char>(r[2] | 0x02);
          r[6] = r[7] = 0;
        }
        sendto(udp_, r.data(), r.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
      }
      if (fds[1].revents & POLLIN) {
        int c = accept(tcp_, nullptr, nullptr);
        if (c < 0) continue;
        timeval tv{2, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        std::string in;
        char buf[4096];
        ssize_t n;
        while ((in.size() < 2 || in.size() < 2 + (size_t(uint8_t(in[0])) << 8 | uint8_t(in[1]))) &&
               (n = read(c, buf, sizeof buf)) > 0)
          in.append(buf, static_cast<size_t>(n));
        if (in.size() > 2) {
          std::string r = answer(in.substr(2));
          r = u16(r.size()) + r;
          (void)!write(c, r.data(), r.size());
        }
        close(c);
      }
    }
  }

  std::string domain_, address_;
  int udp_ = -1, tcp_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> queries_{0};
  std::thread thread_;
};

class DnsTest : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    api_ = new testing::ApiServerProcess(TRELLIS_APISERVER_BIN, dir_->path());
    ASSERT_TRUE(api_->start());
    testing::writeFile(dir_->file("rbac.yaml"), kRbac);
    auto r = kubectl("apply -f " + dir_->file("rbac.yaml"));
    ASSERT_EQ(r.exitCode, 0) << r.out;
    ASSERT_TRUE(api_->writeKubeconfigFor("trellis-dns", {}, dir_->file("dns.kubeconfig")));
    upstream_ = new FakeUpstream("example.test", "192.0.2.1");
    stub_ = new FakeUpstream("stub.test", "198.51.100.1");
    startDns();
  }

  static void startDns() {
    metricsPort_ = testing::freeTcpPort();
    dns_ = new Background(fmt::format(
        "exec {} --kubeconfig {} --listen 127.0.0.1:0 --metrics-port {} --threads 2 --upstream 127.0.0.1:{} "
        "--stub-domain stub.test=127.0.0.1:{} --stub-domain dead.test=127.0.0.1:9 --forward-timeout-ms 300 --tcp-idle-timeout-ms 2000 "
        "--pod-records verified 2>&1",
        TRELLIS_DNS_BIN, dir_->file("dns.kubeconfig"), metricsPort_, upstream_->port(), stub_->port()));
    std::smatch m;
    ASSERT_TRUE(dns_->waitForLine(
        [&](const std::string& line) {
          static const std::regex listen("listen=127\\.0\\.0\\.1:(\\d+)");
          return std::regex_search(line, m, listen);
        },
        20s))
        << dns_->output();
    port_ = static_cast<uint16_t>(std::stoi(m[1]));
    ASSERT_TRUE(waitFor([] { return curl("/readyz") == "ok"; }, 20s)) << dns_->output();
  }

  static void TearDownTestSuite() {
    if (dns_) {
      int rc = dns_->stop(SIGTERM);
      EXPECT_EQ(rc, 0) << "trellis-dns did not shut down cleanly\n" << dns_->output();
      EXPECT_EQ(testing::sanitizerReport(dns_->lines()), "") << dns_->output();
    }
    delete dns_;
    if (api_) {
      for (const std::string& line : api_->refusals("trellis-dns")) {
        ADD_FAILURE() << "trellis-dns asked for something RBAC does not grant it: " << line;
      }
    }
    delete stub_;
    delete upstream_;
    delete api_;
    delete dir_;
  }

 protected:
  static testing::CommandResult kubectl(const std::string& args) {
    return run("kubectl --kubeconfig " + api_->kubeconfig() + " " + args + " 2>&1");
  }
  static void apply(const std::string& yaml) {
    static int n = 0;
    std::string file = dir_->file(fmt::format("apply-{}.yaml", ++n));
    testing::writeFile(file, yaml);
    auto r = kubectl("apply -f " + file);
    ASSERT_EQ(r.exitCode, 0) << r.out << "\n" << yaml;
  }
  static std::string curl(const std::string& path) {
    return run(fmt::format("curl -s --max-time 5 http://127.0.0.1:{}{}", metricsPort_, path)).out;
  }
  // dig's output for NAME TYPE with extra options (stderr dropped: dig warns about .local).
  static std::string dig(const std::string& args) {
    return run(fmt::format("dig +time=3 +tries=1 -p {} @127.0.0.1 {} 2>/dev/null", port_, args)).out;
  }
  // The answer section's data, sorted, one per line.
  static std::string short_(const std::string& name, const std::string& type, const std::string& opts = "") {
    std::string out = run(fmt::format("dig +short +time=3 +tries=1 -p {} @127.0.0.1 {} {} {} 2>/dev/null | sort", port_,
                                      opts, name, type))
                          .out;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }
  static std::string status(const std::string& out) {
    std::smatch m;
    return std::regex_search(out, m, std::regex("status: ([A-Z]+)")) ? m[1].str() : "none";
  }
  static double metric(const std::string& name) {
    std::istringstream in(curl("/metrics"));
    double sum = 0;
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(name, 0) == 0 && (line[name.size()] == ' ' || line[name.size()] == '{')) {
        sum += std::stod(line.substr(line.rfind(' ') + 1));
      }
    }
    return sum;
  }

  static inline testing::TempDir* dir_ = nullptr;
  static inline testing::ApiServerProcess* api_ = nullptr;
  static inline Background* dns_ = nullptr;
  static inline FakeUpstream* upstream_ = nullptr;
  static inline FakeUpstream* stub_ = nullptr;
  static inline uint16_t port_ = 0, metricsPort_ = 0;
};

TEST_F(DnsTest, AServiceByNameOverUdpAndTcp) {
  kubectl("create namespace shop");
  apply(R"(apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.7.7, ports: [{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}]}
)");
  ASSERT_TRUE(waitFor([] { return short_("web.shop.svc.cluster.local", "A") == "10.96.7.7"; }, 10s));
  EXPECT_EQ(short_("web.shop.svc.cluster.local", "A", "+tcp"), "10.96.7.7");
  EXPECT_EQ(short_("WEB.Shop.SVC.cluster.LOCAL", "A"), "10.96.7.7");
  EXPECT_EQ(short_("_http._tcp.web.shop.svc.cluster.local", "SRV"), "0 100 80 web.shop.svc.cluster.local.");
  EXPECT_EQ(short_("_dns._udp.web.shop.svc.cluster.local", "SRV", "+tcp"), "0 100 53 web.shop.svc.cluster.local.");
  EXPECT_EQ(short_("-x 10.96.7.7", ""), "web.shop.svc.cluster.local.");
  // NXDOMAIN for what does not exist, NODATA for a type it has none of; both with the SOA (TTL 5).
  std::string nx = dig("nosuch.shop.svc.cluster.local A");
  EXPECT_EQ(status(nx), "NXDOMAIN") << nx;
  EXPECT_TRUE(std::regex_search(nx, std::regex("cluster\\.local\\.\\s+5\\s+IN\\s+SOA\\s+ns\\.dns\\.cluster\\.local\\."))) << nx;
  EXPECT_TRUE(nx.find("flags: qr aa") != std::string::npos) << nx;
  std::string nodata = dig("web.shop.svc.cluster.local AAAA");
  EXPECT_EQ(status(nodata), "NOERROR") << nodata;
  EXPECT_TRUE(nodata.find("ANSWER: 0") != std::string::npos) << nodata;
  EXPECT_TRUE(nodata.find("AUTHORITY: 1") != std::string::npos) << nodata;
  EXPECT_EQ(status(dig("shop.svc.cluster.local A")), "NOERROR");  // the namespace: an empty non-terminal
  EXPECT_EQ(short_("dns-version.cluster.local", "TXT"), "\"1.1.0\"");
  EXPECT_EQ(short_("cluster.local", "NS"), "ns.dns.cluster.local.");
  // The Service goes: so does its name.
  ASSERT_EQ(kubectl("delete service web -n shop").exitCode, 0);
  EXPECT_TRUE(waitFor([] { return status(dig("web.shop.svc.cluster.local A")) == "NXDOMAIN"; }, 10s));
}

TEST_F(DnsTest, HeadlessEndpointsFollowReadiness) {
  kubectl("create namespace db");
  auto slice = [](const char* ready1) {
    return fmt::format(R"(apiVersion: v1
kind: Service
metadata: {{name: pg, namespace: db}}
spec: {{clusterIP: None, ports: [{{name: pg, port: 5432}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: pg-1, namespace: db, labels: {{kubernetes.io/service-name: pg}}}}
addressType: IPv4
ports: [{{name: pg, port: 5432, protocol: TCP}}]
endpoints:
- {{addresses: [10.244.3.10], hostname: pg-0, conditions: {{ready: true}}}}
- {{addresses: [10.244.3.11], hostname: pg-1, conditions: {{ready: {}}}}}
)",
                       ready1);
  };
  apply(slice("true"));
  ASSERT_TRUE(waitFor([] { return short_("pg.db.svc.cluster.local", "A") == "10.244.3.10\n10.244.3.11"; }, 10s))
      << short_("pg.db.svc.cluster.local", "A");
  EXPECT_EQ(short_("pg-1.pg.db.svc.cluster.local", "A"), "10.244.3.11");
  EXPECT_EQ(short_("_pg._tcp.pg.db.svc.cluster.local", "SRV"),
            "0 50 5432 pg-0.pg.db.svc.cluster.local.\n0 50 5432 pg-1.pg.db.svc.cluster.local.");
  EXPECT_EQ(short_("-x 10.244.3.11", ""), "pg-1.pg.db.svc.cluster.local.");
  // pg-1 stops being ready: within the informer's latency it is gone, pg-0 stays.
  apply(slice("false"));
  auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(waitFor([] { return status(dig("pg-1.pg.db.svc.cluster.local A")) == "NXDOMAIN"; }, 10s));
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  fprintf(stderr, "readiness change answered after %lld ms (kubectl apply's return to dig's answer)\n",
          static_cast<long long>(took.count()));
  EXPECT_EQ(short_("pg.db.svc.cluster.local", "A"), "10.244.3.10");
}

TEST_F(DnsTest, ExternalNameAndPodRecords) {
  kubectl("create namespace ext");
  apply(R"(apiVersion: v1
kind: Service
metadata: {name: mail, namespace: ext}
spec: {type: ExternalName, externalName: mx.example.test}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ext}
spec: {containers: [{name: c, image: x}]}
)");
  ASSERT_TRUE(waitFor([] { return short_("mail.ext.svc.cluster.local", "CNAME") == "mx.example.test."; }, 10s));
  // Verified pod records: only an address a pod in that namespace has.
  EXPECT_EQ(status(dig("10-244-9-9.ext.pod.cluster.local A")), "NXDOMAIN");
  auto r = kubectl(R"(patch pod p -n ext --subresource status --type merge -p '{"status":{"podIP":"10.244.9.9","podIPs":[{"ip":"10.244.9.9"}]}}')");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  EXPECT_TRUE(waitFor([] { return short_("10-244-9-9.ext.pod.cluster.local", "A") == "10.244.9.9"; }, 10s));
  EXPECT_EQ(status(dig("10-244-9-9.other.pod.cluster.local A")), "NXDOMAIN");
}

TEST_F(DnsTest, TooLargeForUdpIsTruncatedAndDigRetriesOverTcp) {
  kubectl("create namespace big");
  std::string eps;
  for (int i = 0; i < 100; ++i) eps += fmt::format("- {{addresses: [10.244.4.{}]}}\n", i + 1);
  apply(R"(apiVersion: v1
kind: Service
metadata: {name: many, namespace: big}
spec: {clusterIP: None}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: many-1, namespace: big, labels: {kubernetes.io/service-name: many}}
addressType: IPv4
endpoints:
)" + eps);
  ASSERT_TRUE(waitFor([] { return status(dig("many.big.svc.cluster.local A +tcp")) == "NOERROR"; }, 10s));
  std::string udp = dig("many.big.svc.cluster.local A +noedns +ignore");
  EXPECT_TRUE(udp.find("flags: qr tc aa") != std::string::npos || udp.find("flags: qr aa tc") != std::string::npos) << udp;
  std::string retried = dig("many.big.svc.cluster.local A +noedns");  // dig retries over TCP by itself
  EXPECT_TRUE(retried.find("ANSWER: 100") != std::string::npos) << retried;
  EXPECT_TRUE(retried.find("Truncated, retrying in TCP mode") != std::string::npos) << retried;
  std::string edns = dig("many.big.svc.cluster.local A +bufsize=4096 +ignore");  // 1232 at most from us
  EXPECT_TRUE(edns.find(" tc") != std::string::npos) << edns;
  EXPECT_TRUE(edns.find("udp: 1232") != std::string::npos) << edns;
}

TEST_F(DnsTest, OtherNamesAreForwardedAndCached) {
  int before = upstream_->queries();
  EXPECT_EQ(short_("www.example.test", "A"), "192.0.2.1");
  EXPECT_EQ(short_("www.example.test", "A"), "192.0.2.1");
  EXPECT_EQ(short_("WWW.Example.Test", "A"), "192.0.2.1");
  EXPECT_EQ(upstream_->queries(), before + 1) << "the cache answered the second and third";
  EXPECT_GE(metric("trellis_dns_cache_hits_total"), 2);
  std::string cached = dig("www.example.test A");
  EXPECT_TRUE(std::regex_search(cached, std::regex("www\\.example\\.test\\.\\s+(29\\d|300)\\s+IN\\s+A"))) << cached;
  // Negative answers too, for the SOA minimum.
  EXPECT_EQ(status(dig("nx.example.test A")), "NXDOMAIN");
  EXPECT_EQ(status(dig("nx.example.test A")), "NXDOMAIN");
  EXPECT_EQ(upstream_->queries(), before + 2);
  // A large answer: over UDP the upstream's truncated answer is relayed and
  // dig retries over TCP, which goes upstream over TCP and comes back whole...
  std::string big = dig("big.example.test A +noedns");
  EXPECT_TRUE(big.find("Truncated, retrying in TCP mode") != std::string::npos) << big;
  EXPECT_TRUE(big.find("ANSWER: 60") != std::string::npos) << big;
  EXPECT_TRUE(dig("big.example.test A +tcp").find("ANSWER: 60") != std::string::npos);
  // ...and, cached, it is truncated again for a UDP client that takes 512 bytes (994 fit in 1232).
  big = dig("big.example.test A +bufsize=512");
  EXPECT_TRUE(big.find("Truncated, retrying in TCP mode") != std::string::npos) << big;
  EXPECT_TRUE(big.find("ANSWER: 60") != std::string::npos) << big;
  // Stub domains go to their own servers; a dead one gets SERVFAIL, not silence.
  EXPECT_EQ(short_("www.stub.test", "A"), "198.51.100.1");
  EXPECT_EQ(short_("www.stub.test", "A", "+tcp"), "198.51.100.1");
  std::string dead = dig("www.dead.test A");
  EXPECT_EQ(status(dead), "SERVFAIL") << dead;
  // Reverse names the cluster does not hold are forwarded as well (the fake answers A, not PTR: NOERROR).
  EXPECT_EQ(status(dig("-x 192.0.2.55")), "NOERROR");
}

// Sends raw UDP packets and returns the answers that came within 300 ms.
std::vector<std::string> udpExchange(uint16_t port, const std::vector<std::string>& packets) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  for (auto& p : packets) send(fd, p.data(), p.size(), 0);
  std::vector<std::string> out;
  pollfd pfd{fd, POLLIN, 0};
  while (poll(&pfd, 1, 300) == 1) {
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) out.emplace_back(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

TEST_F(DnsTest, MalformedPacketsGetFormerrOrNothingAndHarmNothing) {
  std::string header = std::string("\xAB\xCD\x01\x00", 4);
  // Two questions: FORMERR. A response: nothing. Eleven bytes: nothing. An UPDATE: NOTIMP.
  auto answers = udpExchange(port_, {header + std::string("\x00\x02\x00\x00\x00\x00\x00\x00", 8) + std::string("\x01" "a\x00\x00\x01\x00\x01", 7) +
                                      std::string("\x01" "b\x00\x00\x01\x00\x01", 7),
                                  std::string("\x11\x11\x81\x80", 4) + std::string(8, '\0'), std::string(11, '\x01'),
                                  std::string("\x22\x22\x28\x00", 4) + std::string(8, '\0')});
  ASSERT_EQ(answers.size(), 2u);
  for (auto& a : answers) {
    if (a.substr(0, 2) == "\xAB\xCD") EXPECT_EQ(a[3] & 0xF, 1) << "FORMERR";
    else EXPECT_EQ(a[3] & 0xF, 4) << "NOTIMP";
  }
  // EDNS version 1: BADVERS (extended rcode 16: the OPT's upper bits say 1).
  std::string badvers = dig("web.shop.svc.cluster.local A +ednsflags=0 +edns=1 +noednsneg");
  EXPECT_EQ(status(badvers), "BADVERS") << badvers;
  // A thousand random packets, then the server still answers.
  std::mt19937 rng(42);
  std::vector<std::string> junk;
  for (int i = 0; i < 1000; ++i) {
    std::string p(rng() % 300, '\0');
    for (char& c : p) c = static_cast<char>(rng());
    if (p.size() > 2) p[2] = static_cast<char>(p[2] & 0x7F);  // mostly "queries"
    junk.push_back(p);
  }
  udpExchange(port_, junk);
  EXPECT_EQ(status(dig("dns-version.cluster.local TXT")), "NOERROR");
  // A TCP client that sends half a message and sits is closed by the idle timeout, not kept forever.
  bool closed = false;
  testing::rawExchange(port_, std::string("\x00\x40\x12", 3), 6s, &closed);
  EXPECT_TRUE(closed);
}

TEST_F(DnsTest, MetricsCountQueriesByTypeAndRcode) {
  double nx = metric("trellis_dns_responses_total{type=\"A\",rcode=\"NXDOMAIN\"}");
  dig("nothing.default.svc.cluster.local A");
  EXPECT_EQ(metric("trellis_dns_responses_total{type=\"A\",rcode=\"NXDOMAIN\"}"), nx + 1);
  EXPECT_GT(metric("trellis_dns_request_duration_seconds_count"), 0);
  EXPECT_GT(metric("trellis_dns_zone_names"), 0);
}

TEST_F(DnsTest, TheDeployBaseInstallsAndItsRbacIsEnough) {
  // deploy/base as a user applies it: the kube-dns Service at the tenth address, the RBAC.
  auto r = kubectl(std::string("apply -k ") + TRELLIS_SOURCE_DIR "/deploy/base");
  ASSERT_EQ(r.exitCode, 0) << r.out;
  EXPECT_EQ(kubectl("get service kube-dns -n kube-system -o jsonpath={.spec.clusterIP}").out, "10.96.0.10");
  // ns.dns.<zone> is that address.
  EXPECT_TRUE(waitFor([] { return short_("ns.dns.cluster.local", "A") == "10.96.0.10"; }, 10s));
  // A trellis-dns as the Deployment's ServiceAccount gets ready and answers with only what the base grants.
  std::string kubeconfig = dir_->file("sa.kubeconfig");
  ASSERT_TRUE(api_->writeKubeconfigFor("system:serviceaccount:kube-system:trellis-dns",
                                       {"system:serviceaccounts", "system:serviceaccounts:kube-system"}, kubeconfig));
  uint16_t metrics = testing::freeTcpPort();
  Background sa(fmt::format("exec {} --kubeconfig {} --listen 127.0.0.1:0 --metrics-port {} --upstream 127.0.0.1:{} "
                            "--pod-records verified 2>&1",
                            TRELLIS_DNS_BIN, kubeconfig, metrics, upstream_->port()));
  EXPECT_TRUE(waitFor([&] {
    return run(fmt::format("curl -s --max-time 5 http://127.0.0.1:{}/readyz", metrics)).out == "ok";
  }, 20s)) << sa.output();
  std::smatch m;
  std::string out = sa.output();
  ASSERT_TRUE(std::regex_search(out, m, std::regex("listen=127\\.0\\.0\\.1:(\\d+)"))) << out;
  EXPECT_EQ(run(fmt::format("dig +short -p {} @127.0.0.1 kube-dns.kube-system.svc.cluster.local 2>/dev/null", m[1].str())).out,
            "10.96.0.10\n");
  EXPECT_EQ(sa.stop(SIGTERM), 0);
  for (const std::string& line : api_->refusals("system:serviceaccount:kube-system:trellis-dns")) {
    ADD_FAILURE() << "the base's RBAC does not grant trellis-dns what it asked: " << line;
  }
}

TEST_F(DnsTest, KilledAndRestartedItServesTheSameNames) {
  kubectl("create namespace again");
  apply(R"(apiVersion: v1
kind: Service
metadata: {name: svc, namespace: again}
spec: {clusterIP: 10.96.8.8, ports: [{port: 80}]}
)");
  ASSERT_TRUE(waitFor([] { return short_("svc.again.svc.cluster.local", "A") == "10.96.8.8"; }, 10s));
  dns_->stop(SIGKILL);
  delete dns_;
  dns_ = nullptr;
  startDns();
  EXPECT_EQ(short_("svc.again.svc.cluster.local", "A"), "10.96.8.8");
}

}  // namespace
}  // namespace trellis
