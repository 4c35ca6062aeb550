#include "controllers/workloads.h"

#include <boost/json/parse.hpp>
#include <gtest/gtest.h>

namespace trellis::controllers {
namespace {

namespace json = boost::json;

kube::ObjectPtr pod(std::string_view text) { return std::make_shared<const json::object>(json::parse(text).as_object()); }

TEST(Workloads, PercentagesRoundAsKubernetesDoes) {
  json::value quarter = "25%", zero = 0, three = 3, bad = "x";
  EXPECT_EQ(scaledValue(&quarter, 10, true), 3);   // maxSurge rounds up
  EXPECT_EQ(scaledValue(&quarter, 10, false), 2);  // maxUnavailable rounds down
  EXPECT_EQ(scaledValue(&quarter, 1, false), 0);
  EXPECT_EQ(scaledValue(&zero, 10, true), 0);
  EXPECT_EQ(scaledValue(&three, 10, false), 3);
  EXPECT_EQ(scaledValue(&bad, 10, false, 7), 7);
  EXPECT_EQ(scaledValue(nullptr, 10, false, 1), 1);
}

TEST(Workloads, DeletionOrderPutsTheLeastValuablePodsFirst) {
  std::vector<kube::ObjectPtr> pods{
      pod(R"({"metadata":{"name":"ready-old","creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"nodeName":"n"},
             "status":{"phase":"Running","conditions":[{"type":"Ready","status":"True","lastTransitionTime":"2026-01-01T00:00:10Z"}]}})"),
      pod(R"({"metadata":{"name":"unscheduled","creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{},"status":{"phase":"Pending"}})"),
      pod(R"({"metadata":{"name":"ready-new","creationTimestamp":"2026-01-01T00:00:01Z"},"spec":{"nodeName":"n"},
             "status":{"phase":"Running","conditions":[{"type":"Ready","status":"True","lastTransitionTime":"2026-01-01T00:05:00Z"}]}})"),
      pod(R"({"metadata":{"name":"pending","creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"nodeName":"n"},"status":{"phase":"Pending"}})"),
      pod(R"({"metadata":{"name":"not-ready","creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"nodeName":"n"},
             "status":{"phase":"Running","conditions":[{"type":"Ready","status":"False"}]}})"),
  };
  sortForDeletion(pods);
  std::vector<std::string> order;
  for (auto& p : pods) order.emplace_back(kube::objectName(*p));
  EXPECT_EQ(order, (std::vector<std::string>{"unscheduled", "pending", "not-ready", "ready-new", "ready-old"}));
}

TEST(Workloads, AvailabilityWaitsForMinReadySeconds) {
  auto p = pod(R"({"status":{"conditions":[{"type":"Ready","status":"True","lastTransitionTime":"2026-01-01T00:00:00Z"}]}})");
  int64_t at = *kube::parseRfc3339("2026-01-01T00:00:00Z");
  EXPECT_TRUE(podAvailable(*p, 0, at));
  EXPECT_FALSE(podAvailable(*p, 10, at + 9));
  EXPECT_TRUE(podAvailable(*p, 10, at + 10));
  EXPECT_FALSE(podAvailable(*pod(R"({"status":{}})"), 0, at));
}

TEST(Workloads, TemplateHashIsStableAndSpellsNoVowels) {
  json::value t = json::parse(R"({"spec":{"containers":[{"name":"c","image":"x"}]}})");
  json::value u = json::parse(R"({"spec":{"containers":[{"name":"c","image":"y"}]}})");
  EXPECT_EQ(templateHash(t), templateHash(t));
  EXPECT_NE(templateHash(t), templateHash(u));
  EXPECT_NE(templateHash(t), templateHash(t, 1));  // a collision count gives another name
  EXPECT_EQ(templateHash(t).find_first_of("aeiou013"), std::string::npos) << templateHash(t);
}

TEST(Workloads, ExpectationsWaitForWhatWasDone) {
  Expectations e;
  EXPECT_TRUE(e.satisfied("ns/rs"));
  e.start("ns/rs");
  e.expectAdd("ns/rs", "a");
  e.expectDelete("ns/rs", "b");
  EXPECT_FALSE(e.satisfied("ns/rs"));
  e.observed("ns/rs", "a", false);
  EXPECT_FALSE(e.satisfied("ns/rs"));
  e.observed("ns/rs", "b", true);
  EXPECT_TRUE(e.satisfied("ns/rs"));
  e.start("ns/rs");
  e.expectAdd("ns/rs", "c", [] { return true; });  // the cache had it already
  EXPECT_TRUE(e.satisfied("ns/rs"));
}

TEST(Workloads, ConditionsKeepTheirTransitionTime) {
  json::object st;
  setCondition(st, "Available", "True", "R", "m");
  std::string first(kube::str(st["conditions"].as_array()[0].as_object(), {"lastTransitionTime"}));
  st["conditions"].as_array()[0].as_object()["lastTransitionTime"] = "2000-01-01T00:00:00Z";
  setCondition(st, "Available", "True", "R2", "m2");
  EXPECT_EQ(kube::str(st["conditions"].as_array()[0].as_object(), {"lastTransitionTime"}), "2000-01-01T00:00:00Z");
  EXPECT_EQ(kube::str(st["conditions"].as_array()[0].as_object(), {"reason"}), "R2");
  setCondition(st, "Available", "False", "R3", "m3");
  EXPECT_NE(kube::str(st["conditions"].as_array()[0].as_object(), {"lastTransitionTime"}), "2000-01-01T00:00:00Z");
  removeCondition(st, "Available");
  EXPECT_TRUE(st["conditions"].as_array().empty());
  EXPECT_FALSE(first.empty());
}

}  // namespace
}  // namespace trellis::controllers
