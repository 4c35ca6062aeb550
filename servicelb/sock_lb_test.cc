// The socket load balancer's BPF programs for real, as root: attached to a
// cgroup of the test's own, with "nodes" that are child processes in network
// namespaces of their own (loopback only: no packet leaves them), each with a
// backend listening on its own 127.0.0.1. A node connecting to the VIP is
// connected to its backend; getpeername() says the VIP; a node the maps hold
// nothing for is left alone; a Service without backends refuses at once.
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "servicelb/sock_lb.h"

namespace trellis::servicelb {
namespace {

constexpr uint32_t kVip = 0x0A606401;  // 10.96.100.1
constexpr uint16_t kVipPort = 80;

// A child process in a network namespace of its own, driven over two pipes:
// it reports its namespace's cookie and its backend's port, then runs the
// commands it is sent ('c' connect to the VIP and exchange, 'r' expect the
// connect refused, 'u' expect the VIP unreachable) answering '0' or a reason.
class Node {
 public:
  Node() {
    int down[2], up[2];
    if (pipe(down) != 0 || pipe(up) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      close(down[1]);
      close(up[0]);
      _exit(run(down[0], up[1]));
    }
    close(down[0]);
    close(up[1]);
    to_ = down[1];
    from_ = up[0];
    if (read(from_, &cookie_, sizeof cookie_) != sizeof cookie_ || read(from_, &port_, sizeof port_) != sizeof port_) {
      cookie_ = 0;
    }
  }
  ~Node() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(to_);
    close(from_);
  }
  pid_t pid() const { return pid_; }
  uint64_t cookie() const { return cookie_; }
  uint16_t port() const { return port_; }
  // The answer to a command: "0" when it went as expected, else why not.
  std::string ask(char command) {
    if (write(to_, &command, 1) != 1) return "write failed";
    char buf[128];
    ssize_t n = read(from_, buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "no answer";
  }

 private:
  static int run(int in, int out) {
    if (unshare(CLONE_NEWNET) != 0) return 1;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    ifreq ifr{};
    strcpy(ifr.ifr_name, "lo");
    ioctl(s, SIOCGIFFLAGS, &ifr);
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) return 2;
    uint64_t cookie = 0;
    socklen_t len = sizeof cookie;
    getsockopt(s, SOL_SOCKET, 71 /* SO_NETNS_COOKIE */, &cookie, &len);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof a;
    if (bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(listener, 8) != 0) return 3;
    getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
    uint16_t port = ntohs(a.sin_port);
    int udpServer = socket(AF_INET, SOCK_DGRAM, 0);  // the same port number, for UDP
    if (bind(udpServer, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return 6;
    if (write(out, &cookie, sizeof cookie) != sizeof cookie || write(out, &port, sizeof port) != sizeof port) return 4;
    for (char command; read(in, &command, 1) == 1;) {
      std::string answer = "0";
      if (command == 'd') {  // unconnected UDP: sendto the VIP, the reply from the VIP
        answer = udpExchange(udpServer);
        if (write(out, answer.data(), answer.size()) < 0) return 5;
        continue;
      }
      int c = socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in vip{};
      vip.sin_family = AF_INET;
      vip.sin_addr.s_addr = htonl(kVip);
      vip.sin_port = htons(kVipPort);
      int rc = connect(c, reinterpret_cast<sockaddr*>(&vip), sizeof vip);
      int err = errno;
      if (command == 'c') {
        sockaddr_in peer{};
        socklen_t plen = sizeof peer;
        int accepted = rc == 0 ? accept(listener, nullptr, nullptr) : -1;
        char buf[8] = {};
        if (rc != 0) {
          answer = fmt::format("connect: {}", strerror(err));
        } else if (getpeername(c, reinterpret_cast<sockaddr*>(&peer), &plen) != 0 || peer.sin_addr.s_addr != htonl(kVip) ||
                   peer.sin_port != htons(kVipPort)) {
          answer = fmt::format("getpeername says {}:{}", inet_ntoa(peer.sin_addr), ntohs(peer.sin_port));
        } else if (accepted < 0 || write(c, "ping", 4) != 4 || read(accepted, buf, 4) != 4 || std::string(buf) != "ping") {
          answer = "the backend did not get the bytes";
        }
        if (accepted >= 0) close(accepted);
      } else if (command == 'r') {
        if (rc == 0 || err != EPERM) answer = fmt::format("wanted EPERM, got {}", rc == 0 ? "a connection" : strerror(err));
      } else if (command == 'u') {
        if (rc == 0 || err != ENETUNREACH) {
          answer = fmt::format("wanted ENETUNREACH, got {}", rc == 0 ? "a connection" : strerror(err));
        }
      }
      close(c);
      if (write(out, answer.data(), answer.size()) < 0) return 5;
    }
    return 0;
  }

  static std::string udpExchange(int server) {
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in vip{};
    vip.sin_family = AF_INET;
    vip.sin_addr.s_addr = htonl(kVip);
    vip.sin_port = htons(kVipPort);
    std::string answer = "0";
    if (sendto(c, "q?", 2, 0, reinterpret_cast<sockaddr*>(&vip), sizeof vip) != 2) {
      answer = fmt::format("sendto: {}", strerror(errno));
    } else {
      char buf[8];
      sockaddr_in from{};
      socklen_t flen = sizeof from;
      ssize_t n = recvfrom(server, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
      if (n != 2) return "the backend got no datagram";
      sendto(server, "a!", 2, 0, reinterpret_cast<sockaddr*>(&from), flen);
      sockaddr_in src{};
      socklen_t slen = sizeof src;
      n = recvfrom(c, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&src), &slen);
      if (n != 2 || std::string(buf, 2) != "a!") {
        answer = "no reply";
      } else if (src.sin_addr.s_addr != htonl(kVip) || src.sin_port != htons(kVipPort)) {
        answer = fmt::format("the reply came from {}:{}", inet_ntoa(src.sin_addr), ntohs(src.sin_port));
      }
    }
    close(c);
    return answer;
  }

  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  uint64_t cookie_ = 0;
  uint16_t port_ = 0;
};

class SockLbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/sys/fs/cgroup/unified/cgroup.procs", F_OK) == 0) root_ = "/sys/fs/cgroup/unified";
    cgroup_ = fmt::format("{}/trellis-sock-lb-test-{}", root_, getpid());
    ASSERT_EQ(mkdir(cgroup_.c_str(), 0755), 0) << cgroup_ << ": " << strerror(errno);
  }
  void TearDown() override { rmdir(cgroup_.c_str()); }
  void join(const Node& n) {
    std::ofstream(cgroup_ + "/cgroup.procs") << n.pid();
  }

