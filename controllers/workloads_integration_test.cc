// The workload controllers (issue 13) against a real trellis-apiserver
// process, driven by kubectl as users drive them. Until local mode's node
// agent runs pods, common/testing's kubelet stand-in writes what a kubelet
// would through pods/status (Running and Ready; by image "never-ready" or
// "exit-N"). The same tests are meant to run against the real node agent
// later: they only look at the API.
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <thread>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/kube/client.h"
#include "common/kube/informer.h"
#include "common/kube/object.h"
#include "common/testing/apiserver_process.h"
#include "common/testing/background.h"
#include "common/testing/kubelet_stand_in.h"
#include "common/testing/testing.h"

namespace trellis::controllers {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
namespace res = kube::resources;

constexpr auto kWait = 60s;

int lines(const std::string& text) { return static_cast<int>(std::count(text.begin(), text.end(), '\n')); }

class WorkloadsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.start()) << server_.log();
    auto cfg = kube::loadKubeconfig({server_.kubeconfig()});
    ASSERT_TRUE(cfg);
    auto c = kube::Client::create(*cfg, {.qps = 0});
    ASSERT_TRUE(c);
    client_ = std::move(*c);
    kubelet_ = std::make_unique<testing::KubeletStandIn>(*client_);
    for (int i = 1; i <= 3; ++i) {
      create(fmt::format("apiVersion: v1\nkind: Node\nmetadata: {{name: n{0}, labels: {{kubernetes.io/hostname: n{0}}}}}\n"
                         "status: {{allocatable: {{cpu: \"64\", memory: 64Gi, pods: \"500\"}}}}\n",
                         i));
    }
    startControllers();
  }

  void TearDown() override {
    if (controllers_) {
      controllers_->stop(SIGTERM);
      log_ += controllers_->output();
    }
    kubelet_.reset();
    if (HasFailure()) fmt::print("---- trellis-controllers log (tail):\n{}\n", log_.substr(log_.size() > 8000 ? log_.size() - 8000 : 0));
  }

  void startControllers(const std::string& extra = "") {
    if (controllers_) {
      controllers_->stop(SIGTERM);
      log_ += controllers_->output();
    }
    // No node agent renews Node leases here: nodelifecycle would call every node lost.
    controllers_ = std::make_unique<testing::Background>(
        fmt::format("exec {} --kubeconfig {} --leader-elect=false --controllers '*,-nodelifecycle' --job-pod-failure-backoff 0.05 "
                    "--cronjob-clock-file {} {} 2>&1",
                    TRELLIS_CONTROLLERS_BIN, server_.kubeconfig(), clockFile(), extra));
    ASSERT_TRUE(controllers_->waitForLine([](const std::string& l) { return l.find("caches synced") != std::string::npos; }, kWait))
        << controllers_->output();
  }
  void killControllers() {
    controllers_->stop(SIGKILL);
    log_ += controllers_->output();
    controllers_.reset();
  }

  testing::CommandResult kubectl(const std::string& args) {
    return testing::run("kubectl --kubeconfig " + server_.kubeconfig() + " " + args);
  }
  std::string get(const std::string& args) { return kubectl("get " + args).out; }
  std::string clockFile() { return dir_.file("clock"); }
  // kubectl create -f of a YAML text.
  void create(const std::string& yaml) {
    std::string file = dir_.file(fmt::format("object-{}.yaml", ++files_));
    testing::writeFile(file, yaml);
    auto r = kubectl("create -f " + file);
    ASSERT_EQ(r.exitCode, 0) << r.out << yaml;
  }

  template <typename F>
  bool eventually(F f, std::chrono::milliseconds timeout = kWait) {
    return testing::waitFor(f, timeout);
  }

  testing::TempDir dir_;
  testing::ApiServerProcess server_{TRELLIS_APISERVER_BIN, dir_.path()};
  std::unique_ptr<kube::Client> client_;
  std::unique_ptr<testing::KubeletStandIn> kubelet_;
  std::unique_ptr<testing::Background> controllers_;
  std::string log_;
  int files_ = 0;
};

// Counts, on every pod event, the ready pods of one app (and all its pods),
// keeping the lowest ready and the highest total seen.
class PodWatch {
 public:
  PodWatch(kube::Client& client, std::string app) : app_(std::move(app)), pods_(client, res::kPods) {
    auto count = [this] {
      int64_t ready = 0, total = 0;
      for (const kube::ObjectPtr& p : pods_.list()) {
        if (kube::labels(*p)["app"] != app_ || kube::beingDeleted(*p)) continue;
        ++total;
        if (const json::array* cs = kube::array(*p, {"status", "conditions"})) {
          for (const json::value& c : *cs) {
            ready += c.is_object() && kube::str(c.get_object(), {"type"}) == "Ready" &&
                     kube::str(c.get_object(), {"status"}) == "True";
          }
        }
      }
      std::lock_guard g(mu_);
      if (armed_) minReady_ = std::min(minReady_, ready);
      maxTotal_ = std::max(maxTotal_, total);
    };
    pods_.addHandler({.onAdd = [count](const kube::ObjectPtr&) { count(); },
                      .onUpdate = [count](const kube::ObjectPtr&, const kube::ObjectPtr&) { count(); },
                      .onDelete = [count](const kube::ObjectPtr&) { count(); }});
    pods_.start();
    pods_.waitForSync(10s);
  }
  void arm() {
    std::lock_guard g(mu_);
    armed_ = true;
  }
  int64_t minReady() {
    std::lock_guard g(mu_);
    return minReady_;
  }
  int64_t maxTotal() {
    std::lock_guard g(mu_);
    return maxTotal_;
  }

