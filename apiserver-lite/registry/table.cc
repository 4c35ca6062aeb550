#include "apiserver-lite/registry/table.h"

#include <functional>
#include <map>

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

// "k=v,k2=v2" of a string map, or `def` when empty.
std::string labelMap(const json::object& o, std::initializer_list<std::string_view> path, std::string_view def) {
  const json::value* v = at(o, path);
  if (!v || !v->is_object() || v->as_object().empty()) return std::string(def);
  std::string out;
  for (const auto& [k, val] : v->as_object()) {
    if (!out.empty()) out += ',';
    out += std::string(k) + "=" + (val.is_string() ? std::string(val.as_string()) : "");
  }
  return out;
}

// A workload's pod template: container names and images, comma-joined.
std::string containersField(const json::object& o, std::string_view field) {
  const json::value* v = at(o, {"spec", "template", "spec", "containers"});
  if (!v) v = at(o, {"spec", "jobTemplate", "spec", "template", "spec", "containers"});  // a CronJob
  std::string out;
  if (!v || !v->is_array()) return out;
  for (const json::value& c : v->as_array()) {
    if (!c.is_object()) continue;
    if (!out.empty()) out += ',';
    out += str(c.as_object(), {field});
  }
  return out;
}

std::string selectorText(const json::object& o) {
  std::string out = labelMap(o, {"spec", "selector", "matchLabels"}, "");
  if (const json::value* me = at(o, {"spec", "selector", "matchExpressions"}); me && me->is_array()) {
    for (const json::value& e : me->as_array()) {
      if (!e.is_object()) continue;
      const json::object& eo = e.as_object();
      std::string op = str(eo, {"operator"});
      std::string key = str(eo, {"key"});
      std::string part = op == "Exists" ? key : op == "DoesNotExist" ? "!" + key
                         : key + (op == "NotIn" ? " notin (" : " in (") + joinArray(eo, {"values"}, "") + ")";
      out += (out.empty() ? "" : ",") + part;
    }
  }
  return out.empty() ? "<none>" : out;
}

std::string age(const json::object& o, std::initializer_list<std::string_view> path, std::time_t now) {
  std::string t = str(o, path);
  return t.empty() ? "<unknown>" : humanDuration(now - parseTime(t));
}

int64_t i64(const json::object& o, std::initializer_list<std::string_view> path, int64_t def = 0) {
  const json::value* v = at(o, path);
  return v && v->is_int64() ? v->as_int64() : def;
}

// Names of the bindings' subjects of one kind, comma-joined.
std::string subjects(const json::object& o, std::string_view kind) {
  std::string out;
  const json::value* v = at(o, {"subjects"});
  if (!v || !v->is_array()) return out;
  for (const json::value& s : v->as_array()) {
    if (!s.is_object() || str(s.as_object(), {"kind"}) != kind) continue;
    if (!out.empty()) out += ", ";
    std::string ns = str(s.as_object(), {"namespace"});
    out += (kind == "ServiceAccount" ? ns + "/" : "") + str(s.as_object(), {"name"});
  }
  return out;
}

struct Column {
  const char* name;
  const char* type;
  int priority;  // 1: only with -o wide
  std::function<json::value(const json::object&, std::time_t now)> cell;
};

json::value nameCell(const json::object& o, std::time_t) { return json::value(str(o, {"metadata", "name"})); }
json::value ageCell(const json::object& o, std::time_t now) { return json::value(age(o, {"metadata", "creationTimestamp"}, now)); }

std::string podStatus(const json::object& o) {
  if (at(o, {"metadata", "deletionTimestamp"})) return "Terminating";
  std::string reason = str(o, {"status", "reason"});
  if (!reason.empty()) return reason;
  if (const json::value* cs = at(o, {"status", "containerStatuses"}); cs && cs->is_array()) {
    for (const json::value& c : cs->as_array()) {
      if (!c.is_object()) continue;
      std::string waiting = str(c.as_object(), {"state", "waiting", "reason"});
      if (!waiting.empty()) return waiting;
      std::string terminated = str(c.as_object(), {"state", "terminated", "reason"});
      if (!terminated.empty()) return terminated;
    }
  }
  return str(o, {"status", "phase"}, "Pending");
}

