// Unit tests of Worker's session logic against an in-process fake master
// (a synchronous gRPC TaskQueue service on 127.0.0.1): credits, batching of
// completions, failures, heartbeats, acks, drain (releases), hard stop,
// refused heartbeats (cancel, lease lost), handler releases, reconnect,
// async handlers and the CPU pool.
#include "worker/worker.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/auth.h"
#include "common/log.h"
#include "gtest/gtest.h"
#include "worker/builtin_handlers.h"

namespace taskq {
namespace {

constexpr char kToken[] = "test-token-0123456789";

// Everything the fake master saw and is told to do; guarded as a whole.
struct MasterState {
  std::vector<v1::WorkRequest::Start> starts;
  std::vector<v1::WorkRequest::Completion> completions;
  std::vector<v1::FailRequest> failures;
  std::vector<v1::ReleaseRequest> releases;
  std::vector<uint64_t> extends;
  uint64_t credits_granted = 0;   // over all streams
  uint32_t credits = 0;           // unused credits of the live stream
  uint32_t first_credits = 0;     // initial credits of the latest stream
  bool stream_live = false;
  bool half_closed = false;       // the worker called WritesDone
  int streams_ended = 0;
  bool end_stream = false;        // test asks the handler to end the stream
  int completion_ack_code = 0;    // ack code for completions
  std::vector<v1::Delivery> pending;  // waiting for credits
  std::vector<v1::WorkResponse::Ack> acks;
  // Applied heartbeats are confirmed with this time left (0: not at all,
  // as an older master).
  int64_t confirm_lease_ms = 0;
  std::vector<v1::WorkResponse::Extended> extended;  // to send
  uint64_t next_lease = 1000;
  int refused = 0;                // streams refused for a bad token
  // Heartbeats for these tasks are refused with this code (task id -> code).
  std::map<uint64_t, int> refuse_heartbeat;
  std::map<uint64_t, uint64_t> task_of_lease;  // every lease handed out
};

class FakeMaster final : public v1::TaskQueue::Service {
 public:
  grpc::Status Work(grpc::ServerContext* context,
                    grpc::ServerReaderWriter<v1::WorkResponse, v1::WorkRequest>* stream) override {
    bool authorized = false;
    for (const auto& [key, value] : context->client_metadata()) {
      if (key == kAuthMetadataKey &&
          BearerMatches(absl::string_view(value.data(), value.size()), kToken)) {
        authorized = true;
      }
    }
    if (!authorized) {
      MutexLock lock(&mu_);
      ++state_.refused;
      cv_.SignalAll();
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "bad token");
    }
    {
      MutexLock lock(&mu_);
      state_.stream_live = true;
      state_.half_closed = false;
      state_.end_stream = false;
      state_.credits = 0;
    }
    std::thread reader([&] {
      v1::WorkRequest request;
      bool first = true;
      while (stream->Read(&request)) {
        MutexLock lock(&mu_);
        if (request.has_start()) state_.starts.push_back(request.start());
        if (first) state_.first_credits = request.credits();
        first = false;
        state_.credits += request.credits();
        state_.credits_granted += request.credits();
        for (const auto& c : request.completions()) {
          state_.completions.push_back(c);
          v1::WorkResponse::Ack ack;
          ack.set_task_id(c.task_id());
          ack.set_lease_id(c.lease_id());
          ack.set_code(state_.completion_ack_code);
          if (ack.code() != 0) ack.set_message("refused by the test");
          state_.acks.push_back(ack);
        }
        for (const auto& f : request.failures()) {
          state_.failures.push_back(f);
          v1::WorkResponse::Ack ack;
          ack.set_task_id(f.task_id());
          ack.set_lease_id(f.lease_id());
          state_.acks.push_back(ack);
        }
        for (const auto& r : request.releases()) {
          state_.releases.push_back(r);
          v1::WorkResponse::Ack ack;
          ack.set_task_id(r.task_id());
          ack.set_lease_id(r.lease_id());
          state_.acks.push_back(ack);
        }
        for (uint64_t id : request.extend_lease_ids()) {
          state_.extends.push_back(id);
          auto refused = state_.refuse_heartbeat.find(state_.task_of_lease[id]);
          if (refused != state_.refuse_heartbeat.end()) {
            v1::WorkResponse::Ack ack;  // task_id 0: a refused heartbeat
            ack.set_lease_id(id);
            ack.set_code(refused->second);
            ack.set_message("refused by the test");
            state_.acks.push_back(ack);
          } else if (state_.confirm_lease_ms > 0) {
            v1::WorkResponse::Extended& e = state_.extended.emplace_back();
            e.set_lease_id(id);
            e.set_lease_ms_left(state_.confirm_lease_ms);
          }
        }
        cv_.SignalAll();
      }
      MutexLock lock(&mu_);
      state_.half_closed = true;
      cv_.SignalAll();
    });
    grpc::Status status = grpc::Status::OK;
    mu_.Lock();
    for (;;) {
      v1::WorkResponse response;
      while (state_.credits > 0 && !state_.pending.empty()) {
        v1::Delivery d = std::move(state_.pending.front());
        state_.pending.erase(state_.pending.begin());
        d.set_lease_id(++state_.next_lease);
        state_.task_of_lease[d.lease_id()] = d.task().id();
        *response.add_deliveries() = std::move(d);
        --state_.credits;
        cv_.SignalAll();
      }
      for (auto& ack : state_.acks) *response.add_acks() = std::move(ack);
      state_.acks.clear();
      for (auto& e : state_.extended) *response.add_extended() = std::move(e);
      state_.extended.clear();
      if (response.deliveries_size() > 0 || response.acks_size() > 0 ||
          response.extended_size() > 0) {
        mu_.Unlock();
        bool ok = stream->Write(response);
        mu_.Lock();
        if (!ok) break;
        continue;
      }
      if (state_.half_closed) break;
      if (state_.end_stream || context->IsCancelled()) {
        status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "test ends the stream");
        break;
      }
      // Periodic wake-up only to notice server shutdown (IsCancelled).
      cv_.WaitWithTimeout(&mu_, absl::Milliseconds(20));
    }
    bool must_cancel = !state_.half_closed;
    mu_.Unlock();
    if (must_cancel) context->TryCancel();  // unblocks the reader's Read
    reader.join();
    MutexLock lock(&mu_);
    state_.stream_live = false;
    state_.credits = 0;
    ++state_.streams_ended;
    cv_.SignalAll();
    return status;
  }

