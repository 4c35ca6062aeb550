// trellis-ingress against a real trellis-apiserver, real backend processes
// (trellis-echo-backend) and real clients (curl over HTTP/1.1 and HTTP/2,
// openssl s_client, h2load). One apiserver and one trellis-ingress serve the
// whole suite; each test works in a namespace of its own, with hosts of its
// own. The ingress runs as user "trellis-ingress" with only the RBAC a
// deployment grants it — Secrets by name only — so a read of any Secret no
// admitted Ingress references would be refused (and the apiserver logs every
// refusal: the suite checks none concerned Secrets).
#include <signal.h>

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <thread>

#include <boost/json/parse.hpp>
#include <fmt/format.h>

#include "common/base/base64.h"
#include "common/http/certgen.h"
#include "common/kube/client.h"
#include "common/kube/config.h"
#include "common/kube/object.h"
#include "common/testing/apiserver_process.h"
#include "common/testing/background.h"
#include "common/testing/testing.h"

namespace trellis {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;
using testing::Background;
using testing::run;
using testing::waitFor;

constexpr const char* kRbac = R"(apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: trellis-ingress}
rules:
- apiGroups: ["networking.k8s.io"]
  resources: [ingresses, ingressclasses]
  verbs: [get, list, watch]
- apiGroups: ["networking.k8s.io"]
  resources: [ingresses/status]
  verbs: [update, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch]
- apiGroups: ["discovery.k8s.io"]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, update, patch]
# Secrets only by name: those the suite's Ingresses reference.
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [cert-a, cert-b, used, nowhere]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: trellis-ingress}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: trellis-ingress}
subjects: [{kind: User, name: trellis-ingress}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: trellis}
spec: {controller: trellis.dev/ingress}
)";

struct BackendProc {
  std::unique_ptr<Background> proc;
  uint16_t port = 0;
};

class IngressTest : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    api_ = new testing::ApiServerProcess(TRELLIS_APISERVER_BIN, dir_->path());
    ASSERT_TRUE(api_->start());
    writeFile("rbac.yaml", kRbac);
    auto r = kubectl("apply -f " + dir_->file("rbac.yaml"));
    ASSERT_EQ(r.exitCode, 0) << r.out;
    ASSERT_TRUE(api_->writeKubeconfigFor("trellis-ingress", {}, dir_->file("ingress.kubeconfig")));
    httpPort_ = testing::freeTcpPort();
    httpsPort_ = testing::freeTcpPort();
    metricsPort_ = testing::freeTcpPort();
    ingress_ = new Background(fmt::format(
        "exec {} --kubeconfig {} --address 127.0.0.1 --http-port {} --https-port {} --metrics-port {} --threads 2 "
        "--publish-address 192.0.2.10 --client-header-timeout 2s 2>&1",
        TRELLIS_INGRESS_BIN, dir_->file("ingress.kubeconfig"), httpPort_, httpsPort_, metricsPort_));
    ASSERT_TRUE(waitFor([] { return curl(fmt::format("http://127.0.0.1:{}/readyz", metricsPort_)) == "ok"; }, 20s))
        << ingress_->output();
    auto cfg = kube::loadKubeconfig({api_->kubeconfig()});
    ASSERT_TRUE(cfg);
    auto c = kube::Client::create(*cfg, {.qps = 1000, .burst = 1000});
    ASSERT_TRUE(c);
    client_ = c->release();
  }

  static void TearDownTestSuite() {
    delete client_;
    if (ingress_ && ::testing::UnitTest::GetInstance()->failed_test_count() > 0) {
      auto lines = ingress_->lines();
      size_t from = lines.size() > 80 ? lines.size() - 80 : 0;
      std::string tail;
      for (size_t i = from; i < lines.size(); ++i) tail += lines[i] + "\n";
      fprintf(stderr, "--- trellis-ingress, last lines ---\n%s", tail.c_str());
    }
    if (ingress_) {
      int rc = ingress_->stop(SIGTERM);
      EXPECT_EQ(rc, 0) << "trellis-ingress did not shut down cleanly";
      // Under the sanitizers: no memory error, leak or undefined behaviour in the ingress.
      std::string report = testing::sanitizerReport(ingress_->lines());
      EXPECT_EQ(report, "") << ingress_->output();
    }
    delete ingress_;
    // The audit: the ingress was never refused anything about Secrets.
    if (api_) {
      for (const std::string& line : api_->refusals("trellis-ingress")) {
        ADD_FAILURE() << "the ingress asked for something RBAC does not grant it: " << line;
      }
    }
    delete api_;
    delete dir_;
  }

 protected:
  static void writeFile(const std::string& name, const std::string& text) { testing::writeFile(dir_->file(name), text); }

  static testing::CommandResult kubectl(const std::string& args) {
    return run("kubectl --kubeconfig " + api_->kubeconfig() + " " + args + " 2>&1");
  }

  // kubectl apply -f of a YAML text in a namespace.
  static void apply(const std::string& ns, const std::string& yaml) {
    static int n = 0;
    std::string file = dir_->file(fmt::format("apply-{}.yaml", ++n));
    testing::writeFile(file, yaml);
    auto r = kubectl("apply -n " + ns + " -f " + file);
    ASSERT_EQ(r.exitCode, 0) << r.out << "\n" << yaml;
  }

  static std::string curl(const std::string& args) { return run("curl -s --max-time 10 " + args).out; }
  // "CODE BODY" of a plain-HTTP request to the ingress.
  static std::string get(const std::string& host, const std::string& path, const std::string& extra = "") {
    return curl(fmt::format("-w ' %{{http_code}}' -H 'Host: {}' {} 'http://127.0.0.1:{}{}'", host, extra, httpPort_, path));
  }
  // Which backend answered (the echo's "name"), or the status code when no echo.
  static std::string who(const std::string& host, const std::string& path, const std::string& extra = "") {
    std::string out = get(host, path, extra);
    std::smatch m;
    if (std::regex_search(out, m, std::regex("\"name\":\"([^\"]+)\""))) return m[1];
    size_t sp = out.rfind(' ');
    return sp == std::string::npos ? out : out.substr(sp + 1);
  }

  // Starts an echo backend named `name`.
  BackendProc backend(const std::string& name, const std::string& extra = "") {
    BackendProc b;
    std::string portFile = dir_->file("port-" + name + std::to_string(++backends_));
    b.proc = std::make_unique<Background>(
        fmt::format("exec {} --name {} --port-file {} {} 2>&1", TRELLIS_ECHO_BIN, name, portFile, extra));
    EXPECT_TRUE(waitFor([&] { return !testing::readFile(portFile).empty(); }, 10s)) << b.proc->output();
    b.port = static_cast<uint16_t>(std::stoi(testing::readFile(portFile)));
    return b;
  }

  // A Service `name` with one port (80 → the backends) and an EndpointSlice of them.
  static void service(const std::string& ns, const std::string& name, const std::vector<uint16_t>& ports,
                      const std::string& appProtocol = "") {
    std::string eps;
    // One slice per backend port (each backend process has its own port).
    std::string slices;
    for (size_t i = 0; i < ports.size(); ++i) {
      slices += fmt::format(R"(---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {}-{}, labels: {{kubernetes.io/service-name: {}}}}}
addressType: IPv4
ports: [{{name: http, port: {}, protocol: TCP}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
)",
                            name, i, name, ports[i]);
    }
    apply(ns, fmt::format(R"(apiVersion: v1
kind: Service
metadata: {{name: {}}}
spec: {{ports: [{{name: http, port: 80, targetPort: 8080{}}}]}}
{})",
                          name, appProtocol.empty() ? "" : ", appProtocol: " + appProtocol, slices));
  }

  static void ns(const std::string& name) { kubectl("create namespace " + name); }

  // An Ingress with one rule per (host, path, pathType, service).
  struct Rule {
    std::string host, path, type, service;
  };
  static std::string ingressYaml(const std::string& name, const std::vector<Rule>& rules, const std::string& extra = "",
                                 const std::string& annotations = "") {
    std::string out = fmt::format("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {}\n{}spec:\n"
                                  "  ingressClassName: trellis\n{}  rules:\n",
                                  name, annotations.empty() ? "" : "  annotations: {" + annotations + "}\n", extra);
    for (const Rule& r : rules) {
      out += fmt::format(
          "  - {}http:\n      paths:\n      - {{path: {}, pathType: {}, backend: {{service: {{name: {}, port: {{number: 80}}}}}}}}\n",
          r.host.empty() ? "" : "host: \"" + r.host + "\"\n    ", r.path, r.type, r.service);
    }
    return out;
  }

  static uint64_t metric(const std::string& name, const std::string& labels = "") {
    std::string m = curl(fmt::format("http://127.0.0.1:{}/metrics", metricsPort_));
    std::istringstream in(m);
    uint64_t total = 0;
    for (std::string line; std::getline(in, line);) {
      if (!line.starts_with(name) || (line.size() > name.size() && line[name.size()] != '{' && line[name.size()] != ' '))
        continue;
      if (!labels.empty() && line.find(labels) == std::string::npos) continue;
      total += static_cast<uint64_t>(std::stod(line.substr(line.rfind(' ') + 1)));
    }
    return total;
  }

  static inline testing::TempDir* dir_ = nullptr;
  static inline testing::ApiServerProcess* api_ = nullptr;
  static inline Background* ingress_ = nullptr;
  static inline kube::Client* client_ = nullptr;
  static inline uint16_t httpPort_ = 0, httpsPort_ = 0, metricsPort_ = 0;
  static inline int backends_ = 0;
};

