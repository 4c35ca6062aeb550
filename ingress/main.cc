// trellis-ingress: the Ingress controller and its HTTP/1.1 + HTTP/2 proxy.
#include <ifaddrs.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <net/if.h>


#include <fmt/format.h>

#include "common/base/flags.h"
#include "common/base/log.h"
#include "common/base/signals.h"
#include "common/http/certgen.h"
#include "common/http/server.h"
#include "common/kube/config.h"
#include "ingress/controller.h"
#include "ingress/proxy.h"
#include "ingress/translate.h"

using namespace trellis;

namespace {

// The first non-loopback IPv4 address of an interface that is up.
std::string firstHostAddress() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return "127.0.0.1";
  std::string out = "127.0.0.1";
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET || (a->ifa_flags & IFF_LOOPBACK) || !(a->ifa_flags & IFF_UP)) continue;
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, buf, sizeof buf);
    out = buf;
    break;
  }
  freeifaddrs(list);
  return out;
}

// A query parameter's value (percent-decoded), or "".
std::string queryParam(std::string_view query, std::string_view key) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view kv = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = kv.find('=');
    if (kv.substr(0, eq) != key) continue;
    std::string_view v = eq == std::string_view::npos ? std::string_view() : kv.substr(eq + 1);
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) {
      auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
      if (v[i] == '%' && i + 2 < v.size() && hex(v[i + 1]) >= 0 && hex(v[i + 2]) >= 0) {
        out += static_cast<char>(hex(v[i + 1]) * 16 + hex(v[i + 2]));
        i += 2;
      } else {
        out += v[i] == '+' ? ' ' : v[i];
      }
    }
    return out;
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  base::blockShutdownSignals();
  CLI::App app{"trellis-ingress: the Ingress controller (IngressClass controller trellis.dev/ingress) and its HTTP/2 proxy"};
  base::CommonFlags common;
  base::addCommonFlags(app, common);
  std::string kubeconfig, address = "0.0.0.0", ingressClass = "trellis", publishAddress, publishService;
  std::string defaultCert, defaultKey;
  int httpPort = 80, httpsPort = 443, metricsPort = 10254, threads = 1;
  int advertisedHttpPort = -1, advertisedHttpsPort = -1;
  bool accessLog = true;
  std::string maxBody = "64m", headerTimeout = "10s", bodyTimeout = "30s", idleTimeout = "120s";
  app.add_option("--kubeconfig", kubeconfig, "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)");
  app.add_option("--address", address, "address the HTTP and HTTPS listeners bind")->capture_default_str();
  app.add_option("--http-port", httpPort, "plain HTTP port (0: pick a free one and log it)")->capture_default_str();
  app.add_option("--https-port", httpsPort, "HTTPS port (0: pick a free one and log it)")->capture_default_str();
  app.add_option("--metrics-port", metricsPort,
                 "port of /metrics, /healthz, /readyz and /debug/route on 127.0.0.1 (0: pick one)")
      ->capture_default_str();
  app.add_option("--threads", threads, "proxy threads (one event loop each, SO_REUSEPORT listeners)")->capture_default_str();
  app.add_option("--ingress-class", ingressClass, "the IngressClass served (its spec.controller must be trellis.dev/ingress)")
      ->capture_default_str();
  app.add_option("--publish-address", publishAddress,
                 "address written to status.loadBalancer.ingress (default: the first non-loopback IPv4 address, "
                 "or --address when it is a specific one)");
  app.add_option("--publish-service", publishService,
                 "NAMESPACE/NAME of a LoadBalancer Service whose address is written instead (servicelb gives it)");
  app.add_option("--advertised-http-port", advertisedHttpPort,
                 "the HTTP port clients use, when a NAT or Service maps it (default: --http-port)");
  app.add_option("--advertised-https-port", advertisedHttpsPort,
                 "the HTTPS port clients use, for redirects and X-Forwarded-Port (default: --https-port)");
  app.add_option("--default-cert", defaultCert, "PEM certificate served when no Ingress names the host (default: generated)");
  app.add_option("--default-key", defaultKey, "its PEM key");
  app.add_option("--access-log", accessLog, "one JSON line per request on stdout")->capture_default_str();
  app.add_option("--max-body-size", maxBody,
                 "largest request body any Ingress may allow (trellis.dev/proxy-body-size sets each one's, "
                 "default 1m)")
      ->capture_default_str();
  app.add_option("--client-header-timeout", headerTimeout,
                 "a client must send a request's whole header section within this (slowloris)")
      ->capture_default_str();
  app.add_option("--client-body-timeout", bodyTimeout, "longest pause between pieces of a request body")
      ->capture_default_str();
  app.add_option("--client-idle-timeout", idleTimeout, "keep-alive connections with nothing in flight close after this")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  base::applyCommonFlags(common);
  base::Logger log("ingress");
  auto maxBodyBytes = ingress::parseSize(maxBody);
  if (!maxBodyBytes) {
    log.error("--max-body-size", {{"error", maxBodyBytes.error().message()}});
    return 2;
  }
  for (auto [flag, port] : {std::pair{"--http-port", httpPort}, std::pair{"--https-port", httpsPort},
                             std::pair{"--metrics-port", metricsPort}}) {
    if (port < 0 || port > 65535) {
      log.error(flag, {{"error", fmt::format("{} is not a port (0..65535)", port)}});
      return 2;
    }
  }
  if (threads < 1) {
    log.error("--threads", {{"error", fmt::format("{}: at least one thread", threads)}});
    return 2;
  }
  http::Limits limits;
  limits.maxBodyBytes = *maxBodyBytes;
  for (auto [flag, text, into] : {std::tuple{"--client-header-timeout", &headerTimeout, &limits.headerTimeout},
                                  std::tuple{"--client-body-timeout", &bodyTimeout, &limits.bodyTimeout},
                                  std::tuple{"--client-idle-timeout", &idleTimeout, &limits.idleTimeout}}) {
    auto ms = ingress::parseDurationMs(*text);
    if (!ms) {
      log.error(flag, {{"error", ms.error().message()}});
      return 2;
    }
    *into = std::chrono::milliseconds(*ms);
  }


  // The default certificate: given, or generated for this process.
  std::shared_ptr<http::ServerCertificate> fallback;
  if (!defaultCert.empty()) {
    auto c = http::ServerCertificate::fromFiles(defaultCert, defaultKey);
    if (!c) {
      log.error("--default-cert", {{"error", c.error().message()}});
      return 2;
    }
    fallback = *c;
  } else {
    auto ca = http::generateCa("trellis-ingress default CA");
    auto leaf = ca ? http::generateSigned(*ca, {.commonName = "trellis-ingress default certificate",
                                                .dnsNames = {"ingress.local"}})
                   : base::Result<http::PemPair>(ca.error());
    auto c = leaf ? http::ServerCertificate::fromPem(leaf->certPem, leaf->keyPem)
                  : base::Result<std::shared_ptr<http::ServerCertificate>>(leaf.error());
    if (!c) {
      log.error("generating the default certificate", {{"error", c.error().message()}});
      return 1;
    }
    fallback = *c;
  }
  auto tls = std::make_shared<http::TlsServerConfig>(fallback);

  std::string server;
  auto client =
      kube::clientFromKubeconfigFlag(kubeconfig, {.qps = 500, .burst = 1000, .userAgent = "trellis-ingress"}, &server);
  if (!client) {
    log.error("the API", {{"error", client.error().message()}});
    return 1;
  }

  base::Registry metrics;
  ingress::ProxyOptions popts{.metrics = &metrics, .accessLog = accessLog};
  ingress::Proxy proxy(popts);
  // The listeners first (their ports go into redirects), then the proxy options.
  http::Server httpsServer({.address = address, .port = static_cast<uint16_t>(httpsPort), .threads = threads, .tls = tls,
                            .limits = limits, .name = "ingress-https", .metrics = &metrics,
                            .streamRequestBody = ingress::Proxy::streamsBody},
                           proxy.handler(true));
  http::Server httpServer({.address = address, .port = static_cast<uint16_t>(httpPort), .threads = threads,
                           .limits = limits, .name = "ingress-http", .metrics = &metrics,
                           .streamRequestBody = ingress::Proxy::streamsBody},
                          proxy.handler(false));
  if (auto st = httpsServer.start(); !st) {
    log.error("HTTPS listener", {{"error", st.error().message()}});
    return 1;
  }
  if (auto st = httpServer.start(); !st) {
    log.error("HTTP listener", {{"error", st.error().message()}});
    return 1;
  }
  proxy.setPorts(static_cast<uint16_t>(advertisedHttpPort >= 0 ? advertisedHttpPort : httpServer.port()),
                 static_cast<uint16_t>(advertisedHttpsPort >= 0 ? advertisedHttpsPort : httpsServer.port()));

  if (publishAddress.empty() && publishService.empty()) {
    publishAddress = address == "0.0.0.0" || address == "::" ? firstHostAddress() : address;
  }
  ingress::Controller controller(**client, proxy, tls,
                                 {.className = ingressClass, .publishAddress = publishAddress,
                                  .publishService = publishService, .metrics = &metrics});

  http::Server status({.address = "127.0.0.1", .port = static_cast<uint16_t>(metricsPort), .threads = 1,
                       .name = "ingress-status"},
                      [&](http::Request& req, std::shared_ptr<http::ResponseWriter> w) {
                        http::Response r;
                        r.headers.add("content-type", "text/plain; charset=utf-8");
                        std::string_view path = req.path();
                        if (path == "/metrics") {
                          r.headers.set("content-type", base::Registry::kContentType);
                          r.body = metrics.render();
                        } else if (path == "/healthz") {
                          r.body = "ok";
                        } else if (path == "/readyz") {
                          bool ready = controller.ready();
                          r.status = ready ? 200 : 503;
                          r.body = ready ? "ok" : "the first route table is not built yet";
                        } else if (path == "/debug/route") {
                          r.headers.set("content-type", "application/json");
                          std::string host = queryParam(req.query(), "host");
                          std::string p = queryParam(req.query(), "path");
                          r.body = controller.explain(host, p.empty() ? "/" : p);
                        } else if (path == "/debug/problems") {
                          r.headers.set("content-type", "application/json");
                          r.body = controller.problems();
                        } else {
                          r.status = 404;
                          r.body = "not found";
                        }
                        w->respond(std::move(r));
                      });
  if (auto st = status.start(); !st) {
    log.error("metrics listener", {{"error", st.error().message()}});
    return 1;
  }
  log.info("serving", {{"http", httpServer.port()}, {"https", httpsServer.port()}, {"metrics", status.port()},
                       {"class", ingressClass}, {"threads", threads}, {"server", server}});
  controller.start();

  base::waitForShutdownSignal();
  log.info("shutting down");
  controller.stop();
  httpServer.stop(std::chrono::seconds(5));
  httpsServer.stop(std::chrono::seconds(5));
  status.stop(std::chrono::milliseconds(0));
  return 0;
}
