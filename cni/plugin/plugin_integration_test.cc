// trellis-cni exec'd as a runtime does it (environment + stdin config), in
// network namespaces this test creates (root): a "node" namespace where the
// plugin runs (its bridge, host veth ends, nftables table and sysctls live
// there, never in the machine's own namespace) and pod namespaces. Deleting
// the namespaces at the end removes everything, also on failure.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <iostream>
#include <mutex>
#include <set>
#include <thread>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/testing/background.h"
#include "common/testing/kill_on_file.h"
#include "common/testing/ping.h"
#include "common/testing/testing.h"

namespace trellis::cni {
namespace {

namespace json = boost::json;

class CniTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(geteuid(), 0u) << "these tests create network namespaces and links: run them as root";
    tag_ = fmt::format("{}", getpid() % 100000);
    bridge_ = "trt" + tag_;
    node_ = netns("node");
    // The node's uplink (MTU 1400) carries its default route.
    ASSERT_EQ(testing::run(host("ip link add up0 mtu 1400 type veth peer name up0p && ") + host("ip link set up0p up && ") +
                           host("ip addr add 192.168.90.1/24 dev up0 && ") + host("ip link set up0 up && ") +
                           host("ip route add default via 192.168.90.254"))
                  .exitCode,
              0);
  }
  void TearDown() override {
    for (auto it = netns_.rbegin(); it != netns_.rend(); ++it) testing::run("ip netns del " + *it);
  }
  // A command run in the node's namespace.
  std::string host(const std::string& cmd) { return "ip netns exec " + node_ + " " + cmd; }
  std::string netns(const std::string& name) {
    std::string n = "trellis-t" + tag_ + "-" + name;
    EXPECT_EQ(testing::run("ip netns add " + n).exitCode, 0);
    netns_.push_back(n);
    return n;
  }
  std::string config(std::string_view version = "1.0.0") {
    return fmt::format(R"({{"cniVersion":"{}","name":"tnet","type":"trellis-cni","bridge":"{}",)"
                       R"("ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.77.{}.0/24"}}]],"dataDir":"{}"}},)"
                       R"("dns":{{"nameservers":["10.96.0.10"]}}}})",
                       version, bridge_, getpid() % 200 + 20, dir_.file("ipam"));
  }
  // Runs the plugin with CNI_* variables and `cfg` on stdin.
  testing::CommandResult exec(const std::string& command, const std::string& id, const std::string& ns,
                              const std::string& cfg, const std::string& ifname = "eth0") {
    std::string file = dir_.file("cfg-" + std::to_string(counter_++) + ".json");
    testing::writeFile(file, cfg);
    std::string env = "CNI_COMMAND=" + command + " CNI_PATH=/usr/lib/cni";
    if (!id.empty()) env += " CNI_CONTAINERID='" + id + "'";
    if (!ns.empty()) env += " CNI_NETNS=" + ns;
    if (!ifname.empty()) env += " CNI_IFNAME=" + ifname;
    return testing::run(host("env " + env + " " + TRELLIS_CNI_BIN + " < " + file + " 2>/dev/null"));
  }
  // `cfg` with `result` (an ADD's output) as its prevResult, as a runtime sends CHECK and DEL.
  static std::string withPrev(std::string cfg, const std::string& result) {
    cfg.insert(cfg.size() - 1, ",\"prevResult\":" + result.substr(0, result.find_last_not_of('\n') + 1));
    return cfg;
  }
  static std::string ipOf(const std::string& out) {
    json::value v = json::parse(out);
    std::string a(v.at("ips").at(0).at("address").as_string());
    return a.substr(0, a.find('/'));
  }
  // The IPAM store's allocation entries (named by their address).
  size_t allocations() {
    size_t n = 0;
    unsigned char buf[16];
    for (const std::string& name : storeLeft()) {
      n += inet_pton(AF_INET, name.c_str(), buf) == 1 || inet_pton(AF_INET6, name.c_str(), buf) == 1;
    }
    return n;
  }
  // Everything in the IPAM store but its lock, round-robin hints, port
  // mappings and nftables stamps: allocation entries, attachment indexes,
  // temporaries.
  std::vector<std::string> storeLeft() {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_.file("ipam/tnet"), ec)) {
      std::string name = e.path().filename().string();
      if (name != "lock" && name != "ports" && !name.starts_with("last_reserved") && !name.starts_with("nft-")) out.push_back(name);
    }
    return out;
  }
  size_t veths() { return std::stoul(testing::run(host("ip -o link show type veth | wc -l")).out); }

  testing::TempDir dir_;
  std::string tag_, bridge_, node_;
  std::vector<std::string> netns_;
  int counter_ = 0;
};

// STATUS (1.1.0): error 50 until the node's network is configured — the
// ready file the config names exists — and ready after; a bad readyFile is
// a configuration error.
TEST_F(CniTest, StatusWaitsForTheNodesNetwork) {
  std::string cfg = config("1.1.0");
  std::string ready = dir_.file("ready");
  cfg.insert(cfg.size() - 1, R"(,"readyFile":")" + ready + "\"");
  auto notReady = exec("STATUS", "", "", cfg, "");
  EXPECT_EQ(notReady.exitCode, 1);
  EXPECT_NE(notReady.out.find(R"("code":50)"), std::string::npos) << notReady.out;
  testing::writeFile(ready, "configured\n");
  auto isReady = exec("STATUS", "", "", cfg, "");
  EXPECT_EQ(isReady.exitCode, 0) << isReady.out;
  EXPECT_EQ(isReady.out, "");
  std::string bad = config("1.1.0");
  bad.insert(bad.size() - 1, R"(,"readyFile":"relative/path")");
  EXPECT_NE(exec("STATUS", "", "", bad, "").out.find(R"("code":7)"), std::string::npos);
  EXPECT_EQ(exec("STATUS", "", "", config("1.1.0"), "").exitCode, 0);  // no readyFile: does not wait
}

