// trellis-apiserver driven by the real kubectl (v1.32): what kubectl prints
// is checked, not only its exit code.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "common/testing/apiserver_process.h"
#include "common/testing/background.h"
#include "common/testing/testing.h"

namespace trellis::apiserver {
namespace {

using namespace std::chrono_literals;

class KubectlTest : public ::testing::Test {
 protected:
  void SetUp() override { start(); }
  void TearDown() override { stop(SIGTERM); }

  void start() {
    ASSERT_TRUE(server_.start(extraArgs_)) << server_.log();
    kubeconfig_ = server_.kubeconfig();
  }
  void stop(int sig) { server_.stop(sig); }

  testing::CommandResult kubectl(const std::string& args) {
    return testing::run("kubectl --kubeconfig " + kubeconfig_ + " " + args);
  }
  // kubectl -v=6 logs each request; a watch's has watch=true in its URL.
  static bool isWatchRequest(const std::string& line) {
    return line.find("watch=true") != std::string::npos && line.find(" 200 OK") != std::string::npos;
  }

  testing::TempDir dir_;
  testing::ApiServerProcess server_{TRELLIS_APISERVER_BIN, dir_.path()};
  std::vector<std::string> extraArgs_;  // for the next start()
  std::string kubeconfig_;
};

TEST_F(KubectlTest, DiscoveryAndHealth) {
  auto ns = kubectl("get ns");
  EXPECT_EQ(ns.exitCode, 0) << ns.out;
  for (const char* n : {"default", "kube-system", "kube-public", "kube-node-lease"}) {
    EXPECT_NE(ns.out.find(n), std::string::npos) << ns.out;
  }
  // Columns as kube-apiserver's tables give them.
  EXPECT_EQ(ns.out.substr(0, ns.out.find('\n')), "NAME              STATUS   AGE") << ns.out;
  EXPECT_NE(ns.out.find("default           Active   "), std::string::npos) << ns.out;
  auto ready = kubectl("get --raw /readyz");
  EXPECT_EQ(ready.out, "ok");
  auto res = kubectl("api-resources");
  bool sawConfigMaps = false;
  for (size_t pos = 0, nl; (nl = res.out.find('\n', pos)) != std::string::npos; pos = nl + 1) {
    std::string line = res.out.substr(pos, nl - pos);
    if (line.rfind("configmaps ", 0) == 0) {
      sawConfigMaps = line.find(" cm ") != std::string::npos && line.find(" v1 ") != std::string::npos &&
                      line.find(" true ") != std::string::npos && line.find("ConfigMap") != std::string::npos;
    }
  }
  EXPECT_TRUE(sawConfigMaps) << res.out;
  EXPECT_NE(res.out.find("ingresses"), std::string::npos);
  EXPECT_NE(res.out.find("networking.k8s.io/v1"), std::string::npos);
  // kubectl asks for the aggregated discovery document first: two requests
  // (/api and /apis) discover everything.
  auto verbose = kubectl("api-resources --cache-dir " + dir_.file("kcache") + " -v=6");
  size_t discoveryGets = 0;
  for (size_t pos = 0; (pos = verbose.out.find(" GET https://", pos)) != std::string::npos; ++pos) ++discoveryGets;
  EXPECT_EQ(discoveryGets, 2u) << verbose.out;
  std::string server = kubectl("config view -o jsonpath='{.clusters[0].cluster.server}'").out;
  auto aggregated = testing::run("curl -sk -H 'Authorization: Bearer " + testing::readFile(dir_.file("data/admin.token")) +
                                 "' -H 'Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList' " +
                                 server + "/apis");
  EXPECT_NE(aggregated.out.find(R"("resource":"deployments","responseKind":{"group":"apps","version":"v1","kind":"Deployment"})"),
            std::string::npos)
      << aggregated.out;
  auto version = kubectl("version -o json");
  EXPECT_NE(version.out.find("\"gitVersion\": \"v1.32.0-trellis\""), std::string::npos) << version.out;
  // The commit and date come from the build: this checkout's HEAD.
  std::string head = testing::run("git -C " TRELLIS_SOURCE_DIR " rev-parse HEAD").out;
  ASSERT_EQ(head.size(), 41u) << head;
  EXPECT_NE(version.out.find("\"gitCommit\": \"" + head.substr(0, 40) + "\""), std::string::npos) << version.out;
  EXPECT_NE(version.out.find("\"buildDate\": \"20"), std::string::npos) << version.out;
}

TEST_F(KubectlTest, ApplyGetSelectDelete) {
  testing::writeFile(dir_.file("m.yaml"), R"(apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  labels: {tier: web}
data:
  color: blue
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: db-config
  labels: {tier: db}
data:
  size: large
---
apiVersion: v1
kind: Namespace
metadata:
  name: team-a
)");
  auto apply = kubectl("apply -f " + dir_.file("m.yaml"));
  EXPECT_EQ(apply.out, "configmap/web-config created\nconfigmap/db-config created\nnamespace/team-a created\n");
  auto again = kubectl("create -f " + dir_.file("m.yaml"));
  EXPECT_NE(again.exitCode, 0);
  EXPECT_NE(again.out.find("Error from server (AlreadyExists): error when creating \"" + dir_.file("m.yaml") +
                           "\": configmaps \"web-config\" already exists"),
            std::string::npos)
      << again.out;
  EXPECT_EQ(kubectl("get cm web-config -o jsonpath={.data.color}").out, "blue");
  auto table = kubectl("get cm --show-labels");
  EXPECT_EQ(table.out.substr(0, table.out.find('\n')), "NAME         DATA   AGE   LABELS") << table.out;
  EXPECT_NE(table.out.find("web-config   1      "), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("tier=web"), std::string::npos) << table.out;
  auto byLabel = kubectl("get cm -l 'tier in (web)' -o name");
  EXPECT_EQ(byLabel.out, "configmap/web-config\n");
  auto notDb = kubectl("get cm -l tier!=db -o name");
  EXPECT_EQ(notDb.out, "configmap/web-config\n");
  auto byField = kubectl("get cm --field-selector metadata.name=db-config -o name");
  EXPECT_EQ(byField.out, "configmap/db-config\n");
  auto all = kubectl("get cm -A -o name");
  EXPECT_EQ(all.out, "configmap/db-config\nconfigmap/web-config\n");
  auto yaml = kubectl("get ns team-a -o yaml");
  EXPECT_NE(yaml.out.find("uid: "), std::string::npos);
  EXPECT_NE(yaml.out.find("creationTimestamp: \""), std::string::npos);
  auto json = kubectl("get cm db-config -o json");
  EXPECT_NE(json.out.find("\"resourceVersion\": \""), std::string::npos) << json.out;
  auto del = kubectl("delete -f " + dir_.file("m.yaml"));
  EXPECT_EQ(del.out, "configmap \"web-config\" deleted\nconfigmap \"db-config\" deleted\nnamespace \"team-a\" deleted\n");
  EXPECT_EQ(kubectl("get cm -o name").out, "");
}

TEST_F(KubectlTest, ApplyUpdatesAndAllThreePatchTypes) {
  testing::writeFile(dir_.file("v1.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  a: \"1\"\n  b: \"2\"\n");
  testing::writeFile(dir_.file("v2.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  a: \"10\"\n");
  EXPECT_EQ(kubectl("apply -f " + dir_.file("v1.yaml")).out, "configmap/app created\n");
  EXPECT_EQ(kubectl("apply -f " + dir_.file("v1.yaml")).out, "configmap/app unchanged\n");
  auto changed = kubectl("apply -f " + dir_.file("v2.yaml"));
  EXPECT_EQ(changed.out, "configmap/app configured\n");
  // b was in the last applied configuration and is gone from v2: apply removes it.
  EXPECT_EQ(kubectl("get cm app -o jsonpath={.data}").out, "{\"a\":\"10\"}");
  EXPECT_EQ(kubectl("label cm app tier=web").out, "configmap/app labeled\n");
  EXPECT_EQ(kubectl("annotate cm app note=hello").out, "configmap/app annotated\n");
  EXPECT_EQ(kubectl("get cm -l tier=web -o name").out, "configmap/app\n");
  EXPECT_EQ(kubectl("patch cm app --type=merge -p '{\"data\":{\"m\":\"merge\"}}'").out, "configmap/app patched\n");
  EXPECT_EQ(kubectl("patch cm app --type=json -p '[{\"op\":\"add\",\"path\":\"/data/j\",\"value\":\"json\"}]'").out,
            "configmap/app patched\n");
  EXPECT_EQ(kubectl("patch cm app --type=strategic -p '{\"data\":{\"s\":\"smp\"}}'").out, "configmap/app patched\n");
  EXPECT_EQ(kubectl("get cm app -o jsonpath='{.data.m}/{.data.j}/{.data.s}/{.metadata.annotations.note}'").out,
            "merge/json/smp/hello");
  auto badTest = kubectl("patch cm app --type=json -p '[{\"op\":\"test\",\"path\":\"/data/a\",\"value\":\"nope\"}]'");
  EXPECT_NE(badTest.exitCode, 0);
  EXPECT_EQ(kubectl("get cm app -o jsonpath={.data.a}").out, "10") << "a failed patch changed the object";
}

TEST_F(KubectlTest, StatusIsChangedOnlyThroughItsSubresource) {
  testing::writeFile(dir_.file("pvc.yaml"), R"(apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
)");
  ASSERT_EQ(kubectl("apply -f " + dir_.file("pvc.yaml")).exitCode, 0);
  auto st = kubectl("patch pvc data --subresource=status --type=merge -p '{\"status\":{\"phase\":\"Bound\"}}'");
  EXPECT_EQ(st.out, "persistentvolumeclaim/data patched\n");
  EXPECT_EQ(kubectl("get pvc data -o jsonpath={.status.phase}").out, "Bound");
  // The main resource cannot change status...
  auto main = kubectl("patch pvc data --type=merge -p '{\"status\":{\"phase\":\"Lost\"},\"metadata\":{\"labels\":{\"a\":\"b\"}}}'");
  EXPECT_EQ(main.exitCode, 0) << main.out;
  EXPECT_EQ(kubectl("get pvc data -o jsonpath={.status.phase}/{.metadata.labels.a}").out, "Bound/b");
  // ...and /status changes nothing else.
  kubectl("patch pvc data --subresource=status --type=merge -p '{\"metadata\":{\"labels\":{\"a\":\"c\"}},\"spec\":{\"volumeName\":\"x\"}}'");
  EXPECT_EQ(kubectl("get pvc data -o jsonpath={.metadata.labels.a}/{.spec.volumeName}").out, "b/");
  EXPECT_NE(kubectl("api-resources").out.find("persistentvolumeclaims"), std::string::npos);
  auto noSub = kubectl("get --raw /api/v1/namespaces/default/configmaps/x/status");
  EXPECT_NE(noSub.exitCode, 0);
}

TEST_F(KubectlTest, DeleteCollectionHonoursSelectors) {
  testing::writeFile(dir_.file("c.yaml"), R"(apiVersion: v1
kind: ConfigMap
metadata: {name: a, labels: {tier: web}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: b, labels: {tier: web}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c, labels: {tier: db}}
)");
  ASSERT_EQ(kubectl("apply -f " + dir_.file("c.yaml")).exitCode, 0);
  auto del = kubectl("delete --raw '/api/v1/namespaces/default/configmaps?labelSelector=tier%3Dweb'");
  EXPECT_EQ(del.exitCode, 0) << del.out;
  EXPECT_NE(del.out.find("\"status\":\"Success\""), std::string::npos) << del.out;
  EXPECT_EQ(kubectl("get cm -o name").out, "configmap/c\n");
}

TEST_F(KubectlTest, FinalizersHoldDeletionUntilRemoved) {
  testing::writeFile(dir_.file("f.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [trellis.dev/test]\n");
  ASSERT_EQ(kubectl("apply -f " + dir_.file("f.yaml")).exitCode, 0);
  auto del = kubectl("delete cm held --wait=false");
  EXPECT_EQ(del.out, "configmap \"held\" deleted\n");
  // Still there, marked for deletion.
  EXPECT_NE(kubectl("get cm held -o jsonpath={.metadata.deletionTimestamp}").out, "");
  auto add = kubectl("patch cm held --type=json -p '[{\"op\":\"add\",\"path\":\"/metadata/finalizers/-\",\"value\":\"x/y\"}]'");
  EXPECT_NE(add.out.find("no new finalizers can be added if the object is being deleted"), std::string::npos) << add.out;
  // kubectl delete --wait waits for the object to be gone: it returns once the finalizer is removed.
  // kubectl wait is watching (its -v=6 log shows the watch request) before the finalizer goes.
  testing::Background waiter("kubectl --kubeconfig " + kubeconfig_ + " wait --for=delete cm/held --timeout=20s -v=6");
  ASSERT_TRUE(waiter.waitForLine(isWatchRequest, 20s)) << waiter.output();
  EXPECT_EQ(kubectl("patch cm held --type=merge -p '{\"metadata\":{\"finalizers\":null}}'").exitCode, 0);
  ASSERT_TRUE(waiter.waitForLine([](const std::string& l) { return l == "configmap/held condition met"; }, 20s))
      << waiter.output();
  EXPECT_EQ(waiter.wait(20s), 0);
  EXPECT_EQ(kubectl("get cm held").out, "Error from server (NotFound): configmaps \"held\" not found\n");
}

TEST_F(KubectlTest, DeletingANamespaceDeletesItsContents) {
  testing::writeFile(dir_.file("ns.yaml"), R"(apiVersion: v1
kind: Namespace
metadata: {name: doomed}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: a, namespace: doomed}
---
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: doomed}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: held, namespace: doomed, finalizers: [trellis.dev/test]}
)");
  ASSERT_EQ(kubectl("apply -f " + dir_.file("ns.yaml")).exitCode, 0);
  EXPECT_EQ(kubectl("delete ns doomed --wait=false").out, "namespace \"doomed\" deleted\n");
  EXPECT_EQ(kubectl("get ns doomed -o jsonpath={.status.phase}").out, "Terminating");
  testing::writeFile(dir_.file("late.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late, namespace: doomed}\n");
  auto late = kubectl("create -f " + dir_.file("late.yaml"));
  EXPECT_NE(late.out.find("unable to create new content in namespace doomed because it is being terminated"),
            std::string::npos) << late.out;
  // Everything without a finalizer goes; the held object waits for its finalizer.
  ASSERT_TRUE(testing::waitFor([&] { return kubectl("get cm,secret -n doomed -o name").out == "configmap/held\n"; }, 30s))
      << kubectl("get cm,secret -n doomed -o name").out;
  EXPECT_EQ(kubectl("get ns doomed -o name").out, "namespace/doomed\n");
  // kubectl wait is watching before the last finalizer goes (else the namespace may be gone before it starts).
  testing::Background waiter("kubectl --kubeconfig " + kubeconfig_ + " wait --for=delete ns/doomed --timeout=30s -v=6");
  ASSERT_TRUE(waiter.waitForLine(isWatchRequest, 30s)) << waiter.output();
  EXPECT_EQ(kubectl("patch cm held -n doomed --type=merge -p '{\"metadata\":{\"finalizers\":null}}'").exitCode, 0);
  EXPECT_TRUE(waiter.waitForLine([](const std::string& l) { return l == "namespace/doomed condition met"; }, 30s))
      << waiter.output();
  EXPECT_EQ(waiter.wait(30s), 0);
  auto system = kubectl("delete ns kube-system");
  EXPECT_EQ(system.out, "Error from server (Forbidden): namespaces \"kube-system\" is forbidden: this namespace may not be deleted\n");
}

TEST_F(KubectlTest, ServicesGetDistinctClusterIpsAndNodePorts) {
  // 20 creates at once: no address or port handed out twice.
  std::vector<std::thread> creators;
  for (int i = 0; i < 20; ++i) {
    std::string f = dir_.file("svc" + std::to_string(i) + ".yaml");
    testing::writeFile(f, "apiVersion: v1\nkind: Service\nmetadata: {name: s" + std::to_string(i) +
                              "}\nspec:\n  type: NodePort\n  ports: [{port: 80}]\n");
    creators.emplace_back([this, f] { kubectl("create -f " + f); });
  }
  for (auto& t : creators) t.join();
  // (the "kubernetes" Service, with the range's first address, is left out)
  auto ips = kubectl("get svc --field-selector metadata.name!=kubernetes "
                     "-o jsonpath='{range .items[*]}{.spec.clusterIP} {.spec.ports[0].nodePort}{\"\\n\"}{end}'");
  std::set<std::string> seenIps, seenPorts;
  int lines = 0;
  for (size_t pos = 0, nl; (nl = ips.out.find('\n', pos)) != std::string::npos; pos = nl + 1) {
    std::string line = ips.out.substr(pos, nl - pos);
    seenIps.insert(line.substr(0, line.find(' ')));
    seenPorts.insert(line.substr(line.find(' ') + 1));
    ++lines;
  }
  EXPECT_EQ(lines, 20) << ips.out;
  EXPECT_EQ(seenIps.size(), 20u) << ips.out;
  EXPECT_EQ(seenPorts.size(), 20u) << ips.out;
  EXPECT_EQ(seenIps.count(""), 0u);
  EXPECT_EQ(seenIps.count("10.96.0.1"), 0u);
  EXPECT_EQ(kubectl("get svc kubernetes -o jsonpath='{.spec.clusterIP} {.spec.ports[0].port}'").out, "10.96.0.1 443");
  // An explicit, already used IP is refused; a deleted Service frees its IP.
  std::string ip0 = kubectl("get svc s0 -o jsonpath={.spec.clusterIP}").out;
  testing::writeFile(dir_.file("dup.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: dup}\nspec:\n  clusterIP: " + ip0 +
                                                 "\n  ports: [{port: 80}]\n");
  auto dup = kubectl("create -f " + dir_.file("dup.yaml"));
  EXPECT_NE(dup.out.find("provided IP is already allocated"), std::string::npos) << dup.out;
  ASSERT_EQ(kubectl("delete svc s0").exitCode, 0);
  EXPECT_EQ(kubectl("create -f " + dir_.file("dup.yaml")).out, "service/dup created\n");
  auto change = kubectl("patch svc dup --type=merge -p '{\"spec\":{\"clusterIP\":\"10.96.0.250\"}}'");
  EXPECT_NE(change.out.find("may not change once set"), std::string::npos) << change.out;
}

TEST_F(KubectlTest, DescribeShowsTheObjectsEvents) {
  testing::writeFile(dir_.file("s.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n");
  ASSERT_EQ(kubectl("apply -f " + dir_.file("s.yaml")).exitCode, 0);
  std::string uid = kubectl("get svc web -o jsonpath={.metadata.uid}").out;
  testing::writeFile(dir_.file("d.yaml"), R"(apiVersion: v1
kind: Event
metadata: {name: web.1}
involvedObject: {kind: Service, name: web, namespace: default, apiVersion: v1, uid: )" + uid + R"(}
reason: Probed
message: the service was looked at
type: Normal
source: {component: trellis-test}
firstTimestamp: "2026-01-01T00:00:00Z"
lastTimestamp: "2026-01-01T00:00:00Z"
count: 1
---
apiVersion: v1
kind: Event
metadata: {name: other.1}
involvedObject: {kind: Service, name: other, namespace: default}
reason: Elsewhere
message: not about web
type: Normal
)");
  ASSERT_EQ(kubectl("apply -f " + dir_.file("d.yaml")).exitCode, 0);
  auto d = kubectl("describe svc web");
  EXPECT_NE(d.out.find("Type:                     ClusterIP"), std::string::npos) << d.out;
  EXPECT_NE(d.out.find("Probed"), std::string::npos) << d.out;
  EXPECT_NE(d.out.find("the service was looked at"), std::string::npos) << d.out;
  EXPECT_EQ(d.out.find("Elsewhere"), std::string::npos) << d.out;
  EXPECT_EQ(kubectl("get events --field-selector involvedObject.name=web,type=Normal -o name").out, "event/web.1\n");
  auto bad = kubectl("get events --field-selector spec.nodeName=x");
  EXPECT_NE(bad.out.find("field label not supported: spec.nodeName"), std::string::npos) << bad.out;
}

TEST_F(KubectlTest, WaitForConditionAndJsonpath) {
  testing::writeFile(dir_.file("n.yaml"), "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\n");
  ASSERT_EQ(kubectl("apply -f " + dir_.file("n.yaml")).exitCode, 0);
  // Both waits are watching before the status changes.
  std::string k = "kubectl --kubeconfig " + kubeconfig_ + " wait -v=6 --timeout=20s ";
  testing::Background cond(k + "--for=condition=Ready node/node-1");
  testing::Background path(k + "--for=jsonpath={.status.phase}=Running node/node-1");
  ASSERT_TRUE(cond.waitForLine(isWatchRequest, 20s)) << cond.output();
  ASSERT_TRUE(path.waitForLine(isWatchRequest, 20s)) << path.output();
  auto st = kubectl("patch node node-1 --subresource=status --type=merge -p "
                    "'{\"status\":{\"phase\":\"Running\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}'");
  EXPECT_EQ(st.exitCode, 0) << st.out;
  auto met = [](const std::string& l) { return l == "node/node-1 condition met"; };
  EXPECT_TRUE(cond.waitForLine(met, 20s)) << cond.output();
  EXPECT_TRUE(path.waitForLine(met, 20s)) << path.output();
  EXPECT_NE(kubectl("get nodes").out.find("node-1   Ready    <none>   "), std::string::npos) << kubectl("get nodes").out;
}

TEST_F(KubectlTest, ListsComeInPagesAtOneRevision) {
  std::string manifest;
  for (int i = 0; i < 7; ++i) manifest += "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p" + std::to_string(i) + "\n---\n";
  testing::writeFile(dir_.file("p.yaml"), manifest);
  ASSERT_EQ(kubectl("apply -f " + dir_.file("p.yaml")).exitCode, 0);
  // kubectl pages through with limit/continue and shows every item once.
  auto paged = kubectl("get cm --chunk-size=3 -o name");
  EXPECT_EQ(paged.out, "configmap/p0\nconfigmap/p1\nconfigmap/p2\nconfigmap/p3\nconfigmap/p4\nconfigmap/p5\nconfigmap/p6\n");
  auto first = kubectl("get --raw '/api/v1/namespaces/default/configmaps?limit=3'");
  EXPECT_NE(first.out.find("\"name\":\"p2\""), std::string::npos) << first.out;
  EXPECT_EQ(first.out.find("\"name\":\"p3\""), std::string::npos) << "a page longer than its limit: " << first.out;
  size_t at = first.out.find("\"continue\":\"");
  ASSERT_NE(at, std::string::npos) << first.out;
  std::string token = first.out.substr(at + 12, first.out.find('"', at + 12) - at - 12);
  // A change after the first page does not show in the next one: same revision.
  kubectl("delete cm p4");
  auto second = kubectl("get --raw '/api/v1/namespaces/default/configmaps?limit=3&continue=" + token + "'");
  EXPECT_NE(second.out.find("\"name\":\"p4\""), std::string::npos) << second.out;
  EXPECT_EQ(second.out.find("\"name\":\"p0\""), std::string::npos) << second.out;
  auto bad = kubectl("get --raw '/api/v1/namespaces/default/configmaps?limit=3&continue=garbage!'");
  EXPECT_NE(bad.out.find("invalid continue token"), std::string::npos) << bad.out;
}

TEST_F(KubectlTest, ErrorsReadLikeKubeApiserver) {
  testing::writeFile(dir_.file("bad.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n");
  auto bad = kubectl("create -f " + dir_.file("bad.yaml"));
  EXPECT_NE(bad.exitCode, 0);
  EXPECT_NE(bad.out.find("The ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase "
                         "RFC 1123 subdomain must consist of"),
            std::string::npos)
      << bad.out;
  auto missing = kubectl("get cm nope");
  EXPECT_EQ(missing.out, "Error from server (NotFound): configmaps \"nope\" not found\n");
  // Unknown fields: kubectl's default strict validation gets kube-apiserver's
  // strict decoding error; without it they are dropped, never stored.
  testing::writeFile(dir_.file("typo.yaml"),
                     "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\n  lables: {a: b}\ndatas:\n  k: v\n");
  auto strict = kubectl("apply -f " + dir_.file("typo.yaml"));
  EXPECT_NE(strict.out.find("Error from server (BadRequest): error when creating \"" + dir_.file("typo.yaml") +
                            "\": ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: "
                            "unknown field \"datas\", unknown field \"metadata.lables\""),
            std::string::npos)
      << strict.out;
  EXPECT_EQ(kubectl("apply --validate=false -f " + dir_.file("typo.yaml")).out, "configmap/typo created\n");
  EXPECT_EQ(kubectl("get cm typo -o jsonpath='{.datas}{.metadata.lables}'").out, "");
  // Over the 3 MiB default: a Status from the HTTP layer, and nothing stored.
  testing::writeFile(dir_.file("big.json"), R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"k":")" +
                                                std::string(4 << 20, 'x') + "\"}}");
  auto big = kubectl("create -f " + dir_.file("big.json"));
  EXPECT_NE(big.out.find("Error from server (RequestEntityTooLarge): error when creating \"" + dir_.file("big.json") +
                         "\": Request entity too large: limit is 3145728"),
            std::string::npos)
      << big.out;
  EXPECT_NE(kubectl("get cm big").exitCode, 0);
  testing::writeFile(dir_.file("orphan.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: no-such-ns\n");
  auto orphan = kubectl("create -f " + dir_.file("orphan.yaml"));
  EXPECT_NE(orphan.out.find("namespaces \"no-such-ns\" not found"), std::string::npos) << orphan.out;
  // Nothing was stored by the failures (typo is the one accepted without validation).
  EXPECT_EQ(kubectl("get cm -A -o name").out, "configmap/typo\n");
}

TEST_F(KubectlTest, UnauthenticatedRequestsGet401) {
  auto anon = testing::run("curl -sk -o /dev/null -w '%{http_code}' " +
                           testing::run("kubectl --kubeconfig " + kubeconfig_ +
                                        " config view -o jsonpath='{.clusters[0].cluster.server}'").out +
                           "/api/v1/namespaces");
  EXPECT_EQ(anon.out, "401");
  auto health = testing::run("curl -sk " + testing::run("kubectl --kubeconfig " + kubeconfig_ +
                                                        " config view -o jsonpath='{.clusters[0].cluster.server}'").out +
                             "/healthz");
  EXPECT_EQ(health.out, "ok");
}

TEST_F(KubectlTest, ClientCertificatesAuthenticate) {
  std::string server = testing::run("kubectl --kubeconfig " + kubeconfig_ +
                                    " config view -o jsonpath='{.clusters[0].cluster.server}'").out;
  std::string pki = dir_.file("data/pki");
  auto withCert = testing::run("curl -sS -o /dev/null -w '%{http_code}' --cacert " + pki + "/ca.crt --cert " + pki +
                               "/admin.crt --key " + pki + "/admin.key " + server + "/api/v1/namespaces");
  EXPECT_EQ(withCert.out, "200") << withCert.out;
  // kubectl with the certificate instead of the token.
  testing::writeFile(dir_.file("empty.kubeconfig"), "apiVersion: v1\nkind: Config\n");
  auto kc = testing::run("kubectl --kubeconfig " + dir_.file("empty.kubeconfig") + " --server " + server +
                         " --certificate-authority " + pki + "/ca.crt --client-certificate " + pki +
                         "/admin.crt --client-key " + pki + "/admin.key get ns default -o name");
  EXPECT_EQ(kc.out, "namespace/default\n");
  // A certificate from another CA is refused in the handshake.
  testing::makeCertificate(dir_.path(), "stranger", "stranger", {});
  auto stranger = testing::run("curl -sS -o /dev/null -w '%{http_code}' --cacert " + pki + "/ca.crt --cert " +
                               dir_.file("stranger.crt") + " --key " + dir_.file("stranger.key") + " " + server +
                               "/api/v1/namespaces");
  EXPECT_NE(stranger.exitCode, 0) << stranger.out;
  EXPECT_NE(stranger.out, "200");
}

TEST_F(KubectlTest, WatchSeesChangesInOrder) {
  // A marker made first: its ADDED line shows the watch has listed.
  ASSERT_EQ(kubectl("create configmap marker").exitCode, 0);
  testing::Background watch("kubectl --kubeconfig " + kubeconfig_ +
                            " get cm -w --output-watch-events -o jsonpath='{.type} {.object.metadata.name}{\"\\n\"}'");
  ASSERT_TRUE(watch.waitForLine([](const std::string& l) { return l == "ADDED marker"; }, 20s)) << watch.output();
  kubectl("create configmap watched");
  kubectl("label cm watched step=2");
  kubectl("label cm watched step=3 --overwrite");
  kubectl("delete cm watched");
  ASSERT_TRUE(watch.waitForLine([](const std::string& l) { return l == "DELETED watched"; }, 20s)) << watch.output();
  watch.stop(SIGTERM);
  std::vector<std::string> events;
  for (const std::string& l : watch.lines()) {
    if (l.ends_with(" watched")) events.push_back(l);
  }
  EXPECT_EQ(events, (std::vector<std::string>{"ADDED watched", "MODIFIED watched", "MODIFIED watched", "DELETED watched"}));
}

TEST_F(KubectlTest, WatchFromAResourceVersionReplaysEventTypes) {
  std::string list = kubectl("get --raw /api/v1/namespaces/default/configmaps").out;
  size_t at = list.find("\"resourceVersion\":\"");
  ASSERT_NE(at, std::string::npos) << list;
  at += 19;
  std::string rv = list.substr(at, list.find('"', at) - at);
  ASSERT_FALSE(rv.empty());
  testing::writeFile(dir_.file("w.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: replayed\n");
  kubectl("create -f " + dir_.file("w.yaml"));
  ASSERT_EQ(kubectl("label --overwrite=true cm replayed x=y").exitCode, 0);  // a PATCH: MODIFIED
  kubectl("delete cm replayed");
  auto raw = kubectl("get --raw '/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1&resourceVersion=" + rv + "'");
  size_t added = raw.out.find("{\"type\":\"ADDED\"");
  size_t modified = raw.out.find("{\"type\":\"MODIFIED\"");
  size_t deleted = raw.out.find("{\"type\":\"DELETED\"");
  ASSERT_NE(added, std::string::npos) << raw.out;
  ASSERT_NE(modified, std::string::npos) << raw.out;
  ASSERT_NE(deleted, std::string::npos) << raw.out;
  EXPECT_LT(added, modified);
  EXPECT_LT(modified, deleted);
  EXPECT_NE(raw.out.find("\"x\":\"y\"", modified), std::string::npos) << "the MODIFIED event carries the label";
  EXPECT_NE(raw.out.find("\"name\":\"replayed\""), std::string::npos);
  // A resourceVersion from the future is refused.
  auto future = kubectl("get --raw '/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1&resourceVersion=99999'");
  EXPECT_NE(future.out.find("\"type\":\"ERROR\""), std::string::npos) << future.out;
}

TEST_F(KubectlTest, KillNineThenRestartKeepsObjects) {
  std::string manifest;
  for (int i = 0; i < 20; ++i) {
    manifest += "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c" + std::to_string(i) + "\n---\n";
  }
  testing::writeFile(dir_.file("many.yaml"), manifest);
  ASSERT_EQ(kubectl("create -f " + dir_.file("many.yaml")).exitCode, 0);
  stop(SIGKILL);
  start();
  auto names = kubectl("get cm -o name");
  EXPECT_EQ(std::count(names.out.begin(), names.out.end(), '\n'), 20) << names.out;
}

TEST_F(KubectlTest, KillNineDuringWritesLosesNoAcknowledgedObject) {
  std::string server = kubectl("config view -o jsonpath='{.clusters[0].cluster.server}'").out;
  std::string token = testing::readFile(dir_.file("data/admin.token"));
  // Four writers create ConfigMaps one after another and note each name the
  // server acknowledged (201); the server is killed -9 while they write.
  std::vector<std::thread> writers;
  for (int j = 0; j < 4; ++j) {
    writers.emplace_back([&, j] {
      std::string acked = dir_.file("acked." + std::to_string(j));
      testing::run("for i in $(seq 1 100000); do n=w" + std::to_string(j) + "-$i; code=$(curl -sk -o /dev/null -w "
                   "'%{http_code}' -X POST -H 'Authorization: Bearer " + token + "' -H 'Content-Type: application/json' "
                   "-d \"{\\\"metadata\\\":{\\\"name\\\":\\\"$n\\\"}}\" " + server +
                   "/api/v1/namespaces/default/configmaps) || break; [ \"$code\" = 201 ] || break; echo $n >> " + acked +
                   "; done");
    });
  }
  // Killed once the writers are well under way (whatever the machine's speed).
  auto ackedSoFar = [&] {
    size_t n = 0;
    for (int j = 0; j < 4; ++j) {
      std::string a = testing::readFile(dir_.file("acked." + std::to_string(j)));
      n += static_cast<size_t>(std::count(a.begin(), a.end(), '\n'));
    }
    return n;
  };
  EXPECT_TRUE(testing::waitFor([&] { return ackedSoFar() >= 40; }, 60s)) << "the writers never got going";
  stop(SIGKILL);
  for (auto& t : writers) t.join();
  start();
  std::string names = kubectl("get cm -o name").out;
  size_t acknowledged = 0;
  for (int j = 0; j < 4; ++j) {
    std::string acked = testing::readFile(dir_.file("acked." + std::to_string(j)));
    for (size_t pos = 0, nl; (nl = acked.find('\n', pos)) != std::string::npos; pos = nl + 1) {
      std::string name = acked.substr(pos, nl - pos);
      ++acknowledged;
      EXPECT_NE(names.find("configmap/" + name + "\n"), std::string::npos) << name << " was acknowledged, then lost";
    }
  }
  EXPECT_GT(acknowledged, 20u);  // the writers were really writing when the kill came
  // The restarted server takes writes again.
  EXPECT_EQ(kubectl("create configmap after-crash").out, "configmap/after-crash created\n");
}

TEST_F(KubectlTest, TypedCreateCommandsSendProtobufAndItIsUnderstood) {
  // kubectl's `create <kind>` commands encode the object as protobuf.
  EXPECT_EQ(kubectl("create namespace team-b").out, "namespace/team-b created\n");
  EXPECT_EQ(kubectl("create configmap settings --from-literal=color=blue --from-literal=size=2").out,
            "configmap/settings created\n");
  EXPECT_EQ(kubectl("create secret generic creds --from-literal=password=s3cret").out, "secret/creds created\n");
  EXPECT_EQ(kubectl("create serviceaccount robot").out, "serviceaccount/robot created\n");
  EXPECT_EQ(kubectl("create service nodeport web --tcp=80:8080 --node-port=30080").out, "service/web created\n");
  EXPECT_EQ(kubectl("create deployment web --image=nginx:1.27 --port=80 --replicas=0").out,
            "deployment.apps/web created\n");
  EXPECT_EQ(kubectl("create role reader --verb=get,list --resource=pods,configmaps").out,
            "role.rbac.authorization.k8s.io/reader created\n");
  EXPECT_EQ(kubectl("create rolebinding reader --role=reader --user=alice --serviceaccount=default:robot").out,
            "rolebinding.rbac.authorization.k8s.io/reader created\n");
  EXPECT_EQ(kubectl("create ingress web --class=trellis --rule='web.example/app*=web:80,tls=web-tls'").out,
            "ingress.networking.k8s.io/web created\n");

  EXPECT_EQ(kubectl("get configmap settings -o jsonpath='{.data.color} {.data.size}'").out, "blue 2");
  EXPECT_EQ(kubectl("get secret creds -o jsonpath='{.data.password}'").out, "czNjcmV0");  // base64("s3cret")
  auto svc = kubectl("get service web -o jsonpath='{.spec.type} {.spec.ports[0].port} {.spec.ports[0].targetPort} "
                     "{.spec.ports[0].nodePort} {.spec.selector.app}'");
  EXPECT_EQ(svc.out, "NodePort 80 8080 30080 web");
  auto deploy = kubectl("get deployment web -o jsonpath='{.spec.replicas} {.spec.selector.matchLabels.app} "
                        "{.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort}'");
  EXPECT_EQ(deploy.out, "0 web nginx:1.27 80");  // an explicit replicas: 0 survives (a pointer field)
  EXPECT_EQ(kubectl("get role reader -o jsonpath='{.rules[0].apiGroups} {.rules[0].resources} {.rules[0].verbs}'").out,
            R"([""] ["pods","configmaps"] ["get","list"])");
  EXPECT_EQ(kubectl("get rolebinding reader -o jsonpath='{.roleRef.kind}/{.roleRef.name} {.subjects[*].kind}'").out,
            "Role/reader User ServiceAccount");
  EXPECT_EQ(kubectl("get ingress web -o jsonpath='{.spec.ingressClassName} {.spec.rules[0].host} "
                    "{.spec.rules[0].http.paths[0].path} {.spec.rules[0].http.paths[0].pathType} "
                    "{.spec.rules[0].http.paths[0].backend.service.port.number} {.spec.tls[0].secretName}'")
                .out,
            "trellis web.example /app Prefix 80 web-tls");

  // A broken protobuf body is a 400 that changes nothing.
  std::string server = kubectl("config view -o jsonpath='{.clusters[0].cluster.server}'").out;
  std::string token = testing::readFile(dir_.file("data/admin.token"));
  auto bad = testing::run("printf 'k8s\\000\\012\\377' | curl -sk -X POST -H 'Authorization: Bearer " + token +
                          "' -H 'Content-Type: application/vnd.kubernetes.protobuf' --data-binary @- " + server +
                          "/api/v1/namespaces/default/configmaps");
  EXPECT_NE(bad.out.find(R"("reason":"BadRequest")"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("malformed protobuf body"), std::string::npos) << bad.out;
  EXPECT_EQ(kubectl("get configmaps -o name").out, "configmap/settings\n");
}

TEST_F(KubectlTest, RbacDecidesAndAuthCanIAnswers) {
  stop(SIGTERM);
  testing::writeFile(dir_.file("tokens.csv"), "alice-token,alice,1001,\"devs\"\nbob-token,bob,1002\n");
  extraArgs_ = {"--tokens-file", dir_.file("tokens.csv")};
  start();
  auto as = [&](const std::string& token, const std::string& args) { return kubectl("--token=" + token + " " + args); };
  // The admin is in system:masters; the default policy exists.
  EXPECT_EQ(kubectl("auth can-i '*' '*'").out, "yes\n");
  auto roles = kubectl("get clusterroles -o name");
  for (const char* r : {"cluster-admin", "admin", "edit", "view", "system:discovery", "system:basic-user"}) {
    EXPECT_NE(roles.out.find(std::string("clusterrole.rbac.authorization.k8s.io/") + r + "\n"), std::string::npos)
        << roles.out;
  }
  // Authenticated, but nothing granted yet beyond discovery and self-review.
  EXPECT_EQ(as("alice-token", "auth can-i list pods").out, "no\n");
  auto denied = as("alice-token", "get pods");
  EXPECT_NE(denied.exitCode, 0);
  EXPECT_NE(denied.out.find("Error from server (Forbidden): pods is forbidden: User \"alice\" cannot list resource "
                            "\"pods\" in API group \"\" in the namespace \"default\""),
            std::string::npos)
      << denied.out;
  // view in default, via a RoleBinding to the ClusterRole; edit for the devs group on ingresses' namespace team.
  ASSERT_EQ(kubectl("create rolebinding alice-view --clusterrole=view --user=alice").exitCode, 0);
  ASSERT_EQ(kubectl("create namespace team").exitCode, 0);
  ASSERT_EQ(kubectl("create rolebinding devs-edit -n team --clusterrole=edit --group=devs").exitCode, 0);
  EXPECT_EQ(as("alice-token", "auth can-i list pods").out, "yes\n");
  EXPECT_EQ(as("alice-token", "get pods").out, "No resources found in default namespace.\n");
  EXPECT_EQ(as("alice-token", "auth can-i create configmaps").out, "no\n");
  EXPECT_EQ(as("alice-token", "auth can-i create configmaps -n team").out, "yes\n");
  EXPECT_EQ(as("alice-token", "auth can-i list pods -n kube-system").out, "no\n");
  EXPECT_EQ(as("alice-token", "auth can-i list secrets").out, "no\n");  // view leaves secrets out
  EXPECT_EQ(as("alice-token", "create configmap c1 -n team").out, "configmap/c1 created\n");
  auto clusterScoped = as("alice-token", "get nodes");
  EXPECT_NE(clusterScoped.out.find("User \"alice\" cannot list resource \"nodes\" in API group \"\" at the cluster "
                                   "scope"),
            std::string::npos)
      << clusterScoped.out;
  // bob has only what every authenticated user has.
  EXPECT_EQ(as("bob-token", "auth can-i get pods").out, "no\n");
  EXPECT_EQ(as("bob-token", "get --raw /readyz").out, "ok");
  EXPECT_EQ(as("bob-token", "auth can-i get /healthz").out, "yes\n");
  EXPECT_EQ(as("bob-token", "auth can-i get /metrics").out, "no\n");
  // A Role with resourceNames covers only those names.
  ASSERT_EQ(kubectl("create role one-cm --verb=get --resource=configmaps --resource-name=settings").exitCode, 0);
  ASSERT_EQ(kubectl("create rolebinding bob-one-cm --role=one-cm --user=bob").exitCode, 0);
  EXPECT_EQ(as("bob-token", "auth can-i get configmap/settings").out, "yes\n");
  EXPECT_EQ(as("bob-token", "auth can-i get configmap/other").out, "no\n");
  EXPECT_EQ(as("bob-token", "auth can-i list configmaps").out, "no\n");
  // Removing the binding takes the permission away.
  ASSERT_EQ(kubectl("delete rolebinding alice-view").exitCode, 0);
  EXPECT_EQ(as("alice-token", "auth can-i list pods").out, "no\n");
  // can-i --list shows what alice holds in team.
  auto list = as("alice-token", "auth can-i --list -n team");
  EXPECT_NE(list.out.find("configmaps "), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("configmaps                                      []                  []               [get list watch create delete deletecollection patch update]"), std::string::npos) << list.out;
}

TEST_F(KubectlTest, WideTablesAndDescribeForTheIssueKinds) {
  testing::writeFile(dir_.file("objs.yaml"), R"(apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {node-role.kubernetes.io/control-plane: ""}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, labels: {app: web}}
spec:
  nodeName: node-a
  containers: [{name: app, image: "nginx:1.27", ports: [{containerPort: 8080}]}]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: fast, annotations: {storageclass.kubernetes.io/is-default-class: "true"}}
provisioner: csi.trellis.dev
allowVolumeExpansion: true
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: fast
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: trellis
  rules:
  - host: web.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
)");
  ASSERT_EQ(kubectl("apply -f " + dir_.file("objs.yaml")).exitCode, 0);
  ASSERT_EQ(kubectl("patch node node-a --subresource=status --type=merge -p '{\"status\":{\"conditions\":[{\"type\":"
                    "\"Ready\",\"status\":\"True\"}],\"nodeInfo\":{\"kubeletVersion\":\"v1.32.0\",\"osImage\":"
                    "\"Debian 12\",\"kernelVersion\":\"6.1\",\"containerRuntimeVersion\":\"containerd://1.7\"},"
                    "\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"10.0.0.1\"}]}}'")
                .exitCode,
            0);
  ASSERT_EQ(kubectl("patch pod web-0 --subresource=status --type=merge -p '{\"status\":{\"phase\":\"Running\","
                    "\"podIP\":\"10.244.0.5\",\"containerStatuses\":[{\"name\":\"app\",\"ready\":true,"
                    "\"restartCount\":2,\"image\":\"nginx:1.27\",\"imageID\":\"\",\"state\":{\"running\":{}}}]}}'")
                .exitCode,
            0);
  auto lines = [](const std::string& out) {
    std::vector<std::string> v;
    for (size_t pos = 0, nl; (nl = out.find('\n', pos)) != std::string::npos; pos = nl + 1) {
      v.push_back(out.substr(pos, nl - pos));
    }
    return v;
  };
  auto node = lines(kubectl("get nodes -o wide").out);
  ASSERT_EQ(node.size(), 2u);
  EXPECT_EQ(node[0], "NAME     STATUS   ROLES           AGE   VERSION   INTERNAL-IP   EXTERNAL-IP   OS-IMAGE    "
                     "KERNEL-VERSION   CONTAINER-RUNTIME");
  EXPECT_NE(node[1].find("node-a   Ready    control-plane   "), std::string::npos) << node[1];
  EXPECT_NE(node[1].find("v1.32.0   10.0.0.1      <none>        Debian 12   6.1              containerd://1.7"),
            std::string::npos)
      << node[1];
  auto pod = lines(kubectl("get pods -o wide").out);
  ASSERT_EQ(pod.size(), 2u);
  EXPECT_EQ(pod[0], "NAME    READY   STATUS    RESTARTS   AGE   IP           NODE     NOMINATED NODE   READINESS GATES");
  EXPECT_EQ(pod[1].substr(0, 37), "web-0   1/1     Running   2          ") << pod[1];
  EXPECT_NE(pod[1].find("10.244.0.5   node-a   <none>           <none>"), std::string::npos) << pod[1];
  auto svc = lines(kubectl("get svc web -o wide").out);
  EXPECT_EQ(svc[0], "NAME   TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE   SELECTOR");
  EXPECT_NE(svc[1].find("<none>        80/TCP    "), std::string::npos) << svc[1];
  EXPECT_TRUE(svc[1].ends_with("app=web")) << svc[1];
  auto pvc = lines(kubectl("get pvc").out);
  EXPECT_EQ(pvc[0], "NAME   STATUS    VOLUME   CAPACITY   ACCESS MODES   STORAGECLASS   VOLUMEATTRIBUTESCLASS   AGE");
  EXPECT_EQ(pvc[1].substr(0, 77), "data   Pending                                      fast           <unset>   ")
      << pvc[1];
  EXPECT_EQ(lines(kubectl("get sc").out)[1].substr(0, 35), "fast (default)   csi.trellis.dev   ");
  auto ing = lines(kubectl("get ingress").out);
  EXPECT_EQ(ing[0], "NAME   CLASS     HOSTS         ADDRESS   PORTS   AGE");
  EXPECT_EQ(ing[1].substr(0, 48), "web    trellis   web.example             80     ");

  // describe, for each kind the issue names.
  auto dn = kubectl("describe node node-a").out;
  EXPECT_NE(dn.find("Roles:              control-plane"), std::string::npos) << dn;
  EXPECT_NE(dn.find("Kubelet Version:            v1.32.0"), std::string::npos) << dn;
  EXPECT_NE(dn.find("default                     web-0"), std::string::npos) << dn;  // non-terminated pods
  auto dp = kubectl("describe pod web-0").out;
  EXPECT_NE(dp.find("Status:       Running"), std::string::npos) << dp;
  EXPECT_NE(dp.find("IP:           10.244.0.5"), std::string::npos) << dp;
  EXPECT_NE(dp.find("    Image:          nginx:1.27"), std::string::npos) << dp;
  EXPECT_NE(dp.find("    Restart Count:  2"), std::string::npos) << dp;
  auto dpvc = kubectl("describe pvc data").out;
  EXPECT_NE(dpvc.find("StorageClass:  fast"), std::string::npos) << dpvc;
  EXPECT_NE(dpvc.find("Status:        Pending"), std::string::npos) << dpvc;  // set by the server on create
  EXPECT_NE(dpvc.find("Finalizers:    [kubernetes.io/pvc-protection]"), std::string::npos) << dpvc;
  EXPECT_NE(dpvc.find("Used By:       <none>"), std::string::npos) << dpvc;
  auto di = kubectl("describe ingress web").out;
  EXPECT_NE(di.find("Ingress Class:    trellis"), std::string::npos) << di;
  EXPECT_NE(di.find("web.example"), std::string::npos) << di;
  EXPECT_NE(di.find("/   web:80"), std::string::npos) << di;

  // annotate, then delete -f removes every object of the file.
  EXPECT_EQ(kubectl("annotate pvc data team=storage").out, "persistentvolumeclaim/data annotated\n");
  EXPECT_EQ(kubectl("get pvc data -o jsonpath='{.metadata.annotations.team}'").out, "storage");
  auto del = kubectl("delete -f " + dir_.file("objs.yaml") + " --wait=false");
  EXPECT_NE(del.out.find("ingress.networking.k8s.io \"web\" deleted"), std::string::npos) << del.out;
  EXPECT_EQ(kubectl("get pods,svc,ingress -o name").out, "service/kubernetes\n");
}

// A PVC whose size is no quantity once aborted the server (std::stoi threw
// in quantity parsing). Now it is the 400 kube-apiserver's decoder gives,
// nothing is stored, and the server keeps serving.
TEST_F(KubectlTest, MalformedQuantitiesAreRefusedAndTheServerLives) {
  auto pvc = [&](const std::string& name, const std::string& size) {
    testing::writeFile(dir_.file(name + ".yaml"), "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: " + name +
                                                      "}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: "
                                                      "{storage: \"" + size + "\"}}}\n");
    return kubectl("create -f " + dir_.file(name + ".yaml"));
  };
  const std::string prefix = "Error from server (BadRequest): error when creating \"" + dir_.file("a.yaml") +
                             "\": PersistentVolumeClaim in version \"v1\" cannot be handled as a PersistentVolumeClaim: ";
  auto a = pvc("a", "1e-");
  EXPECT_EQ(a.out, prefix + "unable to parse quantity's suffix\n");
  auto b = pvc("a", "1.5.5Gi");
  EXPECT_EQ(b.out, prefix + "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'\n");
  auto c = pvc("a", "-1Gi");
  EXPECT_NE(c.out.find("spec.resources.requests[storage]: Invalid value: \"-1Gi\": must be greater than zero"),
            std::string::npos) << c.out;
  EXPECT_EQ(kubectl("get pvc -o name").out, "");  // nothing stored
  EXPECT_EQ(kubectl("get --raw /readyz").out, "ok");  // still serving
  // What apimachinery accepts, the server accepts: a huge exponent is capped, not fatal.
  EXPECT_EQ(pvc("huge", "1e99999999999").out, "persistentvolumeclaim/huge created\n");
  // The same through a patch and through a Pod's container limits.
  auto patch = kubectl("patch pvc huge --type=merge -p '{\"spec\":{\"resources\":{\"requests\":{\"storage\":\"1e-\"}}}}'");
  EXPECT_NE(patch.out.find("cannot be handled as a PersistentVolumeClaim: unable to parse quantity's suffix"),
            std::string::npos) << patch.out;
  testing::writeFile(dir_.file("pod.yaml"), R"(apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {containers: [{name: c, image: busybox, resources: {limits: {memory: "1..Gi"}}}]}
)");
  auto pod = kubectl("create -f " + dir_.file("pod.yaml"));
  EXPECT_NE(pod.out.find("Pod in version \"v1\" cannot be handled as a Pod: quantities must match"), std::string::npos)
      << pod.out;
  EXPECT_EQ(kubectl("get --raw /readyz").out, "ok");
}

TEST_F(KubectlTest, IngressAndPvcRulesAreEnforced) {
  testing::writeFile(dir_.file("bad-ingress.yaml"), R"(apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad}
spec:
  rules:
  - http:
      paths:
      - {path: api, backend: {service: {name: web, port: {number: 80}}}}
)");
  auto ing = kubectl("apply -f " + dir_.file("bad-ingress.yaml"));
  EXPECT_NE(ing.exitCode, 0);
  EXPECT_NE(ing.out.find("The Ingress \"bad\" is invalid: spec.rules[0].http.paths[0].pathType: Required value: "
                         "pathType must be specified"),
            std::string::npos)
      << ing.out;
  EXPECT_EQ(kubectl("get ingress -o name").out, "");  // nothing stored

  testing::writeFile(dir_.file("pvc.yaml"), R"(apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: fixed}
provisioner: csi.trellis.dev
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: growable}
provisioner: csi.trellis.dev
allowVolumeExpansion: true
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: a}
spec: {accessModes: [ReadWriteOnce], storageClassName: fixed, resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: b}
spec: {accessModes: [ReadWriteOnce], storageClassName: growable, resources: {requests: {storage: 1Gi}}}
)");
  ASSERT_EQ(kubectl("apply -f " + dir_.file("pvc.yaml")).exitCode, 0);
  // Unbound claims cannot be resized at all.
  auto unbound = kubectl("patch pvc b --type=merge -p '{\"spec\":{\"resources\":{\"requests\":{\"storage\":\"2Gi\"}}}}'");
  EXPECT_NE(unbound.out.find("spec: Forbidden: spec is immutable after creation except resources.requests"),
            std::string::npos)
      << unbound.out;
  for (const char* c : {"a", "b"}) {
    ASSERT_EQ(kubectl(std::string("patch pvc ") + c +
                      " --subresource=status --type=merge -p '{\"status\":{\"phase\":\"Bound\",\"capacity\":{\"storage\":"
                      "\"1Gi\"}}}'")
                  .exitCode,
              0);
  }
  auto fixed = kubectl("patch pvc a --type=merge -p '{\"spec\":{\"resources\":{\"requests\":{\"storage\":\"2Gi\"}}}}'");
  EXPECT_NE(fixed.out.find("Error from server (Forbidden): persistentvolumeclaims \"a\" is forbidden: only dynamically "
                           "provisioned pvc can be resized and the storageclass that provisions the pvc must support "
                           "resize"),
            std::string::npos)
      << fixed.out;
  EXPECT_EQ(kubectl("patch pvc b --type=merge -p '{\"spec\":{\"resources\":{\"requests\":{\"storage\":\"2Gi\"}}}}'").out,
            "persistentvolumeclaim/b patched\n");
  auto shrink = kubectl("patch pvc b --type=merge -p '{\"spec\":{\"resources\":{\"requests\":{\"storage\":\"512Mi\"}}}}'");
  EXPECT_NE(shrink.out.find("spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"),
            std::string::npos)
      << shrink.out;
  EXPECT_EQ(kubectl("get pvc a b -o jsonpath='{.items[*].spec.resources.requests.storage}'").out, "1Gi 2Gi");
}

TEST_F(KubectlTest, WatchTablesBookmarksAndExactLists) {
  // kubectl get -w: rows of a Table, one header.
  ASSERT_EQ(kubectl("create configmap w0").exitCode, 0);
  testing::Background watcher("kubectl --kubeconfig " + kubeconfig_ + " get cm -w");
  ASSERT_TRUE(watcher.waitForLine([](const std::string& l) { return l.starts_with("w0 "); }, 20s)) << watcher.output();
  ASSERT_EQ(kubectl("create configmap w1 --from-literal=a=1 --from-literal=b=2").exitCode, 0);
  ASSERT_TRUE(watcher.waitForLine([](const std::string& l) { return l.starts_with("w1 "); }, 20s)) << watcher.output();
  watcher.stop(SIGTERM);
  {
    std::vector<std::string> rows = watcher.lines();
    ASSERT_GE(rows.size(), 3u) << ::testing::PrintToString(rows);
    EXPECT_EQ(rows[0], "NAME   DATA   AGE");
    EXPECT_EQ(rows.back().substr(0, 14), "w1     2      ") << ::testing::PrintToString(rows);
    EXPECT_EQ(std::count(rows.begin(), rows.end(), "NAME   DATA   AGE"), 1);
  }
  std::string list = kubectl("get --raw /api/v1/namespaces/default/configmaps").out;
  size_t at = list.find("\"resourceVersion\":\"") + 19;
  std::string rv = list.substr(at, list.find('"', at) - at);
  ASSERT_EQ(kubectl("create configmap w2").exitCode, 0);
  // A list at the exact earlier revision does not have w2; a current one does.
  auto exact = kubectl("get --raw '/api/v1/namespaces/default/configmaps?resourceVersion=" + rv +
                       "&resourceVersionMatch=Exact'").out;
  EXPECT_NE(exact.find("\"name\":\"w1\""), std::string::npos) << exact;
  EXPECT_EQ(exact.find("\"name\":\"w2\""), std::string::npos) << exact;
  EXPECT_NE(exact.find("\"resourceVersion\":\"" + rv + "\""), std::string::npos) << exact;
  auto tooNew = kubectl("get --raw '/api/v1/namespaces/default/configmaps?resourceVersion=99999999'");
  EXPECT_NE(tooNew.out.find("Too large resource version"), std::string::npos) << tooNew.out;
  auto badMatch = kubectl("get --raw '/api/v1/namespaces/default/configmaps?resourceVersionMatch=Exact'");
  EXPECT_NE(badMatch.out.find("resourceVersionMatch is forbidden unless resourceVersion is provided"), std::string::npos)
      << badMatch.out;
  // Watch with bookmarks: initial events, the initial-events-end bookmark, and
  // a last bookmark at the current revision when the watch times out.
  auto watch = kubectl("get --raw '/api/v1/namespaces/default/configmaps?watch=1&allowWatchBookmarks=true&"
                       "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0&timeoutSeconds=1'")
                   .out;
  size_t w1 = watch.find("\"name\":\"w1\"");
  size_t w2 = watch.find("\"name\":\"w2\"");
  size_t end = watch.find("\"k8s.io/initial-events-end\":\"true\"");
  ASSERT_NE(end, std::string::npos) << watch;
  EXPECT_LT(w1, end);
  EXPECT_LT(w2, end);
  std::string last = watch.substr(watch.rfind("{\"type\""));
  EXPECT_EQ(last.substr(0, 19), "{\"type\":\"BOOKMARK\",") << watch;
  std::string now = kubectl("get --raw /api/v1/namespaces/default/configmaps").out;
  at = now.find("\"resourceVersion\":\"") + 19;
  EXPECT_NE(last.find("\"resourceVersion\":\"" + now.substr(at, now.find('"', at) - at) + "\""), std::string::npos)
      << last;
}

TEST_F(KubectlTest, BindingAssignsAPodToANodeOnce) {
  testing::writeFile(dir_.file("pod.yaml"),
                     "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: busybox}]\n");
  ASSERT_EQ(kubectl("apply -f " + dir_.file("pod.yaml")).exitCode, 0);
  std::string server = kubectl("config view -o jsonpath='{.clusters[0].cluster.server}'").out;
  std::string token = testing::readFile(dir_.file("data/admin.token"));
  auto bind = [&](const std::string& node) {
    return testing::run("curl -sk -w ' %{http_code}' -X POST -H 'Authorization: Bearer " + token +
                        "' -H 'Content-Type: application/json' -d '{\"apiVersion\":\"v1\",\"kind\":\"Binding\","
                        "\"metadata\":{\"name\":\"p\"},\"target\":{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"name\":\"" +
                        node + "\"}}' " + server + "/api/v1/namespaces/default/pods/p/binding")
        .out;
  };
  auto first = bind("node-a");
  EXPECT_NE(first.find(R"("status":"Success")"), std::string::npos) << first;
  EXPECT_TRUE(first.ends_with(" 201")) << first;
  EXPECT_EQ(kubectl("get pods --field-selector spec.nodeName=node-a -o name").out, "pod/p\n");
  auto again = bind("node-b");
  EXPECT_TRUE(again.ends_with(" 409")) << again;
  EXPECT_NE(again.find("pod p is already assigned to node \\\"node-a\\\""), std::string::npos) << again;
  EXPECT_EQ(kubectl("get pod p -o jsonpath='{.spec.nodeName}'").out, "node-a");
}

TEST_F(KubectlTest, InsecurePortOnlyWhenAskedAndOnlyOnLoopback) {
  std::string port = std::to_string(testing::freeTcpPort());
  std::string url = "http://127.0.0.1:" + port + "/api/v1/namespaces/default/configmaps";
  EXPECT_NE(testing::run("curl -sS -o /dev/null " + url).exitCode, 0);  // not served by default
  stop(SIGTERM);
  extraArgs_ = {"--insecure-port", port};
  start();
  EXPECT_EQ(testing::run("curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d "
                         "'{\"metadata\":{\"name\":\"via-insecure\"}}' " + url).out,
            "201");
  EXPECT_EQ(kubectl("get cm via-insecure -o name").out, "configmap/via-insecure\n");
  // The secure port still wants credentials.
  std::string server = kubectl("config view -o jsonpath='{.clusters[0].cluster.server}'").out;
  EXPECT_EQ(testing::run("curl -sk -o /dev/null -w '%{http_code}' " + server + "/api/v1/namespaces").out, "401");
}

TEST_F(KubectlTest, ScaleSubresourceAndServerDryRun) {
  ASSERT_EQ(kubectl("create deployment web --image=nginx:1.27").exitCode, 0);
  EXPECT_EQ(kubectl("scale deployment web --replicas=3").out, "deployment.apps/web scaled\n");
  EXPECT_EQ(kubectl("get deployment web -o jsonpath='{.spec.replicas}'").out, "3");
  auto scale = kubectl("get --raw /apis/apps/v1/namespaces/default/deployments/web/scale").out;
  EXPECT_NE(scale.find(R"("kind":"Scale","apiVersion":"autoscaling/v1")"), std::string::npos) << scale;
  EXPECT_NE(scale.find(R"("spec":{"replicas":3},"status":{"replicas":0,"selector":"app=web"})"), std::string::npos) << scale;
  // Server-side dry runs validate and answer, and store nothing.
  EXPECT_EQ(kubectl("scale deployment web --replicas=5 --dry-run=server").out, "deployment.apps/web scaled (server dry run)\n");
  EXPECT_EQ(kubectl("create configmap ghost --dry-run=server").out, "configmap/ghost created (server dry run)\n");
  EXPECT_EQ(kubectl("label deployment web tier=front --dry-run=server").out, "deployment.apps/web labeled (server dry run)\n");
  EXPECT_EQ(kubectl("delete deployment web --dry-run=server").out, "deployment.apps \"web\" deleted (server dry run)\n");
  EXPECT_EQ(kubectl("get deployment web -o jsonpath='{.spec.replicas} {.metadata.labels.tier}'").out, "3 ");
  EXPECT_NE(kubectl("get configmap ghost").exitCode, 0);
  auto invalid = kubectl("create deployment bad --image= --dry-run=server");
  EXPECT_NE(invalid.exitCode, 0);
  // kubectl diff runs on server dry runs: it shows the change and changes nothing.
  testing::writeFile(dir_.file("cm.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: diffed}\ndata: {a: '1'}\n");
  auto diff = kubectl("diff -f " + dir_.file("cm.yaml"));
  EXPECT_NE(diff.out.find("+  a: \"1\""), std::string::npos) << diff.out;
  EXPECT_NE(kubectl("get configmap diffed").exitCode, 0);
}

TEST_F(KubectlTest, ServerSideApplyCreatesThenMerges) {
  testing::writeFile(dir_.file("ssa.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  labels: {a: b}\n"
                                            "data:\n  k: v\n");
  EXPECT_EQ(kubectl("apply --server-side -f " + dir_.file("ssa.yaml")).out, "configmap/ssa serverside-applied\n");
  testing::writeFile(dir_.file("ssa.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  k: w\n  j: x\n");
  EXPECT_EQ(kubectl("apply --server-side -f " + dir_.file("ssa.yaml")).out, "configmap/ssa serverside-applied\n");
  // Merged into what is there (fields this manager stops applying are kept: no field ownership yet).
  EXPECT_EQ(kubectl("get cm ssa -o jsonpath='{.data.k}{.data.j} {.metadata.labels.a}'").out, "wx b");
  auto invalid = kubectl("apply --server-side -f " + dir_.file("ssa.yaml") + " --field-manager=''");
  EXPECT_NE(invalid.exitCode, 0);
}

// Issue 13's kinds through kubectl's typed (protobuf) create commands, their
// defaults, validation and columns; the eviction subresource with a budget.
TEST_F(KubectlTest, JobsCronJobsBudgetsAndEviction) {
  auto job = kubectl("create job once --image=busybox -- echo hi");
  ASSERT_EQ(job.exitCode, 0) << job.out;
  EXPECT_EQ(kubectl("get job once -o jsonpath='{.spec.completions}/{.spec.parallelism}/{.spec.backoffLimit}/"
                    "{.spec.template.spec.restartPolicy}'").out,
            "1/1/6/Never");
  std::string uid = kubectl("get job once -o jsonpath='{.metadata.uid}'").out;
  EXPECT_EQ(kubectl("get job once -o jsonpath='{.spec.selector.matchLabels.batch\\.kubernetes\\.io/controller-uid}'").out, uid);
  EXPECT_EQ(kubectl("get job once -o jsonpath='{.spec.template.metadata.labels.job-name}'").out, "once");
  auto cj = kubectl("create cronjob nightly --image=busybox --schedule='0 3 * * *' -- date");
  ASSERT_EQ(cj.exitCode, 0) << cj.out;
  EXPECT_EQ(kubectl("get cj nightly -o jsonpath='{.spec.concurrencyPolicy}/{.spec.successfulJobsHistoryLimit}/"
                    "{.spec.failedJobsHistoryLimit}/{.spec.suspend}'").out,
            "Allow/3/1/false");
  auto manual = kubectl("create job by-hand --from=cronjob/nightly");
  ASSERT_EQ(manual.exitCode, 0) << manual.out;
  EXPECT_EQ(kubectl("get job by-hand -o jsonpath='{.metadata.annotations.cronjob\\.kubernetes\\.io/instantiate}/"
                    "{.metadata.ownerReferences[0].kind}'").out,
            "manual/CronJob");
  auto pdb = kubectl("create pdb web --selector=app=web --min-available=1");
  ASSERT_EQ(pdb.exitCode, 0) << pdb.out;
  auto table = kubectl("get jobs,cronjobs,pdb");
  EXPECT_NE(table.out.find("STATUS    COMPLETIONS   DURATION   AGE"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("job.batch/once      Running   0/1"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("cronjob.batch/nightly   0 3 * * *   <none>     false     0        <none>"), std::string::npos)
      << table.out;
  EXPECT_NE(table.out.find("MIN AVAILABLE   MAX UNAVAILABLE   ALLOWED DISRUPTIONS"), std::string::npos) << table.out;

  // Validation as kube-apiserver words it; nothing is stored.
  auto bad = kubectl("create cronjob broken --image=busybox --schedule='61 * * * *'");
  EXPECT_NE(bad.out.find("spec.schedule: Invalid value: \"61 * * * *\""), std::string::npos) << bad.out;
  testing::writeFile(dir_.file("bad.yaml"), R"(apiVersion: batch/v1
kind: Job
metadata: {name: forever}
spec:
  template:
    spec:
      containers: [{name: a, image: busybox}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: both}
spec: {minAvailable: 1, maxUnavailable: 1, selector: {matchLabels: {a: b}}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: zoned}
spec:
  schedule: "@daily"
  timeZone: Mars/Olympus_Mons
  jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: a, image: busybox}]}}}}
)");
  auto invalid = kubectl("apply -f " + dir_.file("bad.yaml"));
  EXPECT_NE(invalid.out.find(R"(spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", "Never")"),
            std::string::npos) << invalid.out;
  EXPECT_NE(invalid.out.find("minAvailable and maxUnavailable cannot be both set"), std::string::npos) << invalid.out;
  EXPECT_NE(invalid.out.find(R"(spec.timeZone: Invalid value: "Mars/Olympus_Mons": unknown time zone Mars/Olympus_Mons)"),
            std::string::npos) << invalid.out;
  EXPECT_EQ(kubectl("get job forever pdb both cj zoned --ignore-not-found -o name").out, "");

  // Eviction: a running, ready pod under a budget that allows one disruption.
  testing::writeFile(dir_.file("pods.yaml"), R"(apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: a, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: a, image: busybox}]}
)");
  ASSERT_EQ(kubectl("apply -f " + dir_.file("pods.yaml")).exitCode, 0);
  for (const char* p : {"web-1", "web-2"}) {
    ASSERT_EQ(kubectl(std::string("patch pod ") + p + " --subresource=status --type=merge -p "
                      "'{\"status\":{\"phase\":\"Running\",\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}'").exitCode, 0);
  }
  std::string server = kubectl("config view -o jsonpath='{.clusters[0].cluster.server}'").out;
  std::string token = testing::readFile(dir_.file("data/admin.token"));
  auto evict = [&](const std::string& pod) {
    return testing::run("curl -sk -w ' %{http_code}' -X POST -H 'Authorization: Bearer " + token +
                        "' -H 'Content-Type: application/json' -d '{\"apiVersion\":\"policy/v1\",\"kind\":\"Eviction\","
                        "\"metadata\":{\"name\":\"" + pod + "\"}}' " + server + "/api/v1/namespaces/default/pods/" + pod +
                        "/eviction").out;
  };
  auto unprocessed = evict("web-1");  // the disruption controller has not observed the budget
  EXPECT_TRUE(unprocessed.ends_with(" 429")) << unprocessed;
  EXPECT_NE(unprocessed.find("The disruption budget web is still being processed by the server."), std::string::npos)
      << unprocessed;
  ASSERT_EQ(kubectl("patch pdb web --subresource=status --type=merge -p '{\"status\":{\"observedGeneration\":1,"
                    "\"disruptionsAllowed\":1,\"currentHealthy\":2,\"desiredHealthy\":1,\"expectedPods\":2}}'").exitCode, 0);
  auto first = evict("web-1");
  EXPECT_TRUE(first.ends_with(" 201")) << first;
  EXPECT_NE(first.find(R"("status":"Success")"), std::string::npos) << first;
  EXPECT_EQ(kubectl("get pdb web -o jsonpath='{.status.disruptionsAllowed}'").out, "0");
  EXPECT_NE(kubectl("get pdb web -o jsonpath='{.status.disruptedPods}'").out.find("web-1"), std::string::npos);
  auto second = evict("web-2");
  EXPECT_TRUE(second.ends_with(" 429")) << second;
  EXPECT_NE(second.find(R"({"reason":"DisruptionBudget","message":"The disruption budget web needs 1 healthy pods and has 2 currently"})"),
            std::string::npos) << second;
  EXPECT_EQ(kubectl("get pods -o name").out, "pod/web-2\n");
  auto wrongName = evict("web-2").find("429");
  EXPECT_NE(wrongName, std::string::npos);
  // Discovery names the subresource as kubectl drain looks for it.
  auto discovery = kubectl("get --raw /api/v1");
  EXPECT_NE(discovery.out.find(R"("name":"pods/eviction","singularName":"","namespaced":true,"group":"policy","version":"v1","kind":"Eviction")"),
            std::string::npos) << discovery.out;
}

}  // namespace
}  // namespace trellis::apiserver
