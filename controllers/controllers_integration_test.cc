// trellis-controllers against a real trellis-apiserver process and a real
// trellis-csi process (controller mode, pool in the test's directory):
// claims bound through provisioning (Immediate and WaitForFirstConsumer),
// clones carrying data, reclaim policies, kill -9 at random moments with
// nothing created twice or left behind, namespace deletion, the scheduler's
// filters, EndpointSlices, node IPAM, service accounts, leader election,
// and the pairing with a provisioner speaking the external-provisioner
// contract.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <atomic>
#include <random>
#include <set>
#include <thread>

#include <boost/json/serialize.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include "common/kube/client.h"
#include "common/kube/object.h"
#include "common/kube/yaml.h"
#include "common/testing/apiserver_process.h"
#include "common/testing/background.h"
#include "common/testing/kill_on_file.h"
#include "common/testing/testing.h"
#include "controllers/csi_client.h"

namespace trellis::controllers {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
namespace res = kube::resources;

constexpr auto kWait = 30s;

const kube::Resource* resourceFor(std::string_view kind) {
  static const kube::Resource* all[] = {&res::kNamespaces, &res::kNodes, &res::kPods, &res::kServices,
                                        &res::kPersistentVolumes, &res::kPersistentVolumeClaims,
                                        &res::kStorageClasses, &res::kSecrets, &res::kConfigMaps,
                                        &res::kCSIDrivers, &res::kVolumeAttachments,
                                        &res::kVolumeSnapshots, &res::kVolumeSnapshotClasses, &res::kReplicaSets};
  for (const kube::Resource* r : all) {
    if (r->kind == kind) return r;
  }
  return nullptr;
}

class ControllersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir_.path() + "/api");
    ASSERT_TRUE(server_.start()) << server_.log();
    auto cfg = kube::loadKubeconfig({server_.kubeconfig()});
    ASSERT_TRUE(cfg);
    auto c = kube::Client::create(*cfg, {.qps = 0});
    ASSERT_TRUE(c);
    client_ = std::move(*c);
    fs::create_directories(pool());
    driver_ = std::make_unique<testing::Background>(
        fmt::format("exec {} --endpoint unix://{} --mode controller --node-id n1 --pool-dir {} --log-level warn 2>&1",
                    TRELLIS_CSI_BIN, socket(), pool()));
    ASSERT_TRUE(testing::waitFor([&] { return fs::exists(socket()); }, kWait)) << driver_->output();
    csi_ = CsiController::connect("unix://" + socket());
  }

  void TearDown() override {
    std::vector<std::string> names;
    for (auto& [name, c] : controllers_) names.push_back(name);
    for (const std::string& name : names) stopControllers(name, SIGTERM);
    if (HasFailure()) {
      for (auto& [name, c] : logs_) fmt::print("---- {} log (tail):\n{}\n", name, tail(c, 60));
    }
  }

  static std::string tail(const std::string& text, int lines) {
    size_t at = text.size();
    for (int i = 0; i < lines && at != std::string::npos && at > 0; ++i) at = text.rfind('\n', at - 1);
    return at == std::string::npos ? text : text.substr(at);
  }

  std::string pool() const { return dir_.path() + "/pool"; }
  std::string socket() const { return dir_.path() + "/csi.sock"; }

  // Starts a trellis-controllers process (named, so tests can run several).
  // With leader election, it acts once it leads; without, once synced.
  testing::Background& startControllers(const std::string& name = "a", const std::string& extra = "", bool elect = false) {
    stopControllers(name, SIGTERM);
    auto& c = controllers_[name];
    c = std::make_unique<testing::Background>(fmt::format(
        "exec {} --kubeconfig {} --csi-endpoint unix://{} --cluster-cidr 10.244.0.0/16,fd00:10::/56 "
        "--leader-elect={} --leader-elect-lease-duration 3 --leader-elect-renew-deadline 2 "
        "--leader-elect-retry-period 0.5 {} 2>&1",
        TRELLIS_CONTROLLERS_BIN, server_.kubeconfig(), socket(), elect, extra));
    if (!elect) {
      EXPECT_TRUE(c->waitForLine([](const std::string& l) { return l.find("caches synced") != std::string::npos; }, kWait))
          << c->output();
    }
    return *c;
  }
  void stopControllers(const std::string& name, int signal) {
    auto it = controllers_.find(name);
    if (it == controllers_.end() || !it->second) return;
    it->second->stop(signal);
    logs_[name] += it->second->output();
    controllers_.erase(it);
  }

  // Creates every object of a YAML stream (namespace `ns` for namespaced ones).
  void apply(const std::string& yaml, const std::string& ns = "default") {
    auto docs = kube::parseYamlStream(yaml);
    ASSERT_TRUE(docs) << docs.error().message();
    for (json::value& d : *docs) {
      json::object& o = d.as_object();
      const kube::Resource* r = resourceFor(kube::str(o, {"kind"}));
      ASSERT_TRUE(r) << kube::str(o, {"kind"});
      auto created = client_->create(*r, r->namespaced ? ns : "", o);
      ASSERT_TRUE(created) << created.error().message() << "\n" << json::serialize(o);
    }
  }

  void addNodes(int n, const std::string& extraLabels = "") {
    for (int i = 1; i <= n; ++i) {
      apply(fmt::format(R"(
apiVersion: v1
kind: Node
metadata: {{name: n{0}, labels: {{kubernetes.io/hostname: n{0}, topology.csi.trellis.dev/node: n{0}{1}}}}}
status: {{allocatable: {{cpu: "4", memory: 8Gi, pods: "110"}}}}
)",
                        i, extraLabels));
    }
  }

  // The driver (tracking capacity: its pool is on n1 only) and three classes.
  void addClasses() {
    apply(R"(
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: csi.trellis.dev}
spec: {attachRequired: true, storageCapacity: true}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: fast}
provisioner: csi.trellis.dev
volumeBindingMode: Immediate
allowVolumeExpansion: true
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: wffc}
provisioner: csi.trellis.dev
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: keep}
provisioner: csi.trellis.dev
reclaimPolicy: Retain
)");
  }

  std::string claim(const std::string& name, const std::string& cls, const std::string& extra = "",
                    const std::string& size = "10Mi") {
    return fmt::format(R"(
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {}}}
spec: {{storageClassName: {}, accessModes: [ReadWriteOnce], resources: {{requests: {{storage: {}}}}}{}}}
)",
                       name, cls, size, extra);
  }
  std::string podWithClaim(const std::string& name, const std::string& claimName) {
    return fmt::format(R"(
apiVersion: v1
kind: Pod
metadata: {{name: {}}}
spec:
  containers: [{{name: c, image: busybox}}]
  volumes: [{{name: v, persistentVolumeClaim: {{claimName: {}}}}}]
)",
                       name, claimName);
  }

  std::vector<json::object> list(const kube::Resource& r, const std::string& ns = "") {
    auto l = client_->listAll(r, ns, {});
    EXPECT_TRUE(l) << (l ? "" : l.error().message());
    return l ? l->items : std::vector<json::object>{};
  }
  std::optional<json::object> get(const kube::Resource& r, const std::string& ns, const std::string& name) {
    auto o = client_->get(r, ns, name);
    if (!o) return std::nullopt;
    return std::move(*o);
  }
  bool allClaimsBound(const std::string& ns, size_t count) {
    auto claims = list(res::kPersistentVolumeClaims, ns);
    lastClaims_.clear();
    for (auto& c : claims) {
      if (kube::str(c, {"status", "phase"}) != "Bound") lastClaims_ += fmt::format(" {}:{}", kube::objectName(c), kube::str(c, {"status", "phase"}));
    }
    if (claims.size() != count) lastClaims_ += fmt::format(" ({} claims, not {})", claims.size(), count);
    return lastClaims_.empty();
  }
  std::string lastClaims_;  // the claims not bound at the last look
  std::set<std::string> driverVolumes() {
    auto ids = csi_->listVolumes();
    EXPECT_TRUE(ids) << (ids ? "" : ids.error().message());
    return ids ? std::set<std::string>(ids->begin(), ids->end()) : std::set<std::string>{};
  }
  std::set<std::string> volumeHandles() {
    std::set<std::string> out;
    for (auto& pv : list(res::kPersistentVolumes)) out.emplace(kube::str(pv, {"spec", "csi", "volumeHandle"}));
    return out;
  }
  // Every claim bound to its own PV, each PV's volume in the driver, and no
  // other volume there.
  void expectOneVolumePerClaim(const std::string& ns) {
    auto claims = list(res::kPersistentVolumeClaims, ns);
    auto pvs = list(res::kPersistentVolumes);
    std::set<std::string> bound;
    for (auto& c : claims) {
      EXPECT_EQ(kube::str(c, {"status", "phase"}), "Bound") << kube::objectName(c);
      bound.emplace(kube::str(c, {"spec", "volumeName"}));
    }
    EXPECT_EQ(bound.size(), claims.size()) << "two claims share a volume";
    EXPECT_EQ(pvs.size(), claims.size()) << "a volume without a claim, or a claim without one";
    for (auto& pv : pvs) {
      EXPECT_TRUE(bound.count(std::string(kube::objectName(pv)))) << kube::objectName(pv);
      EXPECT_EQ(kube::objectName(pv), "pvc-" + std::string(kube::str(pv, {"spec", "claimRef", "uid"})));
    }
    EXPECT_EQ(driverVolumes(), volumeHandles());
  }

  testing::TempDir dir_;
  testing::ApiServerProcess server_{TRELLIS_APISERVER_BIN, dir_.path() + "/api"};
  std::unique_ptr<kube::Client> client_;
  std::unique_ptr<testing::Background> driver_;
  std::unique_ptr<CsiController> csi_;
  std::map<std::string, std::unique_ptr<testing::Background>> controllers_;
  std::map<std::string, std::string> logs_;
};

