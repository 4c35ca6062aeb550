// trellis-csi as the sidecars and kubelet drive it: a real driver process,
// a gRPC client on its unix socket, real loop devices, mkfs, mounts. The
// pool lives on an XFS filesystem (reflink on) that the test makes on a
// loop device of its own, so snapshots and clones are real reflinks; every
// mount, loop device and file the test makes is removed at the end.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "common/linux/storage.h"
#include "common/testing/kill_on_file.h"
#include "common/testing/testing.h"
#include "csi/proto/csi.grpc.pb.h"
#include "csi/proto/pluginregistration.grpc.pb.h"

namespace v1 = ::csi::v1;
namespace fs = std::filesystem;
using trellis::testing::TempDir;
using grpc::StatusCode;

namespace {

constexpr const char* kNode = "node-a";
constexpr int64_t kMiB = 1 << 20;

// A trellis-csi child process on a socket in `dir`.
class Driver {
 public:
  Driver(std::string dir, std::string pool) : dir_(std::move(dir)), pool_(std::move(pool)) {}
  ~Driver() { stop(SIGTERM); }

  void start() {
    socket_ = dir_ + "/csi.sock";
    // Everything the child needs is built before fork: it may not allocate.
    std::string logPath = dir_ + "/driver.log";
    std::vector<std::string> args{TRELLIS_CSI_BIN, "--endpoint", "unix://" + socket_, "--node-id", kNode, "--mode", "all",
                                  "--pool-dir", pool_, "--registration-socket", dir_ + "/reg.sock",
                                  "--default-fs-type", "ext4", "--log-level", "debug"};
    args.insert(args.end(), extraArgs.begin(), extraArgs.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
      int log = ::open(logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(log, 1);
      ::dup2(log, 2);
      ::execv(TRELLIS_CSI_BIN, argv.data());
      ::_exit(127);
    }
    channel_ = grpc::CreateChannel("unix://" + socket_, grpc::InsecureChannelCredentials());
    ASSERT_TRUE(channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30))) << log();
    identity = v1::Identity::NewStub(channel_);
    controller = v1::Controller::NewStub(channel_);
    group = v1::GroupController::NewStub(channel_);
    node = v1::Node::NewStub(channel_);
  }
  // Closes the client side, then signals and reaps the driver.
  void stop(int sig) {
    identity.reset();
    controller.reset();
    group.reset();
    node.reset();
    channel_.reset();
    kill(sig);
  }
  // Signals and reaps the driver; the stubs stay (calls under way in other
  // threads fail instead of touching freed stubs).
  void kill(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  std::string log() const { return trellis::testing::readFile(dir_ + "/driver.log"); }
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return pid_; }

  std::vector<std::string> extraArgs;  // appended to the command line at the next start()
  std::unique_ptr<v1::Identity::Stub> identity;
  std::unique_ptr<v1::Controller::Stub> controller;
  std::unique_ptr<v1::GroupController::Stub> group;
  std::unique_ptr<v1::Node::Stub> node;

 private:
  std::string dir_, pool_, socket_;
  pid_t pid_ = -1;
  std::shared_ptr<grpc::Channel> channel_;
};

v1::VolumeCapability mountCap(const std::string& fs = "", v1::VolumeCapability::AccessMode::Mode mode =
                                                              v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER) {
  v1::VolumeCapability c;
  c.mutable_mount()->set_fs_type(fs);
  c.mutable_access_mode()->set_mode(mode);
  return c;
}
v1::VolumeCapability blockCap() {
  v1::VolumeCapability c;
  c.mutable_block();
  c.mutable_access_mode()->set_mode(v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  return c;
}

// One unary call with a fresh context.
template <typename Stub, typename Req, typename Resp>
grpc::Status call(Stub& stub, grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*), const Req& req, Resp* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return (stub.*method)(&ctx, req, resp);
}

// Mounts of the test's directory and loop devices of the pool: what must
// be gone after cleanup.
size_t mountsUnder(const std::string& dir) {
  size_t n = 0;
  for (const auto& m : trellis::sys::mounts()) {
    if (m.mountPoint.rfind(dir + "/", 0) == 0) ++n;
  }
  return n;
}

std::string fileContent(const std::string& path) { return trellis::testing::readFile(path); }

::testing::AssertionResult isOk2(const trellis::base::Status& st) {
  if (st) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << st.error().message();
}

::testing::AssertionResult isOk(const grpc::Status& st) {
  if (st.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "gRPC code " << st.error_code() << ": " << st.error_message();
}

class CsiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  }

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, mounts)";
    // An XFS pool with reflink on a sparse 8 GiB file.
    poolImage_ = tmp_.file("pool.img");
    { std::ofstream(poolImage_).close(); }
    ASSERT_EQ(::truncate(poolImage_.c_str(), 8LL << 30), 0);
    auto dev = trellis::sys::loopAttach(poolImage_);
    ASSERT_TRUE(dev) << dev.error().message();
    poolDev_ = *dev;
    ASSERT_TRUE(trellis::sys::runChecked({"mkfs.xfs", "-q", "-f", "-m", "reflink=1", poolDev_}));
    pool_ = tmp_.file("pool");
    fs::create_directories(pool_);
    ASSERT_TRUE(trellis::sys::mountFs(poolDev_, pool_, "xfs", 0, ""));
    fs::create_directories(tmp_.file("kubelet"));
    driver_ = std::make_unique<Driver>(tmp_.path(), pool_);
    driver_->start();
  }

  void TearDown() override {
    if (::geteuid() != 0) return;
    if (driver_) {
      cleanupVolumes();
      driver_->stop(SIGTERM);
    }
    // Whatever a failed test left: mounts under the tmp dir (newest first,
    // so bind mounts go before what they bind), loops of the pool.
    for (int i = 0; i < 3 && mountsUnder(tmp_.path() + "/kubelet"); ++i) {
      auto all = trellis::sys::mounts();
      for (auto it = all.rbegin(); it != all.rend(); ++it) {
        if (it->mountPoint.rfind(tmp_.path() + "/kubelet/", 0) == 0) (void)trellis::sys::unmount(it->mountPoint);
      }
    }
    EXPECT_EQ(mountsUnder(tmp_.path() + "/kubelet"), 0u) << "mounts left after cleanup";
    for (const auto& [dev, file] : trellis::sys::loopsUnder(pool_)) (void)trellis::sys::loopDetach(dev);
    EXPECT_TRUE(trellis::sys::loopsUnder(pool_).empty()) << "loop devices left after cleanup";
    EXPECT_TRUE(isOk2(trellis::sys::unmount(pool_)));
    if (!poolDev_.empty()) (void)trellis::sys::loopDetach(poolDev_);
  }

  // Unpublishes, unstages and deletes everything the driver knows, through the API.
  void cleanupVolumes() {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(pool_ + "/meta/node", ec)) {
      std::string id = e.path().stem().string();
      for (const auto& m : trellis::sys::mounts()) {
        if (m.mountPoint.rfind(tmp_.path() + "/kubelet/pods/", 0) == 0) {
          v1::NodeUnpublishVolumeRequest r;
          r.set_volume_id(id);
          r.set_target_path(m.mountPoint);
          v1::NodeUnpublishVolumeResponse resp;
          (void)call(*driver_->node, &v1::Node::Stub::NodeUnpublishVolume, r, &resp);
        }
      }
    }
  }

  std::string path(const std::string& rel) { return tmp_.path() + "/kubelet/" + rel; }

  v1::Volume create(const std::string& name, int64_t bytes, v1::VolumeCapability cap = mountCap(),
                    const v1::VolumeContentSource* source = nullptr) {
    v1::CreateVolumeRequest r;
    r.set_name(name);
    if (bytes) r.mutable_capacity_range()->set_required_bytes(bytes);
    *r.add_volume_capabilities() = cap;
    if (source) *r.mutable_volume_content_source() = *source;
    v1::CreateVolumeResponse resp;
    auto st = call(*driver_->controller, &v1::Controller::Stub::CreateVolume, r, &resp);
    EXPECT_TRUE(isOk(st)) << st.error_message();
    return resp.volume();
  }
  grpc::Status stage(const std::string& id, const std::string& staging, v1::VolumeCapability cap = mountCap()) {
    v1::NodeStageVolumeRequest r;
    r.set_volume_id(id);
    r.set_staging_target_path(staging);
    *r.mutable_volume_capability() = cap;
    v1::NodeStageVolumeResponse resp;
    return call(*driver_->node, &v1::Node::Stub::NodeStageVolume, r, &resp);
  }
  grpc::Status unstage(const std::string& id, const std::string& staging) {
    v1::NodeUnstageVolumeRequest r;
    r.set_volume_id(id);
    r.set_staging_target_path(staging);
    v1::NodeUnstageVolumeResponse resp;
    return call(*driver_->node, &v1::Node::Stub::NodeUnstageVolume, r, &resp);
  }
  grpc::Status publish(const std::string& id, const std::string& staging, const std::string& target,
                       v1::VolumeCapability cap = mountCap(), bool readonly = false) {
    v1::NodePublishVolumeRequest r;
    r.set_volume_id(id);
    r.set_staging_target_path(staging);
    r.set_target_path(target);
    r.set_readonly(readonly);
    *r.mutable_volume_capability() = cap;
    v1::NodePublishVolumeResponse resp;
    return call(*driver_->node, &v1::Node::Stub::NodePublishVolume, r, &resp);
  }
  grpc::Status unpublish(const std::string& id, const std::string& target) {
    v1::NodeUnpublishVolumeRequest r;
    r.set_volume_id(id);
    r.set_target_path(target);
    v1::NodeUnpublishVolumeResponse resp;
    return call(*driver_->node, &v1::Node::Stub::NodeUnpublishVolume, r, &resp);
  }
  grpc::Status remove(const std::string& id) {
    v1::DeleteVolumeRequest r;
    r.set_volume_id(id);
    v1::DeleteVolumeResponse resp;
    return call(*driver_->controller, &v1::Controller::Stub::DeleteVolume, r, &resp);
  }
  v1::Snapshot snapshot(const std::string& name, const std::string& volume) {
    v1::CreateSnapshotRequest r;
    r.set_name(name);
    r.set_source_volume_id(volume);
    v1::CreateSnapshotResponse resp;
    auto st = call(*driver_->controller, &v1::Controller::Stub::CreateSnapshot, r, &resp);
    EXPECT_TRUE(isOk(st)) << st.error_message();
    return resp.snapshot();
  }
  // Everything the pool holds: files and records (to show a refused call changed nothing).
  std::set<std::string> poolListing() {
    std::set<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(pool_)) out.insert(e.path().string());
    return out;
  }

  TempDir tmp_;
  std::string poolImage_, poolDev_, pool_;
  std::unique_ptr<Driver> driver_;
};

