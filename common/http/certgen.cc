#include "common/http/certgen.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <memory>

#include "common/http/tls.h"

namespace trellis::http {
namespace {

using base::ErrorCode;
using base::makeError;

struct Deleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter>;
using CertPtr = std::unique_ptr<X509, Deleter>;
using BioPtr = std::unique_ptr<BIO, Deleter>;

std::string bioString(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

bool addExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) return false;
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

base::Result<CertPtr> newCert(EVP_PKEY* key, const std::string& cn, const std::vector<std::string>& orgs, int days) {
  CertPtr cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(days) * 86400);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  for (const std::string& o : orgs) {
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(o.c_str()), -1, -1, 0);
  }
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  return cert;
}

base::Result<PemPair> toPem(X509* cert, EVP_PKEY* key) {
  BioPtr c(BIO_new(BIO_s_mem())), k(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_X509(c.get(), cert) != 1 || PEM_write_bio_PrivateKey(k.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return makeError(ErrorCode::kInternal, "encoding PEM: {}", opensslErrors());
  }
  return PemPair{bioString(c.get()), bioString(k.get())};
}

}  // namespace

base::Result<PemPair> generateCa(const std::string& commonName, int days) {
  KeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return makeError(ErrorCode::kInternal, "generating a key: {}", opensslErrors());
  auto cert = newCert(key.get(), commonName, {}, days);
  if (!cert) return std::move(cert).error();
  X509_set_issuer_name(cert->get(), X509_get_subject_name(cert->get()));
  if (!addExt(cert->get(), cert->get(), NID_basic_constraints, "critical,CA:TRUE") ||
      !addExt(cert->get(), cert->get(), NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature") ||
      !addExt(cert->get(), cert->get(), NID_subject_key_identifier, "hash")) {
    return makeError(ErrorCode::kInternal, "CA extensions: {}", opensslErrors());
  }
  if (X509_sign(cert->get(), key.get(), EVP_sha256()) == 0) return makeError(ErrorCode::kInternal, "signing: {}", opensslErrors());
  return toPem(cert->get(), key.get());
}

base::Result<PemPair> generateSigned(const PemPair& ca, const CertRequest& req) {
  BioPtr cb(BIO_new_mem_buf(ca.certPem.data(), static_cast<int>(ca.certPem.size())));
  CertPtr caCert(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
  BioPtr kb(BIO_new_mem_buf(ca.keyPem.data(), static_cast<int>(ca.keyPem.size())));
  KeyPtr caKey(PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  if (!caCert || !caKey) return makeError(ErrorCode::kInvalidArgument, "invalid CA PEM: {}", opensslErrors());
  KeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return makeError(ErrorCode::kInternal, "generating a key: {}", opensslErrors());
  auto cert = newCert(key.get(), req.commonName, req.organizations, req.days);
  if (!cert) return std::move(cert).error();
  X509_set_issuer_name(cert->get(), X509_get_subject_name(caCert.get()));
  std::string san;
  for (const std::string& d : req.dnsNames) san += (san.empty() ? "" : ",") + std::string("DNS:") + d;
  for (const std::string& ip : req.ipAddresses) san += (san.empty() ? "" : ",") + std::string("IP:") + ip;
  std::string eku = req.server && req.client ? "serverAuth,clientAuth" : req.server ? "serverAuth" : "clientAuth";
  bool ok = addExt(cert->get(), caCert.get(), NID_basic_constraints, "critical,CA:FALSE") &&
            addExt(cert->get(), caCert.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment") &&
            addExt(cert->get(), caCert.get(), NID_ext_key_usage, eku) &&
            addExt(cert->get(), caCert.get(), NID_authority_key_identifier, "keyid:always") &&
            (san.empty() || addExt(cert->get(), caCert.get(), NID_subject_alt_name, san));
  if (!ok) return makeError(ErrorCode::kInvalidArgument, "certificate extensions: {}", opensslErrors());
  if (X509_sign(cert->get(), caKey.get(), EVP_sha256()) == 0) return makeError(ErrorCode::kInternal, "signing: {}", opensslErrors());
  return toPem(cert->get(), key.get());
}


}  // namespace trellis::http