TEST_F(ControllersTest, ClaimsOfBothBindingModesGetVolumesAndGiveThemBack) {
  addNodes(2);
  addClasses();
  startControllers();
  constexpr int kEach = 25;
  std::string yaml;
  for (int i = 0; i < kEach; ++i) {
    yaml += "---" + claim(fmt::format("now-{}", i), "fast");
    yaml += "---" + claim(fmt::format("late-{}", i), "wffc");
    yaml += "---" + podWithClaim(fmt::format("user-{}", i), fmt::format("late-{}", i));
  }
  apply(yaml);
  ASSERT_TRUE(testing::waitFor([&] { return allClaimsBound("default", 2 * kEach); }, kWait)) << lastClaims_;
  expectOneVolumePerClaim("default");
  // WaitForFirstConsumer: each volume where its pod went, and the pod bound there.
  for (int i = 0; i < kEach; ++i) {
    std::string name = fmt::format("late-{}", i);
    ASSERT_TRUE(testing::waitFor([&] {
      auto pod = get(res::kPods, "default", fmt::format("user-{}", i));
      return pod && !kube::str(*pod, {"spec", "nodeName"}).empty();
    }, kWait));
    auto pod = get(res::kPods, "default", fmt::format("user-{}", i));
    auto pvc = get(res::kPersistentVolumeClaims, "default", name);
    auto pv = get(res::kPersistentVolumes, "", std::string(kube::str(*pvc, {"spec", "volumeName"})));
    std::string node(kube::str(*pod, {"spec", "nodeName"}));
    EXPECT_EQ(kube::annotation(*pvc, "volume.kubernetes.io/selected-node"), node);
    const json::array* terms = kube::array(*pv, {"spec", "nodeAffinity", "required", "nodeSelectorTerms"});
    ASSERT_TRUE(terms) << json::serialize(*pv);
    auto nodeObj = get(res::kNodes, "", node);
    EXPECT_TRUE(kube::nodeSelectorTermsMatch(*terms, *nodeObj));
    EXPECT_EQ(kube::annotation(*pv, "pv.kubernetes.io/provisioned-by"), "csi.trellis.dev");
    EXPECT_EQ(kube::annotation(*pvc, "pv.kubernetes.io/bind-completed"), "yes");
    EXPECT_EQ(kube::annotation(*pvc, "volume.kubernetes.io/storage-provisioner"), "csi.trellis.dev");
  }
  // The driver's pool is on n1: capacity says so, and the pods went there.
  std::map<std::string, std::string> capacity;  // node -> capacity of class wffc
  for (auto& c : list(res::kCSIStorageCapacities, "kube-system")) {
    if (kube::str(c, {"storageClassName"}) == "wffc") {
      capacity[std::string(kube::str(c, {"nodeTopology", "matchLabels", "topology.csi.trellis.dev/node"}))] =
          kube::str(c, {"capacity"});
    }
  }
  EXPECT_EQ(capacity.size(), 2u);
  EXPECT_EQ(capacity["n2"], "0");
  EXPECT_NE(capacity["n1"], "0");
  for (auto& p : list(res::kPods, "default")) EXPECT_EQ(kube::str(p, {"spec", "nodeName"}), "n1");
  // A pod using an Immediate claim goes where its volume is (the PV's node
  // affinity: n1), though n2 runs less.
  apply(podWithClaim("pinned", "now-0"));
  ASSERT_TRUE(testing::waitFor([&] {
    auto p = get(res::kPods, "default", "pinned");
    return p && kube::str(*p, {"spec", "nodeName"}) == "n1";
  }, kWait));
  // Pods without volumes spread by least allocation.
  for (int i = 0; i < 4; ++i) apply(fmt::format("apiVersion: v1\nkind: Pod\nmetadata: {{name: plain-{}}}\nspec: {{containers: [{{name: c, image: x}}]}}\n", i));
  std::set<std::string> plainNodes;
  ASSERT_TRUE(testing::waitFor([&] {
    plainNodes.clear();
    for (auto& p : list(res::kPods, "default")) {
      if (kube::objectName(p).starts_with("plain-")) plainNodes.emplace(kube::str(p, {"spec", "nodeName"}));
    }
    return plainNodes.count("n2") == 1;
  }, kWait));

  // Delete policy: deleting the claims removes their volumes; pods first, as
  // pvc-protection keeps claims in use.
  for (auto& p : list(res::kPods, "default")) ASSERT_TRUE(client_->remove(res::kPods, "default", kube::objectName(p)));
  for (auto& c : list(res::kPersistentVolumeClaims, "default")) {
    ASSERT_TRUE(client_->remove(res::kPersistentVolumeClaims, "default", kube::objectName(c)));
  }
  ASSERT_TRUE(testing::waitFor([&] { return list(res::kPersistentVolumes).empty(); }, kWait))
      << list(res::kPersistentVolumes).size() << " PVs left";
  EXPECT_TRUE(list(res::kPersistentVolumeClaims, "default").empty());
  EXPECT_TRUE(driverVolumes().empty());

  // Retain: the volume and its PV stay, Released.
  apply(claim("kept", "keep"));
  ASSERT_TRUE(testing::waitFor([&] { return allClaimsBound("default", 1); }, kWait));
  std::string pvName(kube::str(*get(res::kPersistentVolumeClaims, "default", "kept"), {"spec", "volumeName"}));
  ASSERT_TRUE(client_->remove(res::kPersistentVolumeClaims, "default", "kept"));
  ASSERT_TRUE(testing::waitFor([&] {
    auto pv = get(res::kPersistentVolumes, "", pvName);
    return pv && kube::str(*pv, {"status", "phase"}) == "Released";
  }, kWait));
  EXPECT_EQ(driverVolumes().size(), 1u);
}

