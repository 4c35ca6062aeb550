#include "apiserver-lite/server/authn.h"

#include <fstream>

namespace trellis::apiserver {

base::Status TokenAuthenticator::loadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return base::Error::fromErrno(errno, "opening tokens file " + path);
  std::string line;
  int lineNo = 0;
  while (std::getline(in, line)) {
    ++lineNo;
    if (line.empty() || line[0] == '#') continue;
    // token,user,uid[,"g1,g2"]
    std::vector<std::string> fields;
    std::string cur;
    bool quoted = false;
    for (char c : line) {
      if (c == '"') quoted = !quoted;
      else if (c == ',' && !quoted) {
        fields.push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
    fields.push_back(cur);
    if (fields.size() < 3 || fields[0].empty() || fields[1].empty()) {
      return base::makeError(base::ErrorCode::kInvalidArgument,
                             "{} line {}: want token,user,uid[,\"group1,group2\"]", path, lineNo);
    }
    UserInfo u{fields[1], fields[2], {}};
    if (fields.size() > 3) {
      std::string_view g = fields[3];
      while (!g.empty()) {
        size_t comma = g.find(',');
        if (!g.substr(0, comma).empty()) u.groups.emplace_back(g.substr(0, comma));
        if (comma == std::string_view::npos) break;
        g.remove_prefix(comma + 1);
      }
    }
    add(fields[0], std::move(u));
  }
  return {};
}

void TokenAuthenticator::add(std::string token, UserInfo user) {
  user.groups.push_back("system:authenticated");
  tokens_[std::move(token)] = std::move(user);
}

std::optional<UserInfo> TokenAuthenticator::authenticate(std::string_view authorization) const {
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() <= kBearer.size() || authorization.substr(0, kBearer.size()) != kBearer) return std::nullopt;
  auto it = tokens_.find(std::string(authorization.substr(kBearer.size())));
  if (it == tokens_.end()) return std::nullopt;
  return it->second;
}

UserInfo certificateUser(std::string_view commonName, const std::vector<std::string>& organizations) {
  UserInfo u{std::string(commonName), "", organizations};
  u.groups.push_back("system:authenticated");
  return u;
}

UserInfo anonymousUser() { return UserInfo{"system:anonymous", "", {"system:unauthenticated"}}; }

bool isAnonymousPath(std::string_view path) {
  return path == "/healthz" || path == "/livez" || path == "/readyz" || path == "/version";
}

}  // namespace trellis::apiserver