TEST_F(IngressTest, HostsAndPathsAsTheSpecSays) {
  ns("routing");
  BackendProc a = backend("a"), b = backend("b"), c = backend("c"), d = backend("d"), e = backend("e");
  service("routing", "sa", {a.port});
  service("routing", "sb", {b.port});
  service("routing", "sc", {c.port});
  service("routing", "sd", {d.port});
  service("routing", "se", {e.port});
  apply("routing", ingressYaml("exact", {{"foo.routing.test", "/", "Prefix", "sa"},
                                         {"foo.routing.test", "/api", "Prefix", "sb"},
                                         {"foo.routing.test", "/api/v1", "Exact", "sc"},
                                         {"foo.routing.test", "/aaa/bbb/", "Prefix", "sd"},
                                         {"foo.routing.test", "/api/v1/", "ImplementationSpecific", "se"}}));
  apply("routing", ingressYaml("wild", {{"*.routing.test", "/", "Prefix", "sd"}}));
  apply("routing", ingressYaml("nohost", {{"", "/only-any", "Prefix", "se"}}));
  ASSERT_TRUE(waitFor([] { return who("x.routing.test", "/") == "d" && who("any.test", "/only-any") == "e"; }, 10s))
      << who("x.routing.test", "/");
  std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      // host
      {"foo.routing.test", "/", "a"},
      {"FOO.Routing.Test:80", "/", "a"},      // case-insensitive, port ignored
      {"bar.routing.test", "/", "d"},         // wildcard: one label
      {"a.b.routing.test", "/", "404"},       // not two labels
      {"routing.test", "/", "404"},           // not zero labels
      {"anything.else", "/only-any", "e"},    // a rule without host matches every host
      {"foo.routing.test", "/only-any", "a"}, // but a host rule's "/" is longer... no: same host wins first
      // paths
      {"foo.routing.test", "/api", "b"},
      {"foo.routing.test", "/api/", "b"},
      {"foo.routing.test", "/apix", "a"},     // element-wise: /apix is not under /api
      {"foo.routing.test", "/api/v1", "c"},   // Exact beats the longer-or-equal Prefix
      {"foo.routing.test", "/api/v1/", "e"},  // ImplementationSpecific is a Prefix here; "/api/v1/" ≠ Exact "/api/v1"
      {"foo.routing.test", "/api/v1/x", "e"},
      {"foo.routing.test", "/api/v2", "b"},
      {"foo.routing.test", "/aaa/bbb", "d"},  // trailing slash on the rule ignored
      {"foo.routing.test", "/aaa/bbbc", "a"},
      {"foo.routing.test", "/API", "a"},      // paths are case-sensitive
      {"foo.routing.test", "/api?x=1", "b"},  // the query is not part of the path
  };
  for (const auto& [host, path, want] : cases) EXPECT_EQ(who(host, path), want) << host << path;

  // The same over HTTP/2 (h2c prior knowledge: curl and nghttp) and HTTPS h2 with the default certificate.
  EXPECT_EQ(who("foo.routing.test", "/api/v1", "--http2-prior-knowledge"), "c");
  std::string viaNghttp = run(fmt::format("nghttp -H ':authority: foo.routing.test' http://127.0.0.1:{}/api/v2/x 2>&1", httpPort_)).out;
  EXPECT_NE(viaNghttp.find("\"name\":\"b\""), std::string::npos) << viaNghttp;
  std::string h2 = curl(fmt::format("-k -w ' %{{http_version}}' --resolve foo.routing.test:{0}:127.0.0.1 "
                                    "https://foo.routing.test:{0}/api/v2",
                                    httpsPort_));
  EXPECT_NE(h2.find("\"name\":\"b\""), std::string::npos) << h2;
  EXPECT_TRUE(h2.ends_with(" 2")) << h2;

  // Across Ingresses: a newer one's more specific rule still wins (longest path), an equal one loses.
  apply("routing", ingressYaml("newer", {{"foo.routing.test", "/api/v2", "Prefix", "sc"}}));
  ASSERT_TRUE(waitFor([] { return who("foo.routing.test", "/api/v2/x") == "c"; }, 10s));
  EXPECT_EQ(who("foo.routing.test", "/api/v3"), "b");

  // The debug endpoint tells which rule and why.
  std::string dbg = curl(fmt::format("'http://127.0.0.1:{}/debug/route?host=foo.routing.test&path=/api/v1'", metricsPort_));
  json::object why = json::parse(dbg).as_object();
  EXPECT_EQ(why["ingress"].as_string(), "routing/exact");
  EXPECT_EQ(why["rule"].as_string(), "spec.rules[2].http.paths[0]");
  EXPECT_EQ(why["pathType"].as_string(), "Exact");
  EXPECT_NE(std::string(why["why"].as_string()).find("matched exactly"), std::string::npos) << dbg;

  // A default backend serves what no rule matches (until it goes away: a 404 from the proxy).
  apply("routing", R"(apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: fallback}
spec:
  ingressClassName: trellis
  defaultBackend: {service: {name: sa, port: {number: 80}}}
)");
  ASSERT_TRUE(waitFor([] { return who("nowhere.test", "/x") == "a"; }, 10s));
  kubectl("delete ingress -n routing fallback");
  ASSERT_TRUE(waitFor([] { return who("nowhere.test", "/x") == "404"; }, 10s));
  kubectl("delete namespace routing --wait=false");
}

