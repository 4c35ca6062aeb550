#include "apiserver-lite/registry/kinds.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace trellis::apiserver::registry {
namespace {

namespace json = boost::json;

json::object parse(std::string_view s) { return json::parse(s).as_object(); }
const ResourceInfo& res(std::string_view group, std::string_view plural) { return *findResource(group, "v1", plural); }

// All messages of the errors, joined by " | ".
std::string messages(const FieldErrors& errs) {
  std::string out;
  for (const FieldError& e : errs) out += (out.empty() ? "" : " | ") + e.message();
  return out;
}

std::string createErrors(std::string_view group, std::string_view plural, std::string_view body) {
  auto o = parse(body);
  applyDefaults(res(group, plural), o, true);
  return messages(validateKind(res(group, plural), o, nullptr));
}

TEST(Kinds, PodDefaultsReadBackLikeKube) {
  auto pod = parse(R"({"metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"nginx","ports":[{"containerPort":80}]},
                      {"name":"b","image":"registry.local:5000/app:1.2"}]},"status":{"phase":"Running"}})");
  applyDefaults(res("", "pods"), pod, true);
  const auto& spec = pod["spec"].as_object();
  EXPECT_EQ(spec.at("restartPolicy").as_string(), "Always");
  EXPECT_EQ(spec.at("dnsPolicy").as_string(), "ClusterFirst");
  EXPECT_EQ(spec.at("terminationGracePeriodSeconds").as_int64(), 30);
  const auto& a = spec.at("containers").at(0).as_object();
  EXPECT_EQ(a.at("imagePullPolicy").as_string(), "Always");  // no tag means :latest
  EXPECT_EQ(a.at("ports").at(0).at("protocol").as_string(), "TCP");
  EXPECT_EQ(spec.at("containers").at(1).at("imagePullPolicy").as_string(), "IfNotPresent");  // a port is not a tag
  // A client cannot create a Running pod: status starts Pending.
  EXPECT_EQ(json::serialize(pod["status"]), R"({"phase":"Pending","qosClass":"BestEffort"})");
}

TEST(Kinds, ServiceAndWorkloadDefaults) {
  auto svc = parse(R"({"spec":{"ports":[{"port":80}]}})");
  applyDefaults(res("", "services"), svc, true);
  EXPECT_EQ(json::serialize(svc["spec"].at("ports")), R"([{"port":80,"protocol":"TCP","targetPort":80}])");
  EXPECT_EQ(svc["spec"].at("type").as_string(), "ClusterIP");
  auto d = parse(R"({"spec":{"selector":{"matchLabels":{"app":"w"}},"template":{"metadata":{"labels":{"app":"w"}},
                    "spec":{"containers":[{"name":"w","image":"w:1"}]}}}})");
  applyDefaults(res("apps", "deployments"), d, true);
  EXPECT_EQ(d["spec"].at("replicas").as_int64(), 1);
  EXPECT_EQ(json::serialize(d["spec"].at("strategy")),
            R"({"type":"RollingUpdate","rollingUpdate":{"maxUnavailable":"25%","maxSurge":"25%"}})");
  EXPECT_EQ(messages(validateKind(res("apps", "deployments"), d, nullptr)), "");
}

TEST(Kinds, SecretStringDataIsMergedAndNeverStored) {
  auto s = parse(R"({"stringData":{"password":"s3cret"},"data":{"user":"YWRtaW4="}})");
  applyDefaults(res("", "secrets"), s, true);
  EXPECT_EQ(json::serialize(s["data"]), R"({"user":"YWRtaW4=","password":"czNjcmV0"})");
  EXPECT_EQ(s["type"].as_string(), "Opaque");
  EXPECT_FALSE(s.contains("stringData"));
  EXPECT_EQ(createErrors("", "secrets", R"({"data":{"k":"not base64!"}})"),
            R"(data[k]: Invalid value: "<secret contents redacted>": illegal base64 data)");
}

