#include "apiserver-lite/server/authz.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>

#include <boost/json/parse.hpp>
#include <fmt/format.h>

#include "apiserver-lite/registry/resources.h"

namespace trellis::apiserver {

namespace json = boost::json;
using registry::findResource;

namespace {

using Strings = std::vector<std::string>;

Strings strings(const json::value* v) {
  Strings out;
  if (!v || !v->is_array()) return out;
  for (const json::value& s : v->get_array()) {
    if (s.is_string()) out.emplace_back(s.get_string());
  }
  return out;
}

std::string str(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

bool has(const Strings& list, std::string_view v) { return std::find(list.begin(), list.end(), v) != list.end(); }

struct Rule {
  Strings verbs, apiGroups, resources, resourceNames, nonResourceURLs;

  bool coversVerb(std::string_view verb) const { return has(verbs, "*") || has(verbs, verb); }

  bool covers(const RequestAttributes& a) const {
    if (!coversVerb(a.verb)) return false;
    if (!a.resourceRequest) {
      for (const std::string& u : nonResourceURLs) {
        if (u == "*" || u == a.path) return true;
        if (u.ends_with('*') && a.path.compare(0, u.size() - 1, u, 0, u.size() - 1) == 0) return true;
      }
      return false;
    }
    if (!has(apiGroups, "*") && !has(apiGroups, a.group)) return false;
    std::string combined = a.subresource.empty() ? a.resource : a.resource + "/" + a.subresource;
    bool resourceOk = false;
    for (const std::string& r : resources) {
      resourceOk = resourceOk || r == "*" || r == combined || (!a.subresource.empty() && r == "*/" + a.subresource);
    }
    if (!resourceOk) return false;
    return resourceNames.empty() || (!a.name.empty() && has(resourceNames, a.name));
  }
};

std::vector<Rule> parseRules(const json::object& obj) {
  std::vector<Rule> out;
  const json::value* rules = obj.if_contains("rules");
  if (!rules || !rules->is_array()) return out;
  for (const json::value& r : rules->get_array()) {
    if (!r.is_object()) continue;
    const json::object& o = r.get_object();
    out.push_back(Rule{strings(o.if_contains("verbs")), strings(o.if_contains("apiGroups")),
                       strings(o.if_contains("resources")), strings(o.if_contains("resourceNames")),
                       strings(o.if_contains("nonResourceURLs"))});
  }
  return out;
}

// metav1.LabelSelector against a label map.
bool selectorMatches(const json::object& selector, const json::object* labels) {
  auto label = [&](std::string_view key) -> std::optional<std::string> {
    if (!labels) return std::nullopt;
    const json::value* v = labels->if_contains(key);
    if (!v || !v->is_string()) return std::nullopt;
    return std::string(v->get_string());
  };
  if (const json::value* ml = selector.if_contains("matchLabels"); ml && ml->is_object()) {
    for (const auto& [k, v] : ml->get_object()) {
      if (!v.is_string() || label(k) != std::string(v.get_string())) return false;
    }
  }
  if (const json::value* me = selector.if_contains("matchExpressions"); me && me->is_array()) {
    for (const json::value& e : me->get_array()) {
      if (!e.is_object()) return false;
      std::string op = str(e.get_object(), "operator");
      auto value = label(str(e.get_object(), "key"));
      Strings values = strings(e.get_object().if_contains("values"));
      bool ok = op == "In"             ? value && has(values, *value)
                : op == "NotIn"        ? !value || !has(values, *value)
                : op == "Exists"       ? value.has_value()
                : op == "DoesNotExist" ? !value.has_value()
                                       : false;
      if (!ok) return false;
    }
  }
  return true;
}

struct Subject {
  std::string kind, name, ns;
};

struct Binding {
  std::string kind;  // RoleBinding or ClusterRoleBinding
  std::string ns;    // "" for a ClusterRoleBinding
  std::string name;
  std::string roleKind, roleName;
  std::vector<Subject> subjects;
  std::vector<Rule> rules;  // of the role it refers to, resolved when compiled

  const Subject* matches(const UserInfo& user) const {
    for (const Subject& s : subjects) {
      if (s.kind == "User" && s.name == user.name) return &s;
      if (s.kind == "Group" && has(user.groups, s.name)) return &s;
      if (s.kind == "ServiceAccount" &&
          user.name == "system:serviceaccount:" + (s.ns.empty() ? ns : s.ns) + ":" + s.name) {
        return &s;
      }
    }
    return nullptr;
  }
};

struct Policy {
  std::vector<Binding> bindings;
};

std::vector<json::object> listObjects(storage::WatchCache& cache, std::string_view plural) {
  std::vector<json::object> out;
  const registry::ResourceInfo* r = findResource("rbac.authorization.k8s.io", "v1", plural);
  for (const storage::KeyValue& kv : cache.list(r->keyPrefix()).items) {
    boost::system::error_code ec;
    json::value v = json::parse(kv.value, ec);
    if (!ec && v.is_object()) out.push_back(std::move(v.get_object()));
  }
  return out;
}

const json::object& metadataOf(const json::object& o) {
  static const json::object kEmpty;
  const json::value* m = o.if_contains("metadata");
  return m && m->is_object() ? m->get_object() : kEmpty;
}

std::shared_ptr<const Policy> compile(storage::WatchCache& cache) {
  auto policy = std::make_shared<Policy>();
  std::vector<json::object> clusterRoles = listObjects(cache, "clusterroles");
  std::map<std::string, std::vector<Rule>> clusterRules;
  for (const json::object& cr : clusterRoles) clusterRules[str(metadataOf(cr), "name")] = parseRules(cr);
  // Aggregation: one level, as the aggregation controller fills rules from
  // the (non-aggregated) roles the selectors match.
  for (const json::object& cr : clusterRoles) {
    const json::value* agg = cr.if_contains("aggregationRule");
    if (!agg || !agg->is_object()) continue;
    const json::value* sels = agg->get_object().if_contains("clusterRoleSelectors");
    if (!sels || !sels->is_array()) continue;
    std::vector<Rule>& into = clusterRules[str(metadataOf(cr), "name")];
    for (const json::object& other : clusterRoles) {
      if (&other == &cr || other.contains("aggregationRule")) continue;
      const json::value* labels = metadataOf(other).if_contains("labels");
      for (const json::value& sel : sels->get_array()) {
        if (sel.is_object() && selectorMatches(sel.get_object(), labels && labels->is_object() ? &labels->get_object() : nullptr)) {
          std::vector<Rule> add = parseRules(other);
          into.insert(into.end(), add.begin(), add.end());
          break;
        }
      }
    }
  }
  std::map<std::string, std::vector<Rule>> roleRules;  // "ns/name"
  for (const json::object& r : listObjects(cache, "roles")) {
    roleRules[str(metadataOf(r), "namespace") + "/" + str(metadataOf(r), "name")] = parseRules(r);
  }
  for (std::string_view plural : {"clusterrolebindings", "rolebindings"}) {
    for (const json::object& b : listObjects(cache, plural)) {
      Binding binding;
      binding.kind = plural == "rolebindings" ? "RoleBinding" : "ClusterRoleBinding";
      binding.ns = plural == "rolebindings" ? str(metadataOf(b), "namespace") : "";
      binding.name = str(metadataOf(b), "name");
      const json::value* ref = b.if_contains("roleRef");
      if (!ref || !ref->is_object()) continue;
      binding.roleKind = str(ref->get_object(), "kind");
      binding.roleName = str(ref->get_object(), "name");
      if (binding.roleKind == "ClusterRole") {
        if (auto it = clusterRules.find(binding.roleName); it != clusterRules.end()) binding.rules = it->second;
      } else if (binding.roleKind == "Role" && !binding.ns.empty()) {
        if (auto it = roleRules.find(binding.ns + "/" + binding.roleName); it != roleRules.end()) binding.rules = it->second;
      }
      if (const json::value* subs = b.if_contains("subjects"); subs && subs->is_array()) {
        for (const json::value& s : subs->get_array()) {
          if (!s.is_object()) continue;
          binding.subjects.push_back(
              Subject{str(s.get_object(), "kind"), str(s.get_object(), "name"), str(s.get_object(), "namespace")});
        }
      }
      policy->bindings.push_back(std::move(binding));
    }
  }
  return policy;
}

json::array toJson(const Strings& s) {
  json::array out;
  for (const std::string& v : s) out.emplace_back(v);
  return out;
}

}  // namespace

struct RbacAuthorizer::Impl {
  storage::WatchCache& cache;
  std::atomic<bool> stale{true};
  std::mutex mu;
  std::shared_ptr<const Policy> policy;
  std::vector<storage::WatchCache::WatchId> watches;

