#include "common/http/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cstring>

namespace trellis::http {
namespace {

using base::ErrorCode;
using base::makeError;

constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

int configIndex() {
  static int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}

// ALPN protocols in wire format, kept per SSL_CTX for the select callback.
int alpnIndex() {
  static int idx = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr,
                                            [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
                                              delete static_cast<std::string*>(ptr);
                                            });
  return idx;
}

std::string alpnWire(const std::vector<std::string>& protos) {
  std::string out;
  for (const std::string& p : protos) {
    out.push_back(static_cast<char>(p.size()));
    out += p;
  }
  return out;
}

int selectAlpn(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned int inlen,
               void*) {
  auto* prefs = static_cast<std::string*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), alpnIndex()));
  if (!prefs) return SSL_TLSEXT_ERR_NOACK;
  // Server preference: the first of ours that the client offers.
  for (size_t i = 0; i < prefs->size();) {
    unsigned char len = static_cast<unsigned char>((*prefs)[i]);
    const unsigned char* ours = reinterpret_cast<const unsigned char*>(prefs->data() + i + 1);
    for (unsigned int j = 0; j < inlen;) {
      unsigned char l = in[j];
      if (j + 1 + l > inlen) break;
      if (l == len && std::memcmp(in + j + 1, ours, len) == 0) {
        *out = in + j + 1;
        *outlen = l;
        return SSL_TLSEXT_ERR_OK;
      }
      j += 1 + l;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

void applyModernDefaults(SSL_CTX* ctx) {
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_cipher_list(ctx, kTls12Ciphers);
  // TLS 1.3: AES-128-GCM first (as strong in practice, cheaper per record than AES-256).
  SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
}

base::Result<SSL_CTX*> newServerCtx(const TlsServerOptions& options) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return makeError(ErrorCode::kInternal, "SSL_CTX_new: {}", opensslErrors());
  applyModernDefaults(ctx);
  SSL_CTX_set_ex_data(ctx, alpnIndex(), new std::string(alpnWire(options.alpn)));
  SSL_CTX_set_alpn_select_cb(ctx, selectAlpn, nullptr);
  SSL_CTX_set_session_id_context(ctx, reinterpret_cast<const unsigned char*>("trellis"), 7);
  if (!options.clientCaFile.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, options.clientCaFile.c_str(), nullptr) != 1) {
      std::string err = opensslErrors();
      SSL_CTX_free(ctx);
      return makeError(ErrorCode::kInvalidArgument, "loading client CA {}: {}", options.clientCaFile, err);
    }
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(options.clientCaFile.c_str());
    if (names) SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (options.requireClientCert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), nullptr);
  }
  return ctx;
}

}  // namespace

std::string opensslErrors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

base::Result<std::shared_ptr<ServerCertificate>> ServerCertificate::fromFiles(const std::string& certFile,
                                                                              const std::string& keyFile,
                                                                              const TlsServerOptions& options) {
  auto ctx = newServerCtx(options);
  if (!ctx) return std::move(ctx).error();
  std::shared_ptr<ServerCertificate> cert(new ServerCertificate(*ctx));
  if (SSL_CTX_use_certificate_chain_file(*ctx, certFile.c_str()) != 1) {
    return makeError(ErrorCode::kInvalidArgument, "loading certificate {}: {}", certFile, opensslErrors());
  }
  if (SSL_CTX_use_PrivateKey_file(*ctx, keyFile.c_str(), SSL_FILETYPE_PEM) != 1) {
    return makeError(ErrorCode::kInvalidArgument, "loading private key {}: {}", keyFile, opensslErrors());
  }
  if (SSL_CTX_check_private_key(*ctx) != 1) {
    return makeError(ErrorCode::kInvalidArgument, "private key {} does not match certificate {}", keyFile, certFile);
  }
  SSL_CTX_set_tlsext_servername_callback(*ctx, &TlsServerConfig::onServerName);
  return cert;
}

