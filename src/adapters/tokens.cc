#include "adapters/tokens.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <fstream>

#include <openssl/evp.h>

namespace gp {

Result<std::string> ReadToken(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error(StatusCode::kNotFound, fmt::format("{}: cannot read token", path));
  std::string t;
  std::getline(in, t);
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  if (t.empty()) return Error(StatusCode::kInvalidArgument, fmt::format("{}: empty token", path));
  return t;
}

Result<std::string> NewSecret() {
  std::array<unsigned char, 32> bytes{};
  const int rnd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (rnd < 0 || read(rnd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
    if (rnd >= 0) close(rnd);
    return Error(StatusCode::kInternal, "cannot read /dev/urandom for a token");
  }
  close(rnd);
  std::string token;
  for (unsigned char b : bytes) token += fmt::format("{:02x}", b);
  return token;
}

std::string Sha256Hex(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(text.data(), text.size(), digest, &n, EVP_sha256(), nullptr);
  std::string out;
  for (unsigned int i = 0; i < n; ++i) out += fmt::format("{:02x}", digest[i]);
  return out;
}

Status StoreSecret(const std::string& path, const std::string& secret) {
  // Aside under a name of this process's own: several processes may store the same secret at once.
  const std::string tmp = fmt::format("{}.{}.tmp", path, getpid());
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status(StatusCode::kFailedPrecondition, fmt::format("{}: cannot create: {}", tmp, std::strerror(errno)));
  fchmod(fd, 0600);
  const std::string line = secret + "\n";
  const bool ok = write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && fsync(fd) == 0;
  close(fd);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status(StatusCode::kInternal, fmt::format("{}: cannot write: {}", path, std::strerror(errno)));
  }
  return Status::Ok();
}

Result<std::string> LoadOrCreateToken(const std::string& path) {
  if (access(path.c_str(), F_OK) == 0) return ReadToken(path);
  auto secret = NewSecret();
  if (!secret) return secret;
  const std::string& token = *secret;
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Error(StatusCode::kFailedPrecondition, fmt::format("{}: cannot create: {}", path, std::strerror(errno)));
  const std::string line = token + "\n";
  const bool ok = write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && fsync(fd) == 0;
  close(fd);
  if (!ok) return Error(StatusCode::kInternal, fmt::format("{}: cannot write the token", path));
  return token;
}

bool SameSecret(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = static_cast<unsigned char>(diff | (a[i] ^ b[i]));
  return diff == 0;
}

JoinToken ParseJoinToken(std::string_view token) {
  const size_t dot = token.find(".sha256:");
  if (dot == std::string_view::npos) return JoinToken{.secret = std::string(token)};
  return JoinToken{.secret = std::string(token.substr(0, dot)), .ca_hash = std::string(token.substr(dot + 1))};
}

std::string FormatJoinToken(const JoinToken& t) { return t.ca_hash.empty() ? t.secret : t.secret + "." + t.ca_hash; }

}  // namespace gp
