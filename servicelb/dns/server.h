// The DNS server: UDP and TCP listeners on every --listen address, one event
// loop per thread (SO_REUSEPORT sockets, recvmmsg/sendmmsg batches), answers
// from the Zone, everything else forwarded to upstream resolvers through the
// cache.
//
// Limits, per query and per client: one question; UDP answers no larger
// than the client's EDNS buffer (512 without EDNS, 1232 at most) — larger
// ones go out truncated (TC) for the client to ask again over TCP; TCP
// messages up to 65,535 bytes, connections closed after --tcp-idle-timeout
// idle, at most --max-tcp-connections of them; at most
// --max-concurrent-forwards queries waiting on upstreams (more: REFUSED, as
// CoreDNS's forward plugin does); an upstream that does not answer within
// --forward-timeout is skipped for the next, and after every one was tried
// the client gets SERVFAIL.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/base/metrics.h"
#include "common/base/result.h"
#include "servicelb/dns/zone.h"

namespace trellis::dns {

struct Endpoint {
  std::string host;  // an IP address
  uint16_t port = 53;
};
// "ADDR", "ADDR:PORT", "[V6]:PORT".
base::Result<Endpoint> parseEndpoint(std::string_view text, uint16_t defaultPort);
// The nameservers of a resolv.conf (port 53).
std::vector<Endpoint> resolvConfServers(const std::string& path);

struct StubDomain {
  std::string domain;  // dotted
  std::vector<Endpoint> servers;
};

struct ServerConfig {
  std::vector<Endpoint> listen;  // port 0: pick one (the same for UDP and TCP)
  std::vector<Endpoint> upstreams;
  std::vector<StubDomain> stubDomains;
  int threads = 1;
  size_t cacheSize = 10000;
  uint32_t cacheMaxTtl = 3600, cacheMaxNegativeTtl = 1800;
  int maxTcpConnections = 1000;
  std::chrono::milliseconds tcpIdleTimeout{10000};
  std::chrono::milliseconds forwardTimeout{2000};
  int maxConcurrentForwards = 1000;
};

class Server {
 public:
  Server(ServerConfig config, const Zone& zone, base::Registry& metrics);
  ~Server();
  // Binds every listener and starts the threads.
  base::Result<void> start();
  // The bound ports, one per --listen entry.
  std::vector<uint16_t> ports() const;
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::dns