std::string nodeStatus(const json::object& o) {
  std::string status = "Unknown";
  if (const json::value* conds = at(o, {"status", "conditions"}); conds && conds->is_array()) {
    for (const json::value& c : conds->as_array()) {
      if (c.is_object() && str(c.as_object(), {"type"}) == "Ready") {
        status = str(c.as_object(), {"status"}) == "True" ? "Ready" : "NotReady";
      }
    }
  }
  if (str(o, {"spec", "unschedulable"}) == "true") status += ",SchedulingDisabled";
  return status;
}

std::string nodeRoles(const json::object& o) {
  std::string out;
  if (const json::value* labels = at(o, {"metadata", "labels"}); labels && labels->is_object()) {
    for (const auto& [k, v] : labels->as_object()) {
      constexpr std::string_view kPrefix = "node-role.kubernetes.io/";
      std::string_view key = k;
      if (key.starts_with(kPrefix) && key.size() > kPrefix.size()) {
        out += (out.empty() ? "" : ",") + std::string(key.substr(kPrefix.size()));
      }
    }
  }
  return out.empty() ? "<none>" : out;
}

std::string nodeAddress(const json::object& o, std::string_view type) {
  if (const json::value* addrs = at(o, {"status", "addresses"}); addrs && addrs->is_array()) {
    for (const json::value& a : addrs->as_array()) {
      if (a.is_object() && str(a.as_object(), {"type"}) == type) return str(a.as_object(), {"address"});
    }
  }
  return "<none>";
}

std::string serviceExternal(const json::object& o) {
  std::string type = str(o, {"spec", "type"}, "ClusterIP");
  std::string lb;
  if (const json::value* ing = at(o, {"status", "loadBalancer", "ingress"}); ing && ing->is_array()) {
    for (const json::value& e : ing->as_array()) {
      if (!e.is_object()) continue;
      lb += (lb.empty() ? "" : ",") + str(e.as_object(), {"ip"}, str(e.as_object(), {"hostname"}));
    }
  }
  std::string external = joinArray(o, {"spec", "externalIPs"}, "");
  if (type == "ExternalName") return str(o, {"spec", "externalName"});
  if (type == "LoadBalancer") {
    std::string all = lb + (!lb.empty() && !external.empty() ? "," : "") + external;
    return all.empty() ? "<pending>" : all;
  }
  return external.empty() ? "<none>" : external;
}

std::string ingressHosts(const json::object& o) {
  std::string hosts;
  if (const json::value* rules = at(o, {"spec", "rules"}); rules && rules->is_array()) {
    for (const json::value& rule : rules->as_array()) {
      if (!rule.is_object()) continue;
      hosts += (hosts.empty() ? "" : ",") + str(rule.as_object(), {"host"}, "*");
    }
  }
  return hosts.empty() ? "*" : hosts;
}

std::string ingressAddress(const json::object& o) {
  std::string address;
  if (const json::value* lb = at(o, {"status", "loadBalancer", "ingress"}); lb && lb->is_array()) {
    for (const json::value& e : lb->as_array()) {
      if (!e.is_object()) continue;
      address += (address.empty() ? "" : ",") + str(e.as_object(), {"ip"}, str(e.as_object(), {"hostname"}));
    }
  }
  return address;
}

std::string endpointsText(const json::object& o) {
  std::vector<std::string> eps;
  if (const json::value* subsets = at(o, {"subsets"}); subsets && subsets->is_array()) {
    for (const json::value& sub : subsets->as_array()) {
      if (!sub.is_object()) continue;
      const json::value* addrs = at(sub.as_object(), {"addresses"});
      const json::value* ports = at(sub.as_object(), {"ports"});
      if (!addrs || !addrs->is_array()) continue;
      for (const json::value& a : addrs->as_array()) {
        if (!a.is_object()) continue;
        std::string ip = str(a.as_object(), {"ip"});
        if (ports && ports->is_array() && !ports->as_array().empty()) {
          for (const json::value& p : ports->as_array()) {
            if (p.is_object()) eps.push_back(ip + ":" + str(p.as_object(), {"port"}));
          }
        } else {
          eps.push_back(ip);
        }
      }
    }
  }
  if (eps.empty()) return "<none>";
  std::string out;
  for (size_t n = 0; n < eps.size() && n < 3; ++n) out += (n ? "," : "") + eps[n];
  if (eps.size() > 3) out += fmt::format(" + {} more...", eps.size() - 3);
  return out;
}

