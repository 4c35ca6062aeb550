// Where the API server is and how to authenticate to it: kubeconfig files
// (as kubectl reads them, including several in $KUBECONFIG) or the in-cluster
// service-account config.
//
//   auto cfg = kube::loadDefaultConfig();        // $KUBECONFIG, ~/.kube/config, or in-cluster
//   auto cfg = kube::loadKubeconfig({"/etc/trellis/kubeconfig"});
//   kube::Client client(*cfg);
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/base/result.h"

namespace trellis::kube {

// A bearer token read from a file and re-read when the file changes (the
// service-account token is rotated by the kubelet).
class TokenFile {
 public:
  explicit TokenFile(std::string path) : path_(std::move(path)) {}
  // The current token; the file is checked at most once a second.
  base::Result<std::string> token();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::mutex mu_;
  std::string token_;
  std::chrono::steady_clock::time_point checked_{};
  int64_t mtimeNs_ = -1;  // a fingerprint of mtime, inode and size
};

struct RestConfig {
  std::string server;  // "https://host:port" (or http:// for a plain server)
  // TLS: the CA bundle (PEM; empty: the system store), a client certificate.
  std::string caPem;
  bool insecureSkipTlsVerify = false;
  std::string tlsServerName;  // overrides the name checked in the server certificate
  std::string clientCertPem, clientKeyPem;
  // Bearer token: a fixed one, or one re-read from a file.
  std::string token;
  std::shared_ptr<TokenFile> tokenFile;
  std::string ns = "default";  // the context's namespace
  std::string source;          // where this came from ("kubeconfig /x (context y)", "in-cluster")
};

// Reads and merges kubeconfig files as kubectl does: for clusters, users and
// contexts the first file that names one wins, and so does the first
// current-context. `context` overrides current-context. Relative file paths
// inside a kubeconfig are relative to that file. Errors (kInvalidArgument,
// kNotFound) name the file and the field: "kubeconfig /x: users[0].user:
// client-certificate-data is not base64".
base::Result<RestConfig> loadKubeconfig(const std::vector<std::string>& paths, const std::string& context = "");

// A kubeconfig given as text (for tests and embedded configs); `name` is used
// in messages and `dir` resolves relative paths.
base::Result<RestConfig> parseKubeconfig(std::string_view text, const std::string& name, const std::string& dir,
                                         const std::string& context = "");

// The in-cluster config: KUBERNETES_SERVICE_HOST/PORT and the service
// account's token, CA and namespace under `root`.
base::Result<RestConfig> inClusterConfig(const std::string& root = "/var/run/secrets/kubernetes.io/serviceaccount");

// $KUBECONFIG (colon-separated files) if set, else ~/.kube/config if it
// exists, else the in-cluster config.
base::Result<RestConfig> loadDefaultConfig(const std::string& context = "");

}  // namespace trellis::kube
