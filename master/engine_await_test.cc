// Engine waits awaited by coroutines on a real scheduler: the behaviour the
// master's coroutine handlers rely on (wake-ups, cancellation, no lost task).
#include "master/engine_await.h"

#include <atomic>
#include <memory>
#include <thread>

#include "absl/time/clock.h"
#include "common/runtime/scheduler.h"
#include "gtest/gtest.h"
#include "master/engine/task_engine.h"

namespace taskq {
namespace {

class EngineAwaitTest : public testing::Test {
 public:  // spawned coroutines (static lambdas) reach in through a pointer
  EngineAwaitTest() : engine_(EngineOptions{}, RealClock::Get()) {}

  GetArgs Get(const std::string& queue) {
    GetArgs args;
    args.queue = queue;
    args.max_tasks = 1;
    return args;
  }
  PutArgs Put(const std::string& queue, const std::string& payload) {
    PutArgs args;
    args.queue = queue;
    v1::TaskSpec spec;
    spec.set_payload(payload);
    args.tasks.push_back(spec);
    args.nowait = true;
    return args;
  }
  uint64_t Ready(const std::string& queue) {
    auto stats = engine_.Stats(queue);
    return stats.ok() ? stats->ready() : 0;
  }
  static bool WaitFor(const std::function<bool()>& cond) {
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (!cond()) {
      if (absl::Now() > deadline) return false;
      std::this_thread::yield();
    }
    return true;
  }

  TaskEngine engine_;
  rt::Scheduler sched_{{.threads = 2}};
};

TEST_F(EngineAwaitTest, ReadyTaskResumesWithoutSuspending) {
  ASSERT_TRUE(sched_.BlockOn([this]() -> rt::Task<bool> {
    auto ids = co_await AwaitPut(engine_, Put("q", "x"), {}, &sched_);
    co_return ids.ok();
  }()));
  auto got = sched_.BlockOn([this]() -> rt::Task<GetOutcome> {
    co_return co_await AwaitGet(engine_, Get("q"), {}, &sched_);
  }());
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].task().payload(), "x");
}

TEST_F(EngineAwaitTest, WaitingGetIsWokenByALaterPut) {
  std::atomic<int> received{0};
  // Spawned coroutines take what they need as parameters (copied into the
  // frame): a capturing lambda temporary would be gone when they resume.
  sched_.Spawn([](EngineAwaitTest* t, std::atomic<int>* received) -> rt::Task<void> {
    auto got = co_await AwaitGet(t->engine_, t->Get("later"), {}, &t->sched_);
    if (got.ok() && got->size() == 1 && (*got)[0].task().payload() == "y") *received = 1;
  }(this, &received));
  ASSERT_TRUE(WaitFor([&] {
    auto s = engine_.Stats("later");
    return s.ok() && s->waiting_consumers() == 1;
  }));
  engine_.Put(Put("later", "y"), [](auto) {});
  EXPECT_TRUE(WaitFor([&] { return received.load() == 1; }));
}

TEST_F(EngineAwaitTest, StopCancelsTheWaitAndTakesNothing) {
  std::stop_source stop;
  std::atomic<int> code{-1};
  sched_.Spawn([](EngineAwaitTest* t, std::atomic<int>* code,
                  std::stop_token token) -> rt::Task<void> {
    auto got = co_await AwaitGet(t->engine_, t->Get("idle"), token, &t->sched_);
    *code = static_cast<int>(got.status().code());
  }(this, &code, stop.get_token()));
  ASSERT_TRUE(WaitFor([&] {
    auto s = engine_.Stats("idle");
    return s.ok() && s->waiting_consumers() == 1;
  }));
  stop.request_stop();
  ASSERT_TRUE(WaitFor([&] { return code.load() != -1; }));
  EXPECT_EQ(code.load(), static_cast<int>(absl::StatusCode::kCancelled));
  engine_.Put(Put("idle", "z"), [](auto) {});
  EXPECT_EQ(Ready("idle"), 1u);  // the cancelled getter did not take it
}

TEST_F(EngineAwaitTest, StopRacingAPutNeverLosesTheTask) {
  // Each round a getter waits, then a put and a stop happen at the same
  // time. Either the getter gets the task, or it is cancelled and the task
  // stays ready: it is never taken by a getter that reports CANCELLED.
  constexpr int kRounds = 300;
  for (int i = 0; i < kRounds; ++i) {
    std::string queue = "race" + std::to_string(i);
    std::stop_source stop;
    std::atomic<int> outcome{0};  // 1 = got it, 2 = cancelled
    sched_.Spawn([](EngineAwaitTest* t, std::string queue, std::atomic<int>* outcome,
                    std::stop_token token) -> rt::Task<void> {
      auto got = co_await AwaitGet(t->engine_, t->Get(queue), token, &t->sched_);
      *outcome = got.ok() ? 1 : 2;
    }(this, queue, &outcome, stop.get_token()));
    ASSERT_TRUE(WaitFor([&] {
      auto s = engine_.Stats(queue);
      return s.ok() && s->waiting_consumers() == 1;
    }));
    std::thread stopper([&] { stop.request_stop(); });
    engine_.Put(Put(queue, "t"), [](auto) {});
    stopper.join();
    ASSERT_TRUE(WaitFor([&] { return outcome.load() != 0; }));
    EXPECT_EQ(Ready(queue), outcome.load() == 1 ? 0u : 1u) << "round " << i;
  }
}

TEST_F(EngineAwaitTest, AlreadyStoppedTokenFinishesCancelled) {
  std::stop_source stop;
  stop.request_stop();
  auto got = sched_.BlockOn([&]() -> rt::Task<GetOutcome> {
    co_return co_await AwaitGet(engine_, Get("pre"), stop.get_token(), &sched_);
  }());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kCancelled);
}

TEST_F(EngineAwaitTest, JoinWaitsForCompletion) {
  ASSERT_TRUE(engine_.CreateQueue([] {
    v1::QueueConfig c;
    c.set_name("j");
    return c;
  }(), true).ok());
  engine_.Put(Put("j", "a"), [](auto) {});
  std::atomic<int> joined{0};
  sched_.Spawn([](EngineAwaitTest* t, std::atomic<int>* joined) -> rt::Task<void> {
    absl::Status s = co_await AwaitJoin(t->engine_, "j", absl::InfiniteFuture(), {}, &t->sched_);
    *joined = s.ok() ? 1 : 2;
  }(this, &joined));
  GetArgs take = Get("j");
  engine_.Get(take, [](auto) {});  // take mode counts it done
  EXPECT_TRUE(WaitFor([&] { return joined.load() == 1; }));
}

}  // namespace
}  // namespace taskq
