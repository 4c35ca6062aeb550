// Bearer-token authentication from a tokens file in kube-apiserver's
// --token-auth-file format: one "token,user,uid[,\"group1,group2\"]" per line.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/base/result.h"

namespace trellis::apiserver {

struct UserInfo {
  std::string name;
  std::string uid;
  std::vector<std::string> groups;
};

class TokenAuthenticator {
 public:
  // Errors name the file and the line.
  base::Status loadFile(const std::string& path);
  void add(std::string token, UserInfo user);
  // The user for an "Authorization: Bearer <token>" header value, if known.
  std::optional<UserInfo> authenticate(std::string_view authorization) const;

 private:
  std::unordered_map<std::string, UserInfo> tokens_;
};

// The user a verified client certificate names: CN the user, O the groups
// (plus system:authenticated).
UserInfo certificateUser(std::string_view commonName, const std::vector<std::string>& organizations);

// system:anonymous in group system:unauthenticated.
UserInfo anonymousUser();

// Paths anyone may read without credentials, as kube-apiserver allows.
bool isAnonymousPath(std::string_view path);

}  // namespace trellis::apiserver
