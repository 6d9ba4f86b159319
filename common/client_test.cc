// Unit tests of taskq::Client and ResultWaiter against a small in-process
// fake of the TaskQueue service on 127.0.0.1 (not the real master): status
// and token plumbing, batching, wait/deadline handling, cancellation, and
// the result matching of ResultWaiter (early, duplicate and stray results).
#include "common/client.h"
#include "common/result_waiter.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/auth.h"
#include "common/limits.h"
#include "common/sync.h"
#include "gtest/gtest.h"

namespace taskq {
namespace {

constexpr char kToken[] = "secret-token";

// Holds plain FIFO queues of v1::Task. Put can also "run" each task at once
// (a result goes to reply_to, as a very fast worker would), and be told to
// answer only after those results were taken, so that results reach the
// client before the Put response does.
class FakeTaskQueue final : public v1::TaskQueue::Service {
 public:
  bool complete_on_put = false;
  bool answer_put_after_results_taken = false;
  bool duplicate_results = false;
  uint64_t maxsize = 0;  // reported by GetQueueStats for every queue

  std::vector<int> put_sizes() {
    MutexLock lock(&mu_);
    return put_sizes_;
  }
  std::vector<v1::GetRequest> get_requests() {
    MutexLock lock(&mu_);
    return get_requests_;
  }
  void AddTask(const std::string& queue, v1::Task task) {
    MutexLock lock(&mu_);
    queues_[queue].push_back(std::move(task));
    cv_.SignalAll();
  }
  size_t Size(const std::string& queue) {
    MutexLock lock(&mu_);
    return queues_[queue].size();
  }

  grpc::Status GetQueueStats(grpc::ServerContext* context, const v1::GetQueueStatsRequest* request,
                             v1::QueueStats* response) override {
    if (auto s = CheckToken(context); !s.ok()) return s;
    if (maxsize == 0) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          absl::StrCat("queue \"", request->queue(), "\" does not exist"));
    }
    response->mutable_config()->set_name(request->queue());
    response->mutable_config()->set_maxsize(maxsize);
    return grpc::Status::OK;
  }

  // A task with this dedup key exists (as if put earlier) with `reply_to`.
  void AddDedup(const std::string& key, uint64_t id, const std::string& reply_to) {
    MutexLock lock(&mu_);
    dedup_[key] = {id, reply_to};
  }
  // Puts a cancelled result for every task put so far with `reply_to`.
  void CancelAll() {
    MutexLock lock(&mu_);
    for (const auto& [id, reply_to] : reply_to_of_) {
      v1::Task result;
      result.set_id(next_id_++);
      result.set_result_of(id);
      result.set_outcome(v1::OUTCOME_CANCELLED);
      result.set_error("cancelled by a test");
      queues_[reply_to].push_back(result);
    }
    reply_to_of_.clear();
    cv_.SignalAll();
  }
  std::vector<v1::PutRequest> put_requests() {
    MutexLock lock(&mu_);
    return put_requests_;
  }
  // The last request of each admin RPC that is only recorded.
  template <typename Request>
  Request Last() {
    MutexLock lock(&mu_);
    Request r;
    r.ParseFromString(last_[Request::descriptor()->full_name()]);
    return r;
  }

