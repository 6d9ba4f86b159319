#include "worker/worker.h"

#include <unistd.h>

#include <algorithm>
#include <thread>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/auth.h"
#include "common/grpc_status.h"
#include "common/limits.h"
#include "common/log.h"
#include "worker/backoff.h"
#include "worker/builtin_handlers.h"
#include "worker/text_util.h"

namespace taskq {
namespace {

// Heartbeat period bounds. The master's clock may differ from ours, so the
// period derived from the lease deadline is clamped: never a busy loop,
// never so slow that a default 30 s lease could lapse.
constexpr absl::Duration kMinExtendEvery = absl::Milliseconds(200);
constexpr absl::Duration kMaxExtendEvery = absl::Seconds(10);
// Heartbeats due this soon ride along with one due now (fewer messages).
constexpr absl::Duration kExtendSlack = absl::Milliseconds(50);
// After WritesDone, how long the master gets to end the stream.
constexpr absl::Duration kHalfCloseWait = absl::Seconds(5);
// The master refuses a stream (bad token, unknown queue) right after our
// first message; a stream still open this long after it is taken as up.
// A message from the master confirms it sooner.
constexpr absl::Duration kConfirmConnected = absl::Milliseconds(250);
// A session that lasted this long counts as healthy (backoff resets).
constexpr absl::Duration kHealthySession = absl::Seconds(1);
// Results per message stop here; the rest go in the next one.
constexpr size_t kMaxBatchBytes = 4 << 20;

absl::Duration ExtendPeriod(int64_t deadline_unix_ms, absl::Time now) {
  if (deadline_unix_ms <= 0) return kMaxExtendEvery;
  absl::Duration left = absl::FromUnixMillis(deadline_unix_ms) - now;
  return std::clamp(left / 3, kMinExtendEvery, kMaxExtendEvery);
}

}  // namespace

std::string DefaultWorkerId() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return absl::StrCat(host[0] != '\0' ? host : "localhost", ":", ::getpid());
}

Worker::Worker(WorkerOptions options) : options_(std::move(options)) {
  if (options_.queues.empty()) options_.queues = {"tasks"};
  if (options_.concurrency == 0) {
    options_.concurrency = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  }
  if (options_.id.empty()) options_.id = DefaultWorkerId();
  options_.connect = ResolveConnectOptions(options_.connect);
  // Cannot fail: the names are valid and the registry is empty.
  RegisterBuiltinHandlers(&handlers_, options_.allow_exec).IgnoreError();
}

Worker::~Worker() {
  Stop();
  pool_.reset();  // waits for running handlers
}

absl::Status Worker::ValidateOptions() const {
  if (options_.queues.size() > kMaxQueuesPerWorker) {
    return absl::InvalidArgumentError(absl::StrCat(
        options_.queues.size(), " queues given; a worker serves at most ", kMaxQueuesPerWorker));
  }
  for (const auto& q : options_.queues) {
    if (auto s = ValidateName("queue", q); !s.ok()) return s;
  }
  if (options_.concurrency < 1) return absl::InvalidArgumentError("concurrency must be at least 1");
  if (options_.prefetch < 0) return absl::InvalidArgumentError("prefetch must not be negative");
  if (static_cast<uint64_t>(options_.concurrency) + static_cast<uint64_t>(options_.prefetch) >
      kMaxCredits) {
    return absl::InvalidArgumentError(
        absl::StrCat("concurrency + prefetch must be at most ", kMaxCredits));
  }
  if (options_.id.size() > kMaxWorkerIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker id is longer than ", kMaxWorkerIdBytes, " bytes"));
  }
  if (options_.drain_timeout < absl::ZeroDuration() || options_.stop_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("drain timeout must not be negative");
  }
  return absl::OkStatus();
}

