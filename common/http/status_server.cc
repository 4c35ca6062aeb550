#include "common/http/status_server.h"

#include "common/base/numbers.h"
#include "common/http/server.h"

namespace trellis::http {

base::Result<std::unique_ptr<StatusServer>> StatusServer::start(const std::string& address, const std::string& name,
                                                                base::Registry& metrics,
                                                                std::function<std::string()> health,
                                                                std::function<std::string()> ready) {
  auto hp = base::parseHostPort(address);
  if (!hp) return std::move(hp).error().wrap("--metrics-address");
  ServerOptions so;
  so.address = hp->host;
  so.port = hp->port;
  so.name = name;
  std::unique_ptr<StatusServer> s(new StatusServer());
  s->server_ = std::make_unique<Server>(so, [&metrics, health, ready](Request& req, std::shared_ptr<ResponseWriter> w) {
    Response r;
    r.headers.add("content-type", "text/plain; charset=utf-8");
    if (req.path() == "/metrics") {
      r.headers.set("content-type", base::Registry::kContentType);
      r.body = metrics.render();
    } else if (req.path() == "/healthz" || req.path() == "/readyz") {
      auto& check = req.path() == "/readyz" && ready ? ready : health;
      std::string why = check ? check() : std::string();
      r.status = why.empty() ? 200 : 503;
      r.body = why.empty() ? "ok" : why;
    } else {
      r.status = 404;
      r.body = "not found";
    }
    w->respond(std::move(r));
  });
  if (auto st = s->server_->start(); !st) return std::move(st).error().wrap("serving metrics on {}", address);
  return s;
}

StatusServer::~StatusServer() { stop(); }

uint16_t StatusServer::port() const { return server_->port(); }

void StatusServer::stop() {
  if (server_) server_->stop(std::chrono::seconds(1));
}

}  // namespace trellis::http
