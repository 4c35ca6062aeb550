// trellis-servicelb against a real trellis-apiserver, as root. The whole test
// runs in a network namespace of its own (unshared first thing): the API
// server, the daemon, the backends and the clients all live on its loopback,
// and an address nothing rewrites has no route — no packet leaves. Clients
// are child processes in a cgroup of the test's own, the one the daemon
// attaches to.
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
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

// A TCP backend on ADDR:port that answers each connection with its own name.
class Backend {
 public:
  Backend(const char* addr, uint16_t port, std::string name) : name_(std::move(name)) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, addr, &a.sin_addr);
    ok_ = bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && listen(fd_, 64) == 0;
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{fd_, POLLIN, 0};
        if (poll(&p, 1, 50) != 1) continue;
        int c = accept(fd_, nullptr, nullptr);
        if (c < 0) continue;
        (void)!write(c, name_.data(), name_.size());
        close(c);
      }
    });
  }
  ~Backend() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }
  bool ok() const { return ok_; }

 private:
  std::string name_;
  int fd_ = -1;
  bool ok_ = false;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class ServiceLbTest : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << strerror(errno);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    ifreq ifr{};
    strcpy(ifr.ifr_name, "lo");
    ioctl(s, SIOCGIFFLAGS, &ifr);
    ifr.ifr_flags |= IFF_UP;
    ASSERT_EQ(ioctl(s, SIOCSIFFLAGS, &ifr), 0);
    close(s);
    dir_ = new testing::TempDir();
    api_ = new testing::ApiServerProcess(TRELLIS_APISERVER_BIN, dir_->path());
    ASSERT_TRUE(api_->start());
    std::string root = access("/sys/fs/cgroup/unified/cgroup.procs", F_OK) == 0 ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup";
    cgroup_ = new std::string(fmt::format("{}/trellis-servicelb-test-{}", root, getpid()));
    ASSERT_EQ(mkdir(cgroup_->c_str(), 0755), 0) << *cgroup_ << ": " << strerror(errno);
    port_ = testing::freeTcpPort();
    one_ = new Backend("127.0.0.1", port_, "one");
    two_ = new Backend("127.0.0.2", port_, "two");
    ASSERT_TRUE(one_->ok() && two_->ok());
    metrics_ = testing::freeTcpPort();
    daemon_ = new Background(fmt::format("exec {} --kubeconfig {} --node-name n1 --cgroup {} --metrics-port {} 2>&1",
                                         TRELLIS_SERVICELB_BIN, api_->kubeconfig(), *cgroup_, metrics_));
    ASSERT_TRUE(waitFor([] { return run(fmt::format("curl -s http://127.0.0.1:{}/readyz", metrics_)).out == "ok"; }, 20s))
        << daemon_->output();
  }
  static void TearDownTestSuite() {
    if (daemon_) {
      EXPECT_EQ(daemon_->stop(SIGTERM), 0) << daemon_->output();
      EXPECT_EQ(testing::sanitizerReport(daemon_->lines()), "") << daemon_->output();
    }
    delete daemon_;
    delete one_;
    delete two_;
    if (cgroup_) rmdir(cgroup_->c_str());
    delete cgroup_;
    delete api_;
    delete dir_;
  }

 protected:
  static void apply(const std::string& yaml) {
    static int n = 0;
    std::string file = dir_->file(fmt::format("apply-{}.yaml", ++n));
    testing::writeFile(file, yaml);
    auto r = run("kubectl --kubeconfig " + api_->kubeconfig() + " apply -f " + file + " 2>&1");
    ASSERT_EQ(r.exitCode, 0) << r.out;
  }
  static void service(const std::string& readyOne, const std::string& readyTwo) {
    apply(fmt::format(R"(apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec: {{clusterIP: 10.96.50.1, ports: [{{name: http, port: 80, targetPort: {}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {}, protocol: TCP}}]
endpoints:
- {{addresses: [127.0.0.1], conditions: {{ready: {}}}}}
- {{addresses: [127.0.0.2], conditions: {{ready: {}}}}}
)",
                      port_, port_, readyOne, readyTwo));
  }

  // A client in the cgroup connecting to 10.96.50.1:80: the backend's name,
  // or the connect's error.
  static std::string connectVip() {
    int go[2], back[2];
    if (pipe(go) != 0 || pipe(back) != 0) return "pipe";
    pid_t pid = fork();
    if (pid == 0) {
      close(go[1]);
      close(back[0]);
      char c;
      if (read(go[0], &c, 1) != 1) _exit(1);
      int fd = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in vip{};
      vip.sin_family = AF_INET;
      vip.sin_port = htons(80);
      inet_pton(AF_INET, "10.96.50.1", &vip.sin_addr);
      std::string out;
      if (connect(fd, reinterpret_cast<sockaddr*>(&vip), sizeof vip) != 0) {
        out = strerrorname_np(errno);
      } else {
        char buf[16];
        ssize_t n = read(fd, buf, sizeof buf);
        out = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "no answer";
      }
      (void)!write(back[1], out.data(), out.size());
      _exit(0);
    }
    close(go[0]);
    close(back[1]);
    std::ofstream(*cgroup_ + "/cgroup.procs") << pid;
    (void)!write(go[1], "g", 1);
    char buf[64];
    ssize_t n = read(back[0], buf, sizeof buf);
    waitpid(pid, nullptr, 0);
    close(go[1]);
    close(back[0]);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "no result";
  }
  static std::map<std::string, int> tally(int n) {
    std::map<std::string, int> out;
    for (int i = 0; i < n; ++i) ++out[connectVip()];
    return out;
  }

  static inline testing::TempDir* dir_ = nullptr;
  static inline testing::ApiServerProcess* api_ = nullptr;
  static inline std::string* cgroup_ = nullptr;
  static inline Backend* one_ = nullptr;
  static inline Backend* two_ = nullptr;
  static inline Background* daemon_ = nullptr;
  static inline uint16_t port_ = 0, metrics_ = 0;
};