  // Queues a task; it is delivered when the worker has credit. With
  // `lease_ms_left`, the delivery states its lease's time left (as the
  // master does since issue 13).
  void AddTask(uint64_t id, const std::string& handler, const std::string& payload,
               absl::Duration lease = absl::Seconds(30), int64_t lease_ms_left = 0) {
    v1::Delivery d;
    d.mutable_task()->set_id(id);
    d.mutable_task()->set_queue("q1");
    d.mutable_task()->set_handler(handler);
    d.mutable_task()->set_payload(payload);
    d.mutable_task()->set_attempt(1);
    d.set_lease_deadline_unix_ms(absl::ToUnixMillis(absl::Now() + lease));
    d.set_lease_ms_left(lease_ms_left);
    MutexLock lock(&mu_);
    state_.pending.push_back(std::move(d));
    cv_.SignalAll();
  }

  void EndStream() {
    MutexLock lock(&mu_);
    state_.end_stream = true;
    cv_.SignalAll();
  }

  void SetCompletionAckCode(int code) {
    MutexLock lock(&mu_);
    state_.completion_ack_code = code;
  }

  // From now on, applied heartbeats are confirmed with `lease_ms` left.
  void ConfirmHeartbeats(int64_t lease_ms) {
    MutexLock lock(&mu_);
    state_.confirm_lease_ms = lease_ms;
  }

  // From now on, heartbeats for `task_id` are refused with `code`.
  void RefuseHeartbeats(uint64_t task_id, grpc::StatusCode code) {
    MutexLock lock(&mu_);
    state_.refuse_heartbeat[task_id] = static_cast<int>(code);
  }

  // Waits until `pred(state)` holds; false after 20 s.
  bool WaitFor(const std::function<bool(const MasterState&)>& pred) {
    MutexLock lock(&mu_);
    absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (!pred(state_)) {
      if (absl::Now() >= deadline) return false;
      cv_.WaitWithDeadline(&mu_, deadline);
    }
    return true;
  }

