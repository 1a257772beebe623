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