using Cell = std::function<json::value(const json::object&, std::time_t)>;
Cell text(std::initializer_list<std::string_view> path, std::string def = "") {
  std::vector<std::string> p(path.begin(), path.end());
  return [p, def](const json::object& o, std::time_t) {
    const json::value* v = nullptr;
    const json::object* cur = &o;
    for (const std::string& k : p) {
      if (!cur) return json::value(def);
      auto it = cur->find(k);
      if (it == cur->end()) return json::value(def);
      v = &it->value();
      cur = v->is_object() ? &v->as_object() : nullptr;
    }
    if (v && v->is_string()) return json::value(v->as_string());
    if (v && v->is_int64()) return json::value(std::to_string(v->as_int64()));
    if (v && v->is_bool()) return json::value(v->as_bool() ? "true" : "false");
    return json::value(def);
  };
}
Cell fn(std::string (*f)(const json::object&)) {
  return [f](const json::object& o, std::time_t) { return json::value(f(o)); };
}

// The columns kube-apiserver's table printers give each kind (NAME, ...,
// AGE where they put them); kinds not listed get NAME and AGE.
const std::vector<Column>& columnsOf(const ResourceInfo& r) {
  static const std::map<std::string, std::vector<Column>, std::less<>> byKind = [] {
    std::map<std::string, std::vector<Column>, std::less<>> m;
    const Column name{"Name", "string", 0, nameCell};
    const Column ageCol{"Age", "string", 0, ageCell};
    auto images = Column{"Images", "string", 1, [](const json::object& o, std::time_t) { return json::value(containersField(o, "image")); }};
    auto containers = Column{"Containers", "string", 1, [](const json::object& o, std::time_t) { return json::value(containersField(o, "name")); }};
    auto selector = Column{"Selector", "string", 1, fn(selectorText)};
    m["Namespace"] = {name, {"Status", "string", 0, text({"status", "phase"}, "Active")}, ageCol};
    m["ConfigMap"] = {name, {"Data", "integer", 0, [](const json::object& o, std::time_t) { return json::value(int64_t(count(o, {"data"}) + count(o, {"binaryData"}))); }}, ageCol};
    m["Secret"] = {name, {"Type", "string", 0, text({"type"}, "Opaque")},
                   {"Data", "integer", 0, [](const json::object& o, std::time_t) { return json::value(int64_t(count(o, {"data"}))); }}, ageCol};
    m["ServiceAccount"] = {name, {"Secrets", "integer", 0, [](const json::object& o, std::time_t) { return json::value(int64_t(count(o, {"secrets"}))); }}, ageCol};
    m["Pod"] = {name,
                {"Ready", "string", 0, [](const json::object& o, std::time_t) {
                   size_t ready = 0;
                   if (const json::value* cs = at(o, {"status", "containerStatuses"}); cs && cs->is_array()) {
                     for (const json::value& c : cs->as_array()) ready += c.is_object() && str(c.as_object(), {"ready"}) == "true";
                   }
                   return json::value(fmt::format("{}/{}", ready, count(o, {"spec", "containers"})));
                 }},
                {"Status", "string", 0, fn(podStatus)},
                {"Restarts", "string", 0, [](const json::object& o, std::time_t) {
                   int64_t restarts = 0;
                   if (const json::value* cs = at(o, {"status", "containerStatuses"}); cs && cs->is_array()) {
                     for (const json::value& c : cs->as_array()) restarts += c.is_object() ? i64(c.as_object(), {"restartCount"}) : 0;
                   }
                   return json::value(std::to_string(restarts));
                 }},
                ageCol,
                {"IP", "string", 1, text({"status", "podIP"}, "<none>")},
                {"Node", "string", 1, text({"spec", "nodeName"}, "<none>")},
                {"Nominated Node", "string", 1, text({"status", "nominatedNodeName"}, "<none>")},
                {"Readiness Gates", "string", 1, [](const json::object& o, std::time_t) {
                   size_t gates = count(o, {"spec", "readinessGates"});
                   return json::value(gates ? fmt::format("0/{}", gates) : "<none>");
                 }}};
    m["Service"] = {name, {"Type", "string", 0, text({"spec", "type"}, "ClusterIP")},
                    {"Cluster-IP", "string", 0, text({"spec", "clusterIP"}, "<none>")},
                    {"External-IP", "string", 0, fn(serviceExternal)}, {"Port(s)", "string", 0, fn(servicePorts)}, ageCol,
                    {"Selector", "string", 1, [](const json::object& o, std::time_t) { return json::value(labelMap(o, {"spec", "selector"}, "<none>")); }}};
    m["Node"] = {name, {"Status", "string", 0, fn(nodeStatus)}, {"Roles", "string", 0, fn(nodeRoles)}, ageCol,
                 {"Version", "string", 0, text({"status", "nodeInfo", "kubeletVersion"})},
                 {"Internal-IP", "string", 1, [](const json::object& o, std::time_t) { return json::value(nodeAddress(o, "InternalIP")); }},
                 {"External-IP", "string", 1, [](const json::object& o, std::time_t) { return json::value(nodeAddress(o, "ExternalIP")); }},
                 {"OS-Image", "string", 1, text({"status", "nodeInfo", "osImage"}, "<unknown>")},
                 {"Kernel-Version", "string", 1, text({"status", "nodeInfo", "kernelVersion"}, "<unknown>")},
                 {"Container-Runtime", "string", 1, text({"status", "nodeInfo", "containerRuntimeVersion"}, "<unknown>")}};
    m["PersistentVolumeClaim"] = {name, {"Status", "string", 0, text({"status", "phase"}, "Pending")},
                                  {"Volume", "string", 0, text({"spec", "volumeName"})},
                                  {"Capacity", "string", 0, text({"status", "capacity", "storage"})},
                                  {"Access Modes", "string", 0, [](const json::object& o, std::time_t) { return json::value(accessModes(o, {"status", "accessModes"})); }},
                                  {"StorageClass", "string", 0, text({"spec", "storageClassName"}, "<unset>")},
                                  {"VolumeAttributesClass", "string", 0, text({"spec", "volumeAttributesClassName"}, "<unset>")},
                                  ageCol, {"VolumeMode", "string", 1, text({"spec", "volumeMode"}, "Filesystem")}};
    m["PersistentVolume"] = {name, {"Capacity", "string", 0, text({"spec", "capacity", "storage"})},
                             {"Access Modes", "string", 0, [](const json::object& o, std::time_t) { return json::value(accessModes(o, {"spec", "accessModes"})); }},
                             {"Reclaim Policy", "string", 0, text({"spec", "persistentVolumeReclaimPolicy"}, "Retain")},
                             {"Status", "string", 0, text({"status", "phase"}, "Pending")},
                             {"Claim", "string", 0, [](const json::object& o, std::time_t) {
                                return json::value(at(o, {"spec", "claimRef"}) ? str(o, {"spec", "claimRef", "namespace"}) + "/" + str(o, {"spec", "claimRef", "name"}) : "");
                              }},
                             {"StorageClass", "string", 0, text({"spec", "storageClassName"})},
                             {"VolumeAttributesClass", "string", 0, text({"spec", "volumeAttributesClassName"}, "<unset>")},
                             {"Reason", "string", 0, text({"status", "reason"})}, ageCol,
                             {"VolumeMode", "string", 1, text({"spec", "volumeMode"}, "Filesystem")}};
    m["StorageClass"] = {{"Name", "string", 0, [](const json::object& o, std::time_t) {
                            std::string n = str(o, {"metadata", "name"});
                            bool def = str(o, {"metadata", "annotations", "storageclass.kubernetes.io/is-default-class"}) == "true";
                            return json::value(def ? n + " (default)" : n);
                          }},
                         {"Provisioner", "string", 0, text({"provisioner"})},
                         {"ReclaimPolicy", "string", 0, text({"reclaimPolicy"}, "Delete")},
                         {"VolumeBindingMode", "string", 0, text({"volumeBindingMode"}, "Immediate")},
                         {"AllowVolumeExpansion", "string", 0, text({"allowVolumeExpansion"}, "false")}, ageCol};
    m["CSIDriver"] = {name, {"AttachRequired", "string", 0, text({"spec", "attachRequired"}, "true")},
                      {"PodInfoOnMount", "string", 0, text({"spec", "podInfoOnMount"}, "false")},
                      {"StorageCapacity", "string", 0, text({"spec", "storageCapacity"}, "false")},
                      {"TokenRequests", "string", 0, [](const json::object& o, std::time_t) { return json::value(count(o, {"spec", "tokenRequests"}) ? "<set>" : "<unset>"); }},
                      {"RequiresRepublish", "string", 0, text({"spec", "requiresRepublish"}, "false")},
                      {"Modes", "string", 0, [](const json::object& o, std::time_t) { return json::value(joinArray(o, {"spec", "volumeLifecycleModes"}, "Persistent")); }},
                      ageCol};
    m["VolumeSnapshot"] = {name, {"ReadyToUse", "boolean", 0, text({"status", "readyToUse"})},
                           {"SourcePVC", "string", 0, text({"spec", "source", "persistentVolumeClaimName"})},
                           {"SourceSnapshotContent", "string", 0, text({"spec", "source", "volumeSnapshotContentName"})},
                           {"RestoreSize", "string", 0, text({"status", "restoreSize"})},
                           {"SnapshotClass", "string", 0, text({"spec", "volumeSnapshotClassName"})},
                           {"SnapshotContent", "string", 0, text({"status", "boundVolumeSnapshotContentName"})},
                           {"CreationTime", "string", 0, text({"status", "creationTime"})}, ageCol};
    m["VolumeSnapshotContent"] = {name, {"ReadyToUse", "boolean", 0, text({"status", "readyToUse"})},
                                  {"RestoreSize", "integer", 0, text({"status", "restoreSize"})},
                                  {"DeletionPolicy", "string", 0, text({"spec", "deletionPolicy"})},
                                  {"Driver", "string", 0, text({"spec", "driver"})},
                                  {"VolumeSnapshotClass", "string", 0, text({"spec", "volumeSnapshotClassName"})},
                                  {"VolumeSnapshot", "string", 0, text({"spec", "volumeSnapshotRef", "name"})},
                                  {"VolumeSnapshotNamespace", "string", 0, text({"spec", "volumeSnapshotRef", "namespace"})},
                                  ageCol};
    m["VolumeSnapshotClass"] = {name, {"Driver", "string", 0, text({"driver"})},
                                {"DeletionPolicy", "string", 0, text({"deletionPolicy"})}, ageCol};
    m["VolumeGroupSnapshot"] = {name, {"ReadyToUse", "boolean", 0, text({"status", "readyToUse"})},
                                {"VolumeGroupSnapshotClass", "string", 0, text({"spec", "volumeGroupSnapshotClassName"})},
                                {"VolumeGroupSnapshotContent", "string", 0, text({"status", "boundVolumeGroupSnapshotContentName"})},
                                {"CreationTime", "string", 0, text({"status", "creationTime"})}, ageCol};
    m["VolumeGroupSnapshotContent"] = {name, {"ReadyToUse", "boolean", 0, text({"status", "readyToUse"})},
                                       {"DeletionPolicy", "string", 0, text({"spec", "deletionPolicy"})},
                                       {"Driver", "string", 0, text({"spec", "driver"})},
                                       {"VolumeGroupSnapshotClass", "string", 0, text({"spec", "volumeGroupSnapshotClassName"})},
                                       {"VolumeGroupSnapshotNamespace", "string", 0, text({"spec", "volumeGroupSnapshotRef", "namespace"})},
                                       {"VolumeGroupSnapshot", "string", 0, text({"spec", "volumeGroupSnapshotRef", "name"})},
                                       ageCol};
    m["VolumeGroupSnapshotClass"] = {name, {"Driver", "string", 0, text({"driver"})},
                                     {"DeletionPolicy", "string", 0, text({"deletionPolicy"})}, ageCol};
    m["CSIStorageCapacity"] = {name, {"StorageClassName", "string", 0, text({"storageClassName"})},
                               {"Capacity", "string", 0, text({"capacity"})}, ageCol};
    m["CSINode"] = {name, {"Drivers", "integer", 0, [](const json::object& o, std::time_t) { return json::value(int64_t(count(o, {"spec", "drivers"}))); }}, ageCol};
    m["VolumeAttachment"] = {name, {"Attacher", "string", 0, text({"spec", "attacher"})},
                             {"PV", "string", 0, text({"spec", "source", "persistentVolumeName"})},
                             {"Node", "string", 0, text({"spec", "nodeName"})},
                             {"Attached", "boolean", 0, [](const json::object& o, std::time_t) { return json::value(str(o, {"status", "attached"}) == "true"); }},
                             ageCol};
    m["Ingress"] = {name, {"Class", "string", 0, text({"spec", "ingressClassName"}, "<none>")},
                    {"Hosts", "string", 0, fn(ingressHosts)}, {"Address", "string", 0, fn(ingressAddress)},
                    {"Ports", "string", 0, [](const json::object& o, std::time_t) { return json::value(count(o, {"spec", "tls"}) ? "80, 443" : "80"); }},
                    ageCol};
    m["IngressClass"] = {name, {"Controller", "string", 0, text({"spec", "controller"})},
                         {"Parameters", "string", 0, [](const json::object& o, std::time_t) {
                            if (!at(o, {"spec", "parameters"})) return json::value("<none>");
                            std::string g = str(o, {"spec", "parameters", "apiGroup"});
                            return json::value(str(o, {"spec", "parameters", "kind"}) + (g.empty() ? "" : "." + g) + "/" + str(o, {"spec", "parameters", "name"}));
                          }},
                         ageCol};
    m["Endpoints"] = {name, {"Endpoints", "string", 0, fn(endpointsText)}, ageCol};
    m["EndpointSlice"] = {name, {"AddressType", "string", 0, text({"addressType"})},
                          {"Ports", "string", 0, [](const json::object& o, std::time_t) {
                             std::string out;
                             if (const json::value* ps = at(o, {"ports"}); ps && ps->is_array()) {
                               for (const json::value& p : ps->as_array()) {
                                 if (p.is_object()) out += (out.empty() ? "" : ",") + str(p.as_object(), {"port"});
                               }
                             }
                             return json::value(out.empty() ? "<unset>" : out);
                           }},
                          {"Endpoints", "string", 0, [](const json::object& o, std::time_t) {
                             std::vector<std::string> addrs;
                             if (const json::value* es = at(o, {"endpoints"}); es && es->is_array()) {
                               for (const json::value& e : es->as_array()) {
                                 if (!e.is_object()) continue;
                                 if (const json::value* a = at(e.as_object(), {"addresses"}); a && a->is_array()) {
                                   for (const json::value& ip : a->as_array()) {
                                     if (ip.is_string()) addrs.emplace_back(ip.as_string());
                                   }
                                 }
                               }
                             }
                             if (addrs.empty()) return json::value("<unset>");
                             std::string out;
                             for (size_t n = 0; n < addrs.size() && n < 3; ++n) out += (n ? "," : "") + addrs[n];
                             if (addrs.size() > 3) out += fmt::format(" + {} more...", addrs.size() - 3);
                             return json::value(out);
                           }},
                          ageCol};
    m["Deployment"] = {name,
                       {"Ready", "string", 0, [](const json::object& o, std::time_t) { return json::value(fmt::format("{}/{}", i64(o, {"status", "readyReplicas"}), i64(o, {"spec", "replicas"}, 1))); }},
                       {"Up-to-date", "integer", 0, [](const json::object& o, std::time_t) { return json::value(i64(o, {"status", "updatedReplicas"})); }},
                       {"Available", "integer", 0, [](const json::object& o, std::time_t) { return json::value(i64(o, {"status", "availableReplicas"})); }},
                       ageCol, containers, images, selector};
    m["ReplicaSet"] = {name,
                       {"Desired", "integer", 0, [](const json::object& o, std::time_t) { return json::value(i64(o, {"spec", "replicas"}, 1)); }},
                       {"Current", "integer", 0, [](const json::object& o, std::time_t) { return json::value(i64(o, {"status", "replicas"})); }},
                       {"Ready", "integer", 0, [](const json::object& o, std::time_t) { return json::value(i64(o, {"status", "readyReplicas"})); }},
                       ageCol, containers, images, selector};
    m["DaemonSet"] = {name,
                      {"Desired", "integer", 0, [](const json::object& o, std::time_t) { return json::value(i64(o, {"status", "desiredNumberScheduled"})); }},
                      {"Current", "integer", 0, [](const json::object& o, std::time_t) { return json::value(i64(o, {"status", "currentNumberScheduled"})); }},
                      {"Ready", "integer", 0, [](const json::object& o, std::time_t) { return json::value(i64(o, {"status", "numberReady"})); }},
                      {"Up-to-date", "integer", 0, [](const json::object& o, std::time_t) { return json::value(i64(o, {"status", "updatedNumberScheduled"})); }},
                      {"Available", "integer", 0, [](const json::object& o, std::time_t) { return json::value(i64(o, {"status", "numberAvailable"})); }},
                      {"Node Selector", "string", 0, [](const json::object& o, std::time_t) { return json::value(labelMap(o, {"spec", "template", "spec", "nodeSelector"}, "<none>")); }},
                      ageCol, containers, images, selector};
    m["StatefulSet"] = {name,
                        {"Ready", "string", 0, [](const json::object& o, std::time_t) { return json::value(fmt::format("{}/{}", i64(o, {"status", "readyReplicas"}), i64(o, {"spec", "replicas"}, 1))); }},
                        ageCol, containers, images};
    m["ControllerRevision"] = {name,
                               {"Controller", "string", 0, [](const json::object& o, std::time_t) {
                                  const json::value* refs = at(o, {"metadata", "ownerReferences"});
                                  if (refs && refs->is_array()) {
                                    for (const json::value& ref : refs->as_array()) {
                                      if (!ref.is_object() || str(ref.as_object(), {"controller"}) != "true") continue;
                                      std::string kind = str(ref.as_object(), {"kind"});
                                      for (char& c : kind) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                                      std::string gv = str(ref.as_object(), {"apiVersion"});
                                      std::string group = gv.find('/') == std::string::npos ? "" : gv.substr(0, gv.find('/'));
                                      return json::value(kind + (group.empty() ? "" : "." + group) + "/" + str(ref.as_object(), {"name"}));
                                    }
                                  }
                                  return json::value("<none>");
                                }},
                               {"Revision", "integer", 0, [](const json::object& o, std::time_t) { return json::value(i64(o, {"revision"})); }},
                               ageCol};
    m["Job"] = {name,
                {"Status", "string", 0, [](const json::object& o, std::time_t) {
                   auto cond = [&](std::string_view type) {
                     if (const json::value* cs = at(o, {"status", "conditions"}); cs && cs->is_array()) {
                       for (const json::value& c : cs->as_array()) {
                         if (c.is_object() && str(c.as_object(), {"type"}) == type && str(c.as_object(), {"status"}) == "True") return true;
                       }
                     }
                     return false;
                   };
                   if (cond("Complete")) return json::value("Complete");
                   if (cond("Failed")) return json::value("Failed");
                   if (at(o, {"metadata", "deletionTimestamp"})) return json::value("Terminating");
                   if (cond("SuccessCriteriaMet")) return json::value("SuccessCriteriaMet");
                   if (cond("FailureTarget")) return json::value("FailureTarget");
                   if (cond("Suspended")) return json::value("Suspended");
                   return json::value("Running");
                 }},
                {"Completions", "string", 0, [](const json::object& o, std::time_t) {
                   int64_t done = i64(o, {"status", "succeeded"});
                   if (at(o, {"spec", "completions"})) return json::value(fmt::format("{}/{}", done, i64(o, {"spec", "completions"})));
                   int64_t parallelism = i64(o, {"spec", "parallelism"});
                   if (parallelism > 1) return json::value(fmt::format("{}/1 of {}", done, parallelism));
                   return json::value(fmt::format("{}/1", done));
                 }},
                {"Duration", "string", 0, [](const json::object& o, std::time_t now) {
                   std::string start = str(o, {"status", "startTime"});
                   if (start.empty()) return json::value("");
                   std::string end = str(o, {"status", "completionTime"});
                   return json::value(humanDuration((end.empty() ? now : parseTime(end)) - parseTime(start)));
                 }},
                ageCol, containers, images, selector};
    m["CronJob"] = {name,
                    {"Schedule", "string", 0, text({"spec", "schedule"})},
                    {"Timezone", "string", 0, text({"spec", "timeZone"}, "<none>")},
                    {"Suspend", "boolean", 0, [](const json::object& o, std::time_t) { return json::value(str(o, {"spec", "suspend"}) == "true"); }},
                    {"Active", "integer", 0, [](const json::object& o, std::time_t) { return json::value(int64_t(count(o, {"status", "active"}))); }},
                    {"Last Schedule", "date", 0, [](const json::object& o, std::time_t now) {
                       std::string t = str(o, {"status", "lastScheduleTime"});
                       return json::value(t.empty() ? std::string("<none>") : humanDuration(now - parseTime(t)));
                     }},
                    ageCol, containers, images, selector};
    auto intOrNa = [](std::string_view field) {
      return [field](const json::object& o, std::time_t) {
        const json::value* v = at(o, {"spec", field});
        if (!v) return json::value("N/A");
        return json::value(v->is_string() ? std::string(v->as_string()) : std::to_string(v->is_int64() ? v->as_int64() : 0));
      };
    };
    m["PodDisruptionBudget"] = {name,
                                {"Min Available", "string", 0, intOrNa("minAvailable")},
                                {"Max Unavailable", "string", 0, intOrNa("maxUnavailable")},
                                {"Allowed Disruptions", "integer", 0, [](const json::object& o, std::time_t) { return json::value(i64(o, {"status", "disruptionsAllowed"})); }},
                                ageCol};
    m["Lease"] = {name, {"Holder", "string", 0, text({"spec", "holderIdentity"})}, ageCol};
    const Column createdAt{"Created At", "date", 0, text({"metadata", "creationTimestamp"})};
    m["Role"] = {name, createdAt};
    m["ClusterRole"] = {name, createdAt};
    auto bindingColumns = std::vector<Column>{
        name,
        {"Role", "string", 0, [](const json::object& o, std::time_t) { return json::value(str(o, {"roleRef", "kind"}) + "/" + str(o, {"roleRef", "name"})); }},
        ageCol,
        {"Users", "string", 1, [](const json::object& o, std::time_t) { return json::value(subjects(o, "User")); }},
        {"Groups", "string", 1, [](const json::object& o, std::time_t) { return json::value(subjects(o, "Group")); }},
        {"ServiceAccounts", "string", 1, [](const json::object& o, std::time_t) { return json::value(subjects(o, "ServiceAccount")); }}};
    m["RoleBinding"] = bindingColumns;
    m["ClusterRoleBinding"] = bindingColumns;
    m["Event"] = {{"Last Seen", "string", 0, [](const json::object& o, std::time_t now) {
                     std::string t = str(o, {"lastTimestamp"}, str(o, {"eventTime"}, str(o, {"metadata", "creationTimestamp"})));
                     return json::value(t.empty() ? "<unknown>" : humanDuration(now - parseTime(t.substr(0, 19) + "Z")));
                   }},
                  {"Type", "string", 0, text({"type"})},
                  {"Reason", "string", 0, text({"reason"})},
                  {"Object", "string", 0, [](const json::object& o, std::time_t) {
                     std::string kind = str(o, {"involvedObject", "kind"}, str(o, {"regarding", "kind"}));
                     for (char& c : kind) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                     return json::value(kind + "/" + str(o, {"involvedObject", "name"}, str(o, {"regarding", "name"})));
                   }},
                  {"Subobject", "string", 1, text({"involvedObject", "fieldPath"})},
                  {"Source", "string", 1, [](const json::object& o, std::time_t) {
                     std::string c = str(o, {"source", "component"}, str(o, {"reportingController"}));
                     std::string h = str(o, {"source", "host"});
                     return json::value(h.empty() ? c : c + ", " + h);
                   }},
                  {"Message", "string", 0, text({"message"})},
                  {"First Seen", "string", 1, [](const json::object& o, std::time_t now) { return json::value(age(o, {"firstTimestamp"}, now)); }},
                  {"Count", "string", 1, [](const json::object& o, std::time_t) { return json::value(std::to_string(i64(o, {"count"}, 1))); }},
                  {"Name", "string", 1, nameCell}};
    m[""] = {name, ageCol};
    return m;
  }();
  auto it = byKind.find(r.kind);
  return it == byKind.end() ? byKind.at("") : it->second;
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
  const std::vector<Column>& cols = columnsOf(r);
  json::array defs;
  for (const Column& c : cols) {
    std::string_view format = std::string_view(c.name) == "Name" ? "name" : "";
    defs.push_back(json::object{{"name", c.name}, {"type", c.type}, {"format", format}, {"description", ""},
                                {"priority", c.priority}});
  }
  json::array rows;
  for (const json::object& o : items) {
    json::array cells;
    for (const Column& c : cols) cells.push_back(c.cell(o, now));
    json::object partial{{"kind", "PartialObjectMetadata"}, {"apiVersion", "meta.k8s.io/v1"}};
    if (const json::value* m = at(o, {"metadata"})) partial["metadata"] = *m;
    rows.push_back(json::object{{"cells", std::move(cells)}, {"object", std::move(partial)}});
  }
  return json::object{{"kind", "Table"}, {"apiVersion", "meta.k8s.io/v1"},
                      {"metadata", json::object{{"resourceVersion", resourceVersion}}},
                      {"columnDefinitions", std::move(defs)}, {"rows", std::move(rows)}};
}

}  // namespace trellis::apiserver::registry