base::Result<std::shared_ptr<ServerCertificate>> ServerCertificate::fromPem(std::string_view certPem,
                                                                            std::string_view keyPem,
                                                                            const TlsServerOptions& options) {
  auto ctx = newServerCtx(options);
  if (!ctx) return std::move(ctx).error();
  std::shared_ptr<ServerCertificate> cert(new ServerCertificate(*ctx));
  BIO* bio = BIO_new_mem_buf(certPem.data(), static_cast<int>(certPem.size()));
  X509* leaf = PEM_read_bio_X509_AUX(bio, nullptr, nullptr, nullptr);
  bool ok = leaf && SSL_CTX_use_certificate(*ctx, leaf) == 1;
  X509_free(leaf);
  while (ok) {  // the rest of the chain
    X509* ca = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    if (!ca) break;
    if (SSL_CTX_add0_chain_cert(*ctx, ca) != 1) {
      X509_free(ca);
      ok = false;
    }
  }
  ERR_clear_error();  // the end of the chain reads as an error
  BIO_free(bio);
  if (!ok) return makeError(ErrorCode::kInvalidArgument, "invalid certificate PEM");
  bio = BIO_new_mem_buf(keyPem.data(), static_cast<int>(keyPem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  ok = key && SSL_CTX_use_PrivateKey(*ctx, key) == 1;
  EVP_PKEY_free(key);
  if (!ok) return makeError(ErrorCode::kInvalidArgument, "invalid private key PEM: {}", opensslErrors());
  if (SSL_CTX_check_private_key(*ctx) != 1) {
    return makeError(ErrorCode::kInvalidArgument, "private key does not match certificate");
  }
  SSL_CTX_set_tlsext_servername_callback(*ctx, &TlsServerConfig::onServerName);
  return cert;
}

ServerCertificate::~ServerCertificate() { SSL_CTX_free(ctx_); }

TlsServerConfig::TlsServerConfig(std::shared_ptr<ServerCertificate> defaultCert, TlsServerOptions options)
    : options_(std::move(options)), default_(std::move(defaultCert)) {}

base::Result<std::shared_ptr<TlsServerConfig>> TlsServerConfig::fromFiles(const std::string& certFile,
                                                                          const std::string& keyFile,
                                                                          TlsServerOptions options) {
  auto cert = ServerCertificate::fromFiles(certFile, keyFile, options);
  if (!cert) return std::move(cert).error();
  auto config = std::make_shared<TlsServerConfig>(std::move(*cert), std::move(options));
  config->certFile_ = certFile;
  config->keyFile_ = keyFile;
  return config;
}

base::Status TlsServerConfig::reload() {
  if (certFile_.empty()) return makeError(ErrorCode::kFailedPrecondition, "no certificate files to reload");
  auto cert = ServerCertificate::fromFiles(certFile_, keyFile_, options_);
  if (!cert) return std::move(cert).error().wrap("reloading certificate");
  setDefault(std::move(*cert));
  return {};
}

void TlsServerConfig::setDefault(std::shared_ptr<ServerCertificate> cert) {
  std::lock_guard lock(mu_);
  default_ = std::move(cert);
}

void TlsServerConfig::setSniResolver(SniResolver resolver) {
  std::lock_guard lock(mu_);
  resolver_ = resolver ? std::make_shared<SniResolver>(std::move(resolver)) : nullptr;
}

ssl_st* TlsServerConfig::newSession() const {
  std::shared_ptr<ServerCertificate> cert;
  {
    std::lock_guard lock(mu_);
    cert = default_;
  }
  SSL* ssl = SSL_new(cert->native());  // holds its own reference to the SSL_CTX
  if (ssl) SSL_set_ex_data(ssl, configIndex(), const_cast<TlsServerConfig*>(this));
  return ssl;
}

int TlsServerConfig::onServerName(SSL* ssl, int*, void*) {
  auto* self = static_cast<TlsServerConfig*>(SSL_get_ex_data(ssl, configIndex()));
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!self || !name) return SSL_TLSEXT_ERR_OK;
  std::shared_ptr<SniResolver> resolver;
  {
    std::lock_guard lock(self->mu_);
    resolver = self->resolver_;
  }
  if (!resolver) return SSL_TLSEXT_ERR_OK;
  std::shared_ptr<ServerCertificate> cert = (*resolver)(name);
  if (cert) SSL_set_SSL_CTX(ssl, cert->native());  // takes a reference
  return SSL_TLSEXT_ERR_OK;
}

base::Result<std::shared_ptr<TlsClientConfig>> TlsClientConfig::create(const TlsClientOptions& options) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return makeError(ErrorCode::kInternal, "SSL_CTX_new: {}", opensslErrors());
  std::shared_ptr<TlsClientConfig> config(new TlsClientConfig(ctx, !options.insecureSkipVerify));
  applyModernDefaults(ctx);
  std::string wire = alpnWire(options.alpn);
  SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(wire.data()), static_cast<unsigned>(wire.size()));
  if (!options.insecureSkipVerify) {
    if (!options.caPem.empty()) {
      BIO* bio = BIO_new_mem_buf(options.caPem.data(), static_cast<int>(options.caPem.size()));
      X509_STORE* store = SSL_CTX_get_cert_store(ctx);
      int added = 0;
      while (X509* ca = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
        added += X509_STORE_add_cert(store, ca) == 1;
        X509_free(ca);
      }
      ERR_clear_error();
      BIO_free(bio);
      if (!added) return makeError(ErrorCode::kInvalidArgument, "no certificate in the CA data");
    } else if (!options.caFile.empty()) {
      if (SSL_CTX_load_verify_locations(ctx, options.caFile.c_str(), nullptr) != 1) {
        return makeError(ErrorCode::kInvalidArgument, "loading CA {}: {}", options.caFile, opensslErrors());
      }
    } else {
      SSL_CTX_set_default_verify_paths(ctx);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  }
  if (!options.certPem.empty() || !options.certFile.empty()) {
    bool ok;
    if (!options.certPem.empty()) {
      BIO* bio = BIO_new_mem_buf(options.certPem.data(), static_cast<int>(options.certPem.size()));
      X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
      BIO_free(bio);
      ok = cert && SSL_CTX_use_certificate(ctx, cert) == 1;
      X509_free(cert);
      bio = BIO_new_mem_buf(options.keyPem.data(), static_cast<int>(options.keyPem.size()));
      EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
      BIO_free(bio);
      ok = ok && key && SSL_CTX_use_PrivateKey(ctx, key) == 1;
      EVP_PKEY_free(key);
    } else {
      ok = SSL_CTX_use_certificate_chain_file(ctx, options.certFile.c_str()) == 1 &&
           SSL_CTX_use_PrivateKey_file(ctx, options.keyFile.c_str(), SSL_FILETYPE_PEM) == 1;
    }
    if (!ok || SSL_CTX_check_private_key(ctx) != 1) {
      return makeError(ErrorCode::kInvalidArgument, "loading client certificate: {}", opensslErrors());
    }
  }
  return config;
}

TlsClientConfig::~TlsClientConfig() { SSL_CTX_free(ctx_); }

ssl_st* TlsClientConfig::newSession(const std::string& host) const {
  SSL* ssl = SSL_new(ctx_);
  if (!ssl) return nullptr;
  unsigned char addr[16];
  bool isIp = inet_pton(AF_INET, host.c_str(), addr) == 1 || inet_pton(AF_INET6, host.c_str(), addr) == 1;
  if (!isIp) SSL_set_tlsext_host_name(ssl, host.c_str());
  if (verify_) {
    if (isIp) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str());
    } else {
      SSL_set1_host(ssl, host.c_str());
    }
  }
  return ssl;
}

}  // namespace trellis::http
