// Bearer tokens kept in files of mode 0600: created with 256 random bits from /dev/urandom on
// first use, read back afterwards.
#pragma once

#include <string>

#include "core/status.h"

namespace gp {

Result<std::string> LoadOrCreateToken(const std::string& path);
// Reads a token file (whitespace trimmed); the error names the path.
Result<std::string> ReadToken(const std::string& path);

}  // namespace gp
