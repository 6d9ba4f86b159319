#include "common/runtime/when_any.h"

#include <atomic>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/runtime/async_test_util.h"
#include "common/runtime/event.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/sleep.h"
#include "common/runtime/task.h"
#include "gtest/gtest.h"

namespace taskq::rt {
namespace {

using testing::Outcome;
using testing::RunInto;
using testing::WaitUntil;

Task<int> Value(int v) { co_return v; }

// Waits on `never` until stopped, then (after `linger`, if given) finishes.
Task<int> Loser(Event* never, std::stop_token stop, Event* linger, std::atomic<int>* finished) {
  absl::Status s = co_await never->Wait(stop);
  if (linger != nullptr) (void)co_await linger->Wait();  // slow to wind down
  finished->fetch_add(1);
  co_return s.ok() ? 0 : -1;
}

TEST(WhenAnyTest, FirstToFinishWinsAndTheOthersAreStopped) {
  Scheduler sched({.threads = 2});
  Event never;
  std::atomic<int> finished{0};
  std::stop_source stop;
  std::vector<Task<int>> tasks;
  tasks.push_back(Loser(&never, stop.get_token(), nullptr, &finished));
  tasks.push_back(Value(42));
  tasks.push_back(Loser(&never, stop.get_token(), nullptr, &finished));
  auto [index, value] = sched.BlockOn(WhenAny(stop, std::move(tasks)));
  EXPECT_EQ(index, 1u);
  EXPECT_EQ(value, 42);
  EXPECT_TRUE(stop.stop_requested());  // the caller's source, shared
  EXPECT_EQ(finished.load(), 2);       // both losers finished before WhenAny returned
  EXPECT_EQ(never.waiters(), 0u);
}

TEST(WhenAnyTest, WaitsForSlowLosersBeforeReturning) {
  Scheduler sched({.threads = 2});
  Event never, linger;
  std::atomic<int> finished{0};
  std::stop_source stop;
  std::vector<Task<int>> tasks;
  tasks.push_back(Value(7));
  tasks.push_back(Loser(&never, stop.get_token(), &linger, &finished));
  Outcome<int> winner_seen_finished;
  sched.Spawn(RunInto(
      [](std::stop_source st, std::vector<Task<int>> t, std::atomic<int>* fin) -> Task<int> {
        auto result = co_await WhenAny(st, std::move(t));
        (void)result;
        co_return fin->load();  // how many losers had finished when WhenAny returned
      }(stop, std::move(tasks), &finished),
      &winner_seen_finished));
  ASSERT_TRUE(WaitUntil([&] { return linger.waiters() == 1; }));  // loser stopped, lingering
  EXPECT_FALSE(winner_seen_finished.done());
  linger.Set();
  EXPECT_EQ(winner_seen_finished.Get(), 1);
}

Task<int> Fails(const char* what) {
  throw std::runtime_error(what);
  co_return 0;
}

TEST(WhenAnyTest, WinnerExceptionIsRethrownAfterTheOthersFinished) {
  Scheduler sched({.threads = 2});
  Event never;
  std::atomic<int> finished{0};
  std::stop_source stop;
  std::vector<Task<int>> tasks;
  tasks.push_back(Loser(&never, stop.get_token(), nullptr, &finished));
  tasks.push_back(Fails("winner failed"));
  std::string caught = sched.BlockOn(
      [](std::stop_source st, std::vector<Task<int>> t) -> Task<std::string> {
        try {
          (void)co_await WhenAny(st, std::move(t));
        } catch (const std::runtime_error& e) {
          co_return e.what();
        }
        co_return "no exception";
      }(stop, std::move(tasks)));
  EXPECT_EQ(caught, "winner failed");
  EXPECT_EQ(finished.load(), 1);
}

TEST(WhenAnyTest, VoidTasksGiveTheWinnersIndex) {
  Scheduler sched({.threads = 2});
  Event never;
  std::stop_source stop;
  std::vector<Task<void>> tasks;
  tasks.push_back([](Event* e, std::stop_token st) -> Task<void> {
    (void)co_await e->Wait(st);
  }(&never, stop.get_token()));
  tasks.push_back([]() -> Task<void> { co_return; }());
  EXPECT_EQ(sched.BlockOn(WhenAny(stop, std::move(tasks))), 1u);
}

TEST(WhenAnyTest, EmptyInputThrows) {
  Scheduler sched({.threads = 1});
  std::stop_source stop;
  EXPECT_THROW(sched.BlockOn(WhenAny(stop, std::vector<Task<int>>{})), std::invalid_argument);
}

// The documented pattern: race a result against a timeout.
Task<absl::StatusOr<int>> Fetch(Event* reply_ready, std::stop_token stop) {
  absl::Status s = co_await reply_ready->Wait(stop);
  if (!s.ok()) co_return s;
  co_return 200;
}

Task<absl::StatusOr<int>> Timeout(absl::Duration d, std::stop_token stop) {
  absl::Status slept = co_await SleepFor(d, stop);
  if (!slept.ok()) co_return slept;  // CANCELLED: the fetch won
  co_return absl::DeadlineExceededError("fetch timed out");
}

TEST(WhenAnyTest, RaceAgainstATimeoutThatFires) {
  Scheduler sched({.threads = 2});
  Event never_ready;
  std::stop_source stop;
  std::vector<Task<absl::StatusOr<int>>> racers;
  racers.push_back(Fetch(&never_ready, stop.get_token()));
  racers.push_back(Timeout(absl::Milliseconds(10), stop.get_token()));
  auto [index, result] = sched.BlockOn(WhenAny(stop, std::move(racers)));
  EXPECT_EQ(index, 1u);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(never_ready.waiters(), 0u);  // the fetch was stopped and finished
}

TEST(WhenAnyTest, RaceAgainstATimeoutThatIsCancelled) {
  Scheduler sched({.threads = 2});
  Event ready;
  ready.Set();
  std::stop_source stop;
  std::vector<Task<absl::StatusOr<int>>> racers;
  racers.push_back(Fetch(&ready, stop.get_token()));
  racers.push_back(Timeout(absl::Hours(1), stop.get_token()));
  const absl::Time start = absl::Now();
  auto [index, result] = sched.BlockOn(WhenAny(stop, std::move(racers)));
  EXPECT_EQ(index, 0u);
  EXPECT_EQ(*result, 200);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));  // the hour-long sleep was cancelled
}

}  // namespace
}  // namespace taskq::rt