TEST_F(ControllersTest, ClonesCarryTheSourcesData) {
  addNodes(1);
  addClasses();
  startControllers();
  apply(claim("source", "fast"));
  ASSERT_TRUE(testing::waitFor([&] { return allClaimsBound("default", 1); }, kWait));
  auto pv = get(res::kPersistentVolumes, "",
                std::string(kube::str(*get(res::kPersistentVolumeClaims, "default", "source"), {"spec", "volumeName"})));
  std::string image = pool() + "/volumes/" + std::string(kube::str(*pv, {"spec", "csi", "volumeHandle"})) + ".img";
  ASSERT_TRUE(fs::exists(image)) << image;
  const std::string marker = "trellis clone marker 42";
  {
    std::fstream f(image, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 * 7);
    f << marker;
  }
  apply(claim("copy", "fast", ", dataSource: {kind: PersistentVolumeClaim, name: source}"));
  ASSERT_TRUE(testing::waitFor([&] { return allClaimsBound("default", 2); }, kWait));
  auto copyPv = get(res::kPersistentVolumes, "",
                    std::string(kube::str(*get(res::kPersistentVolumeClaims, "default", "copy"), {"spec", "volumeName"})));
  std::string copyImage = pool() + "/volumes/" + std::string(kube::str(*copyPv, {"spec", "csi", "volumeHandle"})) + ".img";
  ASSERT_NE(copyImage, image);
  std::ifstream in(copyImage, std::ios::binary);
  in.seekg(4096 * 7);
  std::string read(marker.size(), '\0');
  in.read(read.data(), static_cast<std::streamsize>(read.size()));
  EXPECT_EQ(read, marker);

  // Growing the claim grows the volume; the node is asked to finish.
  auto grow = *get(res::kPersistentVolumeClaims, "default", "copy");
  kube::ensureObject(grow, {"spec", "resources", "requests"})["storage"] = "512Mi";
  ASSERT_TRUE(client_->update(res::kPersistentVolumeClaims, grow));
  ASSERT_TRUE(testing::waitFor([&] {
    auto pvc = get(res::kPersistentVolumeClaims, "default", "copy");
    return kube::str(*pvc, {"status", "allocatedResourceStatuses", "storage"}) == "NodeResizePending";
  }, kWait)) << json::serialize(*get(res::kPersistentVolumeClaims, "default", "copy"));
  auto grown = *get(res::kPersistentVolumeClaims, "default", "copy");
  EXPECT_EQ(kube::str(grown, {"status", "allocatedResources", "storage"}), "512Mi");
  EXPECT_EQ(kube::str((*kube::array(grown, {"status", "conditions"}))[0].as_object(), {"type"}), "FileSystemResizePending");
  EXPECT_EQ(kube::str(*get(res::kPersistentVolumes, "", std::string(kube::objectName(*copyPv))), {"spec", "capacity", "storage"}), "512Mi");
  EXPECT_EQ(fs::file_size(copyImage), 512u << 20);

  // A snapshot is taken as of its time, restores into a new claim, and goes
  // with its content under deletionPolicy Delete; Retain keeps the content.
  apply(R"(
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata: {name: snaps}
driver: csi.trellis.dev
deletionPolicy: Delete
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata: {name: kept-snaps}
driver: csi.trellis.dev
deletionPolicy: Retain
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: snap-1}
spec: {volumeSnapshotClassName: snaps, source: {persistentVolumeClaimName: source}}
)");
  auto ready = [&](const std::string& name) {
    return testing::waitFor([&] {
      auto vs = get(res::kVolumeSnapshots, "default", name);
      return vs && kube::boolean(*vs, {"status", "readyToUse"});
    }, kWait);
  };
  ASSERT_TRUE(ready("snap-1")) << json::serialize(*get(res::kVolumeSnapshots, "default", "snap-1"));
  auto snap = *get(res::kVolumeSnapshots, "default", "snap-1");
  EXPECT_EQ(kube::str(snap, {"status", "boundVolumeSnapshotContentName"}), "snapcontent-" + std::string(kube::uid(snap)));
  EXPECT_FALSE(kube::str(snap, {"status", "restoreSize"}).empty());
  {
    std::fstream f(image, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 * 7);
    f << "overwritten after the snapshot!";
  }
  // (The snapshot holds a 300Mi volume — the driver's smallest: a restore asks at least that.)
  apply(claim("small", "fast", ", dataSource: {kind: VolumeSnapshot, apiGroup: snapshot.storage.k8s.io, name: snap-1}"));
  apply(claim("restored", "fast", ", dataSource: {kind: VolumeSnapshot, apiGroup: snapshot.storage.k8s.io, name: snap-1}",
              "300Mi"));
  ASSERT_TRUE(testing::waitFor([&] {
    auto r = get(res::kPersistentVolumeClaims, "default", "restored");
    return r && kube::str(*r, {"status", "phase"}) == "Bound";
  }, kWait));
  ASSERT_TRUE(testing::waitFor([&] {
    for (auto& e : list(res::kEvents, "default")) {
      if (kube::str(e, {"involvedObject", "name"}) == "small" && kube::str(e, {"reason"}) == "ProvisioningFailed" &&
          kube::str(e, {"message"}).find("is less than the size") != std::string_view::npos) {
        return true;
      }
    }
    return false;
  }, kWait));
  auto restoredPv = get(res::kPersistentVolumes, "",
                        std::string(kube::str(*get(res::kPersistentVolumeClaims, "default", "restored"), {"spec", "volumeName"})));
  std::ifstream rin(pool() + "/volumes/" + std::string(kube::str(*restoredPv, {"spec", "csi", "volumeHandle"})) + ".img",
                    std::ios::binary);
  rin.seekg(4096 * 7);
  std::string restored(marker.size(), '\0');
  rin.read(restored.data(), static_cast<std::streamsize>(restored.size()));
  EXPECT_EQ(restored, marker);
  std::string contentName(kube::str(snap, {"status", "boundVolumeSnapshotContentName"}));
  ASSERT_TRUE(client_->remove(res::kVolumeSnapshots, "default", "snap-1"));
  ASSERT_TRUE(testing::waitFor([&] {
    return !get(res::kVolumeSnapshots, "default", "snap-1") && !get(res::kVolumeSnapshotContents, "", contentName);
  }, kWait));
  apply(R"(
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: snap-2}
spec: {volumeSnapshotClassName: kept-snaps, source: {persistentVolumeClaimName: source}}
)");
  ASSERT_TRUE(ready("snap-2"));
  std::string kept(kube::str(*get(res::kVolumeSnapshots, "default", "snap-2"), {"status", "boundVolumeSnapshotContentName"}));
  ASSERT_TRUE(client_->remove(res::kVolumeSnapshots, "default", "snap-2"));
  ASSERT_TRUE(testing::waitFor([&] { return !get(res::kVolumeSnapshots, "default", "snap-2"); }, kWait));
  auto keptContent = get(res::kVolumeSnapshotContents, "", kept);
  ASSERT_TRUE(keptContent) << "Retain deleted the content";
  EXPECT_FALSE(kube::str(*keptContent, {"status", "snapshotHandle"}).empty());
  // In the driver: snap-2's snapshot only (snap-1's went with its content).
  std::vector<std::string> inPool;
  for (auto& e : fs::directory_iterator(pool() + "/snapshots")) inPool.push_back(e.path().filename());
  ASSERT_EQ(inPool.size(), 1u) << fmt::format("{}", fmt::join(inPool, " "));
  EXPECT_EQ(inPool[0], std::string(kube::str(*keptContent, {"status", "snapshotHandle"})) + ".img");

  // A group snapshot of the claims labelled group=g1: one
  // CreateVolumeGroupSnapshot, a VolumeSnapshot per member (restorable),
  // all gone with the group.
  for (const char* n : {"source", "copy"}) {
    ASSERT_TRUE(client_->patch(res::kPersistentVolumeClaims, "default", n, kube::PatchType::kMerge,
                               R"({"metadata":{"labels":{"group":"g1"}}})"));
  }
  ASSERT_TRUE(client_->create(res::kVolumeGroupSnapshotClasses, "", json::object{
      {"metadata", json::object{{"name", "groups"}}}, {"driver", "csi.trellis.dev"}, {"deletionPolicy", "Delete"}}));
  ASSERT_TRUE(client_->create(res::kVolumeGroupSnapshots, "default", json::object{
      {"metadata", json::object{{"name", "g1"}}},
      {"spec", json::object{{"volumeGroupSnapshotClassName", "groups"},
                            {"source", json::object{{"selector", json::object{{"matchLabels", json::object{{"group", "g1"}}}}}}}}}}));
  ASSERT_TRUE(testing::waitFor([&] {
    auto g = get(res::kVolumeGroupSnapshots, "default", "g1");
    return g && kube::boolean(*g, {"status", "readyToUse"});
  }, kWait)) << json::serialize(*get(res::kVolumeGroupSnapshots, "default", "g1"));
  std::vector<std::string> memberNames;
  for (auto& vs : list(res::kVolumeSnapshots, "default")) {
    if (kube::str(vs, {"metadata", "labels", "groupsnapshot.storage.k8s.io/volumeGroupSnapshotName"}) == "g1") {
      memberNames.emplace_back(kube::objectName(vs));
    }
  }
  ASSERT_EQ(memberNames.size(), 2u);
  for (const std::string& m : memberNames) EXPECT_TRUE(ready(m)) << m;
  apply(claim("from-group", "fast",
              fmt::format(", dataSource: {{kind: VolumeSnapshot, apiGroup: snapshot.storage.k8s.io, name: {}}}", memberNames[0]),
              "512Mi"));
  ASSERT_TRUE(testing::waitFor([&] {
    auto r = get(res::kPersistentVolumeClaims, "default", "from-group");
    return r && kube::str(*r, {"status", "phase"}) == "Bound";
  }, kWait));
  auto snapshotsInPool = [&] {
    size_t n = 0;
    for (auto& e : fs::directory_iterator(pool() + "/snapshots")) n += e.path().extension() == ".img";
    return n;
  };
  EXPECT_EQ(snapshotsInPool(), 3u);  // the retained one and the group's two
  ASSERT_TRUE(client_->remove(res::kVolumeGroupSnapshots, "default", "g1"));
  ASSERT_TRUE(testing::waitFor([&] {
    if (get(res::kVolumeGroupSnapshots, "default", "g1")) return false;
    for (const std::string& m : memberNames) {
      if (get(res::kVolumeSnapshots, "default", m)) return false;
    }
    return list(res::kVolumeGroupSnapshotContents).empty() && snapshotsInPool() == 1;
  }, kWait)) << snapshotsInPool() << " snapshots in the pool";

  // A clone of a claim that does not exist fails with the sidecar's Event.
  apply(claim("orphan", "fast", ", dataSource: {kind: PersistentVolumeClaim, name: nothing}"));
  ASSERT_TRUE(testing::waitFor([&] {
    for (auto& e : list(res::kEvents, "default")) {
      if (kube::str(e, {"involvedObject", "name"}) == "orphan" && kube::str(e, {"reason"}) == "ProvisioningFailed" &&
          kube::str(e, {"message"}).find("source claim \"nothing\" not found") != std::string_view::npos) {
        return true;
      }
    }
    return false;
  }, kWait));
  EXPECT_EQ(kube::str(*get(res::kPersistentVolumeClaims, "default", "orphan"), {"status", "phase"}), "Pending");
}

