#include "common/testing/testing.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace trellis::testing {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/trellis-test-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void makeCertificate(const std::string& dir, const std::string& name, const std::string& cn,
                     const std::vector<std::string>& dnsNames) {
  std::string san = "IP:127.0.0.1";
  for (const auto& d : dnsNames) san += ",DNS:" + d;
  std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=" +
                    cn + " -addext subjectAltName=" + san + " -keyout " + dir + "/" + name + ".key -out " + dir +
                    "/" + name + ".crt 2>&1";
  CommandResult r = run(cmd);
  if (r.exitCode != 0) throw std::runtime_error("openssl req failed: " + r.out);
}

CommandResult runStreaming(const std::string& command, const std::function<void(const std::string&)>& onLine) {
  CommandResult r;
  FILE* f = popen((command + " 2>&1").c_str(), "r");
  if (!f) return r;
  char buf[8192];
  std::string line;
  while (fgets(buf, sizeof buf, f)) {
    r.out += buf;
    line += buf;
    if (!line.empty() && line.back() == '\n') {
      line.pop_back();
      if (onLine) onLine(line);
      line.clear();
    }
  }
  if (!line.empty() && onLine) onLine(line);
  int status = pclose(f);
  r.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

CommandResult run(const std::string& command) { return runStreaming(command, nullptr); }

namespace {

int connectLoopback(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

namespace {

// Sends `data`, then reads until the peer closes or `timeout` passes; with a
// filler, sends one filler byte whenever `every` passes without input.
std::string exchange(uint16_t port, const std::string& data, const char* filler, std::chrono::milliseconds every,
                     std::chrono::milliseconds timeout, bool* closed) {
  if (closed) *closed = false;
  int fd = connectLoopback(port);
  if (fd < 0) return {};
  for (size_t off = 0; off < data.size();) {
    ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  std::string out;
  auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    int wait = static_cast<int>(filler ? std::min(every, left).count() : left.count());
    if (poll(&p, 1, wait) <= 0) {
      if (!filler || send(fd, filler, 1, MSG_NOSIGNAL) != 1) break;
      continue;
    }
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      if (closed) *closed = true;
      break;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

}  // namespace

std::string rawTrickle(uint16_t port, const std::string& data, char filler, std::chrono::milliseconds every,
                       std::chrono::milliseconds timeout, bool* closed) {
  return exchange(port, data, &filler, every, timeout, closed);
}

std::string rawExchange(uint16_t port, const std::string& data, std::chrono::milliseconds timeout, bool* closed) {
  return exchange(port, data, nullptr, timeout, timeout, closed);
}

bool waitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() >= until) return cond();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void writeFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

uint16_t freeTcpPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

std::string sanitizerReport(const std::vector<std::string>& lines) {
  for (const std::string& line : lines) {
    if (line.find("ERROR: AddressSanitizer") != std::string::npos || line.find("ERROR: LeakSanitizer") != std::string::npos ||
        line.find("runtime error:") != std::string::npos)
      return line;
  }
  return "";
}

}  // namespace trellis::testing
