#include "common/testing/ping.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/icmp6.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <atomic>
#include <map>
#include <thread>

namespace trellis::testing {

namespace {

uint16_t checksum(const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (len & 1) sum += static_cast<uint32_t>(p[len - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons(static_cast<uint16_t>(~sum));
}

struct Socket {
  int fd = -1;
  ~Socket() {
    if (fd >= 0) close(fd);
  }
};

// One family's pass: requests to every target in `pending`, replies until
// the deadline; answered targets are removed from `pending`.
void pass(int family, std::set<std::string>& pending, std::chrono::milliseconds wait, uint16_t id, uint16_t& seq) {
  if (pending.empty()) return;
  Socket s;
  s.fd = socket(family, SOCK_RAW | SOCK_CLOEXEC, family == AF_INET ? static_cast<int>(IPPROTO_ICMP) : static_cast<int>(IPPROTO_ICMPV6));
  if (s.fd < 0) return;
  std::map<uint16_t, std::string> bySeq;
  for (const std::string& t : pending) {
    uint8_t pkt[64] = {};
    sockaddr_storage to{};
    socklen_t toLen = 0;
    uint16_t n = ++seq;
    if (family == AF_INET) {
      auto* sin = reinterpret_cast<sockaddr_in*>(&to);
      sin->sin_family = AF_INET;
      if (inet_pton(AF_INET, t.c_str(), &sin->sin_addr) != 1) continue;
      toLen = sizeof *sin;
      auto* h = reinterpret_cast<icmphdr*>(pkt);
      h->type = ICMP_ECHO;
      h->un.echo.id = htons(id);
      h->un.echo.sequence = htons(n);
      h->checksum = checksum(pkt, sizeof pkt);
    } else {
      auto* sin6 = reinterpret_cast<sockaddr_in6*>(&to);
      sin6->sin6_family = AF_INET6;
      if (inet_pton(AF_INET6, t.c_str(), &sin6->sin6_addr) != 1) continue;
      toLen = sizeof *sin6;
      auto* h = reinterpret_cast<icmp6_hdr*>(pkt);
      h->icmp6_type = ICMP6_ECHO_REQUEST;
      h->icmp6_id = htons(id);
      h->icmp6_seq = htons(n);  // the kernel fills in the ICMPv6 checksum
    }
    bySeq[n] = t;
    sendto(s.fd, pkt, sizeof pkt, 0, reinterpret_cast<sockaddr*>(&to), toLen);
  }
  auto deadline = std::chrono::steady_clock::now() + wait;
  while (!pending.empty()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{s.fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    uint8_t buf[1500];
    ssize_t n = recv(s.fd, buf, sizeof buf, 0);
    if (n <= 0) continue;
    uint16_t gotId = 0, gotSeq = 0;
    if (family == AF_INET) {
      auto* ip = reinterpret_cast<iphdr*>(buf);
      size_t off = static_cast<size_t>(ip->ihl) * 4;
      if (static_cast<size_t>(n) < off + sizeof(icmphdr)) continue;
      auto* h = reinterpret_cast<icmphdr*>(buf + off);
      if (h->type != ICMP_ECHOREPLY) continue;
      gotId = ntohs(h->un.echo.id);
      gotSeq = ntohs(h->un.echo.sequence);
    } else {
      if (static_cast<size_t>(n) < sizeof(icmp6_hdr)) continue;
      auto* h = reinterpret_cast<icmp6_hdr*>(buf);
      if (h->icmp6_type != ICMP6_ECHO_REPLY) continue;
      gotId = ntohs(h->icmp6_id);
      gotSeq = ntohs(h->icmp6_seq);
    }
    if (gotId != id) continue;
    if (auto it = bySeq.find(gotSeq); it != bySeq.end()) pending.erase(it->second);
  }
}

}  // namespace

std::set<std::string> unreachableFrom(const std::string& netnsPath, const std::vector<std::string>& targets,
                                      std::chrono::milliseconds perAttempt, int attempts) {
  std::set<std::string> v4, v6;
  for (const std::string& t : targets) (t.find(':') == std::string::npos ? v4 : v6).insert(t);
  std::thread worker([&] {
    int ns = open(netnsPath.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
      if (ns >= 0) close(ns);
      return;  // everything stays unreachable
    }
    close(ns);
    static std::atomic<uint16_t> ids{static_cast<uint16_t>(getpid())};
    uint16_t id = ids.fetch_add(1), seq = 0;
    for (int a = 0; a < attempts && (!v4.empty() || !v6.empty()); ++a) {
      pass(AF_INET, v4, perAttempt, id, seq);
      pass(AF_INET6, v6, perAttempt, id, seq);
    }
  });
  worker.join();
  v4.insert(v6.begin(), v6.end());
  return v4;
}

}  // namespace trellis::testing