  std::string root_ = "/sys/fs/cgroup";
  std::string cgroup_;
};

TEST_F(SockLbTest, AVipConnectsStraightToABackendOnlyOnItsOwnNode) {
  auto lb = SockLb::attach(cgroup_);
  ASSERT_TRUE(lb) << lb.error().message();
  Node a, b, c;
  ASSERT_NE(a.cookie(), 0u);
  ASSERT_NE(a.cookie(), b.cookie());
  for (Node* n : {&a, &b, &c}) join(*n);
  // Node a: the VIP → its backend. Node b: nothing for it (the VIP is just an
  // address with no route there). Node c: the Service has no backend.
  ASSERT_TRUE((*lb)->setService({a.cookie(), kVip, kVipPort, IPPROTO_TCP}, 1, {{0x7F000001, a.port()}}));
  ASSERT_TRUE((*lb)->setService({c.cookie(), kVip, kVipPort, IPPROTO_TCP}, 2, {}));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(a.ask('c'), "0");
  EXPECT_EQ(b.ask('u'), "0");
  EXPECT_EQ(c.ask('r'), "0");
  // Node c gets a backend; node a's Service goes.
  ASSERT_TRUE((*lb)->setService({c.cookie(), kVip, kVipPort, IPPROTO_TCP}, 2, {{0x7F000001, c.port()}}));
  EXPECT_EQ(c.ask('c'), "0");
  ASSERT_TRUE((*lb)->removeService({a.cookie(), kVip, kVipPort, IPPROTO_TCP}));
  EXPECT_EQ(a.ask('u'), "0");
}

TEST_F(SockLbTest, UnconnectedUdpGoesToABackendAndRepliesComeFromTheVip) {
  auto lb = SockLb::attach(cgroup_);
  ASSERT_TRUE(lb) << lb.error().message();
  Node a;
  join(a);
  ASSERT_TRUE((*lb)->setService({a.cookie(), kVip, kVipPort, IPPROTO_UDP}, 3, {{0x7F000001, a.port()}}));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(a.ask('d'), "0");
  // The TCP entry is another one: a TCP connect to the VIP is not balanced.
  EXPECT_EQ(a.ask('u'), "0");
}

TEST_F(SockLbTest, DetachedTheProgramsLeaveSocketsAlone) {
  Node a;
  join(a);
  {
    auto lb = SockLb::attach(cgroup_);
    ASSERT_TRUE(lb) << lb.error().message();
    ASSERT_TRUE((*lb)->setService({a.cookie(), kVip, kVipPort, IPPROTO_TCP}, 1, {{0x7F000001, a.port()}}));
    EXPECT_EQ(a.ask('c'), "0");
  }
  EXPECT_EQ(a.ask('u'), "0");
}

}  // namespace
}  // namespace trellis::servicelb
