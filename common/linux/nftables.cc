#include "common/linux/nftables.h"

#include <dlfcn.h>
#include <nftables/libnftables.h>

#include <mutex>

namespace trellis::sys {

namespace {

// libnftables (and the five libraries it pulls in: nftnl, mnl, jansson, gmp,
// xtables) is loaded on first use, not at start-up: trellis-cni is exec'd
// once per pod and most of its runs never touch nftables, so linking it
// would put their loading and relocation on every ADD and DEL.
struct Nft {
  decltype(&nft_ctx_new) ctxNew = nullptr;
  decltype(&nft_ctx_free) ctxFree = nullptr;
  decltype(&nft_ctx_buffer_output) bufferOutput = nullptr;
  decltype(&nft_ctx_buffer_error) bufferError = nullptr;
  decltype(&nft_ctx_get_output_buffer) outputBuffer = nullptr;
  decltype(&nft_ctx_get_error_buffer) errorBuffer = nullptr;
  decltype(&nft_run_cmd_from_buffer) runCmd = nullptr;
  std::string loadError;
};

const Nft& nft() {
  static Nft n;
  static std::once_flag once;
  std::call_once(once, [] {
    void* h = dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      n.loadError = e ? e : "dlopen failed";
      return;
    }
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      if (!fn && n.loadError.empty()) n.loadError = std::string("libnftables.so.1 lacks ") + name;
    };
    sym(n.ctxNew, "nft_ctx_new");
    sym(n.ctxFree, "nft_ctx_free");
    sym(n.bufferOutput, "nft_ctx_buffer_output");
    sym(n.bufferError, "nft_ctx_buffer_error");
    sym(n.outputBuffer, "nft_ctx_get_output_buffer");
    sym(n.errorBuffer, "nft_ctx_get_error_buffer");
    sym(n.runCmd, "nft_run_cmd_from_buffer");
  });
  return n;
}

base::Result<std::string> run(const std::string& text) {
  const Nft& n = nft();
  if (!n.loadError.empty()) {
    return base::makeError(base::ErrorCode::kUnavailable, "nftables: {} (install libnftables1)", n.loadError);
  }
  struct Ctx {
    const Nft& n;
    nft_ctx* ctx;
    ~Ctx() {
      if (ctx) n.ctxFree(ctx);
    }
  } c{n, n.ctxNew(NFT_CTX_DEFAULT)};
  if (!c.ctx) return base::makeError(base::ErrorCode::kResourceExhausted, "nft_ctx_new failed");
  n.bufferOutput(c.ctx);
  n.bufferError(c.ctx);
  if (n.runCmd(c.ctx, text.c_str()) != 0) {
    std::string err = n.errorBuffer(c.ctx);
    while (!err.empty() && err.back() == '\n') err.pop_back();
    return base::makeError(base::ErrorCode::kIo, "nftables: {}", err.empty() ? "the command failed" : err);
  }
  return std::string(n.outputBuffer(c.ctx));
}

}  // namespace

base::Status nftApply(const std::string& script) {
  auto r = run(script);
  if (!r) return std::move(r).error();
  return {};
}

base::Result<std::string> nftList(const std::string& command) { return run(command); }

}  // namespace trellis::sys
