// Flags every Trellis binary shares, registered on a CLI11 app.
// Include only from main.cc files: CLI11 is heavy to compile.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace trellis::base {

struct CommonFlags {
  std::string logLevel = "info";
};

// Adds --log-level; call applyCommonFlags() after parsing.
void addCommonFlags(CLI::App& app, CommonFlags& flags);
void applyCommonFlags(const CommonFlags& flags);

}  // namespace trellis::base
