#include "core/units.h"

#include <fmt/format.h>

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <span>
#include <utility>
#include <vector>
#include <algorithm>

namespace gp {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Splits "1.5GiB" into 1.5 and "GiB".
Result<std::pair<double, std::string_view>> SplitNumber(std::string_view text) {
  text = Trim(text);
  double v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr == text.data()) {
    return InvalidArgument(fmt::format("'{}' does not start with a number", text));
  }
  if (!std::isfinite(v) || v < 0) {
    return InvalidArgument(fmt::format("'{}' must be a finite, non-negative number", text));
  }
  std::string_view rest = Trim(text.substr(static_cast<size_t>(ptr - text.data())));
  return std::pair{v, rest};
}

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

struct Suffix {
  std::string_view name;
  double factor;
};

Result<double> Scaled(std::string_view text, std::span<const Suffix> suffixes,
                      std::string_view what) {
  auto split = SplitNumber(text);
  if (!split) return tl::unexpected(split.error());
  auto [v, unit] = *split;
  for (const Suffix& s : suffixes) {
    if (s.name == unit) return v * s.factor;
  }
  // No exact match: accept another capitalisation ("gbps", "gib"); no table has two suffixes
  // that differ only in case.
  for (const Suffix& s : suffixes) {
    if (IEquals(s.name, unit)) return v * s.factor;
  }
  std::string names;
  for (const Suffix& s : suffixes) {
    if (!s.name.empty()) names += (names.empty() ? "" : ", ") + std::string(s.name);
  }
  return InvalidArgument(fmt::format("'{}' is not a {}; expected a number with one of: {}", text,
                                     what, names));
}

constexpr std::array kByteSuffixes{
    Suffix{"", 1},           Suffix{"B", 1},          Suffix{"KB", 1e3},
    Suffix{"MB", 1e6},       Suffix{"GB", 1e9},       Suffix{"TB", 1e12},
    Suffix{"PB", 1e15},      Suffix{"KiB", 1024.0},   Suffix{"MiB", 1048576.0},
    Suffix{"GiB", 1073741824.0}, Suffix{"TiB", 1099511627776.0},
    Suffix{"PiB", 1125899906842624.0}};
constexpr std::array kBandwidthSuffixes{
    Suffix{"bps", 1},         Suffix{"Kbps", 1e3},     Suffix{"Mbps", 1e6},
    Suffix{"Gbps", 1e9},      Suffix{"Tbps", 1e12},    Suffix{"bit/s", 1},
    Suffix{"Kbit/s", 1e3},    Suffix{"Mbit/s", 1e6},   Suffix{"Gbit/s", 1e9},
    Suffix{"Tbit/s", 1e12}};
constexpr std::array kDurationSuffixes{Suffix{"ms", 1},        Suffix{"s", 1e3},
                                       Suffix{"m", 60e3},      Suffix{"min", 60e3},
                                       Suffix{"h", 3600e3},    Suffix{"d", 86400e3}};

}  // namespace

Result<Bytes> ParseBytes(std::string_view text) {
  auto v = Scaled(text, kByteSuffixes, "size");
  if (!v) return tl::unexpected(v.error());
  if (*v > 9.0e18) return InvalidArgument(fmt::format("'{}' is too large", text));
  return Bytes{static_cast<int64_t>(std::llround(*v))};
}

Result<MiB> ParseMiB(std::string_view text) {
  auto b = ParseBytes(text);
  if (!b) return tl::unexpected(b.error());
  return MiB{b->value() / 1048576};
}

Result<BitsPerSecond> ParseBandwidth(std::string_view text) {
  auto v = Scaled(text, kBandwidthSuffixes, "bandwidth");
  if (!v) return tl::unexpected(v.error());
  if (*v > 9.0e18) return InvalidArgument(fmt::format("'{}' is too large", text));
  return BitsPerSecond{static_cast<int64_t>(std::llround(*v))};
}

Result<Millis> ParseDuration(std::string_view text) {
  auto v = Scaled(text, kDurationSuffixes, "duration");
  if (!v) return tl::unexpected(v.error());
  if (*v > 9.0e15) return InvalidArgument(fmt::format("'{}' is too large", text));
  return Millis{static_cast<int64_t>(std::llround(*v))};
}

