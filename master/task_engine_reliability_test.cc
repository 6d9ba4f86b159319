// Unit tests for the engine's reliable-delivery rules (issue 5, described
// for users in docs/QUEUES.md): delayed tasks, retries with backoff and
// jitter, attempt history, dead letters, release, dedup keys, cancel, task
// status lookup, queue shutdown and queue updates. Time is a FakeClock moved
// by the test; the jitter has a fixed seed.
#include <string>
#include <vector>

#include "common/limits.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "master/engine_test_util.h"
#include "master/engine/task_engine.h"

namespace taskq {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

v1::QueueConfig Config(const std::string& name) {
  v1::QueueConfig c;
  c.set_name(name);
  return c;
}

// --- delayed tasks -----------------------------------------------------------------

TEST_F(EngineTest, DelayedTaskBecomesReadyAtItsTime) {
  const absl::Time put_at = clock_.Now();
  auto ids = MustPut("q", {Delayed("later", absl::Seconds(5))});
  EXPECT_EQ(Stats("q").delayed(), 1u);
  EXPECT_EQ(Stats("q").ready(), 0u);
  v1::Task t = MustGetTask(ids[0]);
  EXPECT_EQ(t.state(), v1::TASK_STATE_DELAYED);
  EXPECT_EQ(t.not_before_unix_ms(), absl::ToUnixMillis(put_at + absl::Seconds(5)));
  // The master's timer must fire then.
  EXPECT_EQ(engine_->NextDeadline(), put_at + absl::Seconds(5));
  EXPECT_EQ(GetStatus("q").code(), absl::StatusCode::kDeadlineExceeded);

  Advance(absl::Milliseconds(4999));
  EXPECT_EQ(Stats("q").delayed(), 1u);
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(Stats("q").delayed(), 0u);
  EXPECT_EQ(MustGetTask(ids[0]).state(), v1::TASK_STATE_READY);
  EXPECT_THAT(Payloads(MustGet("q")), ElementsAre("later"));
  EXPECT_EQ(engine_->NextDeadline(), absl::InfiniteFuture());
}

TEST_F(EngineTest, NotBeforeAndDelayTakeTheLaterOfTheTwo) {
  const absl::Time t0 = clock_.Now();
  v1::TaskSpec both = Delayed("both", absl::Seconds(1));
  both.set_not_before_unix_ms(absl::ToUnixMillis(t0 + absl::Seconds(3)));
  v1::TaskSpec past = Spec("past");
  past.set_not_before_unix_ms(absl::ToUnixMillis(t0 - absl::Seconds(3)));
  auto ids = MustPut("q", {both, past});
  EXPECT_EQ(MustGetTask(ids[0]).not_before_unix_ms(), absl::ToUnixMillis(t0 + absl::Seconds(3)));
  EXPECT_EQ(MustGetTask(ids[1]).state(), v1::TASK_STATE_READY);  // the past is now
  EXPECT_THAT(Payloads(MustGet("q")), ElementsAre("past"));
  Advance(absl::Seconds(2));
  EXPECT_EQ(Stats("q").delayed(), 1u);
  Advance(absl::Seconds(1));
  EXPECT_THAT(Payloads(MustGet("q")), ElementsAre("both"));
}

TEST_F(EngineTest, TasksComingDueTogetherAreHandedOutInTheQueuesOrder) {
  CreateQueue("p", v1::QUEUE_KIND_PRIORITY);
  v1::TaskSpec low = Spec("low", 5);
  low.set_delay_ms(1000);
  v1::TaskSpec high = Spec("high", 1);
  high.set_delay_ms(2000);
  MustPut("p", {low, high});
  // A worker with credit is waiting; both come due in one timer tick: the
  // higher priority goes first although it came due later.
  std::vector<v1::Delivery> got;
  auto sub = engine_->Subscribe({"p"}, "w", [&](auto ds) { for (auto& d : ds) got.push_back(d); });
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(engine_->AddCredits(*sub, 1).ok());
  Advance(absl::Seconds(2));
  EXPECT_THAT(Payloads(got), ElementsAre("high"));

  // FIFO: a task that was ready earlier goes before one that comes due.
  MustPut("f", {Delayed("due-later", absl::Seconds(1))});
  Advance(absl::Milliseconds(500));
  MustPut("f", {Spec("ready-now")});
  Advance(absl::Milliseconds(500));
  EXPECT_THAT(Payloads(MustGet("f", false, 10)), ElementsAre("ready-now", "due-later"));
}

TEST_F(EngineTest, LongPollIsWokenWhenADelayedTaskComesDue) {
  MustPut("q", {Delayed("x", absl::Seconds(2))});
  GetCapture r;
  GetAsync("q", &r, false, 1, clock_.Now() + absl::Seconds(2));
  EXPECT_FALSE(r.done());
  Advance(absl::Seconds(2));  // due and deadline at the same instant: served
  ASSERT_TRUE(r.done());
  ASSERT_TRUE(r.value->ok()) << r.value->status();
  EXPECT_THAT(Payloads(**r.value), ElementsAre("x"));
}

TEST_F(EngineTest, DelayedTasksCountTowardMaxsizeAndJoin) {
  CreateQueue("q", v1::QUEUE_KIND_FIFO, /*maxsize=*/2);
  MustPut("q", {Delayed("a", absl::Seconds(1)), Delayed("b", absl::Seconds(1))});
  EXPECT_EQ(PutStatus("q", {Spec("c")}).code(), absl::StatusCode::kResourceExhausted);
  Result<absl::Status> joined;
  engine_->Join("q", absl::InfiniteFuture(), [&](absl::Status s) { joined.value = s; });
  EXPECT_FALSE(joined.done());
  EXPECT_EQ(Stats("q").unfinished(), 2u);
  Advance(absl::Seconds(1));
  MustGet("q", false, 2);
  ASSERT_TRUE(joined.done());
  EXPECT_TRUE(joined.value->ok());
}

TEST_F(EngineTest, BadDelaysAndDedupKeysAreRefused) {
  v1::TaskSpec far = Spec("far");
  far.set_not_before_unix_ms(absl::ToUnixMillis(clock_.Now() + absl::Hours(24 * 366)));
  absl::Status s = PutStatus("q", {far});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("365 days"));

  v1::TaskSpec negative = Spec("neg");
  negative.set_not_before_unix_ms(-1);
  EXPECT_EQ(PutStatus("q", {negative}).code(), absl::StatusCode::kInvalidArgument);

