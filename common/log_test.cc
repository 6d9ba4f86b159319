// Log lines as a collector reads them: JSON lines that are one valid object
// each whatever a client put in a name, text lines that stay one line, the
// component taken from the call site, and repeats from one call site
// suppressed and then summarised.
#include "common/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/log_rate_limit.h"
#include "gtest/gtest.h"

namespace taskq {
namespace {

// Runs `body` with stderr going to a temporary file; returns its lines.
std::vector<std::string> CaptureStderr(const std::function<void()>& body) {
  char path[] = "/tmp/log_test.XXXXXX";
  const int fd = ::mkstemp(path);
  EXPECT_GE(fd, 0);
  ::unlink(path);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(fd, STDERR_FILENO);
  body();
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::string text;
  char buf[4096];
  ::lseek(fd, 0, SEEK_SET);
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) text.append(buf, n);
  ::close(fd);
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  return lines;
}

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitLogging("log_test", LogLevel::kDebug, LogFormat::kText);
    SetLogRateLimit({});
  }
  void TearDown() override { SetLogFormat(LogFormat::kText); }
};

TEST_F(LogTest, JsonLineIsOneEscapedObjectWithComponentAndFields) {
  SetLogFormat(LogFormat::kJson);
  const auto lines = CaptureStderr([] {
    LogEvent(LogLevel::kWarning, "lease \"expired\"\nforged line \x01 \xff",
             {{"task", uint64_t{12}}, {"queue", "q\n2"}, {"msg", "clash"}});
  });
  ASSERT_EQ(lines.size(), 1u);
  const std::string& line = lines[0];
  EXPECT_TRUE(absl::StartsWith(line, "{\"ts\":\"")) << line;
  EXPECT_TRUE(absl::StrContains(
      line, "\"level\":\"warn\",\"component\":\"common/log_test\",\"program\":\"log_test\","
            "\"msg\":\"lease \\\"expired\\\"\\nforged line \\u0001 \\ufffd\",\"task\":12,"
            "\"queue\":\"q\\n2\",\"f_msg\":\"clash\"}"))
      << line;
}

TEST_F(LogTest, TextLineStaysOneLine) {
  const auto lines = CaptureStderr([] { LogInfo("queue \"%s\" created", "a\nINFO forged"); });
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::StrContains(lines[0], " log_test INFO common/log_test: queue \"a\\x0aINFO forged\" created"))
      << lines[0];
}

TEST_F(LogTest, TextLineShowsFieldsAsKeyValue) {
  const auto lines = CaptureStderr(
      [] { LogEvent(LogLevel::kInfo, "worker connected", {{"worker", "w1"}, {"credits", 4}}); });
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::EndsWith(lines[0], "common/log_test: worker connected worker=\"w1\" credits=4"))
      << lines[0];
}

TEST_F(LogTest, LevelBelowTheMinimumIsNotWritten) {
  SetLogLevel(LogLevel::kWarning);
  const auto lines = CaptureStderr([] {
    LogInfo("hidden %d", 1);
    LogDebug("hidden");
    LogWarning("shown");
  });
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::EndsWith(lines[0], "shown"));
}

TEST_F(LogTest, RepeatsFromOneCallSiteAreSuppressedThenSummarised) {
  SetLogRateLimit({.max_lines = 5, .interval = absl::Hours(1)});
  const auto lines = CaptureStderr([] {
    for (int i = 0; i < 1000; ++i) LogWarning("refused call %d", i);
    LogInfo("another call site is not affected");
    FlushLogSummaries();
  });
  ASSERT_EQ(lines.size(), 7u) << absl::StrJoin(lines, "\n");
  EXPECT_TRUE(absl::EndsWith(lines[4], "refused call 4"));
  EXPECT_TRUE(absl::EndsWith(lines[5], "another call site is not affected"));
  EXPECT_TRUE(absl::StrContains(lines[6], "WARN common/log_test: 995 similar lines suppressed"))
      << lines[6];
}

TEST(LogRateLimiterTest, SummaryIsOwedOnceTheWindowIsOverAndANewWindowStarts) {
  LogRateLimiter limiter(2, absl::Seconds(10));
  const char* file = "master/x.cc";
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  std::vector<LogRateLimiter::Summary> due;
  EXPECT_TRUE(limiter.Admit(file, 1, 2, t0, &due));
  EXPECT_TRUE(limiter.Admit(file, 1, 2, t0, &due));
  EXPECT_FALSE(limiter.Admit(file, 1, 2, t0 + absl::Seconds(1), &due));
  EXPECT_FALSE(limiter.Admit(file, 1, 2, t0 + absl::Seconds(2), &due));
  EXPECT_TRUE(due.empty());
  // Another site, after the window: the first site's summary comes out.
  EXPECT_TRUE(limiter.Admit(file, 2, 1, t0 + absl::Seconds(11), &due));
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].line, 1);
  EXPECT_EQ(due[0].suppressed, 2u);
  // The first site writes again in a new window; nothing more is owed.
  EXPECT_TRUE(limiter.Admit(file, 1, 2, t0 + absl::Seconds(12), &due));
  EXPECT_EQ(due.size(), 1u);
  EXPECT_TRUE(limiter.Flush().empty());
}

TEST(LogComponentTest, IsThePathFromTheTopDirectoryWithoutExtension) {
  EXPECT_EQ(LogComponent("/work/wt/master/work_stream.cc"), "master/work_stream");
  EXPECT_EQ(LogComponent("../../master/engine/task_engine.cc"), "master/engine/task_engine");
  EXPECT_EQ(LogComponent("common/runtime/scheduler.cc"), "common/runtime/scheduler");
  EXPECT_EQ(LogComponent("/home/tests/x/worker/worker.cc"), "worker/worker");
  EXPECT_EQ(LogComponent("/elsewhere/thing.cc"), "thing");
}

}  // namespace
}  // namespace taskq