TEST_F(IngressTest, BackendProtocolsFromAppProtocolAndAnnotation) {
  ns("proto");
  BackendProc plain = backend("plain"), h2c = backend("h2c"), tls = backend("tls", "--tls true");
  service("proto", "plain", {plain.port});
  service("proto", "h2c", {h2c.port}, "kubernetes.io/h2c");
  service("proto", "tls", {tls.port}, "https");
  service("proto", "tls-by-annotation", {tls.port});
  apply("proto", ingressYaml("a", {{"plain.proto.test", "/", "Prefix", "plain"},
                                   {"h2c.proto.test", "/", "Prefix", "h2c"},
                                   {"tls.proto.test", "/", "Prefix", "tls"}}));
  apply("proto", ingressYaml("b", {{"tls2.proto.test", "/", "Prefix", "tls-by-annotation"}}, "",
                             "trellis.dev/backend-protocol: HTTPS"));
  auto seen = [](const std::string& host) {
    std::string out = get(host, "/echo");
    std::smatch p, sc;
    std::regex_search(out, p, std::regex("\"protocol\":\"([^\"]+)\""));
    std::regex_search(out, sc, std::regex("\"scheme\":\"([^\"]+)\""));
    return p.size() > 1 && sc.size() > 1 ? p[1].str() + " " + sc[1].str() : out;
  };
  ASSERT_TRUE(waitFor([&] { return seen("tls2.proto.test") == "HTTP/1.1 https"; }, 10s)) << seen("tls2.proto.test");
  EXPECT_EQ(seen("plain.proto.test"), "HTTP/1.1 http");
  EXPECT_EQ(seen("h2c.proto.test"), "HTTP/2 http");
  EXPECT_EQ(seen("tls.proto.test"), "HTTP/1.1 https");
  // A bad protocol annotation skips the Ingress (and says so).
  apply("proto", ingressYaml("c", {{"bad.proto.test", "/", "Prefix", "plain"}}, "", "trellis.dev/backend-protocol: SPDY"));
  ASSERT_TRUE(waitFor([] { return kubectl("get events -n proto").out.find("BadAnnotation") != std::string::npos; }, 10s));
  EXPECT_EQ(who("bad.proto.test", "/"), "404");
  kubectl("delete namespace proto --wait=false");
}

TEST_F(IngressTest, ServiceWithoutEndpointsIs503AndPortNamesResolve) {
  ns("empty");
  apply("empty", R"(apiVersion: v1
kind: Service
metadata: {name: none}
spec: {ports: [{name: web, port: 8000}]}
)");
  apply("empty", R"(apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: none}
spec:
  ingressClassName: trellis
  rules:
  - host: none.empty.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: none, port: {name: web}}}}
)");
  ASSERT_TRUE(waitFor([] { return who("none.empty.test", "/") == "503"; }, 10s)) << get("none.empty.test", "/");
  BackendProc a = backend("named");
  apply("empty", fmt::format(R"(apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: none-1, labels: {{kubernetes.io/service-name: none}}}}
addressType: IPv4
ports: [{{name: web, port: {}, protocol: TCP}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
)",
                             a.port));
  ASSERT_TRUE(waitFor([] { return who("none.empty.test", "/") == "named"; }, 10s));
  // A ready=false endpoint is not used while a ready one exists... and is, serving-terminating, when none is.
  apply("empty", fmt::format(R"(apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: none-1, labels: {{kubernetes.io/service-name: none}}}}
addressType: IPv4
ports: [{{name: web, port: {}, protocol: TCP}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: false, serving: true, terminating: true}}}}]
)",
                             a.port));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(who("none.empty.test", "/"), "named");
  kubectl("delete namespace empty --wait=false");
}

