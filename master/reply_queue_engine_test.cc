// Unit tests of the reply-queue lifecycle in the engine (fake clock):
// QueueStats.pending_results on every path that makes a task owe a result
// or settles it, and the idle TTL (which queues get one, what counts as
// use, what holds a queue in use, what an expiry drops).
#include <string>
#include <vector>

#include "master/engine_test_util.h"

namespace taskq {
namespace {

class ReplyQueueTest : public EngineTest {
 protected:
  uint64_t Owed(const std::string& queue) { return Stats(queue).pending_results(); }
  bool Exists(const std::string& queue) { return engine_->Stats(queue).ok(); }
  // Results waiting in `queue`, taken: (result_of, outcome).
  std::vector<std::pair<uint64_t, v1::Outcome>> TakeResults(const std::string& queue) {
    std::vector<std::pair<uint64_t, v1::Outcome>> out;
    GetCapture r;
    GetAsync(queue, &r, false, 1000, absl::InfiniteFuture(), /*nowait=*/true);
    if (r.done() && r.value->ok()) {
      for (const auto& d : **r.value) out.push_back({d.task().result_of(), d.task().outcome()});
    }
    return out;
  }
  void CreateWithTtl(const std::string& name, absl::Duration ttl, uint32_t lease_ms = 0) {
    v1::QueueConfig c;
    c.set_name(name);
    c.set_idle_ttl_ms(static_cast<uint64_t>(absl::ToInt64Milliseconds(ttl)));
    c.set_lease_ms(lease_ms);
    CreateQueue(c);
  }
  void Update(const std::string& name, absl::Duration ttl) {
    v1::QueueConfigUpdate u;
    u.set_idle_ttl_ms(static_cast<uint64_t>(absl::ToInt64Milliseconds(ttl)));
    auto got = engine_->UpdateQueue(name, u);
    ASSERT_TRUE(got.ok()) << got.status();
  }
};

// --- pending_results --------------------------------------------------------------------

TEST_F(ReplyQueueTest, PutOwesOneResultPerTaskAndCompletionSettlesIt) {
  std::vector<uint64_t> ids = MustPut("jobs", {Spec("1", 0, "r"), Spec("2", 0, "r"), Spec("3")});
  EXPECT_EQ(Owed("r"), 2u);
  EXPECT_EQ(Owed("jobs"), 0u);  // tasks on it owe results elsewhere
  v1::Delivery d = MustLease("jobs");
  EXPECT_EQ(Owed("r"), 2u);  // leased: still owed
  ASSERT_TRUE(engine_->Complete(d.task().id(), d.lease_id(), "one").ok());
  EXPECT_EQ(Owed("r"), 1u);
  EXPECT_EQ(Stats("r").ready(), 1u);
  // Tasks of other queues add up on the same reply queue.
  MustPut("other", {Spec("4", 0, "r")});
  EXPECT_EQ(Owed("r"), 2u);
}

TEST_F(ReplyQueueTest, DedupHitOwesNothingMore) {
  v1::TaskSpec a = Keyed("a", "k");
  a.set_reply_to("r");
  MustPut("jobs", {a, a});
  MustPut("jobs", {a});
  EXPECT_EQ(Owed("r"), 1u);
}

TEST_F(ReplyQueueTest, RetryStillOwesGiveUpSendsTheResultAndRequeueOwesOneMore) {
  CreateQueue("jobs", v1::QUEUE_KIND_FIFO, 0, /*max_attempts=*/2);
  uint64_t id = MustPut("jobs", {Spec("x", 0, "r")})[0];
  v1::Delivery d = MustLease("jobs");
  ASSERT_TRUE(engine_->Fail(id, d.lease_id(), "boom", false).ok());
  EXPECT_EQ(Owed("r"), 1u);  // delayed for its retry
  Advance(absl::Minutes(2));
  d = MustLease("jobs");
  ASSERT_TRUE(engine_->Fail(id, d.lease_id(), "boom", false).ok());  // gives up
  EXPECT_EQ(Owed("r"), 0u);
  EXPECT_EQ(TakeResults("r"), (std::vector<std::pair<uint64_t, v1::Outcome>>{
                                  {id, v1::OUTCOME_FAILED}}));
  ASSERT_EQ(*engine_->RequeueDead("jobs", id), 1u);
  EXPECT_EQ(Owed("r"), 1u);
  d = MustLease("jobs");
  ASSERT_TRUE(engine_->Fail(id, d.lease_id(), "fatal", /*permanent=*/true).ok());
  EXPECT_EQ(Owed("r"), 0u);
  // Cancelling the dead task sends nothing and settles nothing twice.
  MustPut("jobs", {Spec("y", 0, "r")});
  ASSERT_TRUE(engine_->CancelTask(id).ok());
  EXPECT_EQ(Owed("r"), 1u);
  EXPECT_EQ(TakeResults("r").size(), 1u);  // the permanent failure's
}

TEST_F(ReplyQueueTest, ExpiryAndDisconnectOnTheLastAttemptSettle) {
  CreateQueue("jobs", v1::QUEUE_KIND_FIFO, 0, /*max_attempts=*/1);
  MustPut("jobs", {Spec("a", 0, "r"), Spec("b", 0, "r")});
  MustLease("jobs");
  Advance(absl::Seconds(11));  // lease (10 s) expired on its only attempt
  EXPECT_EQ(Owed("r"), 1u);
  std::vector<v1::Delivery> got;
  auto sub = engine_->Subscribe({"jobs"}, "w", [&](auto ds) {
    for (auto& d : ds) got.push_back(d);
  });
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(engine_->AddCredits(*sub, 1).ok());
  ASSERT_EQ(got.size(), 1u);
  engine_->Unsubscribe(*sub);
  EXPECT_EQ(Owed("r"), 0u);
  EXPECT_EQ(TakeResults("r").size(), 2u);
}

TEST_F(ReplyQueueTest, CancelPurgeAndImmediateShutdownSettle) {
  std::vector<uint64_t> ids = MustPut(
      "jobs", {Spec("a", 0, "r"), Spec("b", 0, "r"), Delayed("c", absl::Hours(1), "r"),
               Spec("d", 0, "r"), Spec("e", 0, "r")});
  EXPECT_EQ(Owed("r"), 5u);
  ASSERT_TRUE(engine_->CancelTask(ids[0]).ok());  // ready
  v1::Delivery d = MustLease("jobs");
  ASSERT_TRUE(engine_->CancelTask(d.task().id()).ok());  // leased
  EXPECT_EQ(Owed("r"), 3u);
  ASSERT_EQ(*engine_->PurgeQueue("jobs"), 3u);  // ready and delayed
  EXPECT_EQ(Owed("r"), 0u);
  MustPut("jobs", {Spec("f", 0, "r"), Delayed("g", absl::Hours(1), "r")});
  ASSERT_EQ(*engine_->ShutdownQueue("jobs", /*immediate=*/true), 2u);
  EXPECT_EQ(Owed("r"), 0u);
  EXPECT_EQ(TakeResults("r").size(), 7u);  // one CANCELLED result each
}

TEST_F(ReplyQueueTest, TakeModeGetEndsTheTaskWithoutAResult) {
  MustPut("jobs", {Spec("a", 0, "r")});
  ASSERT_EQ(MustGet("jobs").size(), 1u);
  EXPECT_EQ(Owed("r"), 0u);
  EXPECT_TRUE(TakeResults("r").empty());
}

TEST_F(ReplyQueueTest, DeletingTheTasksQueueSettlesDeletingTheReplyQueueDoesNot) {
  MustPut("jobs", {Spec("a", 0, "r"), Delayed("b", absl::Hours(1), "r")});
  MustPut("more", {Spec("c", 0, "r")});
  MustLease("jobs");
  ASSERT_TRUE(engine_->DeleteQueue("jobs").ok());
  EXPECT_EQ(Owed("r"), 1u);  // the task on "more"
  // The reply queue's owner deletes it: the task still owes (and drops)
  // its result; a queue made again under that name is owed it.
  ASSERT_TRUE(engine_->DeleteQueue("r").ok());
  CreateQueue("r", v1::QUEUE_KIND_FIFO);
  EXPECT_EQ(Owed("r"), 1u);
}

// --- idle TTL ---------------------------------------------------------------------------

TEST_F(ReplyQueueTest, ResultQueuesGetTheMastersResultsTtlOthersNone) {
  EngineOptions options;
  options.results_ttl = absl::Minutes(5);
  Reset(options);
  MustPut("jobs", {Spec("a", 0, "_results.a")});  // made on first use
  EXPECT_EQ(Stats("_results.a").config().idle_ttl_ms(), 300'000u);
  EXPECT_EQ(Stats("jobs").config().idle_ttl_ms(), 0u);
  v1::QueueConfig c;
  c.set_name("_results.b");  // `submit --wait` creates its queue so
  CreateQueue(c);
  EXPECT_EQ(Stats("_results.b").config().idle_ttl_ms(), 300'000u);
  EXPECT_TRUE(engine_->CreateQueue(c, /*exist_ok=*/true).ok());
  c.set_name("_results.c");
  c.set_idle_ttl_ms(0);  // explicitly never
  CreateQueue(c);
  EXPECT_EQ(Stats("_results.c").config().idle_ttl_ms(), 0u);
  c.set_name("mine");
  c.set_idle_ttl_ms(1000);
  CreateQueue(c);
  EXPECT_EQ(Stats("mine").config().idle_ttl_ms(), 1000u);

  options.results_ttl = absl::ZeroDuration();  // --results-ttl 0
  Reset(options);
  MustPut("jobs", {Spec("a", 0, "_results.a")});
  EXPECT_EQ(Stats("_results.a").config().idle_ttl_ms(), 0u);
}

TEST_F(ReplyQueueTest, TtlAboveAYearIsRefused) {
  v1::QueueConfig c;
  c.set_name("q");
  c.set_idle_ttl_ms(uint64_t{366} * 24 * 3600 * 1000);
  auto created = engine_->CreateQueue(c, false);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(created.status().message().find("365 days"), std::string::npos);
}

TEST_F(ReplyQueueTest, UnreadQueueExpiresAfterItsTtlWithWhatItHolds) {
  CreateWithTtl("q", absl::Minutes(1));
  std::vector<uint64_t> ids = MustPut("q", {Spec("a", 0, "r"), Spec("b")});
  EXPECT_EQ(Owed("r"), 1u);
  EXPECT_EQ(engine_->NextDeadline(), clock_.Now() + absl::Minutes(1));
  Advance(absl::Seconds(59));
  EXPECT_TRUE(Exists("q"));
  Advance(absl::Seconds(1));
  EXPECT_FALSE(Exists("q"));
  EXPECT_EQ(engine_->GetTask(ids[0]).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Owed("r"), 0u);  // its task went with it, without a result
  EXPECT_EQ(engine_->NextDeadline(), absl::InfiniteFuture());
}

TEST_F(ReplyQueueTest, ReplyQueueOwedAResultDoesNotExpireItsClockStartsWhenTheJobEnds) {
  CreateWithTtl("_results.a", absl::Minutes(1));
  uint64_t id = MustPut("jobs", {Spec("x", 0, "_results.a")})[0];
  Advance(absl::Hours(3));  // the job runs long: nobody reads meanwhile
  EXPECT_TRUE(Exists("_results.a"));
  v1::Delivery d = MustLease("jobs");
  ASSERT_TRUE(engine_->Complete(id, d.lease_id(), "done").ok());
  EXPECT_EQ(Owed("_results.a"), 0u);
  Advance(absl::Seconds(59));
  EXPECT_TRUE(Exists("_results.a"));
  EXPECT_EQ(Stats("_results.a").ready(), 1u);  // the unread result
  Advance(absl::Seconds(1));
  EXPECT_FALSE(Exists("_results.a"));
}

TEST_F(ReplyQueueTest, EveryGetAndPutRestartsTheClock) {
  CreateWithTtl("q", absl::Minutes(1));
  Advance(absl::Seconds(50));
  EXPECT_EQ(GetStatus("q").code(), absl::StatusCode::kDeadlineExceeded);  // empty, nowait
  Advance(absl::Seconds(50));
  EXPECT_TRUE(Exists("q"));
  uint64_t id = MustPut("q", {Spec("a")})[0];
  Advance(absl::Seconds(50));
  v1::Delivery d = MustLease("q");
  ASSERT_TRUE(engine_->Complete(id, d.lease_id(), "").ok());
  Advance(absl::Seconds(59));
  EXPECT_TRUE(Exists("q"));
  Advance(absl::Seconds(1));
  EXPECT_FALSE(Exists("q"));
  // Stats and listing are not reads.
  CreateWithTtl("s", absl::Minutes(1));
  Advance(absl::Seconds(50));
  Stats("s");
  ASSERT_TRUE(engine_->ListQueues({}).ok());
  Advance(absl::Seconds(10));
  EXPECT_FALSE(Exists("s"));
}

TEST_F(ReplyQueueTest, WaitingGetWorkerLeaseAndDelayHoldTheQueue) {
  CreateWithTtl("q", absl::Minutes(1), /*lease_ms=*/3'600'000);
  // A long poll longer than the TTL.
  GetCapture waiting;
  WaitId w = GetAsync("q", &waiting, false, 1, clock_.Now() + absl::Hours(1));
  Advance(absl::Minutes(10));
  EXPECT_TRUE(Exists("q"));
  engine_->CancelWait(w);
  Advance(absl::Seconds(59));
  EXPECT_TRUE(Exists("q"));
  // A worker taking from it.
  auto sub = engine_->Subscribe({"q"}, "w", [](auto) {});
  ASSERT_TRUE(sub.ok());
  Advance(absl::Minutes(10));
  EXPECT_TRUE(Exists("q"));
  engine_->Unsubscribe(*sub);
  // A leased task (lease 1 h).
  uint64_t id = MustPut("q", {Spec("a")})[0];
  v1::Delivery d = MustLease("q");
  Advance(absl::Minutes(10));
  EXPECT_TRUE(Exists("q"));
  ASSERT_TRUE(engine_->Complete(id, d.lease_id(), "").ok());
  // A delayed task.
  MustPut("q", {Delayed("b", absl::Minutes(30))});
  Advance(absl::Minutes(29));
  EXPECT_TRUE(Exists("q"));
  Advance(absl::Minutes(1));  // due: ready now, and nobody reads it
  EXPECT_TRUE(Exists("q"));
  Advance(absl::Seconds(59));
  EXPECT_TRUE(Exists("q"));
  Advance(absl::Seconds(1));
  EXPECT_FALSE(Exists("q"));
}

TEST_F(ReplyQueueTest, ReplyQueueMadeAgainIsHeldByTheResultsStillOwedToItsName) {
  CreateWithTtl("_results.a", absl::Minutes(1));
  CreateWithTtl("jobs", absl::ZeroDuration(), /*lease_ms=*/3'600'000);
  uint64_t id = MustPut("jobs", {Spec("x", 0, "_results.a")})[0];
  v1::Delivery d = MustLease("jobs");
  // Deleted by its owner meanwhile and made again by someone: owed again.
  ASSERT_TRUE(engine_->DeleteQueue("_results.a").ok());
  CreateWithTtl("_results.a", absl::Minutes(1));
  Advance(absl::Minutes(5));
  EXPECT_TRUE(Exists("_results.a"));
  ASSERT_TRUE(engine_->Complete(id, d.lease_id(), "late").ok());
  EXPECT_EQ(Stats("_results.a").ready(), 1u);
}

TEST_F(ReplyQueueTest, UpdateSetsTheTtlFromNowAndZeroMeansNever) {
  CreateQueue("q", v1::QUEUE_KIND_FIFO);
  Advance(absl::Hours(1));
  Update("q", absl::Minutes(1));
  EXPECT_EQ(Stats("q").config().idle_ttl_ms(), 60'000u);
  Advance(absl::Seconds(59));
  EXPECT_TRUE(Exists("q"));
  Update("q", absl::ZeroDuration());
  Advance(absl::Hours(48));
  EXPECT_TRUE(Exists("q"));
  EXPECT_EQ(engine_->NextDeadline(), absl::InfiniteFuture());
  // Other settings left alone keep the TTL.
  Update("q", absl::Minutes(1));
  v1::QueueConfigUpdate u;
  u.set_maxsize(5);
  ASSERT_TRUE(engine_->UpdateQueue("q", u).ok());
  EXPECT_EQ(Stats("q").config().idle_ttl_ms(), 60'000u);
  Advance(absl::Seconds(60));
  EXPECT_FALSE(Exists("q"));
}

}  // namespace
}  // namespace taskq