TEST_F(ControllersTest, KillNineAtRandomMomentsConvergesWithNothingTwiceOrLeaked) {
  addNodes(2);
  addClasses();
  std::mt19937 rng(::testing::UnitTest::GetInstance()->random_seed());
  std::uniform_int_distribution<int> delayMs(0, 400);
  constexpr int kClaims = 30;
  startControllers();
  constexpr int kCreated = 37;  // every fifth deleted: 30 left
  static_assert(kCreated - (kCreated + 1) / 5 == kClaims);
  // Claims (half WaitForFirstConsumer, with a pod each) arrive while the
  // controllers die; every fifth is deleted again at once, so some go while
  // their volume is being made.
  std::thread creator([&] {
    for (int i = 0; i < kCreated; ++i) {
      std::string name = fmt::format("c-{}", i);
      apply(claim(name, i % 2 ? "fast" : "wffc"));
      if (i % 2 == 0) apply(podWithClaim(fmt::format("p-{}", i), name));
      if (i % 5 == 4) {
        if (i % 2 == 0) {
          EXPECT_TRUE(client_->remove(res::kPods, "default", fmt::format("p-{}", i)));
        }
        auto st = client_->remove(res::kPersistentVolumeClaims, "default", name);
        EXPECT_TRUE(st) << name << ": " << (st ? "" : st.error().message());
      }
    }
  });
  for (int round = 0; round < 5; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(delayMs(rng)));
    stopControllers("a", SIGKILL);
    startControllers();
  }
  creator.join();
  ASSERT_TRUE(testing::waitFor([&] { return allClaimsBound("default", kClaims); }, kWait)) << lastClaims_;
  ASSERT_TRUE(testing::waitFor([&] { return list(res::kPersistentVolumes).size() == kClaims; }, kWait));
  ASSERT_TRUE(testing::waitFor([&] { return driverVolumes().size() == kClaims; }, kWait)) << driverVolumes().size();
  expectOneVolumePerClaim("default");

  // Deletion under the same treatment: half the claims go, with their volumes.
  std::vector<std::string> doomed;
  for (auto& c : list(res::kPersistentVolumeClaims, "default")) {
    if (doomed.size() < kClaims / 2) doomed.emplace_back(kube::objectName(c));
  }
  std::thread deleter([&] {
    for (const std::string& name : doomed) {
      (void)client_->remove(res::kPods, "default", "p-" + name.substr(2));
      (void)client_->remove(res::kPersistentVolumeClaims, "default", name);
    }
  });
  for (int round = 0; round < 5; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(delayMs(rng)));
    stopControllers("a", SIGKILL);
    startControllers();
  }
  deleter.join();
  ASSERT_TRUE(testing::waitFor([&] { return list(res::kPersistentVolumes).size() == kClaims / 2; }, kWait));
  ASSERT_TRUE(testing::waitFor([&] { return driverVolumes().size() == kClaims / 2; }, kWait));
  expectOneVolumePerClaim("default");
}

// The narrow window: the driver has made the volume, the controllers die
// before its PV exists, and the claim is deleted while they are down. The
// provisioning finalizer keeps the claim until the restart has asked for
// that volume again and deleted it.
TEST_F(ControllersTest, KilledBetweenCreateVolumeAndItsPvLeaksNothing) {
  addNodes(1);
  addClasses();
  int interrupted = 0;
  for (int round = 0; round < 4; ++round) {
    auto& c = startControllers();
    testing::KillOnFile kill(pool() + "/volumes", [](std::string_view n) { return n.ends_with(".img"); }, c.pid(),
                             std::chrono::microseconds(round * 300));
    std::string name = fmt::format("r{}", round);
    apply(claim(name, "fast"));
    ASSERT_TRUE(testing::waitFor([&] { return kill.fired(); }, kWait));
    ASSERT_TRUE(c.wait(kWait));
    stopControllers("a", SIGKILL);
    auto pvc = get(res::kPersistentVolumeClaims, "default", name);
    ASSERT_TRUE(pvc);
    if (!get(res::kPersistentVolumes, "", "pvc-" + std::string(kube::uid(*pvc)))) ++interrupted;
    ASSERT_TRUE(client_->remove(res::kPersistentVolumeClaims, "default", name));
  }
  EXPECT_GE(interrupted, 2) << "the kills did not land between CreateVolume and the PV";
  EXPECT_FALSE(driverVolumes().empty());
  startControllers();
  ASSERT_TRUE(testing::waitFor([&] {
    return list(res::kPersistentVolumeClaims, "default").empty() && list(res::kPersistentVolumes).empty() &&
           driverVolumes().empty();
  }, kWait)) << driverVolumes().size() << " volumes left";
}

