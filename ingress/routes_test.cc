#include "ingress/routes.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include "ingress/translate.h"

namespace trellis::ingress {
namespace {

Route route(std::string host, std::string path, PathMatch m, std::string source, int64_t created = 0) {
  Route r;
  r.host = std::move(host);
  r.path = std::move(path);
  r.match = m;
  r.source = std::move(source);
  r.rule = "rule";
  r.created = created;
  r.policy = std::make_shared<const RoutePolicy>();
  return r;
}

std::string hit(const RouteTable& t, std::string_view host, std::string_view path) {
  auto m = t.match(normalizeHost(host), path);
  return m.route ? m.route->source : "404";
}

TEST(Routes, HostsExactBeforeWildcardBeforeAny) {
  RouteTable::Builder b;
  ASSERT_TRUE(b.add({route("", "/", PathMatch::kPrefix, "any")}));
  ASSERT_TRUE(b.add({route("*.example.com", "/", PathMatch::kPrefix, "wild")}));
  ASSERT_TRUE(b.add({route("app.example.com", "/", PathMatch::kPrefix, "exact")}));
  auto t = b.build(1);
  EXPECT_EQ(hit(*t, "app.example.com", "/x"), "exact");
  EXPECT_EQ(hit(*t, "APP.Example.COM:8443", "/x"), "exact");  // case and port do not matter
  EXPECT_EQ(hit(*t, "app.example.com.", "/x"), "exact");
  EXPECT_EQ(hit(*t, "b.example.com", "/x"), "wild");
  EXPECT_EQ(hit(*t, "example.com", "/x"), "any");       // '*' needs one label
  EXPECT_EQ(hit(*t, "a.b.example.com", "/x"), "any");   // and only one
  EXPECT_EQ(hit(*t, "other.test", "/"), "any");
  EXPECT_EQ(hit(*t, "[::1]:443", "/"), "any");
}

TEST(Routes, HostRulesFallThroughWhenNoPathMatches) {
  RouteTable::Builder b;
  ASSERT_TRUE(b.add({route("app.test", "/api", PathMatch::kPrefix, "exact-api")}));
  ASSERT_TRUE(b.add({route("", "/", PathMatch::kPrefix, "any")}));
  auto t = b.build(1);
  EXPECT_EQ(hit(*t, "app.test", "/api/v1"), "exact-api");
  EXPECT_EQ(hit(*t, "app.test", "/web"), "any");
}

TEST(Routes, PrefixIsElementWise) {
  RouteTable::Builder b;
  ASSERT_TRUE(b.add({route("h", "/foo/bar", PathMatch::kPrefix, "foobar")}));
  ASSERT_TRUE(b.add({route("h", "/aaa/", PathMatch::kPrefix, "aaa")}));
  auto t = b.build(1);
  EXPECT_EQ(hit(*t, "h", "/foo/bar"), "foobar");
  EXPECT_EQ(hit(*t, "h", "/foo/bar/"), "foobar");
  EXPECT_EQ(hit(*t, "h", "/foo/bar/baz"), "foobar");
  EXPECT_EQ(hit(*t, "h", "/foo/barbaz"), "404");
  EXPECT_EQ(hit(*t, "h", "/foo"), "404");
  EXPECT_EQ(hit(*t, "h", "/aaa"), "aaa");  // a trailing slash on the rule is ignored
  EXPECT_EQ(hit(*t, "h", "/aaa/b"), "aaa");
  EXPECT_EQ(hit(*t, "h", "/aaab"), "404");
  EXPECT_EQ(hit(*t, "h", "/FOO/bar"), "404");  // case-sensitive
}

TEST(Routes, SlashPrefixMatchesEverything) {
  RouteTable::Builder b;
  ASSERT_TRUE(b.add({route("h", "/", PathMatch::kPrefix, "root")}));
  auto t = b.build(1);
  EXPECT_EQ(hit(*t, "h", "/"), "root");
  EXPECT_EQ(hit(*t, "h", "/anything/at/all"), "root");
}

TEST(Routes, ExactIsExact) {
  RouteTable::Builder b;
  ASSERT_TRUE(b.add({route("h", "/foo", PathMatch::kExact, "exact")}));
  auto t = b.build(1);
  EXPECT_EQ(hit(*t, "h", "/foo"), "exact");
  EXPECT_EQ(hit(*t, "h", "/foo/"), "404");
  EXPECT_EQ(hit(*t, "h", "/Foo"), "404");
  EXPECT_EQ(hit(*t, "h", "/foo/bar"), "404");
}

TEST(Routes, LongestPathWinsThenExactBeforePrefix) {
  RouteTable::Builder b;
  ASSERT_TRUE(b.add({route("h", "/", PathMatch::kPrefix, "root"), route("h", "/a", PathMatch::kPrefix, "a"),
                     route("h", "/a/b", PathMatch::kPrefix, "ab")}));
  ASSERT_TRUE(b.add({route("h", "/a/b", PathMatch::kExact, "ab-exact")}));
  auto t = b.build(1);
  EXPECT_EQ(hit(*t, "h", "/a/b"), "ab-exact");
  EXPECT_EQ(hit(*t, "h", "/a/b/"), "ab");
  EXPECT_EQ(hit(*t, "h", "/a/b/c"), "ab");
  EXPECT_EQ(hit(*t, "h", "/a/x"), "a");
  EXPECT_EQ(hit(*t, "h", "/x"), "root");
}

TEST(Routes, SameRuleInANewerGroupConflicts) {
  RouteTable::Builder b;
  ASSERT_TRUE(b.add({route("h", "/api", PathMatch::kPrefix, "old")}));
  std::string conflict;
  // "/api/" is the same Prefix as "/api".
  EXPECT_FALSE(b.add({route("h", "/other", PathMatch::kPrefix, "new"), route("h", "/api/", PathMatch::kPrefix, "new")},
                     &conflict));
  EXPECT_EQ(conflict, "old rule");
  // Exact and Prefix of the same path do not collide; another host does not either.
  EXPECT_TRUE(b.add({route("h", "/api", PathMatch::kExact, "exact")}));
  EXPECT_TRUE(b.add({route("h2", "/api", PathMatch::kPrefix, "h2")}));
  // A duplicate inside one group is a conflict too.
  EXPECT_FALSE(b.add({route("h3", "/x", PathMatch::kPrefix, "dup"), route("h3", "/x", PathMatch::kPrefix, "dup")}));
  auto t = b.build(1);
  EXPECT_EQ(hit(*t, "h", "/other"), "404");  // the refused group added nothing
  EXPECT_EQ(hit(*t, "h", "/api/x"), "old");
  EXPECT_EQ(hit(*t, "h", "/api"), "exact");
  EXPECT_EQ(hit(*t, "h3", "/x"), "404");
}

TEST(Routes, DefaultBackendForWhatNothingMatches) {
  RouteTable::Builder b;
  ASSERT_TRUE(b.add({route("h", "/api", PathMatch::kPrefix, "api")}));
  ASSERT_TRUE(b.setDefault(route("", "/", PathMatch::kPrefix, "default")));
  std::string conflict;
  EXPECT_FALSE(b.setDefault(route("", "/", PathMatch::kPrefix, "second"), &conflict));
  auto t = b.build(7);
  EXPECT_EQ(t->generation(), 7u);
  EXPECT_EQ(hit(*t, "h", "/api"), "api");
  auto m = t->match("other", "/");
  ASSERT_TRUE(m.route);
  EXPECT_TRUE(m.viaDefault);
  EXPECT_EQ(m.route->source, "default");
  EXPECT_NE(t->explain("other", "/").why.find("default backend"), std::string::npos);
}

TEST(Routes, ExplainSaysWhy) {
  RouteTable::Builder b;
  ASSERT_TRUE(b.add({route("*.example.com", "/api", PathMatch::kPrefix, "wild")}));
  auto t = b.build(1);
  auto m = t->explain("a.example.com", "/api/x");
  ASSERT_TRUE(m.route);
  EXPECT_NE(m.why.find("wildcard"), std::string::npos) << m.why;
  EXPECT_NE(t->explain("b.test", "/").why.find("404"), std::string::npos);
}

TEST(Routes, ManyRulesStayLookups) {
  RouteTable::Builder b;
  for (int i = 0; i < 5000; ++i) {
    ASSERT_TRUE(b.add({route("h" + std::to_string(i) + ".test", "/p/" + std::to_string(i), PathMatch::kPrefix,
                             std::to_string(i))}));
  }
  auto t = b.build(1);
  EXPECT_EQ(t->size(), 5000u);
  EXPECT_EQ(hit(*t, "h4321.test", "/p/4321/x"), "4321");
  EXPECT_EQ(hit(*t, "h4321.test", "/p/4320"), "404");
}

TEST(Translate, Annotations) {
  EXPECT_EQ(*parseDurationMs("30"), 30'000);
  EXPECT_EQ(*parseDurationMs("30s"), 30'000);
  EXPECT_EQ(*parseDurationMs("250ms"), 250);
  EXPECT_EQ(*parseDurationMs("2m"), 120'000);
  EXPECT_FALSE(parseDurationMs("0"));
  EXPECT_FALSE(parseDurationMs("-1s"));
  EXPECT_FALSE(parseDurationMs("soon"));
  EXPECT_EQ(*parseSize("1048576"), 1048576u);
  EXPECT_EQ(*parseSize("8k"), 8192u);
  EXPECT_EQ(*parseSize("1m"), 1u << 20);
  EXPECT_EQ(*parseSize("2G"), 2ull << 30);
  EXPECT_FALSE(parseSize("1.5m"));
  EXPECT_FALSE(parseSize(""));
}

Object obj(std::string_view text) {
  return std::make_shared<const boost::json::object>(boost::json::parse(text).as_object());
}

TEST(Translate, Admission) {
  auto cls = obj(R"({"metadata":{"name":"trellis"},"spec":{"controller":"trellis.dev/ingress"}})");
  auto def = obj(R"({"metadata":{"name":"trellis","annotations":{"ingressclass.kubernetes.io/is-default-class":"true"}},
                     "spec":{"controller":"trellis.dev/ingress"}})");
  auto other = obj(R"({"metadata":{"name":"trellis"},"spec":{"controller":"k8s.io/ingress-nginx"}})");
  auto named = obj(R"({"metadata":{"name":"a","namespace":"d"},"spec":{"ingressClassName":"trellis"}})");
  auto legacy = obj(R"({"metadata":{"name":"a","namespace":"d","annotations":{"kubernetes.io/ingress.class":"trellis"}}})");
  auto none = obj(R"({"metadata":{"name":"a","namespace":"d"},"spec":{}})");
  auto nginx = obj(R"({"metadata":{"name":"a","namespace":"d"},"spec":{"ingressClassName":"nginx"}})");
  EXPECT_TRUE(admitted(*named, "trellis", cls.get()));
  EXPECT_TRUE(admitted(*legacy, "trellis", cls.get()));
  EXPECT_FALSE(admitted(*none, "trellis", cls.get()));
  EXPECT_TRUE(admitted(*none, "trellis", def.get()));
  EXPECT_FALSE(admitted(*nginx, "trellis", def.get()));
  EXPECT_FALSE(admitted(*named, "trellis", other.get()));
  EXPECT_FALSE(admitted(*named, "trellis", nullptr));
}

TEST(Translate, EndpointsPortsAndProblems) {
  auto svc = obj(R"({"metadata":{"name":"web","namespace":"d"},
    "spec":{"ports":[{"name":"http","port":80},{"name":"grpc","port":9000,"appProtocol":"kubernetes.io/h2c"}]}})");
  auto slice = obj(R"({"metadata":{"name":"web-1","namespace":"d","labels":{"kubernetes.io/service-name":"web"}},
    "addressType":"IPv4","ports":[{"name":"http","port":8080},{"name":"grpc","port":9090}],
    "endpoints":[{"addresses":["10.0.0.2"],"conditions":{"ready":true}},
                 {"addresses":["10.0.0.1"]},
                 {"addresses":["10.0.0.3"],"conditions":{"ready":false,"serving":true,"terminating":true}},
                 {"addresses":["10.0.0.4"],"conditions":{"ready":false}}]})");
  auto ing = [](std::string name, std::string created, std::string spec) {
    return obj(R"({"metadata":{"name":")" + name + R"(","namespace":"d","creationTimestamp":")" + created + R"("},"spec":)" +
               spec + "}");
  };
  Inputs in;
  in.ingresses = {
      ing("new", "2026-01-02T00:00:00Z", R"({"rules":[{"host":"a.test","http":{"paths":[{"path":"/","pathType":"Prefix",
        "backend":{"service":{"name":"web","port":{"name":"grpc"}}}}]}}]})"),
      ing("old", "2026-01-01T00:00:00Z", R"({"rules":[{"host":"a.test","http":{"paths":[{"path":"/","pathType":"Prefix",
        "backend":{"service":{"name":"web","port":{"number":80}}}}]}}]})"),
      ing("nosvc", "2026-01-01T00:00:00Z", R"({"rules":[{"host":"b.test","http":{"paths":[{"path":"/","pathType":"Prefix",
        "backend":{"service":{"name":"gone","port":{"number":80}}}}]}}]})"),
      ing("noport", "2026-01-01T00:00:00Z", R"({"rules":[{"host":"c.test","http":{"paths":[{"path":"/","pathType":"Prefix",
        "backend":{"service":{"name":"web","port":{"number":81}}}}]}}]})"),
      ing("badtls", "2026-01-01T00:00:00Z", R"({"tls":[{"hosts":["d.test"],"secretName":"missing"}],
        "rules":[{"host":"d.test","http":{"paths":[{"path":"/","pathType":"Prefix",
        "backend":{"service":{"name":"web","port":{"number":80}}}}]}}]})"),
      ing("grpc", "2026-01-01T00:00:00Z", R"({"rules":[{"host":"g.test","http":{"paths":[{"path":"/","pathType":"Prefix",
        "backend":{"service":{"name":"web","port":{"name":"grpc"}}}}]}}]})"),
      ing("badann", "2026-01-01T00:00:00Z", R"({"rules":[{"host":"e.test","http":{"paths":[{"path":"/","pathType":"Prefix",
        "backend":{"service":{"name":"web","port":{"number":80}}}}]}}]})"),
  };
  auto withAnnotation = boost::json::object(*in.ingresses.back());
  withAnnotation["metadata"].as_object()["annotations"] = boost::json::object{{"trellis.dev/proxy-read-timeout", "soon"}};
  in.ingresses.back() = std::make_shared<const boost::json::object>(withAnnotation);
  in.service = [&](const std::string& key) { return key == "d/web" ? svc : nullptr; };
  in.endpointSlices = [&](const std::string& key) { return key == "d/web" ? std::vector<Object>{slice} : std::vector<Object>{}; };
  in.certificate = [](const std::string&) { return nullptr; };
  Translation t = translate(in, 3);
  EXPECT_EQ(t.served, (std::set<std::string>{"d/old", "d/grpc"}));
  std::map<std::string, std::string> reasons;
  for (const Problem& p : t.problems) reasons[p.ingress] = p.reason;
  EXPECT_EQ(reasons, (std::map<std::string, std::string>{{"d/new", "RuleConflict"},
                                                          {"d/nosvc", "ServiceNotFound"},
                                                          {"d/noport", "PortNotFound"},
                                                          {"d/badtls", "BadTLSSecret"},
                                                          {"d/badann", "BadAnnotation"}}));
  auto m = t.table->match("a.test", "/");
  ASSERT_TRUE(m.route);
  const Backend& b = *m.route->backends.front().backend;
  ASSERT_EQ(b.endpoints.size(), 2u);  // ready (or unset) only; terminating ones wait until nothing is ready
  EXPECT_EQ(b.endpoints[0].hostPort, "10.0.0.1:8080");
  EXPECT_EQ(b.endpoints[1].hostPort, "10.0.0.2:8080");
  EXPECT_EQ(b.protocol, UpstreamProtocol::kHttp1);
  auto g = t.table->match("g.test", "/");
  ASSERT_TRUE(g.route);
  EXPECT_EQ(g.route->backends.front().backend->protocol, UpstreamProtocol::kH2c);
  EXPECT_EQ(g.route->backends.front().backend->endpoints.front().port, 9090);
}

