#include "master/service.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "common/grpc_status.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/grpc_coro.h"
#include "master/engine_await.h"
#include "master/refusals.h"
#include "master/token_auth.h"
#include "master/work_stream.h"

namespace taskq {

TaskQueueService::TaskQueueService(QueueEngine* engine, rt::Scheduler* scheduler,
                                   std::string token,
                                   std::function<void(absl::string_view)> on_authenticated)
    : engine_(engine),
      scheduler_(scheduler),
      token_(std::move(token)),
      on_authenticated_(std::move(on_authenticated)) {}

grpc::Status TaskQueueService::Authenticate(grpc::CallbackServerContext* ctx) const {
  const auto& md = ctx->client_metadata();
  auto it = md.find(kAuthMetadataKey);
  if (it != md.end() &&
      BearerMatches(absl::string_view(it->second.data(), it->second.size()), token_)) {
    if (on_authenticated_) on_authenticated_(ctx->peer());
    return grpc::Status::OK;
  }
  return RefuseUnauthenticated(it != md.end(), ctx->peer());
}

template <typename Req, typename Resp>
grpc::ServerUnaryReactor* TaskQueueService::Serve(grpc::CallbackServerContext* ctx,
                                                  const grpc::ByteBuffer* in,
                                                  grpc::ByteBuffer* out,
                                                  Handler<Req, Resp> handler) {
  auto* call = new UnaryCall<Req, Resp>(ctx, out);
  if (grpc::Status auth = Authenticate(ctx); !auth.ok()) {
    call->Reply(auth);
    return call;
  }
  if (in == nullptr || !ParseRequest(*in, &call->request())) {
    Refusals().Refuse(Refusal::kMalformed, ctx->peer(),
                      absl::StrCat("not a valid ", Req::descriptor()->full_name()));
    call->Reply(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("the request is not a valid ", Req::descriptor()->full_name(),
                     " message (malformed, or a string field that is not UTF-8); see "
                     "proto/taskq/v1/taskq.proto")));
    return call;
  }
  (this->*handler)(call);
  return call;
}

template <typename Call>
void TaskQueueService::ReplyDurable(Call* call, const absl::Status& s) {
  if (!s.ok()) return call->Reply(ToGrpcStatus(s));
  // The reply waits until the change is stored as the fsync policy promises;
  // if it cannot be stored, the caller is told so instead.
  engine_->WhenDurable([call](absl::Status durable) { call->Reply(ToGrpcStatus(durable)); });
}

absl::Time TaskQueueService::WaitDeadline(grpc::CallbackServerContext* ctx, uint32_t timeout_ms) {
  absl::Time deadline = absl::InfiniteFuture();
  if (timeout_ms != 0) deadline = absl::Now() + absl::Milliseconds(timeout_ms);
  // The call's own deadline (if any) ends the wait too; OnCancel handles it,
  // this just keeps the engine's timer from outliving the call.
  auto call_deadline = ctx->deadline();
  if (call_deadline != std::chrono::system_clock::time_point::max()) {
    deadline = std::min(deadline, absl::FromChrono(call_deadline));
  }
  return deadline;
}