  MasterState Snapshot() {
    MutexLock lock(&mu_);
    return state_;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  MasterState state_ ABSL_GUARDED_BY(mu_);
};

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitLogging("worker_test", LogLevel::kDebug);
    char dir_template[] = "/tmp/taskq-worker-test-XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    token_file_ = dir_ + "/token";
    {
      std::ofstream out(token_file_);
      out << kToken << "\n";
    }
    ::chmod(token_file_.c_str(), 0600);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&master_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }

  void TearDown() override {
    if (worker_ != nullptr) worker_->StopNow();
    if (run_thread_.joinable()) run_thread_.join();
    worker_.reset();
    server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    std::remove(token_file_.c_str());
    ::rmdir(dir_.c_str());
  }

  WorkerOptions Options() {
    WorkerOptions o;
    o.connect.master = absl::StrCat("127.0.0.1:", port_);
    o.connect.token_file = token_file_;
    o.queues = {"q1"};
    o.threads = 2;
    o.concurrency = 2;
    o.prefetch = 1;
    o.id = "w-test";
    o.drain_timeout = absl::Seconds(20);
    return o;
  }

  // Starts the worker; returns once Run() is running in a thread.
  Worker* Start(WorkerOptions options, const std::function<void(Worker*)>& setup = nullptr) {
    worker_ = std::make_unique<Worker>(std::move(options));
    if (setup) setup(worker_.get());
    run_thread_ = std::thread([this] {
      absl::Status s = worker_->Run();
      MutexLock lock(&run_mu_);
      run_status_ = s;
      run_done_ = true;
      run_cv_.SignalAll();
    });
    return worker_.get();
  }

  // Waits until the worker holds exactly `n` deliveries.
  bool WaitForInFlight(size_t n) {
    absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (worker_->tasks_in_flight() != n) {
      if (absl::Now() >= deadline) return false;
      absl::SleepFor(absl::Milliseconds(2));  // polling a condition, with a deadline
    }
    return true;
  }

  // Waits for Run() to return; its status, or DEADLINE_EXCEEDED after `timeout`.
  absl::Status WaitForRun(absl::Duration timeout = absl::Seconds(20)) {
    MutexLock lock(&run_mu_);
    absl::Time deadline = absl::Now() + timeout;
    while (!run_done_ && absl::Now() < deadline) run_cv_.WaitWithDeadline(&run_mu_, deadline);
    if (!run_done_) return absl::DeadlineExceededError("Run() did not return");
    return run_status_;
  }

  std::string dir_, token_file_;
  int port_ = 0;
  FakeMaster master_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Worker> worker_;
  std::thread run_thread_;
  Mutex run_mu_;
  CondVar run_cv_;
  bool run_done_ ABSL_GUARDED_BY(run_mu_) = false;
  absl::Status run_status_ ABSL_GUARDED_BY(run_mu_);
};

// A handler that blocks until the test opens the gate (or a hard stop).
class Gate {
 public:
  Handler AsHandler() {
    return [this](const HandlerContext& context) -> absl::StatusOr<std::string> {
      MutexLock lock(&mu_);
      ++entered_;
      cv_.SignalAll();
      while (!open_ && !context.stopping()) cv_.WaitWithTimeout(&mu_, absl::Milliseconds(20));
      if (!open_) {
        ++interrupted_;
        cv_.SignalAll();
        return absl::CancelledError("gate interrupted");
      }
      return absl::StrCat("passed ", context.payload());
    };
  }
  void Open() {
    MutexLock lock(&mu_);
    open_ = true;
    cv_.SignalAll();
  }
  bool WaitEntered(int n) {
    MutexLock lock(&mu_);
    absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (entered_ < n && absl::Now() < deadline) cv_.WaitWithDeadline(&mu_, deadline);
    return entered_ >= n;
  }
  bool WaitInterrupted(int n) {
    MutexLock lock(&mu_);
    absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (interrupted_ < n && absl::Now() < deadline) cv_.WaitWithDeadline(&mu_, deadline);
    return interrupted_ >= n;
  }
  int interrupted() {
    MutexLock lock(&mu_);
    return interrupted_;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
  int entered_ ABSL_GUARDED_BY(mu_) = 0;
  int interrupted_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST_F(WorkerTest, StartsWithQueuesIdAndCreditWindow) {
  Start(Options());
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return !s.starts.empty(); }));
  MasterState s = master_.Snapshot();
  ASSERT_EQ(s.starts[0].queues_size(), 1);
  EXPECT_EQ(s.starts[0].queues(0), "q1");
  EXPECT_EQ(s.starts[0].worker_id(), "w-test");
  EXPECT_EQ(s.first_credits, 3u);  // concurrency 2 + prefetch 1
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
  EXPECT_TRUE(master_.WaitFor([](const MasterState& s) { return s.half_closed; }));
}

