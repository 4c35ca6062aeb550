#include "servicelb/dns/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>

#include "common/base/ip.h"
#include "common/base/numbers.h"
#include "servicelb/dns/cache.h"

namespace trellis::dns {

using Clock = std::chrono::steady_clock;

base::Result<Endpoint> parseEndpoint(std::string_view text, uint16_t defaultPort) {
  if (auto ip = base::parseIp(text)) return Endpoint{base::formatIp(*ip), defaultPort};
  auto hp = base::parseHostPort(text);
  if (!hp) return std::move(hp).error();
  auto ip = base::parseIp(hp->host);
  if (!ip) return base::Error(base::ErrorCode::kInvalidArgument, fmt::format("{}: {} is not an IP address", text, hp->host));
  return Endpoint{base::formatIp(*ip), hp->port};
}

std::vector<Endpoint> resolvConfServers(const std::string& path) {
  std::vector<Endpoint> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string key, value;
    if (words >> key >> value && key == "nameserver") {
      if (auto e = parseEndpoint(value, 53)) out.push_back(*e);
    }
  }
  return out;
}

namespace {

constexpr int kBatch = 32;
constexpr size_t kUdpIn = 4096;
constexpr int kMaxAttempts = 3;
enum Kind : uint64_t { kUdp = 1, kTcpListen, kTcpConn, kUpstream, kWake, kTimer };
uint64_t tag(Kind k, uint64_t id) { return uint64_t(k) << 56 | id; }

struct SockAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&ss); }
  bool operator==(const SockAddr& o) const { return len == o.len && memcmp(&ss, &o.ss, len) == 0; }
};

SockAddr toSockAddr(const Endpoint& e) {
  SockAddr a;
  auto ip = base::parseIp(e.host);
  if (ip && ip->v6) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(e.port);
    inet_pton(AF_INET6, e.host.c_str(), &s6->sin6_addr);
    a.len = sizeof(sockaddr_in6);
  } else {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&a.ss);
    s4->sin_family = AF_INET;
    s4->sin_port = htons(e.port);
    inet_pton(AF_INET, e.host.c_str(), &s4->sin_addr);
    a.len = sizeof(sockaddr_in);
  }
  return a;
}

uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