// The raw entry points: each authenticates, parses and hands over to its
// Handle<Method>.
#define TASKQ_SERVE_RAW(Method)                                                         \
  grpc::ServerUnaryReactor* TaskQueueService::Method(grpc::CallbackServerContext* ctx,  \
                                                     const grpc::ByteBuffer* in,        \
                                                     grpc::ByteBuffer* out) {           \
    return Serve(ctx, in, out, &TaskQueueService::Handle##Method);                      \
  }
TASKQ_SERVE_RAW(CreateQueue)
TASKQ_SERVE_RAW(ListQueues)
TASKQ_SERVE_RAW(GetQueueStats)
TASKQ_SERVE_RAW(DeleteQueue)
TASKQ_SERVE_RAW(PurgeQueue)
TASKQ_SERVE_RAW(UpdateQueue)
TASKQ_SERVE_RAW(ShutdownQueue)
TASKQ_SERVE_RAW(GetTask)
TASKQ_SERVE_RAW(CancelTask)
TASKQ_SERVE_RAW(ListDead)
TASKQ_SERVE_RAW(RequeueDead)
TASKQ_SERVE_RAW(PurgeDead)
TASKQ_SERVE_RAW(Put)
TASKQ_SERVE_RAW(Get)
TASKQ_SERVE_RAW(Complete)
TASKQ_SERVE_RAW(Ack)
TASKQ_SERVE_RAW(Fail)
TASKQ_SERVE_RAW(Release)
TASKQ_SERVE_RAW(TaskDone)
TASKQ_SERVE_RAW(Join)
#undef TASKQ_SERVE_RAW

// --- admin -----------------------------------------------------------------------

void TaskQueueService::HandleCreateQueue(
    UnaryCall<v1::CreateQueueRequest, v1::CreateQueueResponse>* call) {
  const auto& req = call->request();
  auto created = engine_->CreateQueue(req.config(), req.exist_ok());
  if (!created.ok()) return call->Reply(ToGrpcStatus(created.status()));
  *call->response().mutable_config() = *created;
  LogInfo("queue \"%s\" created", created->name());
  ReplyDurable(call, absl::OkStatus());
}

void TaskQueueService::HandleListQueues(
    UnaryCall<v1::ListQueuesRequest, v1::ListQueuesResponse>* call) {
  auto page = engine_->ListQueues(call->request());
  if (!page.ok()) return call->Reply(ToGrpcStatus(page.status()));
  call->response() = *std::move(page);
  call->Reply(grpc::Status::OK);
}

void TaskQueueService::HandleGetQueueStats(
    UnaryCall<v1::GetQueueStatsRequest, v1::QueueStats>* call) {
  auto stats = engine_->Stats(call->request().queue());
  if (!stats.ok()) return call->Reply(ToGrpcStatus(stats.status()));
  call->response() = *std::move(stats);
  call->Reply(grpc::Status::OK);
}

void TaskQueueService::HandleDeleteQueue(
    UnaryCall<v1::DeleteQueueRequest, v1::DeleteQueueResponse>* call) {
  const std::string& queue = call->request().queue();
  absl::Status s = engine_->DeleteQueue(queue);
  if (s.ok()) LogInfo("queue \"%s\" deleted", queue);
  ReplyDurable(call, s);
}

void TaskQueueService::HandlePurgeQueue(
    UnaryCall<v1::PurgeQueueRequest, v1::PurgeQueueResponse>* call) {
  auto purged = engine_->PurgeQueue(call->request().queue());
  if (!purged.ok()) return call->Reply(ToGrpcStatus(purged.status()));
  call->response().set_purged(*purged);
  ReplyDurable(call, absl::OkStatus());
}

void TaskQueueService::HandleUpdateQueue(
    UnaryCall<v1::UpdateQueueRequest, v1::QueueConfig>* call) {
  const auto& req = call->request();
  auto updated = engine_->UpdateQueue(req.queue(), req.update());
  if (!updated.ok()) return call->Reply(ToGrpcStatus(updated.status()));
  call->response() = *std::move(updated);
  ReplyDurable(call, absl::OkStatus());
}

void TaskQueueService::HandleShutdownQueue(
    UnaryCall<v1::ShutdownQueueRequest, v1::ShutdownQueueResponse>* call) {
  const auto& req = call->request();
  auto dropped = engine_->ShutdownQueue(req.queue(), req.immediate());
  if (!dropped.ok()) return call->Reply(ToGrpcStatus(dropped.status()));
  call->response().set_dropped(*dropped);
  ReplyDurable(call, absl::OkStatus());
}

// --- tasks by id and dead letters ----------------------------------------------------

void TaskQueueService::HandleGetTask(UnaryCall<v1::GetTaskRequest, v1::Task>* call) {
  auto task = engine_->GetTask(call->request().task_id());
  if (!task.ok()) return call->Reply(ToGrpcStatus(task.status()));
  call->response() = *std::move(task);
  call->Reply(grpc::Status::OK);
}

void TaskQueueService::HandleCancelTask(
    UnaryCall<v1::CancelTaskRequest, v1::CancelTaskResponse>* call) {
  auto previous = engine_->CancelTask(call->request().task_id());
  if (!previous.ok()) return call->Reply(ToGrpcStatus(previous.status()));
  call->response().set_previous_state(*previous);
  ReplyDurable(call, absl::OkStatus());
}

void TaskQueueService::HandleListDead(UnaryCall<v1::ListDeadRequest, v1::ListDeadResponse>* call) {
  const auto& req = call->request();
  auto tasks = engine_->ListDead(req.queue(), req.after_id(), req.limit());
  if (!tasks.ok()) return call->Reply(ToGrpcStatus(tasks.status()));
  for (auto& t : *tasks) *call->response().add_tasks() = std::move(t);
  call->Reply(grpc::Status::OK);
}

void TaskQueueService::HandleRequeueDead(
    UnaryCall<v1::RequeueDeadRequest, v1::RequeueDeadResponse>* call) {
  const auto& req = call->request();
  auto requeued = engine_->RequeueDead(req.queue(), req.task_id());
  if (!requeued.ok()) return call->Reply(ToGrpcStatus(requeued.status()));
  call->response().set_requeued(*requeued);
  if (*requeued > 0) LogInfo("%d dead tasks of \"%s\" requeued", *requeued, req.queue());
  ReplyDurable(call, absl::OkStatus());
}

void TaskQueueService::HandlePurgeDead(
    UnaryCall<v1::PurgeDeadRequest, v1::PurgeDeadResponse>* call) {
  auto purged = engine_->PurgeDead(call->request().queue());
  if (!purged.ok()) return call->Reply(ToGrpcStatus(purged.status()));
  call->response().set_purged(*purged);
  ReplyDurable(call, absl::OkStatus());
}

// --- producers and consumers --------------------------------------------------------

void TaskQueueService::HandlePut(UnaryCall<v1::PutRequest, v1::PutResponse>* call) {
  v1::PutRequest& req = call->request();
  PutArgs args;
  args.queue = req.queue();
  args.nowait = req.nowait();
  args.deadline = WaitDeadline(call->context(), req.timeout_ms());
  // The call owns the request: move the payloads out instead of copying.
  args.tasks.reserve(req.tasks_size());
  for (auto& t : *req.mutable_tasks()) args.tasks.push_back(std::move(t));
  rt::ServeUnaryOn(call, [this, args = std::move(args),
                          call](std::stop_token stop) mutable -> rt::Task<grpc::Status> {
    auto stored = co_await AwaitPut(*engine_, std::move(args), std::move(stop), scheduler_);
    if (stored.ok()) {
      v1::PutResponse& resp = call->response();
      resp.mutable_ids()->Add(stored->ids.begin(), stored->ids.end());
      // Only when something was deduplicated, as the contract says.
      if (stored->any_existing()) {
        resp.mutable_existing()->Add(stored->existing.begin(), stored->existing.end());
      }
    }
    co_return ToGrpcStatus(stored.status());
  });
}

void TaskQueueService::HandleGet(UnaryCall<v1::GetRequest, v1::GetResponse>* call) {
  const v1::GetRequest& req = call->request();
  // An unknown mode must not fall back to the destructive take.
  if (!v1::GetMode_IsValid(req.mode())) {
    return call->Reply(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("unknown get mode ", req.mode(), ": use GET_MODE_TAKE or GET_MODE_LEASE")));
  }
  GetArgs args;
  args.queue = req.queue();
  args.max_tasks = req.max_tasks();
  args.nowait = req.nowait();
  args.deadline = WaitDeadline(call->context(), req.timeout_ms());
  args.lease = req.mode() == v1::GET_MODE_LEASE;
  args.manual_task_done = req.manual_task_done();
  if (req.lease_ms() != 0) {
    if (req.lease_ms() < kMinLeaseMs || req.lease_ms() > kMaxLeaseMs) {
      return call->Reply(grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("lease of ", req.lease_ms(), " ms is outside ", kMinLeaseMs, " ms .. ",
                       kMaxLeaseMs / 3'600'000, " h")));
    }
    args.lease_time = absl::Milliseconds(req.lease_ms());
  }
  auto acked = SettleAcks(req.acks());
  if (!acked.ok()) return call->Reply(ToGrpcStatus(acked.status()));
  call->response().set_acked(*acked);
  rt::ServeUnaryOn(call, [this, args = std::move(args),
                          call](std::stop_token stop) mutable -> rt::Task<grpc::Status> {
    auto got = co_await AwaitGet(*engine_, std::move(args), std::move(stop), scheduler_);
    if (got.ok()) {
      for (auto& d : *got) *call->response().add_deliveries() = std::move(d);
    }
    co_return ToGrpcStatus(got.status());
  });
}