  s = PutStatus("q", {Keyed("x", std::string(kMaxDedupKeyBytes + 1, 'k'))});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("dedup key"));
  MustPut("q", {Keyed("x", std::string(kMaxDedupKeyBytes, 'k'))});
}

// --- retries, backoff, history ---------------------------------------------------

TEST_F(EngineTest, FailedAttemptsRetryAfterExponentialBackoffWithJitter) {
  // Several seeds: every delay lies in [d/2, d], d = min(100 ms * 2^(n-1), 1 s).
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    EngineOptions options;
    options.random_seed = seed;
    Reset(options);
    v1::QueueConfig c = Config("q");
    c.set_backoff_ms(100);
    c.set_backoff_max_ms(1000);
    c.set_max_attempts(8);
    CreateQueue(c);
    auto ids = MustPut("q", {Spec("x")});
    int64_t d = 100;
    for (uint32_t attempt = 1; attempt < 8; ++attempt, d = std::min<int64_t>(d * 2, 1000)) {
      v1::Delivery lease = MustLease("q");
      ASSERT_EQ(lease.task().attempt(), attempt);
      ASSERT_TRUE(engine_->Fail(ids[0], lease.lease_id(), "boom", false).ok());
      v1::Task t = MustGetTask(ids[0]);
      ASSERT_EQ(t.state(), v1::TASK_STATE_DELAYED);
      int64_t wait = t.not_before_unix_ms() - absl::ToUnixMillis(clock_.Now());
      EXPECT_GE(wait, d / 2) << "seed " << seed << " attempt " << attempt;
      EXPECT_LE(wait, d) << "seed " << seed << " attempt " << attempt;
      Advance(absl::Milliseconds(wait - 1));
      ASSERT_EQ(Stats("q").delayed(), 1u);
      Advance(absl::Milliseconds(1));
      ASSERT_EQ(Stats("q").ready(), 1u);
    }
  }
}

TEST_F(EngineTest, BackoffDefaultsComeFromTheEngineOptions) {
  EngineOptions options;
  options.default_backoff = absl::Milliseconds(250);
  options.default_backoff_max = absl::Seconds(5);
  Reset(options);
  auto created = engine_->CreateQueue(Config("q"), false);
  ASSERT_TRUE(created.ok());
  EXPECT_EQ(created->backoff_ms(), 250u);
  EXPECT_EQ(created->backoff_max_ms(), 5000u);
  // A first retry above the default cap raises the cap with it.
  v1::QueueConfig slow = Config("slow");
  slow.set_backoff_ms(20000);
  created = engine_->CreateQueue(slow, false);
  ASSERT_TRUE(created.ok());
  EXPECT_EQ(created->backoff_max_ms(), 20000u);
}

TEST_F(EngineTest, ExpiredLeaseRetriesAfterBackoffAndIsRecorded) {
  auto ids = MustPut("q", {Spec("x")});
  v1::Delivery lease = MustLease("q");
  Advance(absl::Seconds(10));
  v1::Task t = MustGetTask(ids[0]);
  EXPECT_EQ(t.state(), v1::TASK_STATE_DELAYED);
  ASSERT_THAT(t.history(), SizeIs(1));
  EXPECT_EQ(t.history(0).how(), "expired");
  EXPECT_EQ(t.history(0).worker(), "consumer");
  EXPECT_EQ(t.history(0).attempt(), 1u);
  EXPECT_EQ(t.history(0).ended_unix_ms(), absl::ToUnixMillis(clock_.Now()));
  EXPECT_THAT(t.last_error(), HasSubstr("lease expired"));
  int64_t wait = t.not_before_unix_ms() - absl::ToUnixMillis(clock_.Now());
  EXPECT_GE(wait, 500);
  EXPECT_LE(wait, 1000);
  EXPECT_EQ(engine_->NextDeadline(), absl::FromUnixMillis(t.not_before_unix_ms()));
}

TEST_F(EngineTest, WorkerDisconnectReturnsLeasesAtOnceButCountsTheAttempt) {
  std::vector<v1::Delivery> got;
  auto sub = engine_->Subscribe({"q"}, "worker-7", [&](auto ds) {
    for (auto& d : ds) got.push_back(d);
  });
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(engine_->AddCredits(*sub, 1).ok());
  auto ids = MustPut("q", {Spec("first"), Spec("second")});
  ASSERT_THAT(Payloads(got), ElementsAre("first"));
  EXPECT_EQ(MustGetTask(ids[0]).worker(), "worker-7");
  engine_->Unsubscribe(*sub);
  v1::Task t = MustGetTask(ids[0]);
  EXPECT_EQ(t.state(), v1::TASK_STATE_READY);  // no backoff
  ASSERT_THAT(t.history(), SizeIs(1));
  EXPECT_EQ(t.history(0).how(), "disconnected");
  EXPECT_EQ(t.history(0).worker(), "worker-7");
  // Back in its old place (first), and the lost attempt counted.
  auto again = MustGet("q", true, 2);
  ASSERT_THAT(Payloads(again), ElementsAre("first", "second"));
  EXPECT_EQ(again[0].task().attempt(), 2u);
}

TEST_F(EngineTest, HistoryKeepsTheLastSixteenAttempts) {
  v1::QueueConfig c = Config("q");
  c.set_max_attempts(40);
  c.set_backoff_ms(1);
  c.set_backoff_max_ms(1);
  CreateQueue(c);
  auto ids = MustPut("q", {Spec("x")});
  for (int i = 1; i <= 20; ++i) {
    v1::Delivery lease = MustLease("q");
    ASSERT_TRUE(engine_->Fail(ids[0], lease.lease_id(), absl::StrCat("error ", i), false).ok());
    Advance(absl::Milliseconds(1));
  }
  v1::Task t = MustGetTask(ids[0]);
  ASSERT_THAT(t.history(), SizeIs(kTaskHistoryLength));
  EXPECT_EQ(t.history(0).attempt(), 5u);
  EXPECT_EQ(t.history(15).attempt(), 20u);
  EXPECT_EQ(t.history(15).how(), "failed");
  EXPECT_EQ(t.history(15).error(), "error 20");
  EXPECT_EQ(t.last_error(), "error 20");
  EXPECT_EQ(t.attempt(), 20u);
}

// --- dead letters -----------------------------------------------------------------