absl::Status Worker::Run() {
  if (auto s = ValidateOptions(); !s.ok()) return s;
  auto connection = Connect(options_.connect);
  if (!connection.ok()) return connection.status();
  pool_ = std::make_unique<ThreadPool>(static_cast<size_t>(options_.concurrency));
  auto stub = v1::TaskQueue::NewStub(connection->channel);
  std::string token = std::move(connection->token);
  const std::string& master = options_.connect.master;
  Backoff backoff;
  for (;;) {
    {
      MutexLock lock(&mu_);
      if (stopping_) break;
    }
    SessionResult result = RunSession(stub.get(), token);
    {
      MutexLock lock(&mu_);
      if (stopping_) break;
    }
    if (result.healthy) backoff.Reset();
    absl::Duration delay = backoff.Next();
    std::string why = result.status.ToString();
    if (result.connected) {
      LogInfo("taskq-worker %s disconnected from %s: %s; reconnecting in %s", options_.id, master,
              why, absl::FormatDuration(absl::Trunc(delay, absl::Milliseconds(1))));
    } else if (absl::IsUnavailable(result.status)) {
      LogInfo("taskq-worker %s cannot reach %s: %s; reconnecting in %s", options_.id, master, why,
              absl::FormatDuration(absl::Trunc(delay, absl::Milliseconds(1))));
    } else {
      LogWarning("taskq-worker %s: %s refused the stream: %s; reconnecting in %s", options_.id,
                 master, why, absl::FormatDuration(absl::Trunc(delay, absl::Milliseconds(1))));
    }
    if (absl::IsUnauthenticated(result.status) || absl::IsPermissionDenied(result.status)) {
      LogError("the master refused this worker's token; check --token-file (%s)",
               options_.connect.token_file);
    }
    {
      MutexLock lock(&mu_);
      absl::Time wake = absl::Now() + delay;
      while (!stopping_ && absl::Now() < wake) cv_.WaitWithDeadline(&mu_, wake);
      if (stopping_) break;
    }
    // Pick up a rotated token before trying again.
    auto fresh = LoadToken(options_.connect.token_file);
    if (fresh.ok()) {
      token = *std::move(fresh);
    } else {
      LogWarning("cannot re-read the token file: %s; using the previous token",
                 fresh.status().message());
    }
  }
  WaitForHandlers();
  LogInfo("taskq-worker %s stopped", options_.id);
  return absl::OkStatus();
}

Worker::SessionResult Worker::RunSession(v1::TaskQueue::Stub* stub, const std::string& token) {
  SessionResult result;
  auto context = std::make_unique<grpc::ClientContext>();
  PrepareContext(context.get(), token);
  uint64_t session;
  {
    MutexLock lock(&mu_);
    if (stopping_) {
      result.status = absl::CancelledError("stopping");
      return result;
    }
    session = ++session_;
    context_ = context.get();
    session_live_ = true;
    session_over_ = false;
    half_closed_ = false;
    connected_ = false;
    leases_.clear();
    completions_.clear();
    failures_.clear();
    failures_sent_.clear();
    // Slots still held by tasks of a dead stream are not offered again
    // until those tasks finish (FinishTask grants them then).
    credits_ = window() > in_flight_ ? window() - in_flight_ : 0;
  }
  const absl::Time started = absl::Now();
  // Stop() cancels context_ while this may still wait for a connection.
  auto stream = stub->Work(context.get());
  std::thread sender([&] { SendLoop(stream.get(), context.get(), session); });
  v1::WorkResponse response;
  bool received = false;
  while (stream->Read(&response)) {
    received = true;
    HandleResponse(session, &response);
  }
  {
    MutexLock lock(&mu_);
    size_t unsent = completions_.size() + failures_.size();
    if (unsent > 0) {
      LogWarning("%d result(s) were not sent before the stream ended; the master will hand "
                 "those tasks out again",
                 unsent);
    }
    session_live_ = false;
    session_over_ = true;
    if (auto it = tasks_by_session_.find(session);
        it != tasks_by_session_.end() && it->second.count == 0) {
      tasks_by_session_.erase(it);
    }
    // While stopping there is no next stream to report on: stop them now.
    if (stopping_) StopTasks(/*all=*/false);
    leases_.clear();
    completions_.clear();
    failures_.clear();
    failures_sent_.clear();
    credits_ = 0;
    cv_.SignalAll();
  }
  sender.join();
  grpc::Status status = stream->Finish();
  bool connected;
  {
    MutexLock lock(&mu_);
    context_ = nullptr;
    connected = connected_;
    connected_ = false;
  }
  result.status = ToAbslStatus(status);
  result.connected = connected;
  result.healthy = connected && (received || absl::Now() - started >= kHealthySession);
  return result;
}

