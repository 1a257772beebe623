#include "core/delimited.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

namespace gp {

bool DelimitedFile::Next(std::vector<std::string_view>& fields) {
  while (pos_ < text_.size()) {
    size_t end = text_.find('\n', pos_);
    if (end == std::string::npos) end = text_.size();
    std::string_view rec(text_.data() + pos_, end - pos_);
    pos_ = end + 1;
    ++line_;
    if (!rec.empty() && rec.back() == '\r') rec.remove_suffix(1);
    if (rec.find_first_not_of(" \t") == std::string_view::npos) continue;
    fields.clear();
    size_t i = 0;
    while (true) {
      if (i < rec.size() && rec[i] == '"') {
        const size_t close = rec.find('"', i + 1);
        const size_t stop = close == std::string_view::npos ? rec.size() : close;
        fields.push_back(rec.substr(i + 1, stop - i - 1));
        i = rec.find(separator_, stop);
      } else {
        const size_t sep = rec.find(separator_, i);
        fields.push_back(rec.substr(i, sep == std::string_view::npos ? std::string_view::npos : sep - i));
        i = sep;
      }
      if (i == std::string_view::npos) break;
      ++i;
    }
    return true;
  }
  return false;
}

Status DelimitedFile::ErrorAt(int line, const std::string& message) const {
  return Status(StatusCode::kParse, fmt::format("{}:{}: {}", path_, line, message));
}

Header::Header(const std::vector<std::string_view>& names) {
  for (std::string_view n : names) {
    while (!n.empty() && (n.front() == ' ' || n.front() == '\xef' || n.front() == '\xbb' || n.front() == '\xbf')) {
      n.remove_prefix(1);  // spaces and a UTF-8 byte-order mark
    }
    names_.emplace_back(n);
  }
}

bool Header::Has(std::string_view name) const {
  for (const std::string& n : names_) {
    if (n == name) return true;
  }
  return false;
}

Result<size_t> Header::Require(const DelimitedFile& f, std::string_view name) const {
  for (size_t i = 0; i < names_.size(); ++i) {
    if (names_[i] == name) return i;
  }
  return tl::unexpected(f.ErrorAt(1, fmt::format("missing column '{}'", name)));
}

Result<int64_t> FieldInt(std::string_view name, std::string_view text) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec == std::errc() && p == text.data() + text.size()) return v;
  // Accept "3.0" as 3, as some traces write integers with a decimal point.
  double d = 0;
  auto [p2, ec2] = std::from_chars(text.data(), text.data() + text.size(), d);
  if (ec2 == std::errc() && p2 == text.data() + text.size() && std::isfinite(d) && d == std::floor(d) &&
      std::fabs(d) < 9e15) {
    return static_cast<int64_t>(d);
  }
  return InvalidArgument(fmt::format("{}: '{}' is not a whole number", name, text));
}

Result<double> FieldNumber(std::string_view name, std::string_view text) {
  double v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec == std::errc() && p == text.data() + text.size() && std::isfinite(v)) return v;
  return InvalidArgument(fmt::format("{}: '{}' is not a number", name, text));
}

}  // namespace gp