TEST_F(ServiceLbTest, AClusterIpFollowsItsReadyEndpoints) {
  service("true", "true");
  ASSERT_TRUE(waitFor([] { return connectVip() == "one" || connectVip() == "two"; }, 10s)) << connectVip();
  auto both = tally(40);
  EXPECT_GT(both["one"], 0) << "random choice reaches both";
  EXPECT_GT(both["two"], 0);
  EXPECT_EQ(both["one"] + both["two"], 40);
  // One turns unready: only the other answers.
  service("false", "true");
  ASSERT_TRUE(waitFor([] { return tally(10) == std::map<std::string, int>{{"two", 10}}; }, 10s));
  // None ready: refused at once, not a black hole.
  service("false", "false");
  ASSERT_TRUE(waitFor([] { return connectVip() == "EPERM"; }, 10s)) << connectVip();
  // The Service goes: the VIP is just an address again (no route in this namespace).
  ASSERT_EQ(run("kubectl --kubeconfig " + api_->kubeconfig() + " delete service web 2>&1").exitCode, 0);
  ASSERT_TRUE(waitFor([] { return connectVip() == "ENETUNREACH"; }, 10s)) << connectVip();
}

// Cluster DNS through a ClusterIP, as pods reach it: trellis-dns behind the
// Service kube-dns (10.96.0.10, UDP and TCP 53), dig in the node's cgroup.
TEST_F(ServiceLbTest, ClusterDnsAnswersThroughItsClusterIp) {
  uint16_t dnsPort = testing::freeTcpPort();
  Background dns(fmt::format("exec {} --kubeconfig {} --listen 127.0.0.1:{} --metrics-port 0 --upstream 127.0.0.1:9 2>&1",
                             TRELLIS_DNS_BIN, api_->kubeconfig(), dnsPort));
  apply(fmt::format(R"(apiVersion: v1
kind: Service
metadata: {{name: kube-dns, namespace: kube-system}}
spec: {{clusterIP: 10.96.0.10, ports: [{{name: dns, port: 53, protocol: UDP}}, {{name: dns-tcp, port: 53, protocol: TCP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: kube-dns-1, namespace: kube-system, labels: {{kubernetes.io/service-name: kube-dns}}}}
addressType: IPv4
ports: [{{name: dns, port: {0}, protocol: UDP}}, {{name: dns-tcp, port: {0}, protocol: TCP}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: named, namespace: default}}
spec: {{clusterIP: 10.96.60.6, ports: [{{port: 80}}]}}
)",
                    dnsPort));
  // dig as a pod runs it: a process in the node's cgroup.
  auto dig = [](const std::string& args) {
    return run(fmt::format("sh -c 'echo $$ > {}/cgroup.procs && exec dig +short +time=2 +tries=1 @10.96.0.10 {}' 2>/dev/null",
                           *cgroup_, args))
        .out;
  };
  EXPECT_TRUE(waitFor([&] { return dig("named.default.svc.cluster.local") == "10.96.60.6\n"; }, 20s))
      << dig("named.default.svc.cluster.local") << dns.output();
  EXPECT_EQ(dig("named.default.svc.cluster.local +tcp"), "10.96.60.6\n");
  EXPECT_EQ(dig("kube-dns.kube-system.svc.cluster.local"), "10.96.0.10\n");
}

}  // namespace
}  // namespace trellis
