// The small HTTP server every long-running component offers on
// --metrics-address: /metrics (Prometheus text of a registry), /healthz
// (200 "ok", or 503 with the reason a health check gives) and /readyz (the
// same for a readiness check; the health check when none is given).
//
//   auto status = http::StatusServer::start("127.0.0.1:9090", "csi-metrics", metrics,
//                                           [&]() -> std::string { return poolUsable() ? "" : "pool not usable"; });
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/base/metrics.h"
#include "common/base/result.h"

namespace trellis::http {

class Server;

class StatusServer {
 public:
  // `health` and `ready` answer "" when healthy (ready), else why not.
  // `address`: HOST:PORT (port 0 picks one).
  static base::Result<std::unique_ptr<StatusServer>> start(const std::string& address, const std::string& name,
                                                           base::Registry& metrics,
                                                           std::function<std::string()> health = {},
                                                           std::function<std::string()> ready = {});
  ~StatusServer();
  uint16_t port() const;
  void stop();

 private:
  StatusServer() = default;
  std::unique_ptr<Server> server_;
};

}  // namespace trellis::http
