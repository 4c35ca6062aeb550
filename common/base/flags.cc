#include "common/base/flags.h"

#include "common/base/log.h"

namespace trellis::base {

void addCommonFlags(CLI::App& app, CommonFlags& flags) {
  app.add_option("--log-level", flags.logLevel, "Log threshold: debug, info, warn, error, off")
      ->check([](const std::string& v) {
        LogLevel l;
        return parseLogLevel(v, l) ? std::string() : "must be one of debug, info, warn, error, off";
      })
      ->capture_default_str();
}

void applyCommonFlags(const CommonFlags& flags) {
  LogLevel l = LogLevel::kInfo;
  parseLogLevel(flags.logLevel, l);
  setLogLevel(l);
}

}  // namespace trellis::base
