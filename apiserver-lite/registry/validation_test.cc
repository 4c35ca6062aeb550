#include "apiserver-lite/registry/validation.h"

#include <gtest/gtest.h>

namespace trellis::apiserver::registry {
namespace {

TEST(Validation, Dns1123Subdomain) {
  for (const char* ok : {"a", "example.com", "my-name", "0", "a.b-c.d", "x123"}) {
    EXPECT_TRUE(isDns1123Subdomain(ok).empty()) << ok;
  }
  for (const char* bad : {"", "Foo", "-a", "a-", "a..b", ".a", "a_b", "a/b", "a b"}) {
    EXPECT_FALSE(isDns1123Subdomain(bad).empty()) << bad;
  }
  EXPECT_EQ(isDns1123Subdomain(std::string(254, 'a')).front(), "must be no more than 253 characters");
  EXPECT_EQ(isDns1123Subdomain("Foo").front(),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
            "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')");
}

TEST(Validation, Dns1123LabelAnd1035) {
  EXPECT_TRUE(isDns1123Label("kube-system").empty());
  EXPECT_FALSE(isDns1123Label("a.b").empty());
  EXPECT_EQ(isDns1123Label(std::string(64, 'a')).size(), 1u);
  EXPECT_EQ(isDns1123Label("A").front(),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
            "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')");
  EXPECT_TRUE(isDns1035Label("web").empty());
  EXPECT_FALSE(isDns1035Label("1web").empty());  // services must start with a letter
}

TEST(Validation, LabelKeysAndValues) {
  for (const char* ok : {"app", "app.kubernetes.io/name", "trellis.dev/node", "A_b.c-1"}) {
    EXPECT_TRUE(isQualifiedName(ok).empty()) << ok;
  }
  EXPECT_EQ(isQualifiedName("/name").front(), "prefix part must be non-empty");
  EXPECT_EQ(isQualifiedName("a/").front(), "name part must be non-empty");
  EXPECT_FALSE(isQualifiedName("a/b/c").empty());
  EXPECT_FALSE(isQualifiedName("Bad_/x").empty());
  EXPECT_TRUE(isValidLabelValue("").empty());
  EXPECT_TRUE(isValidLabelValue("v1.2_x").empty());
  EXPECT_FALSE(isValidLabelValue("-x").empty());
  EXPECT_FALSE(isValidLabelValue(std::string(64, 'a')).empty());
}

TEST(Validation, FieldErrorsReadLikeKubeApiserver) {
  FieldErrors errs;
  appendInvalid(errs, "metadata.name", "Foo", isDns1123Subdomain);
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0].reason(), "FieldValueInvalid");
  std::string msg = invalidMessage("ConfigMap", "Foo", errs);
  EXPECT_EQ(msg.rfind("ConfigMap \"Foo\" is invalid: metadata.name: Invalid value: \"Foo\": a lowercase RFC 1123 subdomain", 0), 0u)
      << msg;
  errs.push_back(FieldError::required("metadata.name", "name or generateName is required"));
  msg = invalidMessage("ConfigMap", "", errs);
  EXPECT_NE(msg.find(", metadata.name: Required value: name or generateName is required]"), std::string::npos) << msg;
  EXPECT_EQ(goQuote("a\"b\n"), "\"a\\\"b\\n\"");
}

}  // namespace
}  // namespace trellis::apiserver::registry