TEST_F(WorkerTest, CompletesTasksAndReturnsOneCreditEach) {
  Start(Options());
  for (int i = 1; i <= 50; ++i) master_.AddTask(i, "square", absl::StrCat(i));
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.completions.size() == 50; }));
  MasterState s = master_.Snapshot();
  for (const auto& c : s.completions) {
    int64_t n = static_cast<int64_t>(c.task_id());
    EXPECT_EQ(c.result(), absl::StrCat(n, " * ", n, " = ", n * n));
  }
  EXPECT_TRUE(master_.WaitFor([](const MasterState& s) { return s.credits_granted == 3 + 50; }));
  EXPECT_TRUE(s.failures.empty());
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
}

TEST_F(WorkerTest, ReportsPermanentAndRetryableFailures) {
  Start(Options(), [](Worker* w) {
    ASSERT_TRUE(w->handlers()
                    .Register("flaky",
                              [](const HandlerContext&) -> absl::StatusOr<std::string> {
                                return absl::UnavailableError("try later");
                              })
                    .ok());
  });
  master_.AddTask(1, "nope", "x");
  master_.AddTask(2, "square", "not a number");
  master_.AddTask(3, "flaky", "");
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.failures.size() == 3; }));
  MasterState s = master_.Snapshot();
  for (const auto& f : s.failures) {
    if (f.task_id() == 1) {
      EXPECT_TRUE(f.permanent());
      EXPECT_EQ(f.error(), "no handler named \"nope\" on worker w-test");
    } else if (f.task_id() == 2) {
      EXPECT_TRUE(f.permanent());
    } else {
      EXPECT_FALSE(f.permanent());
      EXPECT_EQ(f.error(), "try later");
    }
  }
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
}

TEST_F(WorkerTest, ExtendsLeasesWhileRunning) {
  Gate gate;
  Start(Options(), [&](Worker* w) {
    ASSERT_TRUE(w->handlers().Register("gate", gate.AsHandler()).ok());
  });
  // 600 ms lease: heartbeat every 200 ms.
  master_.AddTask(1, "gate", "a", absl::Milliseconds(600));
  ASSERT_TRUE(gate.WaitEntered(1));
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.extends.size() >= 3; }));
  gate.Open();
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.completions.size() == 1; }));
  MasterState s = master_.Snapshot();
  EXPECT_EQ(s.completions[0].result(), "passed a");
  for (uint64_t id : s.extends) EXPECT_EQ(id, s.completions[0].lease_id());
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
}

TEST_F(WorkerTest, GracefulStopFinishesRunningTasksFirst) {
  Gate gate;
  Start(Options(), [&](Worker* w) {
    ASSERT_TRUE(w->handlers().Register("gate", gate.AsHandler()).ok());
  });
  master_.AddTask(1, "gate", "a");
  master_.AddTask(2, "gate", "b");
  ASSERT_TRUE(gate.WaitEntered(2));
  uint64_t credits_before = master_.Snapshot().credits_granted;
  worker_->Stop();
  // Run() must not return while tasks run.
  EXPECT_TRUE(absl::IsDeadlineExceeded(WaitForRun(absl::Milliseconds(300))));
  EXPECT_FALSE(master_.Snapshot().half_closed);
  gate.Open();
  EXPECT_TRUE(WaitForRun().ok());
  MasterState s = master_.Snapshot();
  EXPECT_EQ(s.completions.size(), 2u);
  EXPECT_EQ(s.credits_granted, credits_before);  // no new credits while draining
  EXPECT_TRUE(master_.WaitFor([](const MasterState& s) { return s.half_closed; }));
}

