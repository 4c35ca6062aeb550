// trellis-echo-backend: a backend for the ingress tests and benchmark. It
// answers every request with JSON that says who answered and what arrived
// (method, target, authority, headers, body size), over HTTP/1.1 and h2c
// (prior knowledge), or HTTPS with --tls.
//
//   /status/CODE          answers CODE
//   /slow?ms=N            answers after N ms
//   /stream?n=N&ms=M      N chunks "chunk i\n", M ms apart (no Content-Length)
//   /fixed                100 bytes of "x" (the benchmark's body)
//   /ws                   a WebSocket (RFC 6455) echo: each text or binary
//                         message comes back as "NAME: message"
//   anything else         the echo
#include <thread>

#include <boost/json/serialize.hpp>
#include <boost/json/object.hpp>
#include <fmt/format.h>

#include <openssl/sha.h>

#include "common/base/base64.h"
#include "common/base/flags.h"
#include "common/base/log.h"
#include "common/base/signals.h"
#include "common/http/certgen.h"
#include "common/http/server.h"

using namespace trellis;
namespace json = boost::json;

namespace {

int intParam(std::string_view query, std::string_view key, int otherwise) {
  size_t at = query.find(std::string(key) + "=");
  if (at == std::string_view::npos || (at > 0 && query[at - 1] != '&')) return otherwise;
  int v = 0;
  for (size_t i = at + key.size() + 1; i < query.size() && query[i] >= '0' && query[i] <= '9'; ++i) v = v * 10 + (query[i] - '0');
  return v;
}

// One WebSocket's server side: unmasks client frames, answers pings, echoes
// messages (prefixed with the backend's name), closes on a close frame.
struct WebSocket {
  std::shared_ptr<http::ResponseWriter> w;
  std::string name, buf;

  static std::string frame(int opcode, std::string_view payload) {
    std::string f;
    f += static_cast<char>(0x80 | opcode);
    if (payload.size() < 126) {
      f += static_cast<char>(payload.size());
    } else if (payload.size() < 65536) {
      f += static_cast<char>(126);
      f += static_cast<char>(payload.size() >> 8);
      f += static_cast<char>(payload.size() & 0xff);
    } else {
      f += static_cast<char>(127);
      for (int i = 7; i >= 0; --i) f += static_cast<char>((payload.size() >> (8 * i)) & 0xff);
    }
    f += payload;
    return f;
  }

