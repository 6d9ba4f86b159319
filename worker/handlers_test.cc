// Unit tests: square/sleep builtins, the handler registry, CleanUtf8.
#include <atomic>
#include <stdexcept>
#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "worker/builtin_handlers.h"
#include "worker/handler_registry.h"
#include "worker/text_util.h"

namespace taskq {
namespace {

v1::Task MakeTask(const std::string& handler, const std::string& payload) {
  v1::Task task;
  task.set_id(7);
  task.set_handler(handler);
  task.set_payload(payload);
  task.set_attempt(1);
  return task;
}

TEST(Square, FormatsLikeTheSeed) {
  EXPECT_EQ(*Square("3"), "3 * 3 = 9");
  EXPECT_EQ(*Square("0"), "0 * 0 = 0");
  EXPECT_EQ(*Square(" 12\n"), "12 * 12 = 144");
  EXPECT_EQ(*Square("-4"), "-4 * -4 = 16");
  EXPECT_EQ(*Square("+5"), "5 * 5 = 25");
}

TEST(Square, LargestSquareThatFitsIn64Bits) {
  EXPECT_EQ(*Square("3037000499"), "3037000499 * 3037000499 = 9223372030926249001");
  EXPECT_EQ(*Square("-3037000499"), "-3037000499 * -3037000499 = 9223372030926249001");
}

TEST(Square, OverflowIsPermanent) {
  for (const char* p : {"3037000500", "9223372036854775807", "-9223372036854775808"}) {
    auto r = Square(p);
    ASSERT_FALSE(r.ok()) << p;
    EXPECT_TRUE(IsPermanentFailure(r.status())) << r.status();
    EXPECT_NE(r.status().message().find("64 bits"), std::string::npos) << r.status();
  }
}

TEST(Square, GarbageIsPermanent) {
  for (const char* p : {"", "abc", "3.5", "1e3", "12 34", "99999999999999999999", "0x10"}) {
    auto r = Square(p);
    ASSERT_FALSE(r.ok()) << p;
    EXPECT_TRUE(IsPermanentFailure(r.status())) << p << ": " << r.status();
  }
}

TEST(Sleep, ParsesSeconds) {
  EXPECT_EQ(*ParseSleepSeconds("0.5"), absl::Milliseconds(500));
  EXPECT_EQ(*ParseSleepSeconds("2"), absl::Seconds(2));
  EXPECT_EQ(*ParseSleepSeconds(" 0 "), absl::ZeroDuration());
  for (const char* p : {"", "-1", "abc", "inf", "nan", "1s", "100000"}) {
    auto r = ParseSleepSeconds(p);
    ASSERT_FALSE(r.ok()) << p;
    EXPECT_TRUE(IsPermanentFailure(r.status())) << p;
  }
}

TEST(Sleep, SleepsAndReports) {
  v1::Task task = MakeTask("sleep", "0.05");
  StopSignal stop;
  HandlerContext context(task, "w1", &stop);
  absl::Time start = absl::Now();
  auto r = SleepHandler(context);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "slept 0.05");
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(50));
}

TEST(Sleep, StopsEarlyOnHardStop) {
  v1::Task task = MakeTask("sleep", "60");
  StopSignal stop;
  HandlerContext context(task, "w1", &stop);
  absl::StatusOr<std::string> result;
  std::thread t([&] { result = SleepHandler(context); });
  stop.Stop();
  t.join();  // would take a minute if the stop were ignored
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(IsPermanentFailure(result.status()));
}

TEST(Registry, BuiltinsAndCustomHandler) {
  HandlerRegistry registry;
  ASSERT_TRUE(RegisterBuiltinHandlers(&registry, {}).ok());
  EXPECT_EQ(registry.Names(), (std::vector<std::string>{"exec", "sleep", "square"}));
  ASSERT_TRUE(registry
                  .Register("upper",
                            [](const HandlerContext& c) -> absl::StatusOr<std::string> {
                              std::string s = c.payload();
                              for (char& ch : s) ch = static_cast<char>(std::toupper(ch));
                              return absl::StrCat(s, "@", c.worker_id(), "#", c.attempt());
                            })
                  .ok());
  v1::Task task = MakeTask("upper", "hi");
  auto r = registry.Run(HandlerContext(task, "w9", nullptr));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "HI@w9#1");
  v1::Task sq = MakeTask("square", "3");
  EXPECT_EQ(*registry.Run(HandlerContext(sq, "w9", nullptr)), "3 * 3 = 9");
}

TEST(Registry, RefusesBadAndDuplicateNames) {
  HandlerRegistry registry;
  auto ok = [](const HandlerContext&) -> absl::StatusOr<std::string> { return "x"; };
  EXPECT_TRUE(registry.Register("a", ok).ok());
  EXPECT_EQ(registry.Register("a", ok).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.Register("", ok).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register("has space", ok).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.Register("b", nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST(Registry, UnknownHandlerIsPermanent) {
  HandlerRegistry registry;
  v1::Task task = MakeTask("nope", "1");
  auto r = registry.Run(HandlerContext(task, "host:1", nullptr));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsPermanentFailure(r.status()));
  EXPECT_EQ(r.status().message(), "no handler named \"nope\" on worker host:1");
}

TEST(Registry, ExceptionsBecomeRetryableErrors) {
  HandlerRegistry registry;
  ASSERT_TRUE(registry
                  .Register("boom",
                            [](const HandlerContext&) -> absl::StatusOr<std::string> {
                              throw std::runtime_error("kaput");
                            })
                  .ok());
  v1::Task task = MakeTask("boom", "");
  auto r = registry.Run(HandlerContext(task, "w", nullptr));
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(IsPermanentFailure(r.status()));
  EXPECT_NE(r.status().message().find("kaput"), std::string::npos);
}

TEST(Permanence, FollowsTheDocumentedCodes) {
  EXPECT_TRUE(IsPermanentFailure(absl::InvalidArgumentError("")));
  EXPECT_TRUE(IsPermanentFailure(absl::FailedPreconditionError("")));
  EXPECT_TRUE(IsPermanentFailure(absl::UnimplementedError("")));
  EXPECT_FALSE(IsPermanentFailure(absl::UnavailableError("")));
  EXPECT_FALSE(IsPermanentFailure(absl::UnknownError("")));
  EXPECT_FALSE(IsPermanentFailure(absl::DeadlineExceededError("")));
}

TEST(CleanUtf8, KeepsValidTextAndReplacesInvalidBytes) {
  EXPECT_EQ(CleanUtf8("plain", 100), "plain");
  EXPECT_EQ(CleanUtf8("n\xC2\xB2", 100), "n\xC2\xB2");  // n²
  EXPECT_EQ(CleanUtf8("a\xFF" "b\xC0\x80" "c", 100), "a?b??c");
  EXPECT_EQ(CleanUtf8("\xE2\x82", 100), "??");  // truncated sequence
  EXPECT_EQ(CleanUtf8("\xED\xA0\x80", 100), "???");  // surrogate
}

TEST(CleanUtf8, CutsAtCharacterBoundaries) {
  EXPECT_EQ(CleanUtf8("abcdefgh", 6), "abc...");
  EXPECT_EQ(CleanUtf8("abcdef", 6), "abcdef");
  // "ab" + five 2-byte chars: cut must not split one.
  std::string s = "ab\xC2\xB2\xC2\xB2\xC2\xB2\xC2\xB2\xC2\xB2";
  std::string cut = CleanUtf8(s, 8);
  EXPECT_EQ(cut, "ab\xC2\xB2...");
  EXPECT_EQ(CleanUtf8(s, 2), "ab");
}

}  // namespace
}  // namespace taskq
