// AuditLog: the documented line format, a private file, escaping, and the
// rate limit with its summaries.
#include "master/audit_log.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace taskq {
namespace {

class AuditLogTest : public ::testing::Test {
 protected:
  AuditLogTest() {
    char tmpl[] = "/tmp/taskq-audit-XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/audit.log";
  }
  ~AuditLogTest() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<AuditLog> Open() {
    AuditOptions o;
    o.clock = &clock_;
    o.background = false;
    auto log = AuditLog::Open(path_, o);
    EXPECT_TRUE(log.ok()) << log.status();
    return *std::move(log);
  }
  std::vector<std::string> Lines() const {
    std::ifstream in(path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return absl::StrSplit(ss.str(), '\n', absl::SkipEmpty());
  }

  FakeClock clock_{absl::FromUnixSeconds(1'700'000'000)};
  std::string dir_, path_;
};

TEST_F(AuditLogTest, WritesTheDocumentedLineToAPrivateFile) {
  auto log = Open();
  log->Record({"queue.delete", "ops", "admin", "ipv4:10.0.0.7:5123", "billing", absl::OkStatus()});
  log->Record({"Put", "p1", "producer", "", "bill ing\nx",
               absl::PermissionDeniedError("credential \"p1\" may not touch queue \"b\"")});
  auto lines = Lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0],
            "2023-11-14T22:13:20.000Z queue.delete credential=ops role=admin "
            "peer=ipv4:10.0.0.7:5123 target=billing result=OK");
  EXPECT_EQ(lines[1],
            "2023-11-14T22:13:20.000Z Put credential=p1 role=producer peer=- "
            "target=bill_ing\\nx result=PERMISSION_DENIED: credential \\\"p1\\\" may not touch "
            "queue \\\"b\\\"");
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(AuditLogTest, AFloodGivesBoundedLinesAndASummary) {
  auto log = Open();
  for (int i = 0; i < 10000; ++i) {
    log->Record({"Put", "p1", "producer", "", "q", absl::PermissionDeniedError("no")});
  }
  EXPECT_EQ(Lines().size(), 20u);  // the burst
  clock_.Advance(absl::Seconds(10));
  log->Tick();
  auto lines = Lines();
  ASSERT_EQ(lines.size(), 21u);
  EXPECT_TRUE(absl::StrContains(lines.back(), "audit.suppressed count=9980 ")) << lines.back();
  EXPECT_TRUE(absl::StrContains(lines.back(), "actions=Put:9980")) << lines.back();
  // The bucket refilled: lines flow again.
  log->Record({"queue.create", "ops", "admin", "", "q", absl::OkStatus()});
  EXPECT_EQ(Lines().size(), 22u);
}

TEST_F(AuditLogTest, TheLastSummaryIsWrittenOnClose) {
  auto log = Open();
  for (int i = 0; i < 25; ++i) log->Record({"Get", "w", "worker", "", "q", absl::OkStatus()});
  log.reset();
  auto lines = Lines();
  ASSERT_EQ(lines.size(), 21u);
  EXPECT_TRUE(absl::StrContains(lines.back(), "count=5 ")) << lines.back();
}

TEST_F(AuditLogTest, LongFieldsAreCut) {
  auto log = Open();
  log->Record({"Put", "p", "producer", "", std::string(100000, 'q'),
               absl::PermissionDeniedError(std::string(100000, 'm'))});
  auto lines = Lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_LT(lines[0].size(), 1000u);
}

}  // namespace
}  // namespace taskq
