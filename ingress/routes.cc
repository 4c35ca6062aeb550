#include "ingress/routes.h"

#include <fmt/format.h>

namespace trellis::ingress {

std::string_view pathMatchName(PathMatch m) { return m == PathMatch::kExact ? "Exact" : "Prefix"; }

std::string_view upstreamProtocolName(UpstreamProtocol p) {
  switch (p) {
    case UpstreamProtocol::kHttp1: return "http/1.1";
    case UpstreamProtocol::kH2c: return "h2c";
    case UpstreamProtocol::kHttps: return "https";
  }
  return "?";
}

std::string normalizeHost(std::string_view authority) {
  std::string out;
  normalizeHostInto(authority, out);
  return out;
}

void normalizeHostInto(std::string_view authority, std::string& out) {
  std::string_view h = authority;
  if (!h.empty() && h.front() == '[') {  // [v6]:port
    size_t close = h.find(']');
    h = close == std::string_view::npos ? h : h.substr(0, close + 1);
  } else if (size_t colon = h.rfind(':'); colon != std::string_view::npos) {
    h = h.substr(0, colon);
  }
  if (!h.empty() && h.back() == '.') h.remove_suffix(1);  // "example.com." names the same host
  out.assign(h);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
}

namespace {

// Calls fn with each non-empty element of `path` split by '/'; stops when fn returns false.
template <typename Fn>
void forEachElement(std::string_view path, Fn&& fn) {
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i && !fn(path.substr(i, j - i))) return;
    i = j;
  }
}

std::string prefixKey(std::string_view path) {
  std::string key;
  forEachElement(path, [&](std::string_view e) {
    key += '/';
    key += e;
    return true;
  });
  return key.empty() ? "/" : key;
}

std::string describe(const Route& r) { return fmt::format("{} {}", r.source, r.rule); }

}  // namespace

RouteTable::HostRoutes* RouteTable::hostRoutes(const std::string& host, bool create) {
  if (host.empty()) {
    if (create) anyHostUsed_ = true;
    return &anyHost_;
  }
  auto& map = host.starts_with("*.") ? wildcardHosts_ : exactHosts_;
  std::string key = host.starts_with("*.") ? host.substr(2) : host;
  if (!create) {
    auto it = map.find(key);
    return it == map.end() ? nullptr : &it->second;
  }
  return &map[key];
}

// The slot a route occupies: the exact-path entry, or the trie node of its prefix.
const Route** RouteTable::slot(const Route& r, bool create) {
  HostRoutes* h = hostRoutes(r.host, create);
  if (!h) return nullptr;
  if (r.match == PathMatch::kExact) {
    if (!create) {
      auto it = h->exact.find(r.path);
      return it == h->exact.end() ? nullptr : &it->second;
    }
    return &h->exact.try_emplace(r.path, nullptr).first->second;
  }
  Node* node = &h->prefix;
  bool missing = false;
  forEachElement(r.path, [&](std::string_view e) {
    auto it = node->children.find(e);
    if (it == node->children.end()) {
      if (!create) {
        missing = true;
        return false;
      }
      it = node->children.emplace(std::string(e), std::make_unique<Node>()).first;
    }
    node = it->second.get();
    return true;
  });
  return missing ? nullptr : &node->route;
}

bool RouteTable::Builder::add(std::vector<Route> group, std::string* conflict) {
  RouteTable& t = *table_;
  // First check the whole group (against the table and against itself).
  std::vector<std::pair<std::string, const Route*>> seen;
  for (const Route& r : group) {
    if (const Route** s = t.slot(r, false); s && *s) {
      if (conflict) *conflict = describe(**s);
      return false;
    }
    std::string key = fmt::format("{}\n{}\n{}", r.host, pathMatchName(r.match),
                                  r.match == PathMatch::kExact ? r.path : prefixKey(r.path));
    for (const auto& [k, other] : seen) {
      if (k == key) {
        if (conflict) *conflict = describe(*other);
        return false;
      }
    }
    seen.emplace_back(std::move(key), &r);
  }
  for (Route& r : group) {
    auto owned = std::make_shared<const Route>(std::move(r));
    *t.slot(*owned, true) = owned.get();
    t.routes_.push_back(std::move(owned));
  }
  return true;
}

bool RouteTable::Builder::setDefault(Route route, std::string* conflict) {
  if (table_->default_) {
    if (conflict) *conflict = describe(*table_->default_);
    return false;
  }
  table_->default_ = std::make_shared<const Route>(std::move(route));
  return true;
}

std::shared_ptr<const RouteTable> RouteTable::Builder::build(uint64_t generation) {
  table_->generation_ = generation;
  auto t = std::move(table_);
  table_ = std::make_shared<RouteTable>();
  return t;
}

const Route* RouteTable::find(const HostRoutes& h, std::string_view path, bool* exact) const {
  if (!h.exact.empty()) {
    if (auto it = h.exact.find(path); it != h.exact.end()) {
      *exact = true;
      return it->second;
    }
  }
  *exact = false;
  const Node* node = &h.prefix;
  const Route* best = node->route;
  forEachElement(path, [&](std::string_view e) {
    auto it = node->children.find(e);
    if (it == node->children.end()) return false;
    node = it->second.get();
    if (node->route) best = node->route;
    return true;
  });
  return best;
}

RouteTable::Match RouteTable::lookup(std::string_view host, std::string_view path, std::string* why) const {
  Match m;
  bool exact = false;
  if (auto it = exactHosts_.find(host); it != exactHosts_.end()) {
    if ((m.route = find(it->second, path, &exact))) {
      if (why) *why = fmt::format("host {:?} matched exactly; path {:?} matched {} {:?} (the longest match)", host, path,
                                  pathMatchName(m.route->match), m.route->path);
      return m;
    }
  }
  if (size_t dot = host.find('.'); dot != std::string_view::npos && dot > 0 && !wildcardHosts_.empty()) {
    if (auto it = wildcardHosts_.find(host.substr(dot + 1)); it != wildcardHosts_.end()) {
      if ((m.route = find(it->second, path, &exact))) {
        if (why) *why = fmt::format("no exact host rule matched; host {:?} matched wildcard {:?}; path {:?} matched {} {:?}",
                                    host, m.route->host, path, pathMatchName(m.route->match), m.route->path);
        return m;
      }
    }
  }
  if (anyHostUsed_ && (m.route = find(anyHost_, path, &exact))) {
    if (why) *why = fmt::format("no host-specific rule matched; the rule without host matched path {:?} by {} {:?}", path,
                                pathMatchName(m.route->match), m.route->path);
    return m;
  }
  if (default_) {
    m.route = default_.get();
    m.viaDefault = true;
    if (why) *why = fmt::format("no rule matched host {:?} and path {:?}; the default backend of {} serves it", host, path,
                                default_->source);
    return m;
  }
  if (why) *why = fmt::format("no rule matched host {:?} and path {:?} and no Ingress has a default backend: 404", host, path);
  return m;
}

RouteTable::Match RouteTable::match(std::string_view host, std::string_view path) const {
  return lookup(host, path, nullptr);
}

RouteTable::Match RouteTable::explain(std::string_view host, std::string_view path) const {
  std::string why;
  Match m = lookup(host, path, &why);
  m.why = std::move(why);
  return m;
}

}  // namespace trellis::ingress
