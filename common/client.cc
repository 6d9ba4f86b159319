#include "common/client.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <thread>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/cluster_redirect.h"
#include "common/grpc_status.h"
#include "common/limits.h"

namespace taskq {
namespace {

// The master takes waits as uint32 milliseconds (0 = until the call's
// deadline); anything that long or longer is as good as forever.
bool IsForever(absl::Duration d) {
  return d >= absl::Milliseconds(std::numeric_limits<uint32_t>::max());
}

// A finite, positive wait in whole milliseconds, rounded up so that a wait
// of 0.1 ms does not become "until the deadline" (0).
uint32_t TimeoutMs(absl::Duration d) {
  int64_t ms = absl::ToInt64Milliseconds(absl::Ceil(d, absl::Milliseconds(1)));
  ms = std::clamp<int64_t>(ms, 1, std::numeric_limits<uint32_t>::max());
  return static_cast<uint32_t>(ms);
}

// How a caller's (nowait, timeout) pair maps onto the request: a finite
// timeout that has already run out means "do not wait".
struct WaitPlan {
  bool nowait;
  bool forever;
  absl::Duration timeout;  // meaningful when !nowait && !forever
};

WaitPlan PlanWait(bool nowait, absl::Duration timeout) {
  if (nowait) return {true, false, absl::ZeroDuration()};
  if (IsForever(timeout)) return {false, true, absl::InfiniteDuration()};
  if (timeout <= absl::ZeroDuration()) return {true, false, absl::ZeroDuration()};
  return {false, false, timeout};
}

// Prefixes the message, keeping the code.
absl::Status Annotate(const absl::Status& status, absl::string_view prefix) {
  return absl::Status(status.code(), absl::StrCat(prefix, status.message()));
}

absl::Status NoTaskZero() {
  return absl::InvalidArgumentError("task id 0 is not a task (ids start at 1)");
}

absl::Status DelayTooLong(absl::string_view what, absl::Duration d) {
  return absl::InvalidArgumentError(absl::StrCat(what, " of ", absl::FormatDuration(d),
                                                 " is longer than the limit of ",
                                                 kMaxDelayMs / 86'400'000, " days"));
}

// A delay in whole milliseconds (rounded up) that fits a uint32 field.
absl::StatusOr<uint32_t> DelayMs(absl::Duration delay, absl::string_view what) {
  if (delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " must not be negative"));
  }
  const int64_t ms = absl::ToInt64Milliseconds(absl::Ceil(delay, absl::Milliseconds(1)));
  if (ms > kMaxDelayMs || ms > std::numeric_limits<uint32_t>::max()) {
    return DelayTooLong(what, delay);
  }
  return static_cast<uint32_t>(ms);
}

// A Put request is capped in bytes too (one task alone may be larger), so
// that many large payloads are split instead of refused as one huge
// message: the master reads requests of up to kMinMaxRequestBytes (more
// with a larger --max-payload-bytes).
constexpr size_t kMaxPutRequestBytes = kMaxStreamMessageBytes;

}  // namespace

// --- CallCanceller ----------------------------------------------------------

void CallCanceller::Cancel() {
  MutexLock lock(&mu_);
  cancelled_ = true;
  // TryCancel only flags the call; it does not block or call back into us.
  for (grpc::ClientContext* context : active_) context->TryCancel();
}

bool CallCanceller::cancelled() const {
  MutexLock lock(&mu_);
  return cancelled_;
}

bool CallCanceller::Register(grpc::ClientContext* context) {
  MutexLock lock(&mu_);
  if (cancelled_) return false;
  active_.insert(context);
  return true;
}

void CallCanceller::Unregister(grpc::ClientContext* context) {
  MutexLock lock(&mu_);
  active_.erase(context);
}

// --- Client -----------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const ConnectOptions& options,
                                                        ClientOptions client_options) {
  auto connection = taskq::Connect(options);
  if (!connection.ok()) return connection.status();
  return std::make_unique<Client>(std::move(connection->channel), std::move(connection->token),
                                  client_options, std::move(connection->dial),
                                  std::move(connection->master));
}

Client::Client(std::shared_ptr<grpc::Channel> channel, std::string token,
               ClientOptions client_options, ChannelFactory dial, std::string address)
    : Client(std::make_shared<Routing>(address, std::move(channel), std::move(dial)), address,
             std::move(token), std::move(client_options)) {}

