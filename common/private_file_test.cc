#include "common/private_file.h"

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace taskq {
namespace {

class PrivateFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/taskq-private-file-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  static std::string Read(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  static mode_t Mode(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? (st.st_mode & 0777) : 0;
  }
  // Files in the directory besides `keep` (temp files left behind).
  size_t Entries() const {
    return static_cast<size_t>(std::distance(std::filesystem::directory_iterator(dir_),
                                             std::filesystem::directory_iterator()));
  }
  std::string dir_;
};

TEST_F(PrivateFileTest, ReplaceWritesWholeFilesMode0600AndLeavesNoTempFile) {
  const std::string path = dir_ + "/secret";
  ASSERT_TRUE(ReplacePrivateFile(path, "one").ok());
  ASSERT_TRUE(std::filesystem::exists(path));
  ::chmod(path.c_str(), 0644);  // replaced by a 0600 file, not written through
  ASSERT_TRUE(ReplacePrivateFile(path, "two").ok());
  EXPECT_EQ(Read(path), "two");
  EXPECT_EQ(Mode(path), 0600u);
  EXPECT_EQ(Entries(), 1u);
}

TEST_F(PrivateFileTest, ReplaceIntoAMissingDirectoryNamesThePath) {
  absl::Status s = ReplacePrivateFile(dir_ + "/nope/secret", "x");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(dir_ + "/nope/secret"), std::string::npos) << s;
}

TEST_F(PrivateFileTest, CreateNeverOverwrites) {
  const std::string path = dir_ + "/key";
  ASSERT_TRUE(CreatePrivateFile(path, "first").ok());
  EXPECT_EQ(Mode(path), 0600u);
  absl::Status again = CreatePrivateFile(path, "second");
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists) << again;
  EXPECT_EQ(Read(path), "first");
}

}  // namespace
}  // namespace taskq
