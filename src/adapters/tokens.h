// Bearer tokens kept in files of mode 0600: created with 256 random bits from /dev/urandom on
// first use, read back afterwards.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace gp {

Result<std::string> LoadOrCreateToken(const std::string& path);
// 256 random bits from /dev/urandom as 64 hex digits (a token, a node's credential).
Result<std::string> NewSecret();
// SHA-256 of `text` as 64 hex digits (OpenSSL): what the server keeps of a node's credential.
std::string Sha256Hex(std::string_view text);
// Compares two secrets without leaking the position of the first difference through timing.
bool SameSecret(std::string_view a, std::string_view b);
// Writes `secret` to `path` with mode 0600 (written aside, then renamed over it).
Status StoreSecret(const std::string& path, const std::string& secret);
// Reads a token file (whitespace trimmed); the error names the path.
Result<std::string> ReadToken(const std::string& path);

// A join token as agents are given it: the secret, then optionally '.' and the hash of the CA
// that vouches for the server ("SECRET.sha256:HEX": kubeadm's token and
// discovery-token-ca-cert-hash in one string), so that an agent can check the server before it
// sends the secret.
struct JoinToken {
  std::string secret;
  std::string ca_hash;  // "sha256:..." or empty
};
JoinToken ParseJoinToken(std::string_view token);
std::string FormatJoinToken(const JoinToken& t);

}  // namespace gp