TEST_F(CniTest, VersionAndBadInputChangeNothing) {
  auto v = exec("VERSION", "", "", "");
  EXPECT_EQ(v.exitCode, 0);
  EXPECT_EQ(v.out, R"({"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})"
                   "\n");
  size_t before = veths();
  std::string ns = "/var/run/netns/" + netns("bad");
  auto badId = exec("ADD", "../escape", ns, config());
  EXPECT_NE(badId.exitCode, 0);
  EXPECT_NE(badId.out.find(R"("code":4)"), std::string::npos) << badId.out;
  testing::writeFile(dir_.file("not-a-netns"), "");
  auto notNs = exec("ADD", "c1", dir_.file("not-a-netns"), config());
  EXPECT_NE(notNs.exitCode, 0);
  EXPECT_NE(notNs.out.find("is not a network namespace"), std::string::npos) << notNs.out;
  auto oldVersion = exec("ADD", "c1", ns, config("0.2.0"));
  EXPECT_NE(oldVersion.out.find(R"("code":1)"), std::string::npos) << oldVersion.out;
  auto badJson = exec("ADD", "c1", ns, "{not json");
  EXPECT_NE(badJson.out.find(R"("code":6)"), std::string::npos) << badJson.out;
  auto badIfname = exec("ADD", "c1", ns, config(), "eth0/../x");
  EXPECT_NE(badIfname.out.find(R"("code":4)"), std::string::npos) << badIfname.out;
  EXPECT_EQ(veths(), before);
  EXPECT_EQ(storeLeft(), std::vector<std::string>{});
}

TEST_F(CniTest, AddConnectsPodsAndDelRemovesEverything) {
  size_t before = veths();
  std::string a = netns("a"), b = netns("b");
  auto addA = exec("ADD", "pod-a", "/var/run/netns/" + a, config());
  ASSERT_EQ(addA.exitCode, 0) << addA.out;
  auto addB = exec("ADD", "pod-b", "/var/run/netns/" + b, config());
  ASSERT_EQ(addB.exitCode, 0) << addB.out;
  json::value r = json::parse(addA.out);
  EXPECT_EQ(r.at("cniVersion").as_string(), "1.0.0");
  EXPECT_EQ(r.at("interfaces").at(2).at("sandbox").as_string(), "/var/run/netns/" + a);
  EXPECT_EQ(r.at("ips").at(0).at("interface").as_int64(), 2);
  EXPECT_FALSE(r.at("ips").at(0).as_object().contains("version"));  // 1.0.0 format
  EXPECT_EQ(r.at("routes").at(0).at("dst").as_string(), "0.0.0.0/0");
  EXPECT_EQ(r.at("dns").at("nameservers").at(0).as_string(), "10.96.0.10");
  std::string ipA = ipOf(addA.out), ipB = ipOf(addB.out);
  EXPECT_NE(ipA, ipB);
  std::string gateway(r.at("ips").at(0).at("gateway").as_string());
  // No "mtu" in the config: the uplink's (the default route's interface).
  EXPECT_EQ(testing::run("ip netns exec " + a + " cat /sys/class/net/eth0/mtu").out, "1400\n");  // the node's uplink
  EXPECT_EQ(testing::run("ip netns exec " + a + " ping -c1 -W2 " + ipB).exitCode, 0);
  EXPECT_EQ(testing::run("ip netns exec " + b + " ping -c1 -W2 " + gateway).exitCode, 0);
  // Repeated ADD: the same address; CHECK agrees.
  auto again = exec("ADD", "pod-a", "/var/run/netns/" + a, config());
  ASSERT_EQ(again.exitCode, 0) << again.out;
  EXPECT_EQ(ipOf(again.out), ipA);
  EXPECT_EQ(exec("CHECK", "pod-a", "/var/run/netns/" + a, withPrev(config(), again.out)).exitCode, 0);
  EXPECT_EQ(veths(), before + 2);
  EXPECT_EQ(allocations(), 2u);
  // DEL, twice (idempotent); B without a netns (the runtime lost it).
  EXPECT_EQ(exec("DEL", "pod-a", "/var/run/netns/" + a, config()).exitCode, 0);
  EXPECT_EQ(exec("DEL", "pod-a", "/var/run/netns/" + a, config()).exitCode, 0);
  EXPECT_EQ(exec("DEL", "pod-b", "", config()).exitCode, 0);
  // (DEL leaves the kernel's slow part of destroying a pair to a background
  // process; DelTakesThePodOutAtOnce checks what holds when DEL returns)
  EXPECT_TRUE(testing::waitFor([&] { return veths() == before; }, std::chrono::seconds(30)))
      << testing::run(host("ip -o link show type veth")).out;
  EXPECT_EQ(storeLeft(), std::vector<std::string>{});
  EXPECT_NE(exec("CHECK", "pod-a", "/var/run/netns/" + a, withPrev(config(), again.out)).exitCode, 0);
  // Results in an older version's format.
  auto old = exec("ADD", "pod-a", "/var/run/netns/" + a, config("0.4.0"));
  ASSERT_EQ(old.exitCode, 0) << old.out;
  EXPECT_EQ(json::parse(old.out).at("ips").at(0).at("version").as_string(), "4");
  EXPECT_EQ(exec("DEL", "pod-a", "/var/run/netns/" + a, config("0.4.0")).exitCode, 0);
}