// Query types and rcodes counted by name; the rest as "other".
constexpr uint16_t kCountedTypes[] = {kA, kAAAA, kSRV, kPTR, kTXT, kCNAME, kSOA, kNS, kANY};
constexpr const char* kTypeNames[] = {"A", "AAAA", "SRV", "PTR", "TXT", "CNAME", "SOA", "NS", "ANY", "other"};
constexpr const char* kRcodeNames[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other"};
constexpr size_t kTypeSlots = std::size(kTypeNames), kRcodeSlots = std::size(kRcodeNames);

struct Stats {
  explicit Stats(base::Registry& r)
      : cacheHits(r.counter("trellis_dns_cache_hits_total", "Answers served from the forwarding cache")),
        cacheMisses(r.counter("trellis_dns_cache_misses_total", "Forwardable queries the cache did not hold")),
        forwarded(r.counter("trellis_dns_forwarded_total", "Queries sent to an upstream resolver")),
        forwardTimeouts(r.counter("trellis_dns_forward_timeouts_total", "Upstream attempts that got no answer in time")),
        truncated(r.counter("trellis_dns_truncated_total", "UDP answers sent with TC (too large for the client)")),
        dropped(r.counter("trellis_dns_dropped_total", "Packets dropped unanswered (not queries, too short)")),
        tcpConnections(r.counter("trellis_dns_tcp_connections_total", "TCP connections accepted")),
        tcpRefused(r.counter("trellis_dns_tcp_refused_total", "TCP connections closed at once (--max-tcp-connections)")),
        latency(r.histogram("trellis_dns_request_duration_seconds",
                            "Time from a query's arrival to its answer's sending",
                            {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5})) {
    for (size_t t = 0; t < kTypeSlots; ++t) {
      for (size_t c = 0; c < kRcodeSlots; ++c) {
        queries[t][c] = &r.counter("trellis_dns_responses_total", "Answers sent, by query type and rcode",
                                   {{"type", kTypeNames[t]}, {"rcode", kRcodeNames[c]}});
      }
    }
  }
  void count(uint16_t qtype, uint16_t rcode) {
    size_t t = 0;
    while (t < std::size(kCountedTypes) && kCountedTypes[t] != qtype) ++t;
    queries[t][std::min<size_t>(rcode, kRcodeSlots - 1)]->inc();
  }
  base::Counter& cacheHits;
  base::Counter& cacheMisses;
  base::Counter& forwarded;
  base::Counter& forwardTimeouts;
  base::Counter& truncated;
  base::Counter& dropped;
  base::Counter& tcpConnections;
  base::Counter& tcpRefused;
  base::Histogram& latency;
  base::Counter* queries[kTypeSlots][kRcodeSlots];
};

// A response too large for the client: header, question, TC (and OPT).
size_t truncated(const Query& q, uint16_t rcode, uint8_t* buf, size_t cap) {
  Writer w(buf, cap);
  w.startResponse(q, rcode, false);
  w.setRecursionAvailable();
  return w.finish(q, 0);  // a zero limit drops every record and sets TC
}

int listenSocket(int type, const SockAddr& addr) {
  int fd = socket(addr.ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (addr.ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, addr.sa(), addr.len) != 0 || (type == SOCK_STREAM && listen(fd, 1024) != 0)) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

uint16_t boundPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

// One DNS-over-TCP exchange with a deadline (blocking; helper threads only).
std::string tcpExchange(const SockAddr& server, const std::string& packet, Clock::time_point deadline) {
  int fd = socket(server.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return {};
  auto wait = [&](short events) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    return poll(&p, 1, static_cast<int>(left)) == 1 && !(p.revents & (POLLERR | POLLNVAL));
  };
  std::string out;
  std::string msg;
  msg += static_cast<char>(packet.size() >> 8);
  msg += static_cast<char>(packet.size());
  msg += packet;
  if (connect(fd, server.sa(), server.len) != 0 && errno != EINPROGRESS) {
    close(fd);
    return {};
  }
  size_t sent = 0;
  while (sent < msg.size() && wait(POLLOUT)) {
    ssize_t n = send(fd, msg.data() + sent, msg.size() - sent, MSG_NOSIGNAL);
    if (n <= 0 && errno != EAGAIN) break;
    if (n > 0) sent += static_cast<size_t>(n);
  }
  std::string in;
  char buf[16384];
  while (sent == msg.size() && wait(POLLIN)) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EAGAIN)) break;
    if (n > 0) in.append(buf, static_cast<size_t>(n));
    if (in.size() >= 2) {
      size_t want = size_t(uint8_t(in[0])) << 8 | uint8_t(in[1]);
      if (in.size() >= 2 + want) {
        out = in.substr(2, want);
        break;
      }
    }
  }
  close(fd);
  return out;
}

struct Completion {
  uint64_t conn;
  Query q;
  std::string question;
  std::string response;  // empty: every upstream failed
};

// Where helper threads hand their answers back to a worker.
struct Mailbox {
  std::mutex mu;
  std::vector<Completion> items;
  int wakeFd = -1;  // -1 once the worker is gone
  void post(Completion c) {
    std::lock_guard g(mu);
    if (wakeFd < 0) return;
    items.push_back(std::move(c));
    uint64_t one = 1;
    (void)!write(wakeFd, &one, sizeof one);
  }
};

}  // namespace

struct Worker;

struct Server::Impl {
  Impl(ServerConfig c, const Zone& z, base::Registry& m)
      : config(std::move(c)), zone(z), stats(m), cache(config.cacheSize, config.cacheMaxTtl, config.cacheMaxNegativeTtl) {
    for (auto& e : config.upstreams) upstreams.push_back(toSockAddr(e));
    for (auto& s : config.stubDomains) {
      std::string wire;
      if (!toWire(s.domain, wire)) continue;
      std::vector<SockAddr> servers;
      for (auto& e : s.servers) servers.push_back(toSockAddr(e));
      stubs.emplace_back(std::move(wire), std::move(servers));
    }
  }
  // The servers a name outside the zone goes to: its longest stub domain's, or the upstreams.
  const std::vector<SockAddr>& serversFor(std::string_view name) const {
    const std::vector<SockAddr>* best = &upstreams;
    size_t bestLen = 0;
    for (auto& [wire, servers] : stubs) {
      if (wire.size() > bestLen && isWithin(name, wire)) {
        best = &servers;
        bestLen = wire.size();
      }
    }
    return *best;
  }

