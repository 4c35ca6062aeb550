// trellis-bench-csi: times CSI RPCs against a running driver over its unix
// socket, as the sidecars and kubelet call them. It speaks only the CSI
// wire protocol (csi/proto/csi.proto, the published spec), so it can time
// any CSI driver. Modes:
//   create     N CreateVolume calls of --size bytes one after another (then deleted): p50/p99
//   snapshot   one volume of --size, --data bytes written through a mount, then
//              ROUNDS CreateSnapshot calls (each deleted after): p50/p99
//   lifecycle  N volumes created, staged, published, unpublished, unstaged and
//              deleted with --parallel workers: total time and per-RPC p50/p99
// Output: one line per figure, "name value unit".
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include "csi/proto/csi.grpc.pb.h"

namespace v1 = ::csi::v1;
using Clock = std::chrono::steady_clock;

namespace {

struct Samples {
  std::mutex mu;
  std::map<std::string, std::vector<double>> ms;
  void add(const std::string& rpc, double v) {
    std::lock_guard<std::mutex> lock(mu);
    ms[rpc].push_back(v);
  }
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

template <typename Stub, typename Req, typename Resp>
grpc::Status timed(Samples& s, const std::string& name, Stub& stub,
                   grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*), const Req& req, Resp* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto t0 = Clock::now();
  auto st = (stub.*method)(&ctx, req, resp);
  s.add(name, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  if (!st.ok()) {
    std::fprintf(stderr, "%s failed: %d %s\n", name.c_str(), st.error_code(), st.error_message().c_str());
    std::exit(1);
  }
  return st;
}

v1::VolumeCapability mountCap() {
  v1::VolumeCapability c;
  c.mutable_mount()->set_fs_type("ext4");
  c.mutable_access_mode()->set_mode(v1::VolumeCapability::AccessMode::SINGLE_NODE_WRITER);
  return c;
}

std::string arg(int argc, char** argv, const std::string& name, const std::string& def) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == "--" + name) return argv[i + 1];
  }
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  std::string endpoint = arg(argc, argv, "endpoint", "");
  std::string mode = arg(argc, argv, "mode", "create");
  std::string dir = arg(argc, argv, "dir", "/tmp/trellis-bench-csi");
  int n = std::stoi(arg(argc, argv, "n", "100"));
  int parallel = std::stoi(arg(argc, argv, "parallel", "4"));
  int64_t size = std::stoll(arg(argc, argv, "size", std::to_string(int64_t{1} << 30)));
  int64_t data = std::stoll(arg(argc, argv, "data", std::to_string(int64_t{512} << 20)));
  std::string tag = arg(argc, argv, "tag", std::to_string(::getpid()));
  if (endpoint.empty()) {
    std::fprintf(stderr, "usage: trellis-bench-csi --endpoint unix:///path.sock --mode create|snapshot|lifecycle [--n N] "
                         "[--parallel P] [--size BYTES] [--data BYTES] [--dir DIR]\n");
    return 2;
  }
  auto channel = grpc::CreateChannel(endpoint, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    std::fprintf(stderr, "cannot connect to %s\n", endpoint.c_str());
    return 1;
  }
  auto controller = v1::Controller::NewStub(channel);
  auto node = v1::Node::NewStub(channel);
  Samples s;
  auto createReq = [&](const std::string& name) {
    v1::CreateVolumeRequest r;
    r.set_name(name);
    r.mutable_capacity_range()->set_required_bytes(size);
    *r.add_volume_capabilities() = mountCap();
    return r;
  };
  auto deleteVolume = [&](const std::string& id) {
    v1::DeleteVolumeRequest r;
    r.set_volume_id(id);
    v1::DeleteVolumeResponse resp;
    timed(s, "DeleteVolume", *controller, &v1::Controller::Stub::DeleteVolume, r, &resp);
  };

  if (mode == "create") {
    std::vector<std::string> ids;
    for (int i = 0; i < n; ++i) {
      v1::CreateVolumeResponse resp;
      timed(s, "CreateVolume", *controller, &v1::Controller::Stub::CreateVolume, createReq(fmt::format("bench-{}-{}", tag, i)), &resp);
      ids.push_back(resp.volume().volume_id());
    }
    for (const auto& id : ids) deleteVolume(id);
  } else if (mode == "snapshot") {
    v1::CreateVolumeResponse vol;
    timed(s, "CreateVolume", *controller, &v1::Controller::Stub::CreateVolume, createReq("bench-snap-src-" + tag), &vol);
    std::string id = vol.volume().volume_id(), staging = dir + "/staging-snap";
    std::filesystem::create_directories(staging);
    v1::NodeStageVolumeRequest st;
    st.set_volume_id(id);
    st.set_staging_target_path(staging);
    *st.mutable_volume_capability() = mountCap();
    v1::NodeStageVolumeResponse str;
    timed(s, "NodeStageVolume", *node, &v1::Node::Stub::NodeStageVolume, st, &str);
    // Real data: random bytes, synced, so the copy has extents to share or copy.
    std::string cmd = fmt::format("dd if=/dev/urandom of={}/data bs=1M count={} conv=fsync status=none", staging, data >> 20);
    if (std::system(cmd.c_str()) != 0) return 1;
    for (int i = 0; i < n; ++i) {
      v1::CreateSnapshotRequest r;
      r.set_name(fmt::format("bench-snap-{}-{}", tag, i));
      r.set_source_volume_id(id);
      v1::CreateSnapshotResponse resp;
      timed(s, "CreateSnapshot", *controller, &v1::Controller::Stub::CreateSnapshot, r, &resp);
      v1::DeleteSnapshotRequest d;
      d.set_snapshot_id(resp.snapshot().snapshot_id());
      v1::DeleteSnapshotResponse dr;
      timed(s, "DeleteSnapshot", *controller, &v1::Controller::Stub::DeleteSnapshot, d, &dr);
    }
    v1::NodeUnstageVolumeRequest u;
    u.set_volume_id(id);
    u.set_staging_target_path(staging);
    v1::NodeUnstageVolumeResponse ur;
    timed(s, "NodeUnstageVolume", *node, &v1::Node::Stub::NodeUnstageVolume, u, &ur);
    deleteVolume(id);
  } else if (mode == "lifecycle") {
    std::atomic<int> next{0};
    auto t0 = Clock::now();
    std::vector<std::thread> workers;
    for (int w = 0; w < parallel; ++w) {
      workers.emplace_back([&] {
        for (int i = next++; i < n; i = next++) {
          std::string name = fmt::format("bench-life-{}-{}", tag, i);
          std::string staging = dir + "/staging/" + name, target = dir + "/pods/" + name;
          std::filesystem::create_directories(staging);
          v1::CreateVolumeResponse vol;
          timed(s, "CreateVolume", *controller, &v1::Controller::Stub::CreateVolume, createReq(name), &vol);
          std::string id = vol.volume().volume_id();
          v1::NodeStageVolumeRequest st;
          st.set_volume_id(id);
          st.set_staging_target_path(staging);
          *st.mutable_volume_capability() = mountCap();
          v1::NodeStageVolumeResponse str;
          timed(s, "NodeStageVolume", *node, &v1::Node::Stub::NodeStageVolume, st, &str);
          v1::NodePublishVolumeRequest p;
          p.set_volume_id(id);
          p.set_staging_target_path(staging);
          p.set_target_path(target);
          *p.mutable_volume_capability() = mountCap();
          v1::NodePublishVolumeResponse pr;
          timed(s, "NodePublishVolume", *node, &v1::Node::Stub::NodePublishVolume, p, &pr);
          v1::NodeUnpublishVolumeRequest up;
          up.set_volume_id(id);
          up.set_target_path(target);
          v1::NodeUnpublishVolumeResponse upr;
          timed(s, "NodeUnpublishVolume", *node, &v1::Node::Stub::NodeUnpublishVolume, up, &upr);
          v1::NodeUnstageVolumeRequest us;
          us.set_volume_id(id);
          us.set_staging_target_path(staging);
          v1::NodeUnstageVolumeResponse usr;
          timed(s, "NodeUnstageVolume", *node, &v1::Node::Stub::NodeUnstageVolume, us, &usr);
          deleteVolume(id);
        }
      });
    }
    for (auto& w : workers) w.join();
    std::printf("lifecycle_total_ms %.1f ms\n", std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  } else {
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  for (const auto& [rpc, v] : s.ms) {
    std::printf("%s_p50 %.3f ms\n%s_p99 %.3f ms\n", rpc.c_str(), percentile(v, 0.5), rpc.c_str(), percentile(v, 0.99));
  }
  return 0;
}
