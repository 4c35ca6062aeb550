// trellis-dns: cluster DNS (the Kubernetes DNS-Based Service Discovery
// specification) — Services and pods by name, everything else forwarded.

#include <fmt/format.h>

#include "common/base/flags.h"
#include "common/base/log.h"
#include "common/base/signals.h"
#include "common/http/status_server.h"
#include "common/kube/client.h"
#include "common/kube/config.h"
#include "servicelb/dns/server.h"
#include "servicelb/dns/watch.h"
#include "servicelb/dns/zone.h"

using namespace trellis;

namespace {

// "--flag value: why" and exit code 2.
int badFlag(base::Logger& log, std::string_view flag, std::string_view why) {
  log.error(std::string(flag), {{"error", std::string(why)}});
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  base::blockShutdownSignals();
  CLI::App app{"trellis-dns: cluster DNS — <service>.<namespace>.svc.<zone> and the rest of the Kubernetes DNS "
               "specification from Services and EndpointSlices; other names forwarded to upstream resolvers"};
  base::CommonFlags common;
  base::addCommonFlags(app, common);
  std::string kubeconfig, domain = "cluster.local", resolvConf = "/etc/resolv.conf", podRecords = "insecure";
  std::string metricsAddress = "127.0.0.1";
  std::vector<std::string> listen{"0.0.0.0:53"}, upstreams, stubs;
  int metricsPort = 9153, threads = 1, ttl = 5, maxTcp = 1000, maxForwards = 1000;
  int cacheSize = 10000, cacheMaxTtl = 3600, cacheMaxNegativeTtl = 1800;
  int tcpIdleMs = 10000, forwardTimeoutMs = 2000;
  app.add_option("--kubeconfig", kubeconfig, "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)");
  app.add_option("--listen", listen, "ADDR:PORT to answer on, UDP and TCP (repeatable; port 0 picks one and logs it)")
      ->capture_default_str();
  app.add_option("--cluster-domain", domain, "the cluster zone")->capture_default_str();
  app.add_option("--upstream", upstreams,
                 "ADDR[:PORT] of a resolver for names outside the zone (repeatable; default: --resolv-conf's "
                 "nameservers)");
  app.add_option("--resolv-conf", resolvConf, "where the node's resolvers are listed")->capture_default_str();
  app.add_option("--stub-domain", stubs,
                 "DOMAIN=ADDR[:PORT][,ADDR[:PORT]...]: names under DOMAIN go to these servers (repeatable)");
  app.add_option("--pod-records", podRecords,
                 "<a-b-c-d>.<ns>.pod.<zone>: insecure (any address), verified (a pod in <ns> has it; watches "
                 "Pods) or disabled")
      ->capture_default_str();
  app.add_option("--ttl", ttl, "TTL of the zone's records, and its SOA minimum (negative answers)")->capture_default_str();
  app.add_option("--threads", threads, "event loops (SO_REUSEPORT sockets each)")->capture_default_str();
  app.add_option("--cache-size", cacheSize, "forwarded answers kept (0: no cache)")->capture_default_str();
  app.add_option("--cache-max-ttl", cacheMaxTtl, "longest a forwarded answer is kept, seconds")->capture_default_str();
  app.add_option("--cache-max-negative-ttl", cacheMaxNegativeTtl, "longest a forwarded NXDOMAIN/NODATA is kept, seconds")
      ->capture_default_str();
  app.add_option("--max-tcp-connections", maxTcp, "TCP connections open at once; more are closed at once")
      ->capture_default_str();
  app.add_option("--tcp-idle-timeout-ms", tcpIdleMs, "a TCP connection with nothing asked is closed after this")
      ->capture_default_str();
  app.add_option("--forward-timeout-ms", forwardTimeoutMs, "wait for one upstream before the next is asked")
      ->capture_default_str();
  app.add_option("--max-concurrent-forwards", maxForwards, "queries waiting on upstreams at once; more get REFUSED")
      ->capture_default_str();
  app.add_option("--metrics-port", metricsPort, "port of /metrics, /healthz and /readyz (0: pick one and log it)")
      ->capture_default_str();
  app.add_option("--metrics-address", metricsAddress, "address /metrics listens on")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  base::applyCommonFlags(common);
  base::Logger log("dns");

  dns::ZoneConfig zc;
  std::string wire;
  if (!dns::toWire(domain, wire) || wire.size() <= 1) return badFlag(log, "--cluster-domain", domain + " is not a domain name");
  zc.domain = dns::toDotted(wire);
  zc.domain.pop_back();
  if (ttl < 0 || ttl > 86400) return badFlag(log, "--ttl", fmt::format("{} is not in 0..86400", ttl));
  zc.ttl = static_cast<uint32_t>(ttl);
  if (podRecords == "insecure") {
    zc.pods = dns::PodRecords::kInsecure;
  } else if (podRecords == "verified") {
    zc.pods = dns::PodRecords::kVerified;
  } else if (podRecords == "disabled") {
    zc.pods = dns::PodRecords::kDisabled;
  } else {
    return badFlag(log, "--pod-records", podRecords + ": one of insecure, verified, disabled");
  }
  for (auto [flag, v, lo, hi] : {std::tuple{"--threads", threads, 1, 256}, std::tuple{"--metrics-port", metricsPort, 0, 65535},
                                 std::tuple{"--cache-size", cacheSize, 0, 10'000'000},
                                 std::tuple{"--cache-max-ttl", cacheMaxTtl, 0, 604800},
                                 std::tuple{"--cache-max-negative-ttl", cacheMaxNegativeTtl, 0, 604800},
                                 std::tuple{"--max-tcp-connections", maxTcp, 1, 1'000'000},
                                 std::tuple{"--tcp-idle-timeout-ms", tcpIdleMs, 100, 3'600'000},
                                 std::tuple{"--forward-timeout-ms", forwardTimeoutMs, 10, 60'000},
                                 std::tuple{"--max-concurrent-forwards", maxForwards, 1, 1'000'000}}) {
    if (v < lo || v > hi) return badFlag(log, flag, fmt::format("{} is not in {}..{}", v, lo, hi));
  }

  dns::ServerConfig sc;
  for (const std::string& l : listen) {
    auto e = dns::parseEndpoint(l, 53);
    if (!e) return badFlag(log, "--listen", e.error().message());
    sc.listen.push_back(*e);
  }
  for (const std::string& u : upstreams) {
    auto e = dns::parseEndpoint(u, 53);
    if (!e) return badFlag(log, "--upstream", e.error().message());
    sc.upstreams.push_back(*e);
  }
  if (upstreams.empty()) sc.upstreams = dns::resolvConfServers(resolvConf);
  for (const std::string& s : stubs) {
    size_t eq = s.find('=');
    dns::StubDomain stub;
    stub.domain = s.substr(0, eq);
    if (eq == std::string::npos || !dns::toWire(stub.domain, wire) || wire.size() <= 1) {
      return badFlag(log, "--stub-domain", s + ": DOMAIN=ADDR[:PORT][,...]");
    }
    std::string_view rest = std::string_view(s).substr(eq + 1);
    while (!rest.empty()) {
      size_t comma = rest.find(',');
      auto e = dns::parseEndpoint(rest.substr(0, comma), 53);
      if (!e) return badFlag(log, "--stub-domain", e.error().message());
      stub.servers.push_back(*e);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    }
    if (stub.servers.empty()) return badFlag(log, "--stub-domain", s + ": no servers");
    sc.stubDomains.push_back(std::move(stub));
  }
  // A resolver that is this server would send every forwarded query round in a loop.
  for (const auto& u : sc.upstreams) {
    for (const auto& l : sc.listen) {
      if (u.port == l.port && (u.host == l.host || l.host == "0.0.0.0" || l.host == "::") &&
          (u.host.rfind("127.", 0) == 0 || u.host == "::1" || u.host == l.host)) {
        return badFlag(log, "--upstream", fmt::format("{}:{} is this server (a forwarding loop)", u.host, u.port));
      }
    }
  }
  sc.threads = threads;
  sc.cacheSize = static_cast<size_t>(cacheSize);
  sc.cacheMaxTtl = static_cast<uint32_t>(cacheMaxTtl);
  sc.cacheMaxNegativeTtl = static_cast<uint32_t>(cacheMaxNegativeTtl);
  sc.maxTcpConnections = maxTcp;
  sc.tcpIdleTimeout = std::chrono::milliseconds(tcpIdleMs);
  sc.forwardTimeout = std::chrono::milliseconds(forwardTimeoutMs);
  sc.maxConcurrentForwards = maxForwards;

  std::string apiServer;
  auto client =
      kube::clientFromKubeconfigFlag(kubeconfig, {.qps = 50, .burst = 100, .userAgent = "trellis-dns"}, &apiServer);
  if (!client) {
    log.error("the API", {{"error", client.error().message()}});
    return 1;
  }

  base::Registry metrics;
  dns::Zone zone(zc);
  dns::Watcher watcher(**client, zone, metrics);
  dns::Server server(sc, zone, metrics);
  if (auto st = server.start(); !st) {
    log.error("listening", {{"error", st.error().message()}});
    return 1;
  }
  auto status = http::StatusServer::start(
      fmt::format("{}:{}", metricsAddress.find(':') != std::string::npos ? "[" + metricsAddress + "]" : metricsAddress,
                  metricsPort),
      "dns-metrics", metrics, {},
      [&]() -> std::string { return watcher.synced() ? "" : "Services and EndpointSlices not synced yet"; });
  if (!status) {
    log.error("metrics listener", {{"error", status.error().message()}});
    return 1;
  }
  std::string ports;
  for (size_t i = 0; i < sc.listen.size(); ++i) {
    ports += fmt::format("{}{}:{}", i ? "," : "", sc.listen[i].host, server.ports()[i]);
  }
  std::string ups;
  for (const auto& u : sc.upstreams) ups += fmt::format("{}{}:{}", ups.empty() ? "" : ",", u.host, u.port);
  log.info("serving", {{"listen", ports}, {"metrics", (*status)->port()}, {"zone", zc.domain}, {"upstreams", ups},
                       {"threads", threads}, {"server", apiServer}});
  watcher.start();

  base::waitForShutdownSignal();
  log.info("shutting down");
  server.stop();
  watcher.stop();
  (*status)->stop();
  return 0;
}
