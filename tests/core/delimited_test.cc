#include "core/delimited.h"

#include <gtest/gtest.h>

namespace gp {
namespace {

TEST(DelimitedTest, FieldsLinesAndQuotes) {
  DelimitedFile f("t.csv", "a,b,c\r\n\n1,\"x,y\",3\n4,,\n", ',');
  std::vector<std::string_view> row;
  ASSERT_TRUE(f.Next(row));
  EXPECT_EQ(f.line(), 1);
  ASSERT_TRUE(f.Next(row));
  EXPECT_EQ(f.line(), 3) << "blank line 2 skipped but counted";
  ASSERT_EQ(row.size(), 3u);
  EXPECT_EQ(row[1], "x,y");
  ASSERT_TRUE(f.Next(row));
  ASSERT_EQ(row.size(), 3u);
  EXPECT_EQ(row[1], "");
  EXPECT_FALSE(f.Next(row));
  EXPECT_EQ(f.ErrorAt(4, "bad").message(), "t.csv:4: bad");
}

TEST(DelimitedTest, FieldParsersNameTheField) {
  EXPECT_EQ(*FieldInt("n", "42"), 42);
  EXPECT_EQ(*FieldInt("n", "3.0"), 3);
  EXPECT_EQ(FieldInt("num_gpus", "x").error().message(), "num_gpus: 'x' is not a whole number");
  EXPECT_FALSE(FieldInt("n", "2.5").has_value());
  EXPECT_FALSE(FieldNumber("d", "nan").has_value());
}

}  // namespace
}  // namespace gp
