// The pool's own certificate authority (OpenSSL): the server makes a CA on first start and
// issues itself a server certificate and each node a client certificate at registration, so
// that every connection can be TLS with no set-up on one machine (docs/live-pool.md). Keys are
// ECDSA P-256; certificates X.509 v3 with subjectAltNames. The CA's hash, as kubeadm's
// discovery-token-ca-cert-hash ("sha256:" and the hex SHA-256 of the CA's
// SubjectPublicKeyInfo in DER), rides in the join token, so that a joining agent can check the
// server before it sends anything.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace gp {

struct CertKey {
  std::string cert_pem;
  std::string key_pem;
};

// A self-signed CA certificate (basicConstraints CA:TRUE, keyCertSign) valid `days` from now.
Result<CertKey> MakeCa(std::string_view common_name, int days);

// A certificate signed by `ca`: for a server (serverAuth; `names` as its subjectAltNames, IP
// addresses or DNS names) or a client (clientAuth; the node's name as its common name).
enum class CertUse { kServer, kClient };
Result<CertKey> IssueCert(const CertKey& ca, std::string_view common_name, const std::vector<std::string>& names, CertUse use,
                          int days);

// "sha256:" and 64 hex digits: the hash of the certificate's public key (SubjectPublicKeyInfo).
Result<std::string> PublicKeyHash(std::string_view cert_pem);

// Whether `cert_pem` was signed by `ca_pem` and is valid now (and, with `use`, for that use);
// the error says why not.
Status VerifyCert(std::string_view ca_pem, std::string_view cert_pem);

// When the certificate stops being valid, in ms since the epoch.
Result<int64_t> NotAfterMs(std::string_view cert_pem);

}  // namespace gp

namespace gp {

// What a certificate says of itself.
struct CertInfo {
  std::string common_name;
  std::string serial;  // hex, as `openssl x509 -serial` prints it
  int64_t not_before_ms = 0;
  int64_t not_after_ms = 0;
};
Result<CertInfo> ReadCertInfo(std::string_view cert_pem);

// A fresh key and a certificate signing request for it (PKCS#10), as an agent makes one: the
// key never leaves the node.
struct CsrKey {
  std::string csr_pem;
  std::string key_pem;
};
Result<CsrKey> MakeCsr(std::string_view common_name);

// A client certificate (clientAuth) for the CSR's key, signed by `ca` (as Kubernetes' CSR
// signer does for kubelets): the CSR's own signature must hold (its sender has the key); its
// subject is not taken, the certificate names `common_name`. Valid for `seconds` from now.
Result<std::string> SignClientCsr(const CertKey& ca, std::string_view csr_pem, std::string_view common_name, int64_t seconds);

}  // namespace gp
