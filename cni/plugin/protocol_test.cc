#include "cni/plugin/protocol.h"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace trellis::cni {
namespace {

namespace json = boost::json;

std::map<std::string, std::string> addEnv() {
  return {{"CNI_COMMAND", "ADD"}, {"CNI_CONTAINERID", "abc123"}, {"CNI_NETNS", "/var/run/netns/x"},
          {"CNI_IFNAME", "eth0"}, {"CNI_PATH", "/opt/cni/bin:/usr/lib/cni"}, {"CNI_ARGS", "K8S_POD_NAME=web;IgnoreUnknown=1"}};
}
constexpr std::string_view kConfig = R"({"cniVersion":"1.0.0","name":"trellis","type":"trellis-cni","bridge":"trellis0"})";

Error errorOf(const std::map<std::string, std::string>& env, std::string_view cfg) {
  auto r = parseInvocation(env, cfg);
  EXPECT_TRUE(std::holds_alternative<Error>(r));
  return std::holds_alternative<Error>(r) ? std::get<Error>(r) : Error{};
}

TEST(Protocol, AddParsesEnvironmentAndConfig) {
  auto r = parseInvocation(addEnv(), kConfig);
  ASSERT_TRUE(std::holds_alternative<Invocation>(r)) << std::get<Error>(r).msg;
  const Invocation& inv = std::get<Invocation>(r);
  EXPECT_EQ(inv.command, Command::kAdd);
  EXPECT_EQ(inv.containerId, "abc123");
  EXPECT_EQ(inv.ifname, "eth0");
  EXPECT_EQ(inv.cniVersion, "1.0.0");
  EXPECT_EQ(inv.args.at("K8S_POD_NAME"), "web");
  EXPECT_EQ(inv.path, (std::vector<std::string>{"/opt/cni/bin", "/usr/lib/cni"}));
  EXPECT_EQ(json::serialize(versionInfo()),
            R"({"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})");
}

TEST(Protocol, BadInputGetsTheSpecsErrorCodes) {
  auto env = addEnv();
  env.erase("CNI_COMMAND");
  EXPECT_EQ(errorOf(env, kConfig).code, ErrorCode::kInvalidEnvironment);
  env = addEnv();
  env["CNI_COMMAND"] = "FROB";
  EXPECT_EQ(errorOf(env, kConfig).code, ErrorCode::kInvalidEnvironment);
  for (const char* id : {"../etc", "a/b", "-x", "", "a b"}) {
    env = addEnv();
    env["CNI_CONTAINERID"] = id;
    Error e = errorOf(env, kConfig);
    EXPECT_EQ(e.code, ErrorCode::kInvalidEnvironment) << id;
    EXPECT_NE(e.msg.find("CNI_CONTAINERID"), std::string::npos) << e.msg;
  }
  for (const char* name : {"..", "eth0/../x", "averyveryverylongname", "a:b", "a b", ""}) {
    env = addEnv();
    env["CNI_IFNAME"] = name;
    EXPECT_EQ(errorOf(env, kConfig).code, ErrorCode::kInvalidEnvironment) << name;
  }
  env = addEnv();
  env.erase("CNI_NETNS");
  EXPECT_EQ(errorOf(env, kConfig).code, ErrorCode::kInvalidEnvironment);
  env["CNI_COMMAND"] = "DEL";  // DEL may come without a netns
  EXPECT_TRUE(std::holds_alternative<Invocation>(parseInvocation(env, kConfig)));
  EXPECT_EQ(errorOf(addEnv(), "{not json").code, ErrorCode::kDecode);
  EXPECT_EQ(errorOf(addEnv(), R"({"name":"n","type":"t"})").code, ErrorCode::kInvalidConfig);
  Error version = errorOf(addEnv(), R"({"cniVersion":"0.2.0","name":"n","type":"t"})");
  EXPECT_EQ(version.code, ErrorCode::kIncompatibleVersion);
  EXPECT_EQ(version.msg, "incompatible CNI versions; config is \"0.2.0\", plugin supports [0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0]");
  env = addEnv();
  env["CNI_COMMAND"] = "STATUS";
  EXPECT_EQ(errorOf(env, kConfig).code, ErrorCode::kIncompatibleVersion);  // STATUS is 1.1.0
  EXPECT_EQ(json::serialize(Error{ErrorCode::kTryAgainLater, "busy", "lock held"}.toJson("1.0.0")),
            R"({"cniVersion":"1.0.0","code":11,"msg":"busy","details":"lock held"})");
}

TEST(Protocol, ResultsInEachVersionsFormat) {
  Result r;
  r.interfaces = {{"trellis0", "aa:bb:cc:dd:ee:01", "", 1450}, {"eth0", "aa:bb:cc:dd:ee:02", "/var/run/netns/x", 1450}};
  r.ips = {{"10.244.1.5/24", "10.244.1.1", 1}, {"fd00::5/64", "fd00::1", 1}};
  r.routes = {{"0.0.0.0/0", "10.244.1.1", 1450, 0, 0, 0, 0}};
  r.dns.nameservers = {"10.96.0.10"};
  EXPECT_EQ(json::serialize(toJson(r, "0.4.0")),
            R"({"cniVersion":"0.4.0","interfaces":[{"name":"trellis0","mac":"aa:bb:cc:dd:ee:01"},)"
            R"({"name":"eth0","mac":"aa:bb:cc:dd:ee:02","sandbox":"/var/run/netns/x"}],)"
            R"("ips":[{"version":"4","address":"10.244.1.5/24","gateway":"10.244.1.1","interface":1},)"
            R"({"version":"6","address":"fd00::5/64","gateway":"fd00::1","interface":1}],)"
            R"("routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1"}],"dns":{"nameservers":["10.96.0.10"]}})");
  std::string v11 = json::serialize(toJson(r, "1.1.0"));
  EXPECT_NE(v11.find(R"({"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":1})"), std::string::npos) << v11;
  EXPECT_NE(v11.find(R"({"dst":"0.0.0.0/0","gw":"10.244.1.1","mtu":1450,"scope":0})"), std::string::npos) << v11;
  EXPECT_NE(v11.find(R"("name":"trellis0","mac":"aa:bb:cc:dd:ee:01","mtu":1450)"), std::string::npos) << v11;
  // Round trip through a chained plugin's prevResult, from any version.
  for (const char* v : {"0.3.1", "1.0.0", "1.1.0"}) {
    auto back = resultFromJson(toJson(r, v));
    ASSERT_TRUE(std::holds_alternative<Result>(back)) << v;
    EXPECT_EQ(json::serialize(toJson(std::get<Result>(back), "1.0.0")), json::serialize(toJson(r, "1.0.0"))) << v;
  }
  auto bad = resultFromJson(json::parse(R"({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1","interface":0}]})").as_object());
  ASSERT_TRUE(std::holds_alternative<Error>(bad));
  EXPECT_EQ(std::get<Error>(bad).code, ErrorCode::kDecode);
  EXPECT_LT(compareVersions("0.4.0", "1.0.0"), 0);
  EXPECT_EQ(compareVersions("1.1.0", "1.1.0"), 0);
}

}  // namespace
}  // namespace trellis::cni
