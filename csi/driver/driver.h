// The state trellis-csi's services share: options, the metadata store,
// per-object operation locks (a second concurrent call on the same volume
// gets ABORTED, as the spec allows), capacity accounting, and crash
// recovery at start-up. No gRPC here: the services (services.h) translate.
#pragma once

#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "common/base/log.h"
#include "common/base/result.h"
#include "csi/driver/store.h"

namespace trellis::csi {

inline constexpr const char* kTopologyKey = "topology.csi.trellis.dev/node";
inline constexpr int64_t kMiB = 1 << 20;
inline constexpr int64_t kGiB = int64_t{1} << 30;

// The driver's one logger ("csi").
const base::Logger& logger();

struct DriverOptions {
  std::string driverName = "csi.trellis.dev";
  std::string vendorVersion = "0.1.0";
  std::string nodeId;
  std::string poolDir = "/var/lib/trellis/csi";
  bool controller = true;
  bool node = true;
  int64_t defaultVolumeSize = kGiB;   // CreateVolume without a capacity range
  double overprovisionRatio = 1.0;    // promised capacity / pool size
  int64_t capacityBytes = 0;          // pool size override; 0 = the pool filesystem's size
  int64_t maxVolumesPerNode = 0;      // NodeGetInfo and ControllerPublish's limit; 0 = none
  // The filesystem NodeStage makes when the capability names none. "ext4"
  // normally; "xfs" when this process cannot grow a mounted ext4 (no
  // CAP_SYS_RESOURCE), so online expansion keeps working.
  std::string defaultFsType = "ext4";
};

// At most one operation per object id at a time.
class OpLocks {
 public:
  class Guard {
   public:
    Guard(OpLocks* locks, std::vector<std::string> ids) : locks_(locks), ids_(std::move(ids)) {}
    Guard(Guard&& o) noexcept : locks_(o.locks_), ids_(std::move(o.ids_)) { o.locks_ = nullptr; }
    Guard(const Guard&) = delete;
    ~Guard();
    explicit operator bool() const { return locks_ != nullptr; }

   private:
    OpLocks* locks_;
    std::vector<std::string> ids_;
  };
  // An engaged guard, or an empty one if any id is busy (nothing is taken then).
  Guard tryLock(std::vector<std::string> ids);

 private:
  std::mutex mu_;
  std::set<std::string> busy_;
};

class Driver {
 public:
  Driver(DriverOptions options, Store store) : options_(std::move(options)), store_(std::move(store)) {}

  const DriverOptions& options() const { return options_; }
  Store& store() { return store_; }
  OpLocks& locks() { return locks_; }
  // Held while capacity is checked and promised (expansion).
  std::mutex& capacityMutex() { return capacityMu_; }

  // Capacity promised to a volume being created, until its record counts it.
  class Reservation {
   public:
    Reservation(Driver* d, int64_t bytes) : d_(d), bytes_(bytes) {}
    Reservation(Reservation&& o) noexcept : d_(o.d_), bytes_(o.bytes_) { o.d_ = nullptr; }
    Reservation(const Reservation&) = delete;
    ~Reservation();
    explicit operator bool() const { return d_ != nullptr; }

   private:
    Driver* d_;
    int64_t bytes_;
  };
  // An engaged reservation, or an empty one when the pool cannot promise `bytes`.
  Reservation reserve(int64_t bytes);

  // Undoes what a crash interrupted: half-created volumes and snapshots
  // (records still "creating") are removed with their files; node records
  // still "creating" are unmounted and their loop devices detached; loop
  // devices of pool files no record stages are detached. Logs each action.
  base::Status recover();

  // The pool's size (the override, or the pool filesystem's) times the
  // over-provisioning ratio, minus what volumes and reservations promise;
  // at most the pool filesystem's real free space times the ratio.
  int64_t availableCapacity();
  int64_t poolSize() const;

  // Deterministic ids from names ("vol-" + 32 hex digits of SHA-256), so a
  // retried create finds its earlier work even after a crash.
  static std::string idFor(const std::string& prefix, const std::string& name);
  // Ids and names a caller may send: 1-128 characters of [A-Za-z0-9._-],
  // not "." or ".." — nothing that can leave the pool directory.
  static bool validId(const std::string& id);

  // Flushes and freezes the filesystems of the staged volumes among `ids`
  // (FIFREEZE on the staging mount) so that copies taken meanwhile are
  // consistent; thaw() undoes it. Raw block volumes are fsynced.
  base::Status freeze(const std::vector<std::string>& ids, std::vector<std::string>* frozen);
  void thaw(const std::vector<std::string>& frozen);

 private:
  DriverOptions options_;
  Store store_;
  OpLocks locks_;
  std::mutex capacityMu_;
  int64_t reserved_ = 0;  // guarded by capacityMu_
};

}  // namespace trellis::csi