 private:
  std::string app_;
  kube::Informer pods_;
  std::mutex mu_;
  bool armed_ = false;
  int64_t minReady_ = INT64_MAX, maxTotal_ = 0;
};

TEST_F(WorkloadsTest, ReplicaSetReplacesDeletedAndFailedPods) {
  create(R"(apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  replicas: 3
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec: {containers: [{name: c, image: img}]}
)");
  ASSERT_TRUE(eventually([&] { return get("rs rs -o jsonpath='{.status.readyReplicas}'") == "3"; })) << get("rs,pods");
  std::string victim = get("pods -l app=rs -o jsonpath='{.items[0].metadata.name}'");
  ASSERT_EQ(kubectl("delete pod " + victim + " --wait=false").exitCode, 0);
  std::string failed = get("pods -l app=rs -o jsonpath='{.items[1].metadata.name}'");
  ASSERT_EQ(kubectl("patch pod " + failed + " --subresource=status --type=merge -p '{\"status\":{\"phase\":\"Failed\"}}'").exitCode, 0);
  ASSERT_TRUE(eventually([&] {
    std::string names = get("pods -l app=rs --field-selector=status.phase=Running -o name");
    return lines(names) == 3 && names.find(victim) == std::string::npos &&
           names.find(failed) == std::string::npos;
  })) << get("pods -l app=rs");
  EXPECT_TRUE(eventually([&] { return get("rs rs -o jsonpath='{.status.readyReplicas}/{.status.availableReplicas}'") == "3/3"; }));
  // Scale down: the failed pod is not counted, 1 running pod remains.
  ASSERT_EQ(kubectl("scale rs rs --replicas=1").exitCode, 0);
  EXPECT_TRUE(eventually([&] {
    return lines(get("pods -l app=rs --field-selector=status.phase=Running -o name")) == 1;
  })) << get("pods");
}

TEST_F(WorkloadsTest, DeploymentRollsForwardAndBackWithinMaxUnavailable) {
  PodWatch watch(*client_, "web");
  ASSERT_EQ(kubectl("create deployment web --image=img:v1 --replicas=10").exitCode, 0);
  auto status = kubectl("rollout status deployment/web --timeout=60s");
  ASSERT_EQ(status.exitCode, 0) << status.out << get("deploy,rs,pods");
  EXPECT_NE(status.out.find("deployment \"web\" successfully rolled out"), std::string::npos) << status.out;
  watch.arm();  // from here on, never fewer than 10 - 25% (rounded down: 2) = 8 ready
  ASSERT_EQ(kubectl("set image deployment/web img=img:v2").exitCode, 0);
  status = kubectl("rollout status deployment/web --timeout=60s");
  ASSERT_EQ(status.exitCode, 0) << status.out << get("deploy,rs");
  auto rsOf = [&](const std::string& image) {  // "<replicas> <revision>" of the ReplicaSet running `image`
    return get("rs -l app=web -o jsonpath='{range .items[?(@.spec.template.spec.containers[0].image==\"" + image +
               "\")]}{.spec.replicas} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}{end}'");
  };
  EXPECT_EQ(rsOf("img:v2"), "10 2") << get("rs -l app=web");
  EXPECT_EQ(rsOf("img:v1"), "0 1") << get("rs -l app=web");
  auto undo = kubectl("rollout undo deployment/web");
  ASSERT_EQ(undo.exitCode, 0) << undo.out;
  status = kubectl("rollout status deployment/web --timeout=60s");
  ASSERT_EQ(status.exitCode, 0) << status.out;
  EXPECT_EQ(get("deploy web -o jsonpath='{.spec.template.spec.containers[0].image}'"), "img:v1");
  EXPECT_TRUE(eventually([&] { return get("pods -l app=web -o jsonpath='{.items[*].spec.containers[0].image}'") ==
                                      "img:v1 img:v1 img:v1 img:v1 img:v1 img:v1 img:v1 img:v1 img:v1 img:v1"; }))
      << get("pods -l app=web");
  auto history = kubectl("rollout history deployment/web");
  EXPECT_NE(history.out.find("2         <none>"), std::string::npos) << history.out;
  EXPECT_NE(history.out.find("3         <none>"), std::string::npos) << history.out;
  EXPECT_EQ(history.out.find("1         <none>"), std::string::npos) << history.out;  // revision 1 became 3
  EXPECT_GE(watch.minReady(), 8);
  EXPECT_LE(watch.maxTotal(), 13);  // 10 + 25% surge (rounded up: 3)
  EXPECT_EQ(get("deploy web -o jsonpath='{.status.conditions[?(@.type==\"Available\")].status}'"), "True");

  // Pause holds a template change back; resume rolls it; restart rolls the same template again.
  ASSERT_EQ(kubectl("rollout pause deployment/web").exitCode, 0);
  ASSERT_EQ(kubectl("set image deployment/web img=img:v3").exitCode, 0);
  EXPECT_TRUE(eventually([&] {
    return get("deploy web -o jsonpath='{.status.conditions[?(@.type==\"Progressing\")].reason}'") == "DeploymentPaused";
  }));
  EXPECT_EQ(lines(get("rs -l app=web -o name")), 2);
  ASSERT_EQ(kubectl("rollout resume deployment/web").exitCode, 0);
  ASSERT_EQ(kubectl("rollout status deployment/web --timeout=60s").exitCode, 0);
  EXPECT_EQ(lines(get("rs -l app=web -o name")), 3);
  ASSERT_EQ(kubectl("rollout restart deployment/web").exitCode, 0);
  ASSERT_EQ(kubectl("rollout status deployment/web --timeout=60s").exitCode, 0);
  EXPECT_EQ(lines(get("rs -l app=web -o name")), 4);
  ASSERT_EQ(kubectl("scale deployment/web --replicas=3").exitCode, 0);
  EXPECT_TRUE(eventually([&] { return lines(get("pods -l app=web -o name")) == 3; })) << get("pods -l app=web");
  EXPECT_GE(watch.minReady(), 2);
}

