#include "master/service.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/grpc_coro.h"
#include "master/engine_await.h"
#include "master/work_stream.h"

namespace taskq {

namespace {

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const grpc::Status& s) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(s);
  return reactor;
}

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const absl::Status& s) {
  return FinishNow(ctx, ToGrpcStatus(s));
}

}  // namespace

grpc::ServerUnaryReactor* TaskQueueService::FinishDurable(grpc::CallbackServerContext* ctx,
                                                          const absl::Status& s) {
  if (!s.ok()) return FinishNow(ctx, s);
  // The reply waits until the change is stored as the fsync policy promises;
  // if it cannot be stored, the caller is told so instead.
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  engine_->WhenDurable([reactor](absl::Status durable) { reactor->Finish(ToGrpcStatus(durable)); });
  return reactor;
}

TaskQueueService::TaskQueueService(QueueEngine* engine, rt::Scheduler* scheduler,
                                   std::string token)
    : engine_(engine), scheduler_(scheduler), token_(std::move(token)) {}

grpc::Status TaskQueueService::Authenticate(grpc::CallbackServerContext* ctx) const {
  const auto& md = ctx->client_metadata();
  auto it = md.find(kAuthMetadataKey);
  if (it != md.end() &&
      BearerMatches(absl::string_view(it->second.data(), it->second.size()), token_)) {
    return grpc::Status::OK;
  }
  LogWarning("refused call from %s: %s", ctx->peer(),
             it == md.end() ? "no token" : "wrong token");
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      it == md.end()
                          ? "missing token: send 'authorization: Bearer <token>' (taskq reads it "
                            "from --token-file or TASKQ_TOKEN_FILE)"
                          : "wrong token: use the master's token file (--token-file)");
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

// --- admin -----------------------------------------------------------------------

