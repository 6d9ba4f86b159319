// TaskQueueService: the taskq.v1.TaskQueue gRPC service on the callback API.
// Each RPC finds its caller's credential (named by the auth processor,
// master/token_auth.h, or from the bearer token under --insecure), checks
// the role table (master/roles.h) for the RPC and every queue it touches,
// validates, and hands the work to the QueueEngine; refusals and admin
// actions go to the audit log (master/audit_log.h); waiting calls (Put on a full queue, Get on an empty one,
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

#include <functional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "common/runtime/scheduler.h"
#include "master/audit_log.h"
#include "master/cluster/move_watch.h"
#include "master/cluster/queue_mover.h"
#include "master/cluster/router.h"
#include "master/credentials.h"
#include "master/queue_engine.h"
#include "master/revocations.h"
#include "master/roles.h"
#include "master/rpc_metrics.h"
#include "master/unary_call.h"
#include "taskq/v1/taskq.grpc.pb.h"

namespace taskq {

// Every method on the raw (ByteBuffer) callback API: the service parses
// requests itself, after the token check (master/unary_call.h).
using RawTaskQueueService =
    v1::TaskQueue::WithRawCallbackMethod_CreateCredential<
    v1::TaskQueue::WithRawCallbackMethod_ListCredentials<
    v1::TaskQueue::WithRawCallbackMethod_RevokeCredential<
    v1::TaskQueue::WithRawCallbackMethod_CreateQueue<
    v1::TaskQueue::WithRawCallbackMethod_ListQueues<
    v1::TaskQueue::WithRawCallbackMethod_GetQueueStats<
    v1::TaskQueue::WithRawCallbackMethod_DeleteQueue<
    v1::TaskQueue::WithRawCallbackMethod_PurgeQueue<
    v1::TaskQueue::WithRawCallbackMethod_UpdateQueue<
    v1::TaskQueue::WithRawCallbackMethod_ShutdownQueue<
    v1::TaskQueue::WithRawCallbackMethod_ListWorkers<
    v1::TaskQueue::WithRawCallbackMethod_GetTask<
    v1::TaskQueue::WithRawCallbackMethod_CancelTask<
    v1::TaskQueue::WithRawCallbackMethod_ListDead<
    v1::TaskQueue::WithRawCallbackMethod_RequeueDead<
    v1::TaskQueue::WithRawCallbackMethod_PurgeDead<
    v1::TaskQueue::WithRawCallbackMethod_Put<
    v1::TaskQueue::WithRawCallbackMethod_Get<
    v1::TaskQueue::WithRawCallbackMethod_Complete<
    v1::TaskQueue::WithRawCallbackMethod_Ack<
    v1::TaskQueue::WithRawCallbackMethod_Fail<
    v1::TaskQueue::WithRawCallbackMethod_Release<
    v1::TaskQueue::WithRawCallbackMethod_TaskDone<
    v1::TaskQueue::WithRawCallbackMethod_Join<
    v1::TaskQueue::WithRawCallbackMethod_Work<
    v1::TaskQueue::WithRawCallbackMethod_GetCluster<
    v1::TaskQueue::WithRawCallbackMethod_MoveQueue<
    v1::TaskQueue::WithRawCallbackMethod_AdoptQueues<
    v1::TaskQueue::Service>>>>>>>>>>>>>>>>>>>>>>>>>>>>;

// Who may call, and what the credential RPCs need to know.
struct ServiceSecurity {
  CredentialTable* credentials = nullptr;  // required; outlives the service
  AuditLog* audit = nullptr;               // may be null
  // <data-dir>/tls: ca.pem and ca.key sign client certificates; ca.pem and
  // the hosts file go into CreateCredentialResponse (for join bundles).
  std::string tls_dir;
  // The port the master listens on, and its address as bound (used for
  // join_addresses when tls/hosts names none).
  int port = 0;
  std::string bound_address;
  // Cluster mode (docs/CLUSTER.md): which master serves each queue and
  // task id; null = a single master, which serves everything.
  QueueRouter* router = nullptr;
  // Cluster mode: runs `taskq queue move` (master/cluster/queue_mover.h)
  // and ends the Work streams of moved queues. Both null without a router.
  QueueMover* mover = nullptr;
  MoveWatch* moves = nullptr;
};

class TaskQueueService final : public RawTaskQueueService {
 public:
  // Waiting calls resume on `scheduler`. `on_authenticated(peer)` is
  // called for every call whose credential checked out (the listener then
  // stops counting its connection as unauthenticated); may be empty.
  TaskQueueService(QueueEngine* engine, rt::Scheduler* scheduler, ServiceSecurity security,
                   std::function<void(absl::string_view peer)> on_authenticated = nullptr);

