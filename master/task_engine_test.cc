// Unit tests for the in-memory queue engine: kinds, maxsize, long-poll,
// leases, results, join, credits. Time is a FakeClock moved by the test
// (engine_test_util.h). The rules of issue 5 (delays, retries, dead letters,
// dedup, cancel, release, shutdown, status) are in
// task_engine_reliability_test.cc. The stress test at the end runs on real
// time with the master's EngineTimer on a runtime scheduler.
#include "master/engine/task_engine.h"
#include "master/engine_test_util.h"
#include "common/runtime/scheduler.h"
#include "master/engine_timer.h"

#include <atomic>
#include <deque>
#include <map>
#include <optional>
#include <thread>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/limits.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace taskq {
namespace {

using ::testing::ElementsAre;
using ::testing::SizeIs;

TEST_F(EngineTest, FifoHandsOutInPutOrder) {
  MustPut("q", {Spec("a"), Spec("b")});
  MustPut("q", {Spec("c")});
  EXPECT_THAT(Payloads(MustGet("q", false, 10)), ElementsAre("a", "b", "c"));
}

TEST_F(EngineTest, LifoHandsOutNewestFirst) {
  CreateQueue("stack", v1::QUEUE_KIND_LIFO);
  MustPut("stack", {Spec("a"), Spec("b"), Spec("c")});
  EXPECT_THAT(Payloads(MustGet("stack", false, 10)), ElementsAre("c", "b", "a"));
}

TEST_F(EngineTest, PriorityLowestFirstTiesInPutOrder) {
  CreateQueue("p", v1::QUEUE_KIND_PRIORITY);
  MustPut("p", {Spec("low1", 5), Spec("high", -1), Spec("low2", 5), Spec("mid", 0)});
  EXPECT_THAT(Payloads(MustGet("p", false, 10)), ElementsAre("high", "mid", "low1", "low2"));
}

TEST_F(EngineTest, CreateQueueIsIdempotentOnlyWithSameSettings) {
  CreateQueue("q", v1::QUEUE_KIND_FIFO, 5);
  v1::QueueConfig same;
  same.set_name("q");
  same.set_kind(v1::QUEUE_KIND_FIFO);
  same.set_maxsize(5);
  EXPECT_TRUE(engine_->CreateQueue(same, /*exist_ok=*/true).ok());
  EXPECT_EQ(engine_->CreateQueue(same, false).status().code(), absl::StatusCode::kAlreadyExists);
  same.set_maxsize(6);
  EXPECT_EQ(engine_->CreateQueue(same, true).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(EngineTest, BadNamesAndOversizedPayloadsAreRefused) {
  PutCapture r;
  PutAsync("bad name!", {Spec("x")}, &r);
  ASSERT_TRUE(r.done());
  EXPECT_EQ(r.value->status().code(), absl::StatusCode::kInvalidArgument);

  EngineOptions small;
  small.max_payload_bytes = 4;
  Reset(small);
  r = {};
  PutAsync("q", {Spec("12345")}, &r);
  ASSERT_TRUE(r.done());
  EXPECT_EQ(r.value->status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.value->status().message()), ::testing::HasSubstr("too large"));
}

TEST_F(EngineTest, UnknownQueueRefusedWithoutAutoCreate) {
  EngineOptions strict;
  strict.auto_create_queues = false;
  Reset(strict);
  PutCapture r;
  PutAsync("nope", {Spec("x")}, &r);
  ASSERT_TRUE(r.done());
  EXPECT_EQ(r.value->status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.value->status().message()), ::testing::HasSubstr("taskq queue create"));
}

TEST_F(EngineTest, PutNowaitOnFullQueueFailsAtOnce) {
  CreateQueue("small", v1::QUEUE_KIND_FIFO, 2);
  MustPut("small", {Spec("a"), Spec("b")});
  PutCapture r;
  PutAsync("small", {Spec("c")}, &r, absl::InfiniteFuture(), /*nowait=*/true);
  ASSERT_TRUE(r.done());
  EXPECT_EQ(r.value->status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Stats("small").ready(), 2u);
}

TEST_F(EngineTest, BatchLargerThanMaxsizeCanNeverFit) {
  CreateQueue("small", v1::QUEUE_KIND_FIFO, 2);
  PutCapture r;
  PutAsync("small", {Spec("a"), Spec("b"), Spec("c")}, &r);
  ASSERT_TRUE(r.done());
  EXPECT_EQ(r.value->status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, BlockedPutIsAdmittedWhenRoomAppears) {
  CreateQueue("small", v1::QUEUE_KIND_FIFO, 1);
  MustPut("small", {Spec("a")});
  PutCapture r;
  PutAsync("small", {Spec("b")}, &r, clock_.Now() + absl::Seconds(5));
  EXPECT_FALSE(r.done());
  EXPECT_EQ(Stats("small").waiting_producers(), 1u);
  EXPECT_THAT(Payloads(MustGet("small")), ElementsAre("a"));
  ASSERT_TRUE(r.done());
  EXPECT_TRUE(r.value->ok());
  EXPECT_THAT(Payloads(MustGet("small")), ElementsAre("b"));
}

TEST_F(EngineTest, BlockedPutTimesOutAsFull) {
  CreateQueue("small", v1::QUEUE_KIND_FIFO, 1);
  MustPut("small", {Spec("a")});
  PutCapture r;
  PutAsync("small", {Spec("b")}, &r, clock_.Now() + absl::Seconds(5));
  clock_.Advance(absl::Seconds(4));
  engine_->AdvanceTo(clock_.Now());
  EXPECT_FALSE(r.done());
  clock_.Advance(absl::Seconds(1));
  engine_->AdvanceTo(clock_.Now());
  ASSERT_TRUE(r.done());
  EXPECT_EQ(r.value->status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Stats("small").waiting_producers(), 0u);
  EXPECT_EQ(Stats("small").ready(), 1u);
}

TEST_F(EngineTest, GetNowaitOnEmptyQueueSaysEmpty) {
  GetCapture r;
  GetAsync("q", &r, false, 1, absl::InfiniteFuture(), /*nowait=*/true);
  ASSERT_TRUE(r.done());
  EXPECT_EQ(r.value->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(r.value->status().message()), ::testing::HasSubstr("empty"));
}

TEST_F(EngineTest, LongPollIsWokenByPutAndTimesOutOtherwise) {
  GetCapture woken, timed_out;
  GetAsync("q", &woken, false, 1, clock_.Now() + absl::Seconds(5));
  GetAsync("q", &timed_out, false, 1, clock_.Now() + absl::Seconds(5));
  EXPECT_EQ(Stats("q").waiting_consumers(), 2u);
  MustPut("q", {Spec("x")});
  ASSERT_TRUE(woken.done());  // the oldest waiter is served first
  EXPECT_THAT(Payloads(**woken.value), ElementsAre("x"));
  EXPECT_FALSE(timed_out.done());
  clock_.Advance(absl::Seconds(5));
  engine_->AdvanceTo(clock_.Now());
  ASSERT_TRUE(timed_out.done());
  EXPECT_EQ(timed_out.value->status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(EngineTest, CancelledWaiterDoesNotSwallowALaterTask) {
  GetCapture r;
  WaitId id = GetAsync("q", &r);
  ASSERT_NE(id, 0u);
  engine_->CancelWait(id);
  ASSERT_TRUE(r.done());
  EXPECT_EQ(r.value->status().code(), absl::StatusCode::kCancelled);
  MustPut("q", {Spec("kept")});
  EXPECT_EQ(Stats("q").ready(), 1u);
  engine_->CancelWait(id);  // a second cancel is harmless
}

TEST_F(EngineTest, CompleteDeliversExactlyOneResult) {
  auto ids = MustPut("q", {Spec("7", 0, "results")});
  auto leased = MustGet("q", /*lease=*/true);
  ASSERT_THAT(leased, SizeIs(1));
  EXPECT_EQ(leased[0].task().attempt(), 1u);
  EXPECT_EQ(Stats("q").leased(), 1u);
  ASSERT_TRUE(engine_->Complete(ids[0], leased[0].lease_id(), "7 * 7 = 49").ok());
  EXPECT_EQ(engine_->Complete(ids[0], leased[0].lease_id(), "again").code(),
            absl::StatusCode::kFailedPrecondition);
  auto results = MustGet("results", false, 10);
  ASSERT_THAT(results, SizeIs(1));
  EXPECT_EQ(results[0].task().payload(), "7 * 7 = 49");
  EXPECT_EQ(results[0].task().result_of(), ids[0]);
  EXPECT_EQ(results[0].task().outcome(), v1::OUTCOME_OK);
  EXPECT_EQ(Stats("q").unfinished(), 0u);
  EXPECT_EQ(Stats("q").total_completed(), 1u);
}

TEST_F(EngineTest, ExpiredLeaseIsRedeliveredAndTheOldLeaseCannotComplete) {
  auto ids = MustPut("q", {Spec("x", 0, "r")});
  auto first = MustGet("q", true);
  Advance(absl::Seconds(10));
  // Back after the retry backoff (1 s by default, with jitter).
  EXPECT_EQ(Stats("q").delayed(), 1u);
  Advance(absl::Seconds(1));
  EXPECT_EQ(Stats("q").ready(), 1u);
  auto second = MustGet("q", true);
  ASSERT_THAT(second, SizeIs(1));
  EXPECT_EQ(second[0].task().attempt(), 2u);
  EXPECT_EQ(engine_->Complete(ids[0], first[0].lease_id(), "late").code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(engine_->Complete(ids[0], second[0].lease_id(), "ok").ok());
  auto results = MustGet("r", false, 10);
  ASSERT_THAT(results, SizeIs(1));
  EXPECT_EQ(results[0].task().payload(), "ok");
}

TEST_F(EngineTest, ExtendLeasePushesTheDeadline) {
  MustPut("q", {Spec("x")});
  auto d = MustGet("q", true);
  clock_.Advance(absl::Seconds(8));
  auto extended = engine_->ExtendLease(d[0].lease_id());
  ASSERT_TRUE(extended.ok());
  EXPECT_EQ(*extended, clock_.Now() + absl::Seconds(10));
  clock_.Advance(absl::Seconds(8));
  engine_->AdvanceTo(clock_.Now());
  EXPECT_EQ(Stats("q").leased(), 1u);
  clock_.Advance(absl::Seconds(2));
  engine_->AdvanceTo(clock_.Now());
  EXPECT_EQ(Stats("q").leased(), 0u);
  EXPECT_EQ(engine_->ExtendLease(d[0].lease_id()).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(EngineTest, GivenUpAfterMaxAttemptsWithAFailedResult) {
  CreateQueue("q", v1::QUEUE_KIND_FIFO, 0, /*max_attempts=*/2);
  auto ids = MustPut("q", {Spec("x", 0, "r")});
  auto d1 = MustGet("q", true);
  ASSERT_TRUE(engine_->Fail(ids[0], d1[0].lease_id(), "boom 1", false).ok());
  Advance(absl::Seconds(1));  // retry backoff
  auto d2 = MustGet("q", true);
  ASSERT_THAT(d2, SizeIs(1));
  EXPECT_EQ(d2[0].task().attempt(), 2u);
  ASSERT_TRUE(engine_->Fail(ids[0], d2[0].lease_id(), "boom 2", false).ok());
  auto results = MustGet("r", false, 10);
  ASSERT_THAT(results, SizeIs(1));
  EXPECT_EQ(results[0].task().outcome(), v1::OUTCOME_FAILED);
  EXPECT_THAT(results[0].task().error(), ::testing::HasSubstr("boom 2"));
  EXPECT_EQ(Stats("q").total_failed(), 1u);
  EXPECT_EQ(Stats("q").unfinished(), 0u);
}

TEST_F(EngineTest, ResultForADeletedReplyQueueIsDroppedNotResurrected) {
  auto ids = MustPut("q", {Spec("x", 0, "gone")});
  auto d = MustGet("q", true);
  ASSERT_TRUE(engine_->DeleteQueue("gone").ok());
  ASSERT_TRUE(engine_->Complete(ids[0], d[0].lease_id(), "r").ok());
  EXPECT_EQ(engine_->Stats("gone").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Stats("q").total_completed(), 1u);
}

TEST_F(EngineTest, PermanentFailureIsNotRetried) {
  auto ids = MustPut("q", {Spec("x", 0, "r")});
  auto d = MustGet("q", true);
  ASSERT_TRUE(engine_->Fail(ids[0], d[0].lease_id(), "bad input", true).ok());
  auto results = MustGet("r", false, 10);
  ASSERT_THAT(results, SizeIs(1));
  EXPECT_EQ(results[0].task().error(), "bad input");
  EXPECT_EQ(Stats("q").ready(), 0u);
  EXPECT_EQ(Stats("q").delayed(), 0u);
  EXPECT_EQ(Stats("q").dead(), 1u);  // kept in the dead-letter set
}

TEST_F(EngineTest, ExpiryPastMaxAttemptsGivesUp) {
  CreateQueue("q", v1::QUEUE_KIND_FIFO, 0, /*max_attempts=*/1);
  MustPut("q", {Spec("x", 0, "r")});
  MustGet("q", true);
  clock_.Advance(absl::Seconds(10));
  engine_->AdvanceTo(clock_.Now());
  auto results = MustGet("r", false, 10);
  ASSERT_THAT(results, SizeIs(1));
  EXPECT_EQ(results[0].task().outcome(), v1::OUTCOME_FAILED);
  EXPECT_THAT(results[0].task().error(), ::testing::HasSubstr("lease expired"));
}

TEST_F(EngineTest, JoinWaitsForEveryTaskToComplete) {
  auto ids = MustPut("q", {Spec("a"), Spec("b")});
  Result<absl::Status> joined;
  engine_->Join("q", absl::InfiniteFuture(), [&](absl::Status s) { joined.value = s; });
  auto d = MustGet("q", true, 2);
  ASSERT_TRUE(engine_->Complete(ids[0], d[0].lease_id(), "").ok());
  EXPECT_FALSE(joined.done());
  ASSERT_TRUE(engine_->Complete(ids[1], d[1].lease_id(), "").ok());
  ASSERT_TRUE(joined.done());
  EXPECT_TRUE(joined.value->ok());
}

TEST_F(EngineTest, JoinTimesOut) {
  MustPut("q", {Spec("a")});
  Result<absl::Status> joined;
  engine_->Join("q", clock_.Now() + absl::Seconds(1), [&](absl::Status s) { joined.value = s; });
  clock_.Advance(absl::Seconds(1));
  engine_->AdvanceTo(clock_.Now());
  ASSERT_TRUE(joined.done());
  EXPECT_EQ(joined.value->code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(EngineTest, ManualTaskDoneFollowsPythonJoinProtocol) {
  MustPut("q", {Spec("a")});
  GetCapture got;
  GetArgs args;
  args.queue = "q";
  args.nowait = true;
  args.manual_task_done = true;
  engine_->Get(args, [&](auto r) { got.value = std::move(r); });
  ASSERT_TRUE(got.done() && got.value->ok());
  EXPECT_EQ(Stats("q").unfinished(), 1u);
  ASSERT_TRUE(engine_->TaskDone("q", 1).ok());
  EXPECT_EQ(Stats("q").unfinished(), 0u);
  EXPECT_EQ(engine_->TaskDone("q", 1).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(EngineTest, LeaseAckedAwaitingTaskDoneFollowsPythonJoinProtocol) {
  MustPut("q", {Spec("a"), Spec("b")});
  v1::Delivery d = MustLease("q");
  ASSERT_TRUE(engine_->CompleteAwaitingTaskDone(d.task().id(), d.lease_id()).ok());
  v1::QueueStats s = Stats("q");
  EXPECT_EQ(s.leased(), 0u);
  EXPECT_EQ(s.unfinished(), 2u);  // "b" ready, "a" waits for task_done
  EXPECT_EQ(s.total_completed(), 0u);
  // Acked twice (a retried Ack): the lease is gone, nothing more is counted.
  EXPECT_EQ(engine_->CompleteAwaitingTaskDone(d.task().id(), d.lease_id()).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(engine_->TaskDone("q", 1).ok());
  EXPECT_EQ(Stats("q").unfinished(), 1u);
  EXPECT_EQ(Stats("q").total_completed(), 1u);
  EXPECT_EQ(engine_->TaskDone("q", 1).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(EngineTest, SubscriptionRespectsCreditsAndRoundRobins) {
  std::vector<v1::Delivery> a, b;
  auto sa = engine_->Subscribe({"q"}, "a", [&](auto ds) { for (auto& d : ds) a.push_back(d); });
  auto sb = engine_->Subscribe({"q"}, "b", [&](auto ds) { for (auto& d : ds) b.push_back(d); });
  ASSERT_TRUE(sa.ok() && sb.ok());
  MustPut("q", {Spec("1"), Spec("2"), Spec("3"), Spec("4"), Spec("5")});
  EXPECT_TRUE(a.empty() && b.empty());  // no credits yet
  ASSERT_TRUE(engine_->AddCredits(*sa, 2).ok());
  ASSERT_TRUE(engine_->AddCredits(*sb, 2).ok());
  EXPECT_THAT(a, SizeIs(2));
  EXPECT_THAT(b, SizeIs(2));
  EXPECT_EQ(Stats("q").ready(), 1u);
  EXPECT_EQ(Stats("q").workers(), 2u);
}

TEST_F(EngineTest, UnsubscribeReturnsLeasesAtOnce) {
  std::vector<v1::Delivery> got;
  auto sub = engine_->Subscribe({"q"}, "w", [&](auto ds) { for (auto& d : ds) got.push_back(d); });
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(engine_->AddCredits(*sub, 10).ok());
  auto ids = MustPut("q", {Spec("1", 0, "r"), Spec("2", 0, "r")});
  ASSERT_THAT(got, SizeIs(2));
  engine_->Unsubscribe(*sub);
  EXPECT_EQ(Stats("q").ready(), 2u);
  EXPECT_EQ(Stats("q").leased(), 0u);
  EXPECT_EQ(engine_->Complete(ids[0], got[0].lease_id(), "late").code(),
            absl::StatusCode::kFailedPrecondition);
  auto again = MustGet("q", true, 2);
  ASSERT_THAT(again, SizeIs(2));
  EXPECT_EQ(again[0].task().attempt(), 2u);
}

TEST_F(EngineTest, GettersAreServedBeforeWorkers) {
  std::vector<v1::Delivery> worker;
  auto sub = engine_->Subscribe({"q"}, "w", [&](auto ds) { for (auto& d : ds) worker.push_back(d); });
  ASSERT_TRUE(engine_->AddCredits(*sub, 10).ok());
  GetCapture r;
  GetAsync("q", &r);
  MustPut("q", {Spec("1"), Spec("2")});
  ASSERT_TRUE(r.done());
  EXPECT_THAT(Payloads(**r.value), ElementsAre("1"));
  EXPECT_THAT(worker, SizeIs(1));
}

TEST_F(EngineTest, DeleteFailsWaitersAndPurgeDropsReadyTasks) {
  MustPut("p", {Spec("a"), Spec("b")});
  auto purged = engine_->PurgeQueue("p");
  ASSERT_TRUE(purged.ok());
  EXPECT_EQ(*purged, 2u);
  EXPECT_EQ(Stats("p").unfinished(), 0u);

  GetCapture r;
  GetAsync("d", &r);
  ASSERT_TRUE(engine_->DeleteQueue("d").ok());
  ASSERT_TRUE(r.done());
  EXPECT_EQ(r.value->status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->Stats("d").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(EngineTest, ShutdownFailsWaitersAndRefusesNewCalls) {
  GetCapture r;
  GetAsync("q", &r);
  engine_->Shutdown();
  ASSERT_TRUE(r.done());
  EXPECT_EQ(r.value->status().code(), absl::StatusCode::kUnavailable);
  PutCapture p;
  PutAsync("q", {Spec("x")}, &p);
  ASSERT_TRUE(p.done());
  EXPECT_EQ(p.value->status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(EngineTest, NextDeadlineTracksWaitersAndLeases) {
  EXPECT_EQ(engine_->NextDeadline(), absl::InfiniteFuture());
  MustPut("q", {Spec("x")});
  MustGet("q", true);
  EXPECT_EQ(engine_->NextDeadline(), clock_.Now() + absl::Seconds(10));
  GetCapture r;
  GetAsync("q", &r, false, 1, clock_.Now() + absl::Seconds(3));
  EXPECT_EQ(engine_->NextDeadline(), clock_.Now() + absl::Seconds(3));
  engine_->Shutdown();  // finishes the waiter while `r` is still alive
}

// --- queue quota, paging, reads that do not create (issue 12, item 9) ---------

std::vector<std::string> QueueNames(const v1::ListQueuesResponse& page) {
  std::vector<std::string> names;
  for (const v1::QueueStats& q : page.queues()) names.push_back(q.config().name());
  return names;
}

TEST_F(EngineTest, QueueOwnerIsTheConfiguredOwner) {
  v1::QueueConfig config;
  config.set_name("_results.p1");
  config.set_owner("p1");
  ASSERT_TRUE(engine_->CreateQueue(config, false).ok());
  EXPECT_EQ(*engine_->QueueOwner("_results.p1"), "p1");
  config.set_name("shared");
  config.clear_owner();
  ASSERT_TRUE(engine_->CreateQueue(config, false).ok());
  EXPECT_EQ(*engine_->QueueOwner("shared"), "");
  EXPECT_EQ(engine_->QueueOwner("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(EngineTest, ReadsOfAnUnknownQueueCreateNothing) {
  EXPECT_EQ(GetStatus("nope").code(), absl::StatusCode::kDeadlineExceeded);
  GetCapture leased;
  GetAsync("nope2", &leased, /*lease=*/true, 1, absl::InfiniteFuture(), /*nowait=*/true);
  ASSERT_TRUE(leased.done());
  EXPECT_EQ(leased.value->status().code(), absl::StatusCode::kDeadlineExceeded);
  // A get whose timeout has passed already is a nowait get.
  GetCapture expired;
  GetAsync("nope3", &expired, false, 1, clock_.Now());
  ASSERT_TRUE(expired.done());
  EXPECT_EQ(expired.value->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(engine_->Stats("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->ListDead("nope", 0, 10).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->TaskDone("nope", 1).code(), absl::StatusCode::kNotFound);
  Result<absl::Status> joined;
  engine_->Join("nope", absl::InfiniteFuture(), [&](absl::Status s) { joined.Set(s); });
  ASSERT_TRUE(joined.done());
  EXPECT_EQ(joined.value->code(), absl::StatusCode::kNotFound);
  auto page = engine_->ListQueues({});
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(QueueNames(*page), ElementsAre());
  // A bad name is still refused as such.
  EXPECT_EQ(GetStatus("bad name!").code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, ABlockingGetCreatesItsQueue) {
  GetCapture waiting;
  GetAsync("later", &waiting, false, 1, clock_.Now() + absl::Seconds(5));
  EXPECT_FALSE(waiting.done());
  EXPECT_EQ(Stats("later").waiting_consumers(), 1u);
  MustPut("later", {Spec("x")});
  ASSERT_TRUE(waiting.done());
  EXPECT_THAT(Payloads(**waiting.value), ElementsAre("x"));
}

TEST_F(EngineTest, QueueQuotaRefusesNewQueuesNamingTheFlag) {
  EngineOptions options;
  options.max_queues = 3;
  Reset(options);
  CreateQueue("a", v1::QUEUE_KIND_FIFO);
  MustPut("b", {Spec("x")});          // auto-created by a put
  MustPut("c", {Spec("y")});
  auto expect_quota = [](const absl::Status& s) {
    EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
    EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("--max-queues"));
    EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("3 queues"));
  };
  v1::QueueConfig d;
  d.set_name("d");
  expect_quota(engine_->CreateQueue(d, false).status());
  expect_quota(PutStatus("d", {Spec("z")}));
  expect_quota(PutStatus("a", {Spec("z", 0, "replies")}));  // a new reply_to queue
  EXPECT_EQ(Stats("a").ready(), 0u) << "the refused put stored its task";
  expect_quota(engine_->Subscribe({"a", "d"}, "w", [](std::vector<v1::Delivery>) {}).status());
  GetCapture waiting;
  GetAsync("d", &waiting, false, 1, clock_.Now() + absl::Seconds(5));
  ASSERT_TRUE(waiting.done());
  expect_quota(waiting.value->status());
  // Existing queues work as before; a delete makes room.
  MustPut("a", {Spec("fine", 0, "b")});
  ASSERT_TRUE(engine_->DeleteQueue("c").ok());
  EXPECT_TRUE(engine_->CreateQueue(d, false).ok());
}

TEST_F(EngineTest, DeadLetterQueueOverTheQuotaFallsBackToTheQueuesOwnSet) {
  EngineOptions options;
  options.max_queues = 1;
  options.default_max_attempts = 1;
  Reset(options);
  v1::QueueConfig c;
  c.set_name("q");
  c.set_dead_letter("q.dead");
  CreateQueue(c);
  MustPut("q", {Spec("x")});
  v1::Delivery d = MustLease("q");
  ASSERT_TRUE(engine_->Fail(d.task().id(), d.lease_id(), "boom", false).ok());
  EXPECT_EQ(Stats("q").dead(), 1u);
  EXPECT_EQ(engine_->Stats("q.dead").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(EngineTest, ListQueuesPagesInNameOrder) {
  std::vector<std::string> all;
  for (int i = 0; i < 25; ++i) {
    all.push_back(absl::StrFormat("q%02d", (i * 7) % 25));  // created out of order
    CreateQueue(all.back(), v1::QUEUE_KIND_FIFO);
  }
  std::sort(all.begin(), all.end());
  std::vector<std::string> seen;
  v1::ListQueuesRequest request;
  request.set_page_size(10);
  int pages = 0;
  for (;;) {
    auto page = engine_->ListQueues(request);
    ASSERT_TRUE(page.ok()) << page.status();
    ++pages;
    EXPECT_LE(page->queues_size(), 10);
    for (const std::string& name : QueueNames(*page)) seen.push_back(name);
    if (page->next_page_token().empty()) break;
    request.set_page_token(page->next_page_token());
    ASSERT_LT(pages, 10) << "paging does not end";
  }
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen, all);

  // No page size: the default page; over the maximum: the maximum.
  auto first = engine_->ListQueues({});
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->queues_size(), 25);
  EXPECT_TRUE(first->next_page_token().empty());
  request.set_page_size(kMaxQueuePage + 1);
  request.clear_page_token();
  EXPECT_TRUE(engine_->ListQueues(request).ok());
  // A token that is no queue name was not given out by the master.
  request.set_page_token("not a token!");
  EXPECT_EQ(engine_->ListQueues(request).status().code(), absl::StatusCode::kInvalidArgument);
  // A token whose queue was deleted meanwhile still pages on.
  request.set_page_size(10);
  request.set_page_token("q09");
  ASSERT_TRUE(engine_->DeleteQueue("q09").ok());
  auto rest = engine_->ListQueues(request);
  ASSERT_TRUE(rest.ok());
  EXPECT_EQ(QueueNames(*rest).front(), "q10");
}

TEST_F(EngineTest, DefaultPageIsAThousandQueues) {
  for (int i = 0; i < 1001; ++i) CreateQueue(absl::StrCat("q", i), v1::QUEUE_KIND_FIFO);
  auto first = engine_->ListQueues({});
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->queues_size(), 1000);
  EXPECT_FALSE(first->next_page_token().empty());
}


// --- the memory budget without a store (issue 12, item 8) ----------------------

constexpr size_t kKiB = 1024;

EngineOptions SmallBudget() {
  EngineOptions options;
  options.memory_budget_bytes = 1 << 20;  // 1 MiB
  return options;
}

void ExpectBudgetRefusal(const absl::Status& s) {
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("memory budget"));
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("--memory-budget-mb"));
}

// Puts `spec` one at a time until a put is refused (or 200 were stored);
// returns how many were stored and the refusal.
std::pair<int, absl::Status> PutUntilRefused(TaskEngine* engine, const std::string& queue,
                                             const v1::TaskSpec& spec) {
  for (int i = 0; i < 200; ++i) {
    PutCapture r;
    PutArgs args;
    args.queue = queue;
    args.tasks = {spec};
    args.nowait = true;
    engine->Put(std::move(args), [&r](auto stored) { r.Set(std::move(stored)); });
    if (!r.done()) return {i, absl::UnknownError("put did not finish")};
    if (!r.value->ok()) return {i, r.value->status()};
  }
  return {200, absl::OkStatus()};
}

TEST_F(EngineTest, MemoryBudgetRefusesPutsBeyondItWithoutAStore) {
  Reset(SmallBudget());
  auto [stored, refusal] = PutUntilRefused(engine_.get(), "q", Spec(std::string(64 * kKiB, 'x')));
  ExpectBudgetRefusal(refusal);
  // 1 MiB holds 15 tasks of 64 KiB and their records, not 16.
  EXPECT_GE(stored, 12);
  EXPECT_LE(stored, 15);
  EXPECT_LE(engine_->Memory().task_bytes, size_t{1} << 20);
  // A put that may wait is refused at once too: its payload would wait in
  // memory.
  PutCapture waiting;
  PutAsync("q", {Spec(std::string(64 * kKiB, 'y'))}, &waiting, clock_.Now() + absl::Seconds(5));
  ASSERT_TRUE(waiting.done());
  ExpectBudgetRefusal(waiting.value->status());
  // Taking tasks gives their memory back (also after many rounds).
  for (int round = 0; round < 50; ++round) {
    EXPECT_EQ(MustGet("q", false, 4).size(), 4u) << "round " << round;
    MustPut("q", {Spec(std::string(64 * kKiB, 'z')), Spec(std::string(64 * kKiB, 'z')),
                  Spec(std::string(64 * kKiB, 'z')), Spec(std::string(64 * kKiB, 'z'))});
  }
  EXPECT_EQ(MustGet("q", false, 1000).size(), static_cast<size_t>(stored));
  EXPECT_EQ(engine_->Memory().task_bytes, 0u);
}

// bench/backlog.sh measures ~950-980 B of master RSS per queued 100-byte
// task; the budget's estimate should be near that.
TEST_F(EngineTest, BudgetCountsASmallTaskNearWhatItCosts) {
  std::vector<v1::TaskSpec> specs(1000, Spec(std::string(100, 'x')));
  MustPut("backlog", std::move(specs));
  const size_t per_task = engine_->Memory().task_bytes / 1000;
  EXPECT_GE(per_task, 800u);
  EXPECT_LE(per_task, 1200u);
}

TEST_F(EngineTest, HeadersAndArgsCountAgainstTheBudget) {
  Reset(SmallBudget());
  v1::TaskSpec fat = Spec("tiny");
  for (int i = 0; i < 64; ++i) (*fat.mutable_headers())[absl::StrCat("h", i)] = std::string(4000, 'h');
  auto [stored, refusal] = PutUntilRefused(engine_.get(), "q", fat);
  ExpectBudgetRefusal(refusal);
  EXPECT_LE(stored, 4);  // 256 KiB of headers each
  v1::TaskSpec args = Spec("tiny");
  for (int i = 0; i < 256; ++i) args.add_args(std::string(4000, 'a'));
  EXPECT_EQ(PutStatus("q2", {args}).code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(EngineTest, CompletionsAreNeverRefusedAndTheirResultsMayExceedTheBudget) {
  Reset(SmallBudget());
  auto [stored, refusal] =
      PutUntilRefused(engine_.get(), "q", Spec(std::string(64 * kKiB, 'x'), 0, "r"));
  ExpectBudgetRefusal(refusal);
  std::vector<v1::Delivery> leased = MustGet("q", /*lease=*/true, 1000);
  ASSERT_EQ(static_cast<int>(leased.size()), stored);
  // Results of the same size: the engine briefly holds both.
  for (const v1::Delivery& d : leased) {
    absl::Status done = engine_->Complete(d.task().id(), d.lease_id(), std::string(64 * kKiB, 'r'));
    EXPECT_TRUE(done.ok()) << done;
  }
  EXPECT_EQ(Stats("r").ready(), static_cast<uint64_t>(stored));
  // A failure that retries keeps its task (delayed) whatever the budget.
  MustPut("q", {Spec("small")});
  v1::Delivery d = MustLease("q");
  EXPECT_TRUE(engine_->Fail(d.task().id(), d.lease_id(), "again", false).ok());
}

TEST_F(EngineTest, PutsWaitingForRoomCountAgainstTheBudget) {
  Reset(SmallBudget());
  CreateQueue("small", v1::QUEUE_KIND_FIFO, /*maxsize=*/1);
  MustPut("small", {Spec("first")});
  // Each waiting put holds its 300 KiB payload in the master.
  std::vector<std::unique_ptr<PutCapture>> waiting;
  absl::Status refused;
  for (int i = 0; i < 10 && refused.ok(); ++i) {
    waiting.push_back(std::make_unique<PutCapture>());
    PutAsync("small", {Spec(std::string(300 * kKiB, 'w'))}, waiting.back().get(),
             clock_.Now() + absl::Seconds(60));
    if (waiting.back()->done()) refused = waiting.back()->value->status();
  }
  ExpectBudgetRefusal(refused);
  EXPECT_LE(waiting.size(), 4u);
  EXPECT_EQ(Stats("small").waiting_producers(), waiting.size() - 1);
  engine_->Shutdown();  // fails the waiting puts while their captures live
}
}  // namespace
}  // namespace taskq

namespace taskq {
namespace {

// Many threads at once: producers (some blocking on a small maxsize), unary
// lease consumers, a worker subscription completing from its own thread, and
// the master's engine timer expiring leases. Every task must yield exactly one result.
// Meant to be run under ThreadSanitizer as well.
TEST(EngineConcurrencyTest, EveryTaskYieldsExactlyOneResultUnderContention) {
  EngineOptions options;
  options.default_lease = absl::Milliseconds(200);
  options.default_max_attempts = 1000;
  options.default_backoff = absl::Milliseconds(1);  // retry (almost) at once
  options.default_backoff_max = absl::Milliseconds(1);
  Clock* clock = RealClock::Get();
  rt::Scheduler scheduler({.threads = 1});
  EngineTimer timer(scheduler, clock);
  TaskEngine engine(options, clock, [&timer] { timer.Wake(); });
  timer.Start(&engine);
  // Stops the timer loop before `engine` goes, also on an early ASSERT return.
  absl::Cleanup stop_timer = [&timer] { timer.Stop(); };
  v1::QueueConfig config;
  config.set_name("q");
  config.set_maxsize(64);
  ASSERT_TRUE(engine.CreateQueue(config, false).ok());

  constexpr int kProducers = 3, kPerProducer = 400;
  constexpr int kTotal = kProducers * kPerProducer;
  std::atomic<bool> stop{false};

  // Worker subscription: deliveries are completed by a separate thread.
  Mutex mu;
  CondVar cv;
  std::deque<v1::Delivery> inbox;
  auto sub = engine.Subscribe({"q"}, "w", [&](std::vector<v1::Delivery> ds) {
    MutexLock lock(&mu);
    for (auto& d : ds) inbox.push_back(std::move(d));
    cv.SignalAll();
  });
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(engine.AddCredits(*sub, 8).ok());
  std::thread worker([&] {
    for (;;) {
      v1::Delivery d;
      {
        MutexLock lock(&mu);
        while (inbox.empty() && !stop) cv.WaitWithTimeout(&mu, absl::Milliseconds(50));
        if (inbox.empty()) return;
        d = std::move(inbox.front());
        inbox.pop_front();
      }
      (void)engine.Complete(d.task().id(), d.lease_id(), "w:" + d.task().payload());
      (void)engine.AddCredits(*sub, 1);
    }
  });

  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        PutArgs args;
        args.queue = "q";
        v1::TaskSpec spec;
        spec.set_payload(std::to_string(p * kPerProducer + i));
        spec.set_reply_to("r");
        args.tasks.push_back(spec);
        args.deadline = absl::Now() + absl::Seconds(30);
        std::atomic<bool> done{false};
        Mutex put_mu;
        CondVar put_cv;
        engine.Put(std::move(args), [&](absl::StatusOr<PutResult> ids) {
          EXPECT_TRUE(ids.ok()) << ids.status();
          MutexLock lock(&put_mu);
          done = true;
          put_cv.SignalAll();
        });
        MutexLock lock(&put_mu);
        while (!done) put_cv.Wait(&put_mu);
      }
    });
  }
  // Unary lease consumer that sometimes "dies" (lets the lease expire).
  threads.emplace_back([&] {
    int n = 0;
    while (!stop) {
      GetArgs args;
      args.queue = "q";
      args.lease = true;
      args.nowait = true;
      args.max_tasks = 4;
      std::vector<v1::Delivery> got;
      engine.Get(args, [&](absl::StatusOr<std::vector<v1::Delivery>> r) {
        if (r.ok()) got = *std::move(r);
      });
      for (auto& d : got) {
        if (++n % 7 == 0) continue;  // abandoned: expires and is redelivered
        (void)engine.Complete(d.task().id(), d.lease_id(), "g:" + d.task().payload());
      }
      if (got.empty()) std::this_thread::yield();
    }
  });

  // Drain results until all arrived (or a generous deadline).
  std::map<uint64_t, int> results_per_task;
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (static_cast<int>(results_per_task.size()) < kTotal && absl::Now() < deadline) {
    GetArgs args;
    args.queue = "r";
    args.max_tasks = 1000;
    args.deadline = absl::Now() + absl::Milliseconds(100);
    Mutex get_mu;
    CondVar get_cv;
    bool done = false;
    std::vector<v1::Delivery> got;
    engine.Get(args, [&](absl::StatusOr<std::vector<v1::Delivery>> r) {
      MutexLock lock(&get_mu);
      if (r.ok()) got = *std::move(r);
      done = true;
      get_cv.SignalAll();
    });
    MutexLock lock(&get_mu);
    while (!done) get_cv.Wait(&get_mu);
    for (const auto& d : got) ++results_per_task[d.task().result_of()];
  }
  stop = true;
  for (auto& t : threads) t.join();
  {
    MutexLock lock(&mu);
    cv.SignalAll();
  }
  worker.join();
  engine.Unsubscribe(*sub);

  EXPECT_EQ(static_cast<int>(results_per_task.size()), kTotal);
  for (const auto& [id, count] : results_per_task) EXPECT_EQ(count, 1) << "task " << id;
  auto stats = engine.Stats("q");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->unfinished(), 0u);
  EXPECT_EQ(stats->total_completed(), static_cast<uint64_t>(kTotal));
}

// The oldest-ready-age gauge (taskq_queue_oldest_ready_age_seconds) follows
// the ready task that has waited longest, whatever order the queue hands
// tasks out in.
TEST_F(EngineTest, OldestReadyAgeIsTheLongestWaitingReadyTasksInEveryKind) {
  CreateQueue("fifo", v1::QUEUE_KIND_FIFO);
  CreateQueue("lifo", v1::QUEUE_KIND_LIFO);
  CreateQueue("prio", v1::QUEUE_KIND_PRIORITY);
  CreateQueue("empty", v1::QUEUE_KIND_FIFO);
  MustPut("fifo", {Spec("a")});
  MustPut("lifo", {Spec("a")});
  MustPut("prio", {Spec("low", 5)});
  clock_.Advance(absl::Seconds(5));
  MustPut("fifo", {Spec("b")});
  MustPut("lifo", {Spec("b")});    // handed out first, but not the oldest
  MustPut("prio", {Spec("high", -1)});
  clock_.Advance(absl::Seconds(2));
  auto ages = [this] {
    std::map<std::string, absl::Duration> out;
    for (const auto& q : engine_->Metrics(10).first) out[q.name] = q.oldest_ready_age;
    return out;
  };
  auto now = ages();
  EXPECT_EQ(now["fifo"], absl::Seconds(7));
  EXPECT_EQ(now["lifo"], absl::Seconds(7));
  EXPECT_EQ(now["prio"], absl::Seconds(7));
  EXPECT_EQ(now["empty"], absl::ZeroDuration());

  MustGet("fifo");  // takes a: b (2 s) is the oldest now
  MustGet("lifo");  // takes b: a is still the oldest
  MustGet("prio");  // takes high: low is still the oldest
  now = ages();
  EXPECT_EQ(now["fifo"], absl::Seconds(2));
  EXPECT_EQ(now["lifo"], absl::Seconds(7));
  EXPECT_EQ(now["prio"], absl::Seconds(7));
}

}  // namespace
}  // namespace taskq
