// TaskQueueService: the taskq.v1.TaskQueue gRPC service on the callback API.
// Each RPC checks the bearer token, validates, and hands the work to the
// QueueEngine; waiting calls (Put on a full queue, Get on an empty one,
// Join) are coroutines (common/grpc_coro.h) suspended on an engine wait
// (engine_await.h) and resumed on the master's scheduler, so no thread is
// held while they wait; a client that goes away cancels the wait. Every other RPC (admin,
// task lookup and cancel, dead letters, settling leases) is non-blocking:
// it calls the engine and finishes at once. The Work stream lives in
// work_stream.h.
//
// Thread-safety: gRPC calls the handlers from its own threads; the service
// keeps no mutable state of its own besides the engine (thread-safe).
#pragma once

#include <string>

#include <grpcpp/grpcpp.h>

#include "common/runtime/scheduler.h"
#include "master/queue_engine.h"
#include "taskq/v1/taskq.grpc.pb.h"

namespace taskq {

class TaskQueueService final : public v1::TaskQueue::CallbackService {
 public:
  // Waiting calls resume on `scheduler`.
  TaskQueueService(QueueEngine* engine, rt::Scheduler* scheduler, std::string token);

  grpc::ServerUnaryReactor* CreateQueue(grpc::CallbackServerContext* ctx,
                                        const v1::CreateQueueRequest* req,
                                        v1::CreateQueueResponse* resp) override;
  grpc::ServerUnaryReactor* ListQueues(grpc::CallbackServerContext* ctx,
                                       const v1::ListQueuesRequest* req,
                                       v1::ListQueuesResponse* resp) override;
  grpc::ServerUnaryReactor* GetQueueStats(grpc::CallbackServerContext* ctx,
                                          const v1::GetQueueStatsRequest* req,
                                          v1::QueueStats* resp) override;
  grpc::ServerUnaryReactor* DeleteQueue(grpc::CallbackServerContext* ctx,
                                        const v1::DeleteQueueRequest* req,
                                        v1::DeleteQueueResponse* resp) override;
  grpc::ServerUnaryReactor* PurgeQueue(grpc::CallbackServerContext* ctx,
                                       const v1::PurgeQueueRequest* req,
                                       v1::PurgeQueueResponse* resp) override;
  grpc::ServerUnaryReactor* UpdateQueue(grpc::CallbackServerContext* ctx,
                                        const v1::UpdateQueueRequest* req,
                                        v1::QueueConfig* resp) override;
  grpc::ServerUnaryReactor* ShutdownQueue(grpc::CallbackServerContext* ctx,
                                          const v1::ShutdownQueueRequest* req,
                                          v1::ShutdownQueueResponse* resp) override;
  grpc::ServerUnaryReactor* GetTask(grpc::CallbackServerContext* ctx,
                                    const v1::GetTaskRequest* req, v1::Task* resp) override;
  grpc::ServerUnaryReactor* CancelTask(grpc::CallbackServerContext* ctx,
                                       const v1::CancelTaskRequest* req,
                                       v1::CancelTaskResponse* resp) override;
  grpc::ServerUnaryReactor* ListDead(grpc::CallbackServerContext* ctx,
                                     const v1::ListDeadRequest* req,
                                     v1::ListDeadResponse* resp) override;
  grpc::ServerUnaryReactor* RequeueDead(grpc::CallbackServerContext* ctx,
                                        const v1::RequeueDeadRequest* req,
                                        v1::RequeueDeadResponse* resp) override;
  grpc::ServerUnaryReactor* PurgeDead(grpc::CallbackServerContext* ctx,
                                      const v1::PurgeDeadRequest* req,
                                      v1::PurgeDeadResponse* resp) override;
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const v1::PutRequest* req,
                                v1::PutResponse* resp) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const v1::GetRequest* req,
                                v1::GetResponse* resp) override;
  grpc::ServerUnaryReactor* Complete(grpc::CallbackServerContext* ctx,
                                     const v1::CompleteRequest* req,
                                     v1::CompleteResponse* resp) override;
  grpc::ServerUnaryReactor* Fail(grpc::CallbackServerContext* ctx, const v1::FailRequest* req,
                                 v1::FailResponse* resp) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* ctx,
                                    const v1::ReleaseRequest* req,
                                    v1::ReleaseResponse* resp) override;
  grpc::ServerUnaryReactor* TaskDone(grpc::CallbackServerContext* ctx,
                                     const v1::TaskDoneRequest* req,
                                     v1::TaskDoneResponse* resp) override;
  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* ctx, const v1::JoinRequest* req,
                                 v1::JoinResponse* resp) override;
  grpc::ServerBidiReactor<v1::WorkRequest, v1::WorkResponse>* Work(
      grpc::CallbackServerContext* ctx) override;

 private:
  // OK, or UNAUTHENTICATED (logged with the peer address, never the token).
  grpc::Status Authenticate(grpc::CallbackServerContext* ctx) const;
  // Deadline for a waiting call: the request's timeout, capped by the
  // call's own gRPC deadline.
  static absl::Time WaitDeadline(grpc::CallbackServerContext* ctx, uint32_t timeout_ms);
  // Finishes a call that changed state: an error at once, OK only once the
  // change is durable (QueueEngine::WhenDurable).
  grpc::ServerUnaryReactor* FinishDurable(grpc::CallbackServerContext* ctx, const absl::Status& s);

  QueueEngine* const engine_;
  rt::Scheduler* const scheduler_;
  const std::string token_;
};

}  // namespace taskq
