#include "servicelb/sock_lb.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/libbpf.h>
#include <fmt/format.h>

#include "servicelb/bpf/maps.h"
#include "sock_lb.skel.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace trellis::servicelb {

base::Result<uint64_t> netnsCookie() {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return base::Error::fromErrno(errno, "socket");
  uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  int rc = getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len);
  int err = errno;
  close(fd);
  if (rc != 0) return base::Error::fromErrno(err, "getsockopt SO_NETNS_COOKIE");
  return cookie;
}

struct SockLb::Impl {
  sock_lb* skel = nullptr;
  bpf_link* connect = nullptr;
  bpf_link* peer = nullptr;
  bpf_link* send = nullptr;
  bpf_link* recv = nullptr;
  int cgroup = -1;
  ~Impl() {
    if (recv) bpf_link__destroy(recv);
    if (send) bpf_link__destroy(send);
    if (peer) bpf_link__destroy(peer);
    if (connect) bpf_link__destroy(connect);
    if (skel) sock_lb__destroy(skel);
    if (cgroup >= 0) close(cgroup);
  }
};

SockLb::SockLb(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SockLb::~SockLb() = default;

base::Result<std::unique_ptr<SockLb>> SockLb::attach(const std::string& cgroupPath) {
  auto impl = std::make_unique<Impl>();
  impl->cgroup = open(cgroupPath.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (impl->cgroup < 0) return base::Error::fromErrno(errno, "opening cgroup " + cgroupPath);
  impl->skel = sock_lb__open_and_load();
  if (!impl->skel) return base::Error::fromErrno(errno, "loading the socket load balancer's BPF programs");
  impl->connect = bpf_program__attach_cgroup(impl->skel->progs.trellis_connect4, impl->cgroup);
  if (!impl->connect) return base::Error::fromErrno(errno, "attaching connect4 to " + cgroupPath);
  impl->peer = bpf_program__attach_cgroup(impl->skel->progs.trellis_getpeername4, impl->cgroup);
  if (!impl->peer) return base::Error::fromErrno(errno, "attaching getpeername4 to " + cgroupPath);
  impl->send = bpf_program__attach_cgroup(impl->skel->progs.trellis_sendmsg4, impl->cgroup);
  if (!impl->send) return base::Error::fromErrno(errno, "attaching sendmsg4 to " + cgroupPath);
  impl->recv = bpf_program__attach_cgroup(impl->skel->progs.trellis_recvmsg4, impl->cgroup);
  if (!impl->recv) return base::Error::fromErrno(errno, "attaching recvmsg4 to " + cgroupPath);
  return std::unique_ptr<SockLb>(new SockLb(std::move(impl)));
}

namespace {
lb_service_key keyOf(const Vip& v) {
  lb_service_key k{};
  k.netns = v.netns;
  k.addr = htonl(v.addr);
  k.port = htons(v.port);
  k.proto = v.proto;
  return k;
}
}  // namespace

base::Result<void> SockLb::setService(const Vip& vip, uint32_t id, const std::vector<Backend>& backends) {
  auto* skel = impl_->skel;
  lb_service_key key = keyOf(vip);
  lb_service old{};
  bool had = bpf_map__lookup_elem(skel->maps.lb_services, &key, sizeof key, &old, sizeof old, 0) == 0;
  for (uint32_t slot = 0; slot < backends.size(); ++slot) {
    lb_backend_key bk{id, slot};
    lb_backend be{htonl(backends[slot].addr), htons(backends[slot].port)};
    if (bpf_map__update_elem(skel->maps.lb_backends, &bk, sizeof bk, &be, sizeof be, BPF_ANY) != 0) {
      return base::Error::fromErrno(errno, "writing a backend");
    }
  }
  lb_service svc{id, static_cast<uint32_t>(backends.size())};
  if (bpf_map__update_elem(skel->maps.lb_services, &key, sizeof key, &svc, sizeof svc, BPF_ANY) != 0) {
    return base::Error::fromErrno(errno, "writing a service");
  }
  if (had) {
    for (uint32_t slot = old.id == id ? static_cast<uint32_t>(backends.size()) : 0; slot < old.count; ++slot) {
      lb_backend_key bk{old.id, slot};
      bpf_map__delete_elem(skel->maps.lb_backends, &bk, sizeof bk, 0);
    }
  }
  return {};
}

base::Result<void> SockLb::removeService(const Vip& vip) {
  auto* skel = impl_->skel;
  lb_service_key key = keyOf(vip);
  lb_service old{};
  if (bpf_map__lookup_elem(skel->maps.lb_services, &key, sizeof key, &old, sizeof old, 0) != 0) return {};
  bpf_map__delete_elem(skel->maps.lb_services, &key, sizeof key, 0);
  for (uint32_t slot = 0; slot < old.count; ++slot) {
    lb_backend_key bk{old.id, slot};
    bpf_map__delete_elem(skel->maps.lb_backends, &bk, sizeof bk, 0);
  }
  return {};
}

}  // namespace trellis::servicelb
