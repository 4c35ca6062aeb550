#include "servicelb/pools.h"

#include <algorithm>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "common/kube/yaml.h"

namespace trellis::servicelb {
namespace json = boost::json;
using base::ErrorCode;

namespace {

base::Error invalid(std::string message) { return base::Error(ErrorCode::kInvalidArgument, std::move(message)); }

base::Result<IpRange> parseRange(std::string_view pool, std::string_view text) {
  size_t dash = text.find('-');
  if (dash == std::string_view::npos) {
    auto cidr = base::parseCidr(text);
    if (!cidr) return invalid(fmt::format("pool {:?}: {:?} is not a CIDR or a range a.b.c.d-a.b.c.e", pool, text));
    base::IpAddr last = cidr->network;
    last.value += cidr->size() - 1;
    return IpRange{cidr->network, last};
  }
  auto first = base::parseIp(text.substr(0, dash)), last = base::parseIp(text.substr(dash + 1));
  if (!first || !last || first->v6 != last->v6 || first->value > last->value) {
    return invalid(fmt::format("pool {:?}: {:?} is not a range of one family, first ≤ last", pool, text));
  }
  return IpRange{*first, *last};
}

}  // namespace

bool Pool::contains(const base::IpAddr& a) const {
  return std::any_of(ranges.begin(), ranges.end(), [&](const IpRange& r) { return r.contains(a); });
}

base::Result<std::vector<Pool>> parsePools(std::string_view yaml) {
  auto doc = kube::parseYaml(yaml);
  if (!doc) return invalid("pools: " + doc.error().message());
  if (doc->is_null()) return std::vector<Pool>();
  if (!doc->is_object()) return invalid("pools: a mapping of pool name to addresses");
  std::vector<Pool> pools;
  for (const auto& [name, value] : doc->as_object()) {
    Pool p{std::string(name), {}};
    std::vector<std::string_view> items;
    if (value.is_string()) {
      items.push_back(value.get_string());
    } else if (value.is_array()) {
      for (const json::value& v : value.as_array()) {
        if (!v.is_string()) return invalid(fmt::format("pool {:?}: list items are CIDRs or ranges", p.name));
        items.push_back(v.get_string());
      }
    } else {
      return invalid(fmt::format("pool {:?}: a CIDR, a range or a list of them", p.name));
    }
    if (items.empty()) return invalid(fmt::format("pool {:?}: no addresses", p.name));
    for (std::string_view item : items) {
      auto r = parseRange(p.name, item);
      if (!r) return std::move(r).error();
      p.ranges.push_back(*r);
    }
    pools.push_back(std::move(p));
  }
  // An address in two pools (or twice in one) would be given twice.
  struct Span {
    IpRange range;
    const std::string* pool;
  };
  std::vector<Span> spans;
  for (const Pool& p : pools) {
    for (const IpRange& r : p.ranges) spans.push_back({r, &p.name});
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return std::pair(a.range.first.v6, a.range.first.value) < std::pair(b.range.first.v6, b.range.first.value);
  });
  for (size_t i = 1; i < spans.size(); ++i) {
    const Span &a = spans[i - 1], &b = spans[i];
    if (a.range.first.v6 == b.range.first.v6 && b.range.first.value <= a.range.last.value) {
      return invalid(fmt::format("pools {:?} and {:?} overlap at {}", *a.pool, *b.pool, base::formatIp(b.range.first)));
    }
  }
  return pools;
}

// ---- Allocator

void Allocator::setPools(std::vector<Pool> pools) { pools_ = std::move(pools); }

const Pool* Allocator::pool(const std::string& name) const {
  for (const Pool& p : pools_) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::optional<std::string> Allocator::holder(const base::IpAddr& a) const {
  auto it = holders_.find({a.v6, a.value});
  if (it == holders_.end()) return std::nullopt;
  return it->second;
}

const std::vector<base::IpAddr>* Allocator::held(const std::string& service) const {
  auto it = held_.find(service);
  return it == held_.end() ? nullptr : &it->second;
}

void Allocator::release(const std::string& service) {
  auto it = held_.find(service);
  if (it == held_.end()) return;
  for (const base::IpAddr& a : it->second) holders_.erase({a.v6, a.value});
  held_.erase(it);
}

bool Allocator::satisfies(const std::vector<base::IpAddr>& addrs, const Pool& p, const AddressRequest& request) const {
  if (addrs.empty()) return false;
  for (const base::IpAddr& a : addrs) {
    if (!p.contains(a)) return false;
  }
  if (request.wanted.empty()) return true;
  if (addrs.size() != request.wanted.size()) return false;
  return std::all_of(request.wanted.begin(), request.wanted.end(),
                     [&](const base::IpAddr& w) { return std::find(addrs.begin(), addrs.end(), w) != addrs.end(); });
}

bool Allocator::adopt(const std::string& service, const std::vector<base::IpAddr>& addrs, const AddressRequest& request) {
  const Pool* p = pool(request.pool.empty() ? kDefaultPool : request.pool);
  if (!p || !satisfies(addrs, *p, request)) return false;
  for (const base::IpAddr& a : addrs) {
    auto h = holder(a);
    if (h && *h != service) return false;
  }
  release(service);
  for (const base::IpAddr& a : addrs) holders_[{a.v6, a.value}] = service;
  held_[service] = addrs;
  return true;
}

base::Result<std::vector<base::IpAddr>> Allocator::assign(const std::string& service, const AddressRequest& request) {
  std::string name = request.pool.empty() ? kDefaultPool : request.pool;
  const Pool* p = pool(name);
  if (!p) {
    release(service);
    return base::Error(ErrorCode::kNotFound, fmt::format("no address pool {:?}", name));
  }
  if (auto* mine = held(service); mine && satisfies(*mine, *p, request)) return *mine;
  std::vector<base::IpAddr> got;
  if (!request.wanted.empty()) {
    for (const base::IpAddr& w : request.wanted) {
      if (!p->contains(w)) {
        release(service);
        return base::Error(ErrorCode::kInvalidArgument,
                           fmt::format("{} is not in address pool {:?}", base::formatIp(w), name));
      }
      if (auto h = holder(w); h && *h != service) {
        release(service);
        return base::Error(ErrorCode::kAlreadyExists, fmt::format("{} is already in use by {}", base::formatIp(w), *h));
      }
      got.push_back(w);
    }
  } else {
    // The lowest free address (a pool is small: a linear walk is enough).
    for (const IpRange& r : p->ranges) {
      for (base::u128 v = r.first.value;; ++v) {
        base::IpAddr a{r.first.v6, v};
        auto h = holder(a);
        if (!h || *h == service) {
          got.push_back(a);
          break;
        }
        if (v == r.last.value) break;
      }
      if (!got.empty()) break;
    }
    if (got.empty()) {
      release(service);
      return base::Error(ErrorCode::kResourceExhausted, fmt::format("address pool {:?} has no free address", name));
    }
  }
  release(service);
  for (const base::IpAddr& a : got) holders_[{a.v6, a.value}] = service;
  held_[service] = got;
  return got;
}

}  // namespace trellis::servicelb
