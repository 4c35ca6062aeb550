#include "apiserver-lite/registry/table.h"

#include <fmt/format.h>

#include <boost/json/array.hpp>

namespace trellis::apiserver::registry {

namespace json = boost::json;

namespace {

const json::value* at(const json::object& o, std::initializer_list<std::string_view> path) {
  const json::object* cur = &o;
  const json::value* v = nullptr;
  for (std::string_view k : path) {
    if (!cur) return nullptr;
    auto it = cur->find(k);
    if (it == cur->end()) return nullptr;
    v = &it->value();
    cur = v->is_object() ? &v->as_object() : nullptr;
  }
  return v;
}

std::string str(const json::object& o, std::initializer_list<std::string_view> path, std::string def = "") {
  const json::value* v = at(o, path);
  if (!v) return def;
  if (v->is_string()) return std::string(v->as_string());
  if (v->is_int64()) return std::to_string(v->as_int64());
  if (v->is_bool()) return v->as_bool() ? "true" : "false";
  return def;
}

size_t count(const json::object& o, std::initializer_list<std::string_view> path) {
  const json::value* v = at(o, path);
  if (!v) return 0;
  if (v->is_object()) return v->as_object().size();
  if (v->is_array()) return v->as_array().size();
  return 0;
}

int64_t parseTime(const std::string& rfc3339) {
  std::tm t{};
  if (!strptime(rfc3339.c_str(), "%Y-%m-%dT%H:%M:%SZ", &t)) return 0;
  return static_cast<int64_t>(timegm(&t));
}

struct Column {
  const char* name;
  const char* type;
  int priority;  // 1: only with -o wide
};

using Cells = std::vector<json::value>;

std::string joinArray(const json::object& o, std::initializer_list<std::string_view> path, std::string_view def) {
  const json::value* v = at(o, path);
  if (!v || !v->is_array() || v->as_array().empty()) return std::string(def);
  std::string out;
  for (const json::value& e : v->as_array()) {
    if (!out.empty()) out += ',';
    if (e.is_string()) out += std::string(e.as_string());
  }
  return out;
}

std::string accessModes(const json::object& o, std::initializer_list<std::string_view> path) {
  std::string out;
  const json::value* v = at(o, path);
  if (!v || !v->is_array()) return out;
  for (const json::value& m : v->as_array()) {
    if (!m.is_string()) continue;
    std::string_view s = m.as_string();
    std::string_view abbrev = s == "ReadWriteOnce" ? "RWO" : s == "ReadOnlyMany" ? "ROX" : s == "ReadWriteMany" ? "RWX"
                              : s == "ReadWriteOncePod" ? "RWOP" : s;
    if (!out.empty()) out += ',';
    out += abbrev;
  }
  return out;
}

std::string servicePorts(const json::object& o) {
  const json::value* v = at(o, {"spec", "ports"});
  if (!v || !v->is_array() || v->as_array().empty()) return "<none>";
  std::string out;
  for (const json::value& p : v->as_array()) {
    if (!p.is_object()) continue;
    const json::object& po = p.as_object();
    if (!out.empty()) out += ',';
    out += str(po, {"port"});
    std::string nodePort = str(po, {"nodePort"});
    if (!nodePort.empty()) out += ":" + nodePort;
    out += "/" + str(po, {"protocol"}, "TCP");
  }
  return out;
}

// Columns after NAME for a kind, and the cells for one object; AGE is added last.
void kindColumns(const ResourceInfo& r, std::vector<Column>& cols) {
  const std::string& k = r.kind;
  if (k == "Namespace") cols = {{"Status", "string", 0}};
  else if (k == "ConfigMap") cols = {{"Data", "integer", 0}};
  else if (k == "Secret") cols = {{"Type", "string", 0}, {"Data", "integer", 0}};
  else if (k == "ServiceAccount") cols = {{"Secrets", "integer", 0}};
  else if (k == "Pod") cols = {{"Ready", "string", 0}, {"Status", "string", 0}, {"Restarts", "string", 0}};
  else if (k == "Service") cols = {{"Type", "string", 0}, {"Cluster-IP", "string", 0}, {"External-IP", "string", 0}, {"Port(s)", "string", 0}};
  else if (k == "Node") cols = {{"Status", "string", 0}, {"Roles", "string", 0}};
  else if (k == "PersistentVolumeClaim") cols = {{"Status", "string", 0}, {"Volume", "string", 0}, {"Capacity", "string", 0}, {"Access Modes", "string", 0}, {"StorageClass", "string", 0}, {"VolumeAttributesClass", "string", 0}};
  else if (k == "PersistentVolume") cols = {{"Capacity", "string", 0}, {"Access Modes", "string", 0}, {"Reclaim Policy", "string", 0}, {"Status", "string", 0}, {"Claim", "string", 0}, {"StorageClass", "string", 0}, {"VolumeAttributesClass", "string", 0}, {"Reason", "string", 0}};
  else if (k == "StorageClass") cols = {{"Provisioner", "string", 0}, {"ReclaimPolicy", "string", 0}, {"VolumeBindingMode", "string", 0}, {"AllowVolumeExpansion", "string", 0}};
  else if (k == "Ingress") cols = {{"Class", "string", 0}, {"Hosts", "string", 0}, {"Address", "string", 0}, {"Ports", "string", 0}};
  else if (k == "Deployment") cols = {{"Ready", "string", 0}, {"Up-to-date", "integer", 0}, {"Available", "integer", 0}};
  else if (k == "Lease") cols = {{"Holder", "string", 0}};
  else cols = {};
}

Cells kindCells(const ResourceInfo& r, const json::object& o) {
  const std::string& k = r.kind;
  auto i64 = [&](std::initializer_list<std::string_view> p) {
    const json::value* v = at(o, p);
    return v && v->is_int64() ? v->as_int64() : int64_t(0);
  };
  if (k == "Namespace") return {json::value(str(o, {"status", "phase"}, "Active"))};
  if (k == "ConfigMap") return {json::value(int64_t(count(o, {"data"}) + count(o, {"binaryData"})))};
  if (k == "Secret") return {json::value(str(o, {"type"}, "Opaque")), json::value(int64_t(count(o, {"data"})))};
  if (k == "ServiceAccount") return {json::value(int64_t(count(o, {"secrets"})))};
  if (k == "Pod") {
    const json::value* cs = at(o, {"status", "containerStatuses"});
    size_t total = count(o, {"spec", "containers"}), ready = 0;
    int64_t restarts = 0;
    if (cs && cs->is_array()) {
      for (const json::value& c : cs->as_array()) {
        if (!c.is_object()) continue;
        if (str(c.as_object(), {"ready"}) == "true") ++ready;
        if (const json::value* rc = at(c.as_object(), {"restartCount"}); rc && rc->is_int64()) restarts += rc->as_int64();
      }
    }
    return {json::value(fmt::format("{}/{}", ready, total)), json::value(str(o, {"status", "phase"}, "Pending")),
            json::value(std::to_string(restarts))};
  }
  if (k == "Service") {
    std::string type = str(o, {"spec", "type"}, "ClusterIP");
    std::string external = joinArray(o, {"spec", "externalIPs"}, type == "LoadBalancer" ? "<pending>" : "<none>");
    return {json::value(type), json::value(str(o, {"spec", "clusterIP"}, "<none>")), json::value(external),
            json::value(servicePorts(o))};
  }
  if (k == "Node") {
    std::string status = "Unknown";
    if (const json::value* conds = at(o, {"status", "conditions"}); conds && conds->is_array()) {
      for (const json::value& c : conds->as_array()) {
        if (c.is_object() && str(c.as_object(), {"type"}) == "Ready") status = str(c.as_object(), {"status"}) == "True" ? "Ready" : "NotReady";
      }
    }
    return {json::value(status), json::value("<none>")};
  }
  if (k == "PersistentVolumeClaim") {
    return {json::value(str(o, {"status", "phase"}, "Pending")), json::value(str(o, {"spec", "volumeName"})),
            json::value(str(o, {"status", "capacity", "storage"})), json::value(accessModes(o, {"status", "accessModes"})),
            json::value(str(o, {"spec", "storageClassName"}, "<unset>")), json::value(str(o, {"spec", "volumeAttributesClassName"}, "<unset>"))};
  }
  if (k == "PersistentVolume") {
    std::string claim;
    if (at(o, {"spec", "claimRef"})) claim = str(o, {"spec", "claimRef", "namespace"}) + "/" + str(o, {"spec", "claimRef", "name"});
    return {json::value(str(o, {"spec", "capacity", "storage"})), json::value(accessModes(o, {"spec", "accessModes"})),
            json::value(str(o, {"spec", "persistentVolumeReclaimPolicy"}, "Retain")), json::value(str(o, {"status", "phase"}, "Pending")),
            json::value(claim), json::value(str(o, {"spec", "storageClassName"})), json::value(str(o, {"spec", "volumeAttributesClassName"}, "<unset>")),
            json::value(str(o, {"status", "reason"}))};
  }
  if (k == "StorageClass") {
    return {json::value(str(o, {"provisioner"})), json::value(str(o, {"reclaimPolicy"}, "Delete")),
            json::value(str(o, {"volumeBindingMode"}, "Immediate")), json::value(str(o, {"allowVolumeExpansion"}, "false"))};
  }
  if (k == "Ingress") {
    std::string hosts;
    if (const json::value* rules = at(o, {"spec", "rules"}); rules && rules->is_array()) {
      for (const json::value& rule : rules->as_array()) {
        if (!rule.is_object()) continue;
        if (!hosts.empty()) hosts += ',';
        hosts += str(rule.as_object(), {"host"}, "*");
      }
    }
    std::string address;
    if (const json::value* lb = at(o, {"status", "loadBalancer", "ingress"}); lb && lb->is_array()) {
      for (const json::value& e : lb->as_array()) {
        if (!e.is_object()) continue;
        if (!address.empty()) address += ',';
        address += str(e.as_object(), {"ip"}, str(e.as_object(), {"hostname"}));
      }
    }
    return {json::value(str(o, {"spec", "ingressClassName"}, "<none>")), json::value(hosts.empty() ? "*" : hosts),
            json::value(address), json::value(count(o, {"spec", "tls"}) ? "80, 443" : "80")};
  }
  if (k == "Deployment") {
    return {json::value(fmt::format("{}/{}", i64({"status", "readyReplicas"}), i64({"spec", "replicas"}))),
            json::value(i64({"status", "updatedReplicas"})), json::value(i64({"status", "availableReplicas"}))};
  }
  if (k == "Lease") return {json::value(str(o, {"spec", "holderIdentity"}))};
  return {};
}

}  // namespace

std::string humanDuration(int64_t s) {
  if (s < 0) return "<invalid>";
  if (s < 120) return fmt::format("{}s", s);
  int64_t m = s / 60;
  if (m < 10) return s % 60 == 0 ? fmt::format("{}m", m) : fmt::format("{}m{}s", m, s % 60);
  if (m < 180) return fmt::format("{}m", m);
  int64_t h = m / 60;
  if (h < 8) return m % 60 == 0 ? fmt::format("{}h", h) : fmt::format("{}h{}m", h, m % 60);
  if (h < 48) return fmt::format("{}h", h);
  if (h < 24 * 8) return h % 24 == 0 ? fmt::format("{}d", h / 24) : fmt::format("{}d{}h", h / 24, h % 24);
  if (h < 24 * 365 * 2) return fmt::format("{}d", h / 24);
  if (h < 24 * 365 * 8) {
    int64_t days = (h / 24) % 365;
    return days == 0 ? fmt::format("{}y", h / 24 / 365) : fmt::format("{}y{}d", h / 24 / 365, days);
  }
  return fmt::format("{}y", h / 24 / 365);
}

bool wantsTable(std::string_view accept) {
  // The first acceptable type wins: kubectl lists the Table form first.
  size_t comma = accept.find(',');
  std::string_view first = accept.substr(0, comma);
  return first.find("as=Table") != std::string_view::npos && first.find("g=meta.k8s.io") != std::string_view::npos;
}

json::object toTable(const ResourceInfo& r, const std::vector<json::object>& items, const std::string& resourceVersion,
                     std::time_t now) {
  std::vector<Column> cols;
  kindColumns(r, cols);
  json::array defs;
  defs.push_back(json::object{{"name", "Name"}, {"type", "string"}, {"format", "name"},
                              {"description", "Name must be unique within a namespace."}, {"priority", 0}});
  for (const Column& c : cols) {
    defs.push_back(json::object{{"name", c.name}, {"type", c.type}, {"format", ""}, {"description", ""}, {"priority", c.priority}});
  }
  defs.push_back(json::object{{"name", "Age"}, {"type", "string"}, {"format", ""},
                              {"description", "CreationTimestamp is a timestamp representing the server time when this object was created."},
                              {"priority", 0}});
  json::array rows;
  for (const json::object& o : items) {
    json::array cells;
    cells.push_back(json::value(str(o, {"metadata", "name"})));
    for (json::value& c : kindCells(r, o)) cells.push_back(std::move(c));
    std::string created = str(o, {"metadata", "creationTimestamp"});
    cells.push_back(json::value(created.empty() ? "<unknown>" : humanDuration(now - parseTime(created))));
    json::object partial{{"kind", "PartialObjectMetadata"}, {"apiVersion", "meta.k8s.io/v1"}};
    if (const json::value* m = at(o, {"metadata"})) partial["metadata"] = *m;
    rows.push_back(json::object{{"cells", std::move(cells)}, {"object", std::move(partial)}});
  }
  return json::object{{"kind", "Table"}, {"apiVersion", "meta.k8s.io/v1"},
                      {"metadata", json::object{{"resourceVersion", resourceVersion}}},
                      {"columnDefinitions", std::move(defs)}, {"rows", std::move(rows)}};
}

}  // namespace trellis::apiserver::registry