  void onData(std::string_view data) {
    buf.append(data);
    for (;;) {
      if (buf.size() < 2) return;
      auto b = [&](size_t i) { return static_cast<uint8_t>(buf[i]); };
      int opcode = b(0) & 0x0f;
      bool masked = b(1) & 0x80;
      uint64_t len = b(1) & 0x7f;
      size_t at = 2;
      if (len == 126) {
        if (buf.size() < 4) return;
        len = (uint64_t(b(2)) << 8) | b(3);
        at = 4;
      } else if (len == 127) {
        if (buf.size() < 10) return;
        len = 0;
        for (int i = 0; i < 8; ++i) len = (len << 8) | b(2 + i);
        at = 10;
      }
      size_t maskAt = at;
      if (masked) at += 4;
      if (buf.size() < at + len) return;
      std::string payload = buf.substr(at, len);
      if (masked) {
        for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(payload[i] ^ buf[maskAt + i % 4]);
      }
      buf.erase(0, at + len);
      if (opcode == 8) {  // close: answer it and end
        w->write(frame(8, payload.substr(0, 2)));
        w->finish();
        return;
      }
      if (opcode == 9) w->write(frame(10, payload));
      else if (opcode == 1 || opcode == 2) w->write(frame(opcode, name + ": " + payload));
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  base::blockShutdownSignals();
  CLI::App app{"trellis-echo-backend: answers with what it received (ingress tests and benchmark)"};
  base::CommonFlags common;
  base::addCommonFlags(app, common);
  std::string name = "echo", address = "127.0.0.1", portFile;
  int port = 0, threads = 1;
  bool tls = false;
  app.add_option("--name", name, "who answers (in every echo)")->capture_default_str();
  app.add_option("--address", address, "listen address")->capture_default_str();
  app.add_option("--port", port, "listen port (0: pick one)")->capture_default_str();
  app.add_option("--port-file", portFile, "write the bound port here once listening");
  app.add_option("--threads", threads, "event-loop threads")->capture_default_str();
  app.add_option("--tls", tls, "serve HTTPS (a generated certificate)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  base::applyCommonFlags(common);
  base::Logger log("echo");

  std::shared_ptr<http::TlsServerConfig> tlsConfig;
  if (tls) {
    auto ca = http::generateCa("echo CA");
    auto leaf = http::generateSigned(*ca, {.commonName = "echo", .dnsNames = {"echo"}, .ipAddresses = {"127.0.0.1"}});
    tlsConfig = std::make_shared<http::TlsServerConfig>(*http::ServerCertificate::fromPem(leaf->certPem, leaf->keyPem));
  }
  const std::string fixed(100, 'x');
  http::Limits limits;
  limits.maxBodyBytes = 256 << 20;
  http::Server server(
      {.address = address, .port = static_cast<uint16_t>(port), .threads = threads, .tls = tlsConfig, .limits = limits,
       .name = "echo"},
      [&](http::Request& req, std::shared_ptr<http::ResponseWriter> w) {
        std::string_view path = req.path();
        if (path == "/fixed") {
          http::Response r;
          r.headers.add("content-type", "text/plain");
          r.body = fixed;
          return w->respond(std::move(r));
        }
        if (path == "/ws" && req.headers.has("upgrade")) {
          std::string key(req.headers.get("sec-websocket-key").value_or(""));
          key += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
          unsigned char digest[SHA_DIGEST_LENGTH];
          SHA1(reinterpret_cast<const unsigned char*>(key.data()), key.size(), digest);
          http::Headers h;
          h.add("upgrade", "websocket");
          h.add("sec-websocket-accept", base::base64Encode(std::string_view(reinterpret_cast<char*>(digest), sizeof digest)));
          auto ws = std::make_shared<WebSocket>();
          ws->w = w;
          ws->name = name;
          w->upgrade(std::move(h), [ws](std::string_view data) { ws->onData(data); });
          w->onClose([ws] { ws->w.reset(); });  // breaks the writer ↔ socket cycle
          return;
        }
        if (path.starts_with("/stream")) {
          int n = intParam(req.query(), "n", 3), ms = intParam(req.query(), "ms", 100);
          w->begin(200, {});
          std::thread([w, n, ms, name] {
            for (int i = 0; i < n && !w->closed(); ++i) {
              w->write(fmt::format("{} chunk {}\n", name, i));
              std::this_thread::sleep_for(std::chrono::milliseconds(ms));
            }
            w->finish();
          }).detach();
          return;
        }
        json::object out;
        out["name"] = name;
        out["method"] = req.method;
        out["target"] = req.target;
        out["authority"] = req.authority;
        out["protocol"] = std::string(http::versionName(req.version));
        out["scheme"] = req.scheme;
        out["bodySize"] = req.body.size();
        json::object headers;
        for (const auto& [k, v] : req.headers) {
          if (headers.contains(k)) headers[k] = std::string(headers[k].as_string()) + ", " + v;
          else headers[k] = v;
        }
        out["headers"] = std::move(headers);
        http::Response r;
        r.headers.add("content-type", "application/json");
        r.body = json::serialize(out) + "\n";
        if (path.starts_with("/status/")) r.status = intParam("c=" + std::string(path.substr(8)), "c", 200);
        int slow = path == "/slow" ? intParam(req.query(), "ms", 1000) : 0;
        if (slow > 0) {
          std::thread([w, r = std::move(r), slow]() mutable {
            std::this_thread::sleep_for(std::chrono::milliseconds(slow));
            w->respond(std::move(r));
          }).detach();
          return;
        }
        w->respond(std::move(r));
      });
  if (auto st = server.start(); !st) {
    log.error("listening", {{"error", st.error().message()}});
    return 1;
  }
  if (!portFile.empty()) {
    FILE* f = fopen((portFile + ".tmp").c_str(), "w");
    if (f) {
      fmt::print(f, "{}\n", server.port());
      fclose(f);
      rename((portFile + ".tmp").c_str(), portFile.c_str());
    }
  }
  log.info("listening", {{"port", server.port()}, {"name", name}});
  base::waitForShutdownSignal();
  server.stop(std::chrono::milliseconds(500));
  return 0;
}
