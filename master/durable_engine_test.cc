// The engine on the durable store (SqliteStore in a temporary directory):
// everything a client was told survives a restart of the engine — queues
// and settings, tasks in every state, results, dedup keys, join counters —
// leased tasks come back ready with the attempt counted and their old
// leases refused, finished tasks leave nothing on disk, and with fsync
// policy `always` no reply goes out before the sync (nor after a failed one).
//
// The store here is closed and reopened in-process; kill -9 of the real
// master is tests/crash_test.cc, torn WAL tails and a full disk are
// tests/durability_test.cc.
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <functional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/runtime/async_test_util.h"
#include "gmock/gmock.h"
#include "common/sync.h"
#include "master/engine_test_util.h"
#include "master/sqlite_store.h"
#include "taskq/v1/stored.pb.h"

namespace taskq {
namespace {

class DurableEngineTest : public EngineTest {
 protected:
  DurableEngineTest() {
    char tmpl[] = "/tmp/taskq-durable-XXXXXX";
    dir_ = mkdtemp(tmpl);
    Open(FsyncPolicy::kNever);
  }
  ~DurableEngineTest() override {
    engine_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // A fresh engine recovered from the store in dir_. Policy `never` replies
  // at once, so the fixture's synchronous helpers work.
  void Open(FsyncPolicy policy, std::function<absl::Status()> before_sync = nullptr,
            size_t memory_budget = size_t{256} << 20) {
    SqliteStoreOptions options;
    options.dir = dir_ + "/data";
    options.fsync = policy;
    options.before_sync = std::move(before_sync);
    options.retry_interval = absl::Milliseconds(5);
    options.on_healthy = [this] { healthy_again_ = true; };
    auto store = SqliteStore::Open(std::move(options));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    EngineOptions engine_options = options_;
    engine_options.memory_budget_bytes = memory_budget;
    Reset(engine_options);
    absl::Status s = engine_->Recover(store_.get());
    ASSERT_TRUE(s.ok()) << s;
  }
  void Restart(FsyncPolicy policy = FsyncPolicy::kNever,
               std::function<absl::Status()> before_sync = nullptr,
               size_t memory_budget = size_t{256} << 20) {
    engine_.reset();
    store_.reset();
    Open(policy, std::move(before_sync), memory_budget);
  }
  // With no memory budget every ready task goes cold once its write is
  // committed and a later step runs (Flush, then any step).
  void CoolEverything() {
    Flush();
    MustPut("other", {Spec("a step")});
  }
  // Waits until everything the engine wrote so far is committed.
  void Flush() {
    Notification done;
    engine_->WhenDurable([&](absl::Status) { done.Notify(); });
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  }
  // Task records and payloads on disk.
  size_t StoredTasks() {
    Flush();
    size_t n = 0;
    EXPECT_TRUE(store_->ScanTasks(
                          [&](uint64_t, absl::string_view, absl::string_view) {
                            ++n;
                            return true;
                          },
                          /*payloads=*/false)
                    .ok());
    return n;
  }

  std::string dir_;
  // Engine options for the next Open (the memory budget is Open's argument).
  EngineOptions options_;
  std::unique_ptr<SqliteStore> store_;
  std::atomic<bool> healthy_again_{false};
};

// A master restarted with a lower --max-queues than it holds still serves
// every stored queue; it only creates no new ones.
TEST_F(DurableEngineTest, RecoveryLoadsMoreQueuesThanTheQuota) {
  for (const char* name : {"a", "b", "c", "d", "e"}) MustPut(name, {Spec(name)});
  options_.max_queues = 3;
  Restart();
  v1::ListQueuesRequest all;
  auto page = engine_->ListQueues(all);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->queues_size(), 5);
  EXPECT_THAT(Payloads(MustGet("e")), ::testing::ElementsAre("e"));
  MustPut("a", {Spec("again")});
  absl::Status refused = PutStatus("f", {Spec("f")});
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  ASSERT_TRUE(engine_->DeleteQueue("a").ok());
  ASSERT_TRUE(engine_->DeleteQueue("b").ok());
  ASSERT_TRUE(engine_->DeleteQueue("c").ok());
  MustPut("f", {Spec("f")});  // 3 queues: d, e, f
  EXPECT_EQ(PutStatus("g", {Spec("g")}).code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(DurableEngineTest, QueuesAndTheirSettingsSurviveARestart) {
  CreateQueue("stack", v1::QUEUE_KIND_LIFO, /*maxsize=*/10, /*max_attempts=*/5);
  CreateQueue("closing", v1::QUEUE_KIND_FIFO);
  v1::QueueConfigUpdate update;
  update.set_lease_ms(1234);
  ASSERT_TRUE(engine_->UpdateQueue("stack", update).ok());
  ASSERT_TRUE(engine_->ShutdownQueue("closing", false).ok());
  const v1::QueueConfig before = Stats("stack").config();

  Restart();
  v1::QueueStats stack = Stats("stack");
  EXPECT_EQ(stack.config().SerializeAsString(), before.SerializeAsString());
  EXPECT_EQ(stack.config().lease_ms(), 1234u);
  EXPECT_EQ(stack.config().kind(), v1::QUEUE_KIND_LIFO);
  EXPECT_TRUE(Stats("closing").shut_down());
  EXPECT_EQ(PutStatus("closing", {Spec("x")}).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(DurableEngineTest, ReadyTasksComeBackInTheirOrderAndIdsAreNeverReused) {
  CreateQueue("fifo", v1::QUEUE_KIND_FIFO);
  CreateQueue("lifo", v1::QUEUE_KIND_LIFO);
  CreateQueue("prio", v1::QUEUE_KIND_PRIORITY);
  MustPut("fifo", {Spec("f1"), Spec("f2"), Spec("f3")});
  MustPut("lifo", {Spec("l1"), Spec("l2"), Spec("l3")});
  std::vector<uint64_t> ids = MustPut("prio", {Spec("p5", 5), Spec("p1", 1), Spec("p3", 3)});

  Restart();
  EXPECT_EQ(Payloads(MustGet("fifo", false, 10)), (std::vector<std::string>{"f1", "f2", "f3"}));
  EXPECT_EQ(Payloads(MustGet("lifo", false, 10)), (std::vector<std::string>{"l3", "l2", "l1"}));
  EXPECT_EQ(Payloads(MustGet("prio", false, 10)), (std::vector<std::string>{"p1", "p3", "p5"}));
  // A put after the restart gets a new id, and is ordered after the old ones.
  MustPut("fifo", {Spec("f4")});
  std::vector<uint64_t> fresh = MustPut("fifo", {Spec("f5")});
  EXPECT_GT(fresh[0], ids.back());
  EXPECT_EQ(Payloads(MustGet("fifo", false, 10)), (std::vector<std::string>{"f4", "f5"}));
}

TEST_F(DurableEngineTest, SmallAndLargePayloadsComeBackByteForByte) {
  std::string small(100, 's');
  std::string large(200 * 1024, '\0');
  for (size_t i = 0; i < large.size(); ++i) large[i] = static_cast<char>(i * 7);
  MustPut("q", {Spec(small), Spec(large), Spec("")});
  v1::Delivery leased = MustLease("q");  // a state change rewrites the task's record
  Restart();
  EXPECT_EQ(Payloads(MustGet("q", false, 10)), (std::vector<std::string>{small, large, ""}));
  (void)leased;
}

TEST_F(DurableEngineTest, DelayedTaskStaysDelayedUntilItsTime) {
  std::vector<uint64_t> ids = MustPut("q", {Delayed("later", absl::Seconds(60))});
  Restart();
  EXPECT_EQ(Stats("q").delayed(), 1u);
  EXPECT_EQ(GetStatus("q").code(), absl::StatusCode::kDeadlineExceeded);
  Advance(absl::Seconds(61));
  std::vector<v1::Delivery> got = MustGet("q");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].task().id(), ids[0]);
}

TEST_F(DurableEngineTest, LeasedTaskIsReadyAfterARestartWithTheAttemptCountedAndItsOldLeaseRefused) {
  CreateQueue("q", v1::QUEUE_KIND_FIFO, 0, /*max_attempts=*/3);
  MustPut("q", {Spec("a"), Spec("b")});
  v1::Delivery old = MustLease("q");
  ASSERT_EQ(old.task().payload(), "a");

  Restart();
  EXPECT_EQ(Stats("q").leased(), 0u);
  EXPECT_EQ(Stats("q").ready(), 2u);
  v1::Task t = MustGetTask(old.task().id());
  EXPECT_EQ(t.state(), v1::TASK_STATE_READY);
  EXPECT_EQ(t.attempt(), 1u);
  ASSERT_EQ(t.history_size(), 1);
  EXPECT_EQ(t.history(0).how(), "master restarted");
  // The lease from before the restart can settle nothing.
  absl::Status s = engine_->Complete(old.task().id(), old.lease_id(), "late");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  // Back in its old place (first), on its second attempt, under a new lease.
  v1::Delivery again = MustLease("q");
  EXPECT_EQ(again.task().id(), old.task().id());
  EXPECT_EQ(again.task().attempt(), 2u);
  EXPECT_NE(again.lease_id(), old.lease_id());
  EXPECT_TRUE(engine_->Complete(again.task().id(), again.lease_id(), "done").ok());
}

TEST_F(DurableEngineTest, TaskLeasedOnItsLastAttemptIsGivenUpOnRestart) {
  CreateQueue("q", v1::QUEUE_KIND_FIFO, 0, /*max_attempts=*/1);
  MustPut("q", {Spec("once", 0, "results")});
  v1::Delivery d = MustLease("q");
  Restart();
  EXPECT_EQ(Stats("q").dead(), 1u);
  std::vector<v1::Delivery> results = MustGet("results");
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].task().result_of(), d.task().id());
  EXPECT_EQ(results[0].task().outcome(), v1::OUTCOME_FAILED);
}

TEST_F(DurableEngineTest, CompletionAndItsResultAreStoredTogether) {
  MustPut("q", {Spec("3", 0, "results")});
  v1::Delivery d = MustLease("q");
  ASSERT_TRUE(engine_->Complete(d.task().id(), d.lease_id(), "9").ok());
  Restart();
  // The task is gone for good, its one result is there.
  EXPECT_EQ(Stats("q").unfinished(), 0u);
  EXPECT_EQ(Stats("q").total_completed(), 1u);
  std::vector<v1::Delivery> results = MustGet("results", false, 10);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].task().payload(), "9");
  EXPECT_EQ(results[0].task().result_of(), d.task().id());
  Restart();
  EXPECT_EQ(Stats("results").ready(), 0u);  // taken: not back either
}

