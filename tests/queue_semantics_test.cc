// Queue semantics of issue 5 against the real master, through a raw gRPC
// stub: dedup keys (PutResponse.existing), delayed tasks, dead letters
// (ListDead / RequeueDead / PurgeDead), cancel with the worker told to stop
// on its next heartbeat, release over the Work stream, task status by id,
// queue update and shutdown, and the validation of the new fields. The
// engine's rules are unit-tested in master/task_engine_reliability_test.cc;
// this checks that the wire carries them.
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "common/channel.h"
#include "gtest/gtest.h"
#include "taskq/v1/taskq.grpc.pb.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

class QueueSemantics : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start();
    ASSERT_TRUE(s.ok()) << s;
    auto conn = cluster_.Connect();
    ASSERT_TRUE(conn.ok()) << conn.status();
    conn_ = *std::move(conn);
    stub_ = v1::TaskQueue::NewStub(conn_.channel);
  }

  // A context with the token and a deadline.
  std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout = absl::Seconds(20)) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    PrepareContext(ctx.get(), conn_.token, timeout);
    return ctx;
  }

  grpc::Status CreateQueue(const v1::QueueConfig& config) {
    v1::CreateQueueRequest req;
    *req.mutable_config() = config;
    v1::CreateQueueResponse resp;
    return stub_->CreateQueue(Ctx().get(), req, &resp);
  }

  grpc::Status Put(const std::string& queue, const std::vector<v1::TaskSpec>& tasks,
                   v1::PutResponse* resp) {
    v1::PutRequest req;
    req.set_queue(queue);
    req.set_nowait(true);
    for (const auto& t : tasks) *req.add_tasks() = t;
    return stub_->Put(Ctx().get(), req, resp);
  }

  grpc::Status Get(const std::string& queue, v1::GetMode mode, uint32_t timeout_ms,
                   v1::GetResponse* resp) {
    v1::GetRequest req;
    req.set_queue(queue);
    req.set_mode(mode);
    req.set_timeout_ms(timeout_ms);
    req.set_nowait(timeout_ms == 0);
    return stub_->Get(Ctx().get(), req, resp);
  }

  v1::Task GetTask(uint64_t id) {
    v1::GetTaskRequest req;
    req.set_task_id(id);
    v1::Task task;
    grpc::Status s = stub_->GetTask(Ctx().get(), req, &task);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return task;
  }

  static v1::TaskSpec Spec(const std::string& payload) {
    v1::TaskSpec t;
    t.set_payload(payload);
    return t;
  }

  Cluster cluster_;
  Connection conn_;
  std::unique_ptr<v1::TaskQueue::Stub> stub_;
};

TEST_F(QueueSemantics, DedupKeyReturnsTheExistingTaskId) {
  v1::TaskSpec a = Spec("a");
  a.set_dedup_key("order-17");
  v1::PutResponse first;
  ASSERT_TRUE(Put("q", {a}, &first).ok());
  EXPECT_EQ(first.existing_size(), 0) << "no dedup hit: existing stays empty";
  v1::PutResponse again;
  ASSERT_TRUE(Put("q", {Spec("b"), a}, &again).ok());
  ASSERT_EQ(again.ids_size(), 2);
  ASSERT_EQ(again.existing_size(), 2);
  EXPECT_FALSE(again.existing(0));
  EXPECT_TRUE(again.existing(1));
  EXPECT_EQ(again.ids(1), first.ids(0));

  v1::TaskSpec long_key = Spec("c");
  long_key.set_dedup_key(std::string(129, 'k'));
  v1::PutResponse refused;
  grpc::Status s = Put("q", {long_key}, &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "dedup key")) << s.error_message();
}