Client::Client(std::shared_ptr<Routing> routing, std::string home, std::string token,
               ClientOptions client_options)
    : routing_(std::move(routing)),
      home_(std::move(home)),
      token_(std::move(token)),
      options_(std::move(client_options)),
      reachability_(options_.on_unreachable, options_.on_reachable) {}

std::unique_ptr<Client> Client::WithOptions(ClientOptions client_options) const {
  return std::unique_ptr<Client>(new Client(routing_, home_, token_, std::move(client_options)));
}

std::unique_ptr<Client> Client::At(const std::string& address) const {
  return std::unique_ptr<Client>(new Client(routing_, address, token_, options_));
}

std::string Client::Resolve(const Route& route) {
  if (!route.queue.empty()) return routing_->map.QueueAddress(route.queue).value_or(home_);
  const uint32_t node = NodeOfTask(route.task_id);
  if (node == 0) return home_;  // a single master's id
  if (auto address = routing_->map.NodeAddress(node)) return *address;
  // First call by a clustered id: learn the nodes (once; again after a
  // redirect showed the map is out of date).
  if (!routing_->map.loaded()) GetCluster().IgnoreError();
  return routing_->map.NodeAddress(node).value_or(home_);
}

void Client::Learn(const Route& route, const std::string& address) {
  if (!route.queue.empty()) {
    routing_->map.SetQueueAddress(route.queue, address);
  } else if (route.task_id != 0) {
    routing_->map.SetNodeAddress(NodeOfTask(route.task_id), address);
    routing_->map.MarkStale();
  }
}

void Client::Forget(const Route& route) {
  if (!route.queue.empty()) {
    routing_->map.ForgetQueue(route.queue);
  } else if (route.task_id != 0) {
    routing_->map.ForgetNode(NodeOfTask(route.task_id));
  }
}

absl::Status Client::Attempt(const Rpc& rpc, const Route& route, absl::Time deadline,
                             CallCanceller* canceller, std::string* address) {
  *address = Resolve(route);
  for (int hop = 0;; ++hop) {
    const ChannelPool::Entry& target = routing_->pool.At(*address);
    absl::Status status;
    {
      grpc::ClientContext context;
      PrepareContext(&context, token_,
                     deadline == absl::InfiniteFuture()
                         ? absl::InfiniteDuration()
                         : std::max(deadline - absl::Now(), absl::Milliseconds(1)));
      if (canceller != nullptr && !canceller->Register(&context)) {
        return absl::CancelledError("call cancelled");
      }
      status = ToAbslStatus(rpc(target.stub.get(), &context));
      if (canceller != nullptr) canceller->Unregister(&context);
    }
    std::optional<v1::QueueOwner> owner = QueueOwnerOf(status);
    if (!owner.has_value()) {
      // A remembered master out of reach: ask the given one next time
      // (the queue may have moved, or its owner be down).
      if (!status.ok() && !MasterAnswered(status) && *address != home_) Forget(route);
      return status;
    }
    // Owner down (UNAVAILABLE naming it), or too many hops: the caller's.
    if (!absl::IsFailedPrecondition(status) || owner->down() || owner->address().empty() ||
        hop >= kMaxRedirects) {
      return status;
    }
    Learn(route, owner->address());
    *address = owner->address();
  }
}

absl::Status Client::Call(const Rpc& rpc, const Route& route, absl::Duration deadline_in,
                          CallCanceller* canceller, Retry retry) {
  const absl::Time deadline =
      deadline_in == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + deadline_in;
  if (!options_.retry) retry = Retry::kNever;
  for (int attempt = 1;; ++attempt) {
    std::string address;
    absl::Status status = Attempt(rpc, route, deadline, canceller, &address);
    // (A master shutting down did nothing: the call goes to the master that
    // comes back, or fails once the deadline passes.)
    if (status.ok() || MasterAnswered(status)) {
      reachability_.Reachable();
      return status;
    }
    // A master answered that the owner is down: retrying here would only
    // hide that (a person or a supervisor must bring it back). A queue
    // being moved is another matter: the master did nothing, and once the
    // move ends the call is redirected to the new owner.
    const std::optional<v1::QueueOwner> owner = QueueOwnerOf(status);
    const bool moving = owner.has_value() && owner->moving() && retry != Retry::kNever;
    if (owner.has_value() && !moving) return status;
    // CANCELLED that this side did not ask for: the master ended the call
    // as it stopped. Whether it was carried out is unknown, so only an
    // idempotent call is sent again.
    const bool cut = absl::IsCancelled(status) &&
                     (canceller == nullptr || !canceller->cancelled()) && retry == Retry::kAlways;
    if (!moving && !cut && !ShouldRetry(retry, status)) return status;
    grpc::Channel& channel = *routing_->pool.At(address).channel;
    if (MasterShuttingDown(status) && !WaitForMasterToGo(channel, deadline, canceller)) {
      return absl::CancelledError("call cancelled");
    }
    const absl::Duration pause = RetryBackoff(attempt);
    if (absl::Now() + pause >= deadline) return status;
    if (!moving) reachability_.Unreachable(status);
    if (!PauseBeforeRetry(channel, pause, canceller)) {
      return absl::CancelledError("call cancelled");
    }
  }
}