TEST_F(WorkerTest, DrainTimeoutReleasesRunningTasksAndStopsThem) {
  WorkerOptions o = Options();
  o.drain_timeout = absl::Milliseconds(100);
  Gate gate;  // never opened: only the stop ends it
  Start(o, [&](Worker* w) { ASSERT_TRUE(w->handlers().Register("gate", gate.AsHandler()).ok()); });
  master_.AddTask(1, "gate", "a");
  ASSERT_TRUE(gate.WaitEntered(1));
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
  EXPECT_TRUE(gate.WaitInterrupted(1));
  MasterState s = master_.Snapshot();
  // Given back without a failure (no attempt counted), and nothing else.
  ASSERT_EQ(s.releases.size(), 1u);
  EXPECT_EQ(s.releases[0].task_id(), 1u);
  EXPECT_EQ(s.releases[0].delay_ms(), 0u);
  EXPECT_TRUE(s.failures.empty());
  EXPECT_TRUE(s.completions.empty());
  EXPECT_TRUE(master_.WaitFor([](const MasterState& s) { return s.half_closed; }));
}

TEST_F(WorkerTest, StopNowInterruptsSleepAndReleasesIt) {
  // The builtin (async) sleep, wrapped to tell the test when it has started.
  Mutex mu;
  CondVar cv;
  bool started = false;
  Start(Options(), [&](Worker* w) {
    ASSERT_TRUE(w->handlers()
                    .RegisterAsync("traced-sleep",
                                   [&](HandlerContext& c) {
                                     {
                                       MutexLock lock(&mu);
                                       started = true;
                                       cv.SignalAll();
                                     }
                                     return SleepHandler(c);
                                   })
                    .ok());
  });
  master_.AddTask(1, "traced-sleep", "60");
  {
    MutexLock lock(&mu);
    absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (!started && absl::Now() < deadline) cv.WaitWithDeadline(&mu, deadline);
    ASSERT_TRUE(started);
  }
  worker_->StopNow();
  EXPECT_TRUE(WaitForRun().ok());  // would take a minute if sleep ignored it
  MasterState s = master_.Snapshot();
  ASSERT_EQ(s.releases.size(), 1u);
  EXPECT_EQ(s.releases[0].task_id(), 1u);
  EXPECT_TRUE(s.failures.empty());
  EXPECT_TRUE(s.completions.empty());
}

TEST_F(WorkerTest, PrefetchedTasksAreReleasedAtOnceOnStop) {
  WorkerOptions o = Options();
  o.concurrency = 1;
  o.prefetch = 2;
  Gate gate;
  Start(o, [&](Worker* w) { ASSERT_TRUE(w->handlers().Register("gate", gate.AsHandler()).ok()); });
  master_.AddTask(1, "gate", "a");
  master_.AddTask(2, "gate", "b");
  master_.AddTask(3, "gate", "c");
  ASSERT_TRUE(gate.WaitEntered(1));
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.pending.empty(); }));
  ASSERT_TRUE(WaitForInFlight(3));
  worker_->Stop();
  // The two waiting deliveries go back while task 1 still runs.
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.releases.size() == 2; }));
  MasterState s = master_.Snapshot();
  EXPECT_EQ(s.releases[0].task_id() + s.releases[1].task_id(), 2u + 3u);
  EXPECT_TRUE(s.completions.empty());
  EXPECT_FALSE(s.half_closed);
  gate.Open();  // task 1 finishes within the drain and is reported
  EXPECT_TRUE(WaitForRun().ok());
  s = master_.Snapshot();
  ASSERT_EQ(s.completions.size(), 1u);
  EXPECT_EQ(s.completions[0].task_id(), 1u);
  EXPECT_EQ(s.releases.size(), 2u);
  EXPECT_EQ(gate.interrupted(), 0);
}

// A heartbeat refused with `code` stops the task; nothing is reported for
// it, its slot (credit) comes back, and the worker carries on.
void ExpectRefusedHeartbeatStopsTask(FakeMaster& master, Gate& gate, grpc::StatusCode code) {
  master.RefuseHeartbeats(1, code);
  // 600 ms lease: heartbeat every 200 ms.
  master.AddTask(1, "gate", "a", absl::Milliseconds(600));
  ASSERT_TRUE(gate.WaitEntered(1));
  uint64_t credits_before = master.Snapshot().credits_granted;
  ASSERT_TRUE(gate.WaitInterrupted(1));
  // The freed slot is offered again.
  ASSERT_TRUE(master.WaitFor(
      [&](const MasterState& s) { return s.credits_granted == credits_before + 1; }));
  master.AddTask(2, "square", "7");
  ASSERT_TRUE(master.WaitFor([](const MasterState& s) { return s.completions.size() == 1; }));
  MasterState s = master.Snapshot();
  EXPECT_EQ(s.completions[0].task_id(), 2u);
  EXPECT_TRUE(s.failures.empty());
  EXPECT_TRUE(s.releases.empty());
}

