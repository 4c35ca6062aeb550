#include "apiserver-lite/registry/patch.h"

#include <fmt/format.h>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include <algorithm>

namespace trellis::apiserver::registry {

namespace json = boost::json;
using base::ErrorCode;
using base::makeError;

// ---------------------------------------------------------------- merge patch

namespace {

json::value mergeValue(json::value target, const json::value& patch) {
  if (!patch.is_object()) return patch;
  if (!target.is_object()) target = json::object();
  json::object& t = target.as_object();
  for (const auto& kv : patch.as_object()) {
    if (kv.value().is_null()) {
      t.erase(kv.key());
    } else {
      auto it = t.find(kv.key());
      json::value cur = it != t.end() ? std::move(it->value()) : json::value();
      t[kv.key()] = mergeValue(std::move(cur), kv.value());
    }
  }
  return target;
}

}  // namespace

base::Result<json::value> applyMergePatch(json::value target, const json::value& patch) {
  if (!patch.is_object()) return makeError(ErrorCode::kInvalidArgument, "a merge patch must be a JSON object");
  return mergeValue(std::move(target), patch);
}

// ---------------------------------------------------------------- JSON patch

namespace {

base::Result<std::vector<std::string>> parsePointer(std::string_view ptr) {
  std::vector<std::string> tokens;
  if (ptr.empty()) return tokens;
  if (ptr.front() != '/') return makeError(ErrorCode::kInvalidArgument, "JSON pointer {:?} must start with /", ptr);
  ptr.remove_prefix(1);
  for (;;) {
    size_t slash = ptr.find('/');
    std::string_view raw = ptr.substr(0, slash);
    std::string tok;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '~') {
        if (i + 1 < raw.size() && raw[i + 1] == '0') tok += '~';
        else if (i + 1 < raw.size() && raw[i + 1] == '1') tok += '/';
        else return makeError(ErrorCode::kInvalidArgument, "invalid escape in JSON pointer {:?}", ptr);
        ++i;
      } else {
        tok += raw[i];
      }
    }
    tokens.push_back(std::move(tok));
    if (slash == std::string_view::npos) break;
    ptr.remove_prefix(slash + 1);
  }
  return tokens;
}

base::Result<size_t> arrayIndex(const std::string& tok, size_t size, bool allowEnd) {
  if (tok == "-" && allowEnd) return size;
  if (tok.empty() || tok.size() > 9 || !std::all_of(tok.begin(), tok.end(), ::isdigit) || (tok.size() > 1 && tok[0] == '0')) {
    return makeError(ErrorCode::kInvalidArgument, "invalid array index {:?}", tok);
  }
  size_t i = std::stoul(tok);
  if (i > size || (i == size && !allowEnd)) return makeError(ErrorCode::kInvalidArgument, "array index {} out of bounds", i);
  return i;
}

// The parent container of the pointer's last token.
base::Result<json::value*> parentOf(json::value& root, const std::vector<std::string>& toks) {
  json::value* cur = &root;
  for (size_t i = 0; i + 1 < toks.size(); ++i) {
    if (cur->is_object()) {
      auto it = cur->as_object().find(toks[i]);
      if (it == cur->as_object().end()) return makeError(ErrorCode::kInvalidArgument, "path element {:?} not found", toks[i]);
      cur = &it->value();
    } else if (cur->is_array()) {
      auto idx = arrayIndex(toks[i], cur->as_array().size(), false);
      if (!idx) return std::move(idx).error();
      cur = &cur->as_array()[*idx];
    } else {
      return makeError(ErrorCode::kInvalidArgument, "path element {:?} is not a container", toks[i]);
    }
  }
  return cur;
}

base::Result<json::value> getAt(json::value& root, const std::vector<std::string>& toks) {
  if (toks.empty()) return root;
  auto parent = parentOf(root, toks);
  if (!parent) return std::move(parent).error();
  json::value& p = **parent;
  if (p.is_object()) {
    auto it = p.as_object().find(toks.back());
    if (it == p.as_object().end()) return makeError(ErrorCode::kInvalidArgument, "path {:?} not found", toks.back());
    return it->value();
  }
  if (p.is_array()) {
    auto idx = arrayIndex(toks.back(), p.as_array().size(), false);
    if (!idx) return std::move(idx).error();
    return p.as_array()[*idx];
  }
  return makeError(ErrorCode::kInvalidArgument, "path {:?} is not in a container", toks.back());
}

