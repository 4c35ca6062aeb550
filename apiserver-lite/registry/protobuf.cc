#include "apiserver-lite/registry/protobuf.h"

#include <ctime>
#include <map>
#include <string>
#include <vector>

#include <boost/json/parse.hpp>
#include <fmt/format.h>

#include "common/base/base64.h"

namespace trellis::apiserver::registry {

namespace json = boost::json;

namespace {

// The schema: one line per message, "Name: number jsonName type | ...".
// Types: s string, i integer, b bool, bytes (base64 in JSON), Time, Quantity,
// IntOrString, a message name, {T} map<string, T>, []T repeated. A trailing
// "?" marks a Go pointer field, whose zero value is kept; jsonName "~" marks
// an inlined struct (its fields land in the parent); type "-" is ignored
// (status sent on create, server-managed fields).
// Field numbers are those of Kubernetes' generated.proto files (k8s.io/api,
// k8s.io/apimachinery).
constexpr std::string_view kSchema = R"(
ObjectMeta: 1 name s|2 generateName s|3 namespace s|4 selfLink s|5 uid s|6 resourceVersion s|7 generation i|8 creationTimestamp Time|9 deletionTimestamp Time|10 deletionGracePeriodSeconds i?|11 labels {s}|12 annotations {s}|13 ownerReferences []OwnerReference|14 finalizers []s|17 managedFields -
OwnerReference: 1 kind s|3 name s|4 uid s|5 apiVersion s|6 controller b?|7 blockOwnerDeletion b?
LabelSelector: 1 matchLabels {s}|2 matchExpressions []LabelSelectorRequirement
LabelSelectorRequirement: 1 key s|2 operator s|3 values []s
ObjectReference: 1 kind s|2 namespace s|3 name s|4 uid s|5 apiVersion s|6 resourceVersion s|7 fieldPath s
LocalObjectReference: 1 name s
TypedLocalObjectReference: 1 apiGroup s?|2 kind s|3 name s
Namespace: 1 metadata ObjectMeta|2 spec NamespaceSpec|3 status -
NamespaceSpec: 1 finalizers []s
ConfigMap: 1 metadata ObjectMeta|2 data {s}|3 binaryData {bytes}|4 immutable b?
Secret: 1 metadata ObjectMeta|2 data {bytes}|3 type s|4 stringData {s}|5 immutable b?
ServiceAccount: 1 metadata ObjectMeta|2 secrets []ObjectReference|3 imagePullSecrets []LocalObjectReference|4 automountServiceAccountToken b?
Service: 1 metadata ObjectMeta|2 spec ServiceSpec|3 status -
ServiceSpec: 1 ports []ServicePort|2 selector {s}|3 clusterIP s|4 type s|5 externalIPs []s|7 sessionAffinity s|8 loadBalancerIP s|9 loadBalancerSourceRanges []s|10 externalName s|11 externalTrafficPolicy s|12 healthCheckNodePort i|13 publishNotReadyAddresses b|17 ipFamilyPolicy s?|18 clusterIPs []s|19 ipFamilies []s|20 allocateLoadBalancerNodePorts b?|21 loadBalancerClass s?|22 internalTrafficPolicy s?|23 trafficDistribution s?
ServicePort: 1 name s|2 protocol s|3 port i|4 targetPort IntOrString|5 nodePort i|6 appProtocol s?
Deployment: 1 metadata ObjectMeta|2 spec DeploymentSpec|3 status -
DeploymentSpec: 1 replicas i?|2 selector LabelSelector|3 template PodTemplateSpec|4 strategy DeploymentStrategy|5 minReadySeconds i|6 revisionHistoryLimit i?|7 paused b|9 progressDeadlineSeconds i?
DeploymentStrategy: 1 type s|2 rollingUpdate RollingUpdateDeployment
RollingUpdateDeployment: 1 maxUnavailable IntOrString|2 maxSurge IntOrString
PodTemplateSpec: 1 metadata ObjectMeta|2 spec PodSpec
PodSpec: 1 volumes []Volume|2 containers []Container|3 restartPolicy s|4 terminationGracePeriodSeconds i?|5 activeDeadlineSeconds i?|6 dnsPolicy s|7 nodeSelector {s}|8 serviceAccountName s|9 serviceAccount s|10 nodeName s|11 hostNetwork b|12 hostPID b|13 hostIPC b|14 securityContext PodSecurityContext|15 imagePullSecrets []LocalObjectReference|16 hostname s|17 subdomain s|19 schedulerName s|20 initContainers []Container|21 automountServiceAccountToken b?|22 tolerations []Toleration|24 priorityClassName s|25 priority i?|27 shareProcessNamespace b?|29 runtimeClassName s?|30 enableServiceLinks b?|31 preemptionPolicy s?|34 setHostnameAsFQDN b?
PodSecurityContext: 2 runAsUser i?|3 runAsNonRoot b?|4 supplementalGroups []i|5 fsGroup i?|6 runAsGroup i?|9 fsGroupChangePolicy s?
Volume: 1 name s|2 ~ VolumeSource
VolumeSource: 1 hostPath HostPathVolumeSource|2 emptyDir EmptyDirVolumeSource|6 secret SecretVolumeSource|10 persistentVolumeClaim PersistentVolumeClaimVolumeSource|19 configMap ConfigMapVolumeSource
HostPathVolumeSource: 1 path s|2 type s?
EmptyDirVolumeSource: 1 medium s|2 sizeLimit Quantity
SecretVolumeSource: 1 secretName s|2 items []KeyToPath|3 defaultMode i?|4 optional b?
ConfigMapVolumeSource: 1 ~ LocalObjectReference|2 items []KeyToPath|3 defaultMode i?|4 optional b?
KeyToPath: 1 key s|2 path s|3 mode i?
PersistentVolumeClaimVolumeSource: 1 claimName s|2 readOnly b
Container: 1 name s|2 image s|3 command []s|4 args []s|5 workingDir s|6 ports []ContainerPort|7 env []EnvVar|8 resources ResourceRequirements|9 volumeMounts []VolumeMount|10 livenessProbe Probe|11 readinessProbe Probe|13 terminationMessagePath s|14 imagePullPolicy s|15 securityContext SecurityContext|16 stdin b|17 stdinOnce b|18 tty b|20 terminationMessagePolicy s|22 startupProbe Probe
SecurityContext: 1 capabilities Capabilities|2 privileged b?|4 runAsUser i?|5 runAsNonRoot b?|6 readOnlyRootFilesystem b?|7 allowPrivilegeEscalation b?|8 runAsGroup i?
Capabilities: 1 add []s|2 drop []s
Probe: 1 ~ ProbeHandler|2 initialDelaySeconds i|3 timeoutSeconds i|4 periodSeconds i|5 successThreshold i|6 failureThreshold i|7 terminationGracePeriodSeconds i?
ProbeHandler: 1 exec ExecAction|2 httpGet HTTPGetAction|3 tcpSocket TCPSocketAction
ExecAction: 1 command []s
HTTPGetAction: 1 path s|2 port IntOrString|3 host s|4 scheme s|5 httpHeaders []HTTPHeader
HTTPHeader: 1 name s|2 value s
TCPSocketAction: 1 port IntOrString|2 host s
ContainerPort: 1 name s|2 hostPort i|3 containerPort i|4 protocol s|5 hostIP s
EnvVar: 1 name s|2 value s|3 valueFrom EnvVarSource
EnvVarSource: 1 fieldRef ObjectFieldSelector|3 configMapKeyRef ConfigMapKeySelector|4 secretKeyRef SecretKeySelector
ObjectFieldSelector: 1 apiVersion s|2 fieldPath s
ConfigMapKeySelector: 1 ~ LocalObjectReference|2 key s|3 optional b?
SecretKeySelector: 1 ~ LocalObjectReference|2 key s|3 optional b?
Job: 1 metadata ObjectMeta|2 spec JobSpec|3 status -
JobSpec: 1 parallelism i?|2 completions i?|3 activeDeadlineSeconds i?|4 selector LabelSelector|5 manualSelector b?|6 template PodTemplateSpec|7 backoffLimit i?|8 ttlSecondsAfterFinished i?|9 completionMode s?|10 suspend b?|11 podFailurePolicy PodFailurePolicy|12 backoffLimitPerIndex i?|13 maxFailedIndexes i?|14 podReplacementPolicy s?|15 managedBy s?
PodFailurePolicy: 1 rules []PodFailurePolicyRule
PodFailurePolicyRule: 1 action s|2 onExitCodes PodFailurePolicyOnExitCodesRequirement|3 onPodConditions []PodFailurePolicyOnPodConditionsPattern
PodFailurePolicyOnExitCodesRequirement: 1 containerName s?|2 operator s|3 values []i
PodFailurePolicyOnPodConditionsPattern: 1 type s|2 status s
JobTemplateSpec: 1 metadata ObjectMeta|2 spec JobSpec
CronJob: 1 metadata ObjectMeta|2 spec CronJobSpec|3 status -
CronJobSpec: 1 schedule s|2 startingDeadlineSeconds i?|3 concurrencyPolicy s|4 suspend b?|5 jobTemplate JobTemplateSpec|6 successfulJobsHistoryLimit i?|7 failedJobsHistoryLimit i?|8 timeZone s?
PodDisruptionBudget: 1 metadata ObjectMeta|2 spec PodDisruptionBudgetSpec|3 status -
PodDisruptionBudgetSpec: 1 minAvailable IntOrString?|2 selector LabelSelector|3 maxUnavailable IntOrString?|4 unhealthyPodEvictionPolicy s?
Eviction: 1 metadata ObjectMeta|2 deleteOptions DeleteOptions
DeleteOptions: 1 gracePeriodSeconds i?|2 preconditions Preconditions|3 orphanDependents b?|4 propagationPolicy s?|5 dryRun []s
Preconditions: 1 uid s?|2 resourceVersion s?
ResourceRequirements: 1 limits {Quantity}|2 requests {Quantity}
VolumeMount: 1 name s|2 readOnly b|3 mountPath s|4 subPath s
Toleration: 1 key s|2 operator s|3 value s|4 effect s|5 tolerationSeconds i?
Role: 1 metadata ObjectMeta|2 rules []PolicyRule
ClusterRole: 1 metadata ObjectMeta|2 rules []PolicyRule|3 aggregationRule AggregationRule
AggregationRule: 1 clusterRoleSelectors []LabelSelector
PolicyRule: 1 verbs []s|2 apiGroups []s|3 resources []s|4 resourceNames []s|5 nonResourceURLs []s
RoleBinding: 1 metadata ObjectMeta|2 subjects []Subject|3 roleRef RoleRef
ClusterRoleBinding: 1 metadata ObjectMeta|2 subjects []Subject|3 roleRef RoleRef
Subject: 1 kind s|2 apiGroup s|3 name s|4 namespace s
RoleRef: 1 apiGroup s|2 kind s|3 name s
Ingress: 1 metadata ObjectMeta|2 spec IngressSpec|3 status -
IngressSpec: 1 defaultBackend IngressBackend|2 tls []IngressTLS|3 rules []IngressRule|4 ingressClassName s?
IngressBackend: 3 resource TypedLocalObjectReference|4 service IngressServiceBackend
IngressServiceBackend: 1 name s|2 port ServiceBackendPort
ServiceBackendPort: 1 name s|2 number i
IngressTLS: 1 hosts []s|2 secretName s
IngressRule: 1 host s|2 ~ IngressRuleValue
IngressRuleValue: 1 http HTTPIngressRuleValue
HTTPIngressRuleValue: 1 paths []HTTPIngressPath
HTTPIngressPath: 1 path s|2 backend IngressBackend|3 pathType s?
SelfSubjectAccessReview: 1 metadata ObjectMeta|2 spec SelfSubjectAccessReviewSpec|3 status -
SelfSubjectAccessReviewSpec: 1 resourceAttributes ResourceAttributes|2 nonResourceAttributes NonResourceAttributes
ResourceAttributes: 1 namespace s|2 verb s|3 group s|4 version s|5 resource s|6 subresource s|7 name s
NonResourceAttributes: 1 path s|2 verb s
SelfSubjectRulesReview: 1 metadata ObjectMeta|2 spec SelfSubjectRulesReviewSpec|3 status -
SelfSubjectRulesReviewSpec: 1 namespace s
)";

// The kinds a request body may carry, by apiVersion and kind.
constexpr std::string_view kTopLevel[][2] = {
    {"v1", "Namespace"}, {"v1", "ConfigMap"}, {"v1", "Secret"}, {"v1", "ServiceAccount"}, {"v1", "Service"},
    {"apps/v1", "Deployment"}, {"rbac.authorization.k8s.io/v1", "Role"},
    {"rbac.authorization.k8s.io/v1", "ClusterRole"}, {"rbac.authorization.k8s.io/v1", "RoleBinding"},
    {"rbac.authorization.k8s.io/v1", "ClusterRoleBinding"}, {"networking.k8s.io/v1", "Ingress"},
    {"authorization.k8s.io/v1", "SelfSubjectAccessReview"}, {"authorization.k8s.io/v1", "SelfSubjectRulesReview"},
    {"batch/v1", "Job"}, {"batch/v1", "CronJob"}, {"policy/v1", "PodDisruptionBudget"}, {"policy/v1", "Eviction"},
};

enum class Kind { kString, kInt, kBool, kBytes, kTime, kQuantity, kIntOrString, kMessage, kIgnore };

struct Type {
  Kind kind = Kind::kString;
  std::string message;  // kMessage
};

struct Field {
  std::string name;     // "~": inline
  Type type;
  bool repeated = false;
  bool map = false;     // map<string, type>
  bool pointer = false;
};

using Message = std::map<uint32_t, Field>;

Type parseType(std::string_view t) {
  if (t == "s") return {Kind::kString, {}};
  if (t == "i") return {Kind::kInt, {}};
  if (t == "b") return {Kind::kBool, {}};
  if (t == "bytes") return {Kind::kBytes, {}};
  if (t == "Time") return {Kind::kTime, {}};
  if (t == "Quantity") return {Kind::kQuantity, {}};
  if (t == "IntOrString") return {Kind::kIntOrString, {}};
  if (t == "-") return {Kind::kIgnore, {}};
  return {Kind::kMessage, std::string(t)};
}

const std::map<std::string, Message, std::less<>>& schema() {
  static const auto* messages = [] {
    auto* out = new std::map<std::string, Message, std::less<>>;
    std::string_view rest = kSchema;
    while (!rest.empty()) {
      size_t nl = rest.find('\n');
      std::string_view line = rest.substr(0, nl);
      rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
      if (line.empty()) continue;
      size_t colon = line.find(':');
      Message& m = (*out)[std::string(line.substr(0, colon))];
      std::string_view fields = line.substr(colon + 2);
      while (!fields.empty()) {
        size_t bar = fields.find('|');
        std::string_view f = fields.substr(0, bar);
        fields = bar == std::string_view::npos ? std::string_view{} : fields.substr(bar + 1);
        size_t sp1 = f.find(' ');
        size_t sp2 = f.find(' ', sp1 + 1);
        uint32_t number = static_cast<uint32_t>(std::stoul(std::string(f.substr(0, sp1))));
        Field field;
        field.name = std::string(f.substr(sp1 + 1, sp2 - sp1 - 1));
        std::string_view t = f.substr(sp2 + 1);
        if (t.ends_with('?')) {
          field.pointer = true;
          t.remove_suffix(1);
        }
        if (t.starts_with("[]")) {
          field.repeated = true;
          t.remove_prefix(2);
        } else if (t.starts_with('{')) {
          field.map = true;
          t = t.substr(1, t.size() - 2);
        }
        field.type = parseType(t);
        m[number] = std::move(field);
      }
    }
    return out;
  }();
  return *messages;
}

base::Error malformed(std::string_view what) {
  return base::makeError(base::ErrorCode::kInvalidArgument, "malformed protobuf body: {}", what);
}

// One protobuf wire-format reader over a byte range.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }

