// ICMP echo from inside a network namespace, to many targets at once: what
// `ping` proves, for hundreds of pod pairs in well under a second (one raw
// socket per source, every request sent, replies gathered until a deadline).
#pragma once

#include <chrono>
#include <set>
#include <string>
#include <vector>

namespace trellis::testing {

// Sends one echo request (retried up to `attempts` times for targets that
// have not answered) from the network namespace at `netnsPath` to each of
// `targets` (IPv4 or IPv6 literals) and returns those that never answered.
// Needs root (a raw socket and setns); runs on its own thread.
std::set<std::string> unreachableFrom(const std::string& netnsPath, const std::vector<std::string>& targets,
                                      std::chrono::milliseconds perAttempt = std::chrono::milliseconds(1000),
                                      int attempts = 3);

}  // namespace trellis::testing
