#include "common/kube/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/base/base64.h"
#include "common/kube/yaml.h"
#include "common/testing/testing.h"

namespace trellis::kube {
namespace {

constexpr const char* kConfig = R"(apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:6443/
    certificate-authority-data: Q0EgUEVN
- name: other
  cluster: {server: "https://10.0.0.1", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: abc123}
- name: certs
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
contexts:
- name: dev
  context: {cluster: local, user: admin, namespace: team-a}
- name: prod
  context: {cluster: other, user: certs}
)";

TEST(Yaml, ScalarsResolveAsKubernetesReadsThem) {
  auto v = parseYaml("a: 1\nb: true\nc: '1'\nd: ~\ne: 1.5\nf: [x, \"y\"]\ng: 0755\nh: hello world\n");
  ASSERT_TRUE(v) << v.error().message();
  const auto& o = v->as_object();
  EXPECT_EQ(o.at("a").as_int64(), 1);
  EXPECT_TRUE(o.at("b").as_bool());
  EXPECT_EQ(o.at("c").as_string(), "1");
  EXPECT_TRUE(o.at("d").is_null());
  EXPECT_DOUBLE_EQ(o.at("e").as_double(), 1.5);
  EXPECT_EQ(o.at("f").as_array().size(), 2u);
  EXPECT_EQ(o.at("h").as_string(), "hello world");
  auto docs = parseYamlStream("a: 1\n---\n---\nb: 2\n");
  ASSERT_TRUE(docs);
  EXPECT_EQ(docs->size(), 2u);
  auto bad = parseYaml("a: [1, 2\nb: 3\n");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("line"), std::string::npos) << bad.error().message();
}

TEST(Kubeconfig, CurrentContextTokenAndCaData) {
  auto cfg = parseKubeconfig(kConfig, "/x/config", "/x");
  ASSERT_TRUE(cfg) << cfg.error().message();
  EXPECT_EQ(cfg->server, "https://127.0.0.1:6443");
  EXPECT_EQ(cfg->caPem, "CA PEM");
  EXPECT_EQ(cfg->token, "abc123");
  EXPECT_EQ(cfg->ns, "team-a");
  auto prod = parseKubeconfig(kConfig, "/x/config", "/x", "prod");
  ASSERT_TRUE(prod) << prod.error().message();
  EXPECT_TRUE(prod->insecureSkipTlsVerify);
  EXPECT_EQ(prod->clientCertPem, "CERT");
  EXPECT_EQ(prod->clientKeyPem, "KEY");
  EXPECT_EQ(prod->ns, "default");
}

TEST(Kubeconfig, MalformedFilesNameTheFileAndField) {
  auto expectError = [](std::string_view text, std::string_view words, std::string context = "") {
    auto cfg = parseKubeconfig(text, "/etc/kc", "/etc", context);
    ASSERT_FALSE(cfg) << text;
    EXPECT_NE(cfg.error().message().find(words), std::string::npos) << cfg.error().message();
  };
  expectError("clusters: [\n", "kubeconfig /etc/kc: YAML:");
  expectError("clusters: 5\n", "kubeconfig /etc/kc: clusters: not a list");
  expectError("clusters:\n- cluster: {server: https://a}\n", "kubeconfig /etc/kc: clusters[0].name: missing");
  expectError(kConfig, "context \"nope\" not found", "nope");
  std::string noServer = std::string(kConfig);
  noServer.replace(noServer.find("server: https://127.0.0.1:6443/"), 31, "proxy-url: x");
  expectError(noServer, "kubeconfig /etc/kc: clusters[0].cluster.server: missing");
  std::string badB64 = std::string(kConfig);
  badB64.replace(badB64.find("Q0VSVA=="), 8, "not@base64");
  expectError(badB64, "kubeconfig /etc/kc: users[1].user.client-certificate-data: not base64", "prod");
  expectError("current-context: a\ncontexts:\n- name: a\n  context: {cluster: gone, user: u}\n",
              "contexts[0].context.cluster: cluster \"gone\" not found");
  expectError("current-context: a\ncontexts:\n- name: a\n  context: {cluster: c}\nclusters:\n- name: c\n  cluster: {server: ftp://x}\n",
              "clusters[0].cluster.server: \"ftp://x\" is not an http(s) URL");
  expectError("current-context: a\nclusters:\n- name: c\n  cluster: {server: https://x, insecure-skip-tls-verify: maybe}\n"
              "contexts:\n- name: a\n  context: {cluster: c}\n",
              "clusters[0].cluster.insecure-skip-tls-verify: not a bool");
}

TEST(Kubeconfig, SeveralFilesMergeFirstWinsAndFilesResolveRelativeToTheirFile) {
  testing::TempDir d;
  testing::writeFile(d.file("ca.crt"), "FILE CA");
  testing::writeFile(d.file("token"), "tok-1\n");
  testing::writeFile(d.file("a"), "current-context: mine\ncontexts:\n- name: mine\n  context: {cluster: c, user: u}\n"
                                  "clusters:\n- name: c\n  cluster: {server: 'https://first', certificate-authority: ca.crt}\n");
  testing::writeFile(d.file("b"), "current-context: theirs\nclusters:\n- name: c\n  cluster: {server: 'https://second'}\n"
                                  "users:\n- name: u\n  user: {tokenFile: token}\n");
  auto cfg = loadKubeconfig({d.file("a"), d.file("b")});
  ASSERT_TRUE(cfg) << cfg.error().message();
  EXPECT_EQ(cfg->server, "https://first");
  EXPECT_EQ(cfg->caPem, "FILE CA");
  ASSERT_TRUE(cfg->tokenFile);
  EXPECT_EQ(*cfg->tokenFile->token(), "tok-1");
  // $KUBECONFIG with both files (and a missing one, skipped as kubectl does).
  std::string env = d.file("missing") + ":" + d.file("a") + ":" + d.file("b");
  setenv("KUBECONFIG", env.c_str(), 1);
  auto viaEnv = loadDefaultConfig();
  unsetenv("KUBECONFIG");
  ASSERT_TRUE(viaEnv) << viaEnv.error().message();
  EXPECT_EQ(viaEnv->server, "https://first");
  auto missing = loadKubeconfig({d.file("missing")});
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find(d.file("missing")), std::string::npos);
}

TEST(Kubeconfig, InClusterConfigAndTokenRotation) {
  testing::TempDir d;
  testing::writeFile(d.file("token"), "first");
  testing::writeFile(d.file("ca.crt"), "SA CA");
  testing::writeFile(d.file("namespace"), "kube-system\n");
  unsetenv("KUBERNETES_SERVICE_HOST");
  EXPECT_FALSE(inClusterConfig(d.path()));
  setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  auto cfg = inClusterConfig(d.path());
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
  ASSERT_TRUE(cfg) << cfg.error().message();
  EXPECT_EQ(cfg->server, "https://10.96.0.1:443");
  EXPECT_EQ(cfg->caPem, "SA CA");
  EXPECT_EQ(cfg->ns, "kube-system");
  EXPECT_EQ(*cfg->tokenFile->token(), "first");
  // The kubelet rotates the token: the new one is read (after the 1 s recheck).
  testing::writeFile(d.file("token.new"), "second");
  ASSERT_EQ(rename(d.file("token.new").c_str(), d.file("token").c_str()), 0);
  sleep(1);
  usleep(100'000);
  EXPECT_EQ(*cfg->tokenFile->token(), "second");
}

}  // namespace
}  // namespace trellis::kube
