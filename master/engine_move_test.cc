// Unit tests for the engine's side of moving queues to another master
// (engine/task_engine_move.cc; the protocol is master/cluster/queue_mover.h):
// which queues are tied together, the fence, leases taken back, and a
// group exported from one engine and imported into another with ids,
// order, dedup keys, delays and dead letters kept.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "master/engine_test_util.h"

namespace taskq {
namespace {

using ::testing::ElementsAre;

absl::Status Moving() { return absl::UnavailableError("queue is moving"); }

TEST_F(EngineTest, TiedQueuesFollowDeadLettersAndResultsBothWays) {
  v1::QueueConfig jobs;
  jobs.set_name("jobs");
  jobs.set_dead_letter("dead");
  CreateQueue(jobs);
  v1::QueueConfig other;
  other.set_name("other");
  other.set_dead_letter("dead");  // shares the dead-letter queue
  CreateQueue(other);
  MustPut("jobs", {Spec("a", 0, "results")});
  MustPut("alone", {Spec("x")});
  const std::vector<std::string> tied = {"dead", "jobs", "other", "results"};
  EXPECT_EQ(engine_->TiedQueues("jobs"), tied);
  EXPECT_EQ(engine_->TiedQueues("results"), tied);  // from the reply queue back
  EXPECT_EQ(engine_->TiedQueues("alone"), std::vector<std::string>{"alone"});
}

TEST_F(EngineTest, AFencedQueueRefusesChangesHandsOutNothingAndSettlesLeases) {
  MustPut("q", {Spec("a"), Spec("b")});
  v1::Delivery held = MustLease("q");
  GetCapture waiting;
  MustPut("empty", {Spec("z")});
  MustGet("empty");
  GetAsync("empty", &waiting);  // a waiting get on another queue fenced next
  engine_->FenceQueues({"q"}, Moving());
  engine_->FenceQueues({"empty"}, Moving());
  ASSERT_TRUE(waiting.done());
  EXPECT_EQ(waiting.value->status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(PutStatus("q", {Spec("c")}).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(GetStatus("q").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(engine_->PurgeQueue("q").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(engine_->DeleteQueue("q").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(engine_->CancelTask(held.task().id()).status().code(),
            absl::StatusCode::kUnavailable);
  // A put that would tie another queue to it is refused too.
  EXPECT_EQ(PutStatus("elsewhere", {Spec("r", 0, "q")}).code(), absl::StatusCode::kUnavailable);
  // A lease taken before the fence still settles.
  EXPECT_EQ(engine_->LeasesOn({"q"}), 1u);
  EXPECT_TRUE(engine_->Complete(held.task().id(), held.lease_id(), "done").ok());
  EXPECT_EQ(engine_->LeasesOn({"q"}), 0u);
  // Lifted: served again, in order.
  engine_->UnfenceQueues({"q", "empty"});
  EXPECT_THAT(Payloads(MustGet("q", false, 5)), ElementsAre("b"));
}

TEST_F(EngineTest, LeasesTakenBackAreReadyAgainWithoutAnAttemptAndTheirReportIsRefused) {
  MustPut("q", {Spec("a"), Spec("b")});
  v1::Delivery held = MustLease("q");
  EXPECT_EQ(held.task().attempt(), 1u);
  engine_->FenceQueues({"q"}, Moving());
  EXPECT_EQ(engine_->TakeBackLeases({"q"}), 1u);
  EXPECT_EQ(engine_->Complete(held.task().id(), held.lease_id(), "late").code(),
            absl::StatusCode::kFailedPrecondition);
  engine_->UnfenceQueues({"q"});
  v1::Delivery again = MustLease("q");
  EXPECT_EQ(again.task().id(), held.task().id());  // in its old place, first
  EXPECT_EQ(again.task().attempt(), 1u);
  EXPECT_EQ(MustGetTask(held.task().id()).history(0).how(), "moved");
}

TEST_F(EngineTest, AnExportedGroupImportsWithIdsOrderDedupDelaysAndDeadLetters) {
  v1::QueueConfig jobs;
  jobs.set_name("jobs");
  jobs.set_dead_letter("dead");
  jobs.set_max_attempts(1);
  CreateQueue(jobs);
  std::vector<uint64_t> ready = MustPut("jobs", {Keyed("a", "key-a"), Spec("b"), Spec("c")});
  std::vector<uint64_t> later = MustPut("jobs", {Delayed("later", absl::Hours(1), "results")});
  std::vector<uint64_t> doomed = MustPut("jobs", {Spec("doomed", 0, "results")});
  // Lease a, b, c and doomed; give three back, fail doomed for good.
  std::vector<v1::Delivery> leased = MustGet("jobs", /*lease=*/true, 4);
  ASSERT_EQ(leased.size(), 4u);
  for (const v1::Delivery& d : leased) {
    if (d.task().id() == doomed[0]) {
      ASSERT_TRUE(engine_->Fail(d.task().id(), d.lease_id(), "boom", true).ok());
    } else {
      ASSERT_TRUE(engine_->Release(d.task().id(), d.lease_id(), absl::ZeroDuration()).ok());
    }
  }
  const std::vector<std::string> group = engine_->TiedQueues("jobs");
  ASSERT_EQ(group, (std::vector<std::string>{"dead", "jobs", "results"}));
  EXPECT_EQ(engine_->ExportQueues(group).status().code(), absl::StatusCode::kFailedPrecondition)
      << "exported without a fence";
  engine_->FenceQueues(group, Moving());
  absl::StatusOr<MovedQueues> records = engine_->ExportQueues(group);
  ASSERT_TRUE(records.ok()) << records.status();
  EXPECT_EQ(records->queues.size(), 3u);
  EXPECT_EQ(records->tasks.size(), 6u);  // 3 ready, 1 delayed, 1 dead, 1 result

  // Another engine (the target) takes them, in two chunks.
  TaskEngine target(EngineOptions{}, &clock_);
  MovedQueues first{records->queues, {records->tasks.begin(), records->tasks.begin() + 2}};
  MovedQueues rest{{}, {records->tasks.begin() + 2, records->tasks.end()}};
  ASSERT_TRUE(target.ImportQueues(group, /*replace=*/true, first).ok());
  ASSERT_TRUE(target.ImportQueues(group, /*replace=*/false, rest).ok());
  // Importing the same task twice is refused.
  EXPECT_FALSE(target.ImportQueues(group, false, rest).ok());

  // The source drops its copy without sending anything.
  std::vector<uint64_t> dropped = engine_->DropQueues(group, Moving());
  EXPECT_EQ(dropped.size(), 6u);
  EXPECT_EQ(engine_->Stats("jobs").status().code(), absl::StatusCode::kNotFound);

  auto stats = target.Stats("jobs");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->ready(), 3u);
  EXPECT_EQ(stats->delayed(), 1u);
  EXPECT_EQ(target.Stats("dead")->dead(), 1u);
  EXPECT_EQ(target.Stats("results")->ready(), 1u);
  EXPECT_EQ(target.Stats("results")->pending_results(), 1u);  // the delayed task owes one
  auto task = target.GetTask(later[0]);
  ASSERT_TRUE(task.ok());
  EXPECT_EQ(task->state(), v1::TASK_STATE_DELAYED);
  // Dedup keys came along.
  PutCapture dup;
  PutArgs args;
  args.queue = "jobs";
  args.tasks = {Keyed("a2", "key-a")};
  target.Put(std::move(args), [&](auto r) { dup.Set(std::move(r)); });
  ASSERT_TRUE(dup.done() && dup.value->ok());
  EXPECT_EQ((*dup.value)->ids[0], ready[0]);
  // Order kept: a, b, c; the delayed one when due, with its result.
  EXPECT_THAT(Payloads(MustTakeFrom(target, "jobs", 10)), ElementsAre("a", "b", "c"));
}

}  // namespace
}  // namespace taskq