  grpc::Status UpdateQueue(grpc::ServerContext* context, const v1::UpdateQueueRequest* request,
                           v1::QueueConfig* response) override {
    if (auto s = CheckToken(context); !s.ok()) return s;
    Record(*request);
    response->set_name(request->queue());
    response->set_max_attempts(request->update().max_attempts());
    return grpc::Status::OK;
  }
  grpc::Status ShutdownQueue(grpc::ServerContext* context, const v1::ShutdownQueueRequest* request,
                             v1::ShutdownQueueResponse* response) override {
    if (auto s = CheckToken(context); !s.ok()) return s;
    Record(*request);
    response->set_dropped(request->immediate() ? 3 : 0);
    return grpc::Status::OK;
  }
  grpc::Status GetTask(grpc::ServerContext* context, const v1::GetTaskRequest* request,
                       v1::Task* response) override {
    if (auto s = CheckToken(context); !s.ok()) return s;
    MutexLock lock(&mu_);
    for (const auto& [key, entry] : dedup_) {
      if (entry.first != request->task_id()) continue;
      response->set_id(entry.first);
      response->set_reply_to(entry.second);
      response->set_dedup_key(key);
      response->set_state(v1::TASK_STATE_READY);
      return grpc::Status::OK;
    }
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("task ", request->task_id(), ": unknown task"));
  }
  grpc::Status CancelTask(grpc::ServerContext* context, const v1::CancelTaskRequest* request,
                          v1::CancelTaskResponse* response) override {
    if (auto s = CheckToken(context); !s.ok()) return s;
    if (request->task_id() == 7) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "task 7 cannot be cancelled: it is already done");
    }
    response->set_previous_state(v1::TASK_STATE_DELAYED);
    return grpc::Status::OK;
  }
  grpc::Status Release(grpc::ServerContext* context, const v1::ReleaseRequest* request,
                       v1::ReleaseResponse*) override {
    if (auto s = CheckToken(context); !s.ok()) return s;
    Record(*request);
    return grpc::Status::OK;
  }
  grpc::Status ListDead(grpc::ServerContext* context, const v1::ListDeadRequest* request,
                        v1::ListDeadResponse* response) override {
    if (auto s = CheckToken(context); !s.ok()) return s;
    Record(*request);
    v1::Task* t = response->add_tasks();
    t->set_id(request->after_id() + 1);
    t->set_state(v1::TASK_STATE_DEAD);
    return grpc::Status::OK;
  }
  grpc::Status RequeueDead(grpc::ServerContext* context, const v1::RequeueDeadRequest* request,
                           v1::RequeueDeadResponse* response) override {
    if (auto s = CheckToken(context); !s.ok()) return s;
    Record(*request);
    response->set_requeued(request->task_id() == 0 ? 5 : 1);
    return grpc::Status::OK;
  }
  grpc::Status PurgeDead(grpc::ServerContext* context, const v1::PurgeDeadRequest*,
                         v1::PurgeDeadResponse* response) override {
    if (auto s = CheckToken(context); !s.ok()) return s;
    response->set_purged(2);
    return grpc::Status::OK;
  }

  grpc::Status Put(grpc::ServerContext* context, const v1::PutRequest* request,
                   v1::PutResponse* response) override {
    if (auto s = CheckToken(context); !s.ok()) return s;
    if (request->queue() == "full") {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue \"full\" is full");
    }
    MutexLock lock(&mu_);
    put_sizes_.push_back(request->tasks_size());
    put_requests_.push_back(*request);
    std::string reply_to;
    bool any_existing = false;
    std::vector<bool> existing;
    for (const v1::TaskSpec& spec : request->tasks()) {
      if (!spec.dedup_key().empty()) {
        if (auto it = dedup_.find(spec.dedup_key()); it != dedup_.end()) {
          response->add_ids(it->second.first);
          existing.push_back(true);
          any_existing = true;
          continue;
        }
      }
      existing.push_back(false);
      uint64_t id = next_id_++;
      response->add_ids(id);
      if (!spec.dedup_key().empty()) dedup_[spec.dedup_key()] = {id, spec.reply_to()};
      if (!spec.reply_to().empty()) reply_to_of_[id] = spec.reply_to();
      if (!complete_on_put || spec.reply_to().empty()) {
        v1::Task task;
        task.set_id(id);
        task.set_payload(spec.payload());
        queues_[request->queue()].push_back(std::move(task));
        continue;
      }
      reply_to = spec.reply_to();
      v1::Task result;
      result.set_id(next_id_++);
      result.set_result_of(id);
      result.set_payload(absl::StrCat("done ", spec.payload()));
      result.set_outcome(spec.payload() == "bad" ? v1::OUTCOME_FAILED : v1::OUTCOME_OK);
      if (spec.payload() == "bad") result.set_error("bad payload");
      queues_[reply_to].push_back(result);
      if (duplicate_results) queues_[reply_to].push_back(result);
    }
    // As the master: the flags only when something was deduplicated.
    if (any_existing) {
      for (bool e : existing) response->add_existing(e);
    }
    cv_.SignalAll();
    if (answer_put_after_results_taken && !reply_to.empty()) {
      const absl::Time deadline = absl::Now() + absl::Seconds(10);
      while (!queues_[reply_to].empty() && absl::Now() < deadline) {
        cv_.WaitWithDeadline(&mu_, deadline);
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status Get(grpc::ServerContext* context, const v1::GetRequest* request,
                   v1::GetResponse* response) override {
    if (auto s = CheckToken(context); !s.ok()) return s;
    MutexLock lock(&mu_);
    get_requests_.push_back(*request);
    const absl::Time deadline = request->timeout_ms() > 0
                                    ? absl::Now() + absl::Milliseconds(request->timeout_ms())
                                    : absl::InfiniteFuture();
    auto& queue = queues_[request->queue()];
    while (queue.empty()) {
      if (request->nowait() || absl::Now() >= deadline) {
        return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                            absl::StrCat("queue \"", request->queue(), "\" is empty"));
      }
      if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
      // Short waits so that a cancelled call is noticed.
      cv_.WaitWithDeadline(&mu_, std::min(deadline, absl::Now() + absl::Milliseconds(20)));
    }
    uint32_t n = std::max<uint32_t>(request->max_tasks(), 1);
    while (!queue.empty() && n-- > 0) {
      *response->add_deliveries()->mutable_task() = std::move(queue.front());
      queue.pop_front();
    }
    cv_.SignalAll();
    return grpc::Status::OK;
  }

  grpc::Status Join(grpc::ServerContext* context, const v1::JoinRequest* request,
                    v1::JoinResponse*) override {
    if (auto s = CheckToken(context); !s.ok()) return s;
    MutexLock lock(&mu_);
    const absl::Time deadline = absl::Now() + absl::Milliseconds(request->timeout_ms());
    while (absl::Now() < deadline) cv_.WaitWithDeadline(&mu_, deadline);
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "join timed out (server)");
  }

 private:
  grpc::Status CheckToken(grpc::ServerContext* context) {
    auto it = context->client_metadata().find(kAuthMetadataKey);
    if (it == context->client_metadata().end() ||
        !BearerMatches(absl::string_view(it->second.data(), it->second.size()), kToken)) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong token");
    }
    return grpc::Status::OK;
  }

  void Record(const google::protobuf::Message& request) {
    MutexLock lock(&mu_);
    last_[request.GetDescriptor()->full_name()] = request.SerializeAsString();
  }

  Mutex mu_;
  CondVar cv_;
  std::map<std::string, std::string> last_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::deque<v1::Task>> queues_ ABSL_GUARDED_BY(mu_);
  std::vector<int> put_sizes_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::GetRequest> get_requests_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::PutRequest> put_requests_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::pair<uint64_t, std::string>> dedup_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::string> reply_to_of_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
};

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    address_ = absl::StrCat("127.0.0.1:", port);
    client_ = MakeClient(kToken);
  }
  void TearDown() override { server_->Shutdown(absl::ToChronoTime(absl::Now())); }

  std::unique_ptr<Client> MakeClient(const std::string& token) {
    return std::make_unique<Client>(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()), token);
  }

  static std::vector<v1::TaskSpec> Specs(const std::vector<std::string>& payloads) {
    std::vector<v1::TaskSpec> specs;
    for (const std::string& p : payloads) {
      v1::TaskSpec s;
      s.set_payload(p);
      specs.push_back(s);
    }
    return specs;
  }

  FakeTaskQueue service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientTest, KeepsTheMastersCodeAndMessage) {
  auto stats = client_->Stats("nope");
  EXPECT_EQ(stats.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(stats.status().message(), "queue \"nope\" does not exist");
}

TEST_F(ClientTest, SendsTheToken) {
  EXPECT_TRUE(client_->Put("q", Specs({"a"})).ok());
  auto wrong = MakeClient("not-it")->Put("q", Specs({"a"}));
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(ClientTest, ChecksNamesBeforeCalling) {
  auto put = client_->Put("bad name", Specs({"a"}));
  EXPECT_EQ(put.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(service_.put_sizes().empty());
  EXPECT_EQ(client_->Get("q", {.max_tasks = kMaxTasksPerGet + 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientTest, PutSplitsBatchesAndKeepsIdOrder) {
  std::vector<v1::TaskSpec> many(kMaxTasksPerPut + 1);
  auto ids = client_->Put("q", std::move(many));
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(ids->size(), kMaxTasksPerPut + 1);
  for (size_t i = 1; i < ids->size(); ++i) EXPECT_LT((*ids)[i - 1], (*ids)[i]);
  EXPECT_EQ(service_.put_sizes(), (std::vector<int>{static_cast<int>(kMaxTasksPerPut), 1}));

  auto small = client_->Put("q", Specs({"1", "2", "3", "4", "5", "6", "7"}), {.max_batch = 3});
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->size(), 7u);
  EXPECT_EQ(service_.put_sizes(),
            (std::vector<int>{static_cast<int>(kMaxTasksPerPut), 1, 3, 3, 1}));
}

TEST_F(ClientTest, PutBatchLimitFollowsMaxsize) {
  EXPECT_EQ(PutBatchLimit(*client_, "q"), kMaxTasksPerPut);  // unknown queue
  EXPECT_EQ(PutBatchLimit(*client_, "q", 1000), 1000u);
  service_.maxsize = 2;
  EXPECT_EQ(PutBatchLimit(*client_, "q", 1000), 2u);
}

TEST_F(ClientTest, GetTimeoutIsAnsweredByTheMaster) {
  const absl::Time start = absl::Now();
  auto got = client_->Get("empty", {.timeout = absl::Milliseconds(200)});
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded);
  // The master's own answer, not a client-side deadline.
  EXPECT_EQ(got.status().message(), "queue \"empty\" is empty");
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  auto requests = service_.get_requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].timeout_ms(), 200u);
  EXPECT_FALSE(requests[0].nowait());
  EXPECT_EQ(requests[0].mode(), v1::GET_MODE_TAKE);
}

TEST_F(ClientTest, GetNowaitAndZeroTimeoutDoNotWait) {
  EXPECT_TRUE(absl::IsDeadlineExceeded(client_->Get("empty", {.nowait = true}).status()));
  EXPECT_TRUE(
      absl::IsDeadlineExceeded(client_->Get("empty", {.timeout = absl::ZeroDuration()}).status()));
  auto requests = service_.get_requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_TRUE(requests[0].nowait());
  EXPECT_TRUE(requests[1].nowait());
}

TEST_F(ClientTest, GetReturnsTasks) {
  ASSERT_TRUE(client_->Put("q", Specs({"a", "b", "c"})).ok());
  auto got = client_->Get("q", {.max_tasks = 2, .lease = true});
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[0].task().payload(), "a");
  EXPECT_EQ((*got)[1].task().payload(), "b");
  EXPECT_EQ(service_.get_requests().back().mode(), v1::GET_MODE_LEASE);
}

TEST_F(ClientTest, JoinTimeoutIsAnsweredByTheMaster) {
  absl::Status s = client_->Join("q", absl::Milliseconds(100));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(s.message(), "join timed out (server)");
}

TEST_F(ClientTest, CancellerAbortsAWaitingCall) {
  CallCanceller canceller;
  std::atomic<bool> returned{false};
  absl::Status status;
  std::thread getter([&] {
    status = client_->Get("empty", {.canceller = &canceller}).status();  // waits forever
    returned = true;
  });
  // Cancel once the call is on the server.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (service_.get_requests().empty() && absl::Now() < deadline) std::this_thread::yield();
  canceller.Cancel();
  getter.join();
  EXPECT_TRUE(returned);
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  // Later calls with the same canceller do not start.
  EXPECT_TRUE(absl::IsCancelled(client_->Get("empty", {.canceller = &canceller}).status()));
}

TEST_F(ClientTest, ResultWaiterReportsEachResultUnderItsIndex) {
  service_.complete_on_put = true;
  std::map<size_t, std::string> got;
  SubmitSummary summary;
  absl::Status s = SubmitAndWait(
      *client_, {.queue = "tasks", .reply_to = "res", .put_batch = 2},
      Specs({"a", "b", "bad", "d", "e"}),
      [&](size_t index, const v1::Task& r) {
        got[index] = r.outcome() == v1::OUTCOME_FAILED ? "FAILED " + r.error() : r.payload();
      },
      &summary);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(got, (std::map<size_t, std::string>{{0, "done a"},
                                                {1, "done b"},
                                                {2, "FAILED bad payload"},
                                                {3, "done d"},
                                                {4, "done e"}}));
  EXPECT_EQ(summary.ids.size(), 5u);
  EXPECT_EQ(summary.results, 5u);
  EXPECT_EQ(summary.failed, 1u);
  EXPECT_EQ(summary.duplicates, 0u);
  EXPECT_EQ(service_.put_sizes(), (std::vector<int>{2, 2, 1}));
}

TEST_F(ClientTest, ResultWaiterMatchesResultsThatBeatThePutResponse) {
  service_.complete_on_put = true;
  service_.answer_put_after_results_taken = true;
  size_t count = 0;
  SubmitSummary summary;
  absl::Status s =
      SubmitAndWait(*client_, {.queue = "tasks", .reply_to = "res", .timeout = absl::Seconds(30)},
                    Specs({"a", "b", "c"}), [&](size_t, const v1::Task&) { ++count; }, &summary);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(count, 3u);
  EXPECT_EQ(summary.ignored, 0u);
}

TEST_F(ClientTest, ResultWaiterCountsDuplicatesAndStrayResults) {
  service_.complete_on_put = true;
  service_.duplicate_results = true;
  v1::Task stray;
  stray.set_result_of(999999);
  stray.set_payload("someone else's");
  service_.AddTask("res", stray);
  size_t count = 0;
  SubmitSummary summary;
  absl::Status s =
      SubmitAndWait(*client_, {.queue = "tasks", .reply_to = "res"}, Specs({"a", "b"}),
                    [&](size_t, const v1::Task&) { ++count; }, &summary);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(count, 2u);
  EXPECT_EQ(summary.results, 2u);
  // The last duplicate may still be on the queue when the waiter is done.
  EXPECT_EQ(summary.duplicates + service_.Size("res"), 2u);
  // The stray result came before any put finished: held, then dropped.
  EXPECT_EQ(summary.ignored, 1u);
}

TEST_F(ClientTest, ResultWaiterTimesOut) {
  const absl::Time start = absl::Now();
  SubmitSummary summary;
  absl::Status s = SubmitAndWait(
      *client_,
      {.queue = "tasks", .reply_to = "res", .timeout = absl::Milliseconds(300),
       .poll_chunk = absl::Milliseconds(100)},
      Specs({"a", "b"}), [](size_t, const v1::Task&) {}, &summary);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  EXPECT_EQ(summary.ids.size(), 2u);
  EXPECT_EQ(summary.results, 0u);
}

TEST_F(ClientTest, ResultWaiterCancel) {
  ResultWaiter waiter(client_.get(), {.queue = "tasks", .reply_to = "res"});
  absl::Status status;
  std::thread runner(
      [&] { status = waiter.Run(Specs({"a"}), [](size_t, const v1::Task&) {}); });
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (service_.get_requests().empty() && absl::Now() < deadline) std::this_thread::yield();
  waiter.Cancel();
  runner.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
}

TEST_F(ClientTest, ResultWaiterReportsAFailedPut) {
  absl::Status s = SubmitAndWait(*client_, {.queue = "full", .reply_to = "res"}, Specs({"a"}),
                                 [](size_t, const v1::Task&) {});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("is full"), absl::string_view::npos) << s;
}