TEST_F(QueueSemantics, DelayedTaskArrivesAfterItsDelay) {
  v1::TaskSpec t = Spec("later");
  t.set_delay_ms(300);
  v1::PutResponse put;
  ASSERT_TRUE(Put("q", {t}, &put).ok());
  v1::Task status = GetTask(put.ids(0));
  EXPECT_EQ(status.state(), v1::TASK_STATE_DELAYED);
  EXPECT_GT(status.not_before_unix_ms(), 0);
  v1::GetResponse none;
  EXPECT_EQ(Get("q", v1::GET_MODE_TAKE, 0, &none).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  // The master's timer makes it ready; a long-poll picks it up.
  v1::GetResponse got;
  grpc::Status s = Get("q", v1::GET_MODE_TAKE, 10000, &got);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(got.deliveries_size(), 1);
  EXPECT_EQ(got.deliveries(0).task().payload(), "later");
  EXPECT_EQ(GetTask(put.ids(0)).state(), v1::TASK_STATE_DONE);
}

TEST_F(QueueSemantics, FailedTaskLandsInTheDeadLetterQueueAndCanBeRequeued) {
  v1::QueueConfig c;
  c.set_name("jobs");
  c.set_max_attempts(2);
  c.set_backoff_ms(1);
  c.set_dead_letter("jobs.dead");
  ASSERT_TRUE(CreateQueue(c).ok());
  v1::PutResponse put;
  ASSERT_TRUE(Put("jobs", {Spec("x")}, &put).ok());
  for (int attempt = 1; attempt <= 2; ++attempt) {
    v1::GetResponse got;
    grpc::Status s = Get("jobs", v1::GET_MODE_LEASE, 10000, &got);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(got.deliveries_size(), 1);
    EXPECT_EQ(got.deliveries(0).task().attempt(), static_cast<uint32_t>(attempt));
    v1::FailRequest fail;
    fail.set_task_id(put.ids(0));
    fail.set_lease_id(got.deliveries(0).lease_id());
    fail.set_error("handler exploded " + std::to_string(attempt));
    v1::FailResponse failed;
    ASSERT_TRUE(stub_->Fail(Ctx().get(), fail, &failed).ok());
  }
  v1::ListDeadRequest list;
  list.set_queue("jobs.dead");
  v1::ListDeadResponse dead;
  ASSERT_TRUE(stub_->ListDead(Ctx().get(), list, &dead).ok());
  ASSERT_EQ(dead.tasks_size(), 1);
  const v1::Task& d = dead.tasks(0);
  EXPECT_EQ(d.id(), put.ids(0));
  EXPECT_EQ(d.state(), v1::TASK_STATE_DEAD);
  EXPECT_EQ(d.origin_queue(), "jobs");
  EXPECT_EQ(d.last_error(), "handler exploded 2");
  ASSERT_EQ(d.history_size(), 2);
  EXPECT_EQ(d.history(0).how(), "failed");
  EXPECT_EQ(d.history(0).worker(), "consumer");

  v1::QueueStats stats;
  v1::GetQueueStatsRequest stats_req;
  stats_req.set_queue("jobs.dead");
  ASSERT_TRUE(stub_->GetQueueStats(Ctx().get(), stats_req, &stats).ok());
  EXPECT_EQ(stats.dead(), 1u);

  v1::RequeueDeadRequest requeue;
  requeue.set_queue("jobs.dead");
  requeue.set_task_id(put.ids(0));
  v1::RequeueDeadResponse requeued;
  ASSERT_TRUE(stub_->RequeueDead(Ctx().get(), requeue, &requeued).ok());
  EXPECT_EQ(requeued.requeued(), 1u);
  EXPECT_EQ(GetTask(put.ids(0)).state(), v1::TASK_STATE_READY);
  // Not dead any more: a second requeue of that id is NOT_FOUND.
  EXPECT_EQ(stub_->RequeueDead(Ctx().get(), requeue, &requeued).error_code(),
            grpc::StatusCode::NOT_FOUND);

  v1::PurgeDeadRequest purge;
  purge.set_queue("jobs.dead");
  v1::PurgeDeadResponse purged;
  ASSERT_TRUE(stub_->PurgeDead(Ctx().get(), purge, &purged).ok());
  EXPECT_EQ(purged.purged(), 0u);

  list.set_limit(1001);
  EXPECT_EQ(stub_->ListDead(Ctx().get(), list, &dead).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(QueueSemantics, CancelTellsTheWorkerToStopAndRefusesItsResult) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx, conn_.token, absl::Seconds(30));
  auto stream = stub_->Work(&ctx);
  v1::WorkRequest start;
  start.mutable_start()->add_queues("work");
  start.mutable_start()->set_worker_id("raw-worker");
  start.set_credits(2);
  ASSERT_TRUE(stream->Write(start));

  v1::TaskSpec spec = Spec("long job");
  spec.set_reply_to("results");
  v1::PutResponse put;
  ASSERT_TRUE(Put("work", {spec, Spec("released")}, &put).ok());
  v1::WorkResponse resp;
  std::vector<v1::Delivery> deliveries;
  while (deliveries.size() < 2 && stream->Read(&resp)) {
    for (const auto& d : resp.deliveries()) deliveries.push_back(d);
  }
  ASSERT_EQ(deliveries.size(), 2u);
  EXPECT_EQ(GetTask(put.ids(0)).worker(), "raw-worker");

  v1::CancelTaskRequest cancel;
  cancel.set_task_id(put.ids(0));
  v1::CancelTaskResponse cancelled;
  ASSERT_TRUE(stub_->CancelTask(Ctx().get(), cancel, &cancelled).ok());
  EXPECT_EQ(cancelled.previous_state(), v1::TASK_STATE_LEASED);
  // Cancelling again: it is finished now.
  EXPECT_EQ(stub_->CancelTask(Ctx().get(), cancel, &cancelled).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  // Heartbeat for the cancelled lease, a late completion, and a release of
  // the other task, in one message.
  v1::WorkRequest report;
  report.add_extend_lease_ids(deliveries[0].lease_id());
  auto* done = report.add_completions();
  done->set_task_id(put.ids(0));
  done->set_lease_id(deliveries[0].lease_id());
  done->set_result("too late");
  auto* release = report.add_releases();
  release->set_task_id(put.ids(1));
  release->set_lease_id(deliveries[1].lease_id());
  ASSERT_TRUE(stream->Write(report));
  std::vector<v1::WorkResponse::Ack> acks;
  while (acks.size() < 3 && stream->Read(&resp)) {
    for (const auto& a : resp.acks()) acks.push_back(a);
  }
  ASSERT_EQ(acks.size(), 3u);
  bool saw_stop = false, saw_refused = false, saw_released = false;
  for (const auto& a : acks) {
    if (a.task_id() == 0 && a.lease_id() == deliveries[0].lease_id()) {
      EXPECT_EQ(a.code(), grpc::StatusCode::CANCELLED) << a.message();
      saw_stop = true;
    } else if (a.task_id() == put.ids(0)) {
      EXPECT_EQ(a.code(), grpc::StatusCode::FAILED_PRECONDITION);
      EXPECT_TRUE(absl::StrContains(a.message(), "was cancelled")) << a.message();
      saw_refused = true;
    } else if (a.task_id() == put.ids(1)) {
      EXPECT_EQ(a.code(), 0) << a.message();
      saw_released = true;
    }
  }
  EXPECT_TRUE(saw_stop && saw_refused && saw_released);
  stream->WritesDone();
  while (stream->Read(&resp)) {
  }
  EXPECT_TRUE(stream->Finish().ok());

  // Exactly one result: the cancellation.
  v1::GetResponse results;
  ASSERT_TRUE(Get("results", v1::GET_MODE_TAKE, 0, &results).ok());
  ASSERT_EQ(results.deliveries_size(), 1);
  EXPECT_EQ(results.deliveries(0).task().outcome(), v1::OUTCOME_CANCELLED);
  EXPECT_EQ(GetTask(put.ids(0)).state(), v1::TASK_STATE_CANCELLED);
  v1::Task released = GetTask(put.ids(1));
  EXPECT_EQ(released.state(), v1::TASK_STATE_READY);  // the stream is gone; it is back
  ASSERT_GE(released.history_size(), 1);
  EXPECT_EQ(released.history(0).how(), "released");
}

TEST_F(QueueSemantics, ShutdownRefusesPutsThenDrainsThenSaysOutOfRange) {
  v1::PutResponse put;
  ASSERT_TRUE(Put("q", {Spec("last")}, &put).ok());
  v1::ShutdownQueueRequest req;
  req.set_queue("q");
  v1::ShutdownQueueResponse resp;
  ASSERT_TRUE(stub_->ShutdownQueue(Ctx().get(), req, &resp).ok());
  grpc::Status s = Put("q", {Spec("more")}, &put);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "shut down")) << s.error_message();
  v1::GetResponse got;
  ASSERT_TRUE(Get("q", v1::GET_MODE_TAKE, 0, &got).ok());
  EXPECT_EQ(got.deliveries(0).task().payload(), "last");
  s = Get("q", v1::GET_MODE_TAKE, 5000, &got);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::OUT_OF_RANGE) << s.error_message();
  v1::GetQueueStatsRequest stats_req;
  stats_req.set_queue("q");
  v1::QueueStats stats;
  ASSERT_TRUE(stub_->GetQueueStats(Ctx().get(), stats_req, &stats).ok());
  EXPECT_TRUE(stats.shut_down());
}