TEST_F(EngineTest, PastMaxAttemptsATaskIsDeadWithItsHistoryAndAFailedResult) {
  v1::QueueConfig c = Config("q");
  c.set_max_attempts(2);
  c.set_backoff_ms(1);
  CreateQueue(c);
  auto ids = MustPut("q", {Spec("x", 0, "r")});
  ASSERT_TRUE(engine_->Fail(ids[0], MustLease("q").lease_id(), "boom 1", false).ok());
  Advance(absl::Milliseconds(1));
  ASSERT_TRUE(engine_->Fail(ids[0], MustLease("q").lease_id(), "boom 2", false).ok());
  v1::QueueStats stats = Stats("q");
  EXPECT_EQ(stats.dead(), 1u);
  EXPECT_EQ(stats.delayed() + stats.ready() + stats.leased(), 0u);
  EXPECT_EQ(stats.unfinished(), 0u);  // finished, for Join
  EXPECT_EQ(stats.total_failed(), 1u);
  v1::Task t = MustGetTask(ids[0]);
  EXPECT_EQ(t.state(), v1::TASK_STATE_DEAD);
  EXPECT_EQ(t.origin_queue(), "q");
  EXPECT_EQ(t.last_error(), "boom 2");
  ASSERT_THAT(t.history(), SizeIs(2));
  EXPECT_EQ(t.history(0).error(), "boom 1");
  // Waiting submitters still learn.
  auto results = MustGet("r", false, 10);
  ASSERT_THAT(results, SizeIs(1));
  EXPECT_EQ(results[0].task().outcome(), v1::OUTCOME_FAILED);
  EXPECT_THAT(results[0].task().error(), HasSubstr("gave up after 2 attempts"));
  EXPECT_THAT(results[0].task().error(), HasSubstr("boom 2"));
  auto dead = engine_->ListDead("q", 0, 0);
  ASSERT_TRUE(dead.ok());
  ASSERT_THAT(*dead, SizeIs(1));
  EXPECT_EQ((*dead)[0].id(), ids[0]);
  EXPECT_EQ((*dead)[0].payload(), "x");
  EXPECT_EQ((*dead)[0].state(), v1::TASK_STATE_DEAD);
}

TEST_F(EngineTest, DeadLetterQueueIsCreatedWhenFirstNeeded) {
  v1::QueueConfig c = Config("q");
  c.set_dead_letter("q.dlq");
  CreateQueue(c);
  auto ids = MustPut("q", {Spec("x")});
  ASSERT_TRUE(engine_->Fail(ids[0], MustLease("q").lease_id(), "bad", true).ok());
  EXPECT_EQ(Stats("q").dead(), 0u);
  EXPECT_EQ(Stats("q.dlq").dead(), 1u);
  EXPECT_EQ(Stats("q.dlq").unfinished(), 0u);  // dead tasks are not work
  EXPECT_EQ(MustGetTask(ids[0]).origin_queue(), "q");
  // Requeue sends it back to where it came from.
  auto requeued = engine_->RequeueDead("q.dlq", ids[0]);
  ASSERT_TRUE(requeued.ok()) << requeued.status();
  EXPECT_EQ(Stats("q").ready(), 1u);
  EXPECT_EQ(Stats("q.dlq").dead(), 0u);
}

