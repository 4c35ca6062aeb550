// Limits a server enforces on what peers send, and the timeouts it keeps.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace trellis::http {

struct Limits {
  size_t maxRequestLineBytes = 8 * 1024;   // longer → 414
  size_t maxHeaderBytes = 32 * 1024;       // whole header section; larger → 431
  size_t maxHeaderCount = 100;             // more fields → 431
  size_t maxBodyBytes = 3 * 1024 * 1024;   // larger → 413 (kube-apiserver's default)
  uint32_t maxConcurrentStreams = 128;     // HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS
  uint32_t initialWindowSize = 1 << 20;    // HTTP/2 per-stream receive window
  std::chrono::milliseconds headerTimeout{10'000};  // first byte → end of headers
  std::chrono::milliseconds bodyTimeout{30'000};    // between body reads
  std::chrono::milliseconds idleTimeout{120'000};   // keep-alive with nothing in flight
};

}  // namespace trellis::http