TEST_F(DurableEngineTest, DedupKeysAndDeadLettersSurvive) {
  MustPut("q", {Keyed("job", "k1"), Spec("doomed")});
  MustGet("q");  // takes "job" (FIFO): finished
  Restart();
  // "job" was taken (finished): its key is free again.
  PutResult again = MustPutResult("q", {Keyed("job2", "k1")});
  EXPECT_FALSE(again.any_existing());
  v1::Delivery doomed = MustLease("q");
  ASSERT_EQ(doomed.task().payload(), "doomed");
  ASSERT_TRUE(engine_->Fail(doomed.task().id(), doomed.lease_id(), "bad input", true).ok());
  Restart();
  // The keyed task is still pending: its key still deduplicates.
  PutResult dup = MustPutResult("q", {Keyed("job3", "k1")});
  EXPECT_TRUE(dup.any_existing());
  EXPECT_EQ(dup.ids[0], again.ids[0]);
  auto dead = engine_->ListDead("q", 0, 10);
  ASSERT_TRUE(dead.ok()) << dead.status();
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_EQ((*dead)[0].id(), doomed.task().id());
  EXPECT_EQ((*dead)[0].last_error(), "bad input");
  auto requeued = engine_->RequeueDead("q", doomed.task().id());
  ASSERT_TRUE(requeued.ok()) << requeued.status();
  Restart();
  EXPECT_EQ(Stats("q").dead(), 0u);
  EXPECT_EQ(Stats("q").ready(), 2u);
}