TEST_F(CniTest, HundredParallelAddsGetDistinctAddressesAndGcReleasesTheInvalid) {
  size_t before = veths();
  constexpr int kPods = 100;
  std::vector<std::string> spaces;
  for (int i = 0; i < kPods; ++i) spaces.push_back(netns("p" + std::to_string(i)));
  std::mutex mu;
  std::set<std::string> ips;
  std::vector<std::string> ipOfPod(kPods);
  std::string gateway;
  auto parallel = [&](const std::function<void(int)>& each) {
    std::vector<std::thread> runners;
    for (int t = 0; t < 8; ++t) {
      runners.emplace_back([&, t] {
        for (int i = t; i < kPods; i += 8) each(i);
      });
    }
    for (auto& t : runners) t.join();
  };
  // 100 ADDs, 8 at a time.
  parallel([&](int i) {
    auto r = exec("ADD", "pod-" + std::to_string(i), "/var/run/netns/" + spaces[i], config());
    std::lock_guard g(mu);
    EXPECT_EQ(r.exitCode, 0) << r.out;
    if (r.exitCode != 0) return;
    ipOfPod[i] = ipOf(r.out);
    ips.insert(ipOfPod[i]);
    gateway = std::string(json::parse(r.out).at("ips").at(0).at("gateway").as_string());
  });
  EXPECT_EQ(ips.size(), static_cast<size_t>(kPods));
  // Every pod reaches the node (its gateway) and every other pod: ICMP echo
  // over all 100 x 100 pairs. That needs ~10,000 ARP entries, and the
  // kernel's neighbour table is one for all namespaces, 1024 entries at most
  // by default ("neighbor table overflow", as on any node running this many
  // chatty pods): raised for the test, restored after.
  struct NeighbourLimits {
    std::vector<std::pair<std::string, std::string>> saved;
    NeighbourLimits() {
      for (const char* k : {"gc_thresh1", "gc_thresh2", "gc_thresh3"}) {
        std::string path = std::string("/proc/sys/net/ipv4/neigh/default/") + k;
        saved.emplace_back(path, testing::readFile(path));
      }
      testing::writeFile(saved[2].first, "32768");
      testing::writeFile(saved[1].first, "16384");
      testing::writeFile(saved[0].first, "8192");
    }
    ~NeighbourLimits() {
      for (auto it = saved.begin(); it != saved.end(); ++it) testing::writeFile(it->first, it->second);
    }
  } limits;
  std::atomic<int> unreachable{0};
  parallel([&](int i) {
    std::vector<std::string> targets{gateway};
    for (int j = 0; j < kPods; ++j) {
      if (j != i) targets.push_back(ipOfPod[j]);
    }
    std::set<std::string> lost = testing::unreachableFrom("/var/run/netns/" + spaces[i], targets);
    unreachable += static_cast<int>(lost.size());
    std::lock_guard g(mu);
    EXPECT_TRUE(lost.empty()) << "from pod-" << i << ": " << lost.size() << " unreachable, e.g. " << *lost.begin();
  });
  EXPECT_EQ(unreachable.load(), 0);
  // GC with only pod-0 valid (1.1.0 config): every other address is released.
  std::string cfg = config("1.1.0");
  cfg.insert(cfg.size() - 1, R"(,"cni.dev/valid-attachments":[{"containerID":"pod-0","ifname":"eth0"}])");
  auto gc = exec("GC", "", "", cfg, "");
  EXPECT_EQ(gc.exitCode, 0) << gc.out;
  EXPECT_EQ(allocations(), 1u);
  for (int i = 0; i < kPods; ++i) {
    auto del = exec("DEL", "pod-" + std::to_string(i), "/var/run/netns/" + spaces[i], config());
    EXPECT_EQ(del.exitCode, 0) << del.out;
  }
  // (the kernel may finish unregistering a veth pair a moment after DEL returns)
  EXPECT_TRUE(testing::waitFor([&] { return veths() == before; }, std::chrono::seconds(30)))
      << testing::run(host("ip -o link show type veth")).out;
  EXPECT_EQ(storeLeft(), std::vector<std::string>{});
}

// What DEL guarantees when it returns, before the kernel has finished
// destroying the pair: the pod's interface is down and its name free (an
// ADD right after works), the host end is off the bridge's port list under
// its name. And a pair that a crashed DEL left retired is removed by the
// repeated DEL, or by GC.
TEST_F(CniTest, DelTakesThePodOutAtOnce) {
  size_t before = veths();
  std::string ns = netns("d");
  std::string path = "/var/run/netns/" + ns;
  for (int round = 0; round < 5; ++round) {
    auto add = exec("ADD", "pod-d", path, config());
    ASSERT_EQ(add.exitCode, 0) << add.out;
    std::string gateway(json::parse(add.out).at("ips").at(0).at("gateway").as_string());
    EXPECT_EQ(testing::run("ip netns exec " + ns + " ping -c1 -W2 " + gateway).exitCode, 0) << "round " << round;
    // DEL and, in the same shell, look at once.
    std::string file = dir_.file("del.json");
    testing::writeFile(file, config());
    auto del = testing::run(host(fmt::format(
        "sh -c 'env CNI_COMMAND=DEL CNI_CONTAINERID=pod-d CNI_NETNS={} CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni {} < {} && "
        "ip netns exec {} ip -o link show up type veth; ip -o link show master {}'",
        path, TRELLIS_CNI_BIN, file, ns, bridge_)));
    EXPECT_EQ(del.exitCode, 0) << del.out;
    EXPECT_EQ(del.out.find("eth0"), std::string::npos) << "the pod end is down and renamed: " << del.out;
    EXPECT_EQ(del.out.find("tc"), std::string::npos) << "no host end under its name on the bridge: " << del.out;
  }
  EXPECT_TRUE(testing::waitFor([&] { return veths() == before; }, std::chrono::seconds(30)))
      << testing::run(host("ip -o link show type veth")).out;
  // A DEL that crashed after retiring the pair (both ends renamed, as DEL
  // does, and then nothing): the repeated DEL finds the pair and removes it.
  auto add = exec("ADD", "pod-d", path, config());
  ASSERT_EQ(add.exitCode, 0) << add.out;
  std::string hostEnd(json::parse(add.out).at("interfaces").at(1).at("name").as_string());
  std::string retired = "tx" + hostEnd.substr(2);
  ASSERT_EQ(testing::run(host("ip link set " + hostEnd + " name " + retired)).exitCode, 0);
  ASSERT_EQ(testing::run("ip netns exec " + ns + " ip link set eth0 down").exitCode, 0);
  ASSERT_EQ(testing::run("ip netns exec " + ns + " ip link set eth0 name " + retired).exitCode, 0);
  EXPECT_EQ(exec("DEL", "pod-d", path, config()).exitCode, 0);
  EXPECT_TRUE(testing::waitFor([&] { return veths() == before; }, std::chrono::seconds(30)))
      << testing::run(host("ip -o link show type veth")).out;
  // And one that no DEL comes back for: GC.
  add = exec("ADD", "pod-e", path, config());
  ASSERT_EQ(add.exitCode, 0) << add.out;
  hostEnd = std::string(json::parse(add.out).at("interfaces").at(1).at("name").as_string());
  ASSERT_EQ(testing::run(host("ip link set " + hostEnd + " name tx" + hostEnd.substr(2))).exitCode, 0);
  std::string gcCfg = config("1.1.0");
  gcCfg.insert(gcCfg.size() - 1, R"(,"cni.dev/valid-attachments":[])");
  EXPECT_EQ(exec("GC", "", "", gcCfg, "").exitCode, 0);
  EXPECT_TRUE(testing::waitFor([&] { return veths() == before; }, std::chrono::seconds(30)))
      << testing::run(host("ip -o link show type veth")).out;
  EXPECT_EQ(storeLeft(), std::vector<std::string>{});
}

