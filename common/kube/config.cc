#include "common/kube/config.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include <boost/json/object.hpp>
#include <fmt/format.h>

#include "common/base/base64.h"
#include "common/kube/yaml.h"

namespace trellis::kube {

namespace json = boost::json;

namespace {

base::Result<std::string> readWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return base::Error::fromErrno(errno, "open " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string resolve(const std::string& dir, const std::string& path) {
  if (path.empty() || path.front() == '/' || dir.empty()) return path;
  return dir + "/" + path;
}

std::string dirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// One named entry of clusters/users/contexts, with the file it came from.
struct Entry {
  json::object body;
  std::string file, dir;
  std::string field;  // "clusters[2]" for messages
};

struct Merged {
  std::map<std::string, Entry> clusters, users, contexts;
  std::string currentContext;
  std::vector<std::string> files;
};

base::Status mergeFile(Merged& m, std::string_view text, const std::string& name, const std::string& dir) {
  auto bad = [&](std::string_view field, std::string_view what) {
    return base::makeError(base::ErrorCode::kInvalidArgument, "kubeconfig {}: {}: {}", name, field, what);
  };
  auto doc = parseYaml(text);
  if (!doc) return std::move(doc).error().wrap("kubeconfig {}", name);
  m.files.push_back(name);
  if (doc->is_null()) return {};  // an empty file is allowed, as kubectl allows it
  if (!doc->is_object()) return bad("(top level)", "not a mapping");
  const json::object& top = doc->get_object();
  for (const char* list : {"clusters", "users", "contexts"}) {
    const json::value* v = top.if_contains(list);
    if (!v || v->is_null()) continue;
    if (!v->is_array()) return bad(list, "not a list");
    const std::string_view inner = std::string_view(list) == "clusters" ? "cluster"
                                   : std::string_view(list) == "users"  ? "user"
                                                                        : "context";
    auto& target = std::string_view(list) == "clusters" ? m.clusters : std::string_view(list) == "users" ? m.users : m.contexts;
    size_t i = 0;
    for (const json::value& e : v->get_array()) {
      std::string field = fmt::format("{}[{}]", list, i++);
      if (!e.is_object()) return bad(field, "not a mapping");
      const json::value* n = e.get_object().if_contains("name");
      if (!n || !n->is_string() || n->get_string().empty()) return bad(field + ".name", "missing");
      const json::value* body = e.get_object().if_contains(inner);
      if (body && !body->is_null() && !body->is_object()) return bad(field + "." + std::string(inner), "not a mapping");
      std::string key(n->get_string());
      if (target.count(key)) continue;  // the first file to name it wins
      target[key] = Entry{body && body->is_object() ? body->get_object() : json::object{}, name, dir,
                          field + "." + std::string(inner)};
    }
  }
  if (const json::value* cc = top.if_contains("current-context"); cc && !cc->is_null()) {
    if (!cc->is_string()) return bad("current-context", "not a string");
    if (m.currentContext.empty()) m.currentContext = std::string(cc->get_string());
  }
  return {};
}

// A string field, or "" when absent; an error when present but not a string.
base::Result<std::string> field(const Entry& e, std::string_view key) {
  const json::value* v = e.body.if_contains(key);
  if (!v || v->is_null()) return std::string();
  if (v->is_string()) return std::string(v->get_string());
  if (v->is_bool() || v->is_number()) {
    return base::makeError(base::ErrorCode::kInvalidArgument, "kubeconfig {}: {}.{}: not a string", e.file, e.field, key);
  }
  return base::makeError(base::ErrorCode::kInvalidArgument, "kubeconfig {}: {}.{}: not a string", e.file, e.field, key);
}

// PEM from "<key>-data" (base64) or "<key>" (a file).
base::Result<std::string> pem(const Entry& e, const std::string& key) {
  auto data = field(e, key + "-data");
  if (!data) return std::move(data).error();
  if (!data->empty()) {
    auto decoded = base::base64Decode(*data);
    if (!decoded) {
      return base::makeError(base::ErrorCode::kInvalidArgument, "kubeconfig {}: {}.{}-data: not base64", e.file,
                             e.field, key);
    }
    return *decoded;
  }
  auto file = field(e, key);
  if (!file) return std::move(file).error();
  if (file->empty()) return std::string();
  auto content = readWhole(resolve(e.dir, *file));
  if (!content) return std::move(content).error().wrap("kubeconfig {}: {}.{}", e.file, e.field, key);
  return content;
}

base::Result<RestConfig> build(const Merged& m, const std::string& contextOverride) {
  std::string names;
  for (const std::string& f : m.files) names += (names.empty() ? "" : ":") + f;
  std::string ctxName = contextOverride.empty() ? m.currentContext : contextOverride;
  if (ctxName.empty()) {
    return base::makeError(base::ErrorCode::kInvalidArgument, "kubeconfig {}: no current-context and none given", names);
  }
  auto ctx = m.contexts.find(ctxName);
  if (ctx == m.contexts.end()) {
    return base::makeError(base::ErrorCode::kNotFound, "kubeconfig {}: context {:?} not found", names, ctxName);
  }
  auto clusterName = field(ctx->second, "cluster");
  if (!clusterName) return std::move(clusterName).error();
  auto userName = field(ctx->second, "user");
  if (!userName) return std::move(userName).error();
  auto nsName = field(ctx->second, "namespace");
  if (!nsName) return std::move(nsName).error();
  auto cl = m.clusters.find(*clusterName);
  if (cl == m.clusters.end()) {
    return base::makeError(base::ErrorCode::kNotFound, "kubeconfig {}: {}.cluster: cluster {:?} not found",
                           ctx->second.file, ctx->second.field, *clusterName);
  }
  RestConfig cfg;
  cfg.source = fmt::format("kubeconfig {} (context {})", names, ctxName);
  if (!nsName->empty()) cfg.ns = *nsName;
  const Entry& c = cl->second;
  auto server = field(c, "server");
  if (!server) return std::move(server).error();
  if (server->empty()) {
    return base::makeError(base::ErrorCode::kInvalidArgument, "kubeconfig {}: {}.server: missing", c.file, c.field);
  }
  if (!server->starts_with("https://") && !server->starts_with("http://")) {
    return base::makeError(base::ErrorCode::kInvalidArgument, "kubeconfig {}: {}.server: {:?} is not an http(s) URL",
                           c.file, c.field, *server);
  }
  cfg.server = *server;
  while (!cfg.server.empty() && cfg.server.back() == '/') cfg.server.pop_back();
  auto ca = pem(c, "certificate-authority");
  if (!ca) return std::move(ca).error();
  cfg.caPem = *ca;
  if (const json::value* skip = c.body.if_contains("insecure-skip-tls-verify"); skip && !skip->is_null()) {
    if (!skip->is_bool()) {
      return base::makeError(base::ErrorCode::kInvalidArgument, "kubeconfig {}: {}.insecure-skip-tls-verify: not a bool",
                             c.file, c.field);
    }
    cfg.insecureSkipTlsVerify = skip->get_bool();
  }
  auto sni = field(c, "tls-server-name");
  if (!sni) return std::move(sni).error();
  cfg.tlsServerName = *sni;
  if (!userName->empty()) {
    auto us = m.users.find(*userName);
    if (us == m.users.end()) {
      return base::makeError(base::ErrorCode::kNotFound, "kubeconfig {}: {}.user: user {:?} not found",
                             ctx->second.file, ctx->second.field, *userName);
    }
    const Entry& u = us->second;
    auto cert = pem(u, "client-certificate");
    if (!cert) return std::move(cert).error();
    auto key = pem(u, "client-key");
    if (!key) return std::move(key).error();
    if (cert->empty() != key->empty()) {
      return base::makeError(base::ErrorCode::kInvalidArgument,
                             "kubeconfig {}: {}: client-certificate and client-key must be given together", u.file,
                             u.field);
    }
    cfg.clientCertPem = *cert;
    cfg.clientKeyPem = *key;
    auto token = field(u, "token");
    if (!token) return std::move(token).error();
    cfg.token = *token;
    auto tokenFile = field(u, "tokenFile");
    if (!tokenFile) return std::move(tokenFile).error();
    if (cfg.token.empty() && !tokenFile->empty()) {
      cfg.tokenFile = std::make_shared<TokenFile>(resolve(u.dir, *tokenFile));
      if (auto t = cfg.tokenFile->token(); !t) return std::move(t).error().wrap("kubeconfig {}: {}.tokenFile", u.file, u.field);
    }
    for (const char* unsupported : {"exec", "auth-provider"}) {
      if (u.body.contains(unsupported)) {
        return base::makeError(base::ErrorCode::kInvalidArgument, "kubeconfig {}: {}.{}: not supported", u.file,
                               u.field, unsupported);
      }
    }
  }
  return cfg;
}

}  // namespace

base::Result<std::string> TokenFile::token() {
  std::lock_guard g(mu_);
  auto now = std::chrono::steady_clock::now();
  if (mtimeNs_ >= 0 && now - checked_ < std::chrono::seconds(1)) return token_;
  checked_ = now;
  struct stat st;
  if (stat(path_.c_str(), &st) != 0) return base::Error::fromErrno(errno, "stat " + path_);
  // mtime alone is coarse (a clock tick): the inode and size change too when
  // the kubelet swaps the file in.
  int64_t mtime = (static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec) ^
                  (static_cast<int64_t>(st.st_ino) << 20) ^ static_cast<int64_t>(st.st_size);
  if (mtime == mtimeNs_) return token_;
  auto content = readWhole(path_);
  if (!content) return std::move(content).error();
  while (!content->empty() && (content->back() == '\n' || content->back() == '\r' || content->back() == ' ')) {
    content->pop_back();
  }
  if (content->empty()) return base::makeError(base::ErrorCode::kInvalidArgument, "token file {} is empty", path_);
  token_ = std::move(*content);
  mtimeNs_ = mtime;
  return token_;
}

base::Result<RestConfig> parseKubeconfig(std::string_view text, const std::string& name, const std::string& dir,
                                         const std::string& context) {
  Merged m;
  if (auto st = mergeFile(m, text, name, dir); !st) return std::move(st).error();
  return build(m, context);
}

base::Result<RestConfig> loadKubeconfig(const std::vector<std::string>& paths, const std::string& context) {
  Merged m;
  for (const std::string& p : paths) {
    if (p.empty()) continue;
    auto text = readWhole(p);
    if (!text) return std::move(text).error().wrap("kubeconfig");
    if (auto st = mergeFile(m, *text, p, dirOf(p)); !st) return std::move(st).error();
  }
  if (m.files.empty()) return base::makeError(base::ErrorCode::kInvalidArgument, "no kubeconfig file given");
  return build(m, context);
}

base::Result<RestConfig> inClusterConfig(const std::string& root) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (!host || !port || !*host || !*port) {
    return base::makeError(base::ErrorCode::kNotFound,
                           "not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set");
  }
  RestConfig cfg;
  std::string h(host);
  cfg.server = fmt::format("https://{}:{}", h.find(':') != std::string::npos ? "[" + h + "]" : h, port);
  cfg.tokenFile = std::make_shared<TokenFile>(root + "/token");
  if (auto t = cfg.tokenFile->token(); !t) return std::move(t).error().wrap("in-cluster config");
  auto ca = readWhole(root + "/ca.crt");
  if (!ca) return std::move(ca).error().wrap("in-cluster config");
  cfg.caPem = *ca;
  if (auto ns = readWhole(root + "/namespace"); ns && !ns->empty()) {
    cfg.ns = *ns;
    while (!cfg.ns.empty() && (cfg.ns.back() == '\n' || cfg.ns.back() == ' ')) cfg.ns.pop_back();
  }
  cfg.source = "in-cluster";
  return cfg;
}

base::Result<RestConfig> loadDefaultConfig(const std::string& context) {
  if (const char* env = std::getenv("KUBECONFIG"); env && *env) {
    std::vector<std::string> paths;
    std::string all(env);
    size_t start = 0;
    while (start <= all.size()) {
      size_t colon = all.find(':', start);
      std::string p = all.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      struct stat st;
      if (!p.empty() && stat(p.c_str(), &st) == 0) paths.push_back(p);  // missing files are skipped, as kubectl does
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
    if (!paths.empty()) return loadKubeconfig(paths, context);
  }
  if (const char* home = std::getenv("HOME"); home && *home) {
    std::string p = std::string(home) + "/.kube/config";
    struct stat st;
    if (stat(p.c_str(), &st) == 0) return loadKubeconfig({p}, context);
  }
  return inClusterConfig();
}

}  // namespace trellis::kube
