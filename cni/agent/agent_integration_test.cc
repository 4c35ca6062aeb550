// trellis-cni-agent against a real trellis-apiserver: it installs the plugin
// and conflist once its Node has pod CIDRs, and keeps host-gw routes to the
// other nodes equal to what the Nodes say — in a network namespace this test
// creates (root), through restarts.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
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
            "--listen", ("127.0.0.1:" + std::to_string(port_)).c_str(), "--resync", "1", "--ready-file",
            dir_.file("cni-ready").c_str(), nullptr);
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
  ASSERT_TRUE(testing::waitFor([&] { return access(conflist.c_str(), R_OK) == 0; }, 30s)) << testing::readFile(dir_.file("agent.log"));
  json::value c = json::parse(testing::readFile(conflist));
  EXPECT_EQ(c.at("plugins").at(0).at("ipam").at("ranges").at(0).at(0).at("subnet").as_string(), "10.244.1.0/24");
  EXPECT_EQ(c.at("plugins").at(0).at("clusterCIDR").as_string(), "10.244.0.0/16");
  EXPECT_EQ(c.at("plugins").at(0).at("readyFile").as_string(), dir_.file("cni-ready"));
  // STATUS through the conflist's plugin: ready once the agent's first sync is done.
  json::object plugin = c.at("plugins").at(0).as_object();
  plugin["name"] = c.at("name");
  plugin["cniVersion"] = "1.1.0";
  testing::writeFile(dir_.file("status.json"), json::serialize(plugin));
  EXPECT_TRUE(testing::waitFor([&] {
    return testing::run("env CNI_COMMAND=STATUS CNI_PATH=/usr/lib/cni " + dir_.file("bin/trellis-cni") + " < " +
                        dir_.file("status.json")).exitCode == 0;
  }, 30s)) << testing::run("env CNI_COMMAND=STATUS " + dir_.file("bin/trellis-cni") + " < " + dir_.file("status.json")).out;
  EXPECT_EQ(access(dir_.file("bin/trellis-cni").c_str(), X_OK), 0);
  EXPECT_TRUE(testing::waitFor([&] {
    std::string r = routes();
    return r.find("10.244.2.0/24 via 192.168.60.2") != std::string::npos &&
           r.find("10.244.3.0/24 via 192.168.60.3") != std::string::npos;
  }, 30s)) << routes();
  EXPECT_EQ(routes().find("10.244.1.0/24"), std::string::npos);  // not to itself
  EXPECT_TRUE(testing::waitFor([&] {
    return testing::run("curl -s http://127.0.0.1:" + std::to_string(port_) + "/healthz").out == "ok";
  }, 30s));
  // A node changes its address, another leaves.
  setIp("n2", "192.168.60.22");
  ASSERT_TRUE(client_->remove(kube::resources::kNodes, "", "n3"));
  EXPECT_TRUE(testing::waitFor([&] {
    std::string r = routes();
    return r.find("10.244.2.0/24 via 192.168.60.22") != std::string::npos && r.find("10.244.3.0/24") == std::string::npos;
  }, 30s)) << routes();
  // While the agent is down a node arrives and a stale route appears: the restart converges.
  stopAgent(SIGKILL);
  node("n4", "10.244.4.0/24", "192.168.60.4");
  testing::run("ip netns exec " + ns_ + " ip route add 10.244.9.0/24 via 192.168.60.9 proto 77");
  startAgent();
  EXPECT_TRUE(testing::waitFor([&] {
    std::string r = routes();
    return r.find("10.244.4.0/24 via 192.168.60.4") != std::string::npos && r.find("10.244.9.0/24") == std::string::npos;
  }, 30s)) << routes();
  auto metrics = testing::run("curl -s http://127.0.0.1:" + std::to_string(port_) + "/metrics").out;
  EXPECT_NE(metrics.find("trellis_cni_agent_routes 2"), std::string::npos) << metrics;
}