void Worker::MarkConnected() {
  if (connected_) return;
  connected_ = true;
  LogInfo("taskq-worker %s connected to %s, queues: %s", options_.id, options_.connect.master,
          absl::StrJoin(options_.queues, ", "));
}

void Worker::SendLoop(grpc::ClientReaderWriter<v1::WorkRequest, v1::WorkResponse>* stream,
                      grpc::ClientContext* context, uint64_t session) {
  bool first = true;
  bool cancelled = false;
  absl::Time close_deadline = absl::InfiniteFuture();
  absl::Time confirm_at = absl::InfiniteFuture();
  mu_.Lock();
  while (!session_over_) {
    const absl::Time now = absl::Now();
    if (!connected_ && now >= confirm_at) MarkConnected();
    if (stopping_ && now >= drain_deadline_ && !hard_stopped_) {
      if (in_flight_ > 0) {
        LogWarning("drain time is up: telling %d running task(s) to stop", in_flight_);
      }
      StopTasks(/*all=*/true);
    }
    if (!cancelled && stopping_ && now >= drain_deadline_ + options_.stop_grace) {
      // A handler that ignores the stop flag must not keep us connected.
      LogWarning("%d task(s) did not stop in time; closing the stream anyway", in_flight_);
      context->TryCancel();
      cancelled = true;
    }
    if (!cancelled && half_closed_ && now >= close_deadline) {
      LogWarning("the master did not end the stream after it was closed; cancelling it");
      context->TryCancel();
      cancelled = true;
    }
    v1::WorkRequest request;
    if (!half_closed_ && !cancelled && TakeOutbox(session, first, &request)) {
      mu_.Unlock();
      bool ok = stream->Write(request);
      mu_.Lock();
      if (!ok) {
        context->TryCancel();  // makes sure the reader wakes up
        break;
      }
      if (first) {
        first = false;
        confirm_at = absl::Now() + kConfirmConnected;
      }
      continue;
    }
    if (stopping_ && !first && !half_closed_ && !cancelled && in_flight_ == 0) {
      // Drained: everything is reported. Closing our side lets the master
      // end the stream; it gives back nothing because we hold nothing.
      half_closed_ = true;
      mu_.Unlock();
      stream->WritesDone();
      mu_.Lock();
      close_deadline = absl::Now() + kHalfCloseWait;
      continue;
    }
    absl::Time wake = absl::InfiniteFuture();
    for (const auto& [id, lease] : leases_) {
      if (lease.session == session) wake = std::min(wake, lease.next_extend);
    }
    if (stopping_ && !cancelled) {
      wake = std::min(wake, hard_stopped_ ? drain_deadline_ + options_.stop_grace
                                          : drain_deadline_);
    }
    if (half_closed_ && !cancelled) wake = std::min(wake, close_deadline);
    if (!connected_) wake = std::min(wake, confirm_at);
    cv_.WaitWithDeadline(&mu_, wake);
  }
  mu_.Unlock();
}

bool Worker::TakeOutbox(uint64_t session, bool first, v1::WorkRequest* request) {
  bool any = false;
  if (first) {
    auto* start = request->mutable_start();
    for (const auto& q : options_.queues) start->add_queues(q);
    start->set_worker_id(options_.id);
    any = true;
  }
  if (credits_ > 0 && !stopping_) {
    request->set_credits(credits_);
    any = true;
  }
  credits_ = 0;
  size_t bytes = 0;
  size_t taken = 0;
  // The master refuses a message with more reports than this; the rest go
  // in the next message.
  size_t room = kMaxReportsPerWorkMessage;
  for (; taken < completions_.size() && bytes < kMaxBatchBytes && room > 0; ++taken, --room) {
    bytes += completions_[taken].result().size();
    *request->add_completions() = std::move(completions_[taken]);
  }
  completions_.erase(completions_.begin(), completions_.begin() + static_cast<ptrdiff_t>(taken));
  any = any || taken > 0;
  taken = 0;
  for (; taken < failures_.size() && bytes < kMaxBatchBytes && room > 0; ++taken, --room) {
    bytes += failures_[taken].error().size();
    failures_sent_.insert(failures_[taken].lease_id());
    *request->add_failures() = std::move(failures_[taken]);
  }
  failures_.erase(failures_.begin(), failures_.begin() + static_cast<ptrdiff_t>(taken));
  any = any || taken > 0;
  const absl::Time now = absl::Now();
  for (auto& [lease_id, lease] : leases_) {
    if (lease.session != session || lease.next_extend > now + kExtendSlack) continue;
    if (room == 0) break;
    --room;
    request->add_extend_lease_ids(lease_id);
    lease.next_extend = now + lease.extend_every;
    any = true;
  }
  return any;
}