  base::Result<uint64_t> varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) return malformed("truncated varint");
      auto byte = static_cast<unsigned char>(data_[pos_++]);
      v |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return v;
    }
    return malformed("varint longer than 10 bytes");
  }

  base::Result<std::string_view> bytes() {
    auto n = varint();
    if (!n) return n.error();
    if (*n > data_.size() - pos_) return malformed("length past the end of the message");
    std::string_view out = data_.substr(pos_, *n);
    pos_ += *n;
    return out;
  }

  // Skips a value of wire type `wt`; returns whether it was a zero/empty one.
  base::Result<bool> skip(uint32_t wt) {
    switch (wt) {
      case 0: {
        auto v = varint();
        if (!v) return v.error();
        return *v == 0;
      }
      case 1:
      case 5: {
        size_t n = wt == 1 ? 8 : 4;
        if (n > data_.size() - pos_) return malformed("truncated fixed-size value");
        bool zero = data_.substr(pos_, n).find_first_not_of('\0') == std::string_view::npos;
        pos_ += n;
        return zero;
      }
      case 2: {
        auto b = bytes();
        if (!b) return b.error();
        return b->empty();
      }
      default:
        return malformed(fmt::format("unsupported wire type {}", wt));
    }
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

std::string formatTime(int64_t seconds) {
  time_t t = static_cast<time_t>(seconds);
  tm parts;
  gmtime_r(&t, &parts);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return buf;
}

constexpr int kMaxDepth = 32;

base::Status decodeMessage(const Message& m, std::string_view messageName, std::string_view data, json::object& out,
                           int depth);

// Decodes a scalar or message value of `type` (wire type `wt`) into a JSON
// value; nullopt for a zero value that Go's JSON would leave out.
base::Result<std::optional<json::value>> decodeValue(const Type& type, uint32_t wt, Reader& r, int depth) {
  auto needWire = [&](uint32_t want) -> base::Status {
    if (wt != want) return malformed(fmt::format("wire type {} where {} was expected", wt, want));
    return {};
  };
  switch (type.kind) {
    case Kind::kIgnore: {
      auto s = r.skip(wt);
      if (!s) return s.error();
      return std::optional<json::value>{};
    }
    case Kind::kInt:
    case Kind::kBool: {
      if (auto s = needWire(0); !s) return s.error();
      auto v = r.varint();
      if (!v) return v.error();
      if (type.kind == Kind::kBool) return std::optional<json::value>(json::value(*v != 0));
      return std::optional<json::value>(json::value(static_cast<int64_t>(*v)));
    }
    case Kind::kString:
    case Kind::kBytes: {
      if (auto s = needWire(2); !s) return s.error();
      auto b = r.bytes();
      if (!b) return b.error();
      if (type.kind == Kind::kBytes) return std::optional<json::value>(json::value(base::base64Encode(*b)));
      return std::optional<json::value>(json::value(json::string(*b)));
    }
    default:
      break;
  }
  if (auto s = needWire(2); !s) return s.error();
  auto b = r.bytes();
  if (!b) return b.error();
  if (depth >= kMaxDepth) return malformed("nested too deeply");
  Reader inner(*b);
  int64_t ints[4] = {0, 0, 0, 0};
  std::string str;
  switch (type.kind) {
    case Kind::kTime:
    case Kind::kQuantity:
    case Kind::kIntOrString: {
      // Time {1 seconds, 2 nanos}; Quantity {1 string}; IntOrString {1 type, 2 intVal, 3 strVal}.
      while (!inner.done()) {
        auto tag = inner.varint();
        if (!tag) return tag.error();
        uint32_t number = static_cast<uint32_t>(*tag >> 3);
        uint32_t w = static_cast<uint32_t>(*tag & 7);
        bool isString = (type.kind == Kind::kQuantity && number == 1) || (type.kind == Kind::kIntOrString && number == 3);
        if (isString && w == 2) {
          auto sv = inner.bytes();
          if (!sv) return sv.error();
          str = std::string(*sv);
        } else if (w == 0 && number < 4) {
          auto v = inner.varint();
          if (!v) return v.error();
          ints[number] = static_cast<int64_t>(*v);
        } else {
          return malformed("unexpected field in Time/Quantity/IntOrString");
        }
      }
      if (type.kind == Kind::kTime) {
        if (ints[1] == 0 && ints[2] == 0) return std::optional<json::value>{};
        return std::optional<json::value>(json::value(formatTime(ints[1])));
      }
      if (type.kind == Kind::kQuantity) return std::optional<json::value>(json::value(str));
      if (ints[1] == 1) return std::optional<json::value>(json::value(str));
      return std::optional<json::value>(json::value(ints[2]));
    }
    case Kind::kMessage: {
      auto it = schema().find(type.message);
      json::object obj;
      if (auto s = decodeMessage(it->second, it->first, *b, obj, depth + 1); !s) return s.error();
      return std::optional<json::value>(json::value(std::move(obj)));
    }
    default:
      return malformed("unreachable");
  }
}

bool isZero(const json::value& v) {
  if (v.is_string()) return v.get_string().empty();
  if (v.is_int64()) return v.get_int64() == 0;
  if (v.is_bool()) return !v.get_bool();
  return false;
}

base::Status decodeMessage(const Message& m, std::string_view messageName, std::string_view data, json::object& out,
                           int depth) {
  Reader r(data);
  while (!r.done()) {
    auto tag = r.varint();
    if (!tag) return tag.error();
    uint32_t number = static_cast<uint32_t>(*tag >> 3);
    uint32_t wt = static_cast<uint32_t>(*tag & 7);
    auto it = m.find(number);
    if (it == m.end()) {
      auto zero = r.skip(wt);
      if (!zero) return zero.error();
      if (!*zero) {
        return base::makeError(base::ErrorCode::kInvalidArgument,
                               "protobuf field {} of {} is not supported by apiserver-lite; send the object as JSON",
                               number, messageName);
      }
      continue;
    }
    const Field& f = it->second;
    if (f.map) {
      // A map entry: message {1 key, 2 value}.
      if (wt != 2) return malformed("map entry is not length-delimited");
      auto entry = r.bytes();
      if (!entry) return entry.error();
      Reader e(*entry);
      std::string key;
      json::value value = f.type.kind == Kind::kQuantity ? json::value("0") : json::value("");
      while (!e.done()) {
        auto t = e.varint();
        if (!t) return t.error();
        uint32_t n = static_cast<uint32_t>(*t >> 3);
        uint32_t w = static_cast<uint32_t>(*t & 7);
        if (n == 1 && w == 2) {
          auto k = e.bytes();
          if (!k) return k.error();
          key = std::string(*k);
        } else if (n == 2) {
          auto v = decodeValue(f.type, w, e, depth);
          if (!v) return v.error();
          if (*v) value = std::move(**v);
        } else {
          return malformed("unexpected field in a map entry");
        }
      }
      json::value& slot = out[f.name];
      if (!slot.is_object()) slot = json::object{};
      slot.get_object()[key] = std::move(value);
      continue;
    }
    auto v = decodeValue(f.type, wt, r, depth);
    if (!v) return v.error();
    if (f.repeated) {
      json::value& slot = out[f.name];
      if (!slot.is_array()) slot = json::array{};
      json::value zero = f.type.kind == Kind::kInt ? json::value(0) : f.type.kind == Kind::kBool ? json::value(false) : json::value("");
      slot.get_array().push_back(*v ? std::move(**v) : std::move(zero));  // a zero element is still an element
      continue;
    }
    if (!*v) continue;
    if (f.name == "~") {
      for (auto& [k, inner] : (*v)->get_object()) out[k] = std::move(inner);
      continue;
    }
    if (!f.pointer && isZero(**v)) {
      out.erase(f.name);
      continue;
    }
    out[f.name] = std::move(**v);
  }
  return {};
}

}  // namespace

