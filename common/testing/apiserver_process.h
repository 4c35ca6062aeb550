// A trellis-apiserver process for tests: started with a data dir of the
// test's own, stopped (or killed -9) on demand. The binary path comes from
// the test's build (a compile definition), so common/ links nothing of it.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace trellis::testing {

class ApiServerProcess {
 public:
  // `binary`: the trellis-apiserver executable; `dir`: where data, log and
  // kubeconfig go (the data survives restarts).
  ApiServerProcess(std::string binary, std::string dir);
  ~ApiServerProcess();  // SIGTERM, if running

  // Starts and waits (up to 10 s) until the kubeconfig is written (ready).
  // `port` 0 picks a free one each start; a fixed port survives restarts.
  bool start(const std::vector<std::string>& extraArgs = {}, int port = 0);
  // Sends `signal` and reaps the process.
  void stop(int signal = 15);
  bool running() const { return pid_ > 0; }

  const std::string& kubeconfig() const { return kubeconfig_; }
  // Writes a kubeconfig at `path` for `user` (in `groups`) with a client
  // certificate from the server's CA, as a component in a cluster gets one —
  // so a test can run it under only the RBAC it is granted.
  bool writeKubeconfigFor(const std::string& user, const std::vector<std::string>& groups,
                          const std::string& path) const;
  std::string dataDir() const { return dir_ + "/data"; }
  std::string log() const;  // what the server wrote
  // The lines of the log where the server refused `user` something (RBAC).
  std::vector<std::string> refusals(const std::string& user) const;

 private:
  std::string binary_, dir_, kubeconfig_;
  pid_t pid_ = -1;
};

}  // namespace trellis::testing