void Worker::HandleResponse(uint64_t session, v1::WorkResponse* response) {
  std::vector<std::pair<v1::Task, uint64_t>> to_run;
  std::shared_ptr<const StopSignal> stop;
  {
    MutexLock lock(&mu_);
    for (const auto& ack : response->acks()) HandleAck(ack);
    const absl::Time now = absl::Now();
    for (auto& delivery : *response->mutable_deliveries()) {
      if (!session_live_ || session_ != session || half_closed_) {
        // We closed our side; the master takes the lease back when the
        // stream ends.
        LogDebug("not running task %d: the stream is closing", delivery.task().id());
        continue;
      }
      ++in_flight_;
      SessionTasks& tasks = tasks_by_session_[session];
      ++tasks.count;
      if (hard_stopped_) tasks.stop->Stop();  // it will not start
      stop = tasks.stop;
      Lease& lease = leases_[delivery.lease_id()];
      lease.task_id = delivery.task().id();
      lease.session = session;
      lease.extend_every = ExtendPeriod(delivery.lease_deadline_unix_ms(), now);
      lease.next_extend = now + lease.extend_every;
      to_run.emplace_back(std::move(*delivery.mutable_task()), delivery.lease_id());
    }
    // A message from the master proves the stream is up (see Stop()).
    MarkConnected();
    // New leases: the sender must plan their heartbeats.
    if (!to_run.empty()) cv_.SignalAll();
  }
  for (auto& [task, lease_id] : to_run) {
    pool_->Submit([this, session, stop, task = std::move(task), lease_id = lease_id]() mutable {
      RunTask(session, std::move(stop), std::move(task), lease_id);
    });
  }
}

void Worker::HandleAck(const v1::WorkResponse::Ack& ack) {
  bool was_failure = failures_sent_.erase(ack.lease_id()) > 0;
  if (ack.code() == 0) return;
  auto code = static_cast<absl::StatusCode>(ack.code());
  std::string why = absl::Status(code, ack.message()).ToString();
  if (ack.task_id() == 0) {
    // A refused heartbeat (the master acks those only when they fail): the
    // lease is gone, so stop extending it. The handler runs on; its result
    // will be refused, and the task runs again elsewhere.
    uint64_t task_id = 0;
    if (auto it = leases_.find(ack.lease_id()); it != leases_.end()) {
      task_id = it->second.task_id;
      leases_.erase(it);
    }
    LogWarning("task %d lost its lease %d: %s", task_id, ack.lease_id(), why);
    return;
  }
  if (was_failure) {
    LogWarning("failure report for task %d not accepted: %s", ack.task_id(), why);
  } else if (code == absl::StatusCode::kFailedPrecondition) {
    LogWarning("result for task %d discarded: %s", ack.task_id(), ack.message());
  } else if (code == absl::StatusCode::kInvalidArgument) {
    // E.g. a result larger than the master accepts: retrying would produce
    // the same result, so report the task as failed for good.
    LogWarning("result for task %d refused by the master: %s; reporting the task failed",
               ack.task_id(), why);
    v1::FailRequest failure;
    failure.set_task_id(ack.task_id());
    failure.set_lease_id(ack.lease_id());
    failure.set_error(CleanUtf8(absl::StrCat("result refused by the master: ", ack.message()),
                                kMaxErrorBytes));
    failure.set_permanent(true);
    failures_.push_back(std::move(failure));
    cv_.SignalAll();
  } else {
    LogWarning("result for task %d not accepted: %s", ack.task_id(), why);
  }
}

