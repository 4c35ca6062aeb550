#include "apiserver-lite/registry/object.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace trellis::apiserver::registry {
namespace {

json::object parse(std::string_view s) { return json::parse(s).as_object(); }
const ResourceInfo& cm() { return *findResource("", "v1", "configmaps"); }
const ResourceInfo& ns() { return *findResource("", "v1", "namespaces"); }

TEST(Resources, TableCoversTheIssueKindsWithKeys) {
  EXPECT_NE(findResource("networking.k8s.io", "v1", "ingresses"), nullptr);
  EXPECT_NE(findKind("apps/v1", "DaemonSet"), nullptr);
  EXPECT_EQ(findKind("v1", "Ingress"), nullptr);
  EXPECT_EQ(cm().key("default", "a"), "/registry/core/configmaps/default/a");
  EXPECT_EQ(ns().key("", "kube-system"), "/registry/core/namespaces/kube-system");
  auto gvs = servedGroupVersions();
  EXPECT_EQ(gvs.front().group, "");
  EXPECT_EQ(gvs.size(), 13u);  // core, apps, authorization, batch, coordination, discovery, events, groupsnapshot,
                               // networking, policy, rbac, snapshot, storage
}

TEST(Object, CreateDefaultsAndValidates) {
  auto obj = parse(R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"app","labels":{"a":"b"}},"data":{"k":"v"}})");
  auto err = prepareCreate(obj, cm(), "default", "2026-11-23T00:00:00Z", "uid-1", "abcde");
  ASSERT_FALSE(err) << err->message;
  const auto& meta = obj["metadata"].as_object();
  EXPECT_EQ(meta.at("namespace").as_string(), "default");
  EXPECT_EQ(meta.at("uid").as_string(), "uid-1");
  EXPECT_EQ(meta.at("creationTimestamp").as_string(), "2026-11-23T00:00:00Z");
  EXPECT_FALSE(meta.contains("generation"));  // no spec, no generation (as kube-apiserver)
  auto withSpec = parse(R"({"metadata":{"name":"l"},"spec":{"holderIdentity":"a"}})");
  ASSERT_FALSE(prepareCreate(withSpec, *findResource("coordination.k8s.io", "v1", "leases"), "default", "t", "u", "s"));
  EXPECT_EQ(withSpec["metadata"].as_object()["generation"].as_int64(), 1);
}

TEST(Object, GenerateNameAppendsSuffix) {
  auto obj = parse(R"({"metadata":{"generateName":"job-"}})");
  ASSERT_FALSE(prepareCreate(obj, cm(), "default", "t", "u", "x7k2p"));
  EXPECT_EQ(objectName(obj), "job-x7k2p");
  EXPECT_EQ(obj["kind"].as_string(), "ConfigMap");  // filled in when absent
}

TEST(Object, InvalidNameGivesKubeStyleStatus) {
  auto obj = parse(R"({"metadata":{"name":"Bad_Name","labels":{"ok":"-bad"}}})");
  auto err = prepareCreate(obj, cm(), "default", "t", "u", "s");
  ASSERT_TRUE(err);
  EXPECT_EQ(err->code, 422);
  EXPECT_EQ(err->reason, "Invalid");
  ASSERT_EQ(err->causes.size(), 2u);
  json::object st = statusObject(*err);
  EXPECT_EQ(st["reason"].as_string(), "Invalid");
  EXPECT_EQ(st["details"].as_object()["kind"].as_string(), "ConfigMap");
  auto& causes = st["details"].as_object()["causes"].as_array();
  EXPECT_EQ(causes[0].as_object()["field"].as_string(), "metadata.name");
  EXPECT_EQ(causes[0].as_object()["reason"].as_string(), "FieldValueInvalid");
  std::string msg(st["message"].as_string());
  EXPECT_EQ(msg.rfind("ConfigMap \"Bad_Name\" is invalid: [metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain", 0), 0u) << msg;
}

TEST(Object, MissingNameAndWrongTypeAndNamespaceMismatch) {
  auto noName = parse(R"({"metadata":{}})");
  auto e = prepareCreate(noName, cm(), "default", "t", "u", "s");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->causes.at(0).message(), "metadata.name: Required value: name or generateName is required");
  auto wrongKind = parse(R"({"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"}})");
  e = prepareCreate(wrongKind, cm(), "default", "t", "u", "s");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, 400);
  auto wrongVersion = parse(R"({"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"a"}})");
  EXPECT_EQ(prepareCreate(wrongVersion, cm(), "default", "t", "u", "s")->code, 400);
  auto otherNs = parse(R"({"metadata":{"name":"a","namespace":"other"}})");
  EXPECT_EQ(prepareCreate(otherNs, cm(), "default", "t", "u", "s")->code, 400);
  auto nsName = parse(R"({"metadata":{"name":"a.b"}})");  // namespaces are DNS labels: no dots
  EXPECT_EQ(prepareCreate(nsName, ns(), "", "t", "u", "s")->code, 422);
}