base::Status addAt(json::value& root, const std::vector<std::string>& toks, json::value v) {
  if (toks.empty()) {
    root = std::move(v);
    return {};
  }
  auto parent = parentOf(root, toks);
  if (!parent) return std::move(parent).error();
  json::value& p = **parent;
  if (p.is_object()) {
    p.as_object()[toks.back()] = std::move(v);
    return {};
  }
  if (p.is_array()) {
    auto idx = arrayIndex(toks.back(), p.as_array().size(), true);
    if (!idx) return std::move(idx).error();
    p.as_array().insert(p.as_array().begin() + static_cast<long>(*idx), std::move(v));
    return {};
  }
  return makeError(ErrorCode::kInvalidArgument, "cannot add to a non-container at {:?}", toks.back());
}

base::Status removeAt(json::value& root, const std::vector<std::string>& toks) {
  if (toks.empty()) return makeError(ErrorCode::kInvalidArgument, "cannot remove the whole document");
  auto parent = parentOf(root, toks);
  if (!parent) return std::move(parent).error();
  json::value& p = **parent;
  if (p.is_object()) {
    if (!p.as_object().erase(toks.back())) {
      return makeError(ErrorCode::kInvalidArgument, "unable to remove nonexistent key: {}", toks.back());
    }
    return {};
  }
  if (p.is_array()) {
    auto idx = arrayIndex(toks.back(), p.as_array().size(), false);
    if (!idx) return std::move(idx).error();
    p.as_array().erase(p.as_array().begin() + static_cast<long>(*idx));
    return {};
  }
  return makeError(ErrorCode::kInvalidArgument, "cannot remove from a non-container");
}

}  // namespace

base::Result<json::value> applyJsonPatch(json::value target, const json::value& patch) {
  if (!patch.is_array()) return makeError(ErrorCode::kInvalidArgument, "a JSON patch must be an array of operations");
  for (const json::value& opv : patch.as_array()) {
    if (!opv.is_object()) return makeError(ErrorCode::kInvalidArgument, "a JSON patch operation must be an object");
    const json::object& op = opv.as_object();
    auto str = [&](std::string_view k) -> std::optional<std::string> {
      auto it = op.find(k);
      if (it == op.end() || !it->value().is_string()) return std::nullopt;
      return std::string(it->value().as_string());
    };
    auto name = str("op");
    auto path = str("path");
    if (!name || !path) return makeError(ErrorCode::kInvalidArgument, "a JSON patch operation needs \"op\" and \"path\"");
    auto toks = parsePointer(*path);
    if (!toks) return std::move(toks).error();
    base::Status st;
    if (*name == "add" || *name == "replace" || *name == "test") {
      auto it = op.find("value");
      if (it == op.end()) return makeError(ErrorCode::kInvalidArgument, "operation {} needs a value", *name);
      if (*name == "add") {
        st = addAt(target, *toks, it->value());
      } else if (*name == "replace") {
        st = removeAt(target, *toks);
        if (st) st = addAt(target, *toks, it->value());
      } else {
        auto cur = getAt(target, *toks);
        if (!cur) return std::move(cur).error();
        if (*cur != it->value()) return makeError(ErrorCode::kInvalidArgument, "test failed at {:?}", *path);
      }
    } else if (*name == "remove") {
      st = removeAt(target, *toks);
    } else if (*name == "move" || *name == "copy") {
      auto from = str("from");
      if (!from) return makeError(ErrorCode::kInvalidArgument, "operation {} needs \"from\"", *name);
      auto ftoks = parsePointer(*from);
      if (!ftoks) return std::move(ftoks).error();
      auto v = getAt(target, *ftoks);
      if (!v) return std::move(v).error();
      if (*name == "move") {
        st = removeAt(target, *ftoks);
      }
      if (st) st = addAt(target, *toks, std::move(*v));
    } else {
      return makeError(ErrorCode::kInvalidArgument, "unknown JSON patch operation {:?}", *name);
    }
    if (!st) return std::move(st).error();
  }
  return target;
}