TEST_F(DurableEngineTest, JoinCounterOfManualTaskDoneSurvives) {
  MustPut("q", {Spec("a")});
  GetCapture got;
  GetArgs args;
  args.queue = "q";
  args.nowait = true;
  args.manual_task_done = true;
  engine_->Get(std::move(args), [&](auto r) { got.Set(std::move(r)); });
  ASSERT_TRUE(got.Wait() && got.value->ok());
  Restart();
  EXPECT_EQ(Stats("q").unfinished(), 1u);
  ASSERT_TRUE(engine_->TaskDone("q", 1).ok());
  Restart();
  EXPECT_EQ(Stats("q").unfinished(), 0u);
}

TEST_F(DurableEngineTest, LeaseAckedAwaitingTaskDoneSurvives) {
  MustPut("q", {Spec("a")});
  std::vector<v1::Delivery> d = MustGet("q", /*lease=*/true, 1);
  ASSERT_EQ(d.size(), 1u);
  ASSERT_TRUE(engine_->CompleteAwaitingTaskDone(d[0].task().id(), d[0].lease_id()).ok());
  Restart();
  EXPECT_EQ(Stats("q").ready() + Stats("q").leased(), 0u);  // gone for good
  EXPECT_EQ(Stats("q").unfinished(), 1u);
  ASSERT_TRUE(engine_->TaskDone("q", 1).ok());
  Restart();
  EXPECT_EQ(Stats("q").unfinished(), 0u);
}