TEST_F(ControllersTest, ClaimInUseStaysUntilItsPodGoesAndNamespaceDeletionCompletes) {
  addNodes(1);
  addClasses();
  startControllers();
  ASSERT_TRUE(client_->create(res::kNamespaces, "", json::object{{"metadata", json::object{{"name", "team"}}}}));
  apply(claim("data", "fast") + "---" + podWithClaim("app", "data"), "team");
  ASSERT_TRUE(testing::waitFor([&] {
    auto pod = get(res::kPods, "team", "app");
    return allClaimsBound("team", 1) && pod && !kube::str(*pod, {"spec", "nodeName"}).empty();
  }, kWait));
  // The pod runs (as a kubelet would report): the claim is protected.
  auto pod = *get(res::kPods, "team", "app");
  kube::ensureObject(pod, {"status"})["phase"] = "Running";
  ASSERT_TRUE(client_->update(res::kPods, pod, "status"));
  ASSERT_TRUE(client_->remove(res::kPersistentVolumeClaims, "team", "data"));
  std::this_thread::sleep_for(1s);  // time for a wrong controller to let go
  auto pvc = get(res::kPersistentVolumeClaims, "team", "data");
  ASSERT_TRUE(pvc) << "a claim in use by a running pod was deleted";
  EXPECT_TRUE(kube::hasFinalizer(*pvc, "kubernetes.io/pvc-protection"));
  // The default ServiceAccount and kube-root-ca.crt appeared meanwhile.
  EXPECT_TRUE(get(res::kServiceAccounts, "team", "default"));
  auto ca = get(res::kConfigMaps, "team", "kube-root-ca.crt");
  ASSERT_TRUE(ca);
  EXPECT_NE(kube::str(*ca, {"data", "ca.crt"}).find("BEGIN CERTIFICATE"), std::string_view::npos);

  // As a user does it: kubectl waits until the namespace is gone.
  auto deleted = testing::run(fmt::format("kubectl --kubeconfig {} delete namespace team --timeout=30s 2>&1", server_.kubeconfig()));
  ASSERT_EQ(deleted.exitCode, 0) << deleted.out;
  EXPECT_FALSE(get(res::kNamespaces, "", "team"));
  ASSERT_TRUE(testing::waitFor([&] { return list(res::kPersistentVolumes).empty() && driverVolumes().empty(); }, kWait));
}

TEST_F(ControllersTest, SchedulerHonoursEveryConstraint) {
  apply(R"(
apiVersion: v1
kind: Node
metadata: {name: small, labels: {zone: a, disk: ssd}}
status: {allocatable: {cpu: "1", memory: 1Gi, pods: "10"}}
---
apiVersion: v1
kind: Node
metadata: {name: big, labels: {zone: b}}
status: {allocatable: {cpu: "8", memory: 16Gi, pods: "10"}}
---
apiVersion: v1
kind: Node
metadata: {name: tainted, labels: {zone: c}}
spec: {taints: [{key: dedicated, value: gpu, effect: NoSchedule}]}
status: {allocatable: {cpu: "8", memory: 16Gi, pods: "10"}}
---
apiVersion: v1
kind: Node
metadata: {name: cordoned, labels: {zone: d}}
spec: {unschedulable: true}
status: {allocatable: {cpu: "8", memory: 16Gi, pods: "10"}}
)");
  startControllers("a", "--controllers scheduler");
  auto pod = [](const std::string& name, const std::string& spec) {
    return fmt::format("apiVersion: v1\nkind: Pod\nmetadata: {{name: {}, labels: {{app: {}}}}}\nspec:\n{}\n", name, name, spec);
  };
  apply(pod("selector", "  nodeSelector: {disk: ssd}\n  containers: [{name: c, image: x}]"));
  apply(pod("tolerant", "  nodeSelector: {zone: c}\n  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]\n  containers: [{name: c, image: x}]"));
  apply(pod("hungry", "  containers: [{name: c, image: x, resources: {requests: {cpu: \"2\"}}}]"));
  apply(pod("affine", "  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}}\n  containers: [{name: c, image: x}]"));
  apply(pod("port-1", "  nodeSelector: {zone: a}\n  containers: [{name: c, image: x, ports: [{containerPort: 80, hostPort: 8080}]}]"));
  auto nodeOf = [&](const std::string& name) {
    std::string node;
    testing::waitFor([&] {
      auto p = get(res::kPods, "default", name);
      node = p ? std::string(kube::str(*p, {"spec", "nodeName"})) : "";
      return !node.empty();
    }, kWait);
    return node;
  };
  EXPECT_EQ(nodeOf("selector"), "small");
  EXPECT_EQ(nodeOf("tolerant"), "tainted");
  EXPECT_EQ(nodeOf("hungry"), "big");
  EXPECT_EQ(nodeOf("affine"), "small");
  EXPECT_EQ(nodeOf("port-1"), "small");
  // Anti-affinity by zone against "selector" (on small): never zone a.
  apply(pod("apart", "  affinity: {podAntiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchLabels: {app: selector}}, topologyKey: zone}]}}\n  containers: [{name: c, image: x}]"));
  EXPECT_EQ(nodeOf("apart"), "big");
  // Affinity to "hungry"'s zone.
  apply(pod("near", "  affinity: {podAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchLabels: {app: hungry}}, topologyKey: zone}]}}\n  containers: [{name: c, image: x}]"));
  EXPECT_EQ(nodeOf("near"), "big");

  // Nothing fits: a host port taken on the only selectable node, too much cpu.
  apply(pod("port-2", "  nodeSelector: {zone: a}\n  containers: [{name: c, image: x, ports: [{containerPort: 80, hostPort: 8080}]}]"));
  apply(pod("huge", "  containers: [{name: c, image: x, resources: {requests: {cpu: \"64\"}}}]"));
  auto condition = [&](const std::string& name) {
    std::string msg;
    testing::waitFor([&] {
      auto p = get(res::kPods, "default", name);
      if (const json::array* conds = p ? kube::array(*p, {"status", "conditions"}) : nullptr) {
        for (auto& c : *conds) {
          if (kube::str(c.as_object(), {"type"}) == "PodScheduled" && kube::str(c.as_object(), {"status"}) == "False") {
            msg = kube::str(c.as_object(), {"message"});
          }
        }
      }
      return !msg.empty();
    }, kWait);
    return msg;
  };
  EXPECT_EQ(condition("port-2"),
            "0/4 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, 1 node(s) didn't "
            "match Pod's node affinity/selector, 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were "
            "unschedulable. preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling.")
      << "(reasons sorted as kube-scheduler sorts them)";
  EXPECT_EQ(condition("huge"),
            "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable, 2 "
            "Insufficient cpu. preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling.");
  // Room appears: uncordoning a node schedules the waiting pod.
  auto cordoned = *get(res::kNodes, "", "cordoned");
  kube::ensureObject(cordoned, {"spec"})["unschedulable"] = false;
  ASSERT_TRUE(client_->update(res::kNodes, cordoned));
  auto big = *get(res::kNodes, "", "cordoned");
  kube::ensureObject(big, {"status", "allocatable"})["cpu"] = "128";
  ASSERT_TRUE(client_->update(res::kNodes, big, "status"));
  EXPECT_EQ(nodeOf("huge"), "cordoned");
}

