// trellis-apiserver: the Kubernetes-compatible API server of Trellis, on an
// embedded SQLite store. See docs/apiserver.md.
#include <sys/random.h>
#include <sys/stat.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include <boost/json/serialize.hpp>

#include "apiserver-lite/registry/allocator.h"
#include "apiserver-lite/registry/object.h"
#include "apiserver-lite/server/api_handler.h"
#include "apiserver-lite/server/authn.h"
#include "apiserver-lite/storage/sqlite_store.h"
#include "apiserver-lite/storage/watch_cache.h"
#include "common/base/base64.h"
#include "common/base/flags.h"
#include "common/base/log.h"
#include "common/base/signals.h"
#include "common/http/certgen.h"
#include "common/http/server.h"

using namespace trellis;
namespace fs = std::filesystem;

namespace {

base::Status writeFileAtomic(const std::string& path, const std::string& data, mode_t mode) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return base::Error::fromErrno(errno, "writing " + tmp);
    out << data;
    out.flush();
    if (!out) return base::Error::fromErrno(errno, "writing " + tmp);
  }
  chmod(tmp.c_str(), mode);
  if (rename(tmp.c_str(), path.c_str()) != 0) return base::Error::fromErrno(errno, "renaming " + tmp);
  return {};
}

std::string randomToken() {
  unsigned char b[24];
  if (getrandom(b, sizeof b, 0) != sizeof b) throw std::runtime_error("getrandom failed");
  std::string out;
  for (unsigned char c : b) out += fmt::format("{:02x}", c);
  return out;
}

std::string readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The CA and serving certificate under <data-dir>/pki, made on first start.
base::Result<http::PemPair> ensurePki(const std::string& dir, const std::string& bindAddress, http::PemPair& ca) {
  fs::create_directories(dir);
  std::string caCrt = dir + "/ca.crt", caKey = dir + "/ca.key", crt = dir + "/apiserver.crt", key = dir + "/apiserver.key";
  if (!fs::exists(caCrt) || !fs::exists(caKey)) {
    auto gen = http::generateCa("trellis-ca");
    if (!gen) return std::move(gen).error();
    if (auto st = writeFileAtomic(caKey, gen->keyPem, 0600); !st) return std::move(st).error();
    if (auto st = writeFileAtomic(caCrt, gen->certPem, 0644); !st) return std::move(st).error();
    fs::remove(crt);
  }
  ca = {readAll(caCrt), readAll(caKey)};
  // An admin client certificate: CN admin, O system:masters.
  std::string adminCrt = dir + "/admin.crt", adminKey = dir + "/admin.key";
  if (!fs::exists(adminCrt) || !fs::exists(adminKey)) {
    auto admin = http::generateSigned(ca, {.commonName = "admin", .organizations = {"system:masters"}, .server = false,
                                           .client = true});
    if (!admin) return std::move(admin).error();
    if (auto st = writeFileAtomic(adminKey, admin->keyPem, 0600); !st) return std::move(st).error();
    if (auto st = writeFileAtomic(adminCrt, admin->certPem, 0644); !st) return std::move(st).error();
  }
  if (!fs::exists(crt) || !fs::exists(key)) {
    std::vector<std::string> ips = {"127.0.0.1", "::1"};
    if (bindAddress != "0.0.0.0" && bindAddress != "::" && bindAddress != "127.0.0.1") ips.push_back(bindAddress);
    auto leaf = http::generateSigned(ca, {.commonName = "trellis-apiserver",
                                          .dnsNames = {"localhost", "kubernetes", "kubernetes.default",
                                                       "kubernetes.default.svc"},
                                          .ipAddresses = ips});
    if (!leaf) return std::move(leaf).error();
    if (auto st = writeFileAtomic(key, leaf->keyPem, 0600); !st) return std::move(st).error();
    if (auto st = writeFileAtomic(crt, leaf->certPem, 0644); !st) return std::move(st).error();
  }
  return http::PemPair{readAll(crt), readAll(key)};
}