grpc::ServerUnaryReactor* TaskQueueService::CreateQueue(grpc::CallbackServerContext* ctx,
                                                        const v1::CreateQueueRequest* req,
                                                        v1::CreateQueueResponse* resp) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  auto created = engine_->CreateQueue(req->config(), req->exist_ok());
  if (!created.ok()) return FinishNow(ctx, created.status());
  *resp->mutable_config() = *created;
  LogInfo("queue \"%s\" created", created->name());
  return FinishDurable(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* TaskQueueService::ListQueues(grpc::CallbackServerContext* ctx,
                                                       const v1::ListQueuesRequest* req,
                                                       v1::ListQueuesResponse* resp) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  auto page = engine_->ListQueues(*req);
  if (!page.ok()) return FinishNow(ctx, page.status());
  *resp = *std::move(page);
  return FinishNow(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* TaskQueueService::GetQueueStats(grpc::CallbackServerContext* ctx,
                                                          const v1::GetQueueStatsRequest* req,
                                                          v1::QueueStats* resp) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  auto stats = engine_->Stats(req->queue());
  if (!stats.ok()) return FinishNow(ctx, stats.status());
  *resp = *std::move(stats);
  return FinishNow(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* TaskQueueService::DeleteQueue(grpc::CallbackServerContext* ctx,
                                                        const v1::DeleteQueueRequest* req,
                                                        v1::DeleteQueueResponse*) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  absl::Status s = engine_->DeleteQueue(req->queue());
  if (s.ok()) LogInfo("queue \"%s\" deleted", req->queue());
  return FinishDurable(ctx, s);
}

grpc::ServerUnaryReactor* TaskQueueService::PurgeQueue(grpc::CallbackServerContext* ctx,
                                                       const v1::PurgeQueueRequest* req,
                                                       v1::PurgeQueueResponse* resp) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  auto purged = engine_->PurgeQueue(req->queue());
  if (!purged.ok()) return FinishNow(ctx, purged.status());
  resp->set_purged(*purged);
  return FinishDurable(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* TaskQueueService::UpdateQueue(grpc::CallbackServerContext* ctx,
                                                        const v1::UpdateQueueRequest* req,
                                                        v1::QueueConfig* resp) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  auto updated = engine_->UpdateQueue(req->queue(), req->update());
  if (!updated.ok()) return FinishNow(ctx, updated.status());
  *resp = *std::move(updated);
  return FinishDurable(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* TaskQueueService::ShutdownQueue(grpc::CallbackServerContext* ctx,
                                                          const v1::ShutdownQueueRequest* req,
                                                          v1::ShutdownQueueResponse* resp) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  auto dropped = engine_->ShutdownQueue(req->queue(), req->immediate());
  if (!dropped.ok()) return FinishNow(ctx, dropped.status());
  resp->set_dropped(*dropped);
  return FinishDurable(ctx, absl::OkStatus());
}

// --- tasks by id and dead letters ----------------------------------------------------

grpc::ServerUnaryReactor* TaskQueueService::GetTask(grpc::CallbackServerContext* ctx,
                                                    const v1::GetTaskRequest* req,
                                                    v1::Task* resp) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  auto task = engine_->GetTask(req->task_id());
  if (!task.ok()) return FinishNow(ctx, task.status());
  *resp = *std::move(task);
  return FinishNow(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* TaskQueueService::CancelTask(grpc::CallbackServerContext* ctx,
                                                       const v1::CancelTaskRequest* req,
                                                       v1::CancelTaskResponse* resp) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  auto previous = engine_->CancelTask(req->task_id());
  if (!previous.ok()) return FinishNow(ctx, previous.status());
  resp->set_previous_state(*previous);
  return FinishDurable(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* TaskQueueService::ListDead(grpc::CallbackServerContext* ctx,
                                                     const v1::ListDeadRequest* req,
                                                     v1::ListDeadResponse* resp) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  auto tasks = engine_->ListDead(req->queue(), req->after_id(), req->limit());
  if (!tasks.ok()) return FinishNow(ctx, tasks.status());
  for (auto& t : *tasks) *resp->add_tasks() = std::move(t);
  return FinishNow(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* TaskQueueService::RequeueDead(grpc::CallbackServerContext* ctx,
                                                        const v1::RequeueDeadRequest* req,
                                                        v1::RequeueDeadResponse* resp) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  auto requeued = engine_->RequeueDead(req->queue(), req->task_id());
  if (!requeued.ok()) return FinishNow(ctx, requeued.status());
  resp->set_requeued(*requeued);
  if (*requeued > 0) LogInfo("%d dead tasks of \"%s\" requeued", *requeued, req->queue());
  return FinishDurable(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* TaskQueueService::PurgeDead(grpc::CallbackServerContext* ctx,
                                                      const v1::PurgeDeadRequest* req,
                                                      v1::PurgeDeadResponse* resp) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  auto purged = engine_->PurgeDead(req->queue());
  if (!purged.ok()) return FinishNow(ctx, purged.status());
  resp->set_purged(*purged);
  return FinishDurable(ctx, absl::OkStatus());
}

// --- producers and consumers --------------------------------------------------------

grpc::ServerUnaryReactor* TaskQueueService::Put(grpc::CallbackServerContext* ctx,
                                                const v1::PutRequest* req, v1::PutResponse* resp) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  PutArgs args;
  args.queue = req->queue();
  args.nowait = req->nowait();
  args.deadline = WaitDeadline(ctx, req->timeout_ms());
  // gRPC owns the request and does not read it again: move the payloads out
  // instead of copying them.
  auto* tasks = const_cast<v1::PutRequest*>(req)->mutable_tasks();
  args.tasks.reserve(tasks->size());
  for (auto& t : *tasks) args.tasks.push_back(std::move(t));
  return rt::ServeUnary([this, args = std::move(args),
                         resp](std::stop_token stop) mutable -> rt::Task<grpc::Status> {
    auto stored = co_await AwaitPut(*engine_, std::move(args), std::move(stop), scheduler_);
    if (stored.ok()) {
      resp->mutable_ids()->Add(stored->ids.begin(), stored->ids.end());
      // Only when something was deduplicated, as the contract says.
      if (stored->any_existing()) {
        resp->mutable_existing()->Add(stored->existing.begin(), stored->existing.end());
      }
    }
    co_return ToGrpcStatus(stored.status());
  });
}

grpc::ServerUnaryReactor* TaskQueueService::Get(grpc::CallbackServerContext* ctx,
                                                const v1::GetRequest* req, v1::GetResponse* resp) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  GetArgs args;
  args.queue = req->queue();
  args.max_tasks = req->max_tasks();
  args.nowait = req->nowait();
  args.deadline = WaitDeadline(ctx, req->timeout_ms());
  args.lease = req->mode() == v1::GET_MODE_LEASE;
  args.manual_task_done = req->manual_task_done();
  return rt::ServeUnary([this, args = std::move(args),
                         resp](std::stop_token stop) mutable -> rt::Task<grpc::Status> {
    auto got = co_await AwaitGet(*engine_, std::move(args), std::move(stop), scheduler_);
    if (got.ok()) {
      for (auto& d : *got) *resp->add_deliveries() = std::move(d);
    }
    co_return ToGrpcStatus(got.status());
  });
}

grpc::ServerUnaryReactor* TaskQueueService::Complete(grpc::CallbackServerContext* ctx,
                                                     const v1::CompleteRequest* req,
                                                     v1::CompleteResponse*) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  return FinishDurable(ctx, engine_->Complete(req->task_id(), req->lease_id(), req->result()));
}

grpc::ServerUnaryReactor* TaskQueueService::Fail(grpc::CallbackServerContext* ctx,
                                                 const v1::FailRequest* req, v1::FailResponse*) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  return FinishDurable(ctx,
                       engine_->Fail(req->task_id(), req->lease_id(), req->error(), req->permanent()));
}

grpc::ServerUnaryReactor* TaskQueueService::Release(grpc::CallbackServerContext* ctx,
                                                    const v1::ReleaseRequest* req,
                                                    v1::ReleaseResponse*) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  return FinishDurable(ctx, engine_->Release(req->task_id(), req->lease_id(),
                                              absl::Milliseconds(req->delay_ms())));
}

grpc::ServerUnaryReactor* TaskQueueService::TaskDone(grpc::CallbackServerContext* ctx,
                                                     const v1::TaskDoneRequest* req,
                                                     v1::TaskDoneResponse*) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  return FinishDurable(ctx, engine_->TaskDone(req->queue(), req->count()));
}

grpc::ServerUnaryReactor* TaskQueueService::Join(grpc::CallbackServerContext* ctx,
                                                 const v1::JoinRequest* req, v1::JoinResponse*) {
  if (auto s = Authenticate(ctx); !s.ok()) return FinishNow(ctx, s);
  return rt::ServeUnary([this, queue = req->queue(), deadline = WaitDeadline(ctx, req->timeout_ms())](
                            std::stop_token stop) -> rt::Task<grpc::Status> {
    co_return ToGrpcStatus(
        co_await AwaitJoin(*engine_, queue, deadline, std::move(stop), scheduler_));
  });
}

grpc::ServerBidiReactor<v1::WorkRequest, v1::WorkResponse>* TaskQueueService::Work(
    grpc::CallbackServerContext* ctx) {
  return new WorkStream(engine_, ctx, Authenticate(ctx));
}

}  // namespace taskq
