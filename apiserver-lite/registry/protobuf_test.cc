#include "apiserver-lite/registry/protobuf.h"

#include <gtest/gtest.h>

#include <boost/json/serialize.hpp>

namespace trellis::apiserver::registry {
namespace {

// A minimal protobuf writer for building request bodies by hand.
std::string varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
  return out;
}
std::string bytesField(uint32_t n, std::string_view b) { return varint(n << 3 | 2) + varint(b.size()) + std::string(b); }
std::string intField(uint32_t n, uint64_t v) { return varint(n << 3) + varint(v); }

std::string envelope(std::string_view apiVersion, std::string_view kind, std::string_view raw) {
  return std::string("k8s\0", 4) + bytesField(1, bytesField(1, apiVersion) + bytesField(2, kind)) + bytesField(2, raw) +
         bytesField(3, "") + bytesField(4, "");
}

// ObjectMeta as gogo-protobuf writes it: every non-pointer field, zero or not.
std::string meta(std::string_view name) {
  return bytesField(1, name) + bytesField(2, "") + bytesField(3, "") + bytesField(6, "") + intField(7, 0) +
         bytesField(8, "") + bytesField(11, bytesField(1, "app") + bytesField(2, "web"));
}

TEST(Protobuf, ConfigMapDecodesLikeGoJson) {
  std::string raw = bytesField(1, meta("cm")) + bytesField(2, bytesField(1, "a") + bytesField(2, "1")) +
                    bytesField(3, bytesField(1, "bin") + bytesField(2, std::string("\x00\xff", 2))) + intField(4, 0);
  auto obj = decodeKubeProtobuf(envelope("v1", "ConfigMap", raw));
  ASSERT_TRUE(obj) << obj.error().message();
  // Zero non-pointer fields are left out; `immutable` is a pointer, so an explicit false stays.
  EXPECT_EQ(boost::json::serialize(*obj),
            R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm","labels":{"app":"web"}},)"
            R"("data":{"a":"1"},"binaryData":{"bin":"AP8="},"immutable":false})");
}

TEST(Protobuf, DeploymentKeepsPointerZerosAndDecodesIntOrStringAndRepeatedEmptyStrings) {
  std::string container = bytesField(1, "app") + bytesField(2, "nginx") + bytesField(3, "sh") + bytesField(3, "") +
                          bytesField(6, intField(3, 80)) + bytesField(8, "") + intField(16, 0);
  std::string podSpec = bytesField(2, container) + bytesField(3, "");
  std::string strategy = bytesField(1, "RollingUpdate") +
                         bytesField(2, bytesField(1, intField(1, 1) + bytesField(3, "25%")) +
                                           bytesField(2, intField(1, 0) + intField(2, 2)));
  std::string spec = intField(1, 0) + bytesField(3, bytesField(1, meta("")) + bytesField(2, podSpec)) +
                     bytesField(4, strategy) + intField(5, 0);
  auto obj = decodeKubeProtobuf(envelope("apps/v1", "Deployment", bytesField(1, meta("d")) + bytesField(2, spec) +
                                                                       bytesField(3, intField(1, 7))));
  ASSERT_TRUE(obj) << obj.error().message();
  const auto& s = obj->at("spec").as_object();
  EXPECT_EQ(s.at("replicas").as_int64(), 0);  // *int32: an explicit 0 is kept
  EXPECT_FALSE(s.contains("minReadySeconds"));
  EXPECT_FALSE(obj->contains("status"));  // status is not taken from a request body
  const auto& c = s.at("template").at("spec").at("containers").at(0).as_object();
  EXPECT_EQ(boost::json::serialize(c),
            R"({"name":"app","image":"nginx","command":["sh",""],"ports":[{"containerPort":80}],"resources":{}})");
  EXPECT_EQ(s.at("strategy").at("rollingUpdate").at("maxUnavailable").as_string(), "25%");
  EXPECT_EQ(s.at("strategy").at("rollingUpdate").at("maxSurge").as_int64(), 2);
}

TEST(Protobuf, PodDisruptionBudgetAndEvictionAsKubectlSendsThem) {
  // kubectl create pdb web --selector=app=web --min-available=50%
  std::string intOrString = intField(1, 1) + bytesField(3, "50%");
  std::string spec = bytesField(1, intOrString) + bytesField(2, bytesField(1, bytesField(1, "app") + bytesField(2, "web")));
  auto pdb = decodeKubeProtobuf(envelope("policy/v1", "PodDisruptionBudget", bytesField(1, meta("web")) + bytesField(2, spec)));
  ASSERT_TRUE(pdb) << pdb.error().message();
  EXPECT_EQ(boost::json::serialize((*pdb)["spec"]), R"({"minAvailable":"50%","selector":{"matchLabels":{"app":"web"}}})");
  // kubectl drain's Eviction with deleteOptions {gracePeriodSeconds: 0}: a pointer zero stays.
  auto ev = decodeKubeProtobuf(envelope("policy/v1", "Eviction", bytesField(1, meta("p")) + bytesField(2, intField(1, 0))));
  ASSERT_TRUE(ev) << ev.error().message();
  EXPECT_EQ(boost::json::serialize((*ev)["deleteOptions"]), R"({"gracePeriodSeconds":0})");
}

TEST(Protobuf, JobPodFailurePolicyKeepsZeroExitCodes) {
  // values [0, 42] of an onExitCodes rule: repeated int32, one field each (proto2, unpacked).
  std::string codes = bytesField(2, "NotIn") + intField(3, 0) + intField(3, 42);
  std::string rule = bytesField(1, "FailJob") + bytesField(2, codes);
  std::string spec = bytesField(11, bytesField(1, rule)) + intField(7, 2);
  auto job = decodeKubeProtobuf(envelope("batch/v1", "Job", bytesField(1, meta("j")) + bytesField(2, spec)));
  ASSERT_TRUE(job) << job.error().message();
  EXPECT_EQ(boost::json::serialize((*job)["spec"]),
            R"({"podFailurePolicy":{"rules":[{"action":"FailJob","onExitCodes":{"operator":"NotIn","values":[0,42]}}]},"backoffLimit":2})");
}

TEST(Protobuf, IngressRuleValueIsInlined) {
  std::string path = bytesField(1, "/x") + bytesField(3, "Prefix") +
                     bytesField(2, bytesField(4, bytesField(1, "svc") + bytesField(2, intField(2, 80))));
  std::string rule = bytesField(1, "a.example") + bytesField(2, bytesField(1, bytesField(1, path)));
  auto obj = decodeKubeProtobuf(envelope("networking.k8s.io/v1", "Ingress",
                                         bytesField(1, meta("i")) + bytesField(2, bytesField(3, rule))));
  ASSERT_TRUE(obj) << obj.error().message();
  EXPECT_EQ(boost::json::serialize(obj->at("spec")),
            R"({"rules":[{"host":"a.example","http":{"paths":[{"path":"/x","pathType":"Prefix",)"
            R"("backend":{"service":{"name":"svc","port":{"number":80}}}}]}}]})");
}

TEST(Protobuf, BadInputIsAClearError) {
  auto expectError = [](std::string body, std::string_view words) {
    auto obj = decodeKubeProtobuf(body);
    ASSERT_FALSE(obj) << words;
    EXPECT_EQ(obj.error().code(), base::ErrorCode::kInvalidArgument);
    EXPECT_NE(obj.error().message().find(words), std::string::npos) << obj.error().message();
  };
  expectError("{\"kind\":\"ConfigMap\"}", "envelope");
  expectError(envelope("v1", "Pod", bytesField(1, meta("p"))), "no protobuf schema for v1 Pod");
  expectError(envelope("v1", "ConfigMap", bytesField(1, meta("cm")) + bytesField(9, "x")),
              "field 9 of ConfigMap is not supported");
  std::string truncated = envelope("v1", "ConfigMap", bytesField(1, meta("cm")));
  expectError(truncated.substr(0, truncated.size() - 9), "malformed");
  expectError(envelope("v1", "ConfigMap", std::string("\x0a\xff\xff\xff\xff\x0f", 6)), "past the end");
  expectError(envelope("v1", "ConfigMap", intField(1, 5)), "wire type");
}

}  // namespace
}  // namespace trellis::apiserver::registry