// A kubernetes.io/tls Secret for `host`, signed by a CA of its own; returns the PEM cert.
std::string tlsSecretYaml(const std::string& name, const std::string& host, std::string* certPem, std::string* caPem) {
  auto ca = http::generateCa("ca for " + host);
  auto leaf = http::generateSigned(*ca, {.commonName = host, .dnsNames = {host}});
  *certPem = leaf->certPem;
  *caPem = ca->certPem;
  return fmt::format("apiVersion: v1\nkind: Secret\nmetadata: {{name: {}}}\ntype: kubernetes.io/tls\ndata:\n"
                     "  tls.crt: {}\n  tls.key: {}\n",
                     name, base::base64Encode(leaf->certPem), base::base64Encode(leaf->keyPem));
}

TEST_F(IngressTest, TlsPerHostBySniRotationAndRedirects) {
  ns("tls");
  BackendProc a = backend("tls-a");
  service("tls", "web", {a.port});
  std::string certA, caA, certB, caB;
  apply("tls", tlsSecretYaml("cert-a", "a.tls.test", &certA, &caA) + "---\n" +
                   tlsSecretYaml("cert-b", "b.tls.test", &certB, &caB));
  testing::writeFile(dir_->file("ca-a.pem"), caA);
  testing::writeFile(dir_->file("ca-b.pem"), caB);
  apply("tls", ingressYaml("a", {{"a.tls.test", "/", "Prefix", "web"}},
                           "  tls: [{hosts: [a.tls.test], secretName: cert-a}]\n"));
  apply("tls", ingressYaml("b", {{"b.tls.test", "/", "Prefix", "web"}},
                           "  tls: [{hosts: [b.tls.test], secretName: cert-b}]\n", "trellis.dev/ssl-redirect: \"false\""));
  auto verified = [](const std::string& host, const std::string& ca) {
    return curl(fmt::format("-o /dev/null -w '%{{http_code}} %{{http_version}}' --cacert {} --resolve {}:{}:127.0.0.1 "
                            "https://{}:{}/x",
                            dir_->file(ca), host, httpsPort_, host, httpsPort_));
  };
  // Verified against each host's own CA: SNI picked the right certificate. ALPN h2.
  ASSERT_TRUE(waitFor([&] { return verified("a.tls.test", "ca-a.pem") == "200 2"; }, 10s))
      << verified("a.tls.test", "ca-a.pem");
  EXPECT_EQ(verified("b.tls.test", "ca-b.pem"), "200 2");
  EXPECT_NE(verified("a.tls.test", "ca-b.pem"), "200 2");  // not b's certificate
  EXPECT_EQ(curl(fmt::format("-o /dev/null -w '%{{http_version}}' --http1.1 --cacert {} --resolve a.tls.test:{}:127.0.0.1 "
                             "https://a.tls.test:{}/x",
                             dir_->file("ca-a.pem"), httpsPort_, httpsPort_)),
            "1.1");
  // Only TLS 1.2 and 1.3.
  auto hello = run(fmt::format("openssl s_client -connect 127.0.0.1:{} -servername a.tls.test -tls1_1 </dev/null 2>&1",
                               httpsPort_));
  EXPECT_NE(hello.exitCode, 0) << hello.out;
  // Session resumption: a reconnect with the saved session is "Reused".
  auto first = run(fmt::format("openssl s_client -connect 127.0.0.1:{} -servername a.tls.test -tls1_2 -sess_out {} "
                               "</dev/null 2>&1",
                               httpsPort_, dir_->file("sess")));
  auto again = run(fmt::format("openssl s_client -connect 127.0.0.1:{} -servername a.tls.test -tls1_2 -sess_in {} "
                               "</dev/null 2>&1",
                               httpsPort_, dir_->file("sess")));
  EXPECT_NE(again.out.find("Reused, TLSv1.2"), std::string::npos) << again.out;

  // Plain HTTP to a TLS host: a 308 to https (on by default); b opted out.
  std::string redirect = curl(fmt::format("-o /dev/null -w '%{{http_code}} %{{redirect_url}}' -H 'Host: a.tls.test' "
                                          "'http://127.0.0.1:{}/p?q=1'",
                                          httpPort_));
  EXPECT_EQ(redirect, fmt::format("308 https://a.tls.test:{}/p?q=1", httpsPort_));
  EXPECT_EQ(who("b.tls.test", "/p"), "tls-a");

  // Rotation: a new certificate in the Secret is served to the next handshake.
  std::string certA2, caA2;
  apply("tls", tlsSecretYaml("cert-a", "a.tls.test", &certA2, &caA2));
  testing::writeFile(dir_->file("ca-a2.pem"), caA2);
  ASSERT_TRUE(waitFor([&] { return verified("a.tls.test", "ca-a2.pem") == "200 2"; }, 10s));
  EXPECT_NE(verified("a.tls.test", "ca-a.pem"), "200 2");

  // A host nobody's Secret names: the default certificate (verifies against neither CA).
  apply("tls", ingressYaml("c", {{"c.tls.test", "/", "Prefix", "web"}}));
  ASSERT_TRUE(waitFor([] { return who("c.tls.test", "/") == "tls-a"; }, 10s));
  auto def = run(fmt::format("openssl s_client -connect 127.0.0.1:{} -servername c.tls.test </dev/null 2>&1", httpsPort_));
  EXPECT_NE(def.out.find("trellis-ingress default certificate"), std::string::npos) << def.out;
  kubectl("delete namespace tls --wait=false");
}

