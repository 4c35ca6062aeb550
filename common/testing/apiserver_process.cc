#include "common/testing/apiserver_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

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

std::string ApiServerProcess::log() const { return readFile(dir_ + "/apiserver.log"); }

}  // namespace trellis::testing