bool Client::WaitForMasterToGo(grpc::Channel& channel, absl::Time deadline,
                               CallCanceller* canceller) {
  // The connection to the stopping master stays up until it has finished
  // its shutdown; a call sent on it meanwhile is refused too (or cut). Wait
  // until it closes, so the next attempt connects to the master that comes
  // back. Bounded: a master that says it stops but does not is asked again.
  const absl::Time until = std::min(deadline, absl::Now() + absl::Seconds(10));
  for (;;) {
    if (canceller != nullptr && canceller->cancelled()) return false;
    const grpc_connectivity_state state = channel.GetState(/*try_to_connect=*/false);
    if (state != GRPC_CHANNEL_READY) return true;
    const absl::Time now = absl::Now();
    if (now >= until) return true;
    channel.WaitForStateChange(state,
                               absl::ToChronoTime(std::min(until, now + absl::Milliseconds(100))));
  }
}

bool Client::PauseBeforeRetry(grpc::Channel& channel, absl::Duration pause,
                              CallCanceller* canceller) {
  // Not a plain sleep: gRPC makes no progress on a connection nobody waits
  // for, so after a long cut the first attempt would find it still
  // connecting (seconds of TCP and TLS retries). Waiting for it to connect
  // reconnects now, and ends the pause as soon as the master is there. In
  // slices, so that a Cancel() is seen.
  const absl::Time until = absl::Now() + pause;
  for (;;) {
    if (canceller != nullptr && canceller->cancelled()) return false;
    const absl::Time now = absl::Now();
    if (now >= until) return true;
    if (channel.WaitForConnected(absl::ToChronoTime(std::min(until, now + absl::Milliseconds(100))))) {
      return true;
    }
  }
}

absl::StatusOr<v1::GetClusterResponse> Client::GetCluster() {
  v1::GetClusterRequest request;
  v1::GetClusterResponse response;
  auto status = Call(
      [&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) {
        return stub->GetCluster(c, request, &response);
      },
      Route{}, options_.call_timeout, nullptr, Retry::kAlways);
  // A master from before clusters: a single master.
  if (absl::IsUnimplemented(status)) {
    response.Clear();
    status = absl::OkStatus();
  }
  if (!status.ok()) return status;
  routing_->map.Load(response);
  return response;
}

absl::Duration Client::WaitingDeadline(bool nowait, absl::Duration timeout) const {
  if (nowait) return options_.call_timeout;
  if (timeout == absl::InfiniteDuration()) return timeout;
  return timeout + options_.wait_margin;
}

absl::StatusOr<v1::QueueConfig> Client::CreateQueue(const v1::QueueConfig& config,
                                                    bool exist_ok, const std::string& on) {
  if (auto s = ValidateName("queue", config.name()); !s.ok()) return s;
  v1::CreateQueueRequest request;
  *request.mutable_config() = config;
  request.set_exist_ok(exist_ok);
  request.set_on(on);
  v1::CreateQueueResponse response;
  // With exist_ok, creating again is harmless.
  auto status = Call([&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->CreateQueue(c, request, &response); },
                     Route{config.name()}, options_.call_timeout, nullptr,
                     exist_ok ? Retry::kAlways : Retry::kIfNotSent);
  if (!status.ok()) return status;
  return std::move(*response.mutable_config());
}