TEST_F(ControllersTest, EndpointSlicesFollowPodsAndReadiness) {
  addNodes(1, ", topology.kubernetes.io/zone: z1");
  startControllers("a", "--controllers endpointslice,endpoints");
  constexpr int kPods = 150;
  std::string yaml = R"(
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}
)";
  for (int i = 0; i < kPods; ++i) {
    yaml += fmt::format(R"(---
apiVersion: v1
kind: Pod
metadata: {{name: web-{:03}, labels: {{app: web}}}}
spec: {{nodeName: n1, containers: [{{name: c, image: x, ports: [{{name: http, containerPort: 8080}}]}}]}}
)",
                        i);
  }
  apply(yaml);
  for (int i = 0; i < kPods; ++i) {
    auto p = *get(res::kPods, "default", fmt::format("web-{:03}", i));
    std::string ip = fmt::format("10.244.{}.{}", i / 200, i % 200 + 2);
    kube::ensureObject(p, {"status"})["podIPs"] = json::array{json::object{{"ip", ip}}};
    kube::ensureObject(p, {"status"})["podIP"] = ip;
    kube::ensureObject(p, {"status"})["conditions"] =
        json::array{json::object{{"type", "Ready"}, {"status", i % 3 ? "True" : "False"}}};
    ASSERT_TRUE(client_->update(res::kPods, p, "status"));
  }
  auto slices = [&] {
    std::vector<json::object> out;
    for (auto& s : list(res::kEndpointSlices, "default")) {
      if (kube::str(s, {"metadata", "labels", "kubernetes.io/service-name"}) == "web") out.push_back(s);
    }
    return out;
  };
  auto counts = [&](int& total, int& ready) {
    total = ready = 0;
    for (auto& s : slices()) {
      for (auto& e : s["endpoints"].as_array()) {
        ++total;
        ready += kube::boolean(e.as_object(), {"conditions", "ready"});
      }
    }
  };
  int total = 0, ready = 0;
  ASSERT_TRUE(testing::waitFor([&] {
    counts(total, ready);
    return total == kPods && ready == kPods - (kPods + 2) / 3;
  }, kWait)) << total << " endpoints, " << ready << " ready";
  auto all = slices();
  ASSERT_EQ(all.size(), 2u);
  for (auto& s : all) {
    EXPECT_LE(s["endpoints"].as_array().size(), 100u);
    EXPECT_EQ(kube::str(s, {"metadata", "labels", "endpointslice.kubernetes.io/managed-by"}), "endpointslice-controller.k8s.io");
    EXPECT_EQ(json::serialize(s["ports"]), R"([{"name":"http","port":8080,"protocol":"TCP"}])");
    auto& e = s["endpoints"].as_array()[0].as_object();
    EXPECT_EQ(kube::str(e, {"nodeName"}), "n1");
    EXPECT_EQ(kube::str(e, {"zone"}), "z1");
    EXPECT_EQ(kube::str(e, {"targetRef", "kind"}), "Pod");
  }
  // The endpoints controller works apart from the slice controller: wait for it to catch up, too.
  size_t addresses = 0;
  EXPECT_TRUE(testing::waitFor([&] {
    auto ep = get(res::kEndpoints, "default", "web");
    auto* subsets = ep ? ep->if_contains("subsets") : nullptr;
    if (!subsets || !subsets->is_array() || subsets->as_array().empty()) return false;
    auto* a = kube::array(subsets->as_array()[0].as_object(), {"addresses"});
    addresses = a ? a->size() : 0;
    return addresses == size_t(kPods - (kPods + 2) / 3);
  }, kWait)) << addresses << " ready addresses in Endpoints";

  // One pod turns ready; one terminates (serving, not ready, terminating).
  auto p0 = *get(res::kPods, "default", "web-000");
  kube::ensureObject(p0, {"status"})["conditions"] = json::array{json::object{{"type", "Ready"}, {"status", "True"}}};
  ASSERT_TRUE(client_->update(res::kPods, p0, "status"));
  ASSERT_TRUE(testing::waitFor([&] {
    counts(total, ready);
    return ready == kPods - (kPods + 2) / 3 + 1;
  }, kWait));
  // Pods going away leave the slices; the service going takes its slices.
  for (int i = 0; i < kPods; i += 2) ASSERT_TRUE(client_->remove(res::kPods, "default", fmt::format("web-{:03}", i)));
  ASSERT_TRUE(testing::waitFor([&] {
    counts(total, ready);
    return total == kPods / 2 && slices().size() == 1;
  }, kWait)) << total;
  ASSERT_TRUE(client_->remove(res::kServices, "default", "web"));
  ASSERT_TRUE(testing::waitFor([&] { return slices().empty() && !get(res::kEndpoints, "default", "web"); }, kWait));
}

TEST_F(ControllersTest, NodeIpamGivesEachNodeItsOwnSubnetsAndReusesFreedOnes) {
  startControllers("a", "--controllers nodeipam");
  addNodes(3);
  auto cidrs = [&](const std::string& node) {
    std::string out;
    testing::waitFor([&] {
      auto n = get(res::kNodes, "", node);
      const json::array* a = n ? kube::array(*n, {"spec", "podCIDRs"}) : nullptr;
      out = a ? json::serialize(*a) : "";
      return !out.empty();
    }, kWait);
    return out;
  };
  std::set<std::string> seen{cidrs("n1"), cidrs("n2"), cidrs("n3")};
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_TRUE(seen.count(R"(["10.244.0.0/24","fd00:10::/64"])")) << *seen.begin();
  std::string n2 = cidrs("n2");
  ASSERT_TRUE(client_->remove(res::kNodes, "", "n2"));
  // Restarting loses nothing: what is taken is read from the nodes.
  stopControllers("a", SIGKILL);
  startControllers("a", "--controllers nodeipam");
  apply("apiVersion: v1\nkind: Node\nmetadata: {name: n4}\n");
  EXPECT_EQ(cidrs("n4"), n2);
}

TEST_F(ControllersTest, OfTwoReplicasOneActsAndTheOtherTakesOver) {
  addNodes(1);
  addClasses();
  auto& a = startControllers("a", "", true);
  ASSERT_TRUE(a.waitForLine([](const std::string& l) { return l.find("msg=leading") != std::string::npos; }, kWait));
  auto& b = startControllers("b", "", true);
  apply(claim("one", "fast"));
  ASSERT_TRUE(testing::waitFor([&] { return allClaimsBound("default", 1); }, kWait));
  for (const std::string& l : b.lines()) EXPECT_EQ(l.find("msg=leading"), std::string::npos) << "both lead: " << l;
  for (const std::string& l : b.lines()) EXPECT_EQ(l.find("msg=provisioned"), std::string::npos) << l;
  stopControllers("a", SIGKILL);
  apply(claim("two", "fast"));
  ASSERT_TRUE(b.waitForLine([](const std::string& l) { return l.find("msg=leading") != std::string::npos; }, kWait));
  ASSERT_TRUE(testing::waitFor([&] { return allClaimsBound("default", 2); }, kWait));
  expectOneVolumePerClaim("default");
}

