// Jobs' secrets sealed with AES-256-GCM under a key file: a value comes back only through the
// same key, untouched; the sealed text holds nothing of the value; the key is made once, 0600.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "adapters/secrets.h"

namespace gp {
namespace {

std::string TempPath(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("gpupool-secrets-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

TEST(SecretBoxTest, SealsOpensAndRefusesOthers) {
  auto box = SecretBox::LoadOrCreate(TempPath("a.key"));
  ASSERT_TRUE(box) << box.error().message();
  for (const std::string& value : {std::string(), std::string("hunter2"), std::string(70'000, 'x'), std::string("\0bin\xff", 5)}) {
    const std::string sealed = box->Seal(value);
    EXPECT_TRUE(SecretBox::IsSealed(sealed));
    if (value.size() >= 4) {
      EXPECT_EQ(sealed.find(value), std::string::npos);
    }
    auto opened = box->Open(sealed);
    ASSERT_TRUE(opened) << opened.error().message();
    EXPECT_EQ(*opened, value);
  }
  EXPECT_NE(box->Seal("same"), box->Seal("same")) << "a fresh nonce each time";
  // The same file gives the same key; another file, another.
  auto again = SecretBox::LoadOrCreate(TempPath("a.key"));
  ASSERT_TRUE(again);
  EXPECT_EQ(*again->Open(box->Seal("k")), "k");
  auto other = SecretBox::LoadOrCreate(TempPath("b.key"));
  ASSERT_TRUE(other);
  EXPECT_FALSE(other->Open(box->Seal("k")));
  // Tampered with, truncated, or not sealed at all.
  std::string sealed = box->Seal("value");
  sealed[sealed.size() - 6] = sealed[sealed.size() - 6] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(box->Open(sealed));
  EXPECT_FALSE(box->Open("gpsec1:abcd"));
  EXPECT_FALSE(box->Open("plain"));
  struct stat st {};
  ASSERT_EQ(::stat(TempPath("a.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

}  // namespace
}  // namespace gp
