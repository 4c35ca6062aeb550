#include "common/linux/nft_netlink.h"

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace trellis::sys {

namespace {

// Netlink attributes appended to a buffer; nests patched when closed.
class Attrs {
 public:
  void put(uint16_t type, std::string_view value) {
    nlattr a{static_cast<uint16_t>(NLA_HDRLEN + value.size()), type};
    buf_.append(reinterpret_cast<const char*>(&a), sizeof a);
    buf_.append(value);
    buf_.append(NLA_ALIGN(value.size()) - value.size(), '\0');
  }
  void putString(uint16_t type, const std::string& s) { put(type, std::string_view(s.c_str(), s.size() + 1)); }
  size_t begin(uint16_t type) {
    size_t at = buf_.size();
    nlattr a{0, static_cast<uint16_t>(type | NLA_F_NESTED)};
    buf_.append(reinterpret_cast<const char*>(&a), sizeof a);
    return at;
  }
  void end(size_t at) {
    uint16_t len = static_cast<uint16_t>(buf_.size() - at);
    std::memcpy(buf_.data() + at, &len, sizeof len);
  }
  const std::string& bytes() const { return buf_; }

 private:
  std::string buf_;
};

std::string message(uint16_t type, uint16_t flags, uint32_t seq, int family, uint16_t resId, const std::string& attrs) {
  std::string m(NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg)), '\0');
  auto* h = reinterpret_cast<nlmsghdr*>(m.data());
  h->nlmsg_type = type;
  h->nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
  h->nlmsg_seq = seq;
  auto* g = reinterpret_cast<nfgenmsg*>(m.data() + NLMSG_HDRLEN);
  g->nfgen_family = static_cast<uint8_t>(family);
  g->version = NFNETLINK_V0;
  g->res_id = htons(resId);
  m += attrs;
  reinterpret_cast<nlmsghdr*>(m.data())->nlmsg_len = static_cast<uint32_t>(m.size());
  return m;
}

uint16_t nftType(int msg) { return static_cast<uint16_t>((NFNL_SUBSYS_NFTABLES << 8) | msg); }

std::string elementList(const std::string& table, const std::string& set, const std::vector<NftElement>& elements,
                        bool withData) {
  Attrs a;
  a.putString(NFTA_SET_ELEM_LIST_TABLE, table);
  a.putString(NFTA_SET_ELEM_LIST_SET, set);
  size_t list = a.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
  for (const NftElement& e : elements) {
    size_t elem = a.begin(NFTA_LIST_ELEM);
    size_t key = a.begin(NFTA_SET_ELEM_KEY);
    a.put(NFTA_DATA_VALUE, e.key);
    a.end(key);
    if (withData && !e.data.empty()) {
      size_t data = a.begin(NFTA_SET_ELEM_DATA);
      a.put(NFTA_DATA_VALUE, e.data);
      a.end(data);
    }
    a.end(elem);
  }
  a.end(list);
  return a.bytes();
}

}  // namespace

std::string nftConcat(std::initializer_list<std::string_view> fields) {
  std::string out;
  for (std::string_view f : fields) {
    out.append(f);
    out.append((4 - f.size() % 4) % 4, '\0');
  }
  return out;
}

std::string nftAddr(const base::IpAddr& a) {
  std::string out(a.v6 ? 16 : 4, '\0');
  base::u128 v = a.value;
  for (size_t i = out.size(); i-- > 0;) {
    out[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return out;
}

std::string nftPort(uint16_t port) { return std::string{static_cast<char>(port >> 8), static_cast<char>(port & 0xff)}; }

std::string nftProto(uint8_t proto) { return std::string(1, static_cast<char>(proto)); }

base::Result<std::unique_ptr<NftNetlink>> NftNetlink::open() {
  int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) return base::Error::fromErrno(errno, "nfnetlink socket");
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
    int err = errno;
    ::close(fd);
    return base::Error::fromErrno(err, "binding the nfnetlink socket");
  }
  return std::unique_ptr<NftNetlink>(new NftNetlink(fd));
}

NftNetlink::~NftNetlink() { ::close(fd_); }