TEST_F(CniTest, ChainsWithTheReferenceTuningPlugin) {
  // As a runtime runs a conflist [trellis-cni, tuning]: tuning gets our
  // result as prevResult, validates it, and changes the pod's interface.
  ASSERT_EQ(access("/usr/lib/cni/tuning", X_OK), 0) << "containernetworking-plugins is not installed (scripts/setup.sh)";
  std::string ns = netns("chain");
  std::string path = "/var/run/netns/" + ns;
  auto add = exec("ADD", "pod-c", path, config());
  ASSERT_EQ(add.exitCode, 0) << add.out;
  std::string tuning = fmt::format(R"({{"cniVersion":"1.0.0","name":"tnet","type":"tuning",)"
                                   R"("sysctl":{{"net.ipv4.conf.eth0.accept_redirects":"0"}},"mtu":1300,"prevResult":{}}})",
                                   add.out.substr(0, add.out.find_last_not_of('\n') + 1));
  std::string file = dir_.file("tuning.json");
  testing::writeFile(file, tuning);
  auto tuned = testing::run(host("") + "env CNI_COMMAND=ADD CNI_CONTAINERID=pod-c CNI_NETNS=" + path +
                            " CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni /usr/lib/cni/tuning < " + file);
  ASSERT_EQ(tuned.exitCode, 0) << tuned.out;
  // tuning passes our result on, and did its work in the pod.
  json::value passed = json::parse(tuned.out);
  EXPECT_EQ(passed.at("ips").at(0).at("address"), json::parse(add.out).at("ips").at(0).at("address"));
  EXPECT_NE(testing::run("ip netns exec " + ns + " ip link show eth0").out.find("mtu 1300"), std::string::npos);
  EXPECT_EQ(testing::run("ip netns exec " + ns + " sysctl -n net.ipv4.conf.eth0.accept_redirects").out, "0\n");
  // DEL in reverse order.
  auto untuned = testing::run(host("") + "env CNI_COMMAND=DEL CNI_CONTAINERID=pod-c CNI_NETNS=" + path +
                              " CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni /usr/lib/cni/tuning < " + file);
  EXPECT_EQ(untuned.exitCode, 0) << untuned.out;
  EXPECT_EQ(exec("DEL", "pod-c", path, config()).exitCode, 0);
  EXPECT_EQ(storeLeft(), std::vector<std::string>{});
}

// A conflist [trellis-cni, tuning, portmap, bandwidth, firewall] of Debian's
// reference plugins, run as a runtime runs it: each gets the previous
// result as prevResult, passes our addresses on and does its work; CHECK
// passes through them; DEL in reverse order undoes all of it. Dual-stack, so
// both families go through the chain. portmap's own CHECK is not run:
// Debian's portmap 1.1.1 looks for its IPv4 rules in the IPv6 table and so
// fails CHECK for every configuration (an upstream bug, fixed after 1.1.1).
TEST_F(CniTest, ChainsWithEveryReferenceMetaPlugin) {
  for (const char* p : {"tuning", "portmap", "bandwidth", "firewall"}) {
    ASSERT_EQ(access((std::string("/usr/lib/cni/") + p).c_str(), X_OK), 0) << p << ": containernetworking-plugins is missing";
  }
  std::string cfg = fmt::format(R"({{"cniVersion":"1.0.0","name":"tnet","type":"trellis-cni","bridge":"{}",)"
                                R"("ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.79.{}.0/24"}}],)"
                                R"([{{"subnet":"fd00:79:{:x}::/64"}}]],"dataDir":"{}"}}}})",
                                bridge_, getpid() % 200 + 20, getpid() % 4000 + 1, dir_.file("ipam"));
  std::string ns = netns("chain2");
  std::string path = "/var/run/netns/" + ns;
  auto add = exec("ADD", "pod-d", path, cfg);
  ASSERT_EQ(add.exitCode, 0) << add.out;
  std::string ours(json::parse(add.out).at("ips").at(0).at("address").as_string());
  std::string veth(json::parse(add.out).at("interfaces").at(1).at("name").as_string());
  const std::vector<std::pair<std::string, std::string>> chain = {
      {"tuning", R"("mtu":1300)"},
      {"portmap", R"("capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[{"hostPort":31081,"containerPort":8080,"protocol":"tcp"}]})"},
      {"bandwidth", R"("capabilities":{"bandwidth":true},"runtimeConfig":{"bandwidth":{"ingressRate":8000000,"ingressBurst":800000,"egressRate":8000000,"egressBurst":800000}})"},
      {"firewall", R"("backend":"iptables")"}};
  std::string prev = add.out.substr(0, add.out.find_last_not_of('\n') + 1);
  std::vector<std::string> files;
  auto run = [&](const std::string& command, const std::string& type, const std::string& file) {
    return testing::run(host("") + "env CNI_COMMAND=" + command + " CNI_CONTAINERID=pod-d CNI_NETNS=" + path +
                        " CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni /usr/lib/cni/" + type + " < " + file + " 2>&1");
  };
  for (const auto& [type, extra] : chain) {
    std::string file = dir_.file("chain-" + type + ".json");
    testing::writeFile(file, fmt::format(R"({{"cniVersion":"1.0.0","name":"tnet","type":"{}",{},"prevResult":{}}})", type, extra, prev));
    files.push_back(file);
    auto r = run("ADD", type, file);
    ASSERT_EQ(r.exitCode, 0) << type << ": " << r.out;
    json::value passed = json::parse(r.out);
    EXPECT_EQ(std::string(passed.at("ips").at(0).at("address").as_string()), ours) << type << " changed the addresses";
    prev = r.out.substr(0, r.out.find_last_not_of('\n') + 1);
  }
  EXPECT_NE(testing::run("ip netns exec " + ns + " ip link show eth0").out.find("mtu 1300"), std::string::npos);
  EXPECT_NE(testing::run(host("iptables -t nat -S")).out.find("31081"), std::string::npos) << "portmap's DNAT";
  EXPECT_NE(testing::run(host("tc qdisc show dev " + veth)).out.find("tbf"), std::string::npos) << "bandwidth's shaping";
  EXPECT_NE(testing::run(host("iptables -S")).out.find("CNI-FORWARD"), std::string::npos) << "firewall's chain";
  // CHECK through the chain, then DEL in reverse.
  for (size_t i = 0; i < chain.size(); ++i) {
    if (chain[i].first == "portmap") continue;
    auto r = run("CHECK", chain[i].first, files[i]);
    EXPECT_EQ(r.exitCode, 0) << chain[i].first << " CHECK: " << r.out;
  }
  for (size_t i = chain.size(); i-- > 0;) {
    auto r = run("DEL", chain[i].first, files[i]);
    EXPECT_EQ(r.exitCode, 0) << chain[i].first << " DEL: " << r.out;
  }
  EXPECT_EQ(exec("DEL", "pod-d", path, cfg).exitCode, 0);
  EXPECT_EQ(testing::run(host("iptables -t nat -S")).out.find("31081"), std::string::npos) << "portmap left its DNAT";
  EXPECT_EQ(testing::run(host("ip6tables -t nat -S")).out.find("31081"), std::string::npos) << "portmap left its DNAT";
  EXPECT_EQ(storeLeft(), std::vector<std::string>{});
}

