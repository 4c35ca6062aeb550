#include "ingress/translate.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/kube/client.h"
#include "common/kube/object.h"

namespace trellis::ingress {

namespace json = boost::json;
using base::ErrorCode;
using base::makeError;

namespace {

std::string_view className(const json::object& ing) {
  std::string_view c = kube::str(ing, {"spec", "ingressClassName"});
  return c.empty() ? kube::annotation(ing, "kubernetes.io/ingress.class") : c;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// Annotations under trellis.dev/ → the route policy.
base::Result<RoutePolicy> policyOf(const json::object& ing, bool hasTls) {
  RoutePolicy p;
  p.sslRedirect = hasTls;
  auto bad = [&](std::string_view key, const base::Error& e) {
    return makeError(ErrorCode::kInvalidArgument, "annotation {}: {}", key, e.message());
  };
  if (auto v = kube::annotation(ing, "trellis.dev/ssl-redirect"); !v.empty()) {
    if (v != "true" && v != "false") {
      return makeError(ErrorCode::kInvalidArgument, "annotation trellis.dev/ssl-redirect: {:?} is not true or false", v);
    }
    p.sslRedirect = v == "true" && hasTls;
  }
  struct Timeout {
    std::string_view key;
    int64_t* into;
  } timeouts[] = {{"trellis.dev/proxy-connect-timeout", &p.connectTimeoutMs},
                  {"trellis.dev/proxy-read-timeout", &p.readTimeoutMs},
                  {"trellis.dev/proxy-idle-timeout", &p.idleTimeoutMs}};
  for (const Timeout& t : timeouts) {
    if (auto v = kube::annotation(ing, t.key); !v.empty()) {
      auto ms = parseDurationMs(v);
      if (!ms) return bad(t.key, ms.error());
      *t.into = *ms;
    }
  }
  if (auto v = kube::annotation(ing, "trellis.dev/proxy-body-size"); !v.empty()) {
    auto n = parseSize(v);
    if (!n) return bad("trellis.dev/proxy-body-size", n.error());
    p.maxBodyBytes = *n;
  }
  return p;
}

struct BackendCache {
  const Inputs& in;
  std::map<std::string, std::shared_ptr<const Backend>> built;

  // A Service backend (spec.rules[].http.paths[].backend or spec.defaultBackend).
  base::Result<std::shared_ptr<const Backend>> resolve(const json::object& ing, const json::object& backend,
                                                       std::string* reason) {
    std::string_view ns = kube::objectNamespace(ing);
    const json::object* svcRef = kube::child(backend, {"service"});
    if (!svcRef) {
      *reason = "UnsupportedBackend";
      return makeError(ErrorCode::kInvalidArgument, "only Service backends are supported (not backend.resource)");
    }
    std::string name(kube::str(*svcRef, {"name"}));
    int64_t number = kube::integer(*svcRef, {"port", "number"});
    std::string_view portName = kube::str(*svcRef, {"port", "name"});
    std::string port = number > 0 ? std::to_string(number) : std::string(portName);
    // The protocol annotation is the Ingress's: part of what is built.
    std::string key = fmt::format("{}/{}:{}|{}", ns, name, port, kube::annotation(ing, "trellis.dev/backend-protocol"));
    if (auto it = built.find(key); it != built.end()) return it->second;

    Object svc = in.service(fmt::format("{}/{}", ns, name));
    if (!svc) {
      *reason = "ServiceNotFound";
      return makeError(ErrorCode::kNotFound, "Service {}/{} not found", ns, name);
    }
    const json::object* svcPort = nullptr;
    if (const json::array* ports = kube::array(*svc, {"spec", "ports"})) {
      for (const json::value& v : *ports) {
        if (!v.is_object()) continue;
        const json::object& sp = v.get_object();
        if ((number > 0 && kube::integer(sp, {"port"}) == number) || (number <= 0 && kube::str(sp, {"name"}) == portName)) {
          svcPort = &sp;
          break;
        }
      }
    }
    if (!svcPort) {
      *reason = "PortNotFound";
      return makeError(ErrorCode::kNotFound, "Service {}/{} has no port {}", ns, name, port);
    }
    auto b = std::make_shared<Backend>();
    b->ns = std::string(ns);
    b->service = name;
    b->port = port;
    std::string_view app = kube::str(*svcPort, {"appProtocol"});
    std::string proto = lower(kube::annotation(ing, "trellis.dev/backend-protocol"));
    if (proto == "https" || app == "https" || app == "kubernetes.io/wss") b->protocol = UpstreamProtocol::kHttps;
    else if (proto == "h2c" || proto == "grpc" || app == "kubernetes.io/h2c") b->protocol = UpstreamProtocol::kH2c;
    else if (!proto.empty() && proto != "http") {
      *reason = "BadAnnotation";
      return makeError(ErrorCode::kInvalidArgument, "annotation trellis.dev/backend-protocol: {:?} is not HTTP, HTTPS or H2C",
                       proto);
    }
    // Endpoints: the slices' port of the same name as the Service port.
    std::string_view wantName = kube::str(*svcPort, {"name"});
    std::vector<Endpoint> ready, terminating;
    for (const Object& slice : in.endpointSlices(fmt::format("{}/{}", ns, name))) {
      int64_t target = 0;
      if (const json::array* ports = kube::array(*slice, {"ports"})) {
        for (const json::value& v : *ports) {
          if (v.is_object() && kube::str(v.get_object(), {"name"}) == wantName) target = kube::integer(v.get_object(), {"port"});
        }
      }
      const json::array* eps = kube::array(*slice, {"endpoints"});
      if (target <= 0 || target > 65535 || !eps) continue;
      bool v6 = kube::str(*slice, {"addressType"}) == "IPv6";
      for (const json::value& v : *eps) {
        if (!v.is_object()) continue;
        const json::object& ep = v.get_object();
        const json::array* addrs = kube::array(ep, {"addresses"});
        if (!addrs || addrs->empty() || !addrs->front().is_string()) continue;
        bool isReady = kube::boolean(ep, {"conditions", "ready"}, true);
        bool serving = kube::boolean(ep, {"conditions", "serving"}, isReady);
        bool term = kube::boolean(ep, {"conditions", "terminating"}, false);
        Endpoint e;
        e.ip = std::string(addrs->front().get_string());
        e.port = static_cast<uint16_t>(target);
        e.hostPort = v6 ? fmt::format("[{}]:{}", e.ip, target) : fmt::format("{}:{}", e.ip, target);
        e.ready = isReady;
        if (isReady) ready.push_back(std::move(e));
        else if (serving && term) terminating.push_back(std::move(e));
      }
    }
    b->endpoints = ready.empty() ? std::move(terminating) : std::move(ready);
    std::sort(b->endpoints.begin(), b->endpoints.end(),
              [](const Endpoint& a, const Endpoint& c) { return a.hostPort < c.hostPort; });
    b->endpoints.erase(std::unique(b->endpoints.begin(), b->endpoints.end(),
                                   [](const Endpoint& a, const Endpoint& c) { return a.hostPort == c.hostPort; }),
                       b->endpoints.end());
    built.emplace(key, b);
    return std::shared_ptr<const Backend>(b);
  }
};

int64_t createdAt(const json::object& o) {
  return kube::parseRfc3339(kube::str(o, {"metadata", "creationTimestamp"})).value_or(0);
}

}  // namespace

bool admitted(const json::object& ing, const std::string& name, const json::object* cls) {
  if (!cls || kube::str(*cls, {"spec", "controller"}) != kControllerName) return false;
  std::string_view c = className(ing);
  if (!c.empty()) return c == name;
  return kube::annotation(*cls, kDefaultClassAnnotation) == "true";
}

std::vector<std::string> tlsSecretsOf(const json::object& ing) {
  std::vector<std::string> out;
  if (const json::array* tls = kube::array(ing, {"spec", "tls"})) {
    for (const json::value& v : *tls) {
      if (!v.is_object()) continue;
      std::string_view s = kube::str(v.get_object(), {"secretName"});
      if (!s.empty()) out.push_back(fmt::format("{}/{}", kube::objectNamespace(ing), s));
    }
  }
  return out;
}

Translation translate(const Inputs& in, uint64_t generation) {
  Translation out;
  std::vector<Object> order = in.ingresses;
  std::sort(order.begin(), order.end(), [](const Object& a, const Object& b) {
    int64_t ca = createdAt(*a), cb = createdAt(*b);
    return ca != cb ? ca < cb : kube::objectKey(*a) < kube::objectKey(*b);
  });
  RouteTable::Builder builder;
  BackendCache backends{in, {}};
  for (const Object& obj : order) {
    const json::object& ing = *obj;
    std::string key = kube::objectKey(ing);
    auto fail = [&](std::string reason, std::string message) {
      out.problems.push_back({key, std::move(reason), std::move(message)});
    };
    // TLS first: every named Secret must be a usable kubernetes.io/tls pair.
    std::map<std::string, std::shared_ptr<http::ServerCertificate>> certs;
    std::set<std::string> tlsHosts;
    bool ok = true;
    if (const json::array* tls = kube::array(ing, {"spec", "tls"})) {
      for (size_t i = 0; i < tls->size() && ok; ++i) {
        if (!(*tls)[i].is_object()) continue;
        const json::object& t = (*tls)[i].get_object();
        std::string_view secret = kube::str(t, {"secretName"});
        std::vector<std::string> hosts;
        if (const json::array* hs = kube::array(t, {"hosts"})) {
          for (const json::value& h : *hs) {
            if (h.is_string()) hosts.push_back(lower(h.get_string()));
          }
        }
        for (const std::string& h : hosts) tlsHosts.insert(h);
        if (secret.empty()) continue;  // the default certificate serves these hosts
        std::string skey = fmt::format("{}/{}", kube::objectNamespace(ing), secret);
        std::shared_ptr<const Certificate> c = in.certificate(skey);
        if (!c || !c->cert) {
          fail("BadTLSSecret", c ? fmt::format("spec.tls[{}]: Secret {}: {}", i, skey, c->error)
                                 : fmt::format("spec.tls[{}]: Secret {} not found", i, skey));
          ok = false;
          break;
        }
        for (const std::string& h : hosts) certs.emplace(h, c->cert);
      }
    }
    if (!ok) continue;
    auto policyOrError = [&](std::string_view host) { return policyOf(ing, tlsHosts.count(std::string(host)) > 0); };

    std::vector<Route> routes;
    std::optional<Route> defaultRoute;
    if (const json::object* def = kube::child(ing, {"spec", "defaultBackend"})) {
      std::string reason;
      auto b = backends.resolve(ing, *def, &reason);
      auto pol = policyOrError("");
      if (!pol) {
        fail("BadAnnotation", pol.error().message());
        continue;
      }
      if (!b) {
        fail(reason, fmt::format("spec.defaultBackend: {}", b.error().message()));
        continue;
      }
      Route r;
      r.path = "/";
      r.backends.push_back({*b, 1});
      r.policy = std::make_shared<const RoutePolicy>(*pol);
      r.source = key;
      r.rule = "spec.defaultBackend";
      r.created = createdAt(ing);
      defaultRoute = std::move(r);
    }
    if (const json::array* rules = kube::array(ing, {"spec", "rules"})) {
      for (size_t i = 0; i < rules->size() && ok; ++i) {
        if (!(*rules)[i].is_object()) continue;
        const json::object& rule = (*rules)[i].get_object();
        std::string host = lower(kube::str(rule, {"host"}));
        auto pol = policyOrError(host);
        if (!pol) {
          fail("BadAnnotation", pol.error().message());
          ok = false;
          break;
        }
        auto shared = std::make_shared<const RoutePolicy>(*pol);
        const json::array* paths = kube::array(rule, {"http", "paths"});
        for (size_t j = 0; paths && j < paths->size(); ++j) {
          if (!(*paths)[j].is_object()) continue;
          const json::object& p = (*paths)[j].get_object();
          std::string where = fmt::format("spec.rules[{}].http.paths[{}]", i, j);
          std::string reason;
          const json::object* be = kube::child(p, {"backend"});
          auto b = be ? backends.resolve(ing, *be, &reason)
                      : base::Result<std::shared_ptr<const Backend>>(makeError(ErrorCode::kInvalidArgument, "no backend"));
          if (!b) {
            fail(reason.empty() ? "UnsupportedBackend" : reason, fmt::format("{}: {}", where, b.error().message()));
            ok = false;
            break;
          }
          Route r;
          r.host = host;
          r.path = std::string(kube::str(p, {"path"}));
          if (r.path.empty()) r.path = "/";
          r.match = kube::str(p, {"pathType"}) == "Exact" ? PathMatch::kExact : PathMatch::kPrefix;
          r.backends.push_back({*b, 1});
          r.policy = shared;
          r.source = key;
          r.rule = std::move(where);
          r.created = createdAt(ing);
          routes.push_back(std::move(r));
        }
      }
    }
    if (!ok) continue;
    std::string conflict;
    if (!builder.add(std::move(routes), &conflict)) {
      fail("RuleConflict", fmt::format("a rule has the same host, path type and path as {} (older, so it wins)", conflict));
      continue;
    }
    if (defaultRoute && !builder.setDefault(std::move(*defaultRoute), &conflict)) {
      // The rules went in; the default backend of an older Ingress stays.
      fail("RuleConflict", fmt::format("spec.defaultBackend: {} already has the default backend (older, so it wins)",
                                       conflict));
    }
    for (auto& [h, c] : certs) out.certificates.emplace(h, c);
    out.served.insert(key);
  }
  out.table = builder.build(generation);
  return out;
}

base::Result<int64_t> parseDurationMs(std::string_view text) {
  int64_t scale = 1000;
  std::string_view num = text;
  if (text.ends_with("ms")) {
    scale = 1, num.remove_suffix(2);
  } else if (text.ends_with("s")) {
    num.remove_suffix(1);
  } else if (text.ends_with("m")) {
    scale = 60'000, num.remove_suffix(1);
  }
  if (num.empty() || num.size() > 9 || !std::all_of(num.begin(), num.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return makeError(ErrorCode::kInvalidArgument, "{:?} is not a duration (like 30s, 500ms or 2m)", text);
  }
  int64_t v = 0;
  for (char c : num) v = v * 10 + (c - '0');
  if (v == 0) return makeError(ErrorCode::kInvalidArgument, "{:?}: a timeout must be positive", text);
  return v * scale;
}

base::Result<uint64_t> parseSize(std::string_view text) {
  uint64_t scale = 1;
  std::string_view num = text;
  if (!num.empty()) {
    switch (num.back()) {
      case 'k': case 'K': scale = 1ull << 10; num.remove_suffix(1); break;
      case 'm': case 'M': scale = 1ull << 20; num.remove_suffix(1); break;
      case 'g': case 'G': scale = 1ull << 30; num.remove_suffix(1); break;
      default: break;
    }
  }
  if (num.empty() || num.size() > 12 || !std::all_of(num.begin(), num.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return makeError(ErrorCode::kInvalidArgument, "{:?} is not a size (like 1048576, 8k, 1m or 1g)", text);
  }
  uint64_t v = 0;
  for (char c : num) v = v * 10 + static_cast<uint64_t>(c - '0');
  return v * scale;
}

}  // namespace trellis::ingress