// ---------------------------------------------------------------- strategic merge patch

std::string_view strategicMergeKey(const ResourceInfo& r, const std::vector<std::string_view>& path) {
  if (path.empty()) return {};
  std::string_view field = path.back();
  std::string_view parent = path.size() >= 2 ? path[path.size() - 2] : std::string_view();
  if (path.size() == 2 && path[0] == "metadata" && field == "ownerReferences") return "uid";
  if (field == "containers" || field == "initContainers" || field == "ephemeralContainers") return "name";
  if (field == "volumes" || field == "imagePullSecrets" || field == "env" || field == "hostAliases") {
    return field == "hostAliases" ? "ip" : "name";
  }
  if (field == "volumeMounts") return "mountPath";
  if (field == "volumeDevices") return "devicePath";
  if (field == "conditions") return "type";
  if (field == "ports") {
    if (r.kind == "Service" && parent == "spec") return "port";
    if (r.kind == "EndpointSlice" || r.kind == "Endpoints") return {};
    return "containerPort";
  }
  if (field == "topologySpreadConstraints") return "topologyKey";
  if (field == "subjects" || field == "rules" || field == "tolerations") return {};
  return {};
}

namespace {

constexpr std::string_view kPatch = "$patch";
constexpr std::string_view kRetainKeys = "$retainKeys";
constexpr std::string_view kSetOrder = "$setElementOrder/";
constexpr std::string_view kDeletePrimitive = "$deleteFromPrimitiveList/";

base::Result<json::value> strategicValue(json::value target, const json::value& patch, const ResourceInfo& r,
                                         std::vector<std::string_view>& path);

base::Result<json::value> strategicList(json::value target, const json::value& patch, const ResourceInfo& r,
                                        std::vector<std::string_view>& path) {
  std::string_view key = strategicMergeKey(r, path);
  const json::array& p = patch.as_array();
  // {"$patch": "replace"} anywhere in the list replaces it with the rest.
  for (const json::value& item : p) {
    if (item.is_object()) {
      auto it = item.as_object().find(kPatch);
      if (it != item.as_object().end() && it->value() == "replace") {
        json::array out;
        for (const json::value& i : p) {
          if (!(i.is_object() && i.as_object().contains(kPatch))) out.push_back(i);
        }
        return json::value(std::move(out));
      }
    }
  }
  if (!key.empty()) {
    for (const json::value& item : p) {
      if (!item.is_object() || !item.as_object().contains(key)) {
        return makeError(ErrorCode::kInvalidArgument, "map: {} does not contain declared merge key: {}",
                         json::serialize(item), key);
      }
    }
  }
  if (key.empty() || !target.is_array()) {
    json::array out;
    for (const json::value& i : p) {
      if (!(i.is_object() && i.as_object().contains(kPatch))) out.push_back(i);
    }
    return json::value(std::move(out));
  }
  json::array& t = target.as_array();
  for (const json::value& item : p) {
    if (!item.is_object()) return makeError(ErrorCode::kInvalidArgument, "list items merged by {:?} must be objects", key);
    const json::object& io = item.as_object();
    auto k = io.find(key);
    if (k == io.end()) return makeError(ErrorCode::kInvalidArgument, "map: {} does not contain declared merge key: {}",
                                        json::serialize(item), key);
    auto match = std::find_if(t.begin(), t.end(), [&](const json::value& e) {
      return e.is_object() && e.as_object().contains(key) && e.as_object().at(key) == k->value();
    });
    auto directive = io.find(kPatch);
    if (directive != io.end() && directive->value() == "delete") {
      if (match != t.end()) t.erase(match);
      continue;
    }
    if (match == t.end()) {
      json::object clean = io;
      clean.erase(kPatch);
      t.push_back(std::move(clean));
    } else {
      auto merged = strategicValue(std::move(*match), item, r, path);
      if (!merged) return std::move(merged).error();
      *match = std::move(*merged);
    }
  }
  return target;
}

base::Result<json::value> strategicValue(json::value target, const json::value& patch, const ResourceInfo& r,
                                         std::vector<std::string_view>& path) {
  if (!patch.is_object()) return patch;
  const json::object& p = patch.as_object();
  if (auto d = p.find(kPatch); d != p.end()) {
    if (d->value() == "replace") {
      json::object out = p;
      out.erase(kPatch);
      return json::value(std::move(out));
    }
    if (d->value() == "delete") return json::value();
    if (d->value() != "merge") {
      return makeError(ErrorCode::kInvalidArgument, "unknown patch type: {}", json::serialize(d->value()));
    }
  }
  if (!target.is_object()) target = json::object();
  json::object& t = target.as_object();
  if (auto rk = p.find(kRetainKeys); rk != p.end() && rk->value().is_array()) {
    std::vector<std::string> keep;
    for (const json::value& k : rk->value().as_array()) {
      if (k.is_string()) keep.emplace_back(k.as_string());
    }
    std::vector<std::string> drop;
    for (const auto& kv : t) {
      if (std::find(keep.begin(), keep.end(), kv.key()) == keep.end()) drop.emplace_back(kv.key());
    }
    for (const std::string& d : drop) t.erase(d);
  }
  for (const auto& kv : p) {
    std::string_view k = kv.key();
    if (k == kPatch || k == kRetainKeys || k.substr(0, kSetOrder.size()) == kSetOrder) continue;
    if (k.substr(0, kDeletePrimitive.size()) == kDeletePrimitive) {
      std::string field(k.substr(kDeletePrimitive.size()));
      auto it = t.find(field);
      if (it != t.end() && it->value().is_array() && kv.value().is_array()) {
        json::array& arr = it->value().as_array();
        for (const json::value& del : kv.value().as_array()) {
          arr.erase(std::remove(arr.begin(), arr.end(), del), arr.end());
        }
      }
      continue;
    }
    if (kv.value().is_null()) {
      t.erase(k);
      continue;
    }
    path.push_back(k);
    auto it = t.find(k);
    json::value cur = it != t.end() ? std::move(it->value()) : json::value();
    base::Result<json::value> merged = kv.value().is_array() ? strategicList(std::move(cur), kv.value(), r, path)
                                                             : strategicValue(std::move(cur), kv.value(), r, path);
    path.pop_back();
    if (!merged) return std::move(merged).error();
    if (merged->is_null() && kv.value().is_object()) {
      t.erase(k);  // {"$patch": "delete"}
    } else {
      t[k] = std::move(*merged);
    }
  }
  // $setElementOrder/<field>: the order of a merged list.
  for (const auto& kv : p) {
    std::string_view k = kv.key();
    if (k.substr(0, kSetOrder.size()) != kSetOrder || !kv.value().is_array()) continue;
    std::string field(k.substr(kSetOrder.size()));
    auto it = t.find(field);
    if (it == t.end() || !it->value().is_array()) continue;
    path.push_back(field);
    std::string_view key = strategicMergeKey(r, path);
    path.pop_back();
    json::array& arr = it->value().as_array();
    json::array ordered;
    for (const json::value& want : kv.value().as_array()) {
      auto match = std::find_if(arr.begin(), arr.end(), [&](const json::value& e) {
        if (key.empty()) return e == want;
        return e.is_object() && want.is_object() && e.as_object().contains(key) && want.as_object().contains(key) &&
               e.as_object().at(key) == want.as_object().at(key);
      });
      if (match != arr.end()) {
        ordered.push_back(std::move(*match));
        arr.erase(match);
      }
    }
    for (json::value& rest : arr) ordered.push_back(std::move(rest));
    it->value() = std::move(ordered);
  }
  return target;
}

}  // namespace

base::Result<json::value> applyStrategicMergePatch(json::value target, const json::value& patch, const ResourceInfo& r) {
  if (!patch.is_object()) return makeError(ErrorCode::kInvalidArgument, "a strategic merge patch must be a JSON object");
  std::vector<std::string_view> path;
  return strategicValue(std::move(target), patch, r, path);
}

}  // namespace trellis::apiserver::registry