base::Result<int> NftNetlink::transact(uint16_t type, uint16_t flags, int family, const std::string& attrs, bool batch,
                                       void (*onReply)(const char*, size_t, void*), void* ctx) {
  uint32_t seq = ++seq_;
  std::string out;
  if (batch) out += message(NFNL_MSG_BATCH_BEGIN, 0, ++seq_, AF_UNSPEC, NFNL_SUBSYS_NFTABLES, "");
  out += message(type, static_cast<uint16_t>(flags | NLM_F_ACK), seq, family, 0, attrs);
  if (batch) out += message(NFNL_MSG_BATCH_END, 0, ++seq_, AF_UNSPEC, NFNL_SUBSYS_NFTABLES, "");
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd_, out.data(), out.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
    return base::Error::fromErrno(errno, "sending to nfnetlink");
  }
  alignas(nlmsghdr) char buf[16384];
  for (;;) {
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::Error::fromErrno(errno, "reading from nfnetlink");
    }
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, static_cast<size_t>(n)); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_seq != seq) continue;
      if (h->nlmsg_type == NLMSG_ERROR) {
        return -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
      }
      if (onReply) {
        size_t head = NLMSG_ALIGN(sizeof(nfgenmsg));
        onReply(static_cast<const char*>(NLMSG_DATA(h)) + head, h->nlmsg_len - NLMSG_HDRLEN - head, ctx);
      }
    }
  }
}

base::Result<uint64_t> NftNetlink::tableHandle(int family, const std::string& table) {
  Attrs a;
  a.putString(NFTA_TABLE_NAME, table);
  struct Found {
    uint64_t handle = 0;
    bool seen = false;
  } found;
  auto onReply = [](const char* p, size_t len, void* ctx) {
    auto* f = static_cast<Found*>(ctx);
    for (size_t off = 0; off + NLA_HDRLEN <= len;) {
      nlattr attr;
      std::memcpy(&attr, p + off, sizeof attr);
      if (attr.nla_len < NLA_HDRLEN || off + attr.nla_len > len) break;
      if ((attr.nla_type & NLA_TYPE_MASK) == NFTA_TABLE_HANDLE && attr.nla_len == NLA_HDRLEN + 8) {
        uint64_t be;
        std::memcpy(&be, p + off + NLA_HDRLEN, 8);
        f->handle = be64toh(be);
        f->seen = true;
      }
      off += NLA_ALIGN(attr.nla_len);
    }
  };
  auto err = transact(nftType(NFT_MSG_GETTABLE), 0, family, a.bytes(), false, onReply, &found);
  if (!err) return std::move(err).error();
  if (*err == ENOENT || (*err == 0 && !found.seen)) return base::Error(base::ErrorCode::kNotFound, "no nftables table " + table);
  if (*err != 0) return base::Error::fromErrno(*err, "getting nftables table " + table);
  return found.handle;
}

base::Status NftNetlink::addElements(int family, const std::string& table, const std::string& set,
                                     const std::vector<NftElement>& elements) {
  if (elements.empty()) return {};
  auto err = transact(nftType(NFT_MSG_NEWSETELEM), NLM_F_CREATE, family, elementList(table, set, elements, true), true);
  if (!err) return std::move(err).error();
  if (*err == EBUSY || *err == EEXIST) {
    return base::Error(base::ErrorCode::kConflict, "an element of " + set + " is already there with other data");
  }
  if (*err != 0) return base::Error::fromErrno(*err, "adding elements to nftables " + table + " " + set);
  return {};
}

base::Status NftNetlink::deleteElements(int family, const std::string& table, const std::string& set,
                                        const std::vector<NftElement>& elements) {
  if (elements.empty()) return {};
  auto del = [&](const std::vector<NftElement>& some) -> base::Result<int> {
    return transact(nftType(NFT_MSG_DELSETELEM), 0, family, elementList(table, set, some, false), true);
  };
  auto err = del(elements);
  if (!err) return std::move(err).error();
  if (*err == ENOENT && elements.size() > 1) {
    // One was absent (and the batch undone), or the set is gone: one by one.
    for (const NftElement& e : elements) {
      auto one = del({e});
      if (!one) return std::move(one).error();
      if (*one != 0 && *one != ENOENT) return base::Error::fromErrno(*one, "deleting from nftables " + table + " " + set);
    }
    return {};
  }
  if (*err != 0 && *err != ENOENT) return base::Error::fromErrno(*err, "deleting from nftables " + table + " " + set);
  return {};
}

}  // namespace trellis::sys
