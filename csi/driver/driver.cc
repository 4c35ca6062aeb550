#include "csi/driver/driver.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <filesystem>

#include <openssl/sha.h>

#include "common/base/log.h"
#include "common/linux/storage.h"

namespace trellis::csi {

const base::Logger& logger() {
  static const base::Logger l("csi");
  return l;
}

OpLocks::Guard::~Guard() {
  if (!locks_) return;
  std::lock_guard<std::mutex> lock(locks_->mu_);
  for (const auto& id : ids_) locks_->busy_.erase(id);
}

OpLocks::Guard OpLocks::tryLock(std::vector<std::string> ids) {
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& id : ids) {
    if (busy_.count(id)) return Guard(nullptr, {});
  }
  for (const auto& id : ids) busy_.insert(id);
  return Guard(this, std::move(ids));
}

std::string Driver::idFor(const std::string& prefix, const std::string& name) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(name.data()), name.size(), digest);
  static const char* hex = "0123456789abcdef";
  std::string id = prefix + "-";
  for (int i = 0; i < 16; ++i) {
    id.push_back(hex[digest[i] >> 4]);
    id.push_back(hex[digest[i] & 15]);
  }
  return id;
}

bool Driver::validId(const std::string& id) {
  if (id.empty() || id.size() > 128 || id == "." || id == "..") return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  });
}

int64_t Driver::poolSize() const {
  int64_t size = options_.capacityBytes;
  if (size <= 0) {
    struct statvfs st{};
    if (::statvfs(store_.poolDir().c_str(), &st) == 0) size = static_cast<int64_t>(st.f_blocks) * static_cast<int64_t>(st.f_frsize);
  }
  return static_cast<int64_t>(std::floor(static_cast<double>(size) * options_.overprovisionRatio));
}

Driver::Reservation::~Reservation() {
  if (!d_) return;
  std::lock_guard<std::mutex> lock(d_->capacityMu_);
  d_->reserved_ -= bytes_;
}

Driver::Reservation Driver::reserve(int64_t bytes) {
  std::lock_guard<std::mutex> lock(capacityMu_);
  if (availableCapacity() < bytes) return Reservation(nullptr, 0);
  reserved_ += bytes;
  return Reservation(this, bytes);
}

int64_t Driver::availableCapacity() {
  // Summed with saturation: a record's capacity is bounded, but never trusted.
  int64_t promised = reserved_;
  for (const auto& v : store_.volumes()) {
    if (v.capacity < 0 || __builtin_add_overflow(promised, v.capacity, &promised)) return 0;
  }
  int64_t available = 0;
  if (__builtin_sub_overflow(poolSize(), promised, &available)) return 0;
  // Thin volumes fill the pool as they are written: never offer more than
  // the real free space allows at the same over-provisioning ratio.
  struct statvfs st{};
  if (::statvfs(store_.poolDir().c_str(), &st) == 0) {
    double free = static_cast<double>(st.f_bavail) * static_cast<double>(st.f_frsize);
    available = std::min(available, static_cast<int64_t>(std::floor(free * options_.overprovisionRatio)));
  }
  return std::max<int64_t>(0, available);
}

base::Status Driver::freeze(const std::vector<std::string>& ids, std::vector<std::string>* frozen) {
  for (const auto& id : ids) {
    auto node = store_.node(id);
    if (!node || node->state != RecordState::kReady) continue;
    if (node->block) {
      int fd = ::open(node->device.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        ::fsync(fd);
        ::close(fd);
      }
      continue;
    }
    int fd = ::open(node->stagingPath.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) continue;
    int rc = ::ioctl(fd, FIFREEZE, 0);
    int err = errno;
    ::close(fd);
    if (rc != 0) {
      thaw(*frozen);
      frozen->clear();
      return base::Error::fromErrno(err, "freezing " + node->stagingPath);
    }
    frozen->push_back(node->stagingPath);
  }
  return {};
}

void Driver::thaw(const std::vector<std::string>& frozen) {
  for (const auto& path : frozen) {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) continue;
    ::ioctl(fd, FITHAW, 0);
    ::close(fd);
  }
}