TEST_F(CniTest, IpMasqKeepsOneRulePerFamilyInTrellissOwnTable) {
  std::string table = "trellis_t" + tag_;
  std::string cfg = config();
  cfg.insert(cfg.size() - 1, R"(,"ipMasq":true,"clusterCIDR":"10.64.0.0/10","nftTable":")" + table + "\"");
  std::string a = netns("ma"), b = netns("mb");
  ASSERT_EQ(exec("ADD", "m-a", "/var/run/netns/" + a, cfg).exitCode, 0);
  ASSERT_EQ(exec("ADD", "m-b", "/var/run/netns/" + b, cfg).exitCode, 0);
  std::string rules = testing::run(host("nft list table inet " + table)).out;
  size_t count = 0;
  for (size_t pos = 0; (pos = rules.find("masquerade", pos)) != std::string::npos; ++pos) ++count;
  EXPECT_EQ(count, 2u) << rules;  // one for IPv4, one for IPv6, however many pods
  EXPECT_NE(rules.find("ip saddr @masq4 ip daddr != @cluster4 masquerade"), std::string::npos) << rules;
  EXPECT_NE(rules.find(fmt::format("10.77.{}.0/24", getpid() % 200 + 20)), std::string::npos) << rules;
  EXPECT_NE(rules.find("10.64.0.0/10"), std::string::npos) << rules;
  auto bad = config();
  bad.insert(bad.size() - 1, R"(,"nftTable":"no spaces allowed")");
  EXPECT_NE(exec("ADD", "m-c", "/var/run/netns/" + a, bad).out.find(R"("code":7)"), std::string::npos);
  EXPECT_EQ(exec("DEL", "m-a", "/var/run/netns/" + a, cfg).exitCode, 0);
  EXPECT_EQ(exec("DEL", "m-b", "/var/run/netns/" + b, cfg).exitCode, 0);
}

TEST_F(CniTest, HostPortReachableFromTheNodeAndGoneAfterDel) {
  std::string table = "trellis_t" + tag_;
  std::string cfg = config();
  cfg.insert(cfg.size() - 1, R"(,"nftTable":")" + table +
                                 R"(","capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[)"
                                 R"({"hostPort":31080,"containerPort":8080,"protocol":"tcp"}]})");
  std::string ns = netns("hp");
  auto add = exec("ADD", "hp", "/var/run/netns/" + ns, cfg);
  ASSERT_EQ(add.exitCode, 0) << add.out;
  std::string gateway(json::parse(add.out).at("ips").at(0).at("gateway").as_string());
  // A server in the pod on 8080 (the HTTP core's example, cleartext).
  testing::Background server("exec ip netns exec " + ns + " " + TRELLIS_HTTP_EXAMPLE_BIN +
                             " --listen 0.0.0.0:8080 --log-level off");
  std::string url = "http://" + gateway + ":31080/";
  EXPECT_TRUE(testing::waitFor([&] { return testing::run(host("curl -s -m 1 -o /dev/null -w '%{http_code}' " + url)).out == "200"; },
                               std::chrono::seconds(30)))
      << testing::run(host("nft list table inet " + table)).out;
  EXPECT_EQ(exec("DEL", "hp", "/var/run/netns/" + ns, cfg).exitCode, 0);
  std::string map = testing::run(host("nft list map inet " + table + " hostports4")).out;
  EXPECT_EQ(map.find("31080"), std::string::npos) << map;  // DEL leaves no mapping
  EXPECT_NE(testing::run(host("curl -s -m 1 -o /dev/null " + url)).exitCode, 0);
  server.stop(SIGTERM);
  auto bad = config();
  bad.insert(bad.size() - 1, R"(,"capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]})");
  EXPECT_NE(exec("ADD", "hp2", "/var/run/netns/" + ns, bad).out.find(R"("code":7)"), std::string::npos);
}

