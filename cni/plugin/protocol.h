// The CNI protocol (SPEC.md 1.1.0) as trellis-cni speaks it: the verb and
// its environment variables, the network configuration on stdin, version
// negotiation, the error object, and results in the format of each version
// a configuration may ask for (0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0).
//
// Pure logic: nothing here touches the host. The plugin's verbs use it to
// validate their input before changing anything, and to format what they
// print.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <boost/json/object.hpp>

namespace trellis::cni {

// The spec's well-known error codes.
enum class ErrorCode : int {
  kIncompatibleVersion = 1,
  kUnsupportedField = 2,
  kUnknownContainer = 3,
  kInvalidEnvironment = 4,
  kIo = 5,
  kDecode = 6,
  kInvalidConfig = 7,
  kTryAgainLater = 11,
  kNotReady = 50,
  kLimitedConnectivity = 51,
  kAttachmentDiffers = 100,  // CHECK: what ADD set up is not (all) there; the message names what
  kUnexpected = 999,  // a bug: an exception the plugin did not expect (plugin-specific range, 100+)
};

struct Error {
  ErrorCode code;
  std::string msg;
  std::string details;
  // {"cniVersion": v, "code": n, "msg": ..., "details": ...}
  boost::json::object toJson(std::string_view cniVersion) const;
};

enum class Command { kAdd, kDel, kCheck, kStatus, kGc, kVersion };

// The versions whose results this plugin writes, oldest first.
const std::vector<std::string>& supportedVersions();
// The newest supported version (what VERSION and errors before a config is read use).
std::string_view latestVersion();
// {"cniVersion": latest, "supportedVersions": [...]}: the VERSION verb's output.
boost::json::object versionInfo();

// One invocation: the verb, its environment and its configuration.
struct Invocation {
  Command command = Command::kVersion;
  std::string containerId;
  std::string netns;
  std::string ifname;
  std::map<std::string, std::string> args;  // CNI_ARGS "K1=V1;K2=V2"
  std::vector<std::string> path;            // CNI_PATH
  std::string cniVersion;                   // from the configuration
  boost::json::object config;               // the whole network configuration
};

// Parses the environment (as name -> value) and stdin for one call,
// checking what the spec requires of each verb: the variables it needs,
// a container id of [A-Za-z0-9][A-Za-z0-9_.-]*, an interface name the kernel
// accepts (1-15 characters, no '/', ':' or whitespace, not "." or ".."), a
// configuration that is a JSON object with a supported cniVersion, a name
// and a type. VERSION needs no configuration.
std::variant<Invocation, Error> parseInvocation(const std::map<std::string, std::string>& env, std::string_view stdinText);

// ---- results ----

struct Interface {
  std::string name;
  std::string mac;
  std::string sandbox;  // netns path for interfaces inside the container
  int mtu = 0;          // 1.1.0
};

struct IpConfig {
  std::string address;  // CIDR: "10.244.1.5/24"
  std::string gateway;
  int interface = -1;   // index into interfaces, -1: none
  bool v6() const { return address.find(':') != std::string::npos; }
};

struct Route {
  std::string dst;  // CIDR
  std::string gw;
  int mtu = 0, advmss = 0, priority = 0, table = 0;  // 1.1.0, 0 = unset
  int scope = -1;                                   // 1.1.0: -1 unset, else the kernel's scope (253 link, 0 universe)
};

struct Dns {
  std::vector<std::string> nameservers;
  std::string domain;
  std::vector<std::string> search;
  std::vector<std::string> options;
};

struct Result {
  std::vector<Interface> interfaces;
  std::vector<IpConfig> ips;
  std::vector<Route> routes;
  Dns dns;
};

// The result in `version`'s format (0.3.x/0.4.0: ips carry "version" and
// routes only dst/gw; 1.1.0 adds route and interface fields).
boost::json::object toJson(const Result& result, std::string_view version);
// A result of any supported version (e.g. a chained plugin's prevResult).
std::variant<Result, Error> resultFromJson(const boost::json::object& obj);

// Why `name` cannot be a Linux interface name (empty, over 15 bytes, "."
// or "..", '/', ':' or whitespace); nullopt when it can.
std::optional<std::string> ifnameProblem(std::string_view name);

// The spec's network names: an alphanumeric, then alphanumerics, '_', '.'
// or '-' (so a name is always a safe single path component); at most 200
// characters, to leave room under NAME_MAX for what is derived from it.
bool validNetworkName(std::string_view name);

// Version strings compared as versions ("0.4.0" < "1.0.0").
int compareVersions(std::string_view a, std::string_view b);

}  // namespace trellis::cni