// A pod's volume is attached to its node through a VolumeAttachment and
// ControllerPublishVolume, and detached when the pod goes; the driver's
// refusal shows as attachError.
TEST_F(ControllersTest, AttachesThePodsVolumesAndDetachesWhenThePodGoes) {
  addNodes(2);
  addClasses();
  startControllers();
  auto onNode = [&](const std::string& name, const std::string& claimName, const std::string& node) {
    return fmt::format(R"(
apiVersion: v1
kind: Pod
metadata: {{name: {}}}
spec:
  nodeName: {}
  containers: [{{name: c, image: busybox}}]
  volumes: [{{name: v, persistentVolumeClaim: {{claimName: {}}}}}]
)",
                       name, node, claimName);
  };
  apply(claim("data", "fast") + "---" + onNode("user", "data", "n1") + "---" + claim("other", "fast") + "---" +
        onNode("stranger", "other", "n2"));
  auto attachmentOf = [&](const std::string& claimName) -> std::optional<json::object> {
    auto pvc = get(res::kPersistentVolumeClaims, "default", claimName);
    if (!pvc) return std::nullopt;
    for (auto& va : list(res::kVolumeAttachments)) {
      if (kube::str(va, {"spec", "source", "persistentVolumeName"}) == kube::str(*pvc, {"spec", "volumeName"}) &&
          !kube::str(*pvc, {"spec", "volumeName"}).empty()) {
        return va;
      }
    }
    return std::nullopt;
  };
  std::optional<json::object> va;
  ASSERT_TRUE(testing::waitFor([&] {
    va = attachmentOf("data");
    return va && kube::boolean(*va, {"status", "attached"});
  }, kWait));
  EXPECT_EQ(kube::str(*va, {"spec", "nodeName"}), "n1");
  EXPECT_EQ(kube::str(*va, {"spec", "attacher"}), "csi.trellis.dev");
  EXPECT_TRUE(kube::objectName(*va).starts_with("csi-"));
  EXPECT_TRUE(kube::hasFinalizer(*va, "external-attacher/csi-trellis-dev"));
  std::string pvName(kube::str(*va, {"spec", "source", "persistentVolumeName"}));
  EXPECT_TRUE(kube::hasFinalizer(*get(res::kPersistentVolumes, "", pvName), "external-attacher/csi-trellis-dev"));
  // The pool is n1's: publishing to n2 is refused, and says why.
  ASSERT_TRUE(testing::waitFor([&] {
    auto other = attachmentOf("other");
    return other && kube::str(*other, {"status", "attachError", "message"}).find("not found") != std::string_view::npos;
  }, kWait)) << (attachmentOf("other") ? json::serialize(*attachmentOf("other")) : "no attachment");
  // The pod goes: detached, and the PV is free of the attacher.
  ASSERT_TRUE(client_->remove(res::kPods, "default", "user"));
  ASSERT_TRUE(testing::waitFor([&] { return !attachmentOf("data"); }, kWait));
  ASSERT_TRUE(testing::waitFor([&] {
    return !kube::hasFinalizer(*get(res::kPersistentVolumes, "", pvName), "external-attacher/csi-trellis-dev");
  }, kWait));
  ASSERT_TRUE(client_->remove(res::kPods, "default", "stranger"));
  ASSERT_TRUE(testing::waitFor([&] { return list(res::kVolumeAttachments).empty(); }, kWait));
}

// A node whose Lease stops: Ready=Unknown, unreachable taints, pods not
// ready, evictions as the pods' tolerations say; the node that renews is
// left alone, and a node back to Ready loses the taints.
TEST_F(ControllersTest, NodeLifecycleTaintsANodeWhoseLeaseStops) {
  addNodes(2);
  startControllers("a", "--controllers nodelifecycle --node-monitor-grace-period 1.5");
  auto renew = [&](const std::string& node) {
    std::string now = kube::microTimeNow();
    json::object lease{{"metadata", json::object{{"name", node}, {"namespace", "kube-node-lease"}}},
                       {"spec", json::object{{"holderIdentity", node}, {"leaseDurationSeconds", 40}, {"renewTime", now}}}};
    auto have = client_->get(res::kLeases, "kube-node-lease", node);
    if (have) {
      (*have)["spec"].as_object()["renewTime"] = now;
      ASSERT_TRUE(client_->update(res::kLeases, *have));
    } else {
      ASSERT_TRUE(client_->create(res::kLeases, "kube-node-lease", lease));
    }
  };
  renew("n1");
  renew("n2");
  std::atomic<bool> stop{false};
  std::thread renewer([&] {
    while (!stop) {
      renew("n1");
      std::this_thread::sleep_for(200ms);
    }
  });
  auto pod = [&](const std::string& name, const std::string& tolerations) {
    apply(fmt::format("apiVersion: v1\nkind: Pod\nmetadata: {{name: {}}}\nspec: {{nodeName: n2, containers: [{{name: c, image: x}}]{}}}\n",
                      name, tolerations));
    auto p = *get(res::kPods, "default", name);
    kube::ensureObject(p, {"status"})["conditions"] = json::array{json::object{{"type", "Ready"}, {"status", "True"}}};
    ASSERT_TRUE(client_->update(res::kPods, p, "status"));
  };
  pod("none", "");
  pod("brief", ", tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 5}]");
  pod("forever", ", tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute}]");
  auto readyOf = [&](const json::object& o) {
    for (auto& c : *kube::array(o, {"status", "conditions"})) {
      if (kube::str(c.as_object(), {"type"}) == "Ready") return std::string(kube::str(c.as_object(), {"status"}));
    }
    return std::string();
  };
  auto taintKeys = [&](const std::string& node) {
    std::set<std::string> keys;
    if (auto n = get(res::kNodes, "", node); n && kube::array(*n, {"spec", "taints"})) {
      for (auto& t : *kube::array(*n, {"spec", "taints"})) {
        keys.insert(fmt::format("{}:{}", kube::str(t.as_object(), {"key"}), kube::str(t.as_object(), {"effect"})));
      }
    }
    return keys;
  };
  std::set<std::string> unreachable{"node.kubernetes.io/unreachable:NoExecute", "node.kubernetes.io/unreachable:NoSchedule"};
  ASSERT_TRUE(testing::waitFor([&] { return taintKeys("n2") == unreachable; }, kWait));
  EXPECT_EQ(readyOf(*get(res::kNodes, "", "n2")), "Unknown");
  EXPECT_TRUE(testing::waitFor([&] { return !get(res::kPods, "default", "none"); }, kWait)) << "no toleration: evicted at once";
  auto brief = get(res::kPods, "default", "brief");
  ASSERT_TRUE(brief) << "evicted before its tolerationSeconds";
  EXPECT_TRUE(testing::waitFor([&] { return readyOf(*get(res::kPods, "default", "brief")) == "False"; }, kWait));
  EXPECT_TRUE(testing::waitFor([&] { return !get(res::kPods, "default", "brief"); }, kWait));
  EXPECT_TRUE(get(res::kPods, "default", "forever"));
  EXPECT_TRUE(taintKeys("n1").empty()) << "the node that renews was touched";
  // n2's agent is back: Lease renewed and Ready=True posted.
  renew("n2");
  auto n2 = *get(res::kNodes, "", "n2");
  kube::ensureObject(n2, {"status"})["conditions"] = json::array{json::object{{"type", "Ready"}, {"status", "True"}}};
  ASSERT_TRUE(client_->update(res::kNodes, n2, "status"));
  EXPECT_TRUE(testing::waitFor([&] { return taintKeys("n2").empty(); }, kWait));
  stop = true;
  renewer.join();
}

// A ReplicaSet heals, scales (kubectl scale), adopts a matching orphan,
// survives kill -9 mid-scale without a pod too many, and its pods go with it.
TEST_F(ControllersTest, ReplicaSetKeepsItsReplicas) {
  startControllers("a", "--controllers replicaset,garbagecollector");
  apply(R"(
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: busybox}]}
)");
  auto owned = [&] {
    std::vector<std::string> names;
    for (auto& p : list(res::kPods, "default")) {
      auto ref = kube::controllerOf(p);
      if (ref && ref->kind == "ReplicaSet" && ref->name == "web" && !kube::beingDeleted(p)) names.emplace_back(kube::objectName(p));
    }
    return names;
  };
  auto settlesAt = [&](size_t n) {
    return testing::waitFor([&] {
      auto rs = get(res::kReplicaSets, "default", "web");
      return owned().size() == n && list(res::kPods, "default").size() == n && rs &&
             kube::integer(*rs, {"status", "replicas"}, -1) == static_cast<int64_t>(n);
    }, kWait);
  };
  auto kubectl = [&](const std::string& args) {
    auto r = testing::run(fmt::format("kubectl --kubeconfig {} {} 2>&1", server_.kubeconfig(), args));
    EXPECT_EQ(r.exitCode, 0) << args << ": " << r.out;
  };
  ASSERT_TRUE(settlesAt(3)) << owned().size();
  std::string victim = owned()[0];
  ASSERT_TRUE(client_->remove(res::kPods, "default", victim));
  ASSERT_TRUE(settlesAt(3));
  for (auto& n : owned()) EXPECT_NE(n, victim);
  kubectl("scale replicaset web --replicas=5");
  ASSERT_TRUE(settlesAt(5));
  kubectl("scale replicaset web --replicas=1");
  ASSERT_TRUE(settlesAt(1));
  // An orphan with the selector's labels is adopted, and one of two goes.
  apply("apiVersion: v1\nkind: Pod\nmetadata: {name: stray, labels: {app: web}}\nspec: {containers: [{name: c, image: x}]}\n");
  ASSERT_TRUE(settlesAt(1));
  // kill -9 while scaling up: no pod too many after the restart.
  kubectl("scale replicaset web --replicas=20");
  std::this_thread::sleep_for(50ms);
  stopControllers("a", SIGKILL);
  startControllers("a", "--controllers replicaset,garbagecollector");
  ASSERT_TRUE(settlesAt(20)) << owned().size();
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(list(res::kPods, "default").size(), 20u);
  kubectl("delete replicaset web");
  ASSERT_TRUE(testing::waitFor([&] { return list(res::kPods, "default").empty(); }, kWait));
}