TEST_F(QueueSemantics, UpdateQueueAndValidation) {
  v1::QueueConfig c;
  c.set_name("tuned");
  ASSERT_TRUE(CreateQueue(c).ok());
  v1::UpdateQueueRequest req;
  req.set_queue("tuned");
  req.mutable_update()->set_backoff_ms(250);
  req.mutable_update()->set_max_attempts(7);
  v1::QueueConfig stored;
  grpc::Status s = stub_->UpdateQueue(Ctx().get(), req, &stored);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(stored.backoff_ms(), 250u);
  EXPECT_EQ(stored.max_attempts(), 7u);
  EXPECT_EQ(stored.kind(), v1::QUEUE_KIND_FIFO);

  req.mutable_update()->set_backoff_max_ms(100);  // below backoff_ms
  s = stub_->UpdateQueue(Ctx().get(), req, &stored);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req.set_queue("missing");
  EXPECT_EQ(stub_->UpdateQueue(Ctx().get(), req, &stored).error_code(),
            grpc::StatusCode::NOT_FOUND);
  req.set_queue("bad name");
  EXPECT_EQ(stub_->UpdateQueue(Ctx().get(), req, &stored).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  v1::GetTaskRequest unknown;
  unknown.set_task_id(987654321);
  v1::Task task;
  s = stub_->GetTask(Ctx().get(), unknown, &task);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "finished long ago")) << s.error_message();

  // The new RPCs check the token like the others.
  grpc::ClientContext no_token;
  EXPECT_EQ(stub_->GetTask(&no_token, unknown, &task).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace taskq::testing
