// The async primitives with deadlines (DeadlineStop from the timers): a
// deadline is just a stop token to them, and a timer firing at the same
// instant as a wake-up must not lose what the wake-up handed over.
#include <atomic>
#include <stop_token>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/runtime/async_test_util.h"
#include "common/runtime/channel.h"
#include "common/runtime/deadline_stop.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/semaphore.h"
#include "common/runtime/task.h"
#include "gtest/gtest.h"

namespace taskq::rt {
namespace {

using testing::Outcome;
using testing::RunInto;
using testing::WaitUntil;

Task<absl::StatusOr<int>> RecvBy(Channel<int>& ch, absl::Time deadline) {
  DeadlineStop ds(deadline);
  absl::StatusOr<int> v = co_await ch.Recv(ds.token());
  if (!v.ok()) co_return ds.Translate(v.status());
  co_return v;
}

TEST(PrimitivesDeadlineTest, RecvTimesOutWithDeadlineExceeded) {
  Scheduler sched({.threads = 2});
  Channel<int> ch(1);
  absl::StatusOr<int> v = sched.BlockOn(RecvBy(ch, absl::Now() + absl::Milliseconds(5)));
  EXPECT_EQ(v.status().code(), absl::StatusCode::kDeadlineExceeded) << v.status();
  EXPECT_EQ(ch.waiting_receivers(), 0u);
}

TEST(PrimitivesDeadlineTest, AcquireTimesOutWithDeadlineExceeded) {
  Scheduler sched({.threads = 2});
  Semaphore sem(0);
  absl::Status s = sched.BlockOn([](Semaphore& sm) -> Task<absl::Status> {
    DeadlineStop ds(absl::Now() + absl::Milliseconds(5));
    co_return ds.Translate(co_await sm.Acquire(ds.token()));
  }(sem));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_EQ(sem.waiters(), 0u);
}

// The timer fires at about the moment a plain thread sends: the item is
// received, or it stays in the channel — never lost.
TEST(PrimitivesDeadlineTest, DeadlineAtTheInstantOfASendNeverLosesTheItem) {
  Scheduler sched({.threads = 2});
  int received = 0;
  for (int iter = 0; iter < testing::kRaceIterations / 3; ++iter) {
    Channel<int> ch(1);
    const absl::Time deadline = absl::Now() + absl::Milliseconds(1);
    Outcome<absl::StatusOr<int>> r;
    sched.Spawn(RunInto(RecvBy(ch, deadline), &r));
    while (absl::Now() < deadline) {  // aim the send at the deadline
    }
    ASSERT_TRUE(ch.TrySend(iter).ok());
    auto got = r.Get();
    ASSERT_TRUE(got.has_value()) << "iteration " << iter;
    if (got->ok()) {
      EXPECT_EQ(**got, iter);
      EXPECT_EQ(ch.size(), 0u);
      ++received;
    } else {
      EXPECT_EQ(got->status().code(), absl::StatusCode::kDeadlineExceeded) << got->status();
      absl::StatusOr<int> left = ch.TryRecv();
      ASSERT_TRUE(left.ok()) << "iteration " << iter << ": item lost";
      EXPECT_EQ(*left, iter);
    }
    EXPECT_EQ(r.sets(), 1);
  }
  RecordProperty("received_wins", received);
}

}  // namespace
}  // namespace taskq::rt