TEST_F(CsiTest, IdentityCapabilitiesAndRegistration) {
  v1::GetPluginInfoResponse info;
  ASSERT_TRUE(isOk(call(*driver_->identity, &v1::Identity::Stub::GetPluginInfo, v1::GetPluginInfoRequest(), &info)));
  EXPECT_EQ(info.name(), "csi.trellis.dev");
  EXPECT_FALSE(info.vendor_version().empty());
  v1::GetPluginCapabilitiesResponse caps;
  ASSERT_TRUE(isOk(call(*driver_->identity, &v1::Identity::Stub::GetPluginCapabilities, v1::GetPluginCapabilitiesRequest(), &caps)));
  std::set<int> services;
  bool online = false;
  for (const auto& c : caps.capabilities()) {
    if (c.has_service()) services.insert(c.service().type());
    if (c.has_volume_expansion()) online = c.volume_expansion().type() == v1::PluginCapability::VolumeExpansion::ONLINE;
  }
  EXPECT_EQ(services, (std::set<int>{1, 2, 3}));
  EXPECT_TRUE(online);
  v1::ProbeResponse probe;
  ASSERT_TRUE(isOk(call(*driver_->identity, &v1::Identity::Stub::Probe, v1::ProbeRequest(), &probe)));
  EXPECT_TRUE(probe.ready().value());

  v1::ControllerGetCapabilitiesResponse cc;
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ControllerGetCapabilities, v1::ControllerGetCapabilitiesRequest(), &cc)));
  std::set<int> rpcs;
  for (const auto& c : cc.capabilities()) rpcs.insert(c.rpc().type());
  EXPECT_EQ(rpcs.size(), 15u);  // every controller capability of v1.12
  v1::NodeGetCapabilitiesResponse nc;
  ASSERT_TRUE(isOk(call(*driver_->node, &v1::Node::Stub::NodeGetCapabilities, v1::NodeGetCapabilitiesRequest(), &nc)));
  EXPECT_EQ(nc.capabilities_size(), 6);
  v1::GroupControllerGetCapabilitiesResponse gc;
  ASSERT_TRUE(call(*driver_->group, &v1::GroupController::Stub::GroupControllerGetCapabilities,
                   v1::GroupControllerGetCapabilitiesRequest(), &gc).ok());
  EXPECT_EQ(gc.capabilities_size(), 1);
  v1::NodeGetInfoResponse ni;
  ASSERT_TRUE(isOk(call(*driver_->node, &v1::Node::Stub::NodeGetInfo, v1::NodeGetInfoRequest(), &ni)));
  EXPECT_EQ(ni.node_id(), kNode);
  EXPECT_EQ(ni.accessible_topology().segments().at("topology.csi.trellis.dev/node"), kNode);

  // Kubelet's plugin watcher: GetInfo on the registration socket.
  auto regChannel = grpc::CreateChannel("unix://" + tmp_.file("reg.sock"), grpc::InsecureChannelCredentials());
  auto reg = pluginregistration::Registration::NewStub(regChannel);
  pluginregistration::PluginInfo pi;
  ASSERT_TRUE(isOk(call(*reg, &pluginregistration::Registration::Stub::GetInfo, pluginregistration::InfoRequest(), &pi)));
  EXPECT_EQ(pi.type(), "CSIPlugin");
  EXPECT_EQ(pi.name(), "csi.trellis.dev");
  EXPECT_EQ(pi.endpoint(), tmp_.file("csi.sock"));
  pluginregistration::RegistrationStatus rs;
  rs.set_plugin_registered(true);
  pluginregistration::RegistrationStatusResponse rsr;
  EXPECT_TRUE(isOk(call(*reg, &pluginregistration::Registration::Stub::NotifyRegistrationStatus, rs, &rsr)));
}