TEST_F(IngressTest, AnInvalidIngressIsSkippedAloneWithAnEvent) {
  ns("bad");
  BackendProc a = backend("good"), b = backend("other");
  service("bad", "good", {a.port});
  service("bad", "other", {b.port});
  apply("bad", ingressYaml("good", {{"good.bad.test", "/", "Prefix", "good"}}));
  ASSERT_TRUE(waitFor([] { return who("good.bad.test", "/") == "good"; }, 10s));
  std::this_thread::sleep_for(1100ms);  // creationTimestamp has one-second resolution: make "newer" newer
  apply("bad", ingressYaml("missing", {{"missing.bad.test", "/", "Prefix", "gone"}}));
  apply("bad", ingressYaml("conflict", {{"good.bad.test", "/", "Prefix", "other"}, {"extra.bad.test", "/", "Prefix", "other"}}));
  apply("bad", ingressYaml("badtls", {{"tls.bad.test", "/", "Prefix", "good"}},
                           "  tls: [{hosts: [tls.bad.test], secretName: nowhere}]\n"));
  apply("bad", ingressYaml("fine", {{"fine.bad.test", "/", "Prefix", "other"}}));
  ASSERT_TRUE(waitFor([] { return who("fine.bad.test", "/") == "other"; }, 10s));
  EXPECT_EQ(who("good.bad.test", "/"), "good");     // the older rule wins
  EXPECT_EQ(who("extra.bad.test", "/"), "404");     // the conflicting Ingress is skipped whole
  EXPECT_EQ(who("missing.bad.test", "/"), "404");
  EXPECT_EQ(who("tls.bad.test", "/"), "404");
  auto events = [] { return kubectl("get events -n bad -o jsonpath='{range .items[*]}{.involvedObject.name} {.type} {.reason}: {.message}{\"\\n\"}{end}'").out; };
  ASSERT_TRUE(waitFor([&] {
    std::string e = events();
    return e.find("missing Warning ServiceNotFound") != std::string::npos &&
           e.find("conflict Warning RuleConflict") != std::string::npos &&
           e.find("badtls Warning BadTLSSecret") != std::string::npos;
  }, 10s)) << events();
  EXPECT_NE(events().find("Service bad/gone not found"), std::string::npos) << events();
  EXPECT_NE(events().find("bad/good spec.rules[0].http.paths[0]"), std::string::npos) << events();
  // Status: served Ingresses carry the published address; skipped ones do not.
  ASSERT_TRUE(waitFor([] { return kubectl("get ingress -n bad good -o jsonpath='{.status.loadBalancer.ingress[0].ip}'").out == "192.0.2.10"; }, 10s));
  EXPECT_EQ(kubectl("get ingress -n bad missing -o jsonpath='{.status.loadBalancer.ingress}'").out, "");
  // Fixing it: the Service appears and the Ingress is served.
  service("bad", "gone", {a.port});
  ASSERT_TRUE(waitFor([] { return who("missing.bad.test", "/") == "good"; }, 10s));
  // Deleting the older Ingress lets the newer one's rules in.
  kubectl("delete ingress -n bad good");
  ASSERT_TRUE(waitFor([] { return who("good.bad.test", "/") == "other" && who("extra.bad.test", "/") == "other"; }, 10s));
  kubectl("delete namespace bad --wait=false");
}

TEST_F(IngressTest, ForwardedHeadersHopByHopAndLimits) {
  ns("hdr");
  BackendProc a = backend("hdr");
  service("hdr", "web", {a.port});
  apply("hdr", ingressYaml("web", {{"hdr.test", "/", "Prefix", "web"}}, "",
                           "trellis.dev/proxy-body-size: 1k, trellis.dev/proxy-read-timeout: 500ms"));
  ASSERT_TRUE(waitFor([] { return who("hdr.test", "/") == "hdr"; }, 10s));
  std::string out = get("hdr.test", "/echo",
                        "-H 'X-Forwarded-For: 203.0.113.7' -H 'Connection: keep-alive, X-Secret' -H 'X-Secret: s' "
                        "-H 'Keep-Alive: timeout=5' -H 'X-Request-Id: abc-123' -H 'Forwarded: for=evil'");
  json::object echo = json::parse(out.substr(0, out.rfind(' '))).as_object();
  json::object& h = echo["headers"].as_object();
  EXPECT_EQ(h["x-forwarded-for"].as_string(), "203.0.113.7, 127.0.0.1");
  EXPECT_EQ(h["x-forwarded-proto"].as_string(), "http");
  EXPECT_EQ(h["x-forwarded-host"].as_string(), "hdr.test");
  EXPECT_EQ(h["x-forwarded-port"].as_string(), std::to_string(httpPort_));
  EXPECT_EQ(h["x-request-id"].as_string(), "abc-123");
  EXPECT_EQ(h["forwarded"].as_string(), "for=127.0.0.1;host=hdr.test;proto=http");
  EXPECT_FALSE(h.contains("x-secret"));  // named by Connection: hop-by-hop
  EXPECT_FALSE(h.contains("keep-alive"));
  EXPECT_EQ(echo["authority"].as_string(), "hdr.test");
  // A request id is made when none came.
  out = get("hdr.test", "/echo");
  echo = json::parse(out.substr(0, out.rfind(' '))).as_object();
  EXPECT_EQ(echo["headers"].as_object()["x-request-id"].as_string().size(), 32u);
  // Body limit (1k) → 413; under it passes.
  testing::writeFile(dir_->file("big"), std::string(2000, 'b'));
  testing::writeFile(dir_->file("small"), std::string(500, 's'));
  EXPECT_EQ(who("hdr.test", "/up", "--data-binary @" + dir_->file("big")), "413");
  EXPECT_EQ(who("hdr.test", "/up", "--data-binary @" + dir_->file("small")), "hdr");
  // Read timeout (500 ms) → 504.
  EXPECT_EQ(who("hdr.test", "/slow?ms=3000"), "504");
  EXPECT_EQ(who("hdr.test", "/slow?ms=50"), "hdr");
  // A streamed answer (no Content-Length) is relayed piece by piece.
  std::string stream = curl(fmt::format("-N -H 'Host: hdr.test' 'http://127.0.0.1:{}/stream?n=3&ms=50'", httpPort_));
  EXPECT_EQ(stream, "hdr chunk 0\nhdr chunk 1\nhdr chunk 2\n");
  // The access log has a JSON line per request, with the route and upstream.
  ASSERT_TRUE(ingress_->waitForLine([](const std::string& l) {
    return l.find("\"id\":\"abc-123\"") != std::string::npos && l.find("\"ingress\":\"hdr/web\"") != std::string::npos &&
           l.find("\"upstream\":\"127.0.0.1:") != std::string::npos;
  }, 5s));
  EXPECT_GT(metric("trellis_ingress_requests_total", "ingress=\"hdr/web\",service=\"hdr/web:80\",code=\"413\""), 0u);
  kubectl("delete namespace hdr --wait=false");
}