  grpc::ServerUnaryReactor* CreateQueue(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* ListQueues(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* GetQueueStats(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* DeleteQueue(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* PurgeQueue(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* UpdateQueue(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* ShutdownQueue(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx,
                                       const grpc::ByteBuffer* in, grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* GetCluster(grpc::CallbackServerContext* ctx,
                                      const grpc::ByteBuffer* in, grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* MoveQueue(grpc::CallbackServerContext* ctx,
                                     const grpc::ByteBuffer* in, grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* AdoptQueues(grpc::CallbackServerContext* ctx,
                                       const grpc::ByteBuffer* in, grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* GetTask(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* CancelTask(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* ListDead(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* RequeueDead(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* PurgeDead(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Complete(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Ack(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Fail(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* TaskDone(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Work(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* CreateCredential(grpc::CallbackServerContext* ctx,
                                             const grpc::ByteBuffer* in,
                                             grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* ListCredentials(grpc::CallbackServerContext* ctx,
                                            const grpc::ByteBuffer* in,
                                            grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* RevokeCredential(grpc::CallbackServerContext* ctx,
                                             const grpc::ByteBuffer* in,
                                             grpc::ByteBuffer* out) override;

 private:
  template <typename Req, typename Resp>
  using Handler = void (TaskQueueService::*)(UnaryCall<Req, Resp>*, const Principal&);
  // Authenticates, checks that the caller's role may call `rpc`, parses
  // `in` as Req, and runs `handler` (which checks the queues and replies);
  // refusals are answered here.
  template <typename Req, typename Resp>
  grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                  grpc::ByteBuffer* out, Handler<Req, Resp> handler,
                                  const char* rpc, RpcMetrics::MethodCounts* counts);

  void HandleCreateQueue(UnaryCall<v1::CreateQueueRequest, v1::CreateQueueResponse>* call,
                    const Principal& who);
  void HandleListQueues(UnaryCall<v1::ListQueuesRequest, v1::ListQueuesResponse>* call,
                    const Principal& who);
  void HandleGetQueueStats(UnaryCall<v1::GetQueueStatsRequest, v1::QueueStats>* call,
                    const Principal& who);
  void HandleDeleteQueue(UnaryCall<v1::DeleteQueueRequest, v1::DeleteQueueResponse>* call,
                    const Principal& who);
  void HandlePurgeQueue(UnaryCall<v1::PurgeQueueRequest, v1::PurgeQueueResponse>* call,
                    const Principal& who);
  void HandleUpdateQueue(UnaryCall<v1::UpdateQueueRequest, v1::QueueConfig>* call,
                    const Principal& who);
  void HandleListWorkers(UnaryCall<v1::ListWorkersRequest, v1::ListWorkersResponse>* call,
                         const Principal& who);
  void HandleGetCluster(UnaryCall<v1::GetClusterRequest, v1::GetClusterResponse>* call,
                        const Principal& who);
  void HandleMoveQueue(UnaryCall<v1::MoveQueueRequest, v1::MoveQueueResponse>* call,
                       const Principal& who);
  void HandleAdoptQueues(UnaryCall<v1::AdoptQueuesRequest, v1::AdoptQueuesResponse>* call,
                         const Principal& who);
  void HandleShutdownQueue(UnaryCall<v1::ShutdownQueueRequest, v1::ShutdownQueueResponse>* call,
                    const Principal& who);
  void HandleGetTask(UnaryCall<v1::GetTaskRequest, v1::Task>* call,
                    const Principal& who);
  void HandleCancelTask(UnaryCall<v1::CancelTaskRequest, v1::CancelTaskResponse>* call,
                    const Principal& who);
  void HandleListDead(UnaryCall<v1::ListDeadRequest, v1::ListDeadResponse>* call,
                    const Principal& who);
  void HandleRequeueDead(UnaryCall<v1::RequeueDeadRequest, v1::RequeueDeadResponse>* call,
                    const Principal& who);
  void HandlePurgeDead(UnaryCall<v1::PurgeDeadRequest, v1::PurgeDeadResponse>* call,
                    const Principal& who);
  void HandlePut(UnaryCall<v1::PutRequest, v1::PutResponse>* call,
                    const Principal& who);
  void HandleGet(UnaryCall<v1::GetRequest, v1::GetResponse>* call,
                    const Principal& who);
  void HandleComplete(UnaryCall<v1::CompleteRequest, v1::CompleteResponse>* call,
                    const Principal& who);
  void HandleAck(UnaryCall<v1::AckRequest, v1::AckResponse>* call,
                    const Principal& who);
  // Settles the leases (Ack, GetRequest.acks); returns how many were held.
  // INVALID_ARGUMENT beyond kMaxTasksPerGet leases.
  // manual_task_done: the tasks stay unfinished until TaskDone
  // (AckRequest.manual_task_done).
  absl::StatusOr<uint32_t> SettleAcks(const google::protobuf::RepeatedPtrField<v1::LeaseRef>& acks,
                                      bool manual_task_done = false);
  void HandleFail(UnaryCall<v1::FailRequest, v1::FailResponse>* call,
                    const Principal& who);
  void HandleRelease(UnaryCall<v1::ReleaseRequest, v1::ReleaseResponse>* call,
                    const Principal& who);
  void HandleTaskDone(UnaryCall<v1::TaskDoneRequest, v1::TaskDoneResponse>* call,
                    const Principal& who);
  void HandleJoin(UnaryCall<v1::JoinRequest, v1::JoinResponse>* call,
                    const Principal& who);

  void HandleCreateCredential(
      UnaryCall<v1::CreateCredentialRequest, v1::CreateCredentialResponse>* call,
      const Principal& who);
  void HandleListCredentials(
      UnaryCall<v1::ListCredentialsRequest, v1::ListCredentialsResponse>* call,
      const Principal& who);
  void HandleRevokeCredential(
      UnaryCall<v1::RevokeCredentialRequest, v1::RevokeCredentialResponse>* call,
      const Principal& who);

  // The caller's credential, or UNAUTHENTICATED (counted and rate-limited in
  // the refusal log with the peer address, never the token; audited).
  absl::StatusOr<Principal> Authenticate(grpc::CallbackServerContext* ctx) const;
  // OK if `who` may make call `rule` on `queues` (owners looked up as
  // needed); else PERMISSION_DENIED, audited.
  absl::Status CheckQueues(grpc::CallbackServerContext* ctx, const Principal& who,
                           const RpcRule& rule, const std::vector<std::string>& queues) const;
  // The same for the queues of `task_ids` (unknown tasks are left to the
  // engine, which answers NOT_FOUND or "lease lost").
  absl::Status CheckTasks(grpc::CallbackServerContext* ctx, const Principal& who,
                          const RpcRule& rule, const std::vector<uint64_t>& task_ids) const;
  std::string OwnerOf(const std::string& queue) const;
  // Cluster mode: OK if `queue` is served here, else the answer that sends
  // the caller to its owner (master/cluster/router.h). Always OK for a
  // single master.
  absl::Status Route(const std::string& queue,
                     QueueRouter::Place place = QueueRouter::Place::kNo,
                     const std::string& on = "") const {
    return router_ == nullptr ? absl::OkStatus() : router_->ForQueue(queue, place, on);
  }
  // The same for calls by task id: the first id made by another master
  // (unless it moved here with its queue).
  absl::Status RouteTask(uint64_t task_id) const;
  absl::Status RouteTasks(const std::vector<uint64_t>& task_ids) const;
  // Put: each reply_to must be on this master too (docs/CLUSTER.md).
  absl::Status RouteReplyTo(const v1::PutRequest& req) const;
  // An audit line for `who` doing `rule` on `target`.
  void Audit(grpc::CallbackServerContext* ctx, const Principal* who, const char* action,
             absl::string_view target, const absl::Status& result) const;
  // Audits an admin action (rules with an audit name).
  void AuditAction(grpc::CallbackServerContext* ctx, const Principal& who, const char* rpc,
                   absl::string_view target, const absl::Status& result) const;
  // Waiting calls end when their credential is revoked.
  template <typename Call>
  void WatchRevocation(Call* call, const Principal& who);
  // Deadline for a waiting call: the request's timeout, capped by the
  // call's own gRPC deadline.
  static absl::Time WaitDeadline(grpc::CallbackServerContext* ctx, uint32_t timeout_ms);
  // Replies to a call that changed state: an error at once, OK only once
  // the change is durable (QueueEngine::WhenDurable).
  template <typename Call>
  void ReplyDurable(Call* call, const absl::Status& s);

  QueueEngine* const engine_;
  rt::Scheduler* const scheduler_;
  const ServiceSecurity security_;
  QueueRouter* const router_;  // null: a single master
  const std::function<void(absl::string_view)> on_authenticated_;
  // Open waiting calls and Work streams by credential.
  mutable Revocations revocations_;
};

}  // namespace taskq