std::string kubeconfig(const std::string& server, const std::string& caPem, const std::string& token) {
  return fmt::format(R"(apiVersion: v1
kind: Config
clusters:
- name: trellis
  cluster:
    server: {}
    certificate-authority-data: {}
users:
- name: admin
  user:
    token: {}
contexts:
- name: trellis
  context:
    cluster: trellis
    user: admin
current-context: trellis
)",
                     server, base::base64Encode(caPem), token);
}

}  // namespace

int main(int argc, char** argv) {
  base::blockShutdownSignals();
  CLI::App app{"trellis-apiserver: a Kubernetes-compatible API server on an embedded SQLite store"};
  base::CommonFlags common;
  base::addCommonFlags(app, common);
  std::string dataDir, bindAddress = "127.0.0.1", kubeconfigPath, tokensFile, storageKind = "sqlite";
  std::string tlsCert, tlsKey, clientCaFile, serviceRange = "10.96.0.0/12";
  int port = 6443, threads = 2, insecurePort = 0;
  double compactionSeconds = 300;
  size_t maxRequestBytes = 3 * 1024 * 1024;
  app.add_option("--data-dir", dataDir, "Directory for the store, certificates and the admin token")->required();
  app.add_option("--bind-address", bindAddress, "Address to serve HTTPS on")->capture_default_str();
  app.add_option("--secure-port", port, "HTTPS port (0 picks a free one)")->capture_default_str()->check(CLI::Range(0, 65535));
  app.add_option("--write-kubeconfig", kubeconfigPath, "Write an admin kubeconfig here once ready");
  app.add_option("--tokens-file", tokensFile, "Bearer tokens: token,user,uid[,\"group1,group2\"] per line");
  app.add_option("--tls-cert-file", tlsCert, "Serving certificate (default: generated under <data-dir>/pki)");
  app.add_option("--tls-private-key-file", tlsKey, "Serving key (with --tls-cert-file)");
  app.add_option("--client-ca-file", clientCaFile,
                 "CA for client certificates (CN = user, O = groups); default: the generated CA under <data-dir>/pki");
  app.add_option("--storage", storageKind, "Storage backend (sqlite)")->capture_default_str()->check(CLI::IsMember({"sqlite"}));
  app.add_option("--service-cluster-ip-range", serviceRange, "Service ClusterIP range (IPv4 CIDR)")->capture_default_str();
  app.add_option("--max-request-bytes", maxRequestBytes, "Largest request body accepted")->capture_default_str();
  app.add_option("--insecure-port", insecurePort,
                 "Also serve plain HTTP on 127.0.0.1:PORT, unauthenticated and with full rights (0: off). "
                 "For local debugging only")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  app.add_option("--compaction-interval", compactionSeconds,
                 "Seconds between compactions of the store's history: each keeps what changed since the previous one "
                 "(as kube-apiserver's --etcd-compaction-interval); watches from older revisions get 410 Gone. 0: never")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--threads", threads, "HTTP event-loop threads")->capture_default_str()->check(CLI::Range(1, 64));
  CLI11_PARSE(app, argc, argv);
  base::applyCommonFlags(common);
  base::Logger log("apiserver");

  std::error_code ec;
  fs::create_directories(dataDir, ec);
  if (ec) {
    log.error("creating data dir", {{"dir", dataDir}, {"error", ec.message()}});
    return 1;
  }
  auto store = apiserver::storage::SqliteStore::open(dataDir + "/store.db");
  if (!store) {
    log.error("opening store", {{"error", store.error().message()}});
    return 1;
  }
  apiserver::storage::WatchCache cache(**store);
  if (auto st = cache.start(); !st) {
    log.error("starting watch cache", {{"error", st.error().message()}});
    return 1;
  }
  if (auto cidr = apiserver::registry::Ipv4Cidr::parse(serviceRange); !cidr) {
    log.error("--service-cluster-ip-range", {{"error", cidr.error().message()}});
    return 2;
  }
  base::Registry metrics;
  apiserver::ApiOptions apiOptions;
  apiOptions.serviceClusterIpRange = serviceRange;
  apiOptions.metrics = &metrics;
  apiserver::ApiHandler api(**store, cache, apiOptions);
  if (auto st = api.bootstrap(); !st) {
    log.error("creating system namespaces and the default RBAC policy", {{"error", st.error().message()}});
    return 1;
  }
  api.startNamespaceFinalizer();
  // Compaction: every interval, drop history older than the revision current
  // at the previous tick.
  std::mutex compactMu;
  std::condition_variable compactCv;
  bool compactStop = false;
  std::thread compactor;
  if (compactionSeconds > 0) {
    compactor = std::thread([&] {
      auto interval = std::chrono::duration<double>(compactionSeconds);
      apiserver::storage::Revision previous = 0;
      std::unique_lock g(compactMu);
      while (!compactCv.wait_for(g, interval, [&] { return compactStop; })) {
        apiserver::storage::Revision now = cache.revision();
        if (previous > 0) {
          if (auto st = (*store)->compact(previous); !st) {
            log.warn("compaction failed", {{"revision", previous}, {"error", st.error().message()}});
          } else {
            cache.compact(previous);
            log.debug("compacted", {{"revision", previous}});
          }
        }
        previous = now;
      }
    });
  }
  struct StopCompactor {
    std::mutex& mu;
    std::condition_variable& cv;
    bool& stop;
    std::thread& t;
    ~StopCompactor() {
      {
        std::lock_guard g(mu);
        stop = true;
      }
      cv.notify_all();
      if (t.joinable()) t.join();
    }
  } stopCompactor{compactMu, compactCv, compactStop, compactor};

  http::PemPair ca;
  std::shared_ptr<http::TlsServerConfig> tls;
  http::TlsServerOptions tlsOptions;
  if (!tlsCert.empty()) {
    tlsOptions.clientCaFile = clientCaFile;
    auto cfg = http::TlsServerConfig::fromFiles(tlsCert, tlsKey, tlsOptions);
    if (!cfg) {
      log.error("loading TLS certificate", {{"error", cfg.error().message()}});
      return 1;
    }
    tls = *cfg;
  } else {
    auto pki = ensurePki(dataDir + "/pki", bindAddress, ca);
    if (!pki) {
      log.error("creating certificates", {{"error", pki.error().message()}});
      return 1;
    }
    tlsOptions.clientCaFile = clientCaFile.empty() ? dataDir + "/pki/ca.crt" : clientCaFile;
    auto cert = http::ServerCertificate::fromPem(pki->certPem, pki->keyPem, tlsOptions);
    if (!cert) {
      log.error("loading generated certificate", {{"error", cert.error().message()}});
      return 1;
    }
    tls = std::make_shared<http::TlsServerConfig>(*cert, tlsOptions);
  }

  apiserver::TokenAuthenticator authn;
  if (!tokensFile.empty()) {
    if (auto st = authn.loadFile(tokensFile); !st) {
      log.error("loading tokens", {{"error", st.error().message()}});
      return 1;
    }
  }
  std::string adminTokenPath = dataDir + "/admin.token";
  std::string adminToken = readAll(adminTokenPath);
  if (adminToken.empty()) {
    adminToken = randomToken();
    if (auto st = writeFileAtomic(adminTokenPath, adminToken, 0600); !st) {
      log.error("writing admin token", {{"error", st.error().message()}});
      return 1;
    }
  }
  authn.add(adminToken, {"admin", "admin", {"system:masters"}});

  http::ServerOptions opts;
  opts.address = bindAddress;
  opts.port = static_cast<uint16_t>(port);
  opts.threads = threads;
  opts.tls = tls;
  opts.name = "apiserver";
  opts.metrics = &metrics;
  opts.limits.maxBodyBytes = maxRequestBytes;
  opts.limits.maxConcurrentStreams = 1000;  // watches multiplexed over one connection
  // Requests refused by the HTTP layer still get a Status, as from kube-apiserver.
  opts.errorResponse = [maxRequestBytes](int status, std::string_view message) {
    apiserver::registry::ApiError e{status, status == 413   ? "RequestEntityTooLarge"
                                            : status == 408 ? "Timeout"
                                            : status >= 500 ? "InternalError"
                                                            : "BadRequest",
                                    std::string(message)};
    if (status == 413) e.message = fmt::format("Request entity too large: limit is {}", maxRequestBytes);
    http::Response r;
    r.status = status;
    r.headers.add("content-type", "application/json");
    r.body = boost::json::serialize(apiserver::registry::statusObject(e));
    return r;
  };
  http::Server server(opts, [&](http::Request& req, std::shared_ptr<http::ResponseWriter> w) {
    // A verified client certificate authenticates by itself; otherwise a bearer token.
    std::optional<apiserver::UserInfo> user;
    if (!req.clientCommonName.empty()) {
      user = apiserver::certificateUser(req.clientCommonName, req.clientOrganizations);
    } else {
      user = authn.authenticate(req.headers.get("authorization").value_or(""));
    }
    if (!user) {
      if (!apiserver::isAnonymousPath(req.path())) {
        apiserver::registry::ApiError e{401, "Unauthorized", "Unauthorized"};
        http::Response r;
        r.status = 401;
        r.headers.add("content-type", "application/json");
        r.body = boost::json::serialize(apiserver::registry::statusObject(e));
        w->respond(std::move(r));
        return;
      }
      user = apiserver::anonymousUser();
    }
    api.handle(req, *user, std::move(w));
  });
  if (auto st = server.start(); !st) {
    log.error("starting server", {{"error", st.error().message()}});
    return 1;
  }
  // The insecure port: loopback only, every request acts as a cluster admin.
  std::unique_ptr<http::Server> insecure;
  if (insecurePort > 0) {
    http::ServerOptions io = opts;
    io.address = "127.0.0.1";
    io.port = static_cast<uint16_t>(insecurePort);
    io.tls = nullptr;
    io.threads = 1;
    io.name = "apiserver-insecure";
    io.metrics = nullptr;
    apiserver::UserInfo local{"system:insecure-port", "", {"system:masters", "system:authenticated"}};
    insecure = std::make_unique<http::Server>(io, [&api, local](http::Request& req, std::shared_ptr<http::ResponseWriter> w) {
      api.handle(req, local, std::move(w));
    });
    if (auto st = insecure->start(); !st) {
      log.error("starting the insecure port", {{"error", st.error().message()}});
      return 1;
    }
    log.warn("serving plain HTTP without authentication", {{"address", "127.0.0.1"}, {"port", insecure->port()}});
  }
  std::string host = bindAddress == "0.0.0.0" || bindAddress == "::" ? "127.0.0.1" : bindAddress;
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  std::string url = fmt::format("https://{}:{}", host, server.port());
  if (auto st = api.publishEndpoint(host.front() == '[' ? "127.0.0.1" : host, server.port()); !st) {
    log.error("publishing the kubernetes Service", {{"error", st.error().message()}});
    return 1;
  }
  if (!kubeconfigPath.empty()) {
    std::string caPem = ca.certPem.empty() ? readAll(tlsCert) : ca.certPem;
    if (auto st = writeFileAtomic(kubeconfigPath, kubeconfig(url, caPem, adminToken), 0600); !st) {
      log.error("writing kubeconfig", {{"error", st.error().message()}});
      return 1;
    }
  }
  log.info("ready", {{"url", url}, {"revision", cache.revision()}, {"kubeconfig", kubeconfigPath}});
  base::SignalWatcher signals([&] {
    std::thread([&] {
      if (insecure) insecure->stop(std::chrono::seconds(5));
      server.stop(std::chrono::seconds(5));
    }).detach();
  });
  server.wait();
  if (insecure) insecure->wait();
  return 0;
}
