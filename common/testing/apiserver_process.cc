#include "common/testing/apiserver_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <regex>
#include <sstream>

#include <fmt/format.h>

#include "common/base/base64.h"
#include "common/http/certgen.h"
#include "common/testing/testing.h"

namespace trellis::testing {

using namespace std::chrono_literals;

ApiServerProcess::ApiServerProcess(std::string binary, std::string dir)
    : binary_(std::move(binary)), dir_(std::move(dir)), kubeconfig_(dir_ + "/kubeconfig") {}

ApiServerProcess::~ApiServerProcess() { stop(SIGTERM); }

bool ApiServerProcess::start(const std::vector<std::string>& extraArgs, int port) {
  unlink(kubeconfig_.c_str());
  std::vector<std::string> args{binary_,        "--data-dir",         dataDir(), "--secure-port",
                                std::to_string(port), "--write-kubeconfig", kubeconfig_};
  args.insert(args.end(), extraArgs.begin(), extraArgs.end());
  pid_ = fork();
  if (pid_ == 0) {
    std::string logFile = dir_ + "/apiserver.log";
    if (!freopen(logFile.c_str(), "a", stderr)) _exit(126);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary_.c_str(), argv.data());
    _exit(127);
  }
  return pid_ > 0 && waitFor([&] { return access(kubeconfig_.c_str(), R_OK) == 0; }, 10s);
}

void ApiServerProcess::stop(int signal) {
  if (pid_ <= 0) return;
  kill(pid_, signal);
  int st;
  waitpid(pid_, &st, 0);
  pid_ = -1;
}

bool ApiServerProcess::writeKubeconfigFor(const std::string& user, const std::vector<std::string>& groups,
                                          const std::string& path) const {
  std::string pki = dataDir() + "/pki";
  http::PemPair ca{readFile(pki + "/ca.crt"), readFile(pki + "/ca.key")};
  auto leaf = http::generateSigned(ca, {.commonName = user, .organizations = groups, .server = false, .client = true});
  if (!leaf) return false;
  std::string admin = readFile(kubeconfig_);
  std::smatch server, caData;
  if (!std::regex_search(admin, server, std::regex("server: (\\S+)")) ||
      !std::regex_search(admin, caData, std::regex("certificate-authority-data: (\\S+)")))
    return false;
  writeFile(path, fmt::format("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n"
                              "    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n"
                              "    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: c\n"
                              "  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
                              server[1].str(), caData[1].str(), base::base64Encode(leaf->certPem),
                              base::base64Encode(leaf->keyPem)));
  return true;
}

std::vector<std::string> ApiServerProcess::refusals(const std::string& user) const {
  std::vector<std::string> out;
  std::istringstream in(log());
  for (std::string line; std::getline(in, line);) {
    if (line.find("msg=forbidden") != std::string::npos && line.find("user=" + user + " ") != std::string::npos) {
      out.push_back(line);
    }
  }
  return out;
}

std::string ApiServerProcess::log() const { return readFile(dir_ + "/apiserver.log"); }

}  // namespace trellis::testing