absl::StatusOr<std::vector<v1::QueueStats>> Client::ListQueues(uint32_t page_size) {
  v1::ListQueuesRequest request;
  request.set_page_size(page_size);
  std::vector<v1::QueueStats> queues;
  for (;;) {
    v1::ListQueuesResponse response;
    auto status = Call(
        [&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->ListQueues(c, request, &response); },
        Route{}, options_.call_timeout, nullptr, Retry::kAlways);
    if (!status.ok()) return status;
    for (auto& q : *response.mutable_queues()) queues.push_back(std::move(q));
    // A master from before paging sends everything and no token.
    if (response.next_page_token().empty()) return queues;
    // Tokens only move forward (names in order); anything else would loop.
    if (response.next_page_token() <= request.page_token()) {
      return absl::InternalError(absl::StrCat(
          "the master's queue list did not move forward (page token \"",
          response.next_page_token(), "\" after \"", request.page_token(), "\")"));
    }
    request.set_page_token(response.next_page_token());
  }
}

absl::StatusOr<v1::QueueStats> Client::Stats(const std::string& queue) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  v1::GetQueueStatsRequest request;
  request.set_queue(queue);
  v1::QueueStats response;
  auto status = Call([&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->GetQueueStats(c, request, &response); },
                     Route{queue}, options_.call_timeout, nullptr, Retry::kAlways);
  if (!status.ok()) return status;
  return response;
}

absl::Status Client::DeleteQueue(const std::string& queue) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  v1::DeleteQueueRequest request;
  request.set_queue(queue);
  v1::DeleteQueueResponse response;
  return Call([&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->DeleteQueue(c, request, &response); },
              Route{queue}, options_.call_timeout, nullptr);
}

absl::StatusOr<v1::MoveQueueResponse> Client::MoveQueue(const v1::MoveQueueRequest& request) {
  if (auto s = ValidateName("queue", request.queue()); !s.ok()) return s;
  v1::MoveQueueResponse response;
  // The owner answers once the move is done: the drain timeout plus time
  // to copy.
  const absl::Duration drain = absl::Milliseconds(
      request.drain_timeout_ms() == 0 ? kDefaultMoveDrainMs : request.drain_timeout_ms());
  auto status = Call([&](v1::TaskQueue::Stub* stub,
                         grpc::ClientContext* c) { return stub->MoveQueue(c, request, &response); },
                     Route{request.queue()}, drain + std::max(options_.call_timeout, absl::Minutes(5)),
                     nullptr);
  if (!status.ok()) return status;
  return response;
}

absl::Status Client::AdoptQueues(const v1::AdoptQueuesRequest& request) {
  v1::AdoptQueuesResponse response;
  return Call([&](v1::TaskQueue::Stub* stub,
                  grpc::ClientContext* c) { return stub->AdoptQueues(c, request, &response); },
              Route{}, std::max(options_.call_timeout, absl::Minutes(1)), nullptr);
}

absl::StatusOr<uint64_t> Client::PurgeQueue(const std::string& queue) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  v1::PurgeQueueRequest request;
  request.set_queue(queue);
  v1::PurgeQueueResponse response;
  auto status = Call([&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->PurgeQueue(c, request, &response); },
                     Route{queue}, options_.call_timeout, nullptr);
  if (!status.ok()) return status;
  return response.purged();
}

