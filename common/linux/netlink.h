// Kernel network configuration over rtnetlink (libnl-route), and running
// code inside another network namespace. Every call works in the network
// namespace of the calling thread when its Netlink was opened; use
// inNetns() to open one inside a pod's namespace.
#pragma once

#include <functional>
#include <memory>
#include <cstdint>
#include <string>
#include <vector>

#include "common/base/result.h"

namespace trellis::sys {

class Netlink {
 public:
  // A NETLINK_ROUTE socket in the calling thread's network namespace.
  static base::Result<std::unique_ptr<Netlink>> open();
  // A NETLINK_ROUTE socket in the network namespace open as `netnsFd`: the
  // calling thread enters it only to create the socket, which then works
  // there whatever namespace its user is in (no helper thread needed).
  static base::Result<std::unique_ptr<Netlink>> openIn(int netnsFd);
  ~Netlink();
  Netlink(const Netlink&) = delete;
  Netlink& operator=(const Netlink&) = delete;

  // One link, looked up by name in one request; kNotFound when missing.
  struct Link {
    std::string name;
    int index = 0;
    std::string mac;  // "aa:bb:cc:dd:ee:ff"
    bool up = false;
    int master = 0;  // the ifindex of its bridge (0: none)
  };
  base::Result<Link> link(const std::string& ifname);
  bool exists(const std::string& ifname);
  base::Result<int> ifindex(const std::string& ifname);
  base::Result<std::string> mac(const std::string& ifname);

  // A Linux bridge, created if missing, up, without IPv6 duplicate address
  // detection (its link-local address is usable at once). A bridge given a MAC keeps it
  // (else it takes over a port's, changing as ports come and go); mtu 0
  // leaves the kernel's default.
  base::Result<Link> ensureBridge(const std::string& name, int mtu, const std::string& mac = {});
  // A veth pair in one request: the host end here, enslaved to `master` (an
  // ifindex; 0: none), the peer created directly in the network namespace
  // open as `peerNetnsFd` under its final name; the host end up (the peer
  // cannot be: bring it up in its namespace), with the given MACs (empty:
  // the kernel's) and MTU (0: the kernel's). kAlreadyExists when either name
  // is taken.
  struct VethPair {
    std::string hostName, hostMac;
    int master = 0;
    std::string peerName, peerMac;
    int peerNetnsFd = -1;
    int mtu = 0;
  };
  base::Status createVethPair(const VethPair& pair);
  base::Status setMaster(const std::string& ifname, const std::string& master);
  base::Status setUp(const std::string& ifname);
  base::Status setUp(int ifindex);
  base::Status setDown(int ifindex);
  base::Status setMac(const std::string& ifname, const std::string& mac);
  // On older kernels the link must be down (a new veth end is).
  base::Status rename(const std::string& ifname, const std::string& newName);
  base::Status rename(int ifindex, const std::string& newName);
  // "10.244.1.5/24" (v4 or v6; v6 without duplicate address detection); an
  // existing identical address is fine.
  base::Status addAddress(const std::string& ifname, const std::string& cidr);
  base::Status addAddress(int ifindex, const std::string& cidr);
  // A route to `dst` (CIDR) via `gateway` (may be empty: on-link) out of `ifname`.
  base::Status addRoute(const std::string& dst, const std::string& gateway, const std::string& ifname);
  base::Status addRoute(const std::string& dst, const std::string& gateway, int ifindex);
  // kNotFound when there is no such link.
  base::Status deleteLink(const std::string& ifname);
  base::Status deleteLink(int ifindex);
  // Every link in this namespace (one dump), and just their names.
  base::Result<std::vector<Link>> linkList();
  base::Result<std::vector<std::string>> links();

  struct LinkStats {
    uint64_t rxBytes = 0, rxPackets = 0, rxDropped = 0, txBytes = 0, txPackets = 0, txDropped = 0;
  };
  base::Result<LinkStats> stats(const std::string& ifname);

  // Routes of the main table installed with routing protocol `protocol`
  // (an owner tag: `ip route ... proto N`), as "dst via gw".
  struct RouteEntry {
    std::string dst;  // CIDR
    std::string gw;
  };
  base::Result<std::vector<RouteEntry>> routes(int protocol);
  // Adds or replaces the route to `dst` via `gw`, tagged `protocol`; with
  // `ifname`, out of that link and treating `gw` as on-link (a VXLAN peer).
  base::Status replaceRoute(const std::string& dst, const std::string& gw, int protocol, const std::string& ifname = {});
  // The addresses of link `ifindex`, as "address/prefix".
  base::Result<std::vector<std::string>> addresses(int ifindex);
  // The routes of the main table out of link `ifindex` (any protocol); a
  // default route's dst is "0.0.0.0/0" or "::/0".
  base::Result<std::vector<RouteEntry>> linkRoutes(int ifindex);
  // Is `ip` inside the subnet of an address of this namespace (a shared link)?
  base::Result<bool> connected(const std::string& ip);
  // A VXLAN device (created if missing, learning off), up.
  base::Status ensureVxlan(const std::string& name, uint32_t vni, const std::string& localIp, int port, int mtu);
  // A permanent neighbor entry: `ip` is at `mac` on `ifname`.
  base::Status setNeighbor(const std::string& ifname, const std::string& ip, const std::string& mac);
  // A permanent forwarding entry of a VXLAN device: frames for `mac` go to `dstIp`.
  base::Status setFdb(const std::string& ifname, const std::string& mac, const std::string& dstIp);
  // The permanent entries of `ifname`, in one dump: family AF_INET or
  // AF_INET6 (the neighbor tables: ip at mac) or AF_BRIDGE (the forwarding
  // database: mac to the remote endpoint ip); and deleting one (missing is
  // fine).
  struct NeighborEntry {
    int family = 0;
    std::string ip, mac;
  };
  base::Result<std::vector<NeighborEntry>> permanentNeighbors(const std::string& ifname);
  base::Status deleteNeighbor(const std::string& ifname, int family, const std::string& ip, const std::string& mac);
  base::Status deleteRoute(const std::string& dst, int protocol);
  // A token-bucket filter as the root qdisc of `ifname` (replacing any):
  // what leaves through the link is shaped to `rateBytes` per second with a
  // bucket of `burstBytes` and at most `limitBytes` queued.
  base::Status setTbf(const std::string& ifname, uint64_t rateBytes, uint32_t burstBytes, uint32_t limitBytes);

  struct Impl;

 private:
  explicit Netlink(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Runs `fn` on a helper thread that has joined the network namespace at
// `path` (e.g. /var/run/netns/x or /proc/<pid>/ns/net); kNotFound when
// the path does not exist, kInvalidArgument when it is not a network
// namespace.
base::Status inNetns(const std::string& path, const std::function<base::Status()>& fn);

// Opens a network namespace file for createVethPair and openIn (close it
// when done); the same errors as inNetns.
base::Result<int> openNetns(const std::string& path);

}  // namespace trellis::sys