TEST_F(ClientTest, NewAdminCallsSendTheirRequests) {
  v1::QueueConfigUpdate update;
  update.set_max_attempts(1);
  auto stored = client_->UpdateQueue("q", update);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->max_attempts(), 1u);
  auto sent = service_.Last<v1::UpdateQueueRequest>();
  EXPECT_EQ(sent.queue(), "q");
  EXPECT_TRUE(sent.update().has_max_attempts());
  EXPECT_FALSE(sent.update().has_lease_ms());  // only what was set

  auto dropped = client_->ShutdownQueue("q", /*immediate=*/true);
  ASSERT_TRUE(dropped.ok());
  EXPECT_EQ(*dropped, 3u);
  EXPECT_TRUE(service_.Last<v1::ShutdownQueueRequest>().immediate());

  EXPECT_EQ(*client_->RequeueDead("q", 0), 5u);
  EXPECT_EQ(service_.Last<v1::RequeueDeadRequest>().task_id(), 0u);
  EXPECT_EQ(*client_->PurgeDead("q"), 2u);

  auto dead = client_->ListDead("q", {.limit = 10, .after_id = 41});
  ASSERT_TRUE(dead.ok()) << dead.status();
  ASSERT_EQ(dead->size(), 1u);
  EXPECT_EQ((*dead)[0].id(), 42u);
  EXPECT_EQ(service_.Last<v1::ListDeadRequest>().limit(), 10u);
}