void TaskQueueService::HandleComplete(
    UnaryCall<v1::CompleteRequest, v1::CompleteResponse>* call) {
  v1::CompleteRequest& req = call->request();
  ReplyDurable(call, engine_->Complete(req.task_id(), req.lease_id(),
                                       std::move(*req.mutable_result())));
}

absl::StatusOr<uint32_t> TaskQueueService::SettleAcks(
    const google::protobuf::RepeatedPtrField<v1::LeaseRef>& acks) {
  if (acks.size() > static_cast<int>(kMaxTasksPerGet)) {
    return absl::InvalidArgumentError(absl::StrCat(acks.size(), " acks in one call; at most ",
                                                   kMaxTasksPerGet));
  }
  uint32_t settled = 0;
  for (const v1::LeaseRef& ack : acks) {
    // A lease no longer held was acknowledged before (a retried call) or
    // lapsed (its message comes again): nothing to do either way.
    if (engine_->Complete(ack.task_id(), ack.lease_id(), "").ok()) ++settled;
  }
  return settled;
}

void TaskQueueService::HandleAck(UnaryCall<v1::AckRequest, v1::AckResponse>* call) {
  auto acked = SettleAcks(call->request().leases());
  if (!acked.ok()) return call->Reply(ToGrpcStatus(acked.status()));
  call->response().set_acked(*acked);
  ReplyDurable(call, absl::OkStatus());
}