// h2load's summary: requests succeeded/failed/errored and 5xx.
struct H2loadResult {
  uint64_t total = 0, succeeded = 0, failed = 0, errored = 0, status5xx = 0, status2xx = 0;
  std::string raw;
};
H2loadResult h2load(const std::string& args) {
  H2loadResult r;
  r.raw = run("h2load " + args + " 2>&1").out;
  std::smatch m;
  if (std::regex_search(r.raw, m, std::regex("requests: (\\d+) total, \\d+ started, \\d+ done, (\\d+) succeeded, (\\d+) failed, (\\d+) errored"))) {
    r.total = std::stoull(m[1]);
    r.succeeded = std::stoull(m[2]);
    r.failed = std::stoull(m[3]);
    r.errored = std::stoull(m[4]);
  }
  if (std::regex_search(r.raw, m, std::regex("status codes: (\\d+) 2xx, \\d+ 3xx, \\d+ 4xx, (\\d+) 5xx"))) {
    r.status2xx = std::stoull(m[1]);
    r.status5xx = std::stoull(m[2]);
  }
  return r;
}

TEST_F(IngressTest, AKilledEndpointCostsNoClientErrorForIdempotentRequests) {
  ns("kill");
  BackendProc a = backend("k1"), b = backend("k2"), c = backend("k3");
  service("kill", "web", {a.port, b.port, c.port});
  apply("kill", ingressYaml("web", {{"kill.test", "/", "Prefix", "web"}}));
  ASSERT_TRUE(waitFor([] { return who("kill.test", "/") != "404"; }, 10s));
  std::map<std::string, int> seen;
  for (int i = 0; i < 30; ++i) seen[who("kill.test", "/")]++;
  EXPECT_EQ(seen.size(), 3u) << "every endpoint takes requests";
  std::thread killer([&] {
    std::this_thread::sleep_for(1s);
    b.proc->stop(SIGKILL);  // the EndpointSlice still names it: the proxy finds out by itself
  });
  H2loadResult r = h2load(fmt::format("-c 8 -m 4 -D 3 --connect-to=127.0.0.1:{} http://kill.test/fixed", httpPort_));
  killer.join();
  EXPECT_GT(r.total, 1000u) << r.raw;
  EXPECT_EQ(r.failed, 0u) << r.raw;
  EXPECT_EQ(r.errored, 0u) << r.raw;
  EXPECT_EQ(r.status5xx, 0u) << r.raw;
  EXPECT_GT(metric("trellis_ingress_upstream_errors_total", "service=\"kill/web:80\""), 0u);
  kubectl("delete namespace kill --wait=false");
}

TEST_F(IngressTest, RouteChangesUnderLoadCutNothing) {
  ns("churn");
  BackendProc a = backend("c1"), b = backend("c2");
  service("churn", "web", {a.port, b.port});
  service("churn", "side", {a.port});
  apply("churn", ingressYaml("web", {{"churn.test", "/", "Prefix", "web"}}));
  apply("churn", ingressYaml("side", {{"side.churn.test", "/v0", "Prefix", "side"}}));
  ASSERT_TRUE(waitFor([] { return who("churn.test", "/") != "404"; }, 10s));
  uint64_t connsBefore = metric("trellis_http_connections_total", "server=\"ingress-https\"");
  std::atomic<bool> done{false};
  std::atomic<int> changes{0};
  std::string failure;
  std::thread churn([&] {
    // 100 changes: the side Ingress's path, the loaded Ingress's annotations,
    // and the loaded Service's endpoints (one of two removed and put back).
    for (int i = 1; i <= 100 && !done; ++i) {
      auto ing = client_->get(kube::resources::kIngresses, "churn", i % 2 ? "side" : "web");
      if (!ing) continue;
      json::object o = *ing;
      if (i % 2) {
        o["spec"].as_object()["rules"].as_array()[0].as_object()["http"].as_object()["paths"].as_array()[0].as_object()["path"] =
            fmt::format("/v{}", i);
      } else {
        kube::ensureObject(o, {"metadata", "annotations"})["trellis.dev/proxy-read-timeout"] = fmt::format("{}s", 30 + i);
      }
      auto r = client_->update(kube::resources::kIngresses, std::move(o));
      if (r) changes++;
      if (i % 10 == 0) {
        auto slice = client_->get(kube::resources::kEndpointSlices, "churn", "web-1");
        if (slice) {
          json::object s = *slice;
          s["endpoints"].as_array()[0].as_object()["conditions"].as_object()["ready"] = (i / 10) % 2 == 0;
          (void)client_->update(kube::resources::kEndpointSlices, std::move(s));
        }
      }
      std::this_thread::sleep_for(30ms);
    }
  });
  H2loadResult r = h2load(fmt::format("-c 4 -m 8 -D 6 --connect-to=127.0.0.1:{} https://churn.test/fixed", httpsPort_));
  done = true;
  churn.join();
  EXPECT_GE(changes.load(), 90) << "the churn ran while the load did";
  EXPECT_GT(r.total, 1000u) << r.raw;
  EXPECT_EQ(r.failed, 0u) << r.raw;
  EXPECT_EQ(r.errored, 0u) << r.raw;
  EXPECT_EQ(r.status2xx, r.total) << r.raw;
  // No connection was closed under the clients: h2load opened its 4 and no more
  // (and the route table did change meanwhile).
  EXPECT_EQ(metric("trellis_http_connections_total", "server=\"ingress-https\"") - connsBefore, 4u);
  std::string dbg = curl(fmt::format("'http://127.0.0.1:{}/debug/route?host=side.churn.test&path=/v99'", metricsPort_));
  EXPECT_NE(dbg.find("churn/side"), std::string::npos) << dbg;
  kubectl("delete namespace churn --wait=false");
}

