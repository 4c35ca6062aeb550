// TLS configuration over OpenSSL, TLS 1.2+ with modern AEAD suites only.
//
// Server: a ServerCertificate is one certificate + key loaded into its own
// SSL_CTX. A TlsServerConfig holds the default certificate and an optional SNI
// resolver that picks another per server name; both may be swapped at any time
// (certificate reload without restart) — new handshakes see the new ones,
// established connections keep theirs. ALPN offers h2 and http/1.1 by default.
//
// Client: a TlsClientConfig verifies the peer against a CA bundle (or the
// system store), checks the host name or IP, and may present a client
// certificate.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/base/result.h"

struct ssl_ctx_st;
struct ssl_st;

namespace trellis::http {

struct TlsServerOptions {
  std::vector<std::string> alpn = {"h2", "http/1.1"};  // server preference order
  std::string clientCaFile;          // when set, client certificates are requested and verified
  bool requireClientCert = false;
};

class ServerCertificate {
 public:
  static base::Result<std::shared_ptr<ServerCertificate>> fromFiles(const std::string& certFile,
                                                                    const std::string& keyFile,
                                                                    const TlsServerOptions& options = {});
  static base::Result<std::shared_ptr<ServerCertificate>> fromPem(std::string_view certPem, std::string_view keyPem,
                                                                  const TlsServerOptions& options = {});
  ~ServerCertificate();
  ServerCertificate(const ServerCertificate&) = delete;
  ServerCertificate& operator=(const ServerCertificate&) = delete;

  ssl_ctx_st* native() const { return ctx_; }

 private:
  explicit ServerCertificate(ssl_ctx_st* ctx) : ctx_(ctx) {}
  ssl_ctx_st* ctx_;
};

class TlsServerConfig {
 public:
  using SniResolver = std::function<std::shared_ptr<ServerCertificate>(std::string_view serverName)>;

  explicit TlsServerConfig(std::shared_ptr<ServerCertificate> defaultCert, TlsServerOptions options = {});

  // Loads the default certificate from files and remembers them for reload().
  static base::Result<std::shared_ptr<TlsServerConfig>> fromFiles(const std::string& certFile,
                                                                  const std::string& keyFile,
                                                                  TlsServerOptions options = {});
  // Re-reads the files given to fromFiles(); on error the old certificate stays.
  base::Status reload();

  void setDefault(std::shared_ptr<ServerCertificate> cert);
  // The resolver runs during handshakes on server threads; returning nullptr keeps the default.
  void setSniResolver(SniResolver resolver);

  // A new server-side SSL for an accepted connection (owned by the caller).
  ssl_st* newSession() const;

  const TlsServerOptions& options() const { return options_; }

 private:
  static int onServerName(ssl_st* ssl, int* alert, void* arg);
  friend class ServerCertificate;

  TlsServerOptions options_;
  std::string certFile_, keyFile_;
  mutable std::mutex mu_;
  std::shared_ptr<ServerCertificate> default_;
  std::shared_ptr<SniResolver> resolver_;
};

struct TlsClientOptions {
  std::string caFile;             // PEM bundle; empty: the system store
  std::string caPem;              // PEM data, used instead of caFile when set
  std::string certFile, keyFile;  // client certificate (optional)
  std::string certPem, keyPem;    // the same as PEM data
  bool insecureSkipVerify = false;
  std::vector<std::string> alpn = {"h2", "http/1.1"};
};

class TlsClientConfig {
 public:
  static base::Result<std::shared_ptr<TlsClientConfig>> create(const TlsClientOptions& options);
  ~TlsClientConfig();
  TlsClientConfig(const TlsClientConfig&) = delete;
  TlsClientConfig& operator=(const TlsClientConfig&) = delete;

  // A client-side SSL that sends SNI `host` (unless it is an IP) and verifies it.
  ssl_st* newSession(const std::string& host) const;

 private:
  explicit TlsClientConfig(ssl_ctx_st* ctx, bool verify) : ctx_(ctx), verify_(verify) {}
  ssl_ctx_st* ctx_;
  bool verify_;
};

// OpenSSL's queued errors as one line (and clears the queue).
std::string opensslErrors();

}  // namespace trellis::http