  ServerConfig config;
  const Zone& zone;
  Stats stats;
  Cache cache;
  std::vector<SockAddr> upstreams;
  std::vector<std::pair<std::string, std::vector<SockAddr>>> stubs;
  std::vector<uint16_t> ports;
  std::vector<std::unique_ptr<Worker>> workers;
  std::atomic<int> tcpConnections{0}, forwards{0};
  std::atomic<bool> stopping{false};
};

namespace {

struct Client {
  bool tcp = false;
  uint64_t conn = 0;  // TCP
  int fd = -1;        // UDP: the listener it came to
  SockAddr addr;      // UDP
};

}  // namespace

struct Worker {
  Worker(Server::Impl& s) : s(s), mailbox(std::make_shared<Mailbox>()) {
    uint64_t seed = 0;
    (void)!getrandom(&seed, sizeof seed, 0);
    rng = seed | 1;
  }
  ~Worker() {
    {
      std::lock_guard g(mailbox->mu);
      mailbox->wakeFd = -1;
    }
    for (auto& [id, c] : conns) close(c.fd);
    for (int fd : owned) close(fd);
  }

  bool setUp(const std::vector<int>& udpFds, const std::vector<int>& tcpFds) {
    epfd = epoll_create1(EPOLL_CLOEXEC);
    wakeFd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    timerFd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    owned = {epfd, wakeFd, timerFd};
    if (epfd < 0 || wakeFd < 0 || timerFd < 0) return false;
    mailbox->wakeFd = wakeFd;
    itimerspec its{{0, 100'000'000}, {0, 100'000'000}};
    timerfd_settime(timerFd, 0, &its, nullptr);
    watch(wakeFd, EPOLLIN, tag(kWake, 0));
    watch(timerFd, EPOLLIN, tag(kTimer, 0));
    for (size_t i = 0; i < udpFds.size(); ++i) {
      udp.push_back(udpFds[i]);
      owned.push_back(udpFds[i]);
      watch(udpFds[i], EPOLLIN, tag(kUdp, i));
    }
    for (size_t i = 0; i < tcpFds.size(); ++i) {
      tcp.push_back(tcpFds[i]);
      owned.push_back(tcpFds[i]);
      watch(tcpFds[i], EPOLLIN, tag(kTcpListen, i));
    }
    for (auto [family, fd] : {std::pair{AF_INET, &up4}, std::pair{AF_INET6, &up6}}) {
      *fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (*fd < 0) continue;  // no IPv6 here: IPv4 upstreams still work
      owned.push_back(*fd);
      watch(*fd, EPOLLIN, tag(kUpstream, family));
    }
    return true;
  }

