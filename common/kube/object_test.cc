#include "common/kube/object.h"

#include <boost/json/parse.hpp>
#include <gtest/gtest.h>

namespace trellis::kube {
namespace {

namespace json = boost::json;

json::object parse(std::string_view text) { return json::parse(text).as_object(); }

TEST(Object, FieldsByPath) {
  auto o = parse(R"({"metadata":{"name":"a","uid":"u1","labels":{"app":"web","n":3}},"spec":{"replicas":3,"x":"s"}})");
  EXPECT_EQ(str(o, {"metadata", "name"}), "a");
  EXPECT_EQ(str(o, {"spec", "replicas"}), "");  // not a string
  EXPECT_EQ(integer(o, {"spec", "replicas"}), 3);
  EXPECT_EQ(integer(o, {"spec", "x", "y"}, -1), -1);
  EXPECT_EQ(uid(o), "u1");
  EXPECT_EQ(labels(o), (std::map<std::string, std::string>{{"app", "web"}}));
  ensureObject(o, {"status", "conditions"})["a"] = 1;
  EXPECT_EQ(integer(o, {"status", "conditions", "a"}), 1);
}

TEST(Object, RemovingAFinalizerKeepsTheOthersAndPreconditions) {
  auto o = parse(R"({"metadata":{"resourceVersion":"7","finalizers":["a","kubernetes.io/pvc-protection","b"]}})");
  EXPECT_TRUE(hasFinalizer(o, "a"));
  EXPECT_FALSE(hasFinalizer(o, "c"));
  EXPECT_FALSE(removeFinalizerPatch(o, "c"));
  EXPECT_EQ(*removeFinalizerPatch(o, "kubernetes.io/pvc-protection"),
            R"({"metadata":{"finalizers":["a","b"],"resourceVersion":"7"}})");
  EXPECT_FALSE(addFinalizerPatch(o, "a"));
  EXPECT_EQ(*addFinalizerPatch(o, "c"),
            R"({"metadata":{"finalizers":["a","kubernetes.io/pvc-protection","b","c"],"resourceVersion":"7"}})");
}

TEST(Object, LabelSelectors) {
  json::value text = json::parse(
      R"({"matchLabels":{"app":"web"},"matchExpressions":[{"key":"tier","operator":"In","values":["a","b"]},{"key":"x","operator":"DoesNotExist"}]})");
  auto sel = LabelSelector::fromJson(&text);
  ASSERT_TRUE(sel);
  EXPECT_TRUE(sel->matches({{"app", "web"}, {"tier", "b"}}));
  EXPECT_FALSE(sel->matches({{"app", "web"}, {"tier", "c"}}));
  EXPECT_FALSE(sel->matches({{"app", "web"}, {"tier", "a"}, {"x", ""}}));
  EXPECT_FALSE(LabelSelector::fromJson(nullptr)->matches({}));  // absent: nothing
  json::value empty = json::object();
  EXPECT_TRUE(LabelSelector::fromJson(&empty)->matches({{"any", "thing"}}));  // empty: everything
  json::value bad = json::parse(R"({"matchExpressions":[{"key":"a","operator":"Near"}]})");
  EXPECT_FALSE(LabelSelector::fromJson(&bad));
  json::value map = json::parse(R"({"app":"web"})");
  auto svc = LabelSelector::fromMap(&map);
  EXPECT_TRUE(svc.matches({{"app", "web"}, {"v", "1"}}));
  EXPECT_FALSE(svc.matches({{"app", "db"}}));
}

TEST(Object, NodeSelectorTerms) {
  auto node = parse(R"({"metadata":{"name":"n1","labels":{"zone":"a","cpus":"8"}}})");
  auto terms = [](std::string_view t) { return json::parse(t).as_array(); };
  EXPECT_TRUE(nodeSelectorTermsMatch(terms(R"([{"matchExpressions":[{"key":"zone","operator":"In","values":["a"]}]}])"), node));
  EXPECT_FALSE(nodeSelectorTermsMatch(terms(R"([{"matchExpressions":[{"key":"zone","operator":"In","values":["b"]}]}])"), node));
  EXPECT_TRUE(nodeSelectorTermsMatch(terms(R"([{"matchExpressions":[{"key":"zone","operator":"In","values":["b"]}]},
                                              {"matchFields":[{"key":"metadata.name","operator":"In","values":["n1"]}]}])"), node));
  EXPECT_TRUE(nodeSelectorTermsMatch(terms(R"([{"matchExpressions":[{"key":"cpus","operator":"Gt","values":["4"]}]}])"), node));
  EXPECT_FALSE(nodeSelectorTermsMatch(terms(R"([{"matchExpressions":[{"key":"cpus","operator":"Lt","values":["4"]}]}])"), node));
  EXPECT_FALSE(nodeSelectorTermsMatch(terms(R"([{}])"), node));
}

TEST(Object, Rfc3339) {
  EXPECT_EQ(parseRfc3339("1970-01-01T00:01:00Z"), 60);
  EXPECT_EQ(parseRfc3339("1970-01-01T01:00:00.123456+01:00"), 0);
  EXPECT_FALSE(parseRfc3339("yesterday"));
  EXPECT_EQ(formatRfc3339(86400 + 61), "1970-01-02T00:01:01Z");
  std::string micro = microTimeNow();
  EXPECT_EQ(micro.size(), 27u) << micro;
  EXPECT_TRUE(parseRfc3339(micro));
  auto now = parseRfc3339(rfc3339Now());
  ASSERT_TRUE(now);
  EXPECT_LE(std::abs(*now - time(nullptr)), 2);
}

}  // namespace
}  // namespace trellis::kube