TEST_F(CsiTest, CreateVolumeValidatesIdempotentAndErrorCodes) {
  auto before = poolListing();
  auto createCode = [&](v1::CreateVolumeRequest r) {
    v1::CreateVolumeResponse resp;
    return call(*driver_->controller, &v1::Controller::Stub::CreateVolume, r, &resp).error_code();
  };
  v1::CreateVolumeRequest r;
  *r.add_volume_capabilities() = mountCap();
  EXPECT_EQ(createCode(r), StatusCode::INVALID_ARGUMENT);  // no name
  r.set_name("pvc-1");
  v1::CreateVolumeRequest noCaps;
  noCaps.set_name("pvc-1");
  EXPECT_EQ(createCode(noCaps), StatusCode::INVALID_ARGUMENT);
  auto multi = r;
  *multi.mutable_volume_capabilities(0) = mountCap("", v1::VolumeCapability::AccessMode::MULTI_NODE_MULTI_WRITER);
  EXPECT_EQ(createCode(multi), StatusCode::INVALID_ARGUMENT);
  auto badFs = r;
  *badFs.mutable_volume_capabilities(0) = mountCap("ntfs");
  EXPECT_EQ(createCode(badFs), StatusCode::INVALID_ARGUMENT);
  auto badRange = r;
  badRange.mutable_capacity_range()->set_required_bytes(10 * kMiB);
  badRange.mutable_capacity_range()->set_limit_bytes(5 * kMiB);
  EXPECT_EQ(createCode(badRange), StatusCode::INVALID_ARGUMENT);
  auto tooBig = r;
  tooBig.mutable_capacity_range()->set_required_bytes(1LL << 50);
  EXPECT_EQ(createCode(tooBig), StatusCode::RESOURCE_EXHAUSTED);
  auto elsewhere = r;
  (*elsewhere.mutable_accessibility_requirements()->add_requisite()->mutable_segments())["topology.csi.trellis.dev/node"] = "node-b";
  EXPECT_EQ(createCode(elsewhere), StatusCode::RESOURCE_EXHAUSTED);
  auto badParam = r;
  (*badParam.mutable_parameters())["color"] = "blue";
  EXPECT_EQ(createCode(badParam), StatusCode::INVALID_ARGUMENT);
  auto control = r;
  control.set_name(std::string("pvc\x01", 4));
  EXPECT_EQ(createCode(control), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(poolListing(), before) << "a refused CreateVolume changed the pool";

  // No capacity range: the documented default (1 GiB), sparse on disk.
  auto v = create("pvc-1", 0);
  EXPECT_EQ(v.capacity_bytes(), 1LL << 30);
  EXPECT_EQ(v.accessible_topology(0).segments().at("topology.csi.trellis.dev/node"), kNode);
  struct stat st{};
  ASSERT_EQ(::stat((pool_ + "/volumes/" + v.volume_id() + ".img").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 1LL << 30);
  EXPECT_LT(st.st_blocks * 512, 1 * kMiB) << "thin: no space used before writes";
  // Same name, same arguments: the same volume. Different size: ALREADY_EXISTS.
  auto again = create("pvc-1", 0);
  EXPECT_EQ(again.volume_id(), v.volume_id());
  auto other = r;
  other.mutable_capacity_range()->set_required_bytes(2LL << 30);
  EXPECT_EQ(createCode(other), StatusCode::ALREADY_EXISTS);
  // Block mode without a range gets the default too.
  auto b = create("pvc-block", 0, blockCap());
  EXPECT_EQ(b.capacity_bytes(), 1LL << 30);
  // xfs volumes are at least 300 MiB (mkfs.xfs's minimum).
  auto x = create("pvc-xfs", 16 * kMiB, mountCap("xfs"));
  EXPECT_EQ(x.capacity_bytes(), 300 * kMiB);
  // Exact sizes are honoured: required == limit.
  v1::CreateVolumeRequest exact = r;
  exact.set_name("pvc-exact");
  exact.mutable_capacity_range()->set_required_bytes(5 * kMiB + 4096);
  exact.mutable_capacity_range()->set_limit_bytes(5 * kMiB + 4096);
  v1::CreateVolumeResponse er;
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::CreateVolume, exact, &er)));
  EXPECT_EQ(er.volume().capacity_bytes(), 5 * kMiB + 4096);

  // GetCapacity: this node's pool; another node's topology has none.
  v1::GetCapacityRequest gc;
  v1::GetCapacityResponse gcr;
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::GetCapacity, gc, &gcr)));
  EXPECT_GT(gcr.available_capacity(), 5LL << 30);
  (*gc.mutable_accessible_topology()->mutable_segments())["topology.csi.trellis.dev/node"] = "node-b";
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::GetCapacity, gc, &gcr)));
  EXPECT_EQ(gcr.available_capacity(), 0);

  for (const auto& id : {v.volume_id(), b.volume_id(), x.volume_id(), er.volume().volume_id()}) EXPECT_TRUE(isOk(remove(id)));
  EXPECT_TRUE(isOk(remove(v.volume_id()))) << "DeleteVolume is idempotent";
  EXPECT_TRUE(isOk(remove("reallyfakevolumeid")));
}

TEST_F(CsiTest, PathCharactersInIdsAreRefusedAndChangeNothing) {
  auto v = create("pvc-ids", 64 * kMiB);
  auto before = poolListing();
  for (const std::string& bad : std::vector<std::string>{"../../etc/passwd", "vol/../../x", "a b", "..", std::string("x\0y", 3), std::string(200, 'a')}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(remove(bad).error_code(), StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(stage(bad, path("staging/x")).error_code(), StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(publish(bad, path("staging/x"), path("pods/x")).error_code(), StatusCode::INVALID_ARGUMENT);
    v1::CreateSnapshotRequest s;
    s.set_name("snap");
    s.set_source_volume_id(bad);
    v1::CreateSnapshotResponse sr;
    EXPECT_EQ(call(*driver_->controller, &v1::Controller::Stub::CreateSnapshot, s, &sr).error_code(), StatusCode::INVALID_ARGUMENT);
    v1::ControllerPublishVolumeRequest p;
    p.set_volume_id(bad);
    p.set_node_id(kNode);
    *p.mutable_volume_capability() = mountCap();
    v1::ControllerPublishVolumeResponse pr;
    EXPECT_EQ(call(*driver_->controller, &v1::Controller::Stub::ControllerPublishVolume, p, &pr).error_code(),
              StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_EQ(poolListing(), before);
  EXPECT_TRUE(fs::exists("/etc/passwd"));
  EXPECT_TRUE(isOk(remove(v.volume_id())));
}

TEST_F(CsiTest, FilesystemLifecycleDataSurvivesRestage) {
  auto v = create("pvc-life", 64 * kMiB);
  // ControllerPublish: an attachment record for this node; another node cannot reach the pool.
  v1::ControllerPublishVolumeRequest p;
  p.set_volume_id(v.volume_id());
  p.set_node_id(kNode);
  *p.mutable_volume_capability() = mountCap();
  v1::ControllerPublishVolumeResponse pr;
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ControllerPublishVolume, p, &pr)));
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ControllerPublishVolume, p, &pr))) << "idempotent";
  auto ro = p;
  ro.set_readonly(true);
  EXPECT_EQ(call(*driver_->controller, &v1::Controller::Stub::ControllerPublishVolume, ro, &pr).error_code(), StatusCode::ALREADY_EXISTS);
  auto elsewhere = p;
  elsewhere.set_node_id("node-b");
  EXPECT_EQ(call(*driver_->controller, &v1::Controller::Stub::ControllerPublishVolume, elsewhere, &pr).error_code(), StatusCode::NOT_FOUND);
  auto missing = p;
  missing.set_volume_id("vol-00000000000000000000000000000000");
  EXPECT_EQ(call(*driver_->controller, &v1::Controller::Stub::ControllerPublishVolume, missing, &pr).error_code(), StatusCode::NOT_FOUND);
  v1::ControllerGetVolumeRequest g;
  g.set_volume_id(v.volume_id());
  v1::ControllerGetVolumeResponse gr;
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ControllerGetVolume, g, &gr)));
  ASSERT_EQ(gr.status().published_node_ids_size(), 1);
  EXPECT_EQ(gr.status().published_node_ids(0), kNode);
  EXPECT_FALSE(gr.status().volume_condition().abnormal());
  EXPECT_EQ(remove(v.volume_id()).error_code(), StatusCode::FAILED_PRECONDITION) << "published volumes are not deleted";

  std::string staging = path("staging/pvc-life"), target = path("pods/p1/volumes/pvc-life");
  fs::create_directories(staging);
  EXPECT_EQ(publish(v.volume_id(), staging, target).error_code(), StatusCode::FAILED_PRECONDITION) << "not staged yet";
  ASSERT_TRUE(isOk(stage(v.volume_id(), staging))) << driver_->log();
  ASSERT_TRUE(isOk(stage(v.volume_id(), staging))) << "idempotent";
  EXPECT_EQ(stage(v.volume_id(), path("staging/other")).error_code(), StatusCode::ALREADY_EXISTS);
  auto m = trellis::sys::mountAt(staging);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->fsType, "ext4");
  ASSERT_TRUE(isOk(publish(v.volume_id(), staging, target))) << driver_->log();
  ASSERT_TRUE(isOk(publish(v.volume_id(), staging, target))) << "idempotent";
  EXPECT_EQ(publish(v.volume_id(), staging, target, mountCap(), true).error_code(), StatusCode::ALREADY_EXISTS);
  trellis::testing::writeFile(target + "/data.txt", "hello from a pod");
  ::sync();

  // Stats: bytes and inodes of the mounted filesystem.
  v1::NodeGetVolumeStatsRequest sr;
  sr.set_volume_id(v.volume_id());
  sr.set_volume_path(target);
  v1::NodeGetVolumeStatsResponse srr;
  ASSERT_TRUE(isOk(call(*driver_->node, &v1::Node::Stub::NodeGetVolumeStats, sr, &srr)));
  ASSERT_EQ(srr.usage_size(), 2);
  EXPECT_EQ(srr.usage(0).unit(), v1::VolumeUsage::BYTES);
  EXPECT_GT(srr.usage(0).total(), 50 * kMiB);
  EXPECT_GT(srr.usage(0).used(), 0);
  EXPECT_EQ(srr.usage(1).unit(), v1::VolumeUsage::INODES);
  EXPECT_GT(srr.usage(1).used(), 10);
  EXPECT_FALSE(srr.volume_condition().abnormal());
  sr.set_volume_path(path("nowhere"));
  EXPECT_EQ(call(*driver_->node, &v1::Node::Stub::NodeGetVolumeStats, sr, &srr).error_code(), StatusCode::NOT_FOUND);

  // A read-only second publish of the same staged volume (SINGLE_NODE_MULTI_WRITER semantics on one node).
  std::string roTarget = path("pods/p2/volumes/pvc-life");
  ASSERT_TRUE(isOk(publish(v.volume_id(), staging, roTarget, mountCap(), true)));
  EXPECT_EQ(fileContent(roTarget + "/data.txt"), "hello from a pod");
  EXPECT_FALSE(std::ofstream(roTarget + "/nope.txt").is_open()) << "read-only publish accepted a write";
  EXPECT_EQ(unstage(v.volume_id(), staging).error_code(), StatusCode::FAILED_PRECONDITION) << "still published";

  // Unpublish, unstage; restage and publish again: the data is there.
  ASSERT_TRUE(isOk(unpublish(v.volume_id(), roTarget)));
  ASSERT_TRUE(isOk(unpublish(v.volume_id(), target)));
  ASSERT_TRUE(isOk(unpublish(v.volume_id(), target))) << "idempotent";
  EXPECT_FALSE(fs::exists(target));
  ASSERT_TRUE(isOk(unstage(v.volume_id(), staging)));
  ASSERT_TRUE(isOk(unstage(v.volume_id(), staging))) << "idempotent";
  EXPECT_FALSE(trellis::sys::mountAt(staging));
  EXPECT_FALSE(trellis::sys::loopFind(pool_ + "/volumes/" + v.volume_id() + ".img")) << "loop device left attached";
  ASSERT_TRUE(isOk(stage(v.volume_id(), staging)));
  ASSERT_TRUE(isOk(publish(v.volume_id(), staging, target)));
  EXPECT_EQ(fileContent(target + "/data.txt"), "hello from a pod");
  ASSERT_TRUE(isOk(unpublish(v.volume_id(), target)));
  ASSERT_TRUE(isOk(unstage(v.volume_id(), staging)));

  v1::ControllerUnpublishVolumeRequest u;
  u.set_volume_id(v.volume_id());
  u.set_node_id(kNode);
  v1::ControllerUnpublishVolumeResponse ur;
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ControllerUnpublishVolume, u, &ur)));
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ControllerUnpublishVolume, u, &ur)));
  EXPECT_TRUE(isOk(remove(v.volume_id())));
  EXPECT_EQ(mountsUnder(tmp_.path() + "/kubelet"), 0u);
  EXPECT_TRUE(trellis::sys::loopsUnder(pool_).empty());
  EXPECT_FALSE(fs::exists(pool_ + "/volumes/" + v.volume_id() + ".img"));
}

