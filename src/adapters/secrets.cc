#include "adapters/secrets.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <vector>

#include "adapters/tokens.h"

namespace gp {

namespace {

constexpr std::string_view kPrefix = "gpsec1:";

std::string Base64(const unsigned char* data, size_t n) {
  std::string out(4 * ((n + 2) / 3), '\0');
  const int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(n));
  out.resize(static_cast<size_t>(len));
  return out;
}

std::optional<std::vector<unsigned char>> Unbase64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::vector<unsigned char> out(3 * text.size() / 4);
  const int len = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (len < 0) return std::nullopt;
  size_t pad = 0;
  if (!text.empty() && text.back() == '=') ++pad;
  if (text.size() > 1 && text[text.size() - 2] == '=') ++pad;
  out.resize(static_cast<size_t>(len) - pad);
  return out;
}

using Ctx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

}  // namespace

Result<SecretBox> SecretBox::LoadOrCreate(const std::string& key_path) {
  auto hex = LoadOrCreateToken(key_path);  // 256 random bits as 64 hex digits, 0600
  if (!hex) return tl::unexpected(Status(hex.error().code(), "the secrets key: " + hex.error().message()));
  if (hex->size() != 64) return Error(StatusCode::kInvalidArgument, fmt::format("{}: expected 64 hex digits (a 256-bit key)", key_path));
  SecretBox box;
  for (size_t i = 0; i < 32; ++i) {
    unsigned int byte = 0;
    if (std::sscanf(hex->c_str() + 2 * i, "%2x", &byte) != 1) {
      return Error(StatusCode::kInvalidArgument, fmt::format("{}: expected 64 hex digits (a 256-bit key)", key_path));
    }
    box.key_[i] = static_cast<unsigned char>(byte);
  }
  return box;
}

std::string SecretBox::Seal(std::string_view plain) const {
  std::vector<unsigned char> out(12 + plain.size() + 16);
  RAND_bytes(out.data(), 12);
  Ctx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  int len = 0;
  EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), out.data());
  EVP_EncryptUpdate(ctx.get(), out.data() + 12, &len, reinterpret_cast<const unsigned char*>(plain.data()), static_cast<int>(plain.size()));
  int tail = 0;
  EVP_EncryptFinal_ex(ctx.get(), out.data() + 12 + len, &tail);
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, 16, out.data() + 12 + plain.size());
  return std::string(kPrefix) + Base64(out.data(), out.size());
}

Result<std::string> SecretBox::Open(std::string_view sealed) const {
  auto bad = [] { return Error(StatusCode::kPermissionDenied, "a secret that this server's key does not open (another key?)"); };
  if (!IsSealed(sealed)) return bad();
  auto raw = Unbase64(sealed.substr(kPrefix.size()));
  if (!raw || raw->size() < 28) return bad();
  const size_t n = raw->size() - 28;
  std::string plain(n, '\0');
  Ctx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  int len = 0;
  EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), raw->data());
  EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()), &len, raw->data() + 12, static_cast<int>(n));
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, 16, raw->data() + 12 + n);
  int tail = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()) + len, &tail) != 1) return bad();
  return plain;
}

}  // namespace gp