// The bandwidth capability shapes what iperf3 measures: egress from the pod
// and ingress to it, never above the limit (+10 %) and not stalled; DEL
// takes the shaping with the links.
TEST_F(CniTest, BandwidthLimitsHoldUnderIperf3) {
  constexpr uint64_t kEgress = 20'000'000, kIngress = 40'000'000;  // bits/s
  std::string cfg = config();
  cfg.insert(cfg.size() - 1, fmt::format(R"(,"capabilities":{{"bandwidth":true}},"runtimeConfig":{{"bandwidth":{{)"
                                         R"("ingressRate":{},"ingressBurst":{},"egressRate":{},"egressBurst":{}}}}})",
                                         kIngress, 400000, kEgress, 400000));
  std::string ns = netns("bw");
  auto add = exec("ADD", "bw", "/var/run/netns/" + ns, cfg);
  ASSERT_EQ(add.exitCode, 0) << add.out;
  std::string gateway(json::parse(add.out).at("ips").at(0).at("gateway").as_string());
  std::string veth(json::parse(add.out).at("interfaces").at(1).at("name").as_string());
  EXPECT_NE(testing::run(host("tc qdisc show dev " + veth)).out.find("tbf"), std::string::npos);
  EXPECT_NE(testing::run("ip netns exec " + ns + " tc qdisc show dev eth0").out.find("tbf"), std::string::npos);
  std::string pidfile = dir_.file("iperf3.pid");
  std::thread server([&] { testing::run(host("timeout 30 iperf3 -s -B " + gateway + " -p 5301 -I " + pidfile)); });
  // Average over 4 s after the first (TCP's ramp) is omitted; `reverse`: the node sends to the pod.
  std::string last;
  auto measure = [&](bool reverse) -> double {
    for (int attempt = 0; attempt < 20; ++attempt) {
      auto r = testing::run("ip netns exec " + ns + " iperf3 -c " + gateway + " -p 5301 -t 4 -O 1 -J" + (reverse ? " -R" : "") +
                            " 2>/dev/null");
      boost::system::error_code ec;
      json::value v = json::parse(r.out, ec);
      const json::value* bps = nullptr;
      if (!ec && v.is_object()) {
        if (const json::value* end = v.get_object().if_contains("end"); end && end->is_object()) {
          if (const json::value* sum = end->get_object().if_contains("sum_received"); sum && sum->is_object()) {
            bps = sum->get_object().if_contains("bits_per_second");
          }
        }
      }
      if (r.exitCode == 0 && bps) return bps->to_number<double>();
      last = r.out;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the server is not up yet
    }
    return -1;
  };
  double egress = measure(false), ingress = measure(true);
  // Shaped: never above the limit (+10 % for the token bucket's burst), and
  // not stalled; a loaded machine may deliver less than the limit, so the
  // lower bound only says the traffic flows.
  EXPECT_LE(egress, kEgress * 1.10) << "pod -> node throughput, bits/s; iperf3 said: " << last;
  EXPECT_GE(egress, kEgress * 0.25) << "pod -> node throughput, bits/s; iperf3 said: " << last;
  EXPECT_LE(ingress, kIngress * 1.10) << "node -> pod throughput, bits/s";
  EXPECT_GE(ingress, kIngress * 0.25) << "node -> pod throughput, bits/s";
  std::cout << fmt::format("bandwidth: egress {:.2f} Mbit/s (limit {}), ingress {:.2f} Mbit/s (limit {})\n", egress / 1e6,
                           kEgress / 1000000, ingress / 1e6, kIngress / 1000000);
  testing::run("kill $(cat " + pidfile + ")");
  server.join();
  EXPECT_EQ(exec("DEL", "bw", "/var/run/netns/" + ns, cfg).exitCode, 0);
  EXPECT_NE(testing::run(host("ip link show " + veth)).exitCode, 0) << "the shaped host link is gone";
  // A rate without its burst, and a burst under one frame, are configuration errors.
  for (const char* bad : {R"({"egressRate":1000000})", R"({"ingressRate":1000000,"ingressBurst":800})"}) {
    std::string b = config();
    b.insert(b.size() - 1, std::string(R"(,"capabilities":{"bandwidth":true},"runtimeConfig":{"bandwidth":)") + bad + "}");
    auto r = exec("ADD", "bw2", "/var/run/netns/" + ns, b);
    EXPECT_NE(r.out.find(R"("code":7)"), std::string::npos) << r.out;
  }
}

// ADDs killed -9 mid-way, each aimed at the moment its attachment index
// lands in the IPAM store plus a delay swept from 0 to ~20 ms (so kills
// fall while it allocates, creates the veth pair, maps the port); what each
// kill left is looked at before GC, and enough of them must have left
// something for GC to collect — then GC leaves no link, address or mapping.
TEST_F(CniTest, KillNineMidAddThenGcLeavesNothing) {
  size_t before = veths();
  std::string table = "trellis_t" + tag_;
  std::string cfg = config("1.1.0");
  cfg.insert(cfg.size() - 1, R"(,"nftTable":")" + table +
                                 R"(","capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[)"
                                 R"({"hostPort":32080,"containerPort":80}]})");
  std::string ns = netns("k");
  std::string file = dir_.file("kill.json");
  testing::writeFile(file, cfg);
  std::filesystem::create_directories(dir_.file("ipam/tnet"));
  int leftSomething = 0;
  for (int i = 0; i < 20; ++i) {
    size_t entriesBefore = storeLeft().size(), vethsBefore = veths();
    testing::KillOnFile killer(
        dir_.file("ipam/tnet"), [](std::string_view name) { return name.starts_with("att-"); }, 0,
        std::chrono::microseconds(i * 1000));
    testing::Background add("exec " + host("") +
                            fmt::format("env CNI_COMMAND=ADD CNI_CONTAINERID=k{} CNI_NETNS=/var/run/netns/{} CNI_IFNAME=eth{} "
                                        "CNI_PATH=/usr/lib/cni {} < {} > /dev/null 2>&1",
                                        i, ns, i, TRELLIS_CNI_BIN, file));
    killer.arm(add.pid());
    auto code = add.wait(std::chrono::seconds(20));
    ASSERT_TRUE(code.has_value()) << "ADD " << i << " neither finished nor was killed";
    bool killed = killer.fired() && *code == -1;
    bool left = storeLeft().size() > entriesBefore || veths() > vethsBefore;
    if (killed && left) ++leftSomething;
    std::cout << fmt::format("ADD {} killed +{} ms: {}\n", i, i, !killed ? "finished first" : left ? "left work for GC" : "left nothing");
  }
  EXPECT_GE(leftSomething, 5) << "kills that left a half-done ADD for GC";
  // The runtime knows none of them: GC with no valid attachment.
  std::string gcCfg = cfg;
  gcCfg.insert(gcCfg.size() - 1, R"(,"cni.dev/valid-attachments":[])");
  auto gc = exec("GC", "", "", gcCfg, "");
  EXPECT_EQ(gc.exitCode, 0) << gc.out;
  EXPECT_TRUE(testing::waitFor([&] { return veths() == before; }, std::chrono::seconds(30)))
      << testing::run(host("ip -o link show type veth")).out;
  EXPECT_EQ(storeLeft(), std::vector<std::string>{});
  auto map = testing::run(host("nft list map inet " + table + " hostports4 2>/dev/null")).out;
  EXPECT_EQ(map.find("32080"), std::string::npos) << map;
  // Interfaces moved into the pod went with their host ends.
  EXPECT_EQ(testing::run("ip netns exec " + ns + " ip -o link show type veth | wc -l").out, "0\n");
}

