// What was built: the git commit, whether the tree had changes, and when
// this commit was first built here (RFC 3339, UTC) — written by the build
// (cmake/build_info.cmake), for /version and --version.
#pragma once

#include <string_view>

namespace trellis::base {

struct BuildInfo {
  std::string_view gitCommit;     // 40 hex digits, or "" outside a git checkout
  std::string_view gitTreeState;  // "clean" or "dirty" ("" outside a git checkout)
  std::string_view buildDate;     // e.g. "2026-12-07T13:05:00Z"
};

const BuildInfo& buildInfo();

}  // namespace trellis::base
