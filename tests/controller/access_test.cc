// Tenants and tokens (controller/access.h): names and limits checked naming the field; a
// token works only while it is known, unrevoked, unexpired and its tenant exists; what is
// stored loads back the same.
#include "controller/access.h"

#include <gtest/gtest.h>

#include "adapters/tokens.h"

namespace gp {
namespace {

TEST(AccessTest, TenantsAreCheckedNamingTheField) {
  MemoryJournal journal;
  Access a(journal);
  const struct {
    Tenant t;
    std::string error;  // "" : accepted
  } cases[] = {
      {{.name = "llm"}, ""},
      {{.name = "vision-2", .weight = 1000, .cohort = "research", .quota = {{"H100", {64}}}}, ""},
      {{.name = "llm"}, "name: tenant 'llm' exists already"},
      {{.name = ""}, "name: '': 1 to 63"},
      {{.name = "Caps"}, "name: 'Caps'"},
      {{.name = "lives-"}, "name: 'lives-'"},
      {{.name = std::string(64, 'a')}, "name: "},
      {{.name = "w0", .weight = 0}, "weight: 0: expected 1..1000"},
      {{.name = "w1", .weight = 1001}, "weight: 1001"},
      {{.name = "c", .cohort = "Bad"}, "cohort: 'Bad'"},
      {{.name = "q", .quota = {{"H100", {-1}}}}, "quota: H100=-1: expected 0..1000000 GPUs"},
      {{.name = "q3", .quota = {{"H100", {8, -2}}}}, "tenant q3: quota H100: borrow limit must be 0..1000000 GPUs, got -2"},
      {{.name = "q2", .quota = {{"", {1}}}}, "quota: a GPU model name"},
  };
  for (const auto& c : cases) {
    auto r = a.CreateTenant(c.t, 5);
    if (c.error.empty()) {
      EXPECT_TRUE(r) << c.t.name << ": " << r.error().message();
    } else {
      ASSERT_FALSE(r) << c.t.name;
      EXPECT_NE(r.error().message().find(c.error), std::string::npos) << r.error().message();
    }
  }
  EXPECT_EQ(a.Tenants().size(), 2u) << "nothing refused was kept";
}

TEST(AccessTest, ATokenWorksOnlyWhileItMay) {
  MemoryJournal journal;
  Access a(journal);
  ASSERT_TRUE(a.CreateTenant({.name = "llm"}, 0));
  ASSERT_TRUE(a.CreateTenant({.name = "vision"}, 0));
  auto forever = a.CreateToken("llm", Role::kUser, "alice", 0, 1'000);
  auto brief = a.CreateToken("llm", Role::kViewer, "bob", 60'000, 1'000);
  auto other = a.CreateToken("vision", Role::kUser, "", 0, 1'000);
  ASSERT_TRUE(forever && brief && other);
  EXPECT_FALSE(a.CreateToken("nope", Role::kUser, "", 0, 0)) << "an unknown tenant";
  EXPECT_FALSE(a.CreateToken("llm", Role::kUser, "", -1, 0)) << "a negative lifetime";
  EXPECT_EQ(forever->first.size(), 64u);
  EXPECT_EQ(forever->second.sha256, Sha256Hex(forever->first)) << "kept as its hash";
  const struct {
    std::string secret;
    int64_t now;
    std::optional<std::string> who;  // token name
  } cases[] = {
      {forever->first, 2'000, "alice"},
      {brief->first, 60'999, "bob"},
      {brief->first, 61'000, std::nullopt},  // expired
      {other->first, 2'000, ""},
      {std::string(64, '0'), 2'000, std::nullopt},
      {forever->first.substr(0, 63), 2'000, std::nullopt},
      {"", 2'000, std::nullopt},
  };
  for (const auto& c : cases) {
    auto w = a.Who(c.secret, c.now);
    EXPECT_EQ(w ? std::optional<std::string>(w->name) : std::nullopt, c.who) << c.secret << " at " << c.now;
  }
  EXPECT_EQ(a.Who(brief->first, 2'000)->role, Role::kViewer);
  ASSERT_TRUE(a.Revoke(forever->second.id).ok());
  EXPECT_FALSE(a.Who(forever->first, 2'000)) << "revoked: refused at once";
  EXPECT_FALSE(a.Revoke("tok-nope").ok());
  ASSERT_TRUE(a.DeleteTenant("vision").ok());
  EXPECT_FALSE(a.Who(other->first, 2'000)) << "its tenant was deleted";

  // The store has it all: a new Access loads the same answers.
  Access again(journal);
  ASSERT_TRUE(again.Load(journal.Load()->meta).ok());
  EXPECT_EQ(again.Tenants().size(), 1u);
  EXPECT_EQ(again.Tokens().size(), 3u);
  EXPECT_FALSE(again.Who(forever->first, 2'000));
  EXPECT_TRUE(again.Who(brief->first, 2'000));
  EXPECT_FALSE(again.Who(other->first, 2'000));
  EXPECT_EQ(again.FindTenant("vision"), nullptr);
}

TEST(AccessTest, ABrokenStoredRecordIsNamed) {
  MemoryJournal journal;
  Access a(journal);
  const Status s = a.Load({{"token/tok-1", "{\"id\": \"tok-1\"}"}});
  EXPECT_NE(s.message().find("store: token/tok-1"), std::string::npos) << s.message();
  const Status r = a.Load({{"token/tok-2", R"({"id":"tok-2","tenant":"x","sha256":"y","role":"root"})"}});
  EXPECT_NE(r.message().find("role: 'root'"), std::string::npos) << r.message();
}

}  // namespace
}  // namespace gp