absl::StatusOr<v1::CreateCredentialResponse> Client::CreateCredential(
    const v1::CreateCredentialRequest& request) {
  v1::CreateCredentialResponse response;
  auto status = Call(
      [&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->CreateCredential(c, request, &response); },
      Route{}, options_.call_timeout, nullptr, Retry::kIfNotSent);
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::ListWorkersResponse> Client::ListWorkers(uint32_t limit) {
  v1::ListWorkersRequest request;
  request.set_limit(limit);
  v1::ListWorkersResponse response;
  auto status = Call(
      [&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->ListWorkers(c, request, &response); },
      Route{}, options_.call_timeout, nullptr, Retry::kAlways);
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<std::vector<v1::CredentialInfo>> Client::ListCredentials(bool include_revoked) {
  v1::ListCredentialsRequest request;
  request.set_include_revoked(include_revoked);
  v1::ListCredentialsResponse response;
  auto status = Call(
      [&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->ListCredentials(c, request, &response); },
      Route{}, options_.call_timeout, nullptr, Retry::kAlways);
  if (!status.ok()) return status;
  return std::vector<v1::CredentialInfo>(response.credentials().begin(),
                                         response.credentials().end());
}

absl::Status Client::RevokeCredential(const std::string& name) {
  v1::RevokeCredentialRequest request;
  request.set_name(name);
  v1::RevokeCredentialResponse response;
  return Call(
      [&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->RevokeCredential(c, request, &response); },
      Route{}, options_.call_timeout, nullptr, Retry::kIfNotSent);
}

absl::StatusOr<std::vector<uint64_t>> Client::Put(const std::string& queue,
                                                  std::vector<v1::TaskSpec> tasks,
                                                  const PutOptions& options) {
  auto receipt = PutWithReceipt(queue, std::move(tasks), options);
  if (!receipt.ok()) return receipt.status();
  return std::move(receipt->ids);
}

absl::StatusOr<v1::QueueConfig> Client::UpdateQueue(const std::string& queue,
                                                    const v1::QueueConfigUpdate& update) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  if (update.has_dead_letter() && !update.dead_letter().empty()) {
    if (auto s = ValidateName("dead-letter queue", update.dead_letter()); !s.ok()) return s;
  }
  v1::UpdateQueueRequest request;
  request.set_queue(queue);
  *request.mutable_update() = update;
  v1::QueueConfig response;
  auto status = Call([&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->UpdateQueue(c, request, &response); },
                     Route{queue}, options_.call_timeout, nullptr, Retry::kAlways);
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<uint64_t> Client::ShutdownQueue(const std::string& queue, bool immediate) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  v1::ShutdownQueueRequest request;
  request.set_queue(queue);
  request.set_immediate(immediate);
  v1::ShutdownQueueResponse response;
  auto status =
      Call([&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->ShutdownQueue(c, request, &response); },
           Route{queue}, options_.call_timeout, nullptr);
  if (!status.ok()) return status;
  return response.dropped();
}

absl::StatusOr<v1::Task> Client::GetTask(uint64_t task_id) {
  if (task_id == 0) return NoTaskZero();
  v1::GetTaskRequest request;
  request.set_task_id(task_id);
  v1::Task response;
  auto status = Call([&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->GetTask(c, request, &response); },
                     Route{.task_id = task_id}, options_.call_timeout, nullptr, Retry::kAlways);
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::TaskState> Client::CancelTask(uint64_t task_id) {
  if (task_id == 0) return NoTaskZero();
  v1::CancelTaskRequest request;
  request.set_task_id(task_id);
  v1::CancelTaskResponse response;
  auto status = Call([&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->CancelTask(c, request, &response); },
                     Route{.task_id = task_id}, options_.call_timeout, nullptr);
  if (!status.ok()) return status;
  return response.previous_state();
}

absl::StatusOr<std::vector<v1::Task>> Client::ListDead(const std::string& queue,
                                                       const ListDeadOptions& options) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  if (options.limit > kMaxListDead) {
    return absl::InvalidArgumentError(absl::StrCat("cannot list more than ", kMaxListDead,
                                                   " dead tasks at once (asked for ",
                                                   options.limit, "); page with after_id"));
  }
  v1::ListDeadRequest request;
  request.set_queue(queue);
  request.set_limit(options.limit);
  request.set_after_id(options.after_id);
  v1::ListDeadResponse response;
  auto status = Call([&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->ListDead(c, request, &response); },
                     Route{queue}, options_.call_timeout, nullptr, Retry::kAlways);
  if (!status.ok()) return status;
  std::vector<v1::Task> tasks;
  tasks.reserve(response.tasks_size());
  for (auto& t : *response.mutable_tasks()) tasks.push_back(std::move(t));
  return tasks;
}

absl::StatusOr<uint64_t> Client::RequeueDead(const std::string& queue, uint64_t task_id) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  v1::RequeueDeadRequest request;
  request.set_queue(queue);
  request.set_task_id(task_id);
  v1::RequeueDeadResponse response;
  auto status =
      Call([&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->RequeueDead(c, request, &response); },
           Route{queue}, options_.call_timeout, nullptr);
  if (!status.ok()) return status;
  return response.requeued();
}

absl::StatusOr<uint64_t> Client::PurgeDead(const std::string& queue) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  v1::PurgeDeadRequest request;
  request.set_queue(queue);
  v1::PurgeDeadResponse response;
  auto status = Call([&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->PurgeDead(c, request, &response); },
                     Route{queue}, options_.call_timeout, nullptr);
  if (!status.ok()) return status;
  return response.purged();
}

