#include "core/units.h"

#include <gtest/gtest.h>

namespace gp {
namespace {

struct BytesCase {
  const char* name;
  const char* text;
  int64_t want;  // -1: an error
};

TEST(UnitsTest, ParseBytesTable) {
  const BytesCase cases[] = {
      {"plain", "512", 512},
      {"decimal GB", "100GB", 100'000'000'000},
      {"binary GiB", "80GiB", 80LL * 1024 * 1024 * 1024},
      {"fraction", "1.5TB", 1'500'000'000'000},
      {"space and lower case", "2 gib", 2LL * 1024 * 1024 * 1024},
      {"unknown unit", "3 parsecs", -1},
      {"negative", "-1GB", -1},
      {"no number", "GB", -1},
  };
  for (const auto& c : cases) {
    auto r = ParseBytes(c.text);
    if (c.want < 0) {
      EXPECT_FALSE(r.has_value()) << c.name;
    } else {
      ASSERT_TRUE(r.has_value()) << c.name << ": " << r.error().message();
      EXPECT_EQ(r->value(), c.want) << c.name;
    }
  }
}

TEST(UnitsTest, BandwidthAndDuration) {
  EXPECT_EQ(ParseBandwidth("10Gbps")->value(), 10'000'000'000);
  EXPECT_EQ(ParseBandwidth("25 Gbit/s")->value(), 25'000'000'000);
  EXPECT_EQ(ParseBandwidth("100mbps")->value(), 100'000'000);
  EXPECT_EQ(ParseDuration("35ms")->value(), 35);
  EXPECT_EQ(ParseDuration("1.5h")->value(), 5'400'000);
  EXPECT_FALSE(ParseDuration("soon").has_value());
  // Slurm's --time forms, and durations.
  const std::pair<const char*, int64_t> limits[] = {
      {"30", 1'800'000},          {"30:15", 1'815'000},         {"1:30:00", 5'400'000},     {"2-0", 172'800'000},
      {"1-12", 129'600'000},      {"1-12:30", 131'400'000},     {"1-12:00:30", 129'630'000}, {"2h", 7'200'000},
      {"90s", 90'000}};
  for (const auto& [text, ms] : limits) {
    auto v = ParseTimeLimit(text);
    ASSERT_TRUE(v) << text << ": " << v.error().message();
    EXPECT_EQ(v->value(), ms) << text;
  }
  for (const char* bad : {"", "1:2:3:4", "1-", "-5", "a:b", "1--2", "soon"}) {
    auto v = ParseTimeLimit(bad);
    EXPECT_FALSE(v.has_value()) << bad;
  }
  EXPECT_NE(ParseTimeLimit("1:2:3:4").error().message().find("D-HH:MM:SS"), std::string::npos);
  auto err = ParseBandwidth("10 furlongs");
  ASSERT_FALSE(err.has_value());
  EXPECT_NE(err.error().message().find("Gbps"), std::string::npos) << "the error lists the units";
}

TEST(UnitsTest, UsdRoundsToMicro) {
  EXPECT_EQ(ParseUsd("$2.10")->value(), 2'100'000);
  EXPECT_EQ(UsdToMicro(0.0000015).value(), 2);  // 1.5 micro-USD rounds to 2
  EXPECT_EQ(FormatUsd(MicroUsd{36'000'000}), "$36.00");
}

}  // namespace
}  // namespace gp
