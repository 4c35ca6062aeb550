// trellis-csi: the Trellis CSI driver for node-local volumes (driver name
// csi.trellis.dev). Serves CSI v1.12 Identity + Controller + GroupController
// (--mode controller), Identity + Node (--mode node), or all of them
// (--mode all) on a unix socket; in node modes, optionally also the kubelet
// plugin-registration API on a second socket, so no node-driver-registrar
// sidecar is needed. See docs/csi.md.
#include <malloc.h>
#include <sys/file.h>
#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <fstream>

#include "common/base/flags.h"
#include "common/base/metrics.h"
#include "common/base/numbers.h"
#include "common/base/log.h"
#include "common/base/signals.h"
#include "common/http/status_server.h"
#include "csi/driver/floor.h"
#include "csi/driver/services.h"

using namespace trellis;
namespace fs = std::filesystem;
namespace tcsi = trellis::csi;

namespace {

std::string socketPath(const std::string& endpoint) {
  if (endpoint.rfind("unix://", 0) == 0) return endpoint.substr(7);
  return endpoint;
}

// Binds a unix socket listener for gRPC, replacing a stale socket file.
bool prepareSocket(const std::string& path, std::string* error) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (fs::is_socket(path, ec) || fs::is_symlink(path, ec)) fs::remove(path, ec);
  if (fs::exists(path, ec)) {
    *error = path + " exists and is not a socket";
    return false;
  }
  return true;
}