  void watch(int fd, uint32_t events, uint64_t data) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = data;
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
  }

  void run() {
    epoll_event evs[64];
    while (!s.stopping.load(std::memory_order_relaxed)) {
      int n = epoll_wait(epfd, evs, 64, -1);
      for (int i = 0; i < n; ++i) {
        uint64_t data = evs[i].data.u64;
        uint64_t id = data & ((uint64_t(1) << 56) - 1);
        switch (static_cast<Kind>(data >> 56)) {
          case kUdp: readUdp(udp[id]); break;
          case kTcpListen: accept(tcp[id]); break;
          case kTcpConn: connEvent(id, evs[i].events); break;
          case kUpstream: readUpstream(id == AF_INET ? up4 : up6); break;
          case kWake: wake(); break;
          case kTimer: tick(); break;
        }
      }
    }
  }

  // ---- queries

  // Answers one query into out (returns its length), or hands it upstream (0).
  size_t handle(const uint8_t* data, size_t len, const Client& client, uint8_t* out, size_t cap) {
    Query q;
    Parsed parsed = parseQuery(data, len, q);
    Writer w(out, cap);
    size_t limit = client.tcp ? kMaxMessage : kMaxUdpSize;
    switch (parsed) {
      case Parsed::kDrop:
        s.stats.dropped.inc();
        return 0;
      case Parsed::kFormErr:
        if (q.question.empty()) {
          w.startBare(q.id, q.flags, kFormErr);
          q.edns = false;
        } else {
          w.startResponse(q, kFormErr, false);
        }
        break;
      case Parsed::kNotImp:
        w.startBare(q.id, q.flags, kNotImp);
        break;
      case Parsed::kBadVers:
        w.startResponse(q, kBadVers, false);
        break;
      case Parsed::kOk: {
        if (!client.tcp) limit = q.udpLimit();
        if (s.zone.answer(q, w) == Zone::kAnswered) break;
        auto now = Clock::now();
        if (size_t n = s.cache.lookup(q, out, cap, now)) {
          s.stats.cacheHits.inc();
          uint16_t rcode = out[3] & 0xF;
          if (n > limit) {
            s.stats.truncated.inc();
            n = truncated(q, rcode, out, cap);
          }
          s.stats.count(q.qtype, rcode);
          return n;
        }
        s.stats.cacheMisses.inc();
        uint16_t rcode = forward(q, data, len, client, limit);
        if (rcode == kNoError) return 0;
        w.startResponse(q, rcode, false);
        break;
      }
    }
    w.setRecursionAvailable();
    size_t n = w.finish(q, limit);
    if (n > kHeaderSize && (out[2] & 0x02)) s.stats.truncated.inc();
    s.stats.count(q.qtype, parsed == Parsed::kBadVers ? kRcodeSlots : out[3] & 0xF);
    return n;
  }

  void readUdp(int fd) {
    for (int round = 0; round < 8; ++round) {
      mmsghdr msgs[kBatch];
      iovec iovs[kBatch];
      for (int i = 0; i < kBatch; ++i) {
        iovs[i] = {inBufs[i], kUdpIn};
        msgs[i] = {};
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &from[i].ss;
        msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
      }
      int n = recvmmsg(fd, msgs, kBatch, MSG_DONTWAIT, nullptr);
      if (n <= 0) return;
      auto started = Clock::now();
      mmsghdr outs[kBatch];
      iovec outIovs[kBatch];
      int m = 0;
      for (int i = 0; i < n; ++i) {
        Client c;
        c.fd = fd;
        c.addr = from[i];
        c.addr.len = msgs[i].msg_hdr.msg_namelen;
        size_t len = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? 0 : msgs[i].msg_len;  // oversize: not a query we take
        if (len == 0) {
          s.stats.dropped.inc();
          continue;
        }
        size_t r = handle(inBufs[i], len, c, outBufs[m], sizeof outBufs[m]);
        if (r == 0) continue;
        outIovs[m] = {outBufs[m], r};
        outs[m] = {};
        outs[m].msg_hdr.msg_iov = &outIovs[m];
        outs[m].msg_hdr.msg_iovlen = 1;
        outs[m].msg_hdr.msg_name = &from[i].ss;
        outs[m].msg_hdr.msg_namelen = c.addr.len;
        ++m;
      }
      for (int sent = 0; sent < m;) {
        int k = sendmmsg(fd, outs + sent, static_cast<unsigned>(m - sent), MSG_DONTWAIT);
        if (k <= 0) break;  // a full socket buffer: the client retries
        sent += k;
      }
      double took = std::chrono::duration<double>(Clock::now() - started).count();
      for (int i = 0; i < m; ++i) s.stats.latency.observe(took);
      if (n < kBatch) return;
    }
  }

  // ---- forwarding

  struct Pending {
    Query q;
    std::string question;  // the client's (q.question is rebound to it when used)
    std::string packet;    // as sent upstream (our id)
    Client client;
    size_t limit = 0;
    const std::vector<SockAddr>* servers = nullptr;
    int attempt = 0;
    Clock::time_point deadline, started;
  };

  uint16_t newId() {
    for (;;) {
      rng ^= rng << 13;
      rng ^= rng >> 7;
      rng ^= rng << 17;
      auto id = static_cast<uint16_t>(rng >> 24);
      if (!pending.count(id)) return id;
    }
  }

  bool sendUpstream(Pending& p) {
    const SockAddr& to = (*p.servers)[static_cast<size_t>(p.attempt)];
    int fd = to.ss.ss_family == AF_INET6 ? up6 : up4;
    s.stats.forwarded.inc();
    p.deadline = Clock::now() + s.config.forwardTimeout;
    return fd >= 0 && sendto(fd, p.packet.data(), p.packet.size(), MSG_DONTWAIT, to.sa(), to.len) >= 0;
  }

  // kNoError: on its way (the answer comes later); else the rcode to answer now.
  uint16_t forward(const Query& q, const uint8_t* data, size_t len, const Client& client, size_t limit) {
    const auto& servers = s.serversFor(q.lowerName());
    if (servers.empty()) return kServFail;
    if (s.forwards.load(std::memory_order_relaxed) >= s.config.maxConcurrentForwards) return kRefused;
    s.forwards.fetch_add(1, std::memory_order_relaxed);
    if (client.tcp) {
      // Over TCP, as the client asked: a helper thread does the exchange.
      ++conns[client.conn].waiting;
      Completion c{client.conn, q, std::string(q.question), {}};
      std::string packet(reinterpret_cast<const char*>(data), len);
      auto deadline = Clock::now() + s.config.forwardTimeout * kMaxAttempts;
      std::thread([mailbox = mailbox, servers, packet = std::move(packet), c = std::move(c), deadline]() mutable {
        for (size_t i = 0; i < servers.size() && i < size_t(kMaxAttempts) && c.response.empty(); ++i) {
          std::string r = tcpExchange(servers[i], packet, deadline);
          ResponseInfo info;
          if (scanResponse(reinterpret_cast<const uint8_t*>(r.data()), r.size(), c.question, info) &&
              info.id == c.q.id)
            c.response = std::move(r);
        }
        mailbox->post(std::move(c));
      }).detach();
      s.stats.forwarded.inc();
      return kNoError;
    }
    uint16_t id = newId();
    Pending& p = pending[id];
    p.q = q;
    p.question.assign(q.question);
    p.packet.assign(reinterpret_cast<const char*>(data), len);
    p.packet[0] = static_cast<char>(id >> 8);
    p.packet[1] = static_cast<char>(id);
    p.client = client;
    p.limit = limit;
    p.servers = &servers;
    p.started = Clock::now();
    sendUpstream(p);
    return kNoError;
  }

  void readUpstream(int fd) {
    for (int i = 0; i < 64; ++i) {
      SockAddr from;
      from.len = sizeof from.ss;
      ssize_t n = recvfrom(fd, bigBuf, sizeof bigBuf, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from.ss), &from.len);
      if (n < 0) return;
      if (n < static_cast<ssize_t>(kHeaderSize)) continue;
      auto it = pending.find(get16(bigBuf));
      if (it == pending.end()) continue;
      Pending& p = it->second;
      if (!(from == (*p.servers)[static_cast<size_t>(p.attempt)])) continue;  // not from whom we asked
      ResponseInfo info;
      if (!scanResponse(bigBuf, static_cast<size_t>(n), p.question, info)) continue;
      p.q.question = p.question;
      auto len = static_cast<size_t>(n);
      s.cache.store(p.q, bigBuf, len, info, Clock::now());
      bigBuf[0] = static_cast<uint8_t>(p.q.id >> 8);
      bigBuf[1] = static_cast<uint8_t>(p.q.id);
      memcpy(bigBuf + kHeaderSize, p.question.data(), p.question.size());
      if (len > p.limit) {
        s.stats.truncated.inc();
        len = truncated(p.q, info.rcode, bigBuf, sizeof bigBuf);
      }
      sendto(p.client.fd, bigBuf, len, MSG_DONTWAIT, p.client.addr.sa(), p.client.addr.len);
      s.stats.count(p.q.qtype, info.rcode);
      s.stats.latency.observe(std::chrono::duration<double>(Clock::now() - p.started).count());
      pending.erase(it);
      s.forwards.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  void answerServFail(Pending& p) {
    p.q.question = p.question;
    Writer w(bigBuf, sizeof bigBuf);
    w.startResponse(p.q, kServFail, false);
    w.setRecursionAvailable();
    size_t n = w.finish(p.q, p.limit);
    sendto(p.client.fd, bigBuf, n, MSG_DONTWAIT, p.client.addr.sa(), p.client.addr.len);
    s.stats.count(p.q.qtype, kServFail);
  }

  // ---- TCP

  struct Conn {
    int fd = -1;
    std::string in, out;
    bool eof = false, wantOut = false;
    int waiting = 0;  // queries with helper threads
    Clock::time_point active;
  };

  void accept(int lfd) {
    for (;;) {
      int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      if (s.tcpConnections.load(std::memory_order_relaxed) >= s.config.maxTcpConnections) {
        s.stats.tcpRefused.inc();
        close(fd);
        continue;
      }
      s.tcpConnections.fetch_add(1, std::memory_order_relaxed);
      s.stats.tcpConnections.inc();
      uint64_t id = nextConn++;
      Conn& c = conns[id];
      c.fd = fd;
      c.active = Clock::now();
      watch(fd, EPOLLIN | EPOLLRDHUP, tag(kTcpConn, id));
    }
  }

  void closeConn(uint64_t id) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    close(it->second.fd);
    conns.erase(it);
    s.tcpConnections.fetch_sub(1, std::memory_order_relaxed);
  }

  void flush(uint64_t id, Conn& c) {
    while (!c.out.empty()) {
      ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno != EAGAIN) {
          c.out.clear();
          c.eof = true;
        }
        break;
      }
      c.out.erase(0, static_cast<size_t>(n));
    }
    bool want = !c.out.empty();
    if (want != c.wantOut) {
      c.wantOut = want;
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP | (want ? uint32_t(EPOLLOUT) : 0u);
      ev.data.u64 = tag(kTcpConn, id);
      epoll_ctl(epfd, EPOLL_CTL_MOD, c.fd, &ev);
    }
  }

  void appendMessage(Conn& c, const uint8_t* msg, size_t n) {
    c.out += static_cast<char>(n >> 8);
    c.out += static_cast<char>(n);
    c.out.append(reinterpret_cast<const char*>(msg), n);
  }

  void connEvent(uint64_t id, uint32_t events) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    Conn& c = it->second;
    c.active = Clock::now();
    if (events & EPOLLIN) {
      char buf[16384];
      for (;;) {
        ssize_t n = read(c.fd, buf, sizeof buf);
        if (n > 0) {
          c.in.append(buf, static_cast<size_t>(n));
          if (c.in.size() > 2 * (kMaxMessage + 2)) {  // a client that sends without reading answers
            closeConn(id);
            return;
          }
          continue;
        }
        if (n == 0 || errno != EAGAIN) c.eof = true;
        break;
      }
      size_t at = 0;
      while (c.in.size() - at >= 2) {
        size_t len = size_t(uint8_t(c.in[at])) << 8 | uint8_t(c.in[at + 1]);
        if (c.in.size() - at - 2 < len) break;
        Client client;
        client.tcp = true;
        client.conn = id;
        size_t r = handle(reinterpret_cast<const uint8_t*>(c.in.data() + at + 2), len, client, bigBuf, sizeof bigBuf);
        if (r > 0) appendMessage(c, bigBuf, r);
        at += 2 + len;
      }
      c.in.erase(0, at);
    }
    if (events & (EPOLLERR | EPOLLHUP)) c.eof = true;
    flush(id, c);
    if (c.eof && (c.out.empty() || (events & (EPOLLERR | EPOLLHUP))) && c.waiting == 0) closeConn(id);
  }

  void wake() {
    uint64_t v;
    (void)!read(wakeFd, &v, sizeof v);
    std::vector<Completion> items;
    {
      std::lock_guard g(mailbox->mu);
      items.swap(mailbox->items);
    }
    for (Completion& done : items) {
      s.forwards.fetch_sub(1, std::memory_order_relaxed);
      done.q.question = done.question;
      size_t n = 0;
      if (!done.response.empty()) {
        ResponseInfo info;
        auto* data = reinterpret_cast<uint8_t*>(done.response.data());
        if (scanResponse(data, done.response.size(), done.question, info)) {
          s.cache.store(done.q, data, done.response.size(), info, Clock::now());
          memcpy(bigBuf, data, done.response.size());
          memcpy(bigBuf + kHeaderSize, done.question.data(), done.question.size());
          n = done.response.size();
          s.stats.count(done.q.qtype, info.rcode);
        }
      }
      if (n == 0) {
        Writer w(bigBuf, sizeof bigBuf);
        w.startResponse(done.q, kServFail, false);
        w.setRecursionAvailable();
        n = w.finish(done.q, kMaxMessage);
        s.stats.count(done.q.qtype, kServFail);
      }
      auto it = conns.find(done.conn);
      if (it == conns.end()) continue;
      Conn& c = it->second;
      --c.waiting;
      appendMessage(c, bigBuf, n);
      flush(done.conn, c);
      if (c.eof && c.out.empty() && c.waiting == 0) closeConn(done.conn);
    }
  }

  void tick() {
    uint64_t v;
    (void)!read(timerFd, &v, sizeof v);
    auto now = Clock::now();
    for (auto it = pending.begin(); it != pending.end();) {
      Pending& p = it->second;
      if (now < p.deadline) {
        ++it;
        continue;
      }
      s.stats.forwardTimeouts.inc();
      if (++p.attempt < static_cast<int>(std::min<size_t>(p.servers->size(), kMaxAttempts))) {
        sendUpstream(p);
        ++it;
        continue;
      }
      answerServFail(p);
      it = pending.erase(it);
      s.forwards.fetch_sub(1, std::memory_order_relaxed);
    }
    std::vector<uint64_t> idle;
    for (auto& [id, c] : conns) {
      if (c.waiting == 0 && now - c.active > s.config.tcpIdleTimeout) idle.push_back(id);
    }
    for (uint64_t id : idle) closeConn(id);
  }

  Server::Impl& s;
  std::shared_ptr<Mailbox> mailbox;
  int epfd = -1, wakeFd = -1, timerFd = -1, up4 = -1, up6 = -1;
  std::vector<int> udp, tcp, owned;
  std::unordered_map<uint16_t, Pending> pending;
  std::unordered_map<uint64_t, Conn> conns;
  uint64_t nextConn = 1;
  uint64_t rng = 1;
  std::thread thread;
  uint8_t inBufs[kBatch][kUdpIn];
  uint8_t outBufs[kBatch][kUdpIn];
  SockAddr from[kBatch];
  uint8_t bigBuf[kMaxMessage];
};