  explicit Impl(storage::WatchCache& c) : cache(c) {}

  std::shared_ptr<const Policy> current() {
    std::lock_guard g(mu);
    if (stale.exchange(false) || !policy) policy = compile(cache);
    return policy;
  }
};

RbacAuthorizer::RbacAuthorizer(storage::WatchCache& cache) : impl_(std::make_unique<Impl>(cache)) {}

RbacAuthorizer::~RbacAuthorizer() {
  for (auto id : impl_->watches) impl_->cache.unwatch(id);
}

base::Status RbacAuthorizer::start() {
  for (std::string_view plural : {"roles", "clusterroles", "rolebindings", "clusterrolebindings"}) {
    const registry::ResourceInfo* r = findResource("rbac.authorization.k8s.io", "v1", plural);
    auto id = impl_->cache.watch(r->keyPrefix(), impl_->cache.revision(),
                                 [this](const std::vector<storage::Event>&) { impl_->stale = true; });
    if (!id) return std::move(id).error();
    impl_->watches.push_back(*id);
  }
  impl_->stale = true;
  return {};
}

Decision RbacAuthorizer::authorize(const UserInfo& user, const RequestAttributes& a) {
  if (has(user.groups, "system:masters")) return {true, "member of system:masters"};
  auto policy = impl_->current();
  for (const Binding& b : policy->bindings) {
    if (!b.ns.empty() && (!a.resourceRequest || b.ns != a.ns)) continue;
    const Subject* s = b.matches(user);
    if (!s) continue;
    for (const Rule& r : b.rules) {
      if (r.covers(a)) {
        std::string where = b.ns.empty() ? "" : fmt::format(" in namespace {:?}", b.ns);
        return {true, fmt::format("RBAC: allowed by {} {:?} of {} {:?} to {} {:?}{}", b.kind, b.name, b.roleKind,
                                  b.roleName, s->kind, s->name, where)};
      }
    }
  }
  return {false, ""};
}

json::object RbacAuthorizer::rulesFor(const UserInfo& user, const std::string& ns) {
  json::array resourceRules, nonResourceRules;
  if (has(user.groups, "system:masters")) {
    resourceRules.push_back(json::object{{"verbs", json::array{"*"}}, {"apiGroups", json::array{"*"}},
                                         {"resources", json::array{"*"}}});
    nonResourceRules.push_back(json::object{{"verbs", json::array{"*"}}, {"nonResourceURLs", json::array{"*"}}});
  }
  auto policy = impl_->current();
  for (const Binding& b : policy->bindings) {
    if (!b.ns.empty() && b.ns != ns) continue;
    if (!b.matches(user)) continue;
    for (const Rule& r : b.rules) {
      if (!r.nonResourceURLs.empty()) {
        if (b.ns.empty()) {
          nonResourceRules.push_back(json::object{{"verbs", toJson(r.verbs)}, {"nonResourceURLs", toJson(r.nonResourceURLs)}});
        }
        continue;
      }
      json::object rule{{"verbs", toJson(r.verbs)}, {"apiGroups", toJson(r.apiGroups)}, {"resources", toJson(r.resources)}};
      if (!r.resourceNames.empty()) rule["resourceNames"] = toJson(r.resourceNames);
      resourceRules.push_back(std::move(rule));
    }
  }
  return json::object{{"resourceRules", std::move(resourceRules)},
                      {"nonResourceRules", std::move(nonResourceRules)},
                      {"incomplete", false}};
}

std::string forbiddenMessage(const UserInfo& user, const RequestAttributes& a) {
  if (!a.resourceRequest) return fmt::format("User {:?} cannot {} path {:?}", user.name, a.verb, a.path);
  std::string resource = a.subresource.empty() ? a.resource : a.resource + "/" + a.subresource;
  if (a.ns.empty()) {
    return fmt::format("User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope", user.name, a.verb,
                       resource, a.group);
  }
  return fmt::format("User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}", user.name, a.verb,
                     resource, a.group, a.ns);
}

std::vector<std::pair<std::string, json::object>> bootstrapPolicy() {
  std::vector<std::pair<std::string, json::object>> out;
  auto rule = [](Strings groups, Strings resources, Strings verbs) {
    return json::object{{"apiGroups", toJson(groups)}, {"resources", toJson(resources)}, {"verbs", toJson(verbs)}};
  };
  auto urls = [](Strings paths, Strings verbs) {
    return json::object{{"nonResourceURLs", toJson(paths)}, {"verbs", toJson(verbs)}};
  };
  auto role = [&](std::string name, json::array rules, std::string label = "") {
    json::object labels{{"kubernetes.io/bootstrapping", "rbac-defaults"}};
    if (!label.empty()) labels[label] = "true";
    out.emplace_back("clusterroles",
                     json::object{{"apiVersion", "rbac.authorization.k8s.io/v1"},
                                  {"kind", "ClusterRole"},
                                  {"metadata", json::object{{"name", name}, {"labels", std::move(labels)}}},
                                  {"rules", std::move(rules)}});
  };
  auto bind = [&](std::string name, std::string roleName, Strings groups) {
    json::array subjects;
    for (const std::string& g : groups) {
      subjects.push_back(json::object{{"kind", "Group"}, {"apiGroup", "rbac.authorization.k8s.io"}, {"name", g}});
    }
    out.emplace_back("clusterrolebindings",
                     json::object{{"apiVersion", "rbac.authorization.k8s.io/v1"},
                                  {"kind", "ClusterRoleBinding"},
                                  {"metadata", json::object{{"name", name},
                                                            {"labels", json::object{{"kubernetes.io/bootstrapping",
                                                                                     "rbac-defaults"}}}}},
                                  {"roleRef", json::object{{"apiGroup", "rbac.authorization.k8s.io"},
                                                           {"kind", "ClusterRole"},
                                                           {"name", roleName}}},
                                  {"subjects", std::move(subjects)}});
  };
  const Strings read{"get", "list", "watch"};
  const Strings write{"create", "delete", "deletecollection", "patch", "update"};
  const Strings coreRead{"configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods",
                         "pods/status", "services", "services/status", "serviceaccounts", "events"};
  const Strings coreWrite{"configmaps", "endpoints", "persistentvolumeclaims", "pods", "secrets", "services",
                          "serviceaccounts"};
  const Strings apps{"deployments", "deployments/status", "replicasets", "replicasets/status", "daemonsets",
                     "daemonsets/status"};
  const Strings networking{"ingresses", "ingresses/status"};
  role("cluster-admin", json::array{rule({"*"}, {"*"}, {"*"}), urls({"*"}, {"*"})});
  role("view",
       json::array{rule({""}, coreRead, read), rule({""}, {"namespaces"}, read), rule({"apps"}, apps, read),
                   rule({"networking.k8s.io"}, networking, read), rule({"discovery.k8s.io"}, {"endpointslices"}, read),
                   rule({"events.k8s.io"}, {"events"}, read)},
       "rbac.authorization.k8s.io/aggregate-to-view");
  role("edit",
       json::array{rule({""}, coreRead, read), rule({""}, {"secrets"}, read), rule({""}, coreWrite, write),
                   rule({"apps"}, apps, read), rule({"apps"}, {"deployments", "replicasets", "daemonsets"}, write),
                   rule({"networking.k8s.io"}, networking, read), rule({"networking.k8s.io"}, {"ingresses"}, write),
                   rule({"discovery.k8s.io"}, {"endpointslices"}, read), rule({"coordination.k8s.io"}, {"leases"}, read)},
       "rbac.authorization.k8s.io/aggregate-to-edit");
  role("admin",
       json::array{rule({""}, coreRead, read), rule({""}, {"secrets"}, read), rule({""}, coreWrite, write),
                   rule({"apps"}, apps, read), rule({"apps"}, {"deployments", "replicasets", "daemonsets"}, write),
                   rule({"networking.k8s.io"}, networking, read), rule({"networking.k8s.io"}, {"ingresses"}, write),
                   rule({"discovery.k8s.io"}, {"endpointslices"}, read),
                   rule({"coordination.k8s.io"}, {"leases"}, read),
                   rule({"rbac.authorization.k8s.io"}, {"roles", "rolebindings"}, {"*"}),
                   rule({"authorization.k8s.io"}, {"localsubjectaccessreviews"}, {"create"})},
       "rbac.authorization.k8s.io/aggregate-to-admin");
  role("system:discovery", json::array{urls({"/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                                             "/openapi/*", "/readyz", "/version", "/version/"},
                                            {"get"})});
  role("system:public-info-viewer",
       json::array{urls({"/healthz", "/livez", "/readyz", "/version", "/version/"}, {"get"})});
  role("system:basic-user", json::array{rule({"authorization.k8s.io"},
                                              {"selfsubjectaccessreviews", "selfsubjectrulesreviews"}, {"create"})});
  bind("cluster-admin", "cluster-admin", {"system:masters"});
  bind("system:discovery", "system:discovery", {"system:authenticated"});
  bind("system:basic-user", "system:basic-user", {"system:authenticated"});
  bind("system:public-info-viewer", "system:public-info-viewer", {"system:authenticated", "system:unauthenticated"});
  return out;
}

}  // namespace trellis::apiserver