TEST_F(ClientTest, NewCallsCheckArgumentsBeforeCalling) {
  EXPECT_EQ(client_->UpdateQueue("bad name", {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::QueueConfigUpdate bad_dlq;
  bad_dlq.set_dead_letter("no spaces");
  EXPECT_EQ(client_->UpdateQueue("q", bad_dlq).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->GetTask(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->CancelTask(0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->ListDead("q", {.limit = kMaxListDead + 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Release(1, 1, absl::Seconds(-1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Release(1, 1, absl::Hours(24 * 60)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientTest, TaskCalls) {
  EXPECT_EQ(*client_->CancelTask(3), v1::TASK_STATE_DELAYED);
  auto done = client_->CancelTask(7);
  EXPECT_EQ(done.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(done.status().message(), "task 7 cannot be cancelled: it is already done");
  EXPECT_EQ(client_->GetTask(99).status().code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE(client_->Release(5, 6, absl::Microseconds(1500)).ok());
  auto release = service_.Last<v1::ReleaseRequest>();
  EXPECT_EQ(release.task_id(), 5u);
  EXPECT_EQ(release.lease_id(), 6u);
  EXPECT_EQ(release.delay_ms(), 2u);  // rounded up, never early
}

TEST_F(ClientTest, PutReceiptSaysWhichTasksWereDeduplicated) {
  std::vector<v1::TaskSpec> specs = Specs({"a", "b", "c"});
  specs[0].set_dedup_key("k1");
  specs[2].set_dedup_key("k1");  // same key in the same batch
  auto receipt = client_->PutWithReceipt("q", specs);
  ASSERT_TRUE(receipt.ok()) << receipt.status();
  ASSERT_EQ(receipt->ids.size(), 3u);
  EXPECT_EQ(receipt->existing, (std::vector<bool>{false, false, true}));
  EXPECT_EQ(receipt->ids[2], receipt->ids[0]);
  EXPECT_EQ(receipt->existing_count(), 1u);

  // Nothing deduplicated: the master sends no flags; all false.
  auto plain = client_->PutWithReceipt("q", Specs({"x", "y"}));
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->existing, (std::vector<bool>{false, false}));

  // A receipt that spans several requests keeps ids and flags aligned.
  std::vector<v1::TaskSpec> split = Specs({"1", "2", "3"});
  split[1].set_dedup_key("k1");
  auto many = client_->PutWithReceipt("q", split, {.max_batch = 1});
  ASSERT_TRUE(many.ok());
  EXPECT_EQ(many->existing, (std::vector<bool>{false, true, false}));
  EXPECT_EQ(many->ids[1], receipt->ids[0]);
}

TEST_F(ClientTest, PutOptionsDelayAppliesToTasksWithoutTheirOwn) {
  std::vector<v1::TaskSpec> specs = Specs({"a", "b"});
  specs[1].set_delay_ms(7);
  PutOptions options;
  options.delay = absl::Milliseconds(1500);
  ASSERT_TRUE(client_->Put("q", specs, options).ok());
  auto requests = service_.put_requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].tasks(0).delay_ms(), 1500u);
  EXPECT_EQ(requests[0].tasks(1).delay_ms(), 7u);

  PutOptions too_long;
  too_long.delay = absl::Hours(24 * 366);
  EXPECT_EQ(client_->Put("q", Specs({"a"}), too_long).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SetTaskDelay, ShortDelayLongDelayAndNotBefore) {
  const absl::Time now = absl::FromUnixSeconds(1'700'000'000);
  v1::TaskSpec t;
  ASSERT_TRUE(SetTaskDelay(&t, absl::Milliseconds(250), absl::InfinitePast(), now).ok());
  EXPECT_EQ(t.delay_ms(), 250u);
  EXPECT_EQ(t.not_before_unix_ms(), 0);

  v1::TaskSpec long_delay;
  ASSERT_TRUE(SetTaskDelay(&long_delay, absl::Hours(24 * 100), absl::InfinitePast(), now).ok());
  EXPECT_EQ(long_delay.delay_ms(), 0u);
  EXPECT_EQ(long_delay.not_before_unix_ms(), (1'700'000'000 + 100 * 86400) * int64_t{1000});

  v1::TaskSpec at;
  ASSERT_TRUE(SetTaskDelay(&at, absl::ZeroDuration(), now + absl::Seconds(5), now).ok());
  EXPECT_EQ(at.not_before_unix_ms(), 1'700'000'005'000);

  v1::TaskSpec bad;
  EXPECT_FALSE(SetTaskDelay(&bad, absl::Seconds(-1), absl::InfinitePast(), now).ok());
  EXPECT_FALSE(SetTaskDelay(&bad, absl::Hours(24 * 366), absl::InfinitePast(), now).ok());
  EXPECT_FALSE(SetTaskDelay(&bad, absl::ZeroDuration(), now + absl::Hours(24 * 366), now).ok());
}

TEST_F(ClientTest, ResultWaiterDoesNotWaitForTasksDeduplicatedElsewhere) {
  service_.complete_on_put = true;
  service_.AddDedup("taken", 9000, "someone-elses-results");
  std::vector<v1::TaskSpec> specs = Specs({"a", "b", "c"});
  specs[1].set_dedup_key("taken");
  std::vector<size_t> not_waited;
  SubmitOptions options{.queue = "tasks", .reply_to = "res", .timeout = absl::Seconds(30)};
  options.on_not_waited = [&](size_t index, uint64_t id,
                              const absl::StatusOr<v1::Task>& existing) {
    not_waited.push_back(index);
    EXPECT_EQ(id, 9000u);
    EXPECT_TRUE(existing.ok());
    EXPECT_EQ(existing->reply_to(), "someone-elses-results");
  };
  std::vector<size_t> reported;
  SubmitSummary summary;
  absl::Status s = SubmitAndWait(
      *client_, options, specs, [&](size_t index, const v1::Task&) { reported.push_back(index); },
      &summary);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(not_waited, (std::vector<size_t>{1}));
  std::sort(reported.begin(), reported.end());
  EXPECT_EQ(reported, (std::vector<size_t>{0, 2}));
  EXPECT_EQ(summary.existing, 1u);
  EXPECT_EQ(summary.not_waited, 1u);
  EXPECT_EQ(summary.results, 2u);
  EXPECT_EQ(summary.ids.size(), 3u);
  EXPECT_EQ(summary.ids[1], 9000u);
}

TEST_F(ClientTest, ResultWaiterWaitsOnceForADuplicateWithinTheSubmission) {
  service_.complete_on_put = true;
  std::vector<v1::TaskSpec> specs = Specs({"a", "a"});
  specs[0].set_dedup_key("job-a");
  specs[1].set_dedup_key("job-a");
  std::vector<size_t> reported;
  SubmitSummary summary;
  absl::Status s = SubmitAndWait(
      *client_, {.queue = "tasks", .reply_to = "res", .timeout = absl::Seconds(30)}, specs,
      [&](size_t index, const v1::Task&) { reported.push_back(index); }, &summary);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(reported, (std::vector<size_t>{0}));
  EXPECT_EQ(summary.existing, 1u);
  EXPECT_EQ(summary.not_waited, 0u);
  EXPECT_EQ(summary.ids, (std::vector<uint64_t>{summary.ids[0], summary.ids[0]}));
}

TEST_F(ClientTest, ResultWaiterCountsCancelledResults) {
  ResultWaiter waiter(client_.get(), {.queue = "tasks", .reply_to = "res",
                                      .timeout = absl::Seconds(30)});
  absl::Status status;
  std::vector<v1::Outcome> outcomes;
  std::thread runner([&] {
    status = waiter.Run(Specs({"a", "b"}),
                        [&](size_t, const v1::Task& r) { outcomes.push_back(r.outcome()); });
  });
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (waiter.summary().ids.size() < 2 && absl::Now() < deadline) std::this_thread::yield();
  service_.CancelAll();
  runner.join();
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(outcomes, (std::vector<v1::Outcome>{v1::OUTCOME_CANCELLED, v1::OUTCOME_CANCELLED}));
  EXPECT_EQ(waiter.summary().cancelled, 2u);
  EXPECT_EQ(waiter.summary().failed, 0u);
}

TEST(RandomResultQueueName, IsAValidFreshName) {
  std::string a = RandomResultQueueName(), b = RandomResultQueueName();
  EXPECT_TRUE(ValidateName("queue", a).ok()) << a;
  EXPECT_EQ(a.rfind("_results.", 0), 0u) << a;
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace taskq
