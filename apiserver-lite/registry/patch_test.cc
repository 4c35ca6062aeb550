#include "apiserver-lite/registry/patch.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace trellis::apiserver::registry {
namespace {

namespace json = boost::json;
json::value J(std::string_view s) { return json::parse(s); }

TEST(MergePatch, Rfc7386Example) {
  auto out = applyMergePatch(J(R"({"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},"tags":["example","sample"],"content":"This will be unchanged"})"),
                             J(R"({"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},"tags":["example"]})"));
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, J(R"({"title":"Hello!","author":{"givenName":"John"},"tags":["example"],"content":"This will be unchanged","phoneNumber":"+01-123-456-7890"})"));
  EXPECT_FALSE(applyMergePatch(J("{}"), J("[1]")).ok());
}

TEST(JsonPatch, Rfc6902Operations) {
  auto out = applyJsonPatch(J(R"({"a":{"b":[1,2,3]},"c~d":1,"e/f":2})"),
                            J(R"([{"op":"add","path":"/a/b/1","value":9},
                                  {"op":"remove","path":"/a/b/0"},
                                  {"op":"replace","path":"/c~0d","value":5},
                                  {"op":"copy","from":"/e~1f","path":"/g"},
                                  {"op":"move","from":"/g","path":"/h"},
                                  {"op":"add","path":"/a/b/-","value":4},
                                  {"op":"test","path":"/h","value":2}])"));
  ASSERT_TRUE(out.ok()) << out.error().message();
  EXPECT_EQ(*out, J(R"({"a":{"b":[9,2,3,4]},"c~d":5,"e/f":2,"h":2})"));
  EXPECT_FALSE(applyJsonPatch(J("{}"), J(R"([{"op":"remove","path":"/missing"}])")).ok());
  EXPECT_FALSE(applyJsonPatch(J(R"({"a":1})"), J(R"([{"op":"test","path":"/a","value":2}])")).ok());
  EXPECT_FALSE(applyJsonPatch(J("{}"), J(R"([{"op":"frobnicate","path":"/a"}])")).ok());
  EXPECT_FALSE(applyJsonPatch(J(R"({"a":[1]})"), J(R"([{"op":"add","path":"/a/5","value":1}])")).ok());
}

TEST(StrategicMergePatch, ContainersMergeByNameAndDirectivesWork) {
  const ResourceInfo& deploy = *findResource("apps", "v1", "deployments");
  json::value target = J(R"({"spec":{"template":{"spec":{"containers":[
      {"name":"app","image":"app:1","ports":[{"containerPort":80,"name":"http"}]},
      {"name":"sidecar","image":"proxy:1"}],
      "tolerations":[{"key":"a"}]}}}})");
  auto out = applyStrategicMergePatch(target, J(R"({"spec":{"template":{"spec":{
      "containers":[{"name":"app","image":"app:2","ports":[{"containerPort":443,"name":"https"}]},
                    {"name":"sidecar","$patch":"delete"},
                    {"name":"new","image":"new:1"}],
      "tolerations":[{"key":"b"}]}}}})"), deploy);
  ASSERT_TRUE(out.ok()) << out.error().message();
  EXPECT_EQ(*out, J(R"({"spec":{"template":{"spec":{"containers":[
      {"name":"app","image":"app:2","ports":[{"containerPort":80,"name":"http"},{"containerPort":443,"name":"https"}]},
      {"name":"new","image":"new:1"}],
      "tolerations":[{"key":"b"}]}}}})")) << json::serialize(*out);
}

TEST(StrategicMergePatch, ReplaceRetainKeysOrderAndPrimitiveDeletes) {
  const ResourceInfo& pod = *findResource("", "v1", "pods");
  auto replaced = applyStrategicMergePatch(J(R"({"metadata":{"labels":{"a":"1","b":"2"}}})"),
                                           J(R"({"metadata":{"labels":{"$patch":"replace","c":"3"}}})"), pod);
  EXPECT_EQ(*replaced, J(R"({"metadata":{"labels":{"c":"3"}}})"));
  auto retained = applyStrategicMergePatch(J(R"({"spec":{"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":1}}}})"),
                                           J(R"({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}})"), pod);
  EXPECT_EQ(*retained, J(R"({"spec":{"strategy":{"type":"Recreate"}}})"));
  auto ordered = applyStrategicMergePatch(
      J(R"({"spec":{"containers":[{"name":"a"},{"name":"b"}]}})"),
      J(R"({"spec":{"$setElementOrder/containers":[{"name":"b"},{"name":"a"}],"containers":[{"name":"a","image":"x"}]}})"), pod);
  EXPECT_EQ(*ordered, J(R"({"spec":{"containers":[{"name":"b"},{"name":"a","image":"x"}]}})")) << json::serialize(*ordered);
  auto prim = applyStrategicMergePatch(J(R"({"metadata":{"finalizers":["a","b","c"]}})"),
                                       J(R"({"metadata":{"$deleteFromPrimitiveList/finalizers":["b"]}})"), pod);
  EXPECT_EQ(*prim, J(R"({"metadata":{"finalizers":["a","c"]}})"));
  auto nulls = applyStrategicMergePatch(J(R"({"data":{"a":"1","b":"2"}})"), J(R"({"data":{"a":null}})"), pod);
  EXPECT_EQ(*nulls, J(R"({"data":{"b":"2"}})"));
  EXPECT_FALSE(applyStrategicMergePatch(J("{}"), J(R"({"spec":{"containers":[{"image":"no-name"}]}})"), pod).ok());
  EXPECT_FALSE(applyStrategicMergePatch(J("{}"), J(R"({"a":{"$patch":"explode"}})"), pod).ok());
}

TEST(StrategicMergePatch, ServicePortsMergeByPort) {
  const ResourceInfo& svc = *findResource("", "v1", "services");
  auto out = applyStrategicMergePatch(J(R"({"spec":{"ports":[{"port":80,"targetPort":8080}]}})"),
                                      J(R"({"spec":{"ports":[{"port":80,"targetPort":9090},{"port":443}]}})"), svc);
  EXPECT_EQ(*out, J(R"({"spec":{"ports":[{"port":80,"targetPort":9090},{"port":443}]}})"));
}

}  // namespace
}  // namespace trellis::apiserver::registry