TEST_F(CsiTest, SnapshotsAndClonesCarryTheData) {
  auto v = create("pvc-src", 64 * kMiB, mountCap("xfs"));
  std::string staging = path("staging/src"), target = path("pods/p/src");
  ASSERT_TRUE(isOk(stage(v.volume_id(), staging, mountCap("xfs")))) << driver_->log();
  ASSERT_TRUE(isOk(publish(v.volume_id(), staging, target, mountCap("xfs"))));
  trellis::testing::writeFile(target + "/a.txt", "version 1");
  // A snapshot of a mounted volume: the filesystem is frozen for the copy, so it holds what was written.
  auto snap = snapshot("snap-1", v.volume_id());
  EXPECT_TRUE(snap.ready_to_use());
  EXPECT_EQ(snap.source_volume_id(), v.volume_id());
  EXPECT_EQ(snap.size_bytes(), v.capacity_bytes());
  EXPECT_EQ(snapshot("snap-1", v.volume_id()).snapshot_id(), snap.snapshot_id()) << "idempotent";
  trellis::testing::writeFile(target + "/a.txt", "version 2");
  ::sync();

  // Restore the snapshot: version 1. Clone the volume: version 2.
  v1::VolumeContentSource fromSnap;
  fromSnap.mutable_snapshot()->set_snapshot_id(snap.snapshot_id());
  auto restored = create("pvc-restored", 64 * kMiB, mountCap("xfs"), &fromSnap);
  EXPECT_EQ(restored.content_source().snapshot().snapshot_id(), snap.snapshot_id());
  v1::VolumeContentSource fromVol;
  fromVol.mutable_volume()->set_volume_id(v.volume_id());
  auto clone = create("pvc-clone", 128 * kMiB, mountCap("xfs"), &fromVol);  // larger: grown at stage
  ASSERT_TRUE(isOk(stage(restored.volume_id(), path("staging/restored"), mountCap("xfs")))) << driver_->log();
  ASSERT_TRUE(isOk(stage(clone.volume_id(), path("staging/clone"), mountCap("xfs")))) << driver_->log();
  EXPECT_EQ(fileContent(path("staging/restored") + "/a.txt"), "version 1");
  EXPECT_EQ(fileContent(path("staging/clone") + "/a.txt"), "version 2");
  struct statvfs sv{};
  ASSERT_EQ(::statvfs(path("staging/clone").c_str(), &sv), 0);
  EXPECT_GT(static_cast<int64_t>(sv.f_blocks * sv.f_frsize), 100 * kMiB) << "the clone's filesystem was not grown to 128 MiB";

  // Snapshot listing: by id, by source, unknown ids give empty lists.
  v1::ListSnapshotsRequest ls;
  v1::ListSnapshotsResponse lsr;
  ls.set_source_volume_id(v.volume_id());
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ListSnapshots, ls, &lsr)));
  ASSERT_EQ(lsr.entries_size(), 1);
  ls.set_source_volume_id("");
  ls.set_snapshot_id("snap-00000000000000000000000000000000");
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ListSnapshots, ls, &lsr)));
  EXPECT_EQ(lsr.entries_size(), 0);
  v1::GetSnapshotRequest gs;
  gs.set_snapshot_id(snap.snapshot_id());
  v1::GetSnapshotResponse gsr;
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::GetSnapshot, gs, &gsr)));
  EXPECT_EQ(gsr.snapshot().snapshot_id(), snap.snapshot_id());
  gs.set_snapshot_id("snap-00000000000000000000000000000000");
  EXPECT_EQ(call(*driver_->controller, &v1::Controller::Stub::GetSnapshot, gs, &gsr).error_code(), StatusCode::NOT_FOUND);
  // A clone smaller than its source is out of range; a missing source is not found.
  v1::CreateVolumeRequest small;
  small.set_name("pvc-small");
  small.mutable_capacity_range()->set_limit_bytes(32 * kMiB);
  *small.add_volume_capabilities() = mountCap();
  *small.mutable_volume_content_source() = fromVol;
  v1::CreateVolumeResponse cr;
  EXPECT_EQ(call(*driver_->controller, &v1::Controller::Stub::CreateVolume, small, &cr).error_code(), StatusCode::OUT_OF_RANGE);
  small.mutable_volume_content_source()->mutable_snapshot()->set_snapshot_id("snap-00000000000000000000000000000000");
  small.clear_capacity_range();
  EXPECT_EQ(call(*driver_->controller, &v1::Controller::Stub::CreateVolume, small, &cr).error_code(), StatusCode::NOT_FOUND);

  for (const auto& [id, st] : {std::pair{restored.volume_id(), path("staging/restored")}, {clone.volume_id(), path("staging/clone")}}) {
    ASSERT_TRUE(isOk(unstage(id, st)));
    ASSERT_TRUE(isOk(remove(id)));
  }
  ASSERT_TRUE(isOk(unpublish(v.volume_id(), target)));
  ASSERT_TRUE(isOk(unstage(v.volume_id(), staging)));
  ASSERT_TRUE(isOk(remove(v.volume_id())));
  v1::DeleteSnapshotRequest ds;
  ds.set_snapshot_id(snap.snapshot_id());
  v1::DeleteSnapshotResponse dsr;
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::DeleteSnapshot, ds, &dsr)));
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::DeleteSnapshot, ds, &dsr))) << "idempotent";
  EXPECT_TRUE(fs::is_empty(pool_ + "/snapshots"));
  EXPECT_TRUE(fs::is_empty(pool_ + "/volumes"));
}