TEST_F(WorkloadsTest, RecreateNeverRunsOldAndNewTogether) {
  create(R"(apiVersion: apps/v1
kind: Deployment
metadata: {name: re}
spec:
  replicas: 3
  strategy: {type: Recreate}
  selector: {matchLabels: {app: re}}
  template:
    metadata: {labels: {app: re}}
    spec: {containers: [{name: c, image: "img:v1"}]}
)");
  ASSERT_EQ(kubectl("rollout status deployment/re --timeout=60s").exitCode, 0);
  PodWatch watch(*client_, "re");
  ASSERT_EQ(kubectl("set image deployment/re c=img:v2").exitCode, 0);
  ASSERT_EQ(kubectl("rollout status deployment/re --timeout=60s").exitCode, 0);
  EXPECT_TRUE(eventually([&] { return get("pods -l app=re -o jsonpath='{.items[*].spec.containers[0].image}'") == "img:v2 img:v2 img:v2"; }));
  EXPECT_LE(watch.maxTotal(), 3);  // the old pods were gone before the new came
}

TEST_F(WorkloadsTest, DeploymentReportsProgressDeadlineExceeded) {
  ASSERT_EQ(kubectl("create deployment stuck --image=never-ready --replicas=2").exitCode, 0);
  ASSERT_EQ(kubectl("patch deployment stuck --type=merge -p '{\"spec\":{\"progressDeadlineSeconds\":2}}'").exitCode, 0);
  ASSERT_TRUE(eventually([&] {
    return get("deploy stuck -o jsonpath='{.status.conditions[?(@.type==\"Progressing\")].reason}'") == "ProgressDeadlineExceeded";
  })) << get("deploy stuck -o yaml");
  auto status = kubectl("rollout status deployment/stuck --timeout=10s");
  EXPECT_NE(status.exitCode, 0);
  EXPECT_NE(status.out.find("deployment \"stuck\" exceeded its progress deadline"), std::string::npos) << status.out;
}

TEST_F(WorkloadsTest, DeploymentScaledMidRolloutScalesProportionally) {
  ASSERT_EQ(kubectl("create deployment prop --image=img:v1 --replicas=10").exitCode, 0);
  ASSERT_EQ(kubectl("rollout status deployment/prop --timeout=60s").exitCode, 0);
  // New pods never get ready: the rollout stops at 8 old + 5 new (surge 3, unavailable 2).
  ASSERT_EQ(kubectl("set image deployment/prop img=never-ready").exitCode, 0);
  auto sizes = [&] {  // "<old> <new>" (by image: both may be created within one second)
    auto of = [&](const std::string& image) {
      return get("rs -l app=prop -o jsonpath='{.items[?(@.spec.template.spec.containers[0].image==\"" + image +
                 "\")].spec.replicas}'");
    };
    return of("img:v1") + " " + of("never-ready");
  };
  ASSERT_TRUE(eventually([&] { return sizes() == "8 5"; })) << sizes();
  // To 20 (surge 5): 12 more, spread 8:5 as kube does — 15 and 10.
  ASSERT_EQ(kubectl("scale deployment/prop --replicas=20").exitCode, 0);
  EXPECT_TRUE(eventually([&] { return sizes() == "15 10"; })) << sizes();
}