TEST_F(WorkerTest, CancelledTaskIsStoppedAndNotReported) {
  Gate gate;
  Start(Options(), [&](Worker* w) {
    ASSERT_TRUE(w->handlers().Register("gate", gate.AsHandler()).ok());
  });
  ExpectRefusedHeartbeatStopsTask(master_, gate, grpc::StatusCode::CANCELLED);
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
}

TEST_F(WorkerTest, LostLeaseStopsTheTaskAndItIsNotReported) {
  Gate gate;
  Start(Options(), [&](Worker* w) {
    ASSERT_TRUE(w->handlers().Register("gate", gate.AsHandler()).ok());
  });
  ExpectRefusedHeartbeatStopsTask(master_, gate, grpc::StatusCode::FAILED_PRECONDITION);
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
}

TEST_F(WorkerTest, CancelStopsAnAsyncSleepAtOnce) {
  Start(Options());
  master_.RefuseHeartbeats(1, grpc::StatusCode::CANCELLED);
  master_.AddTask(1, "sleep", "60", absl::Milliseconds(600));
  // The stop token ends the sleep: the slot is free long before 60 s.
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.credits_granted == 3 + 1; }));
  EXPECT_TRUE(WaitForInFlight(0));
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
  MasterState s = master_.Snapshot();
  EXPECT_TRUE(s.completions.empty());
  EXPECT_TRUE(s.failures.empty());
  EXPECT_TRUE(s.releases.empty());
}

TEST_F(WorkerTest, HandlerCanReleaseItsTaskWithADelay) {
  Start(Options(), [](Worker* w) {
    ASSERT_TRUE(w->handlers()
                    .Register("later",
                              [](const HandlerContext&) -> absl::StatusOr<std::string> {
                                return ReleaseTask(absl::Milliseconds(1500));
                              })
                    .ok());
  });
  master_.AddTask(1, "later", "");
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.releases.size() == 1; }));
  MasterState s = master_.Snapshot();
  EXPECT_EQ(s.releases[0].task_id(), 1u);
  EXPECT_EQ(s.releases[0].delay_ms(), 1500u);
  EXPECT_TRUE(s.failures.empty());
  EXPECT_TRUE(s.completions.empty());
  // Its credit comes back like any finished task's.
  EXPECT_TRUE(master_.WaitFor([](const MasterState& s) { return s.credits_granted == 3 + 1; }));
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
}

TEST_F(WorkerTest, SlowTaskDoesNotBlockOthers) {
  // Credits are the window: one slow task holds one slot, and every other
  // delivery runs in the free slot meanwhile (nothing queues behind it).
  Gate gate;
  Start(Options(), [&](Worker* w) {
    ASSERT_TRUE(w->handlers().Register("gate", gate.AsHandler()).ok());
  });
  master_.AddTask(1, "gate", "slow");
  ASSERT_TRUE(gate.WaitEntered(1));
  for (int i = 2; i <= 21; ++i) master_.AddTask(i, "square", absl::StrCat(i));
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.completions.size() == 20; }));
  EXPECT_EQ(gate.interrupted(), 0);
  gate.Open();
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.completions.size() == 21; }));
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
}

TEST_F(WorkerTest, AsyncHandlersRunFarBeyondTheThreadCount) {
  WorkerOptions o = Options();
  o.threads = 1;
  o.concurrency = 200;
  o.prefetch = 0;
  Start(o);
  for (int i = 1; i <= 200; ++i) master_.AddTask(i, "sleep", "0.3");
  absl::Time start = absl::Now();
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.completions.size() == 200; }));
  // 200 x 0.3 s one at a time would be a minute.
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
}