// "Nodes" as network namespaces, an agent for each, a pod on each made by
// the plugin from the conflist its agent wrote. `routed`: each node on its
// own subnet behind a router namespace (no shared link: VXLAN); otherwise all
// on one bridge (host-gw). Pods on different nodes must reach each other.
void multiNode(int nodes, bool routed, bool dualStack = false) {
  ASSERT_EQ(geteuid(), 0u) << "creates network namespaces: run as root";
  testing::TempDir dir;
  testing::ApiServerProcess api(TRELLIS_APISERVER_BIN, dir.path());
  ASSERT_TRUE(api.start()) << api.log();
  auto cfg = kube::loadKubeconfig({api.kubeconfig()});
  auto client = kube::Client::create(*cfg);
  ASSERT_TRUE(client);
  std::string tag = fmt::format("{}", getpid() % 10000);
  std::string sw = "trellis-sw" + tag;
  std::vector<std::string> spaces{sw};
  std::vector<pid_t> agents;
  struct Cleanup {
    std::vector<std::string>& spaces;
    std::vector<pid_t>& agents;
    ~Cleanup() {
      for (pid_t p : agents) {
        kill(p, SIGTERM);
        waitpid(p, nullptr, 0);
      }
      for (auto it = spaces.rbegin(); it != spaces.rend(); ++it) testing::run("ip netns del " + *it);
    }
  } cleanup{spaces, agents};
  auto in = [](const std::string& ns, const std::string& cmd) { return "ip netns exec " + ns + " " + cmd; };
  // The switch (one bridge) or the router (a link per node, forwarding).
  ASSERT_EQ(testing::run("ip netns add " + sw + " && " +
                         (routed ? in(sw, "sysctl -qw net.ipv4.ip_forward=1")
                                 : in(sw, "ip link add br0 type bridge") + " && " + in(sw, "ip link set br0 up")))
                .exitCode,
            0);
  std::vector<std::string> podIps, podIps6, ports;
  for (int k = 1; k <= nodes; ++k) {
    std::string node = fmt::format("trellis-n{}-{}", k, tag);
    std::string pod = fmt::format("trellis-p{}-{}", k, tag);
    spaces.push_back(node);
    spaces.push_back(pod);
    std::string nodeIp = routed ? fmt::format("192.168.8{}.1", k) : fmt::format("192.168.70.{}", k);
    std::string wire = "ip netns add " + node + " && ip netns add " + pod + " && " +
                       in(sw, fmt::format("ip link add sw{} type veth peer name up0 netns {}", k, node)) + " && " +
                       in(node, "ip addr add " + nodeIp + "/24 dev up0") + " && " +
                       // An uplink that has been up a while: no IPv6 address still tentative on it.
                       in(node, "sysctl -qw net.ipv6.conf.up0.accept_dad=0") + " && " + in(node, "ip link set up0 up") +
                       " && " + in(node, "ip link set lo up");
    std::string nodeIp6 = fmt::format("fd70::{}", k);
    if (dualStack && !routed) wire += " && " + in(node, "ip addr add " + nodeIp6 + "/64 dev up0 nodad");
    if (routed) {
      wire += " && " + in(sw, fmt::format("ip addr add 192.168.8{}.254/24 dev sw{}", k, k)) + " && " +
              in(sw, fmt::format("ip link set sw{} up", k)) + " && " +
              in(node, fmt::format("ip route add default via 192.168.8{}.254", k));
    } else {
      wire += " && " + in(sw, fmt::format("ip link set sw{} master br0 up", k));
    }
    ASSERT_EQ(testing::run(wire).exitCode, 0);
    json::array cidrs{json::value(fmt::format("10.244.{}.0/24", k))};
    if (dualStack) cidrs.push_back(json::value(fmt::format("fd00:244:{}::/64", k)));
    json::object n{{"metadata", json::object{{"name", fmt::format("n{}", k)}}}, {"spec", json::object{{"podCIDRs", cidrs}}}};
    ASSERT_TRUE((*client)->create(kube::resources::kNodes, "", n));
    std::string addresses = R"([{"type":"InternalIP","address":")" + nodeIp + "\"}";
    if (dualStack && !routed) addresses += R"(,{"type":"InternalIP","address":")" + nodeIp6 + "\"}";
    ASSERT_TRUE((*client)->patch(kube::resources::kNodes, "", fmt::format("n{}", k), kube::PatchType::kMerge,
                                 R"({"status":{"addresses":)" + addresses + "]}}", "status"));
    std::string nodeDir = dir.file(fmt::format("n{}", k));
    std::string port = std::to_string(testing::freeTcpPort());
    ports.push_back(port);
    pid_t pid = fork();
    if (pid == 0) {
      std::string log = nodeDir + ".log";
      if (!freopen(log.c_str(), "a", stderr)) _exit(126);
      execl(TRELLIS_CNI_AGENT_BIN, "trellis-cni-agent", "--kubeconfig", api.kubeconfig().c_str(), "--node-name",
            fmt::format("n{}", k).c_str(), "--cni-bin-dir", (nodeDir + "/bin").c_str(), "--cni-conf-dir",
            (nodeDir + "/net.d").c_str(), "--plugin", TRELLIS_CNI_BIN, "--ipam-data-dir", (nodeDir + "/ipam").c_str(),
            "--netns", ("/var/run/netns/" + node).c_str(), "--listen", ("127.0.0.1:" + port).c_str(), "--resync", "1",
            "--ready-file", (nodeDir + "/cni-ready").c_str(),
            nullptr);
      _exit(127);
    }
    agents.push_back(pid);
    // The runtime's part: the conflist's plugin, with name and cniVersion, run in the node.
    std::string conflist = nodeDir + "/net.d/10-trellis.conflist";
    ASSERT_TRUE(testing::waitFor([&] { return access(conflist.c_str(), R_OK) == 0; }, std::chrono::seconds(30)))
        << testing::readFile(nodeDir + ".log");
    json::value list = json::parse(testing::readFile(conflist));
    json::object plugin = list.at("plugins").at(0).as_object();
    plugin["name"] = list.at("name");
    plugin["cniVersion"] = list.at("cniVersion");
    testing::writeFile(nodeDir + "/plugin.json", json::serialize(plugin));
    auto add = testing::run(in(node, "env CNI_COMMAND=ADD CNI_CONTAINERID=pod" + std::to_string(k) + " CNI_NETNS=/var/run/netns/" +
                                         pod + " CNI_IFNAME=eth0 CNI_PATH=" + nodeDir + "/bin " + nodeDir +
                                         "/bin/trellis-cni < " + nodeDir + "/plugin.json"));
    ASSERT_EQ(add.exitCode, 0) << add.out;
    json::value result = json::parse(add.out);
    for (const json::value& ip : result.at("ips").as_array()) {
      std::string a(ip.at("address").as_string());
      (a.find(':') == std::string::npos ? podIps : podIps6).push_back(a.substr(0, a.find('/')));
    }
  }
  ASSERT_EQ(podIps.size(), static_cast<size_t>(nodes));
  ASSERT_EQ(podIps6.size(), dualStack ? static_cast<size_t>(nodes) : 0u);
  // Each agent routes the other nodes' pod CIDRs (through trellis.1 when routed).
  for (int k = 1; k <= nodes; ++k) {
    std::string node = fmt::format("trellis-n{}-{}", k, tag);
    EXPECT_TRUE(testing::waitFor([&] {
      std::string r = testing::run(in(node, "ip route show proto 77")).out;
      std::string r6 = testing::run(in(node, "ip -6 route show proto 77")).out;
      size_t count = std::count(r.begin(), r.end(), '\n'), count6 = std::count(r6.begin(), r6.end(), '\n');
      return count == static_cast<size_t>(nodes - 1) && count6 == (dualStack ? static_cast<size_t>(nodes - 1) : 0u) &&
             (!routed || r.find("dev trellis.1") != std::string::npos);
    }, std::chrono::seconds(30))) << testing::run(in(node, "ip route")).out << testing::run(in(node, "ip -6 route")).out
                                   << testing::readFile(dir.file(fmt::format("n{}", k)) + ".log");
  }
  for (int from = 1; from <= nodes; ++from) {
    for (int to = 1; to <= nodes; ++to) {
      if (from == to) continue;
      std::string pod = fmt::format("trellis-p{}-{}", from, tag);
      EXPECT_EQ(testing::run(in(pod, "ping -c1 -W2 " + podIps[to - 1])).exitCode, 0)
          << "pod on n" << from << " cannot reach the pod on n" << to;
      if (dualStack) {
        // (-W1: the first packet must not wait out a tentative address)
        EXPECT_EQ(testing::run(in(pod, "ping -6 -c1 -W1 " + podIps6[to - 1])).exitCode, 0)
            << "pod on n" << from << " cannot reach the pod on n" << to << " over IPv6";
      }
    }
  }
  // The agent counts each pod's traffic.
  std::string metrics = testing::run("curl -s http://127.0.0.1:" + ports[0] + "/metrics").out;
  std::string series = "trellis_cni_pod_transmit_packets_total{container_id=\"pod1\",interface=\"eth0\",veth=\"";
  size_t at = metrics.find(series);
  ASSERT_NE(at, std::string::npos) << metrics;
  size_t value = metrics.find("} ", at) + 2;
  EXPECT_GE(std::stoll(metrics.substr(value, metrics.find('\n', value) - value)), nodes - 1) << metrics;
  // A node leaves: the others drop its routes and, over VXLAN, its neighbor
  // and forwarding entries (level-triggered: nothing stale stays behind).
  ASSERT_TRUE((*client)->remove(kube::resources::kNodes, "", fmt::format("n{}", nodes)));
  std::string first = fmt::format("trellis-n1-{}", tag);
  std::string gone = routed ? fmt::format("192.168.8{}.1", nodes) : fmt::format("192.168.70.{}", nodes);
  EXPECT_TRUE(testing::waitFor([&] {
    std::string r = testing::run(in(first, "ip route show proto 77")).out + testing::run(in(first, "ip -6 route show proto 77")).out;
    std::string fdb = testing::run(in(first, "bridge fdb show dev trellis.1")).out;
    std::string neigh = testing::run(in(first, "ip neigh show dev trellis.1 nud permanent")).out +
                        testing::run(in(first, "ip -6 neigh show dev trellis.1 nud permanent")).out;
    size_t routes = std::count(r.begin(), r.end(), '\n');
    return routes == static_cast<size_t>((nodes - 2) * (dualStack ? 2 : 1)) && fdb.find(gone) == std::string::npos &&
           neigh.find(fmt::format("10.244.{}.0", nodes)) == std::string::npos &&
           neigh.find(fmt::format("fd00:244:{}::", nodes)) == std::string::npos;
  }, std::chrono::seconds(30))) << testing::run(in(first, "ip route show proto 77")).out
                                 << testing::run(in(first, "bridge fdb show dev trellis.1")).out
                                 << testing::run(in(first, "ip neigh show dev trellis.1")).out;
}

TEST(MultiNode, PodsOnDifferentNodesReachEachOtherByHostGw) { multiNode(3, false); }

TEST(MultiNode, PodsAcrossNodesWithoutASharedLinkUseVxlan) { multiNode(2, true); }

TEST(MultiNode, DualStackPodsReachEachOtherByHostGw) { multiNode(3, false, true); }

TEST(MultiNode, DualStackPodsReachEachOtherOverVxlan) { multiNode(3, true, true); }

}  // namespace
}  // namespace trellis::cni
