// reconcileRoutes in a network namespace this test creates (root).
#include "cni/agent/routes.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fmt/format.h>

#include "common/testing/testing.h"

namespace trellis::cni {
namespace {

class RoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "creates a network namespace: run as root";
    ns_ = fmt::format("trellis-rt{}", getpid() % 100000);
    ASSERT_EQ(testing::run("ip netns add " + ns_).exitCode, 0);
    // A node's uplink: one end of a veth pair on 192.168.50.0/24, and a route Trellis does not own.
    std::string in = "ip netns exec " + ns_ + " ";
    ASSERT_EQ(testing::run(in + "ip link add up0 type veth peer name up0p && " + in + "ip link set up0p up && " + in + "ip addr add 192.168.50.1/24 dev up0 && " + in +
                           "ip link set up0 up && " + in + "ip route add 10.99.0.0/24 via 192.168.50.9 proto static")
                  .exitCode,
              0);
  }
  void TearDown() override { testing::run("ip netns del " + ns_); }

  // Runs reconcileRoutes inside the namespace.
  RouteChanges reconcile(const std::vector<PeerRoute>& want) {
    RouteChanges out;
    auto st = sys::inNetns("/var/run/netns/" + ns_, [&]() -> base::Status {
      auto nl = sys::Netlink::open();
      if (!nl) return std::move(nl).error();
      auto c = reconcileRoutes(**nl, want);
      if (!c) return std::move(c).error();
      out = *c;
      return {};
    });
    EXPECT_TRUE(st) << (st ? "" : st.error().message());
    return out;
  }
  std::string routes() { return testing::run("ip netns exec " + ns_ + " ip route show").out; }

  std::string ns_;
};

TEST_F(RoutesTest, ReconcileAddsReplacesRemovesAndLeavesOthersAlone) {
  auto c = reconcile({{"10.244.1.0/24", "192.168.50.2"}, {"10.244.2.0/24", "192.168.50.3"}});
  EXPECT_EQ(c.added, 2);
  std::string r = routes();
  EXPECT_NE(r.find("10.244.1.0/24 via 192.168.50.2 dev up0 proto 77"), std::string::npos) << r;
  EXPECT_NE(r.find("10.244.2.0/24 via 192.168.50.3 dev up0 proto 77"), std::string::npos) << r;
  // The same again: nothing to do (level-triggered, idempotent).
  c = reconcile({{"10.244.1.0/24", "192.168.50.2"}, {"10.244.2.0/24", "192.168.50.3"}});
  EXPECT_EQ(c.added + c.replaced + c.removed, 0);
  // A node moved, another left.
  c = reconcile({{"10.244.1.0/24", "192.168.50.4"}});
  EXPECT_EQ(c.replaced, 1);
  EXPECT_EQ(c.removed, 1);
  r = routes();
  EXPECT_NE(r.find("10.244.1.0/24 via 192.168.50.4 dev up0 proto 77"), std::string::npos) << r;
  EXPECT_EQ(r.find("10.244.2.0/24"), std::string::npos) << r;
  EXPECT_NE(r.find("10.99.0.0/24 via 192.168.50.9"), std::string::npos) << r;  // not ours: untouched
  // Every node gone: only the foreign route stays.
  c = reconcile({});
  EXPECT_EQ(c.removed, 1);
  EXPECT_EQ(routes().find("proto 77"), std::string::npos);
}

}  // namespace
}  // namespace trellis::cni