// Whether this process may grow a mounted ext4 (EXT4_IOC_RESIZE_FS needs
// CAP_SYS_RESOURCE, which some sandboxes drop even for root).
bool haveCapSysResource() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) >> 24) & 1;
  }
  return false;
}

TEST_F(CsiTest, OnlineExpansionSeenByDf) {
  std::vector<std::string> fsTypes{"xfs", "btrfs"};
  if (haveCapSysResource()) {
    fsTypes.push_back("ext4");
  } else {
    std::cout << "note: no CAP_SYS_RESOURCE here, so ext4 online growth is not exercised (xfs and btrfs are)\n";
  }
  for (const auto& fsType : fsTypes) {
    SCOPED_TRACE(fsType);
    auto v = create("pvc-grow-" + fsType, 320 * kMiB, mountCap(fsType));
    std::string staging = path("staging/grow-" + fsType), target = path("pods/p/grow-" + fsType);
    ASSERT_TRUE(isOk(stage(v.volume_id(), staging, mountCap(fsType)))) << driver_->log();
    ASSERT_TRUE(isOk(publish(v.volume_id(), staging, target, mountCap(fsType))));
    trellis::testing::writeFile(target + "/keep.txt", "still here");
    auto dfSize = [&] {
      auto r = trellis::testing::run("df -B1 --output=size " + target + " | tail -1");
      return std::stoll(r.out);
    };
    int64_t before = dfSize();
    v1::ControllerExpandVolumeRequest ce;
    ce.set_volume_id(v.volume_id());
    ce.mutable_capacity_range()->set_required_bytes(1024 * kMiB);
    *ce.mutable_volume_capability() = mountCap(fsType);
    v1::ControllerExpandVolumeResponse cer;
    ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ControllerExpandVolume, ce, &cer)));
    EXPECT_EQ(cer.capacity_bytes(), 1024 * kMiB);
    EXPECT_TRUE(cer.node_expansion_required());
    ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ControllerExpandVolume, ce, &cer))) << "idempotent";
    v1::NodeExpandVolumeRequest ne;
    ne.set_volume_id(v.volume_id());
    ne.set_volume_path(target);
    ne.set_staging_target_path(staging);
    ne.mutable_capacity_range()->set_required_bytes(1024 * kMiB);
    v1::NodeExpandVolumeResponse ner;
    ASSERT_TRUE(isOk(call(*driver_->node, &v1::Node::Stub::NodeExpandVolume, ne, &ner))) << driver_->log();
    EXPECT_EQ(ner.capacity_bytes(), 1024 * kMiB);
    int64_t after = dfSize();
    EXPECT_GT(after, before * 2) << "df before " << before << ", after " << after;
    EXPECT_EQ(fileContent(target + "/keep.txt"), "still here");
    ASSERT_TRUE(isOk(call(*driver_->node, &v1::Node::Stub::NodeExpandVolume, ne, &ner))) << "idempotent";
    ne.mutable_capacity_range()->set_required_bytes(1LL << 40);
    EXPECT_EQ(call(*driver_->node, &v1::Node::Stub::NodeExpandVolume, ne, &ner).error_code(), StatusCode::OUT_OF_RANGE);
    ASSERT_TRUE(isOk(unpublish(v.volume_id(), target)));
    ASSERT_TRUE(isOk(unstage(v.volume_id(), staging)));
    ASSERT_TRUE(isOk(remove(v.volume_id())));
  }
}

TEST_F(CsiTest, RawBlockWritesWithDd) {
  auto v = create("pvc-raw", 32 * kMiB, blockCap());
  std::string staging = path("staging/raw"), target = path("pods/p/dev/raw");
  fs::create_directories(staging);
  ASSERT_TRUE(isOk(stage(v.volume_id(), staging, blockCap()))) << driver_->log();
  ASSERT_TRUE(isOk(publish(v.volume_id(), staging, target, blockCap()))) << driver_->log();
  struct stat st{};
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  EXPECT_TRUE(S_ISBLK(st.st_mode));
  trellis::testing::writeFile(tmp_.file("pattern"), std::string(4096, 'Z'));
  auto dd = trellis::testing::run("dd if=" + tmp_.file("pattern") + " of=" + target + " bs=4096 seek=100 oflag=direct conv=fsync 2>&1");
  ASSERT_EQ(dd.exitCode, 0) << dd.out;
  auto readBack = trellis::testing::run("dd if=" + pool_ + "/volumes/" + v.volume_id() + ".img bs=4096 skip=100 count=1 status=none");
  EXPECT_TRUE(readBack.out == std::string(4096, 'Z')) << "the block written through the device is not in the volume file";
  v1::NodeGetVolumeStatsRequest sr;
  sr.set_volume_id(v.volume_id());
  sr.set_volume_path(target);
  v1::NodeGetVolumeStatsResponse srr;
  ASSERT_TRUE(isOk(call(*driver_->node, &v1::Node::Stub::NodeGetVolumeStats, sr, &srr)));
  ASSERT_EQ(srr.usage_size(), 1);
  EXPECT_EQ(srr.usage(0).total(), 32 * kMiB);
  // Expansion of a raw block volume needs no node step.
  v1::ControllerExpandVolumeRequest ce;
  ce.set_volume_id(v.volume_id());
  ce.mutable_capacity_range()->set_required_bytes(48 * kMiB);
  *ce.mutable_volume_capability() = blockCap();
  v1::ControllerExpandVolumeResponse cer;
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ControllerExpandVolume, ce, &cer)));
  EXPECT_FALSE(cer.node_expansion_required());
  auto size = trellis::sys::blockDeviceSize(target);
  ASSERT_TRUE(size);
  EXPECT_EQ(*size, 48 * kMiB);
  ASSERT_TRUE(isOk(unpublish(v.volume_id(), target)));
  EXPECT_FALSE(fs::exists(target));
  ASSERT_TRUE(isOk(unstage(v.volume_id(), staging)));
  ASSERT_TRUE(isOk(remove(v.volume_id())));
  EXPECT_TRUE(trellis::sys::loopsUnder(pool_).empty());
}