TEST_F(IngressTest, WebSocketsOverHttp1AndHttp2StayOpenAcrossRouteChanges) {
  ns("ws");
  BackendProc a = backend("ws1"), b = backend("ws2");
  service("ws", "web", {a.port});
  apply("ws", ingressYaml("web", {{"ws.test", "/", "Prefix", "web"}}));
  ASSERT_TRUE(waitFor([] { return who("ws.test", "/") == "ws1"; }, 10s));
  // 40 messages, 100 ms apart, on one connection: over an HTTP/1.1 Upgrade, and
  // over HTTP/2 extended CONNECT (RFC 8441) turned into an Upgrade toward the backend.
  Background ws(fmt::format("exec /usr/bin/python3 {} ws.test {} 40 100 2>&1", TRELLIS_WS_CLIENT, httpPort_));
  Background ws2(fmt::format("exec /usr/bin/python3 {} ws.test {} 40 100 2>&1", TRELLIS_WS_H2_CLIENT, httpPort_));
  ASSERT_TRUE(ws.waitForLine([](const std::string& l) { return l == "open"; }, 10s)) << ws.output();
  ASSERT_TRUE(ws2.waitForLine([](const std::string& l) { return l == "open"; }, 10s)) << ws2.output();
  // 20 changes meanwhile: the Ingress's path rules and annotations, and the Service's endpoints.
  for (int i = 0; i < 20; ++i) {
    if (i % 2 == 0) {
      apply("ws", ingressYaml("web", {{"ws.test", "/", "Prefix", "web"}, {"ws.test", fmt::format("/v{}", i), "Exact", "web"}},
                              "", fmt::format("trellis.dev/proxy-read-timeout: {}s", 30 + i)));
    } else {
      service("ws", "web", i % 4 == 1 ? std::vector<uint16_t>{a.port, b.port} : std::vector<uint16_t>{b.port});
    }
  }
  auto rc = ws.wait(20s);
  ASSERT_TRUE(rc.has_value()) << ws.output();
  EXPECT_EQ(*rc, 0) << ws.output();
  EXPECT_NE(ws.output().find("ok 40 ws1"), std::string::npos) << ws.output();
  auto rc2 = ws2.wait(20s);
  ASSERT_TRUE(rc2.has_value()) << ws2.output();
  EXPECT_EQ(*rc2, 0) << ws2.output();
  EXPECT_NE(ws2.output().find("ok 40 ws1"), std::string::npos) << ws2.output();
  // New connections follow the new endpoints.
  EXPECT_EQ(who("ws.test", "/"), "ws2");
  kubectl("delete namespace ws --wait=false");
}

TEST_F(IngressTest, GrpcUnaryAndAStreamBothWaysStayUpAcrossRouteChanges) {
  ns("grpc");
  std::string portFile = dir_->file("grpc-port");
  Background server(fmt::format("exec {} serve --name g1 --port-file {} 2>&1", TRELLIS_GRPC_ECHO_BIN, portFile));
  ASSERT_TRUE(waitFor([&] { return !testing::readFile(portFile).empty(); }, 10s)) << server.output();
  uint16_t port = static_cast<uint16_t>(std::stoi(testing::readFile(portFile)));
  service("grpc", "echo", {port}, "kubernetes.io/h2c");
  apply("grpc", ingressYaml("echo", {{"grpc.test", "/", "Prefix", "echo"}}));
  ASSERT_TRUE(waitFor([] {
    return curl(fmt::format("'http://127.0.0.1:{}/debug/route?host=grpc.test&path=/x'", metricsPort_)).find("proxied") !=
           std::string::npos;
  }, 10s));
  // One unary call, then 30 notes on one stream, each answered while the stream is open (h2c to the ingress).
  Background chat(fmt::format("exec {} chat --target 127.0.0.1:{} --authority grpc.test --count 30 --interval-ms 100 2>&1",
                              TRELLIS_GRPC_ECHO_BIN, httpPort_));
  ASSERT_TRUE(chat.waitForLine([](const std::string& l) { return l == "open"; }, 10s)) << chat.output();
  for (int i = 0; i < 20; ++i) {
    apply("grpc", ingressYaml("echo", {{"grpc.test", "/", "Prefix", "echo"}, {"grpc.test", fmt::format("/v{}", i), "Exact", "echo"}},
                              "", fmt::format("trellis.dev/proxy-read-timeout: {}s", 30 + i)));
  }
  auto rc = chat.wait(30s);
  ASSERT_TRUE(rc.has_value()) << chat.output();
  EXPECT_EQ(*rc, 0) << chat.output();
  EXPECT_NE(chat.output().find("said g1: hello"), std::string::npos) << chat.output();
  EXPECT_NE(chat.output().find("ok 30 g1"), std::string::npos) << chat.output();
  kubectl("delete namespace grpc --wait=false");
}