// Configurations an attacker or a careless admin writes: each is the
// spec's error object (exit 1, JSON on stdout, code 7), never an abort, and
// changes nothing — no state outside dataDir, no link, no nftables text
// built from what the configuration said.
TEST_F(CniTest, HostileConfigurationsGetTheErrorObjectAndChangeNothing) {
  std::string ns = "/var/run/netns/" + netns("h");
  size_t before = veths();
  auto with = [&](const std::string& key, const std::string& value) {
    std::string c = config("1.1.0");
    c.insert(c.size() - 1, ",\"" + key + "\":" + value);
    return c;
  };
  auto expectConfigError = [&](const std::string& cfg, const std::string& words) {
    auto r = exec("ADD", "hostile", ns, cfg);
    EXPECT_EQ(r.exitCode, 1) << cfg << "\n" << r.out;  // not 134 (SIGABRT)
    boost::system::error_code ec;
    json::value v = json::parse(r.out, ec);
    ASSERT_FALSE(ec) << "not the error object: " << r.out;
    EXPECT_EQ(v.at("code").as_int64(), 7) << r.out;
    EXPECT_NE(r.out.find(words), std::string::npos) << r.out;
  };
  // A network name with path characters: refused before any path is built.
  std::string escape = config("1.1.0");
  escape.replace(escape.find(R"("name":"tnet")"), 13, R"("name":"../../x")");
  expectConfigError(escape, R"(network name \"../../x\" is invalid)");
  EXPECT_FALSE(std::filesystem::exists(dir_.file("x"))) << "state escaped the data directory";
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(dir_.file("ipam")).parent_path().parent_path() / "x"));
  // A prefix length no integer holds.
  std::string prefix = config("1.1.0");
  prefix.replace(prefix.find(".0/24"), 5, ".0/99999999999");
  expectConfigError(prefix, "is not a CIDR");
  // A clusterCIDR that would be nftables syntax if pasted as text.
  expectConfigError(with("ipMasq", "true,\"clusterCIDR\":\"10.0.0.0/8 } ; flush ruleset ; add set inet x y {\""),
                    "clusterCIDR: must be a CIDR");
  expectConfigError(with("clusterCIDR", "[\"10.0.0.0/8\",\"fd00::/999\"]"), "clusterCIDR");
  expectConfigError(with("bridge", "\"br/../x\""), "bridge: must be an interface name");
  std::string relative = config("1.1.0");
  relative.replace(relative.find(R"("dataDir":")"), 11, R"("dataDir":"rel/)");
  expectConfigError(relative, "must be an absolute path");
  EXPECT_EQ(veths(), before);
  EXPECT_EQ(allocations(), 0u);
  // A port-mapping state file that parses but lacks fields (a torn or
  // foreign write): ADD, DEL and GC go on and ignore it.
  std::string table = "trellis_h" + tag_;
  std::string ports = with("nftTable", "\"" + table + "\"");
  ports.insert(ports.size() - 1, R"(,"capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[)"
                                 R"({"hostPort":32081,"containerPort":80}]})");
  std::filesystem::create_directories(dir_.file("ipam/tnet/ports"));
  testing::writeFile(dir_.file("ipam/tnet/ports/other.eth0.json"), R"({"ips":["10.1.1.1"],"portMappings":[{"hostPort":1}]})");
  auto add = exec("ADD", "mapped", ns, ports);
  ASSERT_EQ(add.exitCode, 0) << add.out;
  auto map = testing::run(host("nft list map inet " + table + " hostports4")).out;
  EXPECT_NE(map.find("32081"), std::string::npos) << map;
  EXPECT_EQ(exec("DEL", "mapped", ns, ports).exitCode, 0);
  std::string gcCfg = ports;
  gcCfg.insert(gcCfg.size() - 1, R"(,"cni.dev/valid-attachments":[])");
  EXPECT_EQ(exec("GC", "", "", gcCfg, "").exitCode, 0);
  testing::run(host("nft delete table inet " + table));
}