TEST_F(WorkloadsTest, KilledMidRolloutTheRolloutCompletesWithNoExtraPods) {
  PodWatch watch(*client_, "kill");
  ASSERT_EQ(kubectl("create deployment kill --image=img:v1 --replicas=10").exitCode, 0);
  ASSERT_EQ(kubectl("rollout status deployment/kill --timeout=60s").exitCode, 0);
  ASSERT_EQ(kubectl("set image deployment/kill img=img:v2").exitCode, 0);
  ASSERT_TRUE(eventually([&] { return lines(get("rs -l app=kill -o name")) == 2; }, 10s));
  killControllers();
  std::this_thread::sleep_for(500ms);
  startControllers();
  auto status = kubectl("rollout status deployment/kill --timeout=60s");
  ASSERT_EQ(status.exitCode, 0) << status.out;
  EXPECT_TRUE(eventually([&] {
    return get("pods -l app=kill -o jsonpath='{.items[*].spec.containers[0].image}'") ==
           "img:v2 img:v2 img:v2 img:v2 img:v2 img:v2 img:v2 img:v2 img:v2 img:v2";
  })) << get("pods -l app=kill");
  EXPECT_EQ(lines(get("rs -l app=kill -o name")), 2);
  EXPECT_LE(watch.maxTotal(), 13);
}

TEST_F(WorkloadsTest, JobsSucceedFailAfterBackoffLimitAndRunIndexed) {
  ASSERT_EQ(kubectl("create job ok --image=exit-0").exitCode, 0);
  auto wait = kubectl("wait --for=condition=complete job/ok --timeout=30s");
  ASSERT_EQ(wait.exitCode, 0) << wait.out << get("job ok -o yaml") << get("pods");
  EXPECT_EQ(get("job ok -o jsonpath='{.status.succeeded}/{.status.failed}'"), "1/");
  EXPECT_EQ(get("pods -l job-name=ok -o jsonpath='{.items[*].metadata.finalizers}'").find("job-tracking"),
            std::string::npos);  // tracking finalizers removed

  create(R"(apiVersion: batch/v1
kind: Job
metadata: {name: five}
spec:
  completions: 5
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: exit-0}]
)");
  ASSERT_EQ(kubectl("wait --for=condition=complete job/five --timeout=30s").exitCode, 0) << get("job five -o yaml");
  EXPECT_EQ(get("job five -o jsonpath='{.status.succeeded}'"), "5");
  EXPECT_EQ(lines(get("pods -l job-name=five -o name")), 5);  // no extra pods
  EXPECT_NE(get("jobs").find("five   Complete   5/5"), std::string::npos) << get("jobs");

  create(R"(apiVersion: batch/v1
kind: Job
metadata: {name: fails}
spec:
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: exit-1}]
)");
  auto failed = kubectl("wait --for=condition=failed job/fails --timeout=30s");
  ASSERT_EQ(failed.exitCode, 0) << failed.out << get("job fails -o yaml");
  EXPECT_EQ(get("job fails -o jsonpath='{.status.failed} {.status.conditions[?(@.type==\"Failed\")].reason}'"),
            "3 BackoffLimitExceeded");
  EXPECT_EQ(lines(get("pods -l job-name=fails -o name")), 3);

  create(R"(apiVersion: batch/v1
kind: Job
metadata: {name: indexed}
spec:
  completions: 4
  parallelism: 2
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: exit-0}]
)");
  ASSERT_EQ(kubectl("wait --for=condition=complete job/indexed --timeout=30s").exitCode, 0) << get("job indexed -o yaml");
  EXPECT_EQ(get("job indexed -o jsonpath='{.status.completedIndexes}'"), "0-3");
  auto hosts = get("pods -l job-name=indexed -o jsonpath='{range .items[*]}{.spec.hostname}={.metadata.annotations.batch\\.kubernetes\\.io/job-completion-index},{.spec.containers[0].env[0].name} {end}'");
  for (int i = 0; i < 4; ++i) {
    EXPECT_NE(hosts.find(fmt::format("indexed-{0}={0},JOB_COMPLETION_INDEX", i)), std::string::npos) << hosts;
  }
}

