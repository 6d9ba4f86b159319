// Unit tests: square/sleep builtins, the handler registry (sync and async
// handlers, the CPU-pool hop, exceptions, release requests), CleanUtf8.
#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <stop_token>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/sleep.h"
#include "common/runtime/when_all.h"
#include "gtest/gtest.h"
#include "worker/builtin_handlers.h"
#include "worker/handler_registry.h"
#include "worker/text_util.h"
#include "worker/thread_pool.h"

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

// Runs the handler `task` names through `registry` on a scheduler, the way
// the worker does (synchronous handlers hop onto `cpu` when given).
absl::StatusOr<std::string> RunOn(rt::Scheduler& sched, const HandlerRegistry& registry,
                                  HandlerContext& context, rt::Executor* cpu = nullptr) {
  return sched.BlockOn(registry.Run(context, cpu));
}

TEST(Sleep, SleepsAndReports) {
  rt::Scheduler sched({.threads = 1});
  v1::Task task = MakeTask("sleep", "0.05");
  std::stop_source stop;
  HandlerContext context(task, "w1", stop.get_token());
  absl::Time start = absl::Now();
  auto r = sched.BlockOn(SleepHandler(context));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "slept 0.05");
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(50));
}

TEST(Sleep, StopsEarlyWhenToldToStop) {
  rt::Scheduler sched({.threads = 1});
  v1::Task task = MakeTask("sleep", "60");
  std::stop_source stop;
  HandlerContext context(task, "w1", stop.get_token());
  absl::StatusOr<std::string> result;
  std::thread t([&] { result = sched.BlockOn(SleepHandler(context)); });
  stop.request_stop();
  t.join();  // would take a minute if the stop were ignored
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(IsPermanentFailure(result.status()));
}

TEST(Sleep, ThousandSleepsShareOneThread) {
  // The point of an async sleep: 1000 of them at once on one thread take
  // about one sleep, not a thousand.
  rt::Scheduler sched({.threads = 1});
  HandlerRegistry registry;
  ASSERT_TRUE(RegisterBuiltinHandlers(&registry, {}).ok());
  v1::Task task = MakeTask("sleep", "0.2");
  struct Run {
    static rt::Task<bool> One(const HandlerRegistry* registry, const v1::Task* task) {
      HandlerContext context(*task, "w1");
      absl::StatusOr<std::string> r = co_await registry->Run(context);
      co_return r.ok() && *r == "slept 0.2";
    }
  };
  std::vector<rt::Task<bool>> sleeps;
  for (int i = 0; i < 1000; ++i) sleeps.push_back(Run::One(&registry, &task));
  absl::Time start = absl::Now();
  std::vector<bool> ok = sched.BlockOn(rt::WhenAll(std::move(sleeps)));
  absl::Duration took = absl::Now() - start;
  EXPECT_EQ(std::count(ok.begin(), ok.end(), true), 1000);
  EXPECT_LT(took, absl::Seconds(10)) << "1000 sleeps of 0.2 s took " << took;
}

TEST(HandlerContext, WaitForStopWakesOnTheStopToken) {
  v1::Task task = MakeTask("x", "");
  std::stop_source stop;
  HandlerContext context(task, "w1", stop.get_token());
  EXPECT_FALSE(context.stopping());
  EXPECT_FALSE(context.WaitForStop(absl::Now() + absl::Milliseconds(10)));
  bool woke = false;
  std::thread t([&] { woke = context.WaitForStop(absl::Now() + absl::Seconds(60)); });
  stop.request_stop();
  t.join();  // would take a minute if the stop were missed
  EXPECT_TRUE(woke);
  EXPECT_TRUE(context.stopping());
  EXPECT_TRUE(context.WaitForStop(absl::InfiniteFuture()));  // already stopped
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
  rt::Scheduler sched({.threads = 1});
  v1::Task task = MakeTask("upper", "hi");
  HandlerContext context(task, "w9");
  auto r = RunOn(sched, registry, context);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "HI@w9#1");
  v1::Task sq = MakeTask("square", "3");
  HandlerContext sq_context(sq, "w9");
  EXPECT_EQ(*RunOn(sched, registry, sq_context), "3 * 3 = 9");
}

TEST(Registry, SyncHandlersRunOnTheCpuPoolAndComeBack) {
  rt::Scheduler sched({.threads = 1});
  ThreadPool cpu(2, "test-cpu");
  HandlerRegistry registry;
  std::atomic<rt::Executor*> ran_on{nullptr};
  ASSERT_TRUE(registry
                  .Register("where",
                            [&](const HandlerContext&) -> absl::StatusOr<std::string> {
                              ran_on = rt::CurrentExecutor();
                              return "here";
                            })
                  .ok());
  struct Probe {
    static rt::Task<rt::Executor*> Run(const HandlerRegistry* registry, rt::Executor* cpu) {
      v1::Task task = MakeTask("where", "");
      HandlerContext context(task, "w1");
      absl::StatusOr<std::string> r = co_await registry->Run(context, cpu);
      co_return r.ok() ? rt::CurrentExecutor() : nullptr;
    }
  };
  rt::Executor* after = sched.BlockOn(Probe::Run(&registry, &cpu));
  EXPECT_EQ(ran_on.load(), &cpu);    // the handler ran on the CPU pool
  EXPECT_EQ(after, &sched);          // and the caller continued at home
}