TEST(Translate, TerminatingEndpointsOnlyWhenNothingIsReady) {
  auto svc = obj(R"({"metadata":{"name":"web","namespace":"d"},"spec":{"ports":[{"port":80}]}})");
  auto slice = obj(R"({"metadata":{"name":"web-1","namespace":"d"},"addressType":"IPv6","ports":[{"port":8080}],
    "endpoints":[{"addresses":["fd00::3"],"conditions":{"ready":false,"serving":true,"terminating":true}}]})");
  Inputs in;
  in.ingresses = {obj(R"({"metadata":{"name":"i","namespace":"d"},"spec":{"defaultBackend":
                           {"service":{"name":"web","port":{"number":80}}}}})")};
  in.service = [&](const std::string&) { return svc; };
  in.endpointSlices = [&](const std::string&) { return std::vector<Object>{slice}; };
  in.certificate = [](const std::string&) { return nullptr; };
  Translation t = translate(in, 1);
  auto m = t.table->match("any", "/x");
  ASSERT_TRUE(m.route);
  EXPECT_TRUE(m.viaDefault);
  ASSERT_EQ(m.route->backends.front().backend->endpoints.size(), 1u);
  EXPECT_EQ(m.route->backends.front().backend->endpoints[0].hostPort, "[fd00::3]:8080");
}

}  // namespace
}  // namespace trellis::ingress
