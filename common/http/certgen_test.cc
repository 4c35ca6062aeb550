#include "common/http/certgen.h"

#include <gtest/gtest.h>

#include "common/testing/testing.h"

namespace trellis::http {
namespace {

TEST(CertGen, ChainVerifiesWithOpensslAndCarriesNames) {
  auto ca = generateCa("trellis-ca");
  ASSERT_TRUE(ca.ok()) << ca.error().message();
  auto server = generateSigned(*ca, {.commonName = "apiserver", .dnsNames = {"localhost"}, .ipAddresses = {"127.0.0.1"}});
  ASSERT_TRUE(server.ok()) << server.error().message();
  auto client = generateSigned(*ca, {.commonName = "alice", .organizations = {"system:masters", "dev"}, .server = false, .client = true});
  ASSERT_TRUE(client.ok());
  testing::TempDir d;
  testing::writeFile(d.file("ca.crt"), ca->certPem);
  testing::writeFile(d.file("server.crt"), server->certPem);
  testing::writeFile(d.file("client.crt"), client->certPem);
  auto v = testing::run("openssl verify -CAfile " + d.file("ca.crt") + " -purpose sslserver " + d.file("server.crt"));
  EXPECT_EQ(v.exitCode, 0) << v.out;
  auto vc = testing::run("openssl verify -CAfile " + d.file("ca.crt") + " -purpose sslclient " + d.file("client.crt"));
  EXPECT_EQ(vc.exitCode, 0) << vc.out;
  auto text = testing::run("openssl x509 -noout -text -in " + d.file("server.crt"));
  EXPECT_NE(text.out.find("DNS:localhost, IP Address:127.0.0.1"), std::string::npos) << text.out;
  auto subj = testing::run("openssl x509 -noout -subject -nameopt RFC2253 -in " + d.file("client.crt"));
  EXPECT_NE(subj.out.find("CN=alice,O=dev,O=system:masters"), std::string::npos) << subj.out;
}

}  // namespace
}  // namespace trellis::http