TEST_F(EngineTest, WithoutAutoCreateAMissingDeadLetterQueueMeansTheTasksOwn) {
  EngineOptions strict;
  strict.auto_create_queues = false;
  Reset(strict);
  v1::QueueConfig c = Config("q");
  c.set_dead_letter("nowhere");
  CreateQueue(c);
  auto ids = MustPut("q", {Spec("x")});
  ASSERT_TRUE(engine_->Fail(ids[0], MustLease("q").lease_id(), "bad", true).ok());
  EXPECT_EQ(Stats("q").dead(), 1u);
  EXPECT_EQ(engine_->Stats("nowhere").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(EngineTest, DeadTasksLeaveRoomUnderMaxsizeAndRequeueBypassesIt) {
  v1::QueueConfig c = Config("q");
  c.set_maxsize(1);
  CreateQueue(c);
  auto ids = MustPut("q", {Spec("x")});
  ASSERT_TRUE(engine_->Fail(ids[0], MustLease("q").lease_id(), "bad", true).ok());
  auto other = MustPut("q", {Spec("y")});  // room again
  ASSERT_EQ(other.size(), 1u);
  auto requeued = engine_->RequeueDead("q", 0);
  ASSERT_TRUE(requeued.ok());
  EXPECT_EQ(*requeued, 1u);
  EXPECT_EQ(Stats("q").ready(), 2u);  // above maxsize: requeue is not a put
}

TEST_F(EngineTest, RequeueResetsAttemptsAndKeepsHistory) {
  v1::QueueConfig c = Config("q");
  c.set_max_attempts(1);
  CreateQueue(c);
  auto ids = MustPut("q", {Spec("x", 0, "r")});
  ASSERT_TRUE(engine_->Fail(ids[0], MustLease("q").lease_id(), "first try", false).ok());
  ASSERT_EQ(MustGetTask(ids[0]).state(), v1::TASK_STATE_DEAD);
  EXPECT_EQ(engine_->RequeueDead("q", ids[0] + 100).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->RequeueDead("nope", ids[0]).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(engine_->RequeueDead("q", ids[0]).ok());
  EXPECT_EQ(Stats("q").unfinished(), 1u);  // Join waits for it again
  v1::Task t = MustGetTask(ids[0]);
  EXPECT_EQ(t.state(), v1::TASK_STATE_READY);
  EXPECT_EQ(t.attempt(), 0u);
  EXPECT_THAT(t.history(), SizeIs(1));
  v1::Delivery again = MustLease("q");
  EXPECT_EQ(again.task().attempt(), 1u);
  // A second life, a second result.
  ASSERT_TRUE(engine_->Complete(ids[0], again.lease_id(), "ok").ok());
  auto results = MustGet("r", false, 10);
  ASSERT_THAT(results, SizeIs(2));
  EXPECT_EQ(results[0].task().outcome(), v1::OUTCOME_FAILED);
  EXPECT_EQ(results[1].task().outcome(), v1::OUTCOME_OK);
}

TEST_F(EngineTest, PurgeDeadDropsThemAndStatusSaysFailed) {
  v1::QueueConfig c = Config("q");
  c.set_max_attempts(1);
  CreateQueue(c);
  auto ids = MustPut("q", {Spec("a"), Spec("b")});
  for (int i = 0; i < 2; ++i) {
    v1::Delivery d = MustLease("q");
    ASSERT_TRUE(engine_->Fail(d.task().id(), d.lease_id(), "bad", true).ok());
  }
  auto purged = engine_->PurgeDead("q");
  ASSERT_TRUE(purged.ok());
  EXPECT_EQ(*purged, 2u);
  EXPECT_EQ(Stats("q").dead(), 0u);
  v1::Task t = MustGetTask(ids[0]);
  EXPECT_EQ(t.state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(t.payload(), "");  // finished tasks are remembered without payload
  EXPECT_EQ(t.last_error(), "bad");
}

TEST_F(EngineTest, ListDeadPagesById) {
  v1::QueueConfig c = Config("q");
  c.set_max_attempts(1);
  CreateQueue(c);
  auto ids = MustPut("q", {Spec("1"), Spec("2"), Spec("3"), Spec("4"), Spec("5")});
  for (int i = 0; i < 5; ++i) {
    v1::Delivery d = MustLease("q");
    ASSERT_TRUE(engine_->Fail(d.task().id(), d.lease_id(), "bad", true).ok());
  }
  auto page = engine_->ListDead("q", 0, 2);
  ASSERT_TRUE(page.ok());
  ASSERT_THAT(*page, SizeIs(2));
  EXPECT_EQ((*page)[0].id(), ids[0]);
  EXPECT_EQ((*page)[1].id(), ids[1]);
  page = engine_->ListDead("q", ids[1], 2);
  ASSERT_TRUE(page.ok());
  ASSERT_THAT(*page, SizeIs(2));
  EXPECT_EQ((*page)[0].id(), ids[2]);
  page = engine_->ListDead("q", ids[4], 2);
  ASSERT_TRUE(page.ok());
  EXPECT_THAT(*page, SizeIs(0));
  EXPECT_EQ(engine_->ListDead("q", 0, kMaxListDead + 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine_->ListDead("none", 0, 1).status().code(), absl::StatusCode::kNotFound);
}

// --- release ---------------------------------------------------------------------------

TEST_F(EngineTest, ReleaseGivesTheTaskBackWithoutCountingAnAttempt) {
  auto ids = MustPut("q", {Spec("first"), Spec("second")});
  v1::Delivery d = MustLease("q");
  ASSERT_EQ(d.task().attempt(), 1u);
  ASSERT_TRUE(engine_->Release(ids[0], d.lease_id(), absl::ZeroDuration()).ok());
  v1::Task t = MustGetTask(ids[0]);
  EXPECT_EQ(t.state(), v1::TASK_STATE_READY);
  ASSERT_THAT(t.history(), SizeIs(1));
  EXPECT_EQ(t.history(0).how(), "released");
  EXPECT_EQ(t.last_error(), "");  // a release is not a failure
  // Back in its old place, same attempt number.
  v1::Delivery again = MustLease("q");
  EXPECT_EQ(again.task().payload(), "first");
  EXPECT_EQ(again.task().attempt(), 1u);
  // The released lease can no longer complete: one result.
  EXPECT_EQ(engine_->Complete(ids[0], d.lease_id(), "late").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(engine_->Complete(ids[0], again.lease_id(), "ok").ok());
}

TEST_F(EngineTest, ReleaseWithADelay) {
  auto ids = MustPut("q", {Spec("x")});
  v1::Delivery d = MustLease("q");
  ASSERT_TRUE(engine_->Release(ids[0], d.lease_id(), absl::Seconds(3)).ok());
  EXPECT_EQ(MustGetTask(ids[0]).state(), v1::TASK_STATE_DELAYED);
  Advance(absl::Seconds(3));
  EXPECT_EQ(MustLease("q").task().attempt(), 1u);
  EXPECT_EQ(engine_->Release(ids[0], d.lease_id(), absl::ZeroDuration()).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(EngineTest, ReleaseNeverGivesUpATask) {
  CreateQueue("q", v1::QUEUE_KIND_FIFO, 0, /*max_attempts=*/1);
  auto ids = MustPut("q", {Spec("x")});
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(engine_->Release(ids[0], MustLease("q").lease_id(), absl::ZeroDuration()).ok());
  }
  EXPECT_EQ(Stats("q").ready(), 1u);
  EXPECT_EQ(Stats("q").dead(), 0u);
}

// --- exactly-once results on the new paths -----------------------------------------

TEST_F(EngineTest, LateCompletionsOnEveryLostPathAreRefused) {
  v1::QueueConfig c = Config("q");
  c.set_backoff_ms(1);
  c.set_max_attempts(10);
  CreateQueue(c);
  auto ids = MustPut("q", {Spec("x", 0, "r")});
  v1::Delivery expired = MustLease("q");
  Advance(absl::Seconds(10));
  Advance(absl::Milliseconds(1));
  v1::Delivery current = MustLease("q");
  absl::Status late = engine_->Complete(ids[0], expired.lease_id(), "late");
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(late.message()), HasSubstr("newer lease"));
  ASSERT_TRUE(engine_->CancelTask(ids[0]).ok());
  late = engine_->Complete(ids[0], current.lease_id(), "late too");
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(late.message()), HasSubstr("was cancelled"));
  auto results = MustGet("r", false, 10);
  ASSERT_THAT(results, SizeIs(1));  // the cancellation, nothing else
  EXPECT_EQ(results[0].task().outcome(), v1::OUTCOME_CANCELLED);
}

// --- dedup ----------------------------------------------------------------------------

TEST_F(EngineTest, DuplicateKeyReturnsTheExistingTask) {
  PutResult first = MustPutResult("q", {Keyed("a", "k1")});
  PutResult again = MustPutResult("q", {Keyed("a2", "k1")});
  EXPECT_EQ(again.ids, first.ids);
  EXPECT_THAT(again.existing, ElementsAre(true));
  EXPECT_EQ(Stats("q").ready(), 1u);
  EXPECT_EQ(Stats("q").total_put(), 1u);
  // In one batch: the first of each key is stored, the rest refer to it.
  PutResult batch = MustPutResult("q", {Keyed("b", "k2"), Keyed("b2", "k2"), Keyed("c", "k1"),
                                        Spec("plain")});
  ASSERT_THAT(batch.ids, SizeIs(4));
  EXPECT_EQ(batch.ids[1], batch.ids[0]);
  EXPECT_EQ(batch.ids[2], first.ids[0]);
  EXPECT_THAT(batch.existing, ElementsAre(false, true, true, false));
  EXPECT_EQ(Stats("q").ready(), 3u);
  EXPECT_EQ(MustGetTask(first.ids[0]).dedup_key(), "k1");
  // Keys are per queue.
  EXPECT_THAT(MustPutResult("other", {Keyed("a", "k1")}).existing, ElementsAre(false));
}

TEST_F(EngineTest, DedupKeyIsFreeAgainOnlyWhenTheTaskFinishes) {
  v1::QueueConfig c = Config("q");
  c.set_max_attempts(1);
  CreateQueue(c);
  auto ids = MustPut("q", {Keyed("x", "k")});
  // Leased: still taken.
  v1::Delivery d = MustLease("q");
  EXPECT_THAT(MustPutResult("q", {Keyed("x", "k")}).existing, ElementsAre(true));
  // Dead: still taken.
  ASSERT_TRUE(engine_->Fail(ids[0], d.lease_id(), "bad", true).ok());
  EXPECT_THAT(MustPutResult("q", {Keyed("x", "k")}).ids, ElementsAre(ids[0]));
  // Purged: free.
  ASSERT_TRUE(engine_->PurgeDead("q").ok());
  PutResult fresh = MustPutResult("q", {Keyed("x", "k")});
  EXPECT_THAT(fresh.existing, ElementsAre(false));
  EXPECT_NE(fresh.ids[0], ids[0]);
  // Done (taken): free.
  MustGet("q");
  EXPECT_THAT(MustPutResult("q", {Keyed("x", "k")}).existing, ElementsAre(false));
  // Cancelled: free.
  auto delayed = MustPut("q", {[] {
                           v1::TaskSpec s = Keyed("later", "d");
                           s.set_delay_ms(1000);
                           return s;
                         }()});
  ASSERT_TRUE(engine_->CancelTask(delayed[0]).ok());
  EXPECT_THAT(MustPutResult("q", {Keyed("later", "d")}).existing, ElementsAre(false));
}

TEST_F(EngineTest, DuplicatesNeedNoRoomInAFullQueue) {
  CreateQueue("q", v1::QUEUE_KIND_FIFO, /*maxsize=*/1);
  auto ids = MustPut("q", {Keyed("x", "k")});
  PutResult again = MustPutResult("q", {Keyed("x", "k")});
  EXPECT_THAT(again.ids, ElementsAre(ids[0]));
  EXPECT_EQ(PutStatus("q", {Keyed("y", "other")}).code(), absl::StatusCode::kResourceExhausted);
}

// --- cancel ------------------------------------------------------------------------------

TEST_F(EngineTest, CancelRemovesReadyAndDelayedTasksWithACancelledResult) {
  auto ids = MustPut("q", {Spec("ready", 0, "r"), Delayed("delayed", absl::Seconds(5), "r")});
  Result<absl::Status> joined;
  engine_->Join("q", absl::InfiniteFuture(), [&](absl::Status s) { joined.value = s; });
  auto previous = engine_->CancelTask(ids[0]);
  ASSERT_TRUE(previous.ok());
  EXPECT_EQ(*previous, v1::TASK_STATE_READY);
  EXPECT_FALSE(joined.done());
  previous = engine_->CancelTask(ids[1]);
  ASSERT_TRUE(previous.ok());
  EXPECT_EQ(*previous, v1::TASK_STATE_DELAYED);
  ASSERT_TRUE(joined.done());  // cancelled counts as finished
  v1::QueueStats stats = Stats("q");
  EXPECT_EQ(stats.ready() + stats.delayed(), 0u);
  EXPECT_EQ(stats.total_cancelled(), 2u);
  EXPECT_EQ(engine_->NextDeadline(), absl::InfiniteFuture());
  auto results = MustGet("r", false, 10);
  ASSERT_THAT(results, SizeIs(2));
  EXPECT_EQ(results[0].task().outcome(), v1::OUTCOME_CANCELLED);
  EXPECT_EQ(results[0].task().result_of(), ids[0]);
  EXPECT_EQ(MustGetTask(ids[1]).state(), v1::TASK_STATE_CANCELLED);
}

TEST_F(EngineTest, CancelRevokesALeaseAndTheNextHeartbeatSaysStop) {
  auto ids = MustPut("q", {Spec("x", 0, "r")});
  v1::Delivery d = MustLease("q");
  auto previous = engine_->CancelTask(ids[0]);
  ASSERT_TRUE(previous.ok());
  EXPECT_EQ(*previous, v1::TASK_STATE_LEASED);
  EXPECT_EQ(Stats("q").leased(), 0u);
  absl::StatusOr<absl::Time> beat = engine_->ExtendLease(d.lease_id());
  EXPECT_EQ(beat.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(std::string(beat.status().message()), HasSubstr("cancelled"));
  absl::Status s = engine_->Complete(ids[0], d.lease_id(), "too late");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr(absl::StrCat("task ", ids[0], " was cancelled")));
  EXPECT_EQ(engine_->Fail(ids[0], d.lease_id(), "x", false).code(),
            absl::StatusCode::kFailedPrecondition);
  auto results = MustGet("r", false, 10);
  ASSERT_THAT(results, SizeIs(1));
  EXPECT_EQ(results[0].task().outcome(), v1::OUTCOME_CANCELLED);
}

TEST_F(EngineTest, RevokedLeasesAreRememberedWithinABound) {
  EngineOptions options;
  options.revoked_lease_memory = 1;
  Reset(options);
  auto ids = MustPut("q", {Spec("a"), Spec("b")});
  auto leases = MustGet("q", true, 2);
  ASSERT_TRUE(engine_->CancelTask(ids[0]).ok());
  ASSERT_TRUE(engine_->CancelTask(ids[1]).ok());
  EXPECT_EQ(engine_->ExtendLease(leases[1].lease_id()).status().code(),
            absl::StatusCode::kCancelled);
  // Forgotten: still refused, just without the "stop" hint.
  EXPECT_EQ(engine_->ExtendLease(leases[0].lease_id()).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(EngineTest, CancellingAFinishedOrUnknownTaskIsRefused) {
  auto ids = MustPut("q", {Spec("x")});
  MustGet("q");  // taken = done
  absl::Status s = engine_->CancelTask(ids[0]).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("already done"));
  EXPECT_EQ(engine_->CancelTask(999999).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine_->CancelTask(0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, CancellingADeadTaskSendsNoSecondResult) {
  CreateQueue("q", v1::QUEUE_KIND_FIFO, 0, /*max_attempts=*/1);
  auto ids = MustPut("q", {Spec("x", 0, "r")});
  ASSERT_TRUE(engine_->Fail(ids[0], MustLease("q").lease_id(), "bad", true).ok());
  auto previous = engine_->CancelTask(ids[0]);
  ASSERT_TRUE(previous.ok());
  EXPECT_EQ(*previous, v1::TASK_STATE_DEAD);
  EXPECT_EQ(Stats("q").dead(), 0u);
  EXPECT_EQ(Stats("q").total_cancelled(), 1u);
  auto results = MustGet("r", false, 10);
  ASSERT_THAT(results, SizeIs(1));
  EXPECT_EQ(results[0].task().outcome(), v1::OUTCOME_FAILED);
}

// --- status lookup ---------------------------------------------------------------------

TEST_F(EngineTest, GetTaskReportsLiveAndRecentlyFinishedTasks) {
  auto ids = MustPut("q", {Spec("payload", 0, "r")});
  v1::Task t = MustGetTask(ids[0]);
  EXPECT_EQ(t.state(), v1::TASK_STATE_READY);
  EXPECT_EQ(t.payload(), "payload");
  EXPECT_EQ(t.attempt(), 0u);
  v1::Delivery d = MustLease("q");
  t = MustGetTask(ids[0]);
  EXPECT_EQ(t.state(), v1::TASK_STATE_LEASED);
  EXPECT_EQ(t.worker(), "consumer");
  EXPECT_EQ(t.attempt(), 1u);
  // Deliveries carry no status fields.
  EXPECT_EQ(d.task().state(), v1::TASK_STATE_UNSPECIFIED);
  ASSERT_TRUE(engine_->Complete(ids[0], d.lease_id(), "out").ok());
  t = MustGetTask(ids[0]);
  EXPECT_EQ(t.state(), v1::TASK_STATE_DONE);
  EXPECT_EQ(t.payload(), "");
  EXPECT_EQ(t.queue(), "q");
  EXPECT_EQ(t.attempt(), 1u);
  absl::Status unknown = engine_->GetTask(123456).status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(unknown.message()), HasSubstr("finished long ago"));
}

TEST_F(EngineTest, FinishedTaskMemoryIsBounded) {
  EngineOptions options;
  options.finished_task_memory = 2;
  Reset(options);
  auto ids = MustPut("q", {Spec("a"), Spec("b"), Spec("c")});
  MustGet("q", false, 3);
  EXPECT_EQ(engine_->GetTask(ids[0]).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(MustGetTask(ids[1]).state(), v1::TASK_STATE_DONE);
  EXPECT_EQ(MustGetTask(ids[2]).state(), v1::TASK_STATE_DONE);

  options.finished_task_memory = 1000;
  options.finished_task_memory_bytes = 1;  // the byte budget binds too
  Reset(options);
  ids = MustPut("q", {Spec("a"), Spec("b")});
  MustGet("q", false, 2);
  EXPECT_EQ(engine_->GetTask(ids[0]).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(engine_->GetTask(ids[1]).ok());  // the newest is always kept
}

// --- queue shutdown ----------------------------------------------------------------------

TEST_F(EngineTest, ShutdownRefusesPutsAndDrainsGets) {
  MustPut("q", {Spec("a"), Spec("b")});
  auto dropped = engine_->ShutdownQueue("q", false);
  ASSERT_TRUE(dropped.ok());
  EXPECT_EQ(*dropped, 0u);
  EXPECT_TRUE(Stats("q").shut_down());
  absl::Status s = PutStatus("q", {Spec("c")});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("queue \"q\" is shut down"));
  EXPECT_THAT(Payloads(MustGet("q")), ElementsAre("a"));
  EXPECT_THAT(Payloads(MustGet("q")), ElementsAre("b"));
  s = GetStatus("q");
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(s.message()), HasSubstr("shut down and empty"));
  EXPECT_EQ(engine_->ShutdownQueue("nope", false).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(EngineTest, ShutdownWakesBlockedCallers) {
  CreateQueue("full", v1::QUEUE_KIND_FIFO, /*maxsize=*/1);
  MustPut("full", {Spec("a")});
  PutCapture putter;
  PutAsync("full", {Spec("b")}, &putter, clock_.Now() + absl::Seconds(30));
  ASSERT_FALSE(putter.done());
  GetCapture getter;
  GetAsync("empty", &getter, false, 1, clock_.Now() + absl::Seconds(30));
  ASSERT_FALSE(getter.done());

  ASSERT_TRUE(engine_->ShutdownQueue("full", false).ok());
  ASSERT_TRUE(putter.done());
  EXPECT_EQ(putter.value->status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(engine_->ShutdownQueue("empty", false).ok());
  ASSERT_TRUE(getter.done());
  EXPECT_EQ(getter.value->status().code(), absl::StatusCode::kOutOfRange);
}

TEST_F(EngineTest, ShutdownGettersWaitForDelayedTasks) {
  MustPut("q", {Delayed("later", absl::Seconds(2))});
  ASSERT_TRUE(engine_->ShutdownQueue("q", false).ok());
  GetCapture first, second;
  GetAsync("q", &first, false, 1, clock_.Now() + absl::Seconds(30));
  GetAsync("q", &second, false, 1, clock_.Now() + absl::Seconds(30));
  EXPECT_FALSE(first.done());
  Advance(absl::Seconds(2));
  ASSERT_TRUE(first.done());
  EXPECT_THAT(Payloads(**first.value), ElementsAre("later"));
  ASSERT_TRUE(second.done());  // nothing left: the rest learn at once
  EXPECT_EQ(second.value->status().code(), absl::StatusCode::kOutOfRange);
}

TEST_F(EngineTest, ImmediateShutdownDropsWaitingTasksButLeasesMayFinish) {
  auto ids = MustPut("q", {Spec("leased", 0, "r"), Spec("ready", 0, "r"),
                           Delayed("delayed", absl::Seconds(9), "r")});
  v1::Delivery d = MustLease("q");
  Result<absl::Status> joined;
  engine_->Join("q", absl::InfiniteFuture(), [&](absl::Status s) { joined.value = s; });
  auto dropped = engine_->ShutdownQueue("q", true);
  ASSERT_TRUE(dropped.ok());
  EXPECT_EQ(*dropped, 2u);
  EXPECT_FALSE(joined.done());
  EXPECT_EQ(GetStatus("q").code(), absl::StatusCode::kOutOfRange);
  ASSERT_TRUE(engine_->Complete(ids[0], d.lease_id(), "fine").ok());
  ASSERT_TRUE(joined.done());
  EXPECT_TRUE(joined.value->ok());
  auto results = MustGet("r", false, 10);
  ASSERT_THAT(results, SizeIs(3));
  int cancelled = 0;
  for (const auto& r : results) cancelled += r.task().outcome() == v1::OUTCOME_CANCELLED;
  EXPECT_EQ(cancelled, 2);
}

TEST_F(EngineTest, DeleteAndCreateMakesAFreshQueue) {
  MustPut("q", {Spec("a")});
  ASSERT_TRUE(engine_->ShutdownQueue("q", false).ok());
  ASSERT_TRUE(engine_->DeleteQueue("q").ok());
  MustPut("q", {Spec("b")});
  EXPECT_FALSE(Stats("q").shut_down());
  EXPECT_THAT(Payloads(MustGet("q")), ElementsAre("b"));
}

// The sequence a `taskq put --delay 100` was once reported to come out at
// once after (dead-letter requeue, cancel, shutdown on the same queue, then
// delete and re-create): the delayed task waits its 100 s, for getters and
// for a worker alike, while a task requeued meanwhile is served at once.
TEST_F(EngineTest, DelayedPutAfterRequeueCancelAndShutdownWaitsItsTime) {
  v1::QueueConfig c = Config("q");
  c.set_max_attempts(1);
  c.set_dead_letter("dlq");
  CreateQueue(c);
  auto ids = MustPut("q", {Spec("a"), Spec("b"), Delayed("c", absl::Seconds(100))});
  ASSERT_TRUE(engine_->Fail(ids[0], MustLease("q").lease_id(), "boom", true).ok());
  ASSERT_TRUE(engine_->Fail(ids[1], MustLease("q").lease_id(), "boom", true).ok());
  ASSERT_EQ(engine_->RequeueDead("dlq", ids[0]).value_or(0), 1u);
  ASSERT_EQ(engine_->CancelTask(ids[0]).value_or(v1::TASK_STATE_UNSPECIFIED),
            v1::TASK_STATE_READY);
  ASSERT_EQ(engine_->ShutdownQueue("q", /*immediate=*/true).value_or(0), 1u);  // "c"
  EXPECT_EQ(engine_->RequeueDead("dlq", ids[1]).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(engine_->DeleteQueue("q").ok());
  CreateQueue(c);

  std::vector<v1::Delivery> delivered;
  auto sub = engine_->Subscribe({"q"}, "w", [&](std::vector<v1::Delivery> ds) {
    for (auto& d : ds) delivered.push_back(std::move(d));
  });
  ASSERT_TRUE(sub.ok());
  const absl::Time put_at = clock_.Now();
  auto late = MustPut("q", {Delayed("late", absl::Seconds(100))});
  ASSERT_TRUE(engine_->AddCredits(*sub, 1).ok());
  EXPECT_TRUE(delivered.empty());
  EXPECT_EQ(GetStatus("q").code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(MustGetTask(late[0]).not_before_unix_ms(),
            absl::ToUnixMillis(put_at + absl::Seconds(100)));

  // The task that stayed dead goes back now and is served at once.
  ASSERT_EQ(engine_->RequeueDead("dlq", 0).value_or(0), 1u);
  ASSERT_THAT(delivered, SizeIs(1));
  EXPECT_EQ(delivered[0].task().id(), ids[1]);
  ASSERT_TRUE(engine_->Complete(ids[1], delivered[0].lease_id(), "").ok());
  ASSERT_TRUE(engine_->AddCredits(*sub, 1).ok());

  Advance(absl::Milliseconds(99'999));
  EXPECT_THAT(delivered, SizeIs(1));
  EXPECT_EQ(MustGetTask(late[0]).state(), v1::TASK_STATE_DELAYED);
  Advance(absl::Milliseconds(1));
  ASSERT_THAT(delivered, SizeIs(2));
  EXPECT_EQ(delivered[1].task().id(), late[0]);
  engine_->Unsubscribe(*sub);
}

// --- queue settings ---------------------------------------------------------------------

TEST_F(EngineTest, UpdateQueueChangesOnlyTheSetFields) {
  v1::QueueConfig c = Config("q");
  c.set_kind(v1::QUEUE_KIND_LIFO);
  c.set_maxsize(5);
  c.set_max_attempts(4);
  CreateQueue(c);
  v1::QueueConfigUpdate u;
  u.set_lease_ms(2000);
  u.set_dead_letter("q.dead");
  auto updated = engine_->UpdateQueue("q", u);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->kind(), v1::QUEUE_KIND_LIFO);
  EXPECT_EQ(updated->maxsize(), 5u);
  EXPECT_EQ(updated->max_attempts(), 4u);
  EXPECT_EQ(updated->lease_ms(), 2000u);
  EXPECT_EQ(updated->dead_letter(), "q.dead");
  EXPECT_EQ(Stats("q").config().lease_ms(), 2000u);
  // 0 means the master's default, as at create.
  v1::QueueConfigUpdate reset;
  reset.set_lease_ms(0);
  EXPECT_EQ(engine_->UpdateQueue("q", reset)->lease_ms(), 10000u);

  EXPECT_EQ(engine_->UpdateQueue("nope", u).status().code(), absl::StatusCode::kNotFound);
  v1::QueueConfigUpdate bad;
  bad.set_lease_ms(5);
  EXPECT_EQ(engine_->UpdateQueue("q", bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad.Clear();
  bad.set_backoff_ms(120000);  // above the stored cap of 60 s
  absl::Status s = engine_->UpdateQueue("q", bad).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("cap"));
  bad.Clear();
  bad.set_dead_letter("bad name");
  EXPECT_EQ(engine_->UpdateQueue("q", bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, NewLeaseTimeAppliesToNewLeasesAndExtensions) {
  auto ids = MustPut("q", {Spec("a"), Spec("b")});
  v1::Delivery old_lease = MustLease("q");
  v1::QueueConfigUpdate u;
  u.set_lease_ms(2000);
  ASSERT_TRUE(engine_->UpdateQueue("q", u).ok());
  v1::Delivery new_lease = MustLease("q");
  EXPECT_EQ(new_lease.lease_deadline_unix_ms(), absl::ToUnixMillis(clock_.Now()) + 2000);
  EXPECT_EQ(old_lease.lease_deadline_unix_ms(), absl::ToUnixMillis(clock_.Now()) + 10000);
  auto extended = engine_->ExtendLease(old_lease.lease_id());
  ASSERT_TRUE(extended.ok());
  EXPECT_EQ(*extended, clock_.Now() + absl::Seconds(2));
}

TEST_F(EngineTest, RaisingMaxsizeAdmitsWaitingPutters) {
  CreateQueue("q", v1::QUEUE_KIND_FIFO, /*maxsize=*/1);
  MustPut("q", {Spec("a")});
  PutCapture r;
  PutAsync("q", {Spec("b")}, &r, clock_.Now() + absl::Seconds(5));
  ASSERT_FALSE(r.done());
  v1::QueueConfigUpdate u;
  u.set_maxsize(2);
  ASSERT_TRUE(engine_->UpdateQueue("q", u).ok());
  ASSERT_TRUE(r.done());
  EXPECT_TRUE(r.value->ok());
}

TEST_F(EngineTest, CreateQueueComparesTheNewSettingsToo) {
  v1::QueueConfig c = Config("q");
  c.set_backoff_ms(500);
  c.set_dead_letter("dlq");
  CreateQueue(c);
  EXPECT_TRUE(engine_->CreateQueue(c, /*exist_ok=*/true).ok());
  v1::QueueConfig other = c;
  other.set_backoff_ms(600);
  EXPECT_EQ(engine_->CreateQueue(other, true).status().code(), absl::StatusCode::kAlreadyExists);
  other = c;
  other.set_dead_letter("");
  EXPECT_EQ(engine_->CreateQueue(other, true).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(EngineTest, QueueSettingsAreValidated) {
  auto refused = [&](v1::QueueConfig c) {
    return engine_->CreateQueue(c, false).status().code() == absl::StatusCode::kInvalidArgument;
  };
  v1::QueueConfig c = Config("q");
  c.set_backoff_ms(kMaxBackoffMs + 1);
  EXPECT_TRUE(refused(c));
  c = Config("q");
  c.set_backoff_max_ms(kMaxBackoffMaxMs + 1);
  EXPECT_TRUE(refused(c));
  c = Config("q");
  c.set_backoff_ms(1000);
  c.set_backoff_max_ms(10);
  EXPECT_TRUE(refused(c));
  c = Config("q");
  c.set_dead_letter(".hidden");
  EXPECT_TRUE(refused(c));
  c = Config("q");
  c.set_max_attempts(kMaxMaxAttempts + 1);
  EXPECT_TRUE(refused(c));
}

TEST_F(EngineTest, StatsCountEveryState) {
  CreateQueue("q", v1::QUEUE_KIND_FIFO, /*maxsize=*/10, /*max_attempts=*/1);
  auto ids = MustPut("q", {Spec("a"), Spec("b"), Spec("c"), Delayed("d", absl::Seconds(1))});
  MustLease("q");
  v1::Delivery dead = MustLease("q");
  ASSERT_TRUE(engine_->Fail(ids[1], dead.lease_id(), "bad", true).ok());
  v1::QueueStats s = Stats("q");
  EXPECT_EQ(s.ready(), 1u);
  EXPECT_EQ(s.delayed(), 1u);
  EXPECT_EQ(s.leased(), 1u);
  EXPECT_EQ(s.dead(), 1u);
  EXPECT_EQ(s.unfinished(), 3u);
  EXPECT_EQ(s.total_put(), 4u);
  EXPECT_EQ(s.total_failed(), 1u);
}

}  // namespace
}  // namespace taskq

namespace taskq {
namespace {

// A result message is data for its reader: a lease on it that lapses (the
// reply carrying it was lost) gives it back at once and in its old place,
// any number of times, never to a dead-letter set.
TEST_F(EngineTest, ResultMessagesComeBackWheneverTheirLeaseLapsesAndAreNeverGivenUp) {
  CreateQueue("res", v1::QUEUE_KIND_FIFO, 0, /*max_attempts=*/1);
  auto ids = MustPut("tasks", {Spec("7", 0, "res"), Spec("8", 0, "res")});
  for (uint64_t id : ids) ASSERT_TRUE(engine_->Complete(id, MustLease("tasks").lease_id(), "r").ok());
  for (int round = 0; round < 5; ++round) {
    GetCapture r;
    GetArgs args;
    args.queue = "res";
    args.lease = true;
    args.max_tasks = 10;
    args.nowait = true;
    args.lease_time = absl::Seconds(2);  // shorter than the queue's 30 s
    engine_->Get(std::move(args), [&r](auto got) { r.Set(std::move(got)); });
    ASSERT_TRUE(r.Wait());
    ASSERT_TRUE(r.value->ok()) << r.value->status();
    ASSERT_EQ((*r.value)->size(), 2u) << "round " << round;
    EXPECT_EQ((**r.value)[0].task().result_of(), ids[0]) << "old place kept";
    EXPECT_EQ((**r.value)[0].lease_deadline_unix_ms(),
              absl::ToUnixMillis(clock_.Now() + absl::Seconds(2)));
    Advance(absl::Seconds(2));  // lapses: ready again at once, no backoff
    EXPECT_EQ(Stats("res").ready(), 2u) << "round " << round;
  }
  EXPECT_EQ(Stats("res").dead(), 0u);
  // Acknowledged (Complete with no result), it is gone for good.
  for (const v1::Delivery& d : MustGet("res", true, 10)) {
    ASSERT_TRUE(engine_->Complete(d.task().id(), d.lease_id(), "").ok());
  }
  EXPECT_EQ(Stats("res").ready() + Stats("res").leased(), 0u);
}

// An ordinary task's lease still counts attempts and dead-letters.
TEST_F(EngineTest, AnOrdinaryTaskWhoseLeaseLapsesStillCountsAnAttempt) {
  CreateQueue("q", v1::QUEUE_KIND_FIFO, 0, /*max_attempts=*/1);
  MustPut("q", {Spec("x")});
  MustLease("q");
  Advance(absl::Seconds(31));
  EXPECT_EQ(Stats("q").dead(), 1u);
}

}  // namespace
}  // namespace taskq