absl::StatusOr<PutReceipt> Client::PutWithReceipt(const std::string& queue,
                                                  std::vector<v1::TaskSpec> tasks,
                                                  const PutOptions& options) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  if (options.delay != absl::ZeroDuration() || options.not_before != absl::InfinitePast()) {
    const absl::Time now = absl::Now();
    for (v1::TaskSpec& task : tasks) {
      if (task.delay_ms() != 0 || task.not_before_unix_ms() != 0) continue;
      if (auto s = SetTaskDelay(&task, options.delay, options.not_before, now); !s.ok()) return s;
    }
  }
  PutReceipt receipt;
  receipt.ids.reserve(tasks.size());
  receipt.existing.reserve(tasks.size());
  const size_t max_count =
      options.max_batch == 0 ? kMaxTasksPerPut : std::min(options.max_batch, kMaxTasksPerPut);
  // One deadline for all requests: the caller's timeout covers the whole Put.
  const WaitPlan plan = PlanWait(options.nowait, options.timeout);
  const absl::Time deadline =
      plan.forever || plan.nowait ? absl::InfiniteFuture() : absl::Now() + plan.timeout;

  size_t next = 0;
  while (next < tasks.size()) {
    v1::PutRequest request;
    request.set_queue(queue);
    size_t bytes = 0;
    while (next < tasks.size() && static_cast<size_t>(request.tasks_size()) < max_count) {
      size_t size = tasks[next].ByteSizeLong();
      if (request.tasks_size() > 0 && bytes + size > kMaxPutRequestBytes) break;
      bytes += size;
      *request.add_tasks() = std::move(tasks[next++]);
    }
    WaitPlan this_plan = plan;
    if (!plan.nowait && !plan.forever) this_plan = PlanWait(false, deadline - absl::Now());
    request.set_nowait(this_plan.nowait);
    // Sent twice, a request whose every task has a dedup key stores its
    // tasks once (the copy finds them by key); others may be stored twice.
    const bool all_keyed = std::all_of(request.tasks().begin(), request.tasks().end(),
                                       [](const v1::TaskSpec& t) { return !t.dedup_key().empty(); });
    v1::PutResponse response;
    auto status = Call(
        [&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) {
          // A retry waits only for what is left of the caller's timeout.
          if (!this_plan.nowait && !this_plan.forever) {
            request.set_timeout_ms(TimeoutMs(std::max(deadline - absl::Now(), absl::Milliseconds(1))));
          }
          return stub->Put(c, request, &response);
        },
        Route{queue}, WaitingDeadline(this_plan.nowait, this_plan.timeout), options.canceller,
        all_keyed ? Retry::kAlways : Retry::kIfNotSent);
    if (!status.ok()) {
      if (receipt.ids.empty()) return status;
      return Annotate(status, absl::StrCat(receipt.ids.size(), " of ", tasks.size(),
                                           " tasks were put before this failure: "));
    }
    if (response.ids_size() != request.tasks_size() ||
        (response.existing_size() != 0 && response.existing_size() != response.ids_size())) {
      return absl::InternalError(absl::StrCat("master returned ", response.ids_size(), " ids and ",
                                              response.existing_size(), " existing flags for ",
                                              request.tasks_size(), " tasks"));
    }
    receipt.ids.insert(receipt.ids.end(), response.ids().begin(), response.ids().end());
    // The master sends the flags only when something was deduplicated.
    if (response.existing_size() == 0) {
      receipt.existing.resize(receipt.ids.size(), false);
    } else {
      receipt.existing.insert(receipt.existing.end(), response.existing().begin(),
                              response.existing().end());
    }
  }
  return receipt;
}