base::Status Driver::recover() {
  namespace fs = std::filesystem;
  std::error_code ec;
  // Temporary files of atomic writes a crash cut short: the records they
  // were to replace are intact.
  for (const char* kind : {"volumes", "snapshots", "groups", "node"}) {
    for (const auto& e : fs::directory_iterator(store_.poolDir() + "/meta/" + kind, ec)) {
      if (e.path().extension() == ".tmp") fs::remove(e.path(), ec);
    }
  }
  // Node side first: it may hold the files of half-created volumes open.
  std::set<std::string> stagedFiles;
  for (auto rec : store_.nodes()) {
    bool changed = false;
    for (auto it = rec.publishes.begin(); it != rec.publishes.end();) {
      if (it->state == RecordState::kCreating) {
        logger().info("recovery: undoing an interrupted publish", {{"volume", rec.volumeId}, {"target", it->targetPath}});
        if (auto st = sys::unmount(it->targetPath); !st) return st;
        it = rec.publishes.erase(it);
        changed = true;
      } else {
        ++it;
      }
    }
    if (rec.state == RecordState::kCreating) {
      logger().info("recovery: undoing an interrupted stage", {{"volume", rec.volumeId}, {"staging", rec.stagingPath}});
      for (const auto& p : rec.publishes) {
        if (auto st = sys::unmount(p.targetPath); !st) return st;
      }
      if (!rec.block && !rec.stagingPath.empty()) {
        if (auto st = sys::unmount(rec.stagingPath); !st) return st;
      }
      if (auto dev = sys::loopFind(store_.volumeImage(rec.volumeId))) {
        if (auto st = sys::loopDetach(*dev); !st) return st;
      }
      if (auto st = store_.removeNode(rec.volumeId); !st) return st;
      continue;
    }
    if (changed) {
      if (auto st = store_.put(rec); !st) return st;
    }
    stagedFiles.insert(store_.volumeImage(rec.volumeId));
  }
  // Loop devices on pool files that no ready stage accounts for.
  for (const auto& [dev, file] : sys::loopsUnder(store_.poolDir())) {
    if (stagedFiles.count(file)) continue;
    logger().info("recovery: detaching an unclaimed loop device", {{"device", dev}, {"file", file}});
    if (auto st = sys::loopDetach(dev); !st) return st;
  }
  for (const auto& g : store_.groups()) {
    if (g.state == RecordState::kReady) continue;
    logger().info("recovery: removing a half-created group snapshot", {{"group", g.id}});
    for (const auto& s : g.snapshots) {
      fs::remove(store_.snapshotImage(s), ec);
      if (auto st = store_.removeSnapshot(s); !st) return st;
    }
    if (auto st = store_.removeGroup(g.id); !st) return st;
  }
  for (const auto& s : store_.snapshots()) {
    if (s.state == RecordState::kReady) continue;
    logger().info("recovery: removing a half-created snapshot", {{"snapshot", s.id}});
    fs::remove(store_.snapshotImage(s.id), ec);
    if (auto st = store_.removeSnapshot(s.id); !st) return st;
  }
  for (const auto& v : store_.volumes()) {
    if (v.state == RecordState::kReady) continue;
    logger().info("recovery: removing a half-created volume", {{"volume", v.id}});
    fs::remove(store_.volumeImage(v.id), ec);
    if (auto st = store_.removeVolume(v.id); !st) return st;
  }
  // Images no record names: a create cut short before its record was
  // written (records are written after the image). The pool's volumes/ and
  // snapshots/ directories belong to the driver.
  std::vector<fs::path> orphans;
  for (const char* dir : {"volumes", "snapshots"}) {
    for (const auto& e : fs::directory_iterator(store_.poolDir() + "/" + dir, ec)) {
      std::string name = e.path().filename().string();
      std::string id = name.ends_with(".img") ? name.substr(0, name.size() - 4) : "";
      bool owned = !id.empty() && (std::string(dir) == "volumes" ? store_.volume(id).has_value() : store_.snapshot(id).has_value());
      if (!owned) orphans.push_back(e.path());
    }
  }
  for (const auto& p : orphans) {
    logger().info("recovery: removing an image no record names (an interrupted create)", {{"file", p.string()}});
    fs::remove(p, ec);
  }
  return {};
}

}  // namespace trellis::csi