// Cascading deletion in the three modes kubectl offers, and owners that
// are gone before the collector starts.
TEST_F(ControllersTest, GarbageCollectorCascadesInAllThreeModes) {
  startControllers("a", "--controllers garbagecollector");
  auto make = [&](const kube::Resource& r, const std::string& name, std::vector<kube::OwnerReference> owners,
                  std::vector<std::string> finalizers = {}) {
    json::array refs, fins;
    for (auto& o : owners) refs.push_back(kube::toJson(o));
    for (auto& f : finalizers) fins.push_back(json::string(f));
    json::object meta{{"name", name}, {"namespace", "default"}, {"ownerReferences", std::move(refs)}, {"finalizers", std::move(fins)}};
    json::object o{{"metadata", std::move(meta)}};
    if (r.kind == "Pod") o["spec"] = json::object{{"containers", json::array{json::object{{"name", "c"}, {"image", "x"}}}}};
    auto created = client_->create(r, "default", std::move(o));
    EXPECT_TRUE(created) << (created ? "" : created.error().message());
    return created ? *created : json::object();
  };
  auto ref = [](const json::object& owner, bool block = false) {
    return kube::OwnerReference{"v1", "ConfigMap", std::string(kube::objectName(owner)), std::string(kube::uid(owner)), true, block};
  };
  auto kubectl = [&](const std::string& args) {
    auto r = testing::run(fmt::format("kubectl --kubeconfig {} {} 2>&1", server_.kubeconfig(), args));
    EXPECT_EQ(r.exitCode, 0) << args << ": " << r.out;
  };
  auto gone = [&](const kube::Resource& r, const std::string& name) {
    return testing::waitFor([&] { return !get(r, "default", name); }, kWait);
  };

  // Background (kubectl's default): the owner goes, then its dependents.
  auto a = make(res::kConfigMaps, "a", {});
  make(res::kConfigMaps, "a-1", {ref(a)});
  make(res::kPods, "a-2", {ref(a, true)});
  kubectl("delete configmap a");
  EXPECT_TRUE(gone(res::kConfigMaps, "a-1"));
  EXPECT_TRUE(gone(res::kPods, "a-2"));

  // Foreground: the owner waits (finalizer foregroundDeletion) until the
  // dependents that block it are gone.
  auto b = make(res::kConfigMaps, "b", {});
  make(res::kPods, "b-1", {ref(b, true)}, {"example.com/hold"});
  make(res::kConfigMaps, "b-2", {ref(b, false)});
  kubectl("delete configmap b --cascade=foreground --wait=false");
  EXPECT_TRUE(gone(res::kConfigMaps, "b-2"));
  ASSERT_TRUE(testing::waitFor([&] {
    auto p = get(res::kPods, "default", "b-1");
    return p && kube::beingDeleted(*p);
  }, kWait));
  auto owner = get(res::kConfigMaps, "default", "b");
  ASSERT_TRUE(owner) << "the owner went before a dependent that blocks it";
  EXPECT_TRUE(kube::hasFinalizer(*owner, "foregroundDeletion"));
  auto held = *get(res::kPods, "default", "b-1");
  ASSERT_TRUE(client_->patch(res::kPods, "default", "b-1", kube::PatchType::kMerge, *kube::removeFinalizerPatch(held, "example.com/hold")));
  EXPECT_TRUE(gone(res::kPods, "b-1"));
  EXPECT_TRUE(gone(res::kConfigMaps, "b"));

  // Orphan: the owner goes, the dependents stay without the reference.
  auto c = make(res::kConfigMaps, "c", {});
  auto other = make(res::kConfigMaps, "other", {});
  make(res::kConfigMaps, "c-1", {ref(c)});
  make(res::kSecrets, "c-2", {ref(c), ref(other)});
  kubectl("delete configmap c --cascade=orphan");
  EXPECT_TRUE(gone(res::kConfigMaps, "c"));
  auto c1 = get(res::kConfigMaps, "default", "c-1");
  ASSERT_TRUE(c1);
  EXPECT_TRUE(kube::ownerReferences(*c1).empty());
  auto c2 = get(res::kSecrets, "default", "c-2");
  ASSERT_TRUE(c2);
  ASSERT_EQ(kube::ownerReferences(*c2).size(), 1u);
  EXPECT_EQ(kube::ownerReferences(*c2)[0].name, "other");

  // Dangling references: all owners gone → deleted; some gone → dropped.
  make(res::kConfigMaps, "lost", {kube::OwnerReference{"v1", "ConfigMap", "never", "00000000-dead", true, false}});
  make(res::kConfigMaps, "half", {ref(other), kube::OwnerReference{"v1", "ConfigMap", "never", "00000000-dead", false, false}});
  EXPECT_TRUE(gone(res::kConfigMaps, "lost"));
  ASSERT_TRUE(testing::waitFor([&] {
    auto h = get(res::kConfigMaps, "default", "half");
    return h && kube::ownerReferences(*h).size() == 1;
  }, kWait));
  // An owner of a kind not watched is never judged gone.
  make(res::kConfigMaps, "foreign", {kube::OwnerReference{"example.com/v1", "Widget", "w", "1234", true, false}});
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE(get(res::kConfigMaps, "default", "foreign"));
}

// With csi-provisioner off, a provisioner keeping to the external-provisioner
// contract (acting only on claims annotated for it, creating a PV pre-bound
// to the claim) gets its claims bound by this binder.
TEST_F(ControllersTest, BindsWhatAStockProvisionerCreates) {
  addNodes(1);
  apply(R"(
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: other}
provisioner: example.com/other
)");
  startControllers("a", "--controllers=*,-csi-provisioner");
  apply(claim("ext", "other"));
  std::optional<json::object> pvc;
  ASSERT_TRUE(testing::waitFor([&] {
    pvc = get(res::kPersistentVolumeClaims, "default", "ext");
    return pvc && kube::annotation(*pvc, "volume.kubernetes.io/storage-provisioner") == "example.com/other";
  }, kWait));
  // The fake provisioner's one act.
  apply(fmt::format(R"(
apiVersion: v1
kind: PersistentVolume
metadata: {{name: pvc-{0}, annotations: {{pv.kubernetes.io/provisioned-by: example.com/other}}}}
spec:
  capacity: {{storage: 10Mi}}
  accessModes: [ReadWriteOnce]
  storageClassName: other
  persistentVolumeReclaimPolicy: Retain
  claimRef: {{kind: PersistentVolumeClaim, namespace: default, name: ext, uid: {0}}}
  hostPath: {{path: /tmp/ext}}
)",
                    kube::uid(*pvc)));
  ASSERT_TRUE(testing::waitFor([&] { return allClaimsBound("default", 1); }, kWait));
  EXPECT_EQ(kube::str(*get(res::kPersistentVolumeClaims, "default", "ext"), {"spec", "volumeName"}),
            "pvc-" + std::string(kube::uid(*pvc)));
  EXPECT_TRUE(driverVolumes().empty()) << "csi-provisioner was off";
}

}  // namespace
}  // namespace trellis::controllers