Server::Server(ServerConfig config, const Zone& zone, base::Registry& metrics)
    : impl_(std::make_unique<Impl>(std::move(config), zone, metrics)) {}

Server::~Server() { stop(); }

base::Result<void> Server::start() {
  Impl& s = *impl_;
  int threads = std::max(1, s.config.threads);
  std::vector<std::vector<int>> udpFds(static_cast<size_t>(threads)), tcpFds(static_cast<size_t>(threads));
  auto closeAll = [&] {
    for (auto& v : udpFds)
      for (int fd : v) close(fd);
    for (auto& v : tcpFds)
      for (int fd : v) close(fd);
  };
  for (const Endpoint& e : s.config.listen) {
    SockAddr addr = toSockAddr(e);
    uint16_t port = 0;
    // Port 0: the port UDP got, for TCP too (tried again if TCP finds it taken).
    for (int tries = 0; tries < 20 && port == 0; ++tries) {
      int u = listenSocket(SOCK_DGRAM, addr);
      if (u < 0) break;
      uint16_t p = boundPort(u);
      SockAddr same = toSockAddr({e.host, p});
      int t = listenSocket(SOCK_STREAM, same);
      if (t < 0) {
        close(u);
        if (e.port != 0) break;
        continue;
      }
      udpFds[0].push_back(u);
      tcpFds[0].push_back(t);
      port = p;
    }
    if (port == 0) {
      int err = errno;
      closeAll();
      return base::Error::fromErrno(err, fmt::format("binding {}:{} (UDP and TCP)", e.host, e.port));
    }
    SockAddr same = toSockAddr({e.host, port});
    for (size_t t = 1; t < static_cast<size_t>(threads); ++t) {
      int u = listenSocket(SOCK_DGRAM, same), l = listenSocket(SOCK_STREAM, same);
      if (u < 0 || l < 0) {
        int err = errno;
        if (u >= 0) close(u);
        if (l >= 0) close(l);
        closeAll();
        return base::Error::fromErrno(err, fmt::format("binding {}:{} again (SO_REUSEPORT)", e.host, port));
      }
      udpFds[t].push_back(u);
      tcpFds[t].push_back(l);
    }
    s.ports.push_back(port);
  }
  for (size_t t = 0; t < static_cast<size_t>(threads); ++t) {
    auto w = std::make_unique<Worker>(s);
    if (!w->setUp(udpFds[t], tcpFds[t])) return base::Error::fromErrno(errno, "creating the event loop");
    s.workers.push_back(std::move(w));
  }
  for (auto& w : s.workers) {
    Worker* raw = w.get();
    raw->thread = std::thread([raw] { raw->run(); });
  }
  return {};
}

std::vector<uint16_t> Server::ports() const { return impl_->ports; }

void Server::stop() {
  if (!impl_) return;
  impl_->stopping = true;
  for (auto& w : impl_->workers) {
    uint64_t one = 1;
    (void)!write(w->wakeFd, &one, sizeof one);
  }
  for (auto& w : impl_->workers) {
    if (w->thread.joinable()) w->thread.join();
  }
  impl_->workers.clear();
}

}  // namespace trellis::dns
