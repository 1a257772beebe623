#include "adapters/pki.h"

#include <fmt/format.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <ctime>
#include <memory>

namespace gp {

namespace {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using Key = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;

Status OpenSslError(std::string_view what) {
  const unsigned long e = ERR_get_error();
  char buf[256] = {};
  if (e != 0) ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return Status(StatusCode::kInternal, fmt::format("{}: {}", what, e != 0 ? buf : "OpenSSL said nothing"));
}

Result<Cert> ReadCert(std::string_view pem) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Cert c(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!c) return tl::unexpected(OpenSslError("not a PEM certificate"));
  return c;
}

Result<Key> ReadKey(std::string_view pem) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Key k(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!k) return tl::unexpected(OpenSslError("not a PEM private key"));
  return k;
}

std::string CertPem(X509* c) {
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), c);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string KeyPem(EVP_PKEY* k) {
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), k, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

Status AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) return OpenSslError(fmt::format("extension {}={}", OBJ_nid2sn(nid), value));
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return Status::Ok();
}

// A certificate for `key`, not yet signed, valid `seconds` from now (and a little before, for
// clocks that differ: five minutes, or a tenth of a short certificate's life).
Result<Cert> NewCertFor(EVP_PKEY* key, std::string_view common_name, int64_t seconds) {
  if (seconds < 1 || seconds > 3650LL * 86400) {
    return Error(StatusCode::kInvalidArgument, fmt::format("a certificate for {} s: expected 1 s to 3650 days", seconds));
  }
  Cert cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof(serial));
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -static_cast<long>(std::min<int64_t>(300, seconds / 10)));
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(seconds));
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("gpupool"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(std::string(common_name).c_str()), -1,
                             -1, 0);
  return cert;
}

// A fresh key and a certificate for it, not yet signed.
Result<std::pair<Key, Cert>> NewCert(std::string_view common_name, int days) {
  Key key(EVP_EC_gen("P-256"));
  if (!key) return tl::unexpected(OpenSslError("an ECDSA P-256 key"));
  auto cert = NewCertFor(key.get(), common_name, static_cast<int64_t>(days) * 86400);
  if (!cert) return tl::unexpected(cert.error());
  return std::pair{std::move(key), std::move(*cert)};
}

int64_t TimeMs(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

// The extensions of a certificate `ca_cert` issues for a server or a client.
Status AddLeafExtensions(X509* cert, X509* ca_cert, const std::vector<std::string>& names, CertUse use) {
  std::string san;
  for (const std::string& n : names) {
    const bool ip = !n.empty() && n.find_first_not_of("0123456789.:abcdefABCDEF") == std::string::npos && n.find_first_of(".:") != std::string::npos;
    san += (san.empty() ? "" : ",") + std::string(ip ? "IP:" : "DNS:") + n;
  }
  std::vector<std::pair<int, std::string>> exts = {
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_key_usage, "critical,digitalSignature"},
      {NID_ext_key_usage, use == CertUse::kServer ? "serverAuth" : "clientAuth"},
      {NID_authority_key_identifier, "keyid:always"}};
  if (!san.empty()) exts.emplace_back(NID_subject_alt_name, san);
  for (const auto& [nid, value] : exts) {
    if (Status st = AddExt(cert, ca_cert, nid, value); !st.ok()) return st;
  }
  return Status::Ok();
}

}  // namespace

Result<CertKey> MakeCa(std::string_view common_name, int days) {
  auto made = NewCert(common_name, days);
  if (!made) return tl::unexpected(made.error());
  auto& [key, cert] = *made;
  X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
  for (const auto& [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                                   std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
                                   std::pair{NID_subject_key_identifier, "hash"}}) {
    if (Status s = AddExt(cert.get(), cert.get(), nid, value); !s.ok()) return tl::unexpected(s);
  }
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) return tl::unexpected(OpenSslError("signing the CA certificate"));
  return CertKey{.cert_pem = CertPem(cert.get()), .key_pem = KeyPem(key.get())};
}

Result<CertKey> IssueCert(const CertKey& ca, std::string_view common_name, const std::vector<std::string>& names, CertUse use,
                          int days) {
  auto ca_cert = ReadCert(ca.cert_pem);
  if (!ca_cert) return tl::unexpected(ca_cert.error());
  auto ca_key = ReadKey(ca.key_pem);
  if (!ca_key) return tl::unexpected(ca_key.error());
  auto made = NewCert(common_name, days);
  if (!made) return tl::unexpected(made.error());
  auto& [key, cert] = *made;
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert->get()));
  if (Status st = AddLeafExtensions(cert.get(), ca_cert->get(), names, use); !st.ok()) return tl::unexpected(st);
  if (X509_sign(cert.get(), ca_key->get(), EVP_sha256()) == 0) return tl::unexpected(OpenSslError("signing the certificate"));
  return CertKey{.cert_pem = CertPem(cert.get()), .key_pem = KeyPem(key.get())};
}