TEST_F(WorkerTest, SyncHandlersRunOnAtMostThreadsThreads) {
  WorkerOptions o = Options();
  o.threads = 2;
  o.concurrency = 8;
  Mutex mu;
  int active = 0, most = 0;
  Start(o, [&](Worker* w) {
    ASSERT_TRUE(w->handlers()
                    .Register("busy",
                              [&](const HandlerContext& c) -> absl::StatusOr<std::string> {
                                {
                                  MutexLock lock(&mu);
                                  most = std::max(most, ++active);
                                }
                                c.WaitForStop(absl::Now() + absl::Milliseconds(30));
                                MutexLock lock(&mu);
                                --active;
                                return "done";
                              })
                    .ok());
  });
  for (int i = 1; i <= 16; ++i) master_.AddTask(i, "busy", "");
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.completions.size() == 16; }));
  MutexLock lock(&mu);
  EXPECT_GE(most, 1);
  EXPECT_LE(most, 2);
}

TEST_F(WorkerTest, RefusedResultBecomesPermanentFailure) {
  master_.SetCompletionAckCode(static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  Start(Options());
  master_.AddTask(1, "square", "4");
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.failures.size() == 1; }));
  MasterState s = master_.Snapshot();
  EXPECT_TRUE(s.failures[0].permanent());
  EXPECT_EQ(s.failures[0].lease_id(), s.completions[0].lease_id());
  EXPECT_NE(s.failures[0].error().find("refused by the test"), std::string::npos);
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
}

TEST_F(WorkerTest, LostLeaseAckIsOnlyLogged) {
  master_.SetCompletionAckCode(static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION));
  Start(Options());
  master_.AddTask(1, "square", "4");
  master_.AddTask(2, "square", "5");
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.completions.size() == 2; }));
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
  EXPECT_TRUE(master_.Snapshot().failures.empty());
}

TEST_F(WorkerTest, StreamEndStopsItsTasksAndReconnects) {
  Gate gate;
  Start(Options(), [&](Worker* w) {
    ASSERT_TRUE(w->handlers().Register("gate", gate.AsHandler()).ok());
  });
  master_.AddTask(1, "gate", "old");
  ASSERT_TRUE(gate.WaitEntered(1));
  master_.EndStream();
  // The master took the lease back with the stream: the task is told to
  // stop at once, and its result is never sent.
  ASSERT_TRUE(gate.WaitInterrupted(1));
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.starts.size() == 2; }));
  // Its slot comes back as a credit.
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.credits == 3; }));
  master_.AddTask(2, "square", "6");
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.completions.size() == 1; }));
  MasterState s = master_.Snapshot();
  EXPECT_EQ(s.completions[0].task_id(), 2u);
  EXPECT_EQ(s.completions[0].result(), "6 * 6 = 36");
  EXPECT_TRUE(s.failures.empty());
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
}

TEST_F(WorkerTest, StopDrainsTheLiveStreamsTasks) {
  Gate old_gate, new_gate;
  Start(Options(), [&](Worker* w) {
    ASSERT_TRUE(w->handlers().Register("old", old_gate.AsHandler()).ok());
    ASSERT_TRUE(w->handlers().Register("new", new_gate.AsHandler()).ok());
  });
  master_.AddTask(1, "old", "a");
  ASSERT_TRUE(old_gate.WaitEntered(1));
  master_.EndStream();
  ASSERT_TRUE(old_gate.WaitInterrupted(1));
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.starts.size() == 2; }));
  master_.AddTask(2, "new", "b");
  ASSERT_TRUE(new_gate.WaitEntered(1));
  worker_->Stop();
  // Task 2 drains normally.
  EXPECT_EQ(new_gate.interrupted(), 0);
  new_gate.Open();
  EXPECT_TRUE(WaitForRun().ok());
  MasterState s = master_.Snapshot();
  ASSERT_EQ(s.completions.size(), 1u);
  EXPECT_EQ(s.completions[0].result(), "passed b");
  EXPECT_TRUE(s.failures.empty());
}

