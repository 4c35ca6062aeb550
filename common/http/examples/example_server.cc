// trellis-http-example: answers every request with a fixed 100-byte body, over
// TLS (h2 and http/1.1 by ALPN) or cleartext (HTTP/1.1 and h2c). Used by the
// benchmark in bench/http and as a smoke test of common/http.
//   /stream?n=N&interval_ms=M   streams N lines, one every M ms (chunked / DATA)
//   /echo                       echoes the request body
//   /metrics, /healthz
#include <atomic>
#include <charconv>
#include <thread>

#include "common/base/flags.h"
#include "common/base/log.h"
#include "common/base/numbers.h"
#include "common/base/signals.h"
#include "common/http/server.h"

using namespace trellis;

namespace {

const std::string kBody(100, 'x');

int queryInt(std::string_view query, std::string_view key, int def) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view kv = query.substr(0, amp);
    if (kv.substr(0, key.size()) == key && kv.size() > key.size() && kv[key.size()] == '=') {
      int v = def;
      auto s = kv.substr(key.size() + 1);
      std::from_chars(s.data(), s.data() + s.size(), v);
      return v;
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  base::blockShutdownSignals();
  CLI::App app{"trellis-http-example: a fixed 100-byte response over HTTP/1.1 and HTTP/2"};
  base::CommonFlags common;
  base::addCommonFlags(app, common);
  std::string listen = "127.0.0.1:8443";
  std::string cert, key;
  int threads = 1;
  app.add_option("--listen", listen, "Address and port to listen on (port 0 picks one)")->capture_default_str();
  app.add_option("--cert", cert, "TLS certificate (PEM); without it the server speaks cleartext");
  app.add_option("--key", key, "TLS private key (PEM)");
  app.add_option("--threads", threads, "Event-loop threads")->capture_default_str()->check(CLI::Range(1, 256));
  CLI11_PARSE(app, argc, argv);
  base::applyCommonFlags(common);
  base::Logger log("example");

  auto hostPort = base::parseHostPort(listen);
  if (!hostPort) {
    log.error("invalid --listen, want ADDRESS:PORT", {{"error", hostPort.error().message()}});
    return 2;
  }
  http::ServerOptions opts;
  opts.address = hostPort->host;
  opts.port = hostPort->port;
  opts.threads = threads;
  opts.name = "example";
  base::Registry metrics;
  opts.metrics = &metrics;
  if (!cert.empty() || !key.empty()) {
    auto tls = http::TlsServerConfig::fromFiles(cert, key);
    if (!tls) {
      log.error("loading TLS certificate", {{"error", tls.error().message()}});
      return 1;
    }
    opts.tls = *tls;
  }
  auto tlsConfig = opts.tls;

  http::Server server(opts, [&metrics](http::Request& req, std::shared_ptr<http::ResponseWriter> w) {
    std::string_view path = req.path();
    if (path == "/stream") {
      int n = queryInt(req.query(), "n", 10);
      int interval = queryInt(req.query(), "interval_ms", 10);
      http::Headers h;
      h.add("content-type", "text/plain");
      w->begin(200, std::move(h));
      std::thread([w, n, interval] {
        for (int i = 0; i < n && !w->closed(); ++i) {
          w->write("event " + std::to_string(i) + "\n");
          std::this_thread::sleep_for(std::chrono::milliseconds(interval));
        }
        http::Headers trailers;
        trailers.add("x-events", std::to_string(n));
        w->finish(std::move(trailers));
      }).detach();
      return;
    }
    http::Response r;
    if (path == "/echo") {
      r.body = std::move(req.body);
    } else if (path == "/metrics") {
      r.headers.add("content-type", base::Registry::kContentType);
      r.body = metrics.render();
    } else if (path == "/healthz") {
      r.body = "ok";
    } else {
      r.headers.add("content-type", "text/plain");
      r.body = kBody;
    }
    w->respond(std::move(r));
  });
  if (auto st = server.start(); !st) {
    log.error("starting server", {{"error", st.error().message()}});
    return 1;
  }
  // The port line is read by scripts that start us with port 0.
  std::printf("listening on %s:%u\n", opts.address.c_str(), server.port());
  std::fflush(stdout);
  base::SignalWatcher signals([&] { std::thread([&] { server.stop(std::chrono::seconds(5)); }).detach(); },
                              [&] {
                                if (!tlsConfig) return;
                                auto st = tlsConfig->reload();
                                if (st) log.info("certificate reloaded");
                                else log.error("certificate reload failed", {{"error", st.error().message()}});
                              });
  server.wait();
  return 0;
}