TEST_F(WorkloadsTest, JobPodFailurePolicySuspendAndTtl) {
  create(R"(apiVersion: batch/v1
kind: Job
metadata: {name: policy}
spec:
  backoffLimit: 6
  podFailurePolicy:
    rules:
    - action: FailJob
      onExitCodes: {operator: In, values: [42]}
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: exit-42}]
)");
  ASSERT_EQ(kubectl("wait --for=condition=failed job/policy --timeout=30s").exitCode, 0) << get("job policy -o yaml");
  EXPECT_EQ(get("job policy -o jsonpath='{.status.conditions[?(@.type==\"Failed\")].reason}'"), "PodFailurePolicy");
  EXPECT_NE(get("job policy -o jsonpath='{.status.conditions[?(@.type==\"Failed\")].message}'")
                .find("Container main for pod default/policy-"),
            std::string::npos);
  EXPECT_EQ(lines(get("pods -l job-name=policy -o name")), 1);  // failed at once, not after 7 tries

  // Ignore: failures with exit code 3 are not counted (backoffLimit 0 would
  // fail the Job at the first); replacements run until the deadline.
  create(R"(apiVersion: batch/v1
kind: Job
metadata: {name: ignored}
spec:
  backoffLimit: 0
  activeDeadlineSeconds: 2
  podFailurePolicy:
    rules:
    - action: Ignore
      onExitCodes: {operator: In, values: [3]}
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: exit-3}]
)");
  ASSERT_EQ(kubectl("wait --for=condition=failed job/ignored --timeout=30s").exitCode, 0) << get("job ignored -o yaml");
  // Only the pod the deadline cut short may count (as in Kubernetes), none of the ignored ones.
  std::string outcome = get("job ignored -o jsonpath='{.status.conditions[?(@.type==\"Failed\")].reason}/{.status.failed}'");
  EXPECT_TRUE(outcome == "DeadlineExceeded/" || outcome == "DeadlineExceeded/1") << outcome;
  EXPECT_GT(lines(get("pods -l job-name=ignored -o name")), 1);

  create(R"(apiVersion: batch/v1
kind: Job
metadata: {name: later}
spec:
  suspend: true
  ttlSecondsAfterFinished: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: exit-0}]
)");
  ASSERT_TRUE(eventually([&] {
    return get("job later -o jsonpath='{.status.conditions[?(@.type==\"Suspended\")].status}'") == "True";
  })) << get("job later -o yaml");
  EXPECT_EQ(get("pods -l job-name=later -o name"), "");
  EXPECT_NE(get("job later").find("later   Suspended"), std::string::npos) << get("job later");
  ASSERT_EQ(kubectl("patch job later --type=merge -p '{\"spec\":{\"suspend\":false}}'").exitCode, 0);
  // Runs, completes, and ttl-after-finished deletes it (with its pods).
  EXPECT_TRUE(eventually([&] { return kubectl("get job later").exitCode != 0; })) << get("job later -o yaml");
  EXPECT_TRUE(eventually([&] { return get("pods -l job-name=later -o name").empty(); }));
}

constexpr std::string_view kAgent = R"(apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, image: "agent:v1"}]}
)";

TEST_F(WorkloadsTest, DaemonSetFollowsNodesTaintsAndRollsOut) {
  create(std::string(kAgent));
  auto status = kubectl("rollout status ds/agent --timeout=60s");
  ASSERT_EQ(status.exitCode, 0) << status.out << get("ds,pods -o wide");
  auto nodesOf = [&] { return get("pods -l app=agent --sort-by=.spec.nodeName -o jsonpath='{.items[*].spec.nodeName}'"); };
  EXPECT_EQ(nodesOf(), "n1 n2 n3");
  create("apiVersion: v1\nkind: Node\nmetadata: {name: n4}\n");
  EXPECT_TRUE(eventually([&] { return nodesOf() == "n1 n2 n3 n4"; })) << nodesOf();
  ASSERT_EQ(kubectl("taint node n2 dedicated=db:NoExecute").exitCode, 0);
  ASSERT_EQ(kubectl("taint node n3 dedicated=db:NoSchedule").exitCode, 0);  // a running pod stays
  EXPECT_TRUE(eventually([&] { return nodesOf() == "n1 n3 n4"; })) << nodesOf();
  ASSERT_EQ(kubectl("delete node n4").exitCode, 0);
  EXPECT_TRUE(eventually([&] { return nodesOf() == "n1 n3"; })) << nodesOf();
  EXPECT_TRUE(eventually([&] { return get("ds agent -o jsonpath='{.status.desiredNumberScheduled}/{.status.numberReady}'") == "2/2"; }));
  // The toleration every DaemonSet pod gets, and the pin the scheduler honours.
  EXPECT_NE(get("pods -l app=agent -o jsonpath='{.items[0].spec.tolerations}'").find("node.kubernetes.io/unreachable"),
            std::string::npos);
  EXPECT_NE(get("pods -l app=agent -o jsonpath='{.items[0].spec.affinity.nodeAffinity}'").find("metadata.name"),
            std::string::npos);

  // As in Kubernetes, an update would not bring a replaced pod back to a
  // node whose NoSchedule taint it does not tolerate: lift it first.
  ASSERT_EQ(kubectl("taint node n3 dedicated=db:NoSchedule-").exitCode, 0);
  ASSERT_EQ(kubectl("set image ds/agent agent=agent:v2").exitCode, 0);
  status = kubectl("rollout status ds/agent --timeout=60s");
  ASSERT_EQ(status.exitCode, 0) << status.out;
  EXPECT_TRUE(eventually([&] { return get("pods -l app=agent -o jsonpath='{.items[*].spec.containers[0].image}'") == "agent:v2 agent:v2"; }));
  EXPECT_EQ(lines(get("controllerrevisions -o name")), 2);
  auto undo = kubectl("rollout undo ds/agent");
  ASSERT_EQ(undo.exitCode, 0) << undo.out;
  ASSERT_EQ(kubectl("rollout status ds/agent --timeout=60s").exitCode, 0);
  EXPECT_TRUE(eventually([&] { return get("pods -l app=agent -o jsonpath='{.items[*].spec.containers[0].image}'") == "agent:v1 agent:v1"; }))
      << get("pods -l app=agent");
  EXPECT_EQ(get("controllerrevisions --sort-by=.revision -o jsonpath='{.items[*].revision}'"), "2 3");
}