// CHECK verifies what ADD set up against prevResult, as the reference
// bridge plugin does: each thing taken away is found, named, and code 100;
// after the repair (a repeated ADD, or the table made anew with every
// pod's mappings restored) CHECK passes again.
TEST_F(CniTest, CheckFindsWhatIsMissing) {
  std::string table = "trellis_c" + tag_;
  std::string cfg = config("1.1.0");
  cfg.insert(cfg.size() - 1, R"(,"ipMasq":true,"nftTable":")" + table +
                                 R"(","capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[)"
                                 R"({"hostPort":32090,"containerPort":80}]})");
  std::string ns = netns("chk");
  std::string path = "/var/run/netns/" + ns;
  auto add = exec("ADD", "chk", path, cfg);
  ASSERT_EQ(add.exitCode, 0) << add.out;
  std::string ip = ipOf(add.out);
  auto check = [&] { return exec("CHECK", "chk", path, withPrev(cfg, add.out)); };
  auto expectMissing = [&](const std::string& words) {
    auto r = check();
    EXPECT_EQ(r.exitCode, 1) << r.out;
    EXPECT_NE(r.out.find(R"("code":100)"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(words), std::string::npos) << "want " << words << " in " << r.out;
  };
  auto repair = [&] {
    auto again = exec("ADD", "chk", path, cfg);
    ASSERT_EQ(again.exitCode, 0) << again.out;
    ASSERT_EQ(check().exitCode, 0) << check().out;
  };
  ASSERT_EQ(check().exitCode, 0) << check().out;
  EXPECT_NE(exec("CHECK", "chk", path, cfg).out.find("CHECK needs prevResult"), std::string::npos);
  testing::run("ip netns exec " + ns + " ip addr flush dev eth0");
  expectMissing("address " + ip + "/24 is missing on eth0");
  repair();
  testing::run("ip netns exec " + ns + " ip route del default");
  expectMissing("the route to 0.0.0.0/0 via ");
  repair();
  std::string hostEnd(json::parse(add.out).at("interfaces").at(1).at("name").as_string());
  testing::run(host("ip link set " + hostEnd + " nomaster"));
  expectMissing("is not on the bridge " + bridge_);
  repair();
  testing::run(host("nft flush set inet " + table + " masq4"));
  expectMissing("the masquerade of 10.77.");
  testing::run(host("nft delete table inet " + table));  // the next ADD makes it anew, mappings and all
  repair();
  testing::run(host("nft delete element inet " + table + " hostports4 { tcp . 32090 }"));
  expectMissing("the port mapping tcp . 32090 : " + ip + " . 80 is missing");
  testing::run(host("nft delete table inet " + table));
  // Another pod's ADD remakes the table and restores this pod's mapping too.
  std::string ns2 = netns("chk2");
  std::string otherCfg = config("1.1.0");
  otherCfg.insert(otherCfg.size() - 1, R"(,"ipMasq":true,"nftTable":")" + table + "\"");
  auto other = exec("ADD", "chk2", "/var/run/netns/" + ns2, otherCfg);
  ASSERT_EQ(other.exitCode, 0) << other.out;
  EXPECT_EQ(check().exitCode, 0) << check().out;
  EXPECT_EQ(exec("DEL", "chk", path, cfg).exitCode, 0);
  EXPECT_EQ(exec("DEL", "chk2", "/var/run/netns/" + ns2, config("1.1.0")).exitCode, 0);
  EXPECT_EQ(testing::run(host("nft list map inet " + table + " hostports4")).out.find("32090"), std::string::npos);
  testing::run(host("nft delete table inet " + table));
}

TEST_F(CniTest, VxlanOverlayLeavesRoomForItsHeaders) {
  std::string cfg = config("1.1.0");
  cfg.insert(cfg.size() - 1, R"(,"overlay":"vxlan")");
  std::string ns = netns("mtu");
  auto add = exec("ADD", "mtu", "/var/run/netns/" + ns, cfg);
  ASSERT_EQ(add.exitCode, 0) << add.out;
  int uplink = 1400;  // the node's uplink
  EXPECT_EQ(std::stoi(testing::run("ip netns exec " + ns + " cat /sys/class/net/eth0/mtu").out), uplink - 50);
  EXPECT_EQ(json::parse(add.out).at("interfaces").at(2).at("mtu").as_int64(), uplink - 50);  // 1.1.0 reports it
  EXPECT_EQ(exec("DEL", "mtu", "/var/run/netns/" + ns, cfg).exitCode, 0);
  auto bad = config();
  bad.insert(bad.size() - 1, R"(,"overlay":"gre")");
  EXPECT_NE(exec("ADD", "mtu", "/var/run/netns/" + ns, bad).out.find(R"("code":7)"), std::string::npos);
}

TEST_F(CniTest, DualStackPodsReachEachOtherOverIpv4AndIpv6) {
  std::string cfg = fmt::format(R"({{"cniVersion":"1.0.0","name":"tnet6","type":"trellis-cni","bridge":"{}",)"
                                R"("ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.78.{}.0/24"}}],)"
                                R"([{{"subnet":"fd00:77:{:x}::/64"}}]],"dataDir":"{}"}}}})",
                                bridge_, getpid() % 200 + 20, getpid() % 4000 + 1, dir_.file("ipam"));
  std::string a = netns("6a"), b = netns("6b");
  auto addA = exec("ADD", "six-a", "/var/run/netns/" + a, cfg);
  ASSERT_EQ(addA.exitCode, 0) << addA.out;
  auto addB = exec("ADD", "six-b", "/var/run/netns/" + b, cfg);
  ASSERT_EQ(addB.exitCode, 0) << addB.out;
  json::value rb = json::parse(addB.out);
  ASSERT_EQ(rb.at("ips").as_array().size(), 2u) << addB.out;
  std::string v6(rb.at("ips").at(1).at("address").as_string());
  v6 = v6.substr(0, v6.find('/'));
  std::string gw6(rb.at("ips").at(1).at("gateway").as_string());
  EXPECT_NE(testing::run("ip netns exec " + a + " ip -6 route show default").out.find("via " + gw6), std::string::npos);
  EXPECT_EQ(testing::run("ip netns exec " + a + " ping -6 -c1 -W2 " + v6).exitCode, 0)
      << testing::run("ip netns exec " + a + " ip -6 addr").out;
  EXPECT_EQ(testing::run("ip netns exec " + a + " ping -6 -c1 -W2 " + gw6).exitCode, 0);
  EXPECT_EQ(testing::run("ip netns exec " + a + " ping -c1 -W2 " + ipOf(addB.out)).exitCode, 0);
  EXPECT_EQ(exec("DEL", "six-a", "/var/run/netns/" + a, cfg).exitCode, 0);
  EXPECT_EQ(exec("DEL", "six-b", "/var/run/netns/" + b, cfg).exitCode, 0);
}

}  // namespace
}  // namespace trellis::cni