absl::StatusOr<std::vector<v1::Delivery>> Client::Get(const std::string& queue,
                                                      const GetOptions& options) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  if (options.max_tasks > kMaxTasksPerGet) {
    return absl::InvalidArgumentError(absl::StrCat("cannot get more than ", kMaxTasksPerGet,
                                                   " tasks at once (asked for ",
                                                   options.max_tasks, ")"));
  }
  if (options.acks.size() > kMaxTasksPerGet) {
    return absl::InvalidArgumentError(absl::StrCat("cannot acknowledge more than ",
                                                   kMaxTasksPerGet, " leases at once"));
  }
  const WaitPlan plan = PlanWait(options.nowait, options.timeout);
  const absl::Time wait_until = plan.nowait || plan.forever ? absl::InfiniteFuture()
                                                            : absl::Now() + plan.timeout;
  v1::GetRequest request;
  request.set_queue(queue);
  request.set_max_tasks(std::max<uint32_t>(options.max_tasks, 1));
  request.set_nowait(plan.nowait);
  request.set_mode(options.lease ? v1::GET_MODE_LEASE : v1::GET_MODE_TAKE);
  request.set_manual_task_done(options.manual_task_done);
  if (options.lease && options.lease_time > absl::ZeroDuration()) {
    request.set_lease_ms(TimeoutMs(options.lease_time));
  }
  for (const v1::LeaseRef& ack : options.acks) *request.add_acks() = ack;
  v1::GetResponse response;
  // A lease-mode Get sent twice is harmless: what the lost reply carried
  // comes again when its lease lapses. A take is not: its reply is the
  // only copy of the tasks it took.
  auto status = Call(
      [&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) {
        if (wait_until != absl::InfiniteFuture()) {
          request.set_timeout_ms(TimeoutMs(std::max(wait_until - absl::Now(), absl::Milliseconds(1))));
        }
        return stub->Get(c, request, &response);
      },
      Route{queue}, WaitingDeadline(plan.nowait, plan.timeout), options.canceller,
      options.lease ? Retry::kAlways : Retry::kIfNotSent);
  if (!status.ok()) return status;
  std::vector<v1::Delivery> deliveries;
  deliveries.reserve(response.deliveries_size());
  for (auto& d : *response.mutable_deliveries()) deliveries.push_back(std::move(d));
  return deliveries;
}

absl::Status Client::Complete(uint64_t task_id, uint64_t lease_id, const std::string& result) {
  v1::CompleteRequest request;
  request.set_task_id(task_id);
  request.set_lease_id(lease_id);
  request.set_result(result);
  v1::CompleteResponse response;
  return Call([&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->Complete(c, request, &response); },
              Route{.task_id = task_id}, options_.call_timeout, nullptr);
}

absl::StatusOr<uint32_t> Client::Ack(const std::vector<v1::LeaseRef>& leases) {
  if (leases.size() > kMaxTasksPerGet) {
    return absl::InvalidArgumentError(absl::StrCat("cannot acknowledge more than ",
                                                   kMaxTasksPerGet, " leases at once"));
  }
  if (leases.empty()) return 0;
  // One request per master (node number of the task ids), in the order
  // the nodes first appear; a single master's ids all have node 0.
  std::vector<std::pair<uint32_t, v1::AckRequest>> by_node;
  for (const v1::LeaseRef& lease : leases) {
    const uint32_t node = NodeOfTask(lease.task_id());
    auto it = std::find_if(by_node.begin(), by_node.end(),
                           [node](const auto& entry) { return entry.first == node; });
    if (it == by_node.end()) it = by_node.insert(by_node.end(), {node, v1::AckRequest()});
    *it->second.add_leases() = lease;
  }
  uint32_t acked = 0;
  for (const auto& entry : by_node) {
    // (A structured binding cannot be captured by the lambda in clang's C++20.)
    const v1::AckRequest& request = entry.second;
    v1::AckResponse response;
    auto status = Call(
        [&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) {
          return stub->Ack(c, request, &response);
        },
        Route{.task_id = request.leases(0).task_id()}, options_.call_timeout, nullptr,
        Retry::kAlways);
    if (!status.ok()) return status;
    acked += response.acked();
  }
  return acked;
}

absl::Status Client::Fail(uint64_t task_id, uint64_t lease_id, const std::string& error,
                          bool permanent) {
  v1::FailRequest request;
  request.set_task_id(task_id);
  request.set_lease_id(lease_id);
  request.set_error(error);
  request.set_permanent(permanent);
  v1::FailResponse response;
  return Call([&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->Fail(c, request, &response); },
              Route{.task_id = task_id}, options_.call_timeout, nullptr);
}