TEST(Kinds, RequiredFieldsAndSupportedValues) {
  EXPECT_EQ(createErrors("", "pods", R"({"spec":{"containers":[{"name":"a"},{"name":"a","image":"x"}]}})"),
            R"(spec.containers[0].image: Required value | spec.containers[1].name: Duplicate value: "a")");
  EXPECT_EQ(createErrors("", "services", R"({"spec":{"type":"Bogus","ports":[{"port":70000}]}})"),
            R"(spec.type: Unsupported value: "Bogus": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort" | )"
            R"(spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive | )"
            R"(spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive)");
  EXPECT_EQ(createErrors("", "persistentvolumeclaims", R"({"spec":{}})"),
            "spec.accessModes: Required value: at least 1 access mode is required | spec.resources[storage]: Required value");
  EXPECT_EQ(createErrors("storage.k8s.io", "storageclasses", R"({})"), "provisioner: Required value");
  EXPECT_EQ(createErrors("apps", "deployments", R"({"spec":{"selector":{"matchLabels":{"app":"a"}},
            "template":{"metadata":{"labels":{"app":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}})"),
            R"(spec.template.metadata.labels: Invalid value: {"app":"b"}: `selector` does not match template `labels`)");
}

TEST(Kinds, IngressPathTypesAndPaths) {
  auto ingress = [](std::string_view path) {
    return createErrors("networking.k8s.io", "ingresses",
                        std::string(R"({"spec":{"rules":[{"host":"a.example","http":{"paths":[)") + std::string(path) +
                            "]}}]}}");
  };
  std::string backend = R"("backend":{"service":{"name":"web","port":{"number":80}}})";
  EXPECT_EQ(ingress(R"({"path":"/",)" + backend + "}"),
            "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified");
  EXPECT_EQ(ingress(R"({"path":"api","pathType":"Prefix",)" + backend + "}"),
            R"(spec.rules[0].http.paths[0].path: Invalid value: "api": must be an absolute path)");
  EXPECT_EQ(ingress(R"({"path":"/a//b","pathType":"Exact",)" + backend + "}"),
            R"(spec.rules[0].http.paths[0].path: Invalid value: "/a//b": must not contain '//')");
  EXPECT_EQ(ingress(R"({"path":"/","pathType":"Regex",)" + backend + "}"),
            R"(spec.rules[0].http.paths[0].pathType: Unsupported value: "Regex": supported values: "Exact", "ImplementationSpecific", "Prefix")");
  EXPECT_EQ(ingress(R"({"path":"/","pathType":"Prefix","backend":{"service":{"name":"web","port":{}}}})"),
            R"(spec.rules[0].http.paths[0].backend.service.port: Invalid value: {}: port name or number is required)");
  EXPECT_EQ(ingress(R"({"path":"/","pathType":"Prefix",)" + backend + "}"), "");
  EXPECT_EQ(createErrors("networking.k8s.io", "ingresses", R"({"spec":{}})"),
            "spec: Invalid value: {}: either `defaultBackend` or `rules` must be specified");
}

TEST(Kinds, ImmutableFieldsOnUpdate) {
  auto update = [](std::string_view group, std::string_view plural, std::string_view oldBody, std::string_view newBody) {
    auto old = parse(oldBody);
    auto now = parse(newBody);
    applyDefaults(res(group, plural), old, true);
    applyDefaults(res(group, plural), now, false);
    return messages(validateKind(res(group, plural), now, &old));
  };
  std::string sc = R"({"provisioner":"csi.trellis.dev","parameters":{"a":"1"}})";
  EXPECT_EQ(update("storage.k8s.io", "storageclasses", sc, R"({"provisioner":"csi.trellis.dev","parameters":{"a":"2"}})"),
            "parameters: Forbidden: updates to parameters are forbidden.");
  EXPECT_EQ(update("storage.k8s.io", "storageclasses", sc, R"({"provisioner":"csi.trellis.dev","parameters":{"a":"1"},
            "allowVolumeExpansion":true})"), "");
  std::string cm = R"({"data":{"k":"v"},"immutable":true})";
  EXPECT_EQ(update("", "configmaps", cm, R"({"data":{"k":"w"},"immutable":true})"),
            "data: Forbidden: field is immutable when `immutable` is set");
  std::string rb = R"({"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"a"}})";
  EXPECT_EQ(update("rbac.authorization.k8s.io", "rolebindings", rb,
                   R"({"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"b"}})"),
            R"(roleRef: Invalid value: {"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"b"}: cannot change roleRef)");
  std::string pod = R"({"spec":{"containers":[{"name":"a","image":"x:1"}]}})";
  EXPECT_EQ(update("", "pods", pod, R"({"spec":{"containers":[{"name":"a","image":"x:2"}]}})"), "");  // image may change
  EXPECT_NE(update("", "pods", pod, R"({"spec":{"containers":[{"name":"b","image":"x:1"}]}})").find(
                "spec: Forbidden: pod updates may not change fields other than"),
            std::string::npos);
  // Binding: nodeName may be set once, never changed.
  std::string bound = R"({"spec":{"nodeName":"n1","containers":[{"name":"a","image":"x:1"}]}})";
  EXPECT_EQ(update("", "pods", pod, bound), "");
  EXPECT_NE(update("", "pods", bound, R"({"spec":{"nodeName":"n2","containers":[{"name":"a","image":"x:1"}]}})"), "");
}