Result<std::string> PublicKeyHash(std::string_view cert_pem) {
  auto cert = ReadCert(cert_pem);
  if (!cert) return tl::unexpected(cert.error());
  unsigned char* der = nullptr;
  const int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert->get()), &der);
  if (n <= 0) return tl::unexpected(OpenSslError("the certificate's public key"));
  unsigned char md[32];
  unsigned int md_len = 0;
  EVP_Digest(der, static_cast<size_t>(n), md, &md_len, EVP_sha256(), nullptr);
  OPENSSL_free(der);
  std::string out = "sha256:";
  for (unsigned int i = 0; i < md_len; ++i) out += fmt::format("{:02x}", md[i]);
  return out;
}

Status VerifyCert(std::string_view ca_pem, std::string_view cert_pem) {
  auto ca = ReadCert(ca_pem);
  if (!ca) return ca.error();
  auto cert = ReadCert(cert_pem);
  if (!cert) return cert.error();
  std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>> store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), ca->get());
  std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>> ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), cert->get(), nullptr);
  if (X509_verify_cert(ctx.get()) != 1) {
    return Status(StatusCode::kPermissionDenied,
                  fmt::format("certificate refused: {}", X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()))));
  }
  return Status::Ok();
}

Result<int64_t> NotAfterMs(std::string_view cert_pem) {
  auto info = ReadCertInfo(cert_pem);
  if (!info) return tl::unexpected(info.error());
  return info->not_after_ms;
}

Result<CertInfo> ReadCertInfo(std::string_view cert_pem) {
  auto cert = ReadCert(cert_pem);
  if (!cert) return tl::unexpected(cert.error());
  CertInfo out;
  char cn[256] = {};
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert->get()), NID_commonName, cn, sizeof(cn)) > 0) out.common_name = cn;
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(cert->get()), nullptr);
  if (bn) {
    char* hex = BN_bn2hex(bn);
    out.serial = hex;
    OPENSSL_free(hex);
    BN_free(bn);
  }
  out.not_before_ms = TimeMs(X509_get0_notBefore(cert->get()));
  out.not_after_ms = TimeMs(X509_get0_notAfter(cert->get()));
  return out;
}

Result<CsrKey> MakeCsr(std::string_view common_name) {
  Key key(EVP_EC_gen("P-256"));
  if (!key) return tl::unexpected(OpenSslError("an ECDSA P-256 key"));
  std::unique_ptr<X509_REQ, Deleter<X509_REQ, X509_REQ_free>> req(X509_REQ_new());
  X509_REQ_set_version(req.get(), 0);
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(std::string(common_name).c_str()), -1,
                             -1, 0);
  X509_REQ_set_pubkey(req.get(), key.get());
  if (X509_REQ_sign(req.get(), key.get(), EVP_sha256()) == 0) return tl::unexpected(OpenSslError("signing the request"));
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(bio.get(), req.get());
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return CsrKey{.csr_pem = std::string(data, static_cast<size_t>(n)), .key_pem = KeyPem(key.get())};
}

Result<std::string> SignClientCsr(const CertKey& ca, std::string_view csr_pem, std::string_view common_name, int64_t seconds) {
  auto ca_cert = ReadCert(ca.cert_pem);
  if (!ca_cert) return tl::unexpected(ca_cert.error());
  auto ca_key = ReadKey(ca.key_pem);
  if (!ca_key) return tl::unexpected(ca_key.error());
  Bio bio(BIO_new_mem_buf(csr_pem.data(), static_cast<int>(csr_pem.size())));
  std::unique_ptr<X509_REQ, Deleter<X509_REQ, X509_REQ_free>> req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) {
    ERR_clear_error();
    return Error(StatusCode::kInvalidArgument, "csr: not a PEM certificate signing request");
  }
  Key pub(X509_REQ_get_pubkey(req.get()));
  if (!pub || X509_REQ_verify(req.get(), pub.get()) != 1) {
    ERR_clear_error();
    return Error(StatusCode::kInvalidArgument, "csr: its signature does not match its key");
  }
  auto cert = NewCertFor(pub.get(), common_name, seconds);
  if (!cert) return tl::unexpected(cert.error());
  X509_set_issuer_name(cert->get(), X509_get_subject_name(ca_cert->get()));
  if (Status st = AddLeafExtensions(cert->get(), ca_cert->get(), {}, CertUse::kClient); !st.ok()) return tl::unexpected(st);
  if (X509_sign(cert->get(), ca_key->get(), EVP_sha256()) == 0) return tl::unexpected(OpenSslError("signing the certificate"));
  return CertPem(cert->get());
}

}  // namespace gp
