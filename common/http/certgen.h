// Generating X.509 certificates (ECDSA P-256): a self-signed CA, and leaf
// certificates it signs for servers (DNS/IP SANs) and clients (CN = user,
// O = groups, as Kubernetes reads them).
#pragma once

#include <string>
#include <vector>

#include "common/base/result.h"

namespace trellis::http {

struct PemPair {
  std::string certPem;
  std::string keyPem;
};

struct CertRequest {
  std::string commonName;
  std::vector<std::string> organizations;
  std::vector<std::string> dnsNames;
  std::vector<std::string> ipAddresses;
  bool server = true;
  bool client = false;
  int days = 365;
};

base::Result<PemPair> generateCa(const std::string& commonName, int days = 3650);
base::Result<PemPair> generateSigned(const PemPair& ca, const CertRequest& request);

}  // namespace trellis::http
