// The route table: which backend a request's host and path go to.
//
// The model is protocol-neutral so that Ingress rules and (later) Gateway API
// HTTPRoutes both compile into it: a Route is one host + one path match +
// weighted backends + a policy, and a Backend is a Service port resolved to
// endpoints. A table is built once, is immutable, and is swapped whole into
// the proxy threads (no locks on the request path).
//
// Matching follows the Ingress spec (networking.k8s.io/v1):
//   hosts  exact (case-insensitive, without port) before "*.suffix" (exactly
//          one DNS label in place of the '*') before the empty host (any);
//   paths  the longest match wins; Exact before Prefix on a tie; Prefix is
//          element-wise by '/' (trailing and repeated slashes ignored, "/"
//          matches everything); ImplementationSpecific is Prefix here;
//   ties   between routes with the same host, match type and path: the
//          oldest source wins and the newer is reported as a conflict.
// Lookups are hash lookups and a walk of a trie by path element: the cost of
// a match grows with the request path's depth, never with the rule count.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace trellis::ingress {

enum class PathMatch { kExact, kPrefix };
std::string_view pathMatchName(PathMatch m);

struct Endpoint {
  std::string ip;
  uint16_t port = 0;
  std::string hostPort;  // "10.0.0.1:8080" or "[fd00::1]:8080"
  bool ready = true;     // false: serving but terminating (used only when nothing is ready)
};

// The protocol spoken to a backend's endpoints.
enum class UpstreamProtocol { kHttp1, kH2c, kHttps };
std::string_view upstreamProtocolName(UpstreamProtocol p);

struct Backend {
  std::string ns, service;
  std::string port;  // as declared: a number or a port name
  UpstreamProtocol protocol = UpstreamProtocol::kHttp1;
  std::vector<Endpoint> endpoints;  // empty: the proxy answers 503
  std::string id() const { return ns + "/" + service + ":" + port; }
};

// Per-route settings from annotations (docs/ingress.md has the table).
struct RoutePolicy {
  bool sslRedirect = false;  // plain-HTTP requests get a 308 to https
  int64_t connectTimeoutMs = 5'000;
  int64_t readTimeoutMs = 60'000;   // upstream response (whole, for buffered ones; between reads otherwise)
  int64_t idleTimeoutMs = 60'000;   // upstream keep-alive connections
  uint64_t maxBodyBytes = 1 << 20;  // request body limit → 413
};

struct WeightedBackend {
  std::shared_ptr<const Backend> backend;
  uint32_t weight = 1;
};

struct Route {
  std::string host;  // "", "app.example.com" or "*.example.com" (lower-case)
  std::string path;  // as declared ("/" for a default backend)
  PathMatch match = PathMatch::kPrefix;
  std::vector<WeightedBackend> backends;
  std::shared_ptr<const RoutePolicy> policy;
  // Where it came from, for conflicts, metrics and the debug answer.
  std::string source;    // "default/web" (the Ingress)
  std::string rule;      // "spec.rules[0].http.paths[1]" or "spec.defaultBackend"
  int64_t created = 0;   // the source's creationTimestamp (unix seconds): older wins ties
};

// Hosts as requests carry them: lower-case, without the port.
std::string normalizeHost(std::string_view authority);
// The same into `out` (reusing its storage).
void normalizeHostInto(std::string_view authority, std::string& out);

// Hashes string keys so string_views look them up without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

class RouteTable {
 public:
  // Builds a table by adding groups of routes (one group per source, oldest
  // first). A group is taken whole or not at all.
  class Builder {
   public:
    // Adds every route of `group` unless one collides with a route already
    // added (same host, match type and normalized path); then adds none and
    // returns the colliding route's source and rule in `conflict`.
    bool add(std::vector<Route> group, std::string* conflict = nullptr);
    // A route for what no rule matches (an Ingress's spec.defaultBackend).
    bool setDefault(Route route, std::string* conflict = nullptr);
    std::shared_ptr<const RouteTable> build(uint64_t generation);

   private:
    std::shared_ptr<RouteTable> table_ = std::make_shared<RouteTable>();
  };

  struct Match {
    const Route* route = nullptr;  // null: no rule and no default backend
    bool viaDefault = false;
    std::string why;  // filled only by explain()
  };
  // `host`: as normalizeHost() gives it; `path`: the request path without query.
  Match match(std::string_view host, std::string_view path) const;
  // The same, with the reasoning in `why`.
  Match explain(std::string_view host, std::string_view path) const;

  uint64_t generation() const { return generation_; }
  size_t size() const { return routes_.size(); }
  const std::vector<std::shared_ptr<const Route>>& routes() const { return routes_; }

  RouteTable() = default;

 private:
  struct Node {
    StringMap<std::unique_ptr<Node>> children;
    const Route* route = nullptr;
  };
  struct HostRoutes {
    StringMap<const Route*> exact;    // by path as declared
    Node prefix;                                          // by path element
  };
  enum class HostKind { kExact, kWildcard, kAny };
  HostRoutes* hostRoutes(const std::string& host, bool create);
  const Route* find(const HostRoutes& h, std::string_view path, bool* exact) const;
  Match lookup(std::string_view host, std::string_view path, std::string* why) const;
  const Route** slot(const Route& r, bool create);

  StringMap<HostRoutes> exactHosts_;
  StringMap<HostRoutes> wildcardHosts_;  // by the suffix after "*."
  HostRoutes anyHost_;
  bool anyHostUsed_ = false;
  std::vector<std::shared_ptr<const Route>> routes_;
  std::shared_ptr<const Route> default_;
  uint64_t generation_ = 0;
};

}  // namespace trellis::ingress
