// trellis-cni's built-in IPAM: addresses from host-local compatible
// `ranges` (or a single `subnet`), one address per range set per
// attachment (container id + interface name), kept on disk so that they
// survive crashes and reboots.
//
// The store is a directory per network, <dataDir>/<network>/, changed only
// under an flock() of its `lock` file, so concurrent plugin processes never
// hand out one address twice:
//   att-<hash of the attachment>  the attachment's index, a symlink whose
//                                 target is "containerID\nifname\nip[,ip]"
//   <address>                     an allocation entry: a hard link to the
//                                 index (so it reads "containerID\nifname..."
//                                 as host-local's files do; those are read too)
//   lock                          also holds the round-robin hints, a line
//                                 per range set
// An ADD creates one inode (the index, written before its entries: a crash
// between leaves an index naming untaken addresses, never an untraceable
// entry) and looks up only its own index, so its cost does not grow with
// the number of pods. ADD for an attachment that already holds addresses
// gets the same ones back (idempotent); DEL releases them (and is
// idempotent); GC releases every address whose attachment is not in the
// valid list (cni.dev/valid-attachments), and indexes that lead nowhere.
//
// Nothing is fsynced: every change is complete in the page cache when the
// plugin returns, so a killed plugin (or runtime) loses nothing; what only a
// power loss could drop is the allocation of a pod whose network namespace
// the power loss destroyed too — the runtime sets up every pod again after
// a reboot, and GC clears what is stale.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <boost/json/object.hpp>

#include "cni/plugin/protocol.h"

namespace trellis::cni {

struct IpRange {
  std::string subnet;      // CIDR
  std::string rangeStart;  // optional, inclusive
  std::string rangeEnd;    // optional, inclusive
  std::string gateway;     // optional; default: the subnet's first address
};

inline constexpr const char* kDefaultIpamDataDir = "/var/lib/cni/networks";
// In the data directory: one line per unexpected error of the plugin (a
// bug), counted by trellis-cni-agent's /metrics.
inline constexpr const char* kUnexpectedErrorsFile = "trellis-unexpected-errors";

struct IpamConfig {
  std::vector<std::vector<IpRange>> rangeSets;  // one address from each set
  std::vector<Route> routes;
  std::string dataDir = kDefaultIpamDataDir;  // absolute
};

// The "ipam" object of a network configuration (host-local's keys: ranges,
// subnet/rangeStart/rangeEnd/gateway, routes, dataDir). kInvalidConfig errors
// name the field.
std::variant<IpamConfig, Error> parseIpamConfig(const boost::json::object& ipam);

using Attachment = std::pair<std::string, std::string>;  // container id, ifname

// An exclusive flock() on `path` (created if missing) for this object's life.
class FileLock {
 public:
  explicit FileLock(const std::string& path);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }

 private:
  int fd_;
};

class Ipam {
 public:
  Ipam(IpamConfig config, std::string network);

  // One address per range set for the attachment (the same ones again if it
  // has them), with each set's gateway, and the configured routes.
  std::variant<Result, Error> allocate(const std::string& containerId, const std::string& ifname);
  // Releases the attachment's addresses; no error when it holds none.
  std::optional<Error> release(const std::string& containerId, const std::string& ifname);
  // Releases every address whose attachment is not in `valid`.
  std::optional<Error> gc(const std::set<Attachment>& valid);
  // Every allocation: address -> attachment.
  std::vector<std::pair<std::string, Attachment>> allocations() const;
  // The network's directory (<dataDir>/<network>): the plugin keeps its
  // other per-network state there too (ports/, nft-* stamps).
  const std::string& dir() const { return dir_; }

 private:
  IpamConfig config_;
  std::string dir_;
};

}  // namespace trellis::cni