TEST_F(DurableEngineTest, DeletedQueueAndItsTasksStayDeleted) {
  MustPut("q", {Spec("a"), Spec("b")});
  ASSERT_TRUE(engine_->DeleteQueue("q").ok());
  Restart();
  EXPECT_EQ(engine_->Stats("q").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(StoredTasks(), 0u);
}

TEST_F(DurableEngineTest, FinishedTasksLeaveNothingOnDisk) {
  for (int batch = 0; batch < 10; ++batch) {
    std::vector<v1::TaskSpec> specs;
    for (int i = 0; i < 100; ++i) specs.push_back(Spec(std::string(100, 'x'), 0, "results"));
    MustPut("q", std::move(specs));
  }
  for (int i = 0; i < 10; ++i) {
    for (const v1::Delivery& d : MustGet("q", /*lease=*/true, 100)) {
      ASSERT_TRUE(engine_->Complete(d.task().id(), d.lease_id(), "ok").ok());
    }
  }
  EXPECT_EQ(MustGet("results", false, 1000).size(), 1000u);
  EXPECT_EQ(StoredTasks(), 0u);
  Restart();
  EXPECT_EQ(Stats("q").total_completed(), 1000u);
  EXPECT_EQ(Stats("results").ready(), 0u);
}

// --- cold ready tasks (beyond the memory budget) -----------------------------------

TEST_F(DurableEngineTest, ColdReadyTasksAreHandedOutInOrderWithTheirPayloads) {
  Restart(FsyncPolicy::kNever, nullptr, /*memory_budget=*/0);
  std::vector<v1::TaskSpec> specs;
  std::vector<std::string> expected;
  for (int i = 0; i < 3000; ++i) {
    std::string payload = absl::StrCat("task-", i, std::string(i % 2000, 'x'));
    expected.push_back(payload);
    specs.push_back(Spec(payload));
  }
  MustPut("q", std::move(specs));
  CoolEverything();
  std::vector<std::string> got;
  for (int i = 0; i < 3; ++i) {
    for (const v1::Delivery& d : MustGet("q", /*lease=*/true, 1000)) {
      got.push_back(d.task().payload());
      ASSERT_TRUE(engine_->Complete(d.task().id(), d.lease_id(), "ok").ok());
    }
  }
  EXPECT_EQ(got, expected);
  EXPECT_EQ(Stats("q").unfinished(), 0u);
}

// Issue 12, item 1: a worker granting more credits than one read-back batch
// (1024) once got 1024 tasks; the rest vanished from the queue (neither
// ready nor leased, status unknown) until a restart.
TEST_F(DurableEngineTest, ColdTasksBeyondOneReadBackBatchAreAllHandedToABigCreditWindow) {
  Restart(FsyncPolicy::kNever, nullptr, /*memory_budget=*/0);
  for (int credits : {1025, 1500, 2000}) {
    SCOPED_TRACE(absl::StrCat(credits, " credits"));
    const std::string queue = absl::StrCat("q", credits);
    std::vector<v1::TaskSpec> specs;
    for (int i = 0; i < 2000; ++i) specs.push_back(Spec(absl::StrCat("task-", i)));
    std::vector<uint64_t> ids = MustPut(queue, std::move(specs));
    CoolEverything();
    Mutex mu;
    std::vector<uint64_t> delivered;
    auto sub = engine_->Subscribe({queue}, "big-window", [&](std::vector<v1::Delivery> ds) {
      MutexLock lock(&mu);
      for (const auto& d : ds) delivered.push_back(d.task().id());
    });
    ASSERT_TRUE(sub.ok()) << sub.status();
    ASSERT_TRUE(engine_->AddCredits(*sub, credits).ok());
    v1::QueueStats stats = Stats(queue);
    {
      MutexLock lock(&mu);
      EXPECT_EQ(delivered.size(), static_cast<size_t>(credits));
    }
    EXPECT_EQ(stats.leased(), static_cast<uint64_t>(credits));
    EXPECT_EQ(stats.ready(), 2000u - credits);
    EXPECT_EQ(stats.unfinished(), 2000u);
    for (uint64_t id : ids) EXPECT_TRUE(engine_->GetTask(id).ok()) << "task " << id << " unknown";
    engine_->Unsubscribe(*sub);
  }
}

TEST_F(DurableEngineTest, ColdReadyTasksCanBeLookedUpCancelledPurgedAndDeleted) {
  Restart(FsyncPolicy::kNever, nullptr, /*memory_budget=*/0);
  std::vector<uint64_t> ids =
      MustPut("q", {Spec("a", 0, "results"), Spec("b", 0, "results"), Spec("c", 0, "results")});
  MustPut("gone", {Spec("x"), Spec("y")});
  CoolEverything();
  v1::Task a = MustGetTask(ids[0]);
  EXPECT_EQ(a.state(), v1::TASK_STATE_READY);
  EXPECT_EQ(a.payload(), "a");
  auto cancelled = engine_->CancelTask(ids[1]);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(*cancelled, v1::TASK_STATE_READY);
  auto purged = engine_->PurgeQueue("q");
  ASSERT_TRUE(purged.ok()) << purged.status();
  EXPECT_EQ(*purged, 2u);  // "a" and "c"
  // One CANCELLED result per task, cold or not.
  std::vector<v1::Delivery> results = MustGet("results", false, 10);
  ASSERT_EQ(results.size(), 3u);
  for (const auto& r : results) EXPECT_EQ(r.task().outcome(), v1::OUTCOME_CANCELLED);
  ASSERT_TRUE(engine_->DeleteQueue("gone").ok());
  EXPECT_EQ(StoredTasks(), 1u);  // only "a step" on queue "other"
}

TEST_F(DurableEngineTest, RestartBringsReadyTasksBackColdAndServesThem) {
  std::vector<v1::TaskSpec> specs;
  for (int i = 0; i < 500; ++i) specs.push_back(Spec(absl::StrCat(i), 0, "results"));
  MustPut("q", std::move(specs));
  Restart(FsyncPolicy::kNever, nullptr, /*memory_budget=*/0);
  EXPECT_EQ(Stats("q").ready(), 500u);
  std::vector<v1::Delivery> got = MustGet("q", /*lease=*/true, 1000);
  ASSERT_EQ(got.size(), 500u);
  for (int i = 0; i < 500; ++i) {
    EXPECT_EQ(got[i].task().payload(), absl::StrCat(i));
    EXPECT_EQ(got[i].task().reply_to(), "results");
  }
}

// --- fsync policy ---------------------------------------------------------------

// A sync the test holds up, or makes fail, once armed (the recovery's own
// sync passes).
struct SyncGate {
  Mutex mu;
  bool armed ABSL_GUARDED_BY(mu) = false;
  bool entered ABSL_GUARDED_BY(mu) = false;
  bool open ABSL_GUARDED_BY(mu) = false;
  absl::Status result ABSL_GUARDED_BY(mu);
  CondVar cv;

  absl::Status Sync() {
    MutexLock lock(&mu);
    if (!armed) return absl::OkStatus();
    entered = true;
    cv.SignalAll();
    while (!open) cv.Wait(&mu);
    return result;
  }
  void Arm() {
    MutexLock lock(&mu);
    armed = true;
  }
  void WaitEntered() {
    MutexLock lock(&mu);
    while (!entered) cv.Wait(&mu);
  }
  void Open(absl::Status s = absl::OkStatus()) {
    MutexLock lock(&mu);
    open = true;
    result = std::move(s);
    cv.SignalAll();
  }
};

// The reply of a put, set from the store's syncer thread.
struct PutReply {
  Notification done;
  absl::StatusOr<PutResult> value = absl::UnknownError("no reply");
};

void PutInto(TaskEngine& engine, const std::string& queue, PutReply* reply) {
  PutArgs args;
  args.queue = queue;
  args.tasks.emplace_back().set_payload("x");
  args.nowait = true;
  engine.Put(std::move(args), [reply](absl::StatusOr<PutResult> r) {
    reply->value = std::move(r);
    reply->done.Notify();
  });
}

// --- the memory budget with a store (issue 12, item 8) -----------------------

void ExpectBudgetRefusal(const absl::Status& s) {
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "memory budget")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "--memory-budget-mb")) << s;
}

