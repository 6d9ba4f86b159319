// The engine's deadlines fired by the runtime-driven EngineTimer, on real
// time: timeouts and lease expiry happen without a timer thread of ours.
#include "master/engine_timer.h"

#include <atomic>
#include <optional>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "common/limits.h"
#include "master/engine/task_engine.h"

namespace taskq {
namespace {

bool WaitFor(const std::function<bool()>& cond, absl::Duration timeout = absl::Seconds(10)) {
  absl::Time deadline = absl::Now() + timeout;
  while (!cond()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

class EngineTimerTest : public testing::Test {
 protected:
  EngineTimerTest()
      : timer_(sched_, RealClock::Get()),
        engine_(EngineOptions{}, RealClock::Get(), [this] { timer_.Wake(); }) {
    timer_.Start(&engine_);
  }
  ~EngineTimerTest() override { timer_.Stop(); }

  rt::Scheduler sched_{{.threads = 2}};
  EngineTimer timer_;
  TaskEngine engine_;
};

TEST_F(EngineTimerTest, LongPollTimesOut) {
  std::atomic<int> code{-1};
  GetArgs args;
  args.queue = "empty";
  args.deadline = absl::Now() + absl::Milliseconds(50);
  absl::Time start = absl::Now();
  engine_.Get(std::move(args), [&](auto got) { code = static_cast<int>(got.status().code()); });
  ASSERT_TRUE(WaitFor([&] { return code.load() != -1; }));
  EXPECT_EQ(code.load(), static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(50));
}

TEST_F(EngineTimerTest, EarlierDeadlineWakesTheSleepingLoop) {
  // A far deadline first, so the loop sleeps long; then a near one.
  GetArgs far;
  far.queue = "a";
  far.deadline = absl::Now() + absl::Hours(1);
  engine_.Get(std::move(far), [](auto) {});
  std::atomic<bool> fired{false};
  GetArgs near;
  near.queue = "b";
  near.deadline = absl::Now() + absl::Milliseconds(20);
  engine_.Get(std::move(near), [&](auto) { fired = true; });
  EXPECT_TRUE(WaitFor([&] { return fired.load(); }, absl::Seconds(5)));
}

TEST_F(EngineTimerTest, ExpiredLeaseReturnsToReady) {
  v1::QueueConfig config;
  config.set_name("leases");
  config.set_lease_ms(kMinLeaseMs);
  config.set_backoff_ms(1);
  config.set_backoff_max_ms(1);
  ASSERT_TRUE(engine_.CreateQueue(config, false).ok());
  PutArgs put;
  put.queue = "leases";
  put.tasks.emplace_back().set_payload("x");
  engine_.Put(std::move(put), [](auto) {});
  GetArgs get;
  get.queue = "leases";
  get.lease = true;
  get.nowait = true;
  std::atomic<bool> leased{false};
  engine_.Get(std::move(get), [&](auto got) { leased = got.ok(); });
  ASSERT_TRUE(leased.load());
  EXPECT_TRUE(WaitFor([&] {
    auto s = engine_.Stats("leases");
    return s.ok() && s->ready() == 1 && s->leased() == 0;
  }));
}

TEST_F(EngineTimerTest, StopIsPromptAndIdempotent) {
  absl::Time start = absl::Now();
  timer_.Stop();
  timer_.Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

}  // namespace
}  // namespace taskq