TEST_F(WorkloadsTest, DaemonSetSurgesNewPodsBeforeOldOnesGo) {
  create(R"(apiVersion: apps/v1
kind: DaemonSet
metadata: {name: surge}
spec:
  selector: {matchLabels: {app: surge}}
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: surge}}
    spec: {containers: [{name: c, image: "img:v1"}]}
)");
  ASSERT_EQ(kubectl("rollout status ds/surge --timeout=60s").exitCode, 0);
  PodWatch watch(*client_, "surge");
  watch.arm();
  ASSERT_EQ(kubectl("set image ds/surge c=img:v2").exitCode, 0);
  auto status = kubectl("rollout status ds/surge --timeout=60s");
  ASSERT_EQ(status.exitCode, 0) << status.out;
  EXPECT_TRUE(eventually([&] { return get("pods -l app=surge -o jsonpath='{.items[*].spec.containers[0].image}'") == "img:v2 img:v2 img:v2"; }));
  EXPECT_GE(watch.minReady(), 3);  // maxUnavailable 0: every node kept a ready pod
  EXPECT_EQ(watch.maxTotal(), 4);  // one surge pod at a time
}

TEST_F(WorkloadsTest, DrainStopsAtADisruptionBudgetAndFinishesWhenItAllows) {
  ASSERT_EQ(kubectl("cordon n2 n3").exitCode, 0);  // the app starts on n1
  ASSERT_EQ(kubectl("create deployment drain --image=img --replicas=3").exitCode, 0);
  create(std::string(kAgent));
  ASSERT_EQ(kubectl("rollout status deployment/drain --timeout=60s").exitCode, 0);
  ASSERT_EQ(kubectl("rollout status ds/agent --timeout=60s").exitCode, 0);
  ASSERT_EQ(kubectl("uncordon n2 n3").exitCode, 0);
  EXPECT_EQ(get("pods -l app=drain -o jsonpath='{.items[*].spec.nodeName}'"), "n1 n1 n1");
  ASSERT_EQ(kubectl("create pdb drain --selector=app=drain --min-available=3").exitCode, 0);
  ASSERT_TRUE(eventually([&] { return get("pdb drain -o jsonpath='{.status.currentHealthy}/{.status.expectedPods}'") == "3/3"; }));
  PodWatch watch(*client_, "drain");
  watch.arm();
  auto blocked = kubectl("drain n1 --ignore-daemonsets --timeout=6s");
  EXPECT_NE(blocked.exitCode, 0);
  EXPECT_NE(blocked.out.find("Cannot evict pod as it would violate the pod's disruption budget."), std::string::npos)
      << blocked.out;
  EXPECT_EQ(get("pods -l app=drain -o jsonpath='{.items[*].spec.nodeName}'"), "n1 n1 n1");
  EXPECT_NE(get("node n1").find("SchedulingDisabled"), std::string::npos);
  ASSERT_EQ(kubectl("patch pdb drain --type=merge -p '{\"spec\":{\"minAvailable\":2}}'").exitCode, 0);
  auto drained = kubectl("drain n1 --ignore-daemonsets --timeout=90s");
  ASSERT_EQ(drained.exitCode, 0) << drained.out << get("pods -o wide") << get("pdb drain -o yaml");
  EXPECT_NE(drained.out.find("node/n1 drained"), std::string::npos) << drained.out;
  EXPECT_EQ(get("pods -l app=drain --field-selector spec.nodeName=n1 -o name"), "");
  EXPECT_EQ(lines(get("pods -l app=agent --field-selector spec.nodeName=n1 -o name")), 1);  // DaemonSet pods stay
  EXPECT_GE(watch.minReady(), 2);
  ASSERT_EQ(kubectl("uncordon n1").exitCode, 0);
}