void TaskQueueService::HandleFail(UnaryCall<v1::FailRequest, v1::FailResponse>* call) {
  v1::FailRequest& req = call->request();
  ReplyDurable(call, engine_->Fail(req.task_id(), req.lease_id(),
                                   std::move(*req.mutable_error()), req.permanent()));
}

void TaskQueueService::HandleRelease(UnaryCall<v1::ReleaseRequest, v1::ReleaseResponse>* call) {
  const auto& req = call->request();
  ReplyDurable(call, engine_->Release(req.task_id(), req.lease_id(),
                                      absl::Milliseconds(req.delay_ms())));
}

void TaskQueueService::HandleTaskDone(
    UnaryCall<v1::TaskDoneRequest, v1::TaskDoneResponse>* call) {
  const auto& req = call->request();
  ReplyDurable(call, engine_->TaskDone(req.queue(), req.count()));
}

void TaskQueueService::HandleJoin(UnaryCall<v1::JoinRequest, v1::JoinResponse>* call) {
  const auto& req = call->request();
  rt::ServeUnaryOn(call, [this, queue = req.queue(),
                          deadline = WaitDeadline(call->context(), req.timeout_ms())](
                             std::stop_token stop) -> rt::Task<grpc::Status> {
    co_return ToGrpcStatus(
        co_await AwaitJoin(*engine_, queue, deadline, std::move(stop), scheduler_));
  });
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* TaskQueueService::Work(
    grpc::CallbackServerContext* ctx) {
  return new WorkStream(engine_, ctx, Authenticate(ctx));
}

}  // namespace taskq
