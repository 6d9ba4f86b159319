#include "common/runtime/channel.h"

#include <atomic>
#include <memory>
#include <stop_token>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/runtime/async_test_util.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/task.h"
#include "common/runtime/when_all.h"
#include "gtest/gtest.h"

namespace taskq::rt {
namespace {

using testing::Outcome;
using testing::RunInto;
using testing::WaitUntil;

Task<absl::Status> Send(Channel<int>& ch, int v, std::stop_token stop = {}) {
  co_return co_await ch.Send(v, stop);
}
Task<absl::StatusOr<int>> Recv(Channel<int>& ch, std::stop_token stop = {}) {
  co_return co_await ch.Recv(stop);
}

TEST(ChannelTest, BufferedItemsComeOutInOrder) {
  Scheduler sched({.threads = 1});
  Channel<int> ch(3);
  EXPECT_EQ(ch.capacity(), 3u);
  for (int i = 1; i <= 3; ++i) EXPECT_TRUE(sched.BlockOn(Send(ch, i)).ok());
  EXPECT_EQ(ch.size(), 3u);
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(*sched.BlockOn(Recv(ch)), i);
  EXPECT_EQ(ch.size(), 0u);
}

TEST(ChannelTest, TrySendAndTryRecvNeverWait) {
  Channel<int> ch(1);
  absl::StatusOr<int> empty = ch.TryRecv();
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(empty.status().message(), "channel empty");
  EXPECT_TRUE(ch.TrySend(1).ok());
  absl::Status full = ch.TrySend(2);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(full.message(), "channel full");
  EXPECT_EQ(*ch.TryRecv(), 1);
}

TEST(ChannelTest, FailedTrySendLeavesAMoveOnlyItemWithTheCaller) {
  Channel<std::unique_ptr<int>> ch(1);
  EXPECT_TRUE(ch.TrySend(std::make_unique<int>(1)).ok());
  auto second = std::make_unique<int>(2);
  EXPECT_FALSE(ch.TrySend(std::move(second)).ok());
  ASSERT_NE(second, nullptr);  // not moved from on failure
  EXPECT_EQ(*second, 2);
  EXPECT_EQ(**ch.TryRecv(), 1);
}

TEST(ChannelTest, SendWaitsWhileFullAndKeepsOrder) {
  Scheduler sched({.threads = 2});
  Channel<int> ch(2);
  ASSERT_TRUE(ch.TrySend(1).ok());
  ASSERT_TRUE(ch.TrySend(2).ok());
  Outcome<absl::Status> sent3, sent4;
  sched.Spawn(RunInto(Send(ch, 3), &sent3));
  ASSERT_TRUE(WaitUntil([&] { return ch.waiting_senders() == 1; }));
  sched.Spawn(RunInto(Send(ch, 4), &sent4));
  ASSERT_TRUE(WaitUntil([&] { return ch.waiting_senders() == 2; }));
  EXPECT_FALSE(sent3.done());
  EXPECT_EQ(ch.TrySend(5).code(), absl::StatusCode::kResourceExhausted);  // no overtaking
  EXPECT_EQ(*ch.TryRecv(), 1);  // frees a slot: the oldest sender's item moves in
  EXPECT_EQ(sent3.Get(), absl::OkStatus());
  EXPECT_FALSE(sent4.done());
  EXPECT_EQ(*ch.TryRecv(), 2);
  EXPECT_EQ(sent4.Get(), absl::OkStatus());
  EXPECT_EQ(*ch.TryRecv(), 3);
  EXPECT_EQ(*ch.TryRecv(), 4);
}

TEST(ChannelTest, RecvWaitsWhileEmptyOldestReceiverFirst) {
  Scheduler sched({.threads = 2});
  Channel<int> ch(4);
  Outcome<absl::StatusOr<int>> r1, r2;
  sched.Spawn(RunInto(Recv(ch), &r1));
  ASSERT_TRUE(WaitUntil([&] { return ch.waiting_receivers() == 1; }));
  sched.Spawn(RunInto(Recv(ch), &r2));
  ASSERT_TRUE(WaitUntil([&] { return ch.waiting_receivers() == 2; }));
  EXPECT_TRUE(ch.TrySend(10).ok());  // straight to the oldest receiver
  EXPECT_EQ(r1.Get()->value(), 10);
  EXPECT_FALSE(r2.done());
  EXPECT_EQ(ch.size(), 0u);
  EXPECT_TRUE(ch.TrySend(11).ok());
  EXPECT_EQ(r2.Get()->value(), 11);
}

TEST(ChannelTest, CapacityZeroIsARendezvous) {
  Scheduler sched({.threads = 2});
  Channel<int> ch(0);
  EXPECT_EQ(ch.TrySend(1).code(), absl::StatusCode::kResourceExhausted);  // nobody receiving
  Outcome<absl::Status> sent;
  sched.Spawn(RunInto(Send(ch, 7), &sent));
  ASSERT_TRUE(WaitUntil([&] { return ch.waiting_senders() == 1; }));
  EXPECT_FALSE(sent.done());  // completes only when taken
  EXPECT_EQ(ch.size(), 0u);
  EXPECT_EQ(*sched.BlockOn(Recv(ch)), 7);
  EXPECT_EQ(sent.Get(), absl::OkStatus());
  // A waiting receiver makes TrySend succeed.
  Outcome<absl::StatusOr<int>> got;
  sched.Spawn(RunInto(Recv(ch), &got));
  ASSERT_TRUE(WaitUntil([&] { return ch.waiting_receivers() == 1; }));
  EXPECT_TRUE(ch.TrySend(8).ok());
  EXPECT_EQ(got.Get()->value(), 8);
}

TEST(ChannelTest, CloseDrainsThenSaysClosed) {
  Scheduler sched({.threads = 1});
  Channel<int> ch(4);
  ASSERT_TRUE(ch.TrySend(1).ok());
  ASSERT_TRUE(ch.TrySend(2).ok());
  ch.Close();
  ch.Close();  // idempotent
  EXPECT_TRUE(ch.closed());
  absl::Status late = sched.BlockOn(Send(ch, 3));
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(late.message(), "channel closed");
  EXPECT_EQ(ch.TrySend(3).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(*sched.BlockOn(Recv(ch)), 1);
  EXPECT_EQ(*ch.TryRecv(), 2);
  absl::StatusOr<int> end = sched.BlockOn(Recv(ch));
  EXPECT_EQ(end.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(end.status().message(), "channel closed");
  EXPECT_EQ(ch.TryRecv().status().code(), absl::StatusCode::kOutOfRange);
}

TEST(ChannelTest, CloseWakesWaitingReceiversAndSenders) {
  Scheduler sched({.threads = 2});
  Channel<int> empty(1), full(1);
  ASSERT_TRUE(full.TrySend(1).ok());
  Outcome<absl::StatusOr<int>> r1, r2;
  Outcome<absl::Status> s1;
  sched.Spawn(RunInto(Recv(empty), &r1));
  sched.Spawn(RunInto(Recv(empty), &r2));
  sched.Spawn(RunInto(Send(full, 2), &s1));
  ASSERT_TRUE(WaitUntil([&] {
    return empty.waiting_receivers() == 2 && full.waiting_senders() == 1;
  }));
  std::thread([&] {  // from a plain thread
    empty.Close();
    full.Close();
  }).join();
  EXPECT_EQ(r1.Get()->status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(r2.Get()->status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(s1.Get()->code(), absl::StatusCode::kFailedPrecondition);
  // The waiting sender's item was not delivered; the buffered one still is.
  EXPECT_EQ(*full.TryRecv(), 1);
  EXPECT_EQ(full.TryRecv().status().code(), absl::StatusCode::kOutOfRange);
}

TEST(ChannelTest, MoveOnlyItems) {
  Scheduler sched({.threads = 2});
  Channel<std::unique_ptr<int>> ch(0);
  Outcome<absl::Status> sent;
  sched.Spawn(RunInto(
      [](Channel<std::unique_ptr<int>>& c) -> Task<absl::Status> {
        co_return co_await c.Send(std::make_unique<int>(42));
      }(ch),
      &sent));
  int got = sched.BlockOn([](Channel<std::unique_ptr<int>>& c) -> Task<int> {
    absl::StatusOr<std::unique_ptr<int>> v = co_await c.Recv();
    co_return v.ok() ? **v : -1;
  }(ch));
  EXPECT_EQ(got, 42);
  EXPECT_EQ(sent.Get(), absl::OkStatus());
}

// Many producers and consumers: every item is received exactly once.
class ChannelStressTest : public ::testing::TestWithParam<size_t> {};

Task<void> ProduceRange(Channel<int>& ch, int from, int count) {
  for (int i = from; i < from + count; ++i) {
    absl::Status s = co_await ch.Send(i);
    EXPECT_TRUE(s.ok()) << s;
  }
}

Task<void> ProduceAllThenClose(Channel<int>& ch, int producers, int each) {
  std::vector<Task<void>> tasks;
  for (int p = 0; p < producers; ++p) tasks.push_back(ProduceRange(ch, p * each, each));
  co_await WhenAll(std::move(tasks));
  ch.Close();
}

Task<std::vector<int>> ConsumeAll(Channel<int>& ch) {
  std::vector<int> got;
  while (true) {
    absl::StatusOr<int> v = co_await ch.Recv();
    if (!v.ok()) {
      EXPECT_EQ(v.status().code(), absl::StatusCode::kOutOfRange);
      co_return got;
    }
    got.push_back(*v);
  }
}

TEST_P(ChannelStressTest, ManyProducersManyConsumersEveryItemOnce) {
  Scheduler sched({.threads = 4});
  Channel<int> ch(GetParam());
  constexpr int kProducers = 8, kConsumers = 8, kEach = 10000;
  std::vector<Task<std::vector<int>>> consumers;
  for (int c = 0; c < kConsumers; ++c) consumers.push_back(ConsumeAll(ch));
  auto [received, unused] = sched.BlockOn(
      WhenAll(WhenAll(std::move(consumers)), ProduceAllThenClose(ch, kProducers, kEach)));
  constexpr int kTotal = kProducers * kEach;
  std::vector<int> seen(kTotal, 0);
  int64_t sum = 0;
  for (const std::vector<int>& part : received) {
    // Items from one producer arrive in the order it sent them.
    std::vector<int> last(kProducers, -1);
    for (int v : part) {
      ASSERT_GE(v, 0);
      ASSERT_LT(v, kTotal);
      ++seen[v];
      sum += v;
      EXPECT_GT(v, last[v / kEach]);
      last[v / kEach] = v;
    }
  }
  for (int v = 0; v < kTotal; ++v) ASSERT_EQ(seen[v], 1) << "item " << v;
  EXPECT_EQ(sum, int64_t{kTotal} * (kTotal - 1) / 2);
  EXPECT_EQ(ch.size(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Capacities, ChannelStressTest, ::testing::Values(0, 1, 64));

TEST(ChannelTest, StopCancelsWaitingRecvAndSend) {
  Scheduler sched({.threads = 2});
  Channel<int> empty(1), full(1);
  ASSERT_TRUE(full.TrySend(1).ok());
  std::stop_source stop;
  Outcome<absl::StatusOr<int>> r;
  Outcome<absl::Status> s;
  sched.Spawn(RunInto(Recv(empty, stop.get_token()), &r));
  sched.Spawn(RunInto(Send(full, 2, stop.get_token()), &s));
  ASSERT_TRUE(WaitUntil([&] {
    return empty.waiting_receivers() == 1 && full.waiting_senders() == 1;
  }));
  std::thread([&] { stop.request_stop(); }).join();
  EXPECT_EQ(r.Get()->status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(s.Get()->code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(empty.waiting_receivers(), 0u);
  EXPECT_EQ(full.waiting_senders(), 0u);
  // The cancelled send delivered nothing; a later item goes to a later receiver.
  EXPECT_EQ(*full.TryRecv(), 1);
  EXPECT_EQ(full.TryRecv().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(empty.TrySend(3).ok());
  EXPECT_EQ(*empty.TryRecv(), 3);
  // Already stopped: CANCELLED without taking the available item.
  EXPECT_TRUE(empty.TrySend(4).ok());
  EXPECT_EQ(sched.BlockOn(Recv(empty, stop.get_token())).status().code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(empty.size(), 1u);
}

// An item sent to a receiver that is being cancelled at the same moment is
// either received by it or stays in the channel: never lost, never twice.
TEST(ChannelTest, SendRacingRecvCancelNeverLosesTheItem) {
  Scheduler sched({.threads = 2});
  int received = 0;
  for (int iter = 0; iter < testing::kRaceIterations; ++iter) {
    Channel<int> ch(1);
    std::stop_source stop;
    Outcome<absl::StatusOr<int>> r;
    sched.Spawn(RunInto(Recv(ch, stop.get_token()), &r));
    ASSERT_TRUE(WaitUntil([&] { return ch.waiting_receivers() == 1; }));
    std::atomic<bool> go{false};
    std::thread sender([&] {
      testing::SpinUntil(go);
      EXPECT_TRUE(ch.TrySend(iter).ok());
    });
    std::thread canceller([&] {
      testing::SpinUntil(go);
      stop.request_stop();
    });
    go.store(true, std::memory_order_release);
    sender.join();
    canceller.join();
    auto got = r.Get();
    ASSERT_TRUE(got.has_value()) << "iteration " << iter;
    if (got->ok()) {
      EXPECT_EQ(**got, iter);
      EXPECT_EQ(ch.size(), 0u);
      ++received;
    } else {
      EXPECT_EQ(got->status().code(), absl::StatusCode::kCancelled);
      absl::StatusOr<int> left = ch.TryRecv();
      ASSERT_TRUE(left.ok()) << "iteration " << iter << ": item lost";
      EXPECT_EQ(*left, iter);
    }
    EXPECT_EQ(r.sets(), 1);
  }
  RecordProperty("received_wins", received);
}

// A waiting sender cancelled while a receiver frees its slot: the item is
// delivered (Send OK) exactly when it is in the channel afterwards.
TEST(ChannelTest, RecvRacingSendCancelDeliversIffSendSucceeded) {
  Scheduler sched({.threads = 2});
  for (int iter = 0; iter < testing::kRaceIterations; ++iter) {
    Channel<int> ch(1);
    ASSERT_TRUE(ch.TrySend(1).ok());
    std::stop_source stop;
    Outcome<absl::Status> s;
    sched.Spawn(RunInto(Send(ch, 2, stop.get_token()), &s));
    ASSERT_TRUE(WaitUntil([&] { return ch.waiting_senders() == 1; }));
    std::atomic<bool> go{false};
    std::thread receiver([&] {
      testing::SpinUntil(go);
      EXPECT_EQ(*ch.TryRecv(), 1);
    });
    std::thread canceller([&] {
      testing::SpinUntil(go);
      stop.request_stop();
    });
    go.store(true, std::memory_order_release);
    receiver.join();
    canceller.join();
    auto sent = s.Get();
    ASSERT_TRUE(sent.has_value()) << "iteration " << iter;
    absl::StatusOr<int> left = ch.TryRecv();
    if (sent->ok()) {
      ASSERT_TRUE(left.ok()) << "iteration " << iter << ": delivered item lost";
      EXPECT_EQ(*left, 2);
    } else {
      EXPECT_EQ(sent->code(), absl::StatusCode::kCancelled);
      EXPECT_EQ(left.status().code(), absl::StatusCode::kUnavailable);
    }
    EXPECT_EQ(s.sets(), 1);
  }
}

TEST(ChannelTest, PlainThreadsFeedAndDrainPoolCoroutines) {
  Scheduler sched({.threads = 2});
  Channel<int> in(2), out(2);
  // A pool coroutine relays `in` to `out` doubled, until `in` closes.
  Outcome<int> relayed;
  sched.Spawn(RunInto(
      [](Channel<int>& from, Channel<int>& to) -> Task<int> {
        int n = 0;
        while (true) {
          absl::StatusOr<int> v = co_await from.Recv();
          if (!v.ok()) break;
          (void)co_await to.Send(*v * 2);
          ++n;
        }
        to.Close();
        co_return n;
      }(in, out),
      &relayed));
  constexpr int kItems = 500;
  std::thread producer([&] {
    for (int i = 0; i < kItems; ++i) {
      while (!in.TrySend(i).ok()) std::this_thread::yield();  // put_nowait in a loop
    }
    in.Close();
  });
  int64_t sum = 0;
  int count = 0;
  while (true) {
    absl::StatusOr<int> v = out.TryRecv();
    if (v.ok()) {
      sum += *v;
      ++count;
    } else if (v.status().code() == absl::StatusCode::kOutOfRange) {
      break;
    } else {
      std::this_thread::yield();
    }
  }
  producer.join();
  EXPECT_EQ(count, kItems);
  EXPECT_EQ(sum, int64_t{kItems} * (kItems - 1));
  EXPECT_EQ(relayed.Get(), kItems);
}

}  // namespace
}  // namespace taskq::rt