TEST_F(CsiTest, ConcurrentStagesOfOneVolume) {
  auto v = create("pvc-race", 64 * kMiB);
  std::string staging = path("staging/race");
  std::atomic<int> ok{0}, aborted{0}, other{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      auto st = stage(v.volume_id(), staging);
      if (st.ok()) {
        ++ok;
      } else if (st.error_code() == StatusCode::ABORTED) {
        ++aborted;
      } else {
        ++other;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GE(ok.load(), 1);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(ok + aborted, 4);
  size_t mountsAtStaging = 0;
  for (const auto& m : trellis::sys::mounts()) mountsAtStaging += m.mountPoint == fs::canonical(staging).string();
  EXPECT_EQ(mountsAtStaging, 1u);
  EXPECT_EQ(trellis::sys::loopsUnder(pool_).size(), 1u);
  ASSERT_TRUE(isOk(unstage(v.volume_id(), staging)));
  ASSERT_TRUE(isOk(remove(v.volume_id())));
}

TEST_F(CsiTest, GroupSnapshotIsConsistentAcrossVolumes) {
  auto a = create("pvc-ga", 64 * kMiB);
  auto b = create("pvc-gb", 64 * kMiB);
  ASSERT_TRUE(isOk(stage(a.volume_id(), path("staging/ga"))));
  ASSERT_TRUE(isOk(stage(b.volume_id(), path("staging/gb"))));
  trellis::testing::writeFile(path("staging/ga") + "/x", "a1");
  trellis::testing::writeFile(path("staging/gb") + "/x", "b1");
  v1::CreateVolumeGroupSnapshotRequest r;
  r.set_name("group-1");
  r.add_source_volume_ids(a.volume_id());
  r.add_source_volume_ids(b.volume_id());
  v1::CreateVolumeGroupSnapshotResponse resp;
  ASSERT_TRUE(isOk(call(*driver_->group, &v1::GroupController::Stub::CreateVolumeGroupSnapshot, r, &resp))) << driver_->log();
  const auto& g = resp.group_snapshot();
  ASSERT_EQ(g.snapshots_size(), 2);
  EXPECT_TRUE(g.ready_to_use());
  for (const auto& s : g.snapshots()) EXPECT_EQ(s.group_snapshot_id(), g.group_snapshot_id());
  v1::CreateVolumeGroupSnapshotResponse again;
  ASSERT_TRUE(isOk(call(*driver_->group, &v1::GroupController::Stub::CreateVolumeGroupSnapshot, r, &again)));
  EXPECT_EQ(again.group_snapshot().group_snapshot_id(), g.group_snapshot_id());
  auto other = r;
  other.clear_source_volume_ids();
  other.add_source_volume_ids(a.volume_id());
  EXPECT_EQ(call(*driver_->group, &v1::GroupController::Stub::CreateVolumeGroupSnapshot, other, &again).error_code(),
            StatusCode::ALREADY_EXISTS);
  // Members are deleted only with their group.
  v1::DeleteSnapshotRequest ds;
  ds.set_snapshot_id(g.snapshots(0).snapshot_id());
  v1::DeleteSnapshotResponse dsr;
  EXPECT_EQ(call(*driver_->controller, &v1::Controller::Stub::DeleteSnapshot, ds, &dsr).error_code(), StatusCode::FAILED_PRECONDITION);
  // Restore both: each holds what was written before the group snapshot.
  trellis::testing::writeFile(path("staging/ga") + "/x", "a2");
  for (int i = 0; i < 2; ++i) {
    v1::VolumeContentSource src;
    src.mutable_snapshot()->set_snapshot_id(g.snapshots(i).snapshot_id());
    auto restored = create("pvc-gr" + std::to_string(i), 64 * kMiB, mountCap(), &src);
    std::string st = path("staging/gr" + std::to_string(i));
    ASSERT_TRUE(isOk(stage(restored.volume_id(), st))) << driver_->log();
    bool fromA = g.snapshots(i).source_volume_id() == a.volume_id();
    EXPECT_EQ(fileContent(st + "/x"), fromA ? "a1" : "b1");
    ASSERT_TRUE(isOk(unstage(restored.volume_id(), st)));
    ASSERT_TRUE(isOk(remove(restored.volume_id())));
  }
  v1::GetVolumeGroupSnapshotRequest gr;
  gr.set_group_snapshot_id(g.group_snapshot_id());
  v1::GetVolumeGroupSnapshotResponse grr;
  ASSERT_TRUE(isOk(call(*driver_->group, &v1::GroupController::Stub::GetVolumeGroupSnapshot, gr, &grr)));
  EXPECT_EQ(grr.group_snapshot().snapshots_size(), 2);
  gr.add_snapshot_ids("snap-00000000000000000000000000000000");
  EXPECT_EQ(call(*driver_->group, &v1::GroupController::Stub::GetVolumeGroupSnapshot, gr, &grr).error_code(),
            StatusCode::FAILED_PRECONDITION);
  v1::DeleteVolumeGroupSnapshotRequest dg;
  dg.set_group_snapshot_id(g.group_snapshot_id());
  v1::DeleteVolumeGroupSnapshotResponse dgr;
  ASSERT_TRUE(isOk(call(*driver_->group, &v1::GroupController::Stub::DeleteVolumeGroupSnapshot, dg, &dgr)));
  ASSERT_TRUE(isOk(call(*driver_->group, &v1::GroupController::Stub::DeleteVolumeGroupSnapshot, dg, &dgr)));
  gr.clear_snapshot_ids();
  EXPECT_EQ(call(*driver_->group, &v1::GroupController::Stub::GetVolumeGroupSnapshot, gr, &grr).error_code(), StatusCode::NOT_FOUND);
  EXPECT_TRUE(fs::is_empty(pool_ + "/snapshots"));
  ASSERT_TRUE(isOk(unstage(a.volume_id(), path("staging/ga"))));
  ASSERT_TRUE(isOk(unstage(b.volume_id(), path("staging/gb"))));
  ASSERT_TRUE(isOk(remove(a.volume_id())));
  ASSERT_TRUE(isOk(remove(b.volume_id())));
}

TEST_F(CsiTest, ListVolumesPaginatesAndModifyVolumeApplies) {
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) ids.push_back(create("pvc-list-" + std::to_string(i), 8 * kMiB).volume_id());
  std::set<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    v1::ListVolumesRequest r;
    r.set_max_entries(3);
    r.set_starting_token(token);
    v1::ListVolumesResponse resp;
    ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ListVolumes, r, &resp)));
    EXPECT_LE(resp.entries_size(), 3);
    for (const auto& e : resp.entries()) EXPECT_TRUE(seen.insert(e.volume().volume_id()).second);
    token = resp.next_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(seen, std::set<std::string>(ids.begin(), ids.end()));
  EXPECT_EQ(pages, 3);
  v1::ListVolumesRequest bad;
  bad.set_starting_token("invalid-token");
  v1::ListVolumesResponse br;
  EXPECT_EQ(call(*driver_->controller, &v1::Controller::Stub::ListVolumes, bad, &br).error_code(), StatusCode::ABORTED);

  // ControllerModifyVolume: readAheadKB reaches the attached loop device.
  ASSERT_TRUE(isOk(stage(ids[0], path("staging/l0"))));
  v1::ControllerModifyVolumeRequest m;
  m.set_volume_id(ids[0]);
  (*m.mutable_mutable_parameters())["readAheadKB"] = "512";
  v1::ControllerModifyVolumeResponse mr;
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ControllerModifyVolume, m, &mr)));
  auto dev = trellis::sys::loopFind(pool_ + "/volumes/" + ids[0] + ".img");
  ASSERT_TRUE(dev);
  EXPECT_EQ(fileContent("/sys/block/" + fs::path(*dev).filename().string() + "/queue/read_ahead_kb"), "512\n");
  (*m.mutable_mutable_parameters())["iops"] = "100";
  EXPECT_EQ(call(*driver_->controller, &v1::Controller::Stub::ControllerModifyVolume, m, &mr).error_code(), StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(isOk(unstage(ids[0], path("staging/l0"))));
  for (const auto& id : ids) ASSERT_TRUE(isOk(remove(id)));
}