void Worker::RunTask(uint64_t session, std::shared_ptr<const StopSignal> stop, v1::Task task,
                     uint64_t lease_id) {
  const absl::Time start = absl::Now();
  LogDebug("task %d started: queue %s, handler %s, attempt %d", task.id(), task.queue(),
           task.handler(), task.attempt());
  absl::StatusOr<std::string> result;
  if (stop->stopped()) {
    result = absl::CancelledError("the worker stopped before the task started");
  } else {
    HandlerContext context(task, options_.id, stop.get());
    result = handlers_.Run(context);
  }
  if (LogEnabled(LogLevel::kDebug)) {
    std::string took = absl::FormatDuration(absl::Now() - start);
    if (result.ok()) {
      LogDebug("task %d done in %s (%d result bytes)", task.id(), took, result->size());
    } else {
      LogDebug("task %d failed in %s: %s", task.id(), took, result.status().ToString());
    }
  }
  FinishTask(session, task, lease_id, std::move(result));
}

void Worker::FinishTask(uint64_t session, const v1::Task& task, uint64_t lease_id,
                        absl::StatusOr<std::string> result) {
  MutexLock lock(&mu_);
  --in_flight_;
  if (auto it = leases_.find(lease_id); it != leases_.end() && it->second.session == session) {
    leases_.erase(it);
  }
  if (auto it = tasks_by_session_.find(session); it != tasks_by_session_.end()) {
    if (--it->second.count == 0 && !(session_live_ && session_ == session)) {
      tasks_by_session_.erase(it);
    }
  }
  // The slot is free again: offer it on whatever stream is live now.
  if (session_live_ && !stopping_) ++credits_;
  if (!session_live_ || session_ != session || half_closed_) {
    LogInfo("result for task %d dropped: the stream it came on has ended, so the master already "
            "took the task back",
            task.id());
  } else if (result.ok()) {
    v1::WorkRequest::Completion completion;
    completion.set_task_id(task.id());
    completion.set_lease_id(lease_id);
    completion.set_result(*std::move(result));
    completions_.push_back(std::move(completion));
  } else {
    const absl::Status& status = result.status();
    v1::FailRequest failure;
    failure.set_task_id(task.id());
    failure.set_lease_id(lease_id);
    failure.set_error(CleanUtf8(status.message().empty() ? status.ToString() : status.message(),
                                kMaxErrorBytes));
    failure.set_permanent(IsPermanentFailure(status));
    failures_.push_back(std::move(failure));
  }
  cv_.SignalAll();
}

void Worker::WaitForHandlers() {
  MutexLock lock(&mu_);
  if (in_flight_ == 0) return;
  // No stream can take their results any more: stop them and wait a little.
  LogInfo("stopping %d task(s) whose results can no longer be reported", in_flight_);
  StopTasks(/*all=*/true);
  const absl::Time deadline = absl::Now() + options_.stop_grace;
  while (in_flight_ > 0 && absl::Now() < deadline) cv_.WaitWithDeadline(&mu_, deadline);
  if (in_flight_ > 0) {
    stuck_handlers_ = true;
    LogError("%d handler(s) ignored the stop request", in_flight_);
  }
}

void Worker::Stop() {
  MutexLock lock(&mu_);
  if (!stopping_) {
    stopping_ = true;
    drain_deadline_ = absl::Now() + options_.drain_timeout;
    credits_ = 0;
    LogInfo("taskq-worker %s stopping: finishing %d running task(s), waiting up to %s",
            options_.id, in_flight_, absl::FormatDuration(options_.drain_timeout));
    StopTasks(/*all=*/false);
  }
  // Still connecting (gRPC may wait up to its connect timeout): holding no
  // task, there is nothing to drain, so do not wait for the connection.
  if (context_ != nullptr && !connected_ && in_flight_ == 0) context_->TryCancel();
  cv_.SignalAll();
}

void Worker::StopNow() {
  Stop();
  MutexLock lock(&mu_);
  drain_deadline_ = std::min(drain_deadline_, absl::Now());
  StopTasks(/*all=*/true);
  cv_.SignalAll();
}

void Worker::StopTasks(bool all) {
  if (all) hard_stopped_ = true;
  uint32_t stopped = 0;
  for (auto& [session, tasks] : tasks_by_session_) {
    bool live = session_live_ && session == session_;
    if ((all || !live) && !tasks.stop->stopped()) {
      tasks.stop->Stop();
      stopped += tasks.count;
    }
  }
  if (!all && stopped > 0) {
    LogInfo("stopping %d task(s) of a closed stream: their results can no longer be reported",
            stopped);
  }
}

bool Worker::has_stuck_handlers() const {
  MutexLock lock(&mu_);
  return stuck_handlers_;
}

}  // namespace taskq