absl::Status Client::Release(uint64_t task_id, uint64_t lease_id, absl::Duration delay) {
  auto delay_ms = DelayMs(delay, "release delay");
  if (!delay_ms.ok()) return delay_ms.status();
  v1::ReleaseRequest request;
  request.set_task_id(task_id);
  request.set_lease_id(lease_id);
  request.set_delay_ms(*delay_ms);
  v1::ReleaseResponse response;
  return Call([&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->Release(c, request, &response); },
              Route{.task_id = task_id}, options_.call_timeout, nullptr);
}

absl::Status Client::TaskDone(const std::string& queue, uint32_t count) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  v1::TaskDoneRequest request;
  request.set_queue(queue);
  request.set_count(std::max<uint32_t>(count, 1));
  v1::TaskDoneResponse response;
  return Call([&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) { return stub->TaskDone(c, request, &response); },
              Route{queue}, options_.call_timeout, nullptr);
}

absl::Status Client::Join(const std::string& queue, absl::Duration timeout,
                          CallCanceller* canceller) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  v1::JoinRequest request;
  request.set_queue(queue);
  // Join has no nowait: a timeout already over becomes the shortest wait.
  const bool forever = IsForever(timeout);
  const absl::Duration wait = forever ? timeout : std::max(timeout, absl::Milliseconds(1));
  const absl::Time wait_until = forever ? absl::InfiniteFuture() : absl::Now() + wait;
  v1::JoinResponse response;
  return Call(
      [&](v1::TaskQueue::Stub* stub, grpc::ClientContext* c) {
        if (!forever) {
          request.set_timeout_ms(TimeoutMs(std::max(wait_until - absl::Now(), absl::Milliseconds(1))));
        }
        return stub->Join(c, request, &response);
      },
      Route{queue}, WaitingDeadline(false, forever ? absl::InfiniteDuration() : wait), canceller, Retry::kAlways);
}

// --- helpers ----------------------------------------------------------------

size_t PutReceipt::existing_count() const {
  return static_cast<size_t>(std::count(existing.begin(), existing.end(), true));
}

absl::Status SetTaskDelay(v1::TaskSpec* task, absl::Duration delay, absl::Time not_before,
                          absl::Time now) {
  if (delay < absl::ZeroDuration()) return absl::InvalidArgumentError("delay must not be negative");
  if (delay > absl::Milliseconds(kMaxDelayMs)) return DelayTooLong("delay", delay);
  if (not_before != absl::InfinitePast() && not_before - now > absl::Milliseconds(kMaxDelayMs)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "not-before time ", absl::FormatTime(not_before, absl::UTCTimeZone()),
        " is more than ", kMaxDelayMs / 86'400'000, " days away"));
  }
  absl::Time at = not_before;
  if (delay > absl::ZeroDuration()) {
    auto ms = DelayMs(delay, "delay");
    if (ms.ok()) {
      task->set_delay_ms(*ms);
    } else {
      // Too long for delay_ms: an absolute time instead (the later wins).
      at = std::max(at, now + delay);
    }
  }
  if (at != absl::InfinitePast() && at > absl::UnixEpoch()) {
    // Rounded up, so that "not before" is never early.
    task->set_not_before_unix_ms(absl::ToUnixMillis(absl::Ceil(at - absl::UnixEpoch(),
                                                                absl::Milliseconds(1)) +
                                                    absl::UnixEpoch()));
  }
  return absl::OkStatus();
}

std::string RandomResultQueueName() {
  absl::BitGen gen;
  return absl::StrFormat("_results.%016x", absl::Uniform<uint64_t>(gen));
}

void AddRetryDedupKeys(std::vector<v1::TaskSpec>& tasks, absl::string_view kind) {
  absl::BitGen gen;
  // At most 5 + 1 + 16 + 1 + 20 bytes with a short kind: within kMaxDedupKeyBytes.
  const std::string prefix = absl::StrFormat("%s.%016x:", kind, absl::Uniform<uint64_t>(gen));
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (tasks[i].dedup_key().empty()) tasks[i].set_dedup_key(absl::StrCat(prefix, i));
  }
}

size_t PutBatchLimit(Client& client, const std::string& queue, size_t limit) {
  size_t n = limit == 0 ? kMaxTasksPerPut : std::min(limit, kMaxTasksPerPut);
  auto stats = client.Stats(queue);
  if (stats.ok() && stats->config().maxsize() > 0) {
    n = static_cast<size_t>(std::min<uint64_t>(n, stats->config().maxsize()));
  }
  return n;
}

}  // namespace taskq
