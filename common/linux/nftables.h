// nftables through libnftables: a script (nft's own syntax) is applied as
// one transaction — all of it or none — so a table is never seen half
// updated.
#pragma once

#include <string>

#include "common/base/result.h"

namespace trellis::sys {

// Applies `script` atomically; errors carry nft's message.
base::Status nftApply(const std::string& script);

// Runs a listing command ("list table inet trellis") and returns its output.
base::Result<std::string> nftList(const std::string& command);

}  // namespace trellis::sys