TEST_F(DurableEngineTest, DelayedPutsBeyondTheBudgetAreRefusedReadyOnesGoCold) {
  Restart(FsyncPolicy::kNever, nullptr, /*memory_budget=*/1 << 20);
  const std::string big(64 << 10, 'x');
  // 4 MiB of ready tasks: accepted, they go cold.
  for (int i = 0; i < 64; ++i) MustPut("ready", {Spec(big)});
  CoolEverything();
  EXPECT_LE(engine_->Memory().task_bytes, size_t{2} << 20);
  // Delayed tasks stay in memory until due: refused beyond the budget.
  absl::Status refused;
  int delayed = 0;
  for (; delayed < 64; ++delayed) {
    refused = PutStatus("later", {Delayed(big, absl::Hours(1))});
    if (!refused.ok()) break;
  }
  ExpectBudgetRefusal(refused);
  EXPECT_TRUE(absl::StrContains(refused.message(), "delayed")) << refused;
  EXPECT_GE(delayed, 12);
  EXPECT_LE(delayed, 15);
  // Ready tasks are still welcome; delayed ones again once some came due.
  MustPut("ready", {Spec(big)});
  Advance(absl::Hours(2));
  MustPut("later", {Delayed(big, absl::Hours(1))});
}

TEST_F(DurableEngineTest, HardCapWhenCoolingLagsBehindUncommittedPuts) {
  SyncGate gate;
  options_.cooling_slack_bytes = 1 << 20;  // hard cap: 3 MiB
  Restart(FsyncPolicy::kAlways, [&gate] { return gate.Sync(); }, /*memory_budget=*/1 << 20);
  gate.Arm();
  // While no commit completes, ready tasks cannot go cold: puts are
  // accepted up to the hard cap, then refused. (Every reply, a refusal
  // too, waits for the commit.)
  const std::string big(64 << 10, 'x');
  std::vector<std::unique_ptr<PutCapture>> puts;
  for (int i = 0; i < 100; ++i) {  // 6.4 MiB
    puts.push_back(std::make_unique<PutCapture>());
    PutAsync("q", {Spec(big)}, puts.back().get(), absl::InfiniteFuture(), /*nowait=*/true);
  }
  const MemoryUsage held = engine_->Memory();
  EXPECT_LE(held.task_bytes, held.hard_cap_bytes);
  EXPECT_GE(held.task_bytes, held.hard_cap_bytes - (100 << 10));
  gate.Open();
  int stored = 0, refused = 0;
  for (auto& put : puts) {
    ASSERT_TRUE(put->Wait());
    if (put->value->ok()) {
      ++stored;
    } else {
      ++refused;
      ExpectBudgetRefusal(put->value->status());
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GE(stored, 40);  // ~3 MiB of 64 KiB tasks
  // Committed now: they go cold and puts are welcome again.
  CoolEverything();
  MustPut("q", {Spec(big)});
  EXPECT_LT(engine_->Memory().task_bytes, held.task_bytes);
}

TEST_F(DurableEngineTest, FsyncAlwaysRepliesOnlyAfterTheSync) {
  SyncGate gate;
  Restart(FsyncPolicy::kAlways, [&gate] { return gate.Sync(); });
  gate.Arm();
  PutReply reply;
  PutInto(*engine_, "q", &reply);
  // The put is in memory (and in the OS) but the sync is held: no reply.
  gate.WaitEntered();
  EXPECT_EQ(Stats("q").ready(), 1u);
  EXPECT_FALSE(reply.done.HasBeenNotified());
  gate.Open();
  ASSERT_TRUE(reply.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(reply.value.ok()) << reply.value.status();
}

TEST_F(DurableEngineTest, FailedSyncFailsTheReplyRefusesWritesKeepsReadsAndRecovers) {
  SyncGate gate;
  Restart(FsyncPolicy::kAlways, [&gate] { return gate.Sync(); });
  gate.Arm();
  PutReply reply;
  PutInto(*engine_, "q", &reply);
  gate.WaitEntered();
  gate.Open(absl::UnavailableError("injected: fdatasync failed"));
  ASSERT_TRUE(reply.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // Never acknowledged what it could not store.
  EXPECT_EQ(reply.value.status().code(), absl::StatusCode::kUnavailable) << reply.value.status();
  // The retry's sync succeeds (the gate stays open with OK from now on).
  {
    MutexLock lock(&gate.mu);
    gate.result = absl::OkStatus();
  }
  ASSERT_TRUE(rt::testing::WaitUntil([&] { return healthy_again_.load(); }, absl::Seconds(10)));
  EXPECT_TRUE(engine_->Stats("q").ok());
  PutReply later;
  PutInto(*engine_, "q", &later);
  ASSERT_TRUE(later.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(later.value.ok()) << later.value.status();
}

// What SQLite reports when the WAL cannot grow.
absl::Status DiskFull() {
  return absl::ResourceExhaustedError(
      "disk full: commit failed in --data-dir (injected: database or disk is full)");
}

TEST_F(DurableEngineTest, CommitFailedOnAFullDiskSaysTheOutcomeIsUnknownAndTheRetryStoresIt) {
  SyncGate gate;
  Restart(FsyncPolicy::kAlways, [&gate] { return gate.Sync(); });
  gate.Arm();
  PutReply reply;
  PutInto(*engine_, "q", &reply);
  gate.WaitEntered();
  gate.Open(DiskFull());  // and every retry fails the same way until healed
  ASSERT_TRUE(reply.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  // The put was made and is kept for the retry: not "refused", unknown.
  EXPECT_EQ(reply.value.status().code(), absl::StatusCode::kUnavailable) << reply.value.status();
  EXPECT_TRUE(absl::StrContains(reply.value.status().message(), "outcome unknown"))
      << reply.value.status();
  EXPECT_TRUE(absl::StrContains(reply.value.status().message(), "dedup key"))
      << reply.value.status();
  // A put while the store is failing is refused before anything changes:
  // RESOURCE_EXHAUSTED, and it is never stored.
  PutReply refused;
  PutInto(*engine_, "q", &refused);
  ASSERT_TRUE(refused.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(refused.value.status().code(), absl::StatusCode::kResourceExhausted)
      << refused.value.status();
  EXPECT_TRUE(absl::StrContains(refused.value.status().message(), "disk full"))
      << refused.value.status();

  {
    MutexLock lock(&gate.mu);
    gate.result = absl::OkStatus();
  }
  ASSERT_TRUE(rt::testing::WaitUntil([&] { return healthy_again_.load(); }, absl::Seconds(10)));
  Restart();
  EXPECT_EQ(Stats("q").ready(), 1u);  // the unknown one, stored by the retry
}

TEST_F(DurableEngineTest, CompletionWhoseCommitFailsIsReportedUnsettledNotRefused) {
  SyncGate gate;
  Restart(FsyncPolicy::kAlways, [&gate] { return gate.Sync(); });
  MustPut("q", {Spec("a", 0, "results")});
  v1::Delivery d = MustLease("q");
  gate.Arm();
  // The completion is made in memory; its reply (a unary Complete, or a
  // worker's ack on its Work stream) waits for the store like this.
  ASSERT_TRUE(engine_->Complete(d.task().id(), d.lease_id(), "done").ok());
  Notification done;
  absl::Status durable;
  engine_->WhenDurable([&](absl::Status s) {
    durable = s;
    done.Notify();
  });
  gate.WaitEntered();
  gate.Open(DiskFull());
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(durable.code(), absl::StatusCode::kUnavailable) << durable;
  EXPECT_TRUE(absl::StrContains(durable.message(), "outcome unknown")) << durable;
  {
    MutexLock lock(&gate.mu);
    gate.result = absl::OkStatus();
  }
  ASSERT_TRUE(rt::testing::WaitUntil([&] { return healthy_again_.load(); }, absl::Seconds(10)));
  Restart();
  EXPECT_EQ(Stats("q").unfinished(), 0u);
  EXPECT_EQ(MustGet("results", false, 10).size(), 1u);
}

TEST_F(DurableEngineTest, FsyncNeverAndIntervalDoNotWaitForASync) {
  for (FsyncPolicy policy : {FsyncPolicy::kNever, FsyncPolicy::kInterval}) {
    SyncGate gate;  // never opened: a reply that waited for a sync would hang
    Restart(policy, [&gate] { return gate.Sync(); });
    gate.Arm();
    EXPECT_EQ(MustPut("q", {Spec("x")}).size(), 1u) << FsyncPolicyName(policy);
    gate.Open();  // lets the interval syncer (and Close) finish
  }
}

// Issue 13: idle TTLs and the results owed to a reply queue are kept; the
// idle clock is not (it starts again from the restart), and an expiry is
// stored like a delete.
TEST_F(DurableEngineTest, IdleTtlAndResultsOwedSurviveARestartTheIdleClockStartsAgain) {
  options_.results_ttl = absl::Minutes(5);
  Restart();
  CreateQueue("jobs", v1::QUEUE_KIND_FIFO, 0, /*max_attempts=*/1);
  std::vector<uint64_t> ids = MustPut(
      "jobs", {Spec("a", 0, "_results.a"), Spec("b", 0, "_results.a"), Spec("c", 0, "_results.a")});
  v1::Delivery a = MustLease("jobs");
  ASSERT_TRUE(engine_->Fail(ids[0], a.lease_id(), "fatal", /*permanent=*/true).ok());
  MustLease("jobs");  // b, on its only attempt: given up by the restart
  v1::QueueConfig idle;
  idle.set_name("idle");
  idle.set_idle_ttl_ms(60'000);
  CreateQueue(idle);
  EXPECT_EQ(Stats("_results.a").pending_results(), 2u);
  Advance(absl::Seconds(50));

  Restart();
  EXPECT_EQ(Stats("_results.a").config().idle_ttl_ms(), 300'000u);
  EXPECT_EQ(Stats("idle").config().idle_ttl_ms(), 60'000u);
  EXPECT_EQ(Stats("_results.a").pending_results(), 1u);  // c
  EXPECT_EQ(Stats("_results.a").ready(), 2u);            // a's and b's FAILED results
  Advance(absl::Seconds(50));  // 100 s after "idle" was made, 50 s after the restart
  EXPECT_TRUE(engine_->Stats("idle").ok());
  Advance(absl::Seconds(10));
  EXPECT_FALSE(engine_->Stats("idle").ok());
  Restart();
  EXPECT_FALSE(engine_->Stats("idle").ok());
  EXPECT_EQ(Stats("_results.a").pending_results(), 1u);
}

TEST_F(DurableEngineTest, ResultsOwedByColdTasksAreCountedAfterARestartAndSettledByADelete) {
  Restart(FsyncPolicy::kNever, nullptr, /*memory_budget=*/0);
  MustPut("jobs", {Spec("a", 0, "r"), Spec("b", 0, "r"), Spec("c", 0, "r")});
  CoolEverything();
  EXPECT_EQ(Stats("r").pending_results(), 3u);
  Restart(FsyncPolicy::kNever, nullptr, /*memory_budget=*/0);  // they come back cold
  EXPECT_EQ(Stats("r").pending_results(), 3u);
  ASSERT_TRUE(engine_->DeleteQueue("jobs").ok());
  EXPECT_EQ(Stats("r").pending_results(), 0u);
  Restart(FsyncPolicy::kNever, nullptr, /*memory_budget=*/0);
  EXPECT_EQ(Stats("r").pending_results(), 0u);
}

// A "_results.*" queue stored by a master from before idle TTLs (no
// idle_ttl_ms in its record) gets --results-ttl when loaded: the orphaned
// result queues issue 13 found are cleaned up after an upgrade.
TEST_F(DurableEngineTest, ResultQueueStoredWithoutATtlGetsTheResultsTtlWhenLoaded) {
  engine_.reset();
  v1::StoredQueue old;
  old.mutable_config()->set_name("_results.old");
  old.mutable_config()->set_kind(v1::QUEUE_KIND_FIFO);
  std::unique_ptr<StoreBatch> batch = store_->NewBatch();
  batch->PutRecord("q_results.old", old.SerializeAsString());
  const uint64_t seq = store_->Write(std::move(batch));
  Notification stored;
  store_->WhenDurable(seq, [&](absl::Status s) {
    EXPECT_TRUE(s.ok()) << s;
    stored.Notify();
  });
  ASSERT_TRUE(stored.WaitForNotificationWithTimeout(absl::Seconds(10)));
  options_.results_ttl = absl::Minutes(5);
  Restart();
  EXPECT_EQ(Stats("_results.old").config().idle_ttl_ms(), 300'000u);
  options_.results_ttl = absl::Minutes(50);
  Restart();  // what it got was stored
  EXPECT_EQ(Stats("_results.old").config().idle_ttl_ms(), 300'000u);
  Advance(absl::Minutes(5));
  EXPECT_FALSE(engine_->Stats("_results.old").ok());
}

// After a restart the ready tasks are cold (their records on disk only);
// the oldest-ready-age gauge reads the one it needs back.
TEST_F(DurableEngineTest, OldestReadyAgeOfColdTasksAfterARestart) {
  MustPut("q", {Spec("first")});
  clock_.Advance(absl::Seconds(9));
  MustPut("q", {Spec("second")});
  Restart();
  clock_.Advance(absl::Seconds(1));
  const TaskEngine::Sample s = engine_->Metrics(10);
  ASSERT_EQ(s.first.size(), 1u);
  EXPECT_EQ(s.first[0].oldest_ready_age, absl::Seconds(10));
  EXPECT_THAT(Payloads(MustGet("q", false, 10)), ::testing::ElementsAre("first", "second"));
}

// Moving queues (engine/task_engine_move.cc): cold ready tasks are read
// back for the export; the copy dropped is gone from the store, so a
// restart does not bring it back.
TEST_F(DurableEngineTest, AMovedQueueLeavesWithItsColdTasksAndStaysGoneAfterARestart) {
  Restart(FsyncPolicy::kNever, nullptr, /*memory_budget=*/0);
  std::vector<v1::TaskSpec> specs;
  for (int i = 0; i < 1500; ++i) specs.push_back(Spec(absl::StrCat("task-", i)));
  MustPut("q", std::move(specs));
  CoolEverything();
  engine_->FenceQueues({"q"}, absl::UnavailableError("moving"));
  absl::StatusOr<MovedQueues> records = engine_->ExportQueues({"q"});
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->tasks.size(), 1500u);
  TaskEngine target(EngineOptions{}, &clock_);
  ASSERT_TRUE(target.ImportQueues({"q"}, true, *records).ok());
  engine_->DropQueues({"q"}, absl::UnavailableError("moved"));
  EXPECT_EQ(StoredTasks(), 1u);  // the "other" queue's step
  Restart();
  EXPECT_EQ(engine_->Stats("q").status().code(), absl::StatusCode::kNotFound);
  std::vector<std::string> payloads;
  for (int i = 0; i < 2; ++i) {
    for (std::string& p : Payloads(MustTakeFrom(target, "q", 1000))) payloads.push_back(p);
  }
  ASSERT_EQ(payloads.size(), 1500u);
  EXPECT_EQ(payloads.front(), "task-0");
  EXPECT_EQ(payloads.back(), "task-1499");
}

}  // namespace
}  // namespace taskq