Result<Millis> ParseTimeLimit(std::string_view text) {
  text = Trim(text);
  auto bad = [&] {
    return InvalidArgument(fmt::format("'{}': expected a time limit as Slurm's --time (MM, MM:SS, HH:MM:SS, D-HH, "
                                       "D-HH:MM, D-HH:MM:SS) or a duration (2h, 90m)",
                                       text.substr(0, 40)));
  };
  if (text.empty()) return bad();
  const bool slurm = std::all_of(text.begin(), text.end(), [](char c) { return (c >= '0' && c <= '9') || c == ':' || c == '-'; });
  if (!slurm) return ParseDuration(text);
  int64_t days = 0;
  std::string_view rest = text;
  const size_t dash = text.find('-');
  auto number = [](std::string_view t, int64_t& out) {
    if (t.empty() || t.size() > 9 || !std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
    const auto r = std::from_chars(t.data(), t.data() + t.size(), out);
    return r.ec == std::errc() && r.ptr == t.data() + t.size();
  };
  if (dash != std::string_view::npos) {
    if (!number(text.substr(0, dash), days)) return bad();
    rest = text.substr(dash + 1);
  }
  std::vector<int64_t> parts;
  size_t start = 0;
  while (start <= rest.size()) {
    const size_t colon = std::min(rest.find(':', start), rest.size());
    int64_t v = 0;
    if (!number(rest.substr(start, colon - start), v)) return bad();
    parts.push_back(v);
    start = colon + 1;
  }
  if (parts.size() > 3) return bad();
  int64_t seconds = 0;
  if (dash != std::string_view::npos) {
    // D-HH, D-HH:MM, D-HH:MM:SS
    seconds = parts[0] * 3600 + (parts.size() > 1 ? parts[1] * 60 : 0) + (parts.size() > 2 ? parts[2] : 0);
  } else if (parts.size() == 1) {
    seconds = parts[0] * 60;  // MM
  } else if (parts.size() == 2) {
    seconds = parts[0] * 60 + parts[1];  // MM:SS
  } else {
    seconds = parts[0] * 3600 + parts[1] * 60 + parts[2];  // HH:MM:SS
  }
  return Millis{(days * 86'400 + seconds) * 1000};
}

Result<double> ParseNumber(std::string_view text) {
  auto split = SplitNumber(text);
  if (!split) return tl::unexpected(split.error());
  if (!split->second.empty()) {
    return InvalidArgument(fmt::format("'{}' is not a plain number", text));
  }
  return split->first;
}

MicroUsd UsdToMicro(double usd) {
  return MicroUsd{static_cast<int64_t>(std::llround(usd * kMicroUsdPerUsd))};
}

Result<MicroUsd> ParseUsd(std::string_view text) {
  text = Trim(text);
  if (!text.empty() && text.front() == '$') text.remove_prefix(1);
  auto v = ParseNumber(text);
  if (!v) return tl::unexpected(v.error());
  if (*v > 1e9) return InvalidArgument(fmt::format("'{}' is too large a price", text));
  return UsdToMicro(*v);
}

std::string FormatBytes(Bytes b) {
  const double v = static_cast<double>(b.value());
  if (v >= 1e12) return fmt::format("{:.3g} TB", v / 1e12);
  if (v >= 1e9) return fmt::format("{:.3g} GB", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.3g} MB", v / 1e6);
  return fmt::format("{} B", b.value());
}

std::string FormatMillis(Millis d) {
  int64_t ms = d.value();
  if (ms < 1000) return fmt::format("{}ms", ms);
  if (ms < 60'000) return fmt::format("{:.3f}s", static_cast<double>(ms) / 1000.0);
  int64_t s = ms / 1000;
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}h{:02}m{:02}s", s / 3600, (s / 60) % 60, s % 60);
}

std::string FormatUsd(MicroUsd m) {
  return fmt::format("${:.2f}", static_cast<double>(m.value()) / kMicroUsdPerUsd);
}

}  // namespace gp
