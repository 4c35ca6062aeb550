// trellis-cni-agent against a real trellis-apiserver: it installs the plugin
// and conflist once its Node has pod CIDRs, and keeps host-gw routes to the
// other nodes equal to what the Nodes say — in a network namespace this test
// creates (root), through restarts.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <fmt/format.h>

#include "common/kube/client.h"
#include "common/kube/config.h"
#include "common/testing/apiserver_process.h"
#include "common/testing/testing.h"

namespace trellis::cni {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "creates a network namespace: run as root";
    ASSERT_TRUE(api_.start()) << api_.log();
    auto cfg = kube::loadKubeconfig({api_.kubeconfig()});
    ASSERT_TRUE(cfg);
    auto c = kube::Client::create(*cfg);
    ASSERT_TRUE(c);
    client_ = std::move(*c);
    ns_ = fmt::format("trellis-ag{}", getpid() % 100000);
    std::string in = "ip netns exec " + ns_ + " ";
    ASSERT_EQ(testing::run("ip netns add " + ns_ + " && " + in + "ip link add up0 type veth peer name up0p && " + in +
                           "ip link set up0p up && " + in + "ip addr add 192.168.60.1/24 dev up0 && " + in +
                           "ip link set up0 up")
                  .exitCode,
              0);
  }
  void TearDown() override {
    stopAgent(SIGTERM);
    testing::run("ip netns del " + ns_);
  }
  void node(const std::string& name, const std::string& cidr, const std::string& ip) {
    json::object n{{"metadata", json::object{{"name", name}}}, {"spec", json::object{{"podCIDRs", json::array{json::value(cidr)}}}}};
    auto created = client_->create(kube::resources::kNodes, "", n);
    ASSERT_TRUE(created) << created.error().message();
    setIp(name, ip);
  }
  void setIp(const std::string& name, const std::string& ip) {
    auto p = client_->patch(kube::resources::kNodes, "", name, kube::PatchType::kMerge,
                            R"({"status":{"addresses":[{"type":"InternalIP","address":")" + ip + "\"}]}}", "status");
    ASSERT_TRUE(p) << p.error().message();
  }
  void startAgent() {
    pid_ = fork();
    if (pid_ == 0) {
      std::string log = dir_.file("agent.log");
      if (!freopen(log.c_str(), "a", stderr)) _exit(126);
      execl(TRELLIS_CNI_AGENT_BIN, "trellis-cni-agent", "--kubeconfig", api_.kubeconfig().c_str(), "--node-name", "n1",
            "--cni-bin-dir", dir_.file("bin").c_str(), "--cni-conf-dir", dir_.file("net.d").c_str(), "--plugin",
            TRELLIS_CNI_BIN, "--cluster-cidr", "10.244.0.0/16", "--netns", ("/var/run/netns/" + ns_).c_str(),
            "--listen", ("127.0.0.1:" + std::to_string(port_)).c_str(), "--resync", "1", nullptr);
      _exit(127);
    }
  }
  void stopAgent(int sig) {
    if (pid_ <= 0) return;
    kill(pid_, sig);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  std::string routes() { return testing::run("ip netns exec " + ns_ + " ip route show proto 77").out; }

  testing::TempDir dir_;
  testing::ApiServerProcess api_{TRELLIS_APISERVER_BIN, dir_.path()};
  std::unique_ptr<kube::Client> client_;
  std::string ns_;
  int port_ = testing::freeTcpPort();
  pid_t pid_ = -1;
};

TEST_F(AgentTest, InstallsThePluginAndKeepsHostGwRoutesLevelTriggered) {
  node("n1", "10.244.1.0/24", "192.168.60.1");
  node("n2", "10.244.2.0/24", "192.168.60.2");
  node("n3", "10.244.3.0/24", "192.168.60.3");
  startAgent();
  std::string conflist = dir_.file("net.d/10-trellis.conflist");
  ASSERT_TRUE(testing::waitFor([&] { return access(conflist.c_str(), R_OK) == 0; }, 10s)) << testing::readFile(dir_.file("agent.log"));
  json::value c = json::parse(testing::readFile(conflist));
  EXPECT_EQ(c.at("plugins").at(0).at("ipam").at("ranges").at(0).at(0).at("subnet").as_string(), "10.244.1.0/24");
  EXPECT_EQ(c.at("plugins").at(0).at("clusterCIDR").as_string(), "10.244.0.0/16");
  EXPECT_EQ(access(dir_.file("bin/trellis-cni").c_str(), X_OK), 0);
  EXPECT_TRUE(testing::waitFor([&] {
    std::string r = routes();
    return r.find("10.244.2.0/24 via 192.168.60.2") != std::string::npos &&
           r.find("10.244.3.0/24 via 192.168.60.3") != std::string::npos;
  }, 10s)) << routes();
  EXPECT_EQ(routes().find("10.244.1.0/24"), std::string::npos);  // not to itself
  EXPECT_TRUE(testing::waitFor([&] {
    return testing::run("curl -s http://127.0.0.1:" + std::to_string(port_) + "/healthz").out == "ok";
  }, 5s));
  // A node changes its address, another leaves.
  setIp("n2", "192.168.60.22");
  ASSERT_TRUE(client_->remove(kube::resources::kNodes, "", "n3"));
  EXPECT_TRUE(testing::waitFor([&] {
    std::string r = routes();
    return r.find("10.244.2.0/24 via 192.168.60.22") != std::string::npos && r.find("10.244.3.0/24") == std::string::npos;
  }, 10s)) << routes();
  // While the agent is down a node arrives and a stale route appears: the restart converges.
  stopAgent(SIGKILL);
  node("n4", "10.244.4.0/24", "192.168.60.4");
  testing::run("ip netns exec " + ns_ + " ip route add 10.244.9.0/24 via 192.168.60.9 proto 77");
  startAgent();
  EXPECT_TRUE(testing::waitFor([&] {
    std::string r = routes();
    return r.find("10.244.4.0/24 via 192.168.60.4") != std::string::npos && r.find("10.244.9.0/24") == std::string::npos;
  }, 10s)) << routes();
  auto metrics = testing::run("curl -s http://127.0.0.1:" + std::to_string(port_) + "/metrics").out;
  EXPECT_NE(metrics.find("trellis_cni_agent_routes 2"), std::string::npos) << metrics;
}

}  // namespace
}  // namespace trellis::cni