TEST_F(WorkloadsTest, StatefulSetOrderedPodsKeepTheirClaimsAcrossScaling) {
  for (int i = 0; i < 3; ++i) {
    create(fmt::format(R"(apiVersion: v1
kind: PersistentVolume
metadata: {{name: pv-{0}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: manual
  hostPath: {{path: /tmp/trellis-sts-{0}}}
)",
                       i));
  }
  // On every pod added, whether the ordinal before it was Running and Ready.
  std::mutex mu;
  std::vector<std::string> outOfOrder;
  kube::Informer pods(*client_, res::kPods);
  pods.addHandler({.onAdd =
                       [&](const kube::ObjectPtr& p) {
                         std::string name(kube::objectName(*p));
                         if (!name.starts_with("web-") || name == "web-0") return;
                         int ordinal = std::atoi(name.c_str() + 4);
                         kube::ObjectPtr prev = pods.get("default/web-" + std::to_string(ordinal - 1));
                         bool ready = prev && kube::str(*prev, {"status", "phase"}) == "Running";
                         std::lock_guard g(mu);
                         if (!ready) outOfOrder.push_back(name);
                       },
                   .onUpdate = {},
                   .onDelete = {}});
  pods.start();
  ASSERT_TRUE(pods.waitForSync(10s));
  create(R"(apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: 3
  serviceName: web
  selector: {matchLabels: {app: sts}}
  template:
    metadata: {labels: {app: sts}}
    spec: {containers: [{name: c, image: "img:v1"}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: manual
      resources: {requests: {storage: 1Gi}}
)");
  auto status = kubectl("rollout status sts/web --timeout=60s");
  ASSERT_EQ(status.exitCode, 0) << status.out << get("sts,pods,pvc");
  EXPECT_EQ(get("pods -l app=sts -o jsonpath='{range .items[*]}{.metadata.name}:{.spec.hostname}.{.spec.subdomain}:"
                "{.spec.volumes[0].persistentVolumeClaim.claimName} {end}'"),
            "web-0:web-0.web:data-web-0 web-1:web-1.web:data-web-1 web-2:web-2.web:data-web-2 ");
  EXPECT_TRUE(eventually([&] { return get("pvc -o jsonpath='{.items[*].status.phase}'") == "Bound Bound Bound"; }));
  std::string claims = get("pvc -o jsonpath='{.items[*].metadata.uid}'");
  {
    std::lock_guard g(mu);
    EXPECT_TRUE(outOfOrder.empty()) << fmt::format("created before their predecessor ran: {}", outOfOrder.size());
  }
  ASSERT_EQ(kubectl("scale sts web --replicas=1").exitCode, 0);
  EXPECT_TRUE(eventually([&] { return get("pods -l app=sts -o name") == "pod/web-0\n"; })) << get("pods");
  EXPECT_EQ(get("pvc -o jsonpath='{.items[*].metadata.uid}'"), claims);  // kept (whenScaled: Retain)
  ASSERT_EQ(kubectl("scale sts web --replicas=3").exitCode, 0);
  ASSERT_EQ(kubectl("rollout status sts/web --timeout=60s").exitCode, 0);
  EXPECT_EQ(get("pvc -o jsonpath='{.items[*].metadata.uid}'"), claims);  // the same claims again
  EXPECT_EQ(lines(get("pods -l app=sts -o name")), 3);

  ASSERT_EQ(kubectl("set image sts/web c=img:v2").exitCode, 0);
  status = kubectl("rollout status sts/web --timeout=60s");
  ASSERT_EQ(status.exitCode, 0) << status.out;
  // kubectl says this for every RollingUpdate set with a partition (kube defaults it to 0).
  EXPECT_NE(status.out.find("partitioned roll out complete: 3 new pods have been updated"), std::string::npos) << status.out;
  EXPECT_EQ(get("pods -l app=sts -o jsonpath='{.items[*].spec.containers[0].image}'"), "img:v2 img:v2 img:v2");
  EXPECT_EQ(get("sts web -o jsonpath='{.status.currentRevision}'"), get("sts web -o jsonpath='{.status.updateRevision}'"));
  // A partition: only ordinals >= 2 take the next template.
  ASSERT_EQ(kubectl("patch sts web --type=merge -p "
                    "'{\"spec\":{\"updateStrategy\":{\"rollingUpdate\":{\"partition\":2}}}}'").exitCode, 0);
  ASSERT_EQ(kubectl("set image sts/web c=img:v3").exitCode, 0);
  status = kubectl("rollout status sts/web --timeout=60s");
  ASSERT_EQ(status.exitCode, 0) << status.out;
  EXPECT_NE(status.out.find("partitioned roll out complete: 1 new pods have been updated"), std::string::npos) << status.out;
  EXPECT_TRUE(eventually([&] {
    return get("pods -l app=sts -o jsonpath='{.items[*].spec.containers[0].image}'") == "img:v2 img:v2 img:v3";
  })) << get("pods -l app=sts -o wide");
  EXPECT_NE(get("sts web -o jsonpath='{.status.currentRevision}'"), get("sts web -o jsonpath='{.status.updateRevision}'"));
  pods.stop();
}

TEST_F(WorkloadsTest, StatefulSetClaimRetentionPolicyDelete) {
  create(R"(apiVersion: apps/v1
kind: StatefulSet
metadata: {name: tmp}
spec:
  replicas: 2
  podManagementPolicy: Parallel
  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}
  selector: {matchLabels: {app: tmp}}
  template:
    metadata: {labels: {app: tmp}}
    spec: {containers: [{name: c, image: img}]}
  volumeClaimTemplates:
  - metadata: {name: scratch}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: nowhere
      resources: {requests: {storage: 1Gi}}
)");
  // Parallel: both pods and claims at once (the claims never bind here; the pods stay pending).
  ASSERT_TRUE(eventually([&] { return get("pvc -o name") == "persistentvolumeclaim/scratch-tmp-0\npersistentvolumeclaim/scratch-tmp-1\n"; }))
      << get("pvc,pods");
  EXPECT_EQ(lines(get("pods -l app=tmp -o name")), 2);
  ASSERT_EQ(kubectl("scale sts tmp --replicas=1").exitCode, 0);
  EXPECT_TRUE(eventually([&] { return get("pvc -o name") == "persistentvolumeclaim/scratch-tmp-0\n"; })) << get("pvc -o yaml");
  ASSERT_EQ(kubectl("delete sts tmp").exitCode, 0);
  EXPECT_TRUE(eventually([&] { return get("pvc,pods -o name").empty(); })) << get("pvc,pods");
}

TEST_F(WorkloadsTest, PodGcKeepsTerminatedPodsUnderTheThreshold) {
  startControllers("--terminated-pod-gc-threshold 2");
  for (int i = 0; i < 4; ++i) {
    create(fmt::format("apiVersion: v1\nkind: Pod\nmetadata: {{name: done-{}}}\nspec:\n  nodeName: n1\n  restartPolicy: Never\n"
                       "  containers: [{{name: c, image: exit-0}}]\n",
                       i));
    std::this_thread::sleep_for(1100ms);  // distinct creation times (seconds)
  }
  EXPECT_TRUE(eventually([&] { return get("pods -o name") == "pod/done-2\npod/done-3\n"; })) << get("pods");
}

TEST_F(WorkloadsTest, CronJobsFireOnAnInjectedClockWithEachConcurrencyPolicy) {
  // The clock starts a day ahead, at hh:00:30 (the CronJobs are created
  // "before" it, so the hh:00 run is due).
  int64_t base = (std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count() /
                  3600 + 25) * 3600;
  auto setClock = [&](int64_t t) { testing::writeFile(clockFile(), kube::formatRfc3339(t) + "\n"); };
  auto cron = [&](const std::string& name, const std::string& policy, const std::string& image, const std::string& extra) {
    create(fmt::format(R"(apiVersion: batch/v1
kind: CronJob
metadata: {{name: {0}}}
spec:
  schedule: "*/5 * * * *"
  concurrencyPolicy: {1}
  {3}
  jobTemplate:
    spec:
      template:
        metadata: {{labels: {{cron: {0}}}}}
        spec:
          restartPolicy: Never
          containers: [{{name: c, image: {2}}}]
)",
                       name, policy, image, extra));
  };
  cron("allow", "Allow", "never-ready", "");
  cron("forbid", "Forbid", "never-ready", "");
  cron("replace", "Replace", "never-ready", "");
  cron("late", "Allow", "never-ready", "startingDeadlineSeconds: 10");
  cron("history", "Allow", "exit-0", "successfulJobsHistoryLimit: 1");
  auto jobsOf = [&](const std::string& cj) {
    return get(fmt::format("jobs -o jsonpath='{{range .items[?(@.metadata.ownerReferences[0].name==\"{}\")]}}{{.metadata.name}} {{end}}'", cj));
  };
  std::string first = std::to_string(base / 60), second = std::to_string(base / 60 + 5);
  setClock(base + 30);
  for (const char* cj : {"allow", "forbid", "replace", "history"}) {
    EXPECT_TRUE(eventually([&] { return jobsOf(cj) == std::string(cj) + "-" + first + " "; }, 20s)) << cj << ": " << jobsOf(cj);
  }
  EXPECT_EQ(jobsOf("late"), "");  // 30 s late, past its 10 s deadline
  EXPECT_EQ(get("cj allow -o jsonpath='{.status.lastScheduleTime}'"), kube::formatRfc3339(base));
  EXPECT_TRUE(eventually([&] { return get("cj allow -o jsonpath='{.status.active[0].name}'") == "allow-" + first; }));
  ASSERT_TRUE(eventually([&] { return get("job history-" + first + " -o jsonpath='{.status.succeeded}'") == "1"; }));

  setClock(base + 300 + 5);
  EXPECT_TRUE(eventually([&] { return jobsOf("allow") == "allow-" + first + " allow-" + second + " "; }, 20s)) << jobsOf("allow");
  EXPECT_TRUE(eventually([&] { return jobsOf("replace") == "replace-" + second + " "; }, 20s)) << jobsOf("replace");
  EXPECT_TRUE(eventually([&] { return jobsOf("late") == "late-" + second + " "; }, 20s)) << jobsOf("late");
  EXPECT_TRUE(eventually([&] { return jobsOf("history") == "history-" + second + " "; }, 20s)) << jobsOf("history");
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(jobsOf("forbid"), "forbid-" + first + " ");  // the first still runs: skipped
  EXPECT_TRUE(eventually([&] { return lines(get("cj allow -o jsonpath='{range .status.active[*]}{.name}{\"\\n\"}{end}'")) == 2; }));
  // Restarting the controllers at the same instant creates nothing twice.
  startControllers();
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(jobsOf("allow"), "allow-" + first + " allow-" + second + " ");
  // Suspended: no new runs.
  ASSERT_EQ(kubectl("patch cj allow --type=merge -p '{\"spec\":{\"suspend\":true}}'").exitCode, 0);
  setClock(base + 600 + 5);
  EXPECT_TRUE(eventually([&] { return jobsOf("replace") == "replace-" + std::to_string(base / 60 + 10) + " "; }, 20s))
      << jobsOf("replace");
  EXPECT_EQ(jobsOf("allow"), "allow-" + first + " allow-" + second + " ");
}

}  // namespace
}  // namespace trellis::controllers