TEST(Registry, InlineHandlersAndSquareRunOnTheCallersThread) {
  rt::Scheduler sched({.threads = 1});
  // The CPU pool's only thread is kept busy: a handler that hopped there
  // would wait until it is let go (10 s at most).
  ThreadPool cpu(1, "test-cpu");
  absl::Notification let_go;
  cpu.Submit([&] { let_go.WaitForNotificationWithTimeout(absl::Seconds(10)); });
  HandlerRegistry registry;
  ASSERT_TRUE(RegisterBuiltinHandlers(&registry, ExecHandler()).ok());
  std::atomic<rt::Executor*> ran_on{nullptr};
  ASSERT_TRUE(registry
                  .RegisterInline("where",
                                  [&](const HandlerContext&) -> absl::StatusOr<std::string> {
                                    ran_on = rt::CurrentExecutor();
                                    return "here";
                                  })
                  .ok());
  EXPECT_FALSE(registry.RegisterInline("empty", nullptr).ok());
  const absl::Time start = absl::Now();
  v1::Task where = MakeTask("where", "");
  HandlerContext where_context(where, "w1");
  EXPECT_EQ(*RunOn(sched, registry, where_context, &cpu), "here");
  EXPECT_EQ(ran_on.load(), &sched);  // the caller's scheduler, not the pool
  v1::Task sq = MakeTask("square", "7");
  HandlerContext sq_context(sq, "w1");
  EXPECT_EQ(*RunOn(sched, registry, sq_context, &cpu), "7 * 7 = 49");
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "an inline handler waited for the CPU pool";
  let_go.Notify();
}

rt::Task<absl::StatusOr<std::string>> AsyncEcho(HandlerContext& context) {
  absl::Status slept = co_await rt::SleepFor(absl::Milliseconds(1), context.stop_token());
  if (!slept.ok()) co_return slept;
  co_return absl::StrCat("async ", context.payload());
}

TEST(Registry, AsyncHandlersRunAsCoroutines) {
  rt::Scheduler sched({.threads = 1});
  HandlerRegistry registry;
  ASSERT_TRUE(registry.RegisterAsync("echo", AsyncEcho).ok());
  EXPECT_EQ(registry.RegisterAsync("echo", AsyncEcho).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.Register("echo", [](const HandlerContext&) -> absl::StatusOr<std::string> {
              return "x";
            }).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.RegisterAsync("empty", nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(registry.Has("echo"));
  v1::Task task = MakeTask("echo", "hi");
  HandlerContext context(task, "w1");
  auto r = RunOn(sched, registry, context);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "async hi");
}

rt::Task<absl::StatusOr<std::string>> AsyncThrower(HandlerContext&) {
  absl::Status slept = co_await rt::SleepFor(absl::Milliseconds(1));
  if (slept.ok()) throw std::runtime_error("async kaput");
  co_return slept;
}

TEST(Registry, AsyncExceptionsBecomeRetryableErrors) {
  rt::Scheduler sched({.threads = 1});
  HandlerRegistry registry;
  ASSERT_TRUE(registry.RegisterAsync("boom", AsyncThrower).ok());
  v1::Task task = MakeTask("boom", "");
  HandlerContext context(task, "w1");
  auto r = RunOn(sched, registry, context);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(r.status().message().find("async kaput"), std::string::npos) << r.status();
}

TEST(Release, ReleaseTaskIsRecognisedWithItsDelay) {
  absl::Duration delay;
  absl::Status s = ReleaseTask(absl::Milliseconds(2500));
  ASSERT_TRUE(IsReleaseRequest(s, &delay)) << s;
  EXPECT_EQ(delay, absl::Milliseconds(2500));
  EXPECT_FALSE(IsPermanentFailure(s));  // if it ever loses its payload: retried
  ASSERT_TRUE(IsReleaseRequest(ReleaseTask(absl::Seconds(-5)), &delay));
  EXPECT_EQ(delay, absl::ZeroDuration());
  ASSERT_TRUE(IsReleaseRequest(ReleaseTask(absl::Hours(24 * 400)), &delay));
  EXPECT_EQ(delay, absl::Hours(24 * 365));
  // An ordinary ABORTED (or any other) error is not a release.
  EXPECT_FALSE(IsReleaseRequest(absl::AbortedError("handler asked to release")));
  EXPECT_FALSE(IsReleaseRequest(absl::OkStatus()));
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
  rt::Scheduler sched({.threads = 1});
  v1::Task task = MakeTask("nope", "1");
  HandlerContext context(task, "host:1");
  auto r = RunOn(sched, registry, context);
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
  rt::Scheduler sched({.threads = 1});
  ThreadPool cpu(1, "test-cpu");
  v1::Task task = MakeTask("boom", "");
  HandlerContext context(task, "w");
  auto r = RunOn(sched, registry, context, &cpu);
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