TEST_F(CsiTest, MountFlagsFsGroupAndVolumeCondition) {
  auto v = create("pvc-opts", 64 * kMiB);
  std::string staging = path("staging/opts"), target = path("pods/p/opts");
  auto cap = mountCap("ext4");
  cap.mutable_mount()->add_mount_flags("noatime");
  cap.mutable_mount()->add_mount_flags("nodev,nosuid");
  auto bad = cap;
  bad.mutable_mount()->add_mount_flags("data=ordered\n,x");
  EXPECT_EQ(stage(v.volume_id(), staging, bad).error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_FALSE(trellis::sys::mountAt(staging));
  ASSERT_TRUE(isOk(stage(v.volume_id(), staging, cap))) << driver_->log();
  auto m = trellis::sys::mountAt(staging);
  ASSERT_TRUE(m);
  for (const char* opt : {"noatime", "nodev", "nosuid"}) EXPECT_NE(m->options.find(opt), std::string::npos) << m->options;
  // fsGroup through VOLUME_MOUNT_GROUP: the volume's root belongs to the group, setgid.
  auto grouped = mountCap("ext4");
  grouped.mutable_mount()->set_volume_mount_group("4321");
  ASSERT_TRUE(isOk(publish(v.volume_id(), staging, target, grouped)));
  struct stat st{};
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, 4321u);
  EXPECT_TRUE(st.st_mode & S_ISGID);
  EXPECT_TRUE(st.st_mode & S_IWGRP);
  auto notNumeric = mountCap("ext4");
  notNumeric.mutable_mount()->set_volume_mount_group("wheel");
  EXPECT_EQ(publish(v.volume_id(), staging, path("pods/q/opts"), notNumeric).error_code(), StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(isOk(unpublish(v.volume_id(), target)));
  // Someone unmounts the staging mount behind the driver's back: the condition says so.
  ASSERT_TRUE(trellis::sys::unmount(staging));
  v1::NodeGetVolumeStatsRequest sr;
  sr.set_volume_id(v.volume_id());
  sr.set_volume_path(staging);
  v1::NodeGetVolumeStatsResponse srr;
  ASSERT_TRUE(isOk(call(*driver_->node, &v1::Node::Stub::NodeGetVolumeStats, sr, &srr)));
  EXPECT_TRUE(srr.volume_condition().abnormal());
  EXPECT_NE(srr.volume_condition().message().find("staging mount"), std::string::npos) << srr.volume_condition().message();
  ASSERT_TRUE(isOk(unstage(v.volume_id(), staging)));
  EXPECT_TRUE(trellis::sys::loopsUnder(pool_).empty());
  ASSERT_TRUE(isOk(remove(v.volume_id())));
}

TEST_F(CsiTest, MaxVolumesPerNodeLimitsControllerPublish) {
  driver_->stop(SIGTERM);
  driver_->extraArgs = {"--max-volumes-per-node", "2"};
  driver_->start();
  v1::NodeGetInfoResponse ni;
  ASSERT_TRUE(isOk(call(*driver_->node, &v1::Node::Stub::NodeGetInfo, v1::NodeGetInfoRequest(), &ni)));
  EXPECT_EQ(ni.max_volumes_per_node(), 2);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(create("pvc-max-" + std::to_string(i), 8 * kMiB).volume_id());
  auto pub = [&](const std::string& id) {
    v1::ControllerPublishVolumeRequest p;
    p.set_volume_id(id);
    p.set_node_id(kNode);
    *p.mutable_volume_capability() = mountCap();
    v1::ControllerPublishVolumeResponse pr;
    return call(*driver_->controller, &v1::Controller::Stub::ControllerPublishVolume, p, &pr);
  };
  EXPECT_TRUE(isOk(pub(ids[0])));
  EXPECT_TRUE(isOk(pub(ids[1])));
  EXPECT_EQ(pub(ids[2]).error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(isOk(pub(ids[1]))) << "republishing an attached volume is not a new attachment";
  for (const auto& id : ids) {
    v1::ControllerUnpublishVolumeRequest u;
    u.set_volume_id(id);
    v1::ControllerUnpublishVolumeResponse ur;
    ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ControllerUnpublishVolume, u, &ur)));
    ASSERT_TRUE(isOk(remove(id)));
  }
}

// A CO cleaning up after DeleteVolume (or after a crash) calls the
// unpublish and unstage RPCs of a volume that is gone: each can regard the
// volume as unpublished or unstaged, so the spec's answer is OK — except
// where something this driver does not know is mounted at the path.
TEST_F(CsiTest, NotFoundAnswersFollowTheSpec) {
  auto v = create("pvc-gone", 8 * kMiB);
  ASSERT_TRUE(isOk(remove(v.volume_id())));
  v1::ControllerUnpublishVolumeRequest cu;
  cu.set_volume_id(v.volume_id());
  cu.set_node_id(kNode);
  v1::ControllerUnpublishVolumeResponse cur;
  EXPECT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ControllerUnpublishVolume, cu, &cur)));
  cu.set_node_id("no-such-node");
  EXPECT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ControllerUnpublishVolume, cu, &cur)));
  EXPECT_TRUE(isOk(unstage(v.volume_id(), path("staging/gone"))));
  EXPECT_TRUE(isOk(unpublish(v.volume_id(), path("pods/p/gone"))));
  EXPECT_TRUE(isOk(remove(v.volume_id())));
  EXPECT_TRUE(isOk(remove("vol-never-existed")));
  v1::DeleteSnapshotRequest ds;
  ds.set_snapshot_id("snap-never-existed");
  v1::DeleteSnapshotResponse dsr;
  EXPECT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::DeleteSnapshot, ds, &dsr)));
  // A mount the driver did not make: the volume cannot be regarded as unpublished.
  std::string foreign = path("pods/p/foreign");
  fs::create_directories(foreign);
  ASSERT_TRUE(trellis::sys::runChecked({"mount", "-t", "tmpfs", "none", foreign}));
  EXPECT_EQ(unpublish(v.volume_id(), foreign).error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(unstage(v.volume_id(), foreign).error_code(), StatusCode::NOT_FOUND);
  ASSERT_TRUE(isOk2(trellis::sys::unmount(foreign)));
}

// Sizes near INT64_MAX are capacities no pool can satisfy: OUT_OF_RANGE,
// nothing recorded, the pool's capacity unchanged. A repeated CreateVolume
// that differs in access type or mutable parameters is ALREADY_EXISTS.
TEST_F(CsiTest, HostileSizesAndIncompatibleRepeatsChangeNothing) {
  auto capacity = [&] {
    v1::GetCapacityRequest r;
    v1::GetCapacityResponse resp;
    EXPECT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::GetCapacity, r, &resp)));
    return resp.available_capacity();
  };
  int64_t before = capacity();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  for (int64_t bytes : {kMax, kMax - 100, kMax - kMiB + 2}) {
    v1::CreateVolumeRequest r;
    r.set_name(fmt::format("pvc-huge-{}", bytes));
    r.mutable_capacity_range()->set_required_bytes(bytes);
    *r.add_volume_capabilities() = mountCap();
    v1::CreateVolumeResponse resp;
    auto st = call(*driver_->controller, &v1::Controller::Stub::CreateVolume, r, &resp);
    EXPECT_EQ(st.error_code(), StatusCode::OUT_OF_RANGE) << bytes << ": " << st.error_message();
  }
  EXPECT_TRUE(fs::is_empty(pool_ + "/meta/volumes")) << "a record was stored for an impossible size";
  EXPECT_EQ(capacity(), before);
  auto v = create("pvc-grow", 8 * kMiB);
  int64_t withVolume = capacity();
  v1::ControllerExpandVolumeRequest e;
  e.set_volume_id(v.volume_id());
  e.mutable_capacity_range()->set_required_bytes(kMax);
  v1::ControllerExpandVolumeResponse er;
  EXPECT_EQ(call(*driver_->controller, &v1::Controller::Stub::ControllerExpandVolume, e, &er).error_code(),
            StatusCode::OUT_OF_RANGE);
  EXPECT_EQ(capacity(), withVolume);
  v1::ControllerGetVolumeRequest g;
  g.set_volume_id(v.volume_id());
  v1::ControllerGetVolumeResponse gr;
  ASSERT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::ControllerGetVolume, g, &gr)));
  EXPECT_EQ(gr.volume().capacity_bytes(), 8 * kMiB) << "the failed expansion changed the record";
  // The same name again: another access type, other mutable parameters.
  v1::CreateVolumeRequest again;
  again.set_name("pvc-grow");
  again.mutable_capacity_range()->set_required_bytes(8 * kMiB);
  *again.add_volume_capabilities() = blockCap();
  v1::CreateVolumeResponse ar;
  EXPECT_EQ(call(*driver_->controller, &v1::Controller::Stub::CreateVolume, again, &ar).error_code(),
            StatusCode::ALREADY_EXISTS);
  again.clear_volume_capabilities();
  *again.add_volume_capabilities() = mountCap();
  (*again.mutable_mutable_parameters())["readAheadKB"] = "512";
  EXPECT_EQ(call(*driver_->controller, &v1::Controller::Stub::CreateVolume, again, &ar).error_code(),
            StatusCode::ALREADY_EXISTS);
  again.clear_mutable_parameters();
  EXPECT_TRUE(isOk(call(*driver_->controller, &v1::Controller::Stub::CreateVolume, again, &ar)));
  EXPECT_EQ(ar.volume().volume_id(), v.volume_id());
  ASSERT_TRUE(isOk(remove(v.volume_id())));
}

