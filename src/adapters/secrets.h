// Secrets a job is given (`submit --secret NAME=VALUE`): delivered to its environment, never
// shown back, and kept in the store sealed with AES-256-GCM (OpenSSL) under a key that lives
// apart from the store: a file of its own (DATA_DIR/secrets.key by default, mode 0600, or
// --secrets-key-file), created with 256 random bits on first use. A sealed value is
// "gpsec1:" and base64 of a 12-byte nonce, the ciphertext and the 16-byte tag.
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "core/status.h"

namespace gp {

class SecretBox {
 public:
  static Result<SecretBox> LoadOrCreate(const std::string& key_path);
  std::string Seal(std::string_view plain) const;
  // The value, or an error saying it is not one of this key's (another key, or tampered with).
  Result<std::string> Open(std::string_view sealed) const;
  static bool IsSealed(std::string_view s) { return s.starts_with("gpsec1:"); }

 private:
  std::array<unsigned char, 32> key_{};
};

}  // namespace gp