base::Result<json::object> decodeKubeProtobuf(std::string_view body) {
  constexpr std::string_view kMagic{"k8s\0", 4};
  if (!body.starts_with(kMagic)) return malformed("missing the k8s protobuf envelope");
  Reader r(body.substr(kMagic.size()));
  std::string apiVersion, kind;
  std::string_view raw;
  bool haveRaw = false;
  while (!r.done()) {
    auto tag = r.varint();
    if (!tag) return tag.error();
    uint32_t number = static_cast<uint32_t>(*tag >> 3);
    uint32_t wt = static_cast<uint32_t>(*tag & 7);
    if (wt != 2) return malformed("unexpected field in the envelope");
    auto b = r.bytes();
    if (!b) return b.error();
    if (number == 1) {
      Reader tm(*b);
      while (!tm.done()) {
        auto t = tm.varint();
        if (!t) return t.error();
        if ((*t & 7) != 2) return malformed("unexpected field in typeMeta");
        auto s = tm.bytes();
        if (!s) return s.error();
        if ((*t >> 3) == 1) apiVersion = std::string(*s);
        if ((*t >> 3) == 2) kind = std::string(*s);
      }
    } else if (number == 2) {
      raw = *b;
      haveRaw = true;
    } else if (number == 3 && !b->empty()) {
      return malformed(fmt::format("content encoding {:?} is not supported", std::string(*b)));
    }
  }
  if (!haveRaw) return malformed("the envelope carries no object");
  bool known = false;
  for (const auto& top : kTopLevel) known |= top[0] == apiVersion && top[1] == kind;
  if (!known) {
    return base::makeError(base::ErrorCode::kInvalidArgument,
                           "no protobuf schema for {} {} in apiserver-lite; send the object as JSON", apiVersion, kind);
  }
  json::object obj;
  obj["apiVersion"] = apiVersion;
  obj["kind"] = kind;
  auto it = schema().find(kind);
  if (auto s = decodeMessage(it->second, it->first, raw, obj, 0); !s) return s.error();
  return obj;
}

}  // namespace trellis::apiserver::registry
