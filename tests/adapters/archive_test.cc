// Checkpoint directories packed and unpacked (adapters/archive.h): a tree survives the round
// trip whole; an archive that would write outside the directory is refused and the directory
// is left as it was.
#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "adapters/archive.h"

namespace gp {
namespace {
namespace fs = std::filesystem;

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("gp-archive-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
  static inline int counter = 0;
};

void Write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

std::string Read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// An archive with one entry of the given name (and link target), made with libarchive.
std::string Craft(const std::string& name, const std::string& symlink = "", mode_t perm = 0644) {
  std::string out(64 * 1024, '\0');
  size_t used = 0;
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_open_memory(a, out.data(), out.size(), &used);
  archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, name.c_str());
  archive_entry_set_perm(e, perm);
  if (symlink.empty()) {
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_size(e, 4);
  } else {
    archive_entry_set_filetype(e, AE_IFLNK);
    archive_entry_set_symlink(e, symlink.c_str());
  }
  archive_write_header(a, e);
  if (symlink.empty()) archive_write_data(a, "evil", 4);
  archive_entry_free(e);
  archive_write_close(a);
  archive_write_free(a);
  out.resize(used);
  return out;
}

TEST(ArchiveTest, TreeRoundTripsWithModesAndLinks) {
  TempDir src;
  TempDir dst;
  Write(src.path / "step" / "model.bin", std::string(300'000, 'w') + "end");
  Write(src.path / "progress", "42\n");
  Write(src.path / "empty", "");
  fs::create_directories(src.path / "logs" / "nested");
  fs::create_symlink("step/model.bin", src.path / "latest");
  chmod((src.path / "progress").c_str(), 0600);
  Write(dst.path / "stale", "from an older attempt");
  auto tar = PackTree(src.path, 10 << 20);
  ASSERT_TRUE(tar) << tar.error().message();
  ASSERT_TRUE(UnpackTree(*tar, dst.path).ok());
  EXPECT_EQ(Read(dst.path / "step" / "model.bin"), Read(src.path / "step" / "model.bin"));
  EXPECT_EQ(Read(dst.path / "progress"), "42\n");
  EXPECT_TRUE(fs::exists(dst.path / "empty"));
  EXPECT_TRUE(fs::is_directory(dst.path / "logs" / "nested"));
  EXPECT_EQ(fs::read_symlink(dst.path / "latest"), "step/model.bin");
  EXPECT_EQ(fs::status(dst.path / "progress").permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_FALSE(fs::exists(dst.path / "stale")) << "the directory is replaced, not merged";
  EXPECT_EQ(SignTree(dst.path).files, SignTree(src.path).files);
  EXPECT_EQ(SignTree(dst.path).bytes, SignTree(src.path).bytes);
}

TEST(ArchiveTest, SignatureSeesEveryChange) {
  TempDir d;
  Write(d.path / "a", "1");
  const TreeSignature s0 = SignTree(d.path);
  EXPECT_EQ(SignTree(d.path), s0) << "nothing written: the same";
  Write(d.path / "a", "12");
  const TreeSignature s1 = SignTree(d.path);
  EXPECT_NE(s1, s0) << "a file grew";
  Write(d.path / "b", "");
  EXPECT_NE(SignTree(d.path), s1) << "a file appeared";
  EXPECT_TRUE(SignTree(d.path / "missing").empty());
}

TEST(ArchiveTest, OverLimitIsAnError) {
  TempDir d;
  Write(d.path / "big", std::string(200'000, 'x'));
  auto tar = PackTree(d.path, 100'000);
  ASSERT_FALSE(tar);
  EXPECT_NE(tar.error().message().find("over the pool's limit of 100000 bytes"), std::string::npos) << tar.error().message();
}

struct Hostile {
  const char* what;
  std::string archive;
};

TEST(ArchiveTest, HostileArchivesAreRefusedAndChangeNothing) {
  const std::vector<Hostile> cases = {
      {"absolute name", Craft("/tmp/gp-evil")},
      {"dot-dot name", Craft("../escaped")},
      {"dot-dot inside", Craft("a/../../escaped")},
      {"link out of the tree", Craft("out", "../../etc/passwd")},
      {"absolute link", Craft("out", "/etc/passwd")},
      // A trailing slash or dot makes the link's name look one level deeper than it is: "a/"
      // is the link "a" at the top, so ".." from it leaves the tree.
      {"link named with a trailing slash", Craft("a/", "..")},
      {"link named with a trailing dot", Craft("a/.", "..")},
      {"link named with dots around it", Craft("./a/./", "..")},
      {"link named a/b/ climbing two levels", Craft("a/b/", "../..")},
      {"an entry naming the directory itself", Craft("./", "..")},
      {"not an archive", std::string("this is not tar at all, just text that goes on for a while ...")},
  };
  for (const Hostile& h : cases) {
    TempDir parent;
    const fs::path dir = parent.path / "ckpt";
    Write(dir / "keep", "mine");
    const Status s = UnpackTree(h.archive, dir);
    EXPECT_FALSE(s.ok()) << h.what;
    EXPECT_EQ(Read(dir / "keep"), "mine") << h.what << ": the directory was left as it was";
    EXPECT_FALSE(fs::exists(parent.path / "escaped")) << h.what;
    EXPECT_FALSE(fs::exists(parent.path / "ckpt.incoming")) << h.what << ": nothing left behind";
  }
}

TEST(ArchiveTest, SetuidAndSetgidBitsAreDropped) {
  TempDir parent;
  ASSERT_TRUE(UnpackTree(Craft("tool", "", 04755), parent.path / "d").ok());
  ASSERT_TRUE(UnpackTree(Craft("shared", "", 02775), parent.path / "e").ok());
  struct stat st {};
  ASSERT_EQ(stat((parent.path / "d" / "tool").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07000, 0u) << "a setuid file from another node's checkpoint would run as its owner";
  EXPECT_EQ(st.st_mode & 0777, 0755u) << "plain permissions are kept";
  ASSERT_EQ(stat((parent.path / "e" / "shared").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07000, 0u);
}

TEST(ArchiveTest, LinkWithinTheTreeIsKept) {
  TempDir parent;
  ASSERT_TRUE(UnpackTree(Craft("a/b/link", "../c"), parent.path / "d").ok());
  EXPECT_EQ(fs::read_symlink(parent.path / "d" / "a" / "b" / "link"), "../c");
}

}  // namespace
}  // namespace gp
