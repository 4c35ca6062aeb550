#include "common/linux/nftables.h"

#include <nftables/libnftables.h>

#include <memory>

namespace trellis::sys {

namespace {

struct Ctx {
  nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  Ctx() {
    if (ctx) {
      nft_ctx_buffer_output(ctx);
      nft_ctx_buffer_error(ctx);
    }
  }
  ~Ctx() {
    if (ctx) nft_ctx_free(ctx);
  }
};

base::Result<std::string> run(const std::string& text) {
  Ctx c;
  if (!c.ctx) return base::makeError(base::ErrorCode::kResourceExhausted, "nft_ctx_new failed");
  if (nft_run_cmd_from_buffer(c.ctx, text.c_str()) != 0) {
    std::string err = nft_ctx_get_error_buffer(c.ctx);
    while (!err.empty() && err.back() == '\n') err.pop_back();
    return base::makeError(base::ErrorCode::kIo, "nftables: {}", err.empty() ? "the command failed" : err);
  }
  return std::string(nft_ctx_get_output_buffer(c.ctx));
}

}  // namespace

base::Status nftApply(const std::string& script) {
  auto r = run(script);
  if (!r) return std::move(r).error();
  return {};
}

base::Result<std::string> nftList(const std::string& command) { return run(command); }

}  // namespace trellis::sys