// kill -9 while CreateVolume (with clones of a volume holding data) and
// NodeStage (mkfs, mount) are under way, many times; after each restart
// the pool holds only complete volumes and stages, no stray loop device,
// mount or temporary file, and retrying every call succeeds. The kills are
// aimed: even rounds at CreateVolume (after its image file appears in the
// pool), odd rounds at NodeStageVolume (after its "creating" stage record
// lands), with delays swept from 0 to 5 ms; the state left on disk proves
// the kill interrupted the work, and enough rounds must have done so on a
// fast machine and a slow one alike.
TEST_F(CsiTest, KillNineMidCreateAndStageLeavesNothingHalfDone) {
  auto src = create("pvc-seed", 64 * kMiB);
  ASSERT_TRUE(isOk(stage(src.volume_id(), path("staging/seed"))));
  auto big = trellis::testing::run("dd if=/dev/urandom of=" + path("staging/seed") + "/blob bs=1M count=32 2>&1");
  ASSERT_EQ(big.exitCode, 0) << big.out;
  ASSERT_TRUE(isOk(unstage(src.volume_id(), path("staging/seed"))));
  constexpr int kRounds = 12;
  const std::array<int, kRounds / 2> delaysUs{0, 200, 500, 1000, 2000, 5000};
  int midCreate = 0, midStage = 0;
  std::vector<std::string> attempted;
  for (int round = 0; round < kRounds; ++round) {
    bool aimCreate = round % 2 == 0;
    std::string watched = aimCreate ? pool_ + "/volumes" : pool_ + "/meta/node";
    {
      trellis::testing::KillOnFile killer(
          watched, [&](std::string_view name) { return name.ends_with(aimCreate ? ".img" : ".json"); }, driver_->pid(),
          std::chrono::microseconds(delaysUs[round / 2]));
      for (int i = 0; i < 8 && !killer.fired(); ++i) {
        std::string name = fmt::format("pvc-crash-{}-{}", round, i);
        attempted.push_back(name);
        v1::CreateVolumeRequest r;
        r.set_name(name);
        r.mutable_capacity_range()->set_required_bytes(64 * kMiB);
        *r.add_volume_capabilities() = mountCap();
        if (i % 2) r.mutable_volume_content_source()->mutable_volume()->set_volume_id(src.volume_id());
        v1::CreateVolumeResponse resp;
        if (!call(*driver_->controller, &v1::Controller::Stub::CreateVolume, r, &resp).ok()) break;
        if (!stage(resp.volume().volume_id(), path("staging/" + name)).ok()) break;
      }
      ASSERT_TRUE(trellis::testing::waitFor([&] { return killer.fired(); }, std::chrono::seconds(30)))
          << "round " << round << ": the aimed kill never fired";
    }
    driver_->kill(SIGKILL);  // reaps the killed driver
    // What the kill left, before recovery sees it.
    bool interrupted = false;
    if (aimCreate) {
      for (const auto& e : fs::directory_iterator(pool_ + "/volumes")) {
        std::string id = e.path().stem().string();
        auto text = fileContent(pool_ + "/meta/volumes/" + id + ".json");
        interrupted |= text.find("\"state\":\"ready\"") == std::string::npos;  // an image without a finished record
      }
      midCreate += interrupted;
    } else {
      for (const auto& e : fs::directory_iterator(pool_ + "/meta/node")) {
        if (e.path().extension() != ".json") continue;
        interrupted |= fileContent(e.path().string()).find("\"state\":\"creating\"") != std::string::npos;
      }
      midStage += interrupted;
    }
    std::cout << fmt::format("round {}: aimed at {} +{} us: {}\n", round, aimCreate ? "CreateVolume" : "NodeStageVolume",
                             delaysUs[round / 2], interrupted ? "interrupted it" : "landed after it");
    driver_->start();
    // Invariants after recovery.
    for (const auto& e : fs::directory_iterator(pool_ + "/volumes")) {
      std::string name = e.path().filename().string();
      EXPECT_TRUE(name.ends_with(".img")) << "left " << name;
      std::string id = name.substr(0, name.size() - 4);
      EXPECT_TRUE(fs::exists(pool_ + "/meta/volumes/" + id + ".json")) << "file without record: " << name;
    }
    for (const auto& e : fs::directory_iterator(pool_ + "/meta/volumes")) {
      auto text = fileContent(e.path().string());
      EXPECT_NE(text.find("\"state\":\"ready\""), std::string::npos) << "half-created record survived: " << text;
      std::string id = e.path().stem().string();
      EXPECT_TRUE(fs::exists(pool_ + "/volumes/" + id + ".img")) << "record without file: " << id;
    }
    size_t staged = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(pool_ + "/meta/node", ec)) {
      auto text = fileContent(e.path().string());
      EXPECT_NE(text.find("\"state\":\"ready\""), std::string::npos) << "half-done stage survived: " << text << "\n" << driver_->log();
      ++staged;
    }
    EXPECT_EQ(trellis::sys::loopsUnder(pool_).size(), staged) << "loop devices without a stage";
    EXPECT_EQ(mountsUnder(tmp_.path() + "/kubelet/staging"), staged) << "mounts without a stage";
  }
  // The immediate kills land mid-work on any machine; later ones may not.
  EXPECT_GE(midCreate, 2) << "kills that interrupted CreateVolume";
  EXPECT_GE(midStage, 2) << "kills that interrupted NodeStageVolume";
  // Retry every call of every round: all succeed; then clean up through the API.
  for (size_t n = 0; n < attempted.size(); ++n) {
    {
      const std::string& name = attempted[n];
      int i = name.back() - '0';
      v1::VolumeContentSource s;
      s.mutable_volume()->set_volume_id(src.volume_id());
      auto v = create(name, 64 * kMiB, mountCap(), i % 2 ? &s : nullptr);
      ASSERT_FALSE(v.volume_id().empty());
      ASSERT_TRUE(isOk(stage(v.volume_id(), path("staging/" + name)))) << driver_->log();
      if (i % 2) {
        EXPECT_TRUE(fs::exists(path("staging/" + name) + "/blob")) << "clone lost the source's data";
      }
      ASSERT_TRUE(isOk(unstage(v.volume_id(), path("staging/" + name))));
      ASSERT_TRUE(isOk(remove(v.volume_id())));
    }
  }
  ASSERT_TRUE(isOk(remove(src.volume_id())));
  EXPECT_TRUE(fs::is_empty(pool_ + "/volumes"));
  EXPECT_TRUE(trellis::sys::loopsUnder(pool_).empty());
  EXPECT_EQ(mountsUnder(tmp_.path() + "/kubelet"), 0u);
}

}  // namespace
