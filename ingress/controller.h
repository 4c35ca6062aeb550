// The controller half of trellis-ingress: watches IngressClasses, Ingresses,
// Services and EndpointSlices (informers), and — one watch per Secret, by
// name — only the TLS Secrets that admitted Ingresses reference (it never
// lists Secrets). Every change marks the state dirty; one builder thread
// coalesces changes for a few milliseconds, translates everything into a new
// route table and certificate map, publishes both (the proxy threads pick
// them up on their next request or handshake), then writes what the API
// should show: status.loadBalancer.ingress of each served Ingress, and a
// Warning Event for each Ingress skipped (once per distinct problem).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/base/metrics.h"
#include "common/http/tls.h"
#include "common/kube/client.h"
#include "ingress/proxy.h"

namespace trellis::ingress {

struct ControllerOptions {
  std::string className = "trellis";  // the IngressClass we serve
  // What status.loadBalancer.ingress says: an IP or host name; or, with
  // publishService ("ns/name"), that Service's load-balancer address.
  std::string publishAddress;
  std::string publishService;
  base::Registry* metrics = nullptr;
  std::chrono::milliseconds coalesce{5};  // how long a change waits for others before a rebuild
};

class Controller {
 public:
  // `tls`: the HTTPS listener's configuration; its SNI resolver is set here.
  Controller(kube::Client& client, Proxy& proxy, std::shared_ptr<http::TlsServerConfig> tls, ControllerOptions options);
  ~Controller();  // stops

  void start();
  void stop();
  // A route table has been built from synced caches.
  bool ready() const;
  // The debug answer for a host and path: JSON with the Ingress, rule,
  // backend, endpoints and the reasoning.
  std::string explain(std::string_view host, std::string_view path) const;
  // The problems of the last build, as JSON (Ingress, reason, message).
  std::string problems() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace trellis::ingress