TEST(Kinds, PvcResizeOnlyUpwardAndOnlyWhenBound) {
  std::string spec = R"("spec":{"accessModes":["ReadWriteOnce"],"storageClassName":"fast","resources":{"requests":{"storage":"%s"}}})";
  auto pvc = [&](std::string_view size, std::string_view status) {
    std::string s = spec;
    s.replace(s.find("%s"), 2, size);
    return parse("{" + s + (status.empty() ? "" : "," + std::string(status)) + "}");
  };
  const ResourceInfo& r = res("", "persistentvolumeclaims");
  auto bound = pvc("1Gi", R"("status":{"phase":"Bound","capacity":{"storage":"1Gi"}})");
  EXPECT_EQ(messages(validateKind(r, pvc("2Gi", ""), &bound)), "");
  EXPECT_TRUE(pvcRequestGrew(pvc("2Gi", ""), bound));
  EXPECT_EQ(messages(validateKind(r, pvc("512Mi", ""), &bound)),
            "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity");
  auto pending = pvc("1Gi", R"("status":{"phase":"Pending"})");
  EXPECT_EQ(messages(validateKind(r, pvc("2Gi", ""), &pending)),
            "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName "
            "for bound claims");
  // The PV controller binds a claim by setting spec.volumeName once.
  auto binding = pending;
  binding["spec"].as_object()["volumeName"] = "pv-1";
  EXPECT_EQ(messages(validateKind(r, binding, &pending)), "");
}

TEST(Kinds, MalformedQuantitiesAreDecodingErrors) {
  const ResourceInfo& pvcs = *findResource("", "v1", "persistentvolumeclaims");
  auto withStorage = [](json::value storage) {
    return json::object{{"metadata", json::object{{"name", "c"}}},
                        {"spec", json::object{{"accessModes", json::array{"ReadWriteOnce"}},
                                              {"resources", json::object{{"requests", json::object{{"storage", storage}}}}}}}};
  };
  for (const char* bad : {"1e-", "1.5.5Gi", "1GB", "abc", "1 Gi"}) {
    auto o = withStorage(bad);
    auto err = malformedQuantity(pvcs, o);
    ASSERT_TRUE(err) << bad;
    EXPECT_TRUE(err->starts_with("PersistentVolumeClaim in version \"v1\" cannot be handled as a PersistentVolumeClaim: "))
        << *err;
  }
  auto o = withStorage("1e99999999999");  // accepted, as apimachinery accepts it
  EXPECT_FALSE(malformedQuantity(pvcs, o));
  auto n = withStorage(5);  // a JSON number is read as its text
  EXPECT_FALSE(malformedQuantity(pvcs, n));
  EXPECT_EQ(n["spec"].as_object()["resources"].as_object()["requests"].as_object()["storage"], json::value("5"));
  auto b = withStorage(true);
  EXPECT_TRUE(malformedQuantity(pvcs, b));
  // A Pod's container limits; a ConfigMap's data is never a quantity.
  const ResourceInfo& pods = *findResource("", "v1", "pods");
  json::object pod{{"spec", json::object{{"containers", json::array{json::object{
                                {"name", "c"}, {"resources", json::object{{"limits", json::object{{"memory", "1..Gi"}}}}}}}}}}};
  EXPECT_TRUE(malformedQuantity(pods, pod));
  const ResourceInfo& cms = *findResource("", "v1", "configmaps");
  json::object cm{{"data", json::object{{"requests", "1..Gi"}}}};
  EXPECT_FALSE(malformedQuantity(cms, cm));
}

}  // namespace
}  // namespace trellis::apiserver::registry