TEST(Object, UpdateKeepsIdentityAndBumpsGenerationOnSpecChange) {
  auto old = parse(R"({"metadata":{"name":"d","namespace":"ns","uid":"U","creationTimestamp":"T","generation":3},"spec":{"replicas":1}})");
  auto same = parse(R"({"metadata":{"name":"d","uid":"forged","labels":{"x":"y"}},"spec":{"replicas":1}})");
  const ResourceInfo& deploy = *findResource("apps", "v1", "deployments");
  ASSERT_FALSE(prepareUpdate(same, old, deploy, "ns", "d"));
  EXPECT_EQ(same["metadata"].as_object()["uid"].as_string(), "U");
  EXPECT_EQ(same["metadata"].as_object()["generation"].as_int64(), 3);
  auto changed = parse(R"({"metadata":{"name":"d"},"spec":{"replicas":2}})");
  ASSERT_FALSE(prepareUpdate(changed, old, deploy, "ns", "d"));
  EXPECT_EQ(changed["metadata"].as_object()["generation"].as_int64(), 4);
  auto renamed = parse(R"({"metadata":{"name":"other"}})");
  EXPECT_EQ(prepareUpdate(renamed, old, deploy, "ns", "d")->code, 400);
}

TEST(Object, ParseAndResourceVersion) {
  EXPECT_FALSE(parseObject("{not json").ok());
  EXPECT_FALSE(parseObject("[1,2]").ok());
  EXPECT_FALSE(parseObject("apiVersion: v1\nkind: ConfigMap").ok());  // YAML sent as JSON
  auto o = parseObject(R"({"metadata":{"resourceVersion":"42"}})");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(objectResourceVersion(*o), 42);
  auto bad = parseObject(R"({"metadata":{"resourceVersion":"4x"}})");
  EXPECT_EQ(objectResourceVersion(*bad), -1);
  setResourceVersion(*o, 7);
  EXPECT_EQ(objectResourceVersion(*o), 7);
}

TEST(Object, NotFoundAndConflictMessagesMatchKubeApiserver) {
  const ResourceInfo& ing = *findResource("networking.k8s.io", "v1", "ingresses");
  EXPECT_EQ(ApiError::notFound(ing, "web").message, "ingresses.networking.k8s.io \"web\" not found");
  EXPECT_EQ(ApiError::conflict(cm(), "a", "the object has been modified; please apply your changes to the latest version and try again").message,
            "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your "
            "changes to the latest version and try again");
  json::object st = statusObject(ApiError::alreadyExists(cm(), "a"));
  EXPECT_EQ(json::serialize(st),
            R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \"a\" already exists","reason":"AlreadyExists","details":{"name":"a","kind":"configmaps"},"code":409})");
}

TEST(Object, UidsAndSuffixesLookRight) {
  std::string u = newUid();
  EXPECT_EQ(u.size(), 36u);
  EXPECT_EQ(u[14], '4');
  EXPECT_NE(newUid(), u);
  EXPECT_EQ(randomNameSuffix().size(), 5u);
}

}  // namespace
}  // namespace trellis::apiserver::registry

#include "apiserver-lite/registry/table.h"

namespace trellis::apiserver::registry {
namespace {

TEST(Table, HumanDurationLikeKube) {
  EXPECT_EQ(humanDuration(0), "0s");
  EXPECT_EQ(humanDuration(119), "119s");
  EXPECT_EQ(humanDuration(200), "3m20s");
  EXPECT_EQ(humanDuration(600), "10m");
  EXPECT_EQ(humanDuration(3 * 3600 + 5 * 60), "3h5m");
  EXPECT_EQ(humanDuration(30 * 3600), "30h");
  EXPECT_EQ(humanDuration(3 * 86400 + 7200), "3d2h");
  EXPECT_EQ(humanDuration(100 * 86400), "100d");
  EXPECT_EQ(humanDuration(int64_t(3) * 365 * 86400 + 10 * 86400), "3y10d");
}

TEST(Table, ColumnsAndRowsForConfigMaps) {
  auto cm = json::parse(R"({"metadata":{"name":"a","creationTimestamp":"2026-01-01T00:00:00Z","labels":{"x":"y"}},"data":{"k":"v","l":"w"}})").as_object();
  json::object t = toTable(*findResource("", "v1", "configmaps"), {cm}, "7", 1767225600 + 90);
  EXPECT_EQ(t["kind"].as_string(), "Table");
  auto& defs = t["columnDefinitions"].as_array();
  ASSERT_EQ(defs.size(), 3u);
  EXPECT_EQ(defs[1].as_object()["name"].as_string(), "Data");
  auto& row = t["rows"].as_array()[0].as_object();
  EXPECT_EQ(json::serialize(row["cells"]), R"(["a",2,"90s"])");
  EXPECT_EQ(row["object"].as_object()["kind"].as_string(), "PartialObjectMetadata");
  EXPECT_TRUE(wantsTable("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"));
  EXPECT_FALSE(wantsTable("application/json"));
}

}  // namespace
}  // namespace trellis::apiserver::registry