// Whether this process may grow a mounted ext4 (EXT4_IOC_RESIZE_FS needs CAP_SYS_RESOURCE).
bool haveCapSysResource() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) != 0) continue;
    size_t start = line.find_first_not_of(" \t", 7);
    uint64_t caps = 0;
    if (start != std::string::npos) std::from_chars(line.data() + start, line.data() + line.size(), caps, 16);
    return (caps >> 24) & 1;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  base::blockShutdownSignals();
  ::mallopt(M_ARENA_MAX, 2);  // gRPC's threads would each get a malloc arena
  CLI::App app{"trellis-csi: CSI driver csi.trellis.dev for node-local volumes (sparse files on loop devices)"};
  base::CommonFlags common;
  base::addCommonFlags(app, common);
  tcsi::DriverOptions opts;
  std::string endpoint = "unix:///var/lib/kubelet/plugins/csi.trellis.dev/csi.sock";
  std::string mode = "all";
  std::string registrationSocket;
  std::string kubeletEndpoint;
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  opts.nodeId = host;
  app.add_option("--endpoint", endpoint, "CSI endpoint, unix:///path/csi.sock")->capture_default_str();
  app.add_option("--node-id", opts.nodeId, "this node's id (NodeGetInfo, topology " + std::string(tcsi::kTopologyKey) + ")")
      ->capture_default_str();
  app.add_option("--mode", mode, "services to serve: controller, node or all")
      ->check(CLI::IsMember({"controller", "node", "all"}))
      ->capture_default_str();
  app.add_option("--pool-dir", opts.poolDir, "storage pool directory: volume files, snapshots, metadata")->capture_default_str();
  app.add_option("--registration-socket", registrationSocket,
                 "serve kubelet plugin registration here (e.g. /var/lib/kubelet/plugins_registry/csi.trellis.dev-reg.sock); "
                 "node and all modes");
  app.add_option("--kubelet-endpoint", kubeletEndpoint,
                 "the CSI socket path kubelet should dial, when it differs from --endpoint (a container's view)");
  app.add_option("--driver-name", opts.driverName, "CSI driver name")->capture_default_str();
  app.add_option("--default-volume-size", opts.defaultVolumeSize, "bytes for a CreateVolume without capacity_range")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--overprovision-ratio", opts.overprovisionRatio,
                 "capacity promised per byte of pool (thin provisioning; 1 = never promise more than the pool holds)")
      ->check(CLI::Range(0.01, 1000.0))
      ->capture_default_str();
  app.add_option("--capacity", opts.capacityBytes, "pool size in bytes to report and enforce (default: the pool filesystem's size)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-volumes-per-node", opts.maxVolumesPerNode, "NodeGetInfo max_volumes_per_node (0: no limit)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  std::string defaultFsType = "auto";
  app.add_option("--default-fs-type", defaultFsType,
                 "filesystem for volumes whose capability names none: ext4, xfs, btrfs, or auto (ext4, or xfs when "
                 "this process lacks CAP_SYS_RESOURCE and so cannot grow a mounted ext4)")
      ->check(CLI::IsMember({"auto", "ext4", "xfs", "btrfs"}))
      ->capture_default_str();
  std::string metricsAddress;
  app.add_option("--metrics-address", metricsAddress,
                 "serve /metrics and /healthz over HTTP on HOST:PORT (port 0 picks one; default: not served)");
  CLI11_PARSE(app, argc, argv);
  base::applyCommonFlags(common);
  base::Logger log("csi");
  opts.controller = mode != "node";
  opts.node = mode != "controller";
  if (opts.nodeId.empty() || !tcsi::Driver::validId(opts.nodeId)) {
    log.error("--node-id must be 1-128 characters of [A-Za-z0-9._-]", {{"node_id", opts.nodeId}});
    return 2;
  }

  auto store = tcsi::Store::open(opts.poolDir);
  if (!store) {
    log.error("opening the pool", {{"error", store.error().message()}});
    return 1;
  }
  // One driver process per pool: a second one would race on the records.
  int lockFd = ::open((store->poolDir() + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lockFd < 0 || ::flock(lockFd, LOCK_EX | LOCK_NB) != 0) {
    log.error("another trellis-csi holds the pool", {{"pool", store->poolDir()}});
    return 1;
  }
  if (defaultFsType == "auto") {
    opts.defaultFsType = haveCapSysResource() ? "ext4" : "xfs";
    if (opts.defaultFsType == "xfs") {
      log.warn("no CAP_SYS_RESOURCE: mounted ext4 volumes cannot grow online; volumes without an fs_type get xfs");
    }
  } else {
    opts.defaultFsType = defaultFsType;
  }
  tcsi::Driver driver(opts, std::move(*store));

  if (auto st = driver.recover(); !st) {
    log.error("recovering the pool", {{"error", st.error().message()}});
    return 1;
  }

  std::string path = socketPath(endpoint);
  std::string error;
  if (!prepareSocket(path, &error) || (!registrationSocket.empty() && !prepareSocket(registrationSocket, &error))) {
    log.error("preparing sockets", {{"error", error}});
    return 1;
  }
  tcsi::IdentityService identity(driver);
  tcsi::ControllerService controller(driver);
  tcsi::GroupControllerService group(driver);
  tcsi::NodeService node(driver);
  base::Registry metrics;
  base::Counter& unexpected = metrics.counter("trellis_csi_unexpected_errors_total",
                                              "CSI calls that ended in an unexpected exception (each one is a bug)");
  grpc::ServerBuilder builder;
  tcsi::installFloor(builder, unexpected);
  // A node agent, not a server farm: one completion queue, few pollers.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 2);
  builder.AddListeningPort("unix://" + path, grpc::InsecureServerCredentials());
  builder.RegisterService(&identity);
  if (opts.controller) {
    builder.RegisterService(&controller);
    builder.RegisterService(&group);
  }
  if (opts.node) builder.RegisterService(&node);
  std::unique_ptr<grpc::Server> registration;
  tcsi::RegistrationService reg(driver, kubeletEndpoint.empty() ? path : kubeletEndpoint);
  if (!registrationSocket.empty() && opts.node) {
    grpc::ServerBuilder rb;
    rb.AddListeningPort("unix://" + registrationSocket, grpc::InsecureServerCredentials());
    rb.RegisterService(&reg);
    registration = rb.BuildAndStart();
    if (!registration) {
      log.error("serving plugin registration", {{"socket", registrationSocket}});
      return 1;
    }
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    log.error("serving CSI", {{"endpoint", endpoint}});
    return 1;
  }
  std::unique_ptr<http::StatusServer> metricsServer;
  if (!metricsAddress.empty()) {
    auto status = http::StatusServer::start(metricsAddress, "csi-metrics", metrics, [&]() -> std::string {
      bool ok = ::access(driver.store().poolDir().c_str(), R_OK | W_OK | X_OK) == 0;
      return ok ? "" : "pool directory not usable";
    });
    if (!status) {
      log.error("serving metrics", {{"error", status.error().message()}});
      return status.error().code() == base::ErrorCode::kInvalidArgument ? 2 : 1;
    }
    metricsServer = std::move(*status);
    log.info("metrics", {{"address", metricsAddress}, {"port", metricsServer->port()}});
  }
  log.info("serving", {{"endpoint", "unix://" + path}, {"mode", mode}, {"node", opts.nodeId}, {"pool", driver.store().poolDir()},
                       {"driver", opts.driverName}});

  base::waitForShutdownSignal();
  log.info("shutting down");
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));  // CSI calls are short
  if (registration) registration->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  if (metricsServer) metricsServer->stop();
  std::error_code ec;
  fs::remove(path, ec);
  if (!registrationSocket.empty()) fs::remove(registrationSocket, ec);
  return 0;
}