TEST_F(IngressTest, ASlowlorisClientBlocksNobody) {
  ns("slow");
  BackendProc a = backend("s1");
  service("slow", "web", {a.port});
  apply("slow", ingressYaml("web", {{"slow.test", "/", "Prefix", "web"}}));
  ASSERT_TRUE(waitFor([] { return who("slow.test", "/") == "s1"; }, 10s));
  // Eight clients trickling headers a byte every 200 ms; the ingress has two threads.
  std::vector<std::thread> loris;
  std::atomic<int> closedByServer{0};
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 8; ++i) {
    loris.emplace_back([&] {
      bool closed = false;
      testing::rawTrickle(httpPort_, "GET / HTTP/1.1\r\nHost: slow.test\r\nX-A: ", 'a', 200ms, 8s, &closed);
      if (closed) closedByServer++;
    });
  }
  std::this_thread::sleep_for(300ms);
  for (int i = 0; i < 10; ++i) {
    auto s = std::chrono::steady_clock::now();
    EXPECT_EQ(who("slow.test", "/"), "s1");
    EXPECT_LT(std::chrono::steady_clock::now() - s, 3s);  // not held behind the trickling clients (they last 8 s)
  }
  for (auto& t : loris) t.join();
  EXPECT_EQ(closedByServer.load(), 8);  // cut at the 2 s header timeout, not after the client's 8 s
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 7s);
  kubectl("delete namespace slow --wait=false");
}

TEST_F(IngressTest, SecretsOnlyByNameAndOnlyWhenReferenced) {
  ns("sec");
  BackendProc a = backend("sec");
  service("sec", "web", {a.port});
  std::string cert, ca, cert2, ca2;
  apply("sec", tlsSecretYaml("used", "used.sec.test", &cert, &ca) + "---\n" +
                   tlsSecretYaml("unused", "unused.sec.test", &cert2, &ca2));
  testing::writeFile(dir_->file("ca-used.pem"), ca);
  apply("sec", ingressYaml("web", {{"used.sec.test", "/", "Prefix", "web"}},
                           "  tls: [{hosts: [used.sec.test], secretName: used}]\n"));
  auto verified = [&] {
    return curl(fmt::format("-o /dev/null -w '%{{http_code}}' --cacert {} --resolve used.sec.test:{}:127.0.0.1 "
                            "https://used.sec.test:{}/",
                            dir_->file("ca-used.pem"), httpsPort_, httpsPort_));
  };
  // RBAC lets the ingress read the Secrets by name only (see kRbac).
  ASSERT_TRUE(waitFor([&] { return verified() == "200"; }, 10s)) << verified();
  // An Ingress of another class naming the unused Secret is not ours: still never read.
  apply("sec", R"(apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: theirs}
spec:
  ingressClassName: nginx
  tls: [{hosts: [unused.sec.test], secretName: unused}]
  rules: [{host: unused.sec.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]
)");
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(who("unused.sec.test", "/"), "404");
  std::string log = api_->log();
  EXPECT_EQ(log.find("user=trellis-ingress verb=list resource=secrets"), std::string::npos);
  EXPECT_EQ(log.find("resource=secrets subresource= namespace=sec name=unused"), std::string::npos);
  kubectl("delete namespace sec --wait=false");
}

TEST_F(IngressTest, KilledAndRestartedItServesTheSameRoutes) {
  ns("crash");
  BackendProc a = backend("crash");
  service("crash", "web", {a.port});
  apply("crash", ingressYaml("web", {{"crash.test", "/", "Prefix", "web"}}));
  ASSERT_TRUE(waitFor([] { return who("crash.test", "/") == "crash"; }, 10s));
  // A second instance of its own (other ports), killed with -9 under load, then restarted.
  uint16_t http = testing::freeTcpPort(), https = testing::freeTcpPort(), metrics = testing::freeTcpPort();
  std::string cmd = fmt::format("exec {} --kubeconfig {} --address 127.0.0.1 --http-port {} --https-port {} --metrics-port {} "
                                "--access-log=false --publish-address 192.0.2.10 2>&1",
                                TRELLIS_INGRESS_BIN, dir_->file("ingress.kubeconfig"), http, https, metrics);
  auto viaSecond = [&] {
    return curl(fmt::format("-o /dev/null -w '%{{http_code}}' -H 'Host: crash.test' http://127.0.0.1:{}/", http));
  };
  {
    Background second(cmd);
    ASSERT_TRUE(waitFor([&] { return viaSecond() == "200"; }, 10s)) << second.output();
    std::thread load([&] { h2load(fmt::format("-c 4 -m 4 -D 2 --connect-to=127.0.0.1:{} http://crash.test/", http)); });
    std::this_thread::sleep_for(500ms);
    second.stop(SIGKILL);
    load.join();
  }
  EXPECT_EQ(viaSecond(), "000");  // gone
  Background again(cmd);
  ASSERT_TRUE(waitFor([&] { return viaSecond() == "200"; }, 10s)) << again.output();
  // Nothing was left half-written: the status is the one address, once.
  EXPECT_EQ(kubectl("get ingress -n crash web -o jsonpath='{.status.loadBalancer.ingress[*].ip}'").out, "192.0.2.10");
  again.stop(SIGTERM);
  kubectl("delete namespace crash --wait=false");
}

TEST_F(IngressTest, BadFlagsAreRefusedWithAMessage) {
  auto r = run(fmt::format("{} --http-port 70000 2>&1", TRELLIS_INGRESS_BIN));
  EXPECT_NE(r.exitCode, 0);
  EXPECT_NE(r.out.find("70000"), std::string::npos) << r.out;
  r = run(fmt::format("{} --kubeconfig /nonexistent --max-body-size 1.5m 2>&1", TRELLIS_INGRESS_BIN));
  EXPECT_EQ(r.exitCode, 2) << r.out;
  EXPECT_NE(r.out.find("is not a size"), std::string::npos) << r.out;
  r = run(fmt::format("{} --kubeconfig /nonexistent --client-header-timeout soon 2>&1", TRELLIS_INGRESS_BIN));
  EXPECT_NE(r.out.find("is not a duration"), std::string::npos) << r.out;
  r = run(fmt::format("{} --kubeconfig /nonexistent --http-port 0 --https-port 0 --metrics-port 0 2>&1", TRELLIS_INGRESS_BIN));
  EXPECT_NE(r.exitCode, 0);
  EXPECT_NE(r.out.find("kubeconfig"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace trellis
