// Parsing numbers and addresses from text that users and operators write,
// without exceptions: the answer is a value or an error naming what was
// wrong, never a throw (std::stoi and friends throw on bad input and abort a
// process that does not catch them).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/base/result.h"

namespace trellis::base {

// A whole decimal number in [min, max], all of `text` (no sign but '-', no
// spaces, no suffix). `what` names the value in the error.
Result<int64_t> parseInt(std::string_view text, int64_t min, int64_t max, std::string_view what = "number");

struct HostPort {
  std::string host;  // as written ("[::1]" keeps its brackets stripped: "::1")
  uint16_t port = 0;
};
// "HOST:PORT" or "[V6]:PORT" (port 0 allowed: the caller picks one).
Result<HostPort> parseHostPort(std::string_view text);

}  // namespace trellis::base