// The master states a 600 ms lease and never confirms a heartbeat: by our
// clock the lease may run out 450 ms after delivery (a quarter is kept as
// margin), so the task is stopped then and not reported.
TEST_F(WorkerTest, LeaseWithoutConfirmedHeartbeatsStopsItsTask) {
  Gate gate;
  Start(Options(), [&](Worker* w) {
    ASSERT_TRUE(w->handlers().Register("gate", gate.AsHandler()).ok());
  });
  const absl::Time delivered = absl::Now();
  master_.AddTask(1, "gate", "x", absl::Milliseconds(600), /*lease_ms_left=*/600);
  ASSERT_TRUE(gate.WaitEntered(1));
  ASSERT_TRUE(gate.WaitInterrupted(1));
  const absl::Duration took = absl::Now() - delivered;
  EXPECT_GE(took, absl::Milliseconds(400));
  EXPECT_LT(took, absl::Milliseconds(600) + absl::Seconds(1));
  gate.Open();
  ASSERT_TRUE(WaitForInFlight(0));
  // Heartbeats went out (every 200 ms) and stopped with the task.
  const size_t extends = master_.Snapshot().extends.size();
  EXPECT_GE(extends, 1u);
  master_.AddTask(2, "square", "3");
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.completions.size() == 1; }));
  MasterState s = master_.Snapshot();
  EXPECT_EQ(s.completions[0].task_id(), 2u);
  EXPECT_TRUE(s.failures.empty());
  EXPECT_EQ(s.extends.size(), extends);
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
}

// Confirmed heartbeats move the fence: a task far longer than its 600 ms
// lease runs to the end and is reported.
TEST_F(WorkerTest, ConfirmedHeartbeatsKeepAShortLeaseAlive) {
  master_.ConfirmHeartbeats(600);
  Start(Options());
  master_.AddTask(1, "sleep", "1.5", absl::Milliseconds(600), /*lease_ms_left=*/600);
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.completions.size() == 1; }));
  MasterState s = master_.Snapshot();
  EXPECT_EQ(s.completions[0].result(), "slept 1.5");
  EXPECT_GE(s.extends.size(), 5u);
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
}

// An older master states no time left: no fence, the lease lives while
// heartbeats go out (as before).
TEST_F(WorkerTest, DeliveryWithoutTimeLeftIsNotFenced) {
  Start(Options());
  master_.AddTask(1, "sleep", "1", absl::Milliseconds(600));
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.completions.size() == 1; }));
  EXPECT_EQ(master_.Snapshot().completions[0].result(), "slept 1");
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
}

TEST_F(WorkerTest, KeepsRetryingAWrongTokenUntilStopped) {
  {
    std::ofstream out(token_file_);
    out << "wrong-token\n";
  }
  Start(Options());
  // The fake master refuses the stream; the worker must come back for more.
  ASSERT_TRUE(master_.WaitFor([](const MasterState& s) { return s.refused >= 3; }));
  worker_->Stop();
  EXPECT_TRUE(WaitForRun().ok());
}

TEST_F(WorkerTest, StopWhileMasterUnreachableReturnsPromptly) {
  WorkerOptions o = Options();
  o.connect.master = "127.0.0.1:1";  // nothing listens there
  Start(o);
  worker_->Stop();
  EXPECT_TRUE(WaitForRun(absl::Seconds(10)).ok());
}

TEST_F(WorkerTest, BadOptionsFailAtOnce) {
  WorkerOptions o = Options();
  o.queues = {"bad name"};
  Worker w(o);
  EXPECT_EQ(w.Run().code(), absl::StatusCode::kInvalidArgument);
  WorkerOptions o2 = Options();
  o2.connect.token_file = dir_ + "/missing";
  Worker w2(o2);
  EXPECT_FALSE(w2.Run().ok());
  for (absl::Duration keepalive : {absl::Milliseconds(500), absl::Hours(2)}) {
    WorkerOptions o3 = Options();
    o3.connect.keepalive = keepalive;
    Worker w3(o3);
    absl::Status s = w3.Run();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("keepalive"), absl::string_view::npos) << s;
  }
  WorkerOptions o4 = Options();
  o4.connect.connect_timeout = absl::ZeroDuration();
  Worker w4(o4);
  absl::Status s4 = w4.Run();
  EXPECT_EQ(s4.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s4.message().find("connect timeout"), absl::string_view::npos) << s4;
  // A worker pings more often than a CLI: it must notice a dead link before
  // the master does (docs/WORKER.md, "Failure detection").
  EXPECT_EQ(WorkerOptions().connect.keepalive, kDefaultWorkerKeepalive);
}

}  // namespace
}  // namespace taskq
