#include "master/service.h"

#include <algorithm>
#include <chrono>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/auth.h"
#include "common/cluster_redirect.h"
#include "common/grpc_status.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/grpc_coro.h"
#include "master/cluster/node_number.h"
#include "master/engine_await.h"
#include "master/refusals.h"
#include "master/token_auth.h"
#include "master/work_stream.h"

namespace taskq {

namespace {

template <typename Ids>
std::vector<uint64_t> TaskIds(const Ids& refs) {
  std::vector<uint64_t> ids;
  ids.reserve(refs.size());
  for (const auto& r : refs) ids.push_back(r.task_id());
  return ids;
}

}  // namespace

TaskQueueService::TaskQueueService(QueueEngine* engine, rt::Scheduler* scheduler,
                                   ServiceSecurity security,
                                   std::function<void(absl::string_view)> on_authenticated)
    : engine_(engine),
      scheduler_(scheduler),
      security_(std::move(security)),
      router_(security_.router),
      on_authenticated_(std::move(on_authenticated)) {
  security_.credentials->OnRevoked(
      [this](const std::string& name) { revocations_.Revoke(name); });
}

absl::StatusOr<Principal> TaskQueueService::Authenticate(grpc::CallbackServerContext* ctx) const {
  // The token (or the connection's verified client certificate) again: the
  // auth processor checked it at the headers but cannot tell the service
  // whose it was (token_auth.h). Looked up now, so a credential revoked
  // since is refused.
  absl::StatusOr<Principal> who =
      AuthenticateCall(*security_.credentials, ctx->client_metadata(), ctx->auth_context().get());
  if (!who.ok()) {
    Audit(ctx, nullptr, "authenticate", "", who.status());
    return who.status();
  }
  if (on_authenticated_) on_authenticated_(ctx->peer());
  return who;
}

void TaskQueueService::Audit(grpc::CallbackServerContext* ctx, const Principal* who,
                             const char* action, absl::string_view target,
                             const absl::Status& result) const {
  if (security_.audit == nullptr) return;
  security_.audit->Record({action, who ? who->name : "", who ? RoleName(who->role) : "",
                           ctx->peer(), std::string(target), result});
}

// An admin action is logged under one name whether it was done or
// refused ("queue.delete"); other refused calls under their RPC ("Put").
static const char* AuditName(const RpcRule& rule) {
  return rule.audit != nullptr ? rule.audit : rule.rpc;
}

void TaskQueueService::AuditAction(grpc::CallbackServerContext* ctx, const Principal& who,
                                   const char* rpc, absl::string_view target,
                                   const absl::Status& result) const {
  const RpcRule* rule = FindRule(rpc);
  if (rule != nullptr && rule->audit != nullptr) Audit(ctx, &who, rule->audit, target, result);
}

std::string TaskQueueService::OwnerOf(const std::string& queue) const {
  auto owner = engine_->QueueOwner(queue);
  return owner.ok() ? *std::move(owner) : std::string();
}

absl::Status TaskQueueService::CheckQueues(grpc::CallbackServerContext* ctx, const Principal& who,
                                           const RpcRule& rule,
                                           const std::vector<std::string>& queues) const {
  const Access access = rule.For(who.role);
  if (access == Access::kAny) return absl::OkStatus();
  std::vector<QueueRef> refs;
  refs.reserve(queues.size());
  for (const std::string& q : queues) {
    if (std::any_of(refs.begin(), refs.end(), [&q](const QueueRef& r) { return r.name == q; })) {
      continue;
    }
    // A pattern match needs no lookup; ownership does.
    const bool need_owner = access != Access::kInScope || !InScope(who, q, "");
    refs.push_back({q, need_owner ? OwnerOf(q) : std::string()});
  }
  absl::Status s = Authorize(who, rule, refs);
  if (!s.ok()) {
    Refusals().Refuse(Refusal::kPermissionDenied, ctx->peer(), s.message());
    Audit(ctx, &who, AuditName(rule), queues.empty() ? "" : queues.front(), s);
  }
  return s;
}

absl::Status TaskQueueService::RouteTask(uint64_t task_id) const {
  if (router_ == nullptr) return absl::OkStatus();
  absl::Status s = router_->ForTask(task_id);
  // A task another master made that moved here with its queue: served
  // here (looked up only on the redirect path).
  if (!s.ok() && NodeOfTask(task_id) != router_->node() && engine_->QueueOfTask(task_id).ok()) {
    return absl::OkStatus();
  }
  return s;
}

absl::Status TaskQueueService::RouteTasks(const std::vector<uint64_t>& task_ids) const {
  if (router_ == nullptr) return absl::OkStatus();
  for (uint64_t id : task_ids) {
    if (absl::Status s = RouteTask(id); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status TaskQueueService::RouteReplyTo(const v1::PutRequest& req) const {
  if (router_ == nullptr) return absl::OkStatus();
  const std::string* last = nullptr;  // batches mostly share one reply_to
  for (const v1::TaskSpec& t : req.tasks()) {
    if (t.reply_to().empty() || (last != nullptr && *last == t.reply_to())) continue;
    last = &t.reply_to();
    if (absl::Status s = router_->ForSameMaster(req.queue(), t.reply_to()); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status TaskQueueService::CheckTasks(grpc::CallbackServerContext* ctx, const Principal& who,
                                          const RpcRule& rule,
                                          const std::vector<uint64_t>& task_ids) const {
  if (rule.For(who.role) == Access::kAny) return absl::OkStatus();
  std::vector<std::string> queues;
  for (uint64_t id : task_ids) {
    auto queue = engine_->QueueOfTask(id);
    if (queue.ok()) queues.push_back(*std::move(queue));
  }
  return CheckQueues(ctx, who, rule, queues);
}

// Replies with `s` if it is a refusal.
template <typename Call>
bool Refused(Call* call, const absl::Status& s) {
  if (s.ok()) return false;
  call->Reply(ToGrpcStatus(s));
  return true;
}

template <typename Call>
void TaskQueueService::WatchRevocation(Call* call, const Principal& who) {
  if (who.kind == v1::CREDENTIAL_KIND_MASTER_TOKEN) return;  // cannot be revoked
  call->set_revocation(revocations_.Watch(who.name, call->stop_source()));
}

template <typename Req, typename Resp>
grpc::ServerUnaryReactor* TaskQueueService::Serve(grpc::CallbackServerContext* ctx,
                                                  const grpc::ByteBuffer* in,
                                                  grpc::ByteBuffer* out,
                                                  Handler<Req, Resp> handler, const char* rpc,
                                                  RpcMetrics::MethodCounts* counts) {
  auto* call = new UnaryCall<Req, Resp>(ctx, out, counts);
  auto who = Authenticate(ctx);
  if (!who.ok()) {
    call->Reply(ToGrpcStatus(who.status()));
    return call;
  }
  // The role's right to the RPC at all, before its message is parsed.
  const RpcRule* rule = FindRule(rpc);
  absl::Status allowed = rule ? AuthorizeCall(*who, *rule)
                              : absl::PermissionDeniedError(absl::StrCat("unknown RPC ", rpc));
  if (!allowed.ok()) {
    Refusals().Refuse(Refusal::kPermissionDenied, ctx->peer(), allowed.message());
    Audit(ctx, &*who, rule ? AuditName(*rule) : rpc, "", allowed);
    call->Reply(ToGrpcStatus(allowed));
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
  (this->*handler)(call, *who);
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
    static RpcMetrics::MethodCounts* const counts = RpcMetrics::Get().ForMethod(#Method);     \
    return Serve(ctx, in, out, &TaskQueueService::Handle##Method, #Method, counts);     \
  }
TASKQ_SERVE_RAW(CreateQueue)
TASKQ_SERVE_RAW(ListQueues)
TASKQ_SERVE_RAW(GetQueueStats)
TASKQ_SERVE_RAW(DeleteQueue)
TASKQ_SERVE_RAW(PurgeQueue)
TASKQ_SERVE_RAW(UpdateQueue)
TASKQ_SERVE_RAW(ShutdownQueue)
TASKQ_SERVE_RAW(ListWorkers)
TASKQ_SERVE_RAW(GetCluster)
TASKQ_SERVE_RAW(MoveQueue)
TASKQ_SERVE_RAW(AdoptQueues)
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
TASKQ_SERVE_RAW(CreateCredential)
TASKQ_SERVE_RAW(ListCredentials)
TASKQ_SERVE_RAW(RevokeCredential)
#undef TASKQ_SERVE_RAW

// --- admin -----------------------------------------------------------------------

void TaskQueueService::HandleCreateQueue(
    UnaryCall<v1::CreateQueueRequest, v1::CreateQueueResponse>* call, const Principal& who) {
  auto& req = call->request();
  const std::string& name = req.config().name();
  if (Refused(call, CheckQueues(call->context(), who, *FindRule("CreateQueue"), {name}))) return;
  if (Refused(call, Route(name, QueueRouter::Place::kYes, req.on()))) return;
  // Its dead letters may only go where the credential may put: else a
  // producer could fill another queue's dead-letter set.
  const std::string& dead_letter = req.config().dead_letter();
  if (who.role != v1::ROLE_ADMIN && !dead_letter.empty() && dead_letter != name &&
      !InScope(who, dead_letter, OwnerOf(dead_letter))) {
    absl::Status denied = absl::PermissionDeniedError(absl::StrCat(
        "credential \"", who.name, "\" may not send dead letters to queue \"", dead_letter,
        "\" (its queues: ", absl::StrJoin(who.queues, ", "), ")"));
    Refusals().Refuse(Refusal::kPermissionDenied, call->context()->peer(), denied.message());
    Audit(call->context(), &who, AuditName(*FindRule("CreateQueue")), name, denied);
    return call->Reply(ToGrpcStatus(denied));
  }
  // Cluster mode: dead letters stay on the queue's master.
  if (router_ != nullptr && !req.config().dead_letter().empty() &&
      req.config().dead_letter() != name &&
      Refused(call, router_->ForSameMaster(name, req.config().dead_letter(), "dead_letter"))) {
    return;
  }
  // The owner is the master's to set: a non-admin's queue is its own.
  req.mutable_config()->set_owner(who.role == v1::ROLE_ADMIN ? "" : who.name);
  auto created = engine_->CreateQueue(req.config(), req.exist_ok());
  AuditAction(call->context(), who, "CreateQueue", name, created.status());
  if (!created.ok()) return call->Reply(ToGrpcStatus(created.status()));
  *call->response().mutable_config() = *created;
  LogInfo("queue \"%s\" created by credential \"%s\"", created->name(), who.name);
  ReplyDurable(call, absl::OkStatus());
}

void TaskQueueService::HandleListQueues(
    UnaryCall<v1::ListQueuesRequest, v1::ListQueuesResponse>* call, const Principal& who) {
  auto page = engine_->ListQueues(call->request());
  if (!page.ok()) return call->Reply(ToGrpcStatus(page.status()));
  call->response() = *std::move(page);
  if (who.role != v1::ROLE_ADMIN) {
    // Only the queues in the credential's scope; the page token still
    // walks every queue.
    auto* queues = call->response().mutable_queues();
    auto out_of_scope = [&who](const v1::QueueStats& q) {
      return !InScope(who, q.config().name(), q.config().owner());
    };
    queues->erase(std::remove_if(queues->begin(), queues->end(), out_of_scope), queues->end());
  }
  call->Reply(grpc::Status::OK);
}

void TaskQueueService::HandleGetCluster(
    UnaryCall<v1::GetClusterRequest, v1::GetClusterResponse>* call, const Principal& who) {
  if (router_ == nullptr) {
    // A single master (cluster mode: docs/CLUSTER.md).
    call->response().set_clustered(false);
    return call->Reply(grpc::Status::OK);
  }
  call->response() = router_->Describe();
  if (who.role != v1::ROLE_ADMIN) {
    // Placements only of the queues in the credential's scope, as
    // ListQueues; the masters and their queue counts are for everyone.
    auto* placements = call->response().mutable_placements();
    auto out_of_scope = [&](const v1::ClusterPlacement& p) {
      return !InScope(who, p.queue(), OwnerOf(p.queue()));
    };
    placements->erase(std::remove_if(placements->begin(), placements->end(), out_of_scope),
                      placements->end());
  }
  call->Reply(grpc::Status::OK);
}

void TaskQueueService::HandleMoveQueue(
    UnaryCall<v1::MoveQueueRequest, v1::MoveQueueResponse>* call, const Principal& who) {
  const v1::MoveQueueRequest& req = call->request();
  if (Refused(call, CheckQueues(call->context(), who, *FindRule("MoveQueue"), {req.queue()}))) {
    return;
  }
  if (router_ == nullptr || security_.mover == nullptr) {
    return call->Reply(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                    "this master is not in a cluster (--cluster): there is no "
                                    "other master to move a queue to"));
  }
  if (req.to().empty()) {
    return call->Reply(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                    "move: name the master to move the queue to (to)"));
  }
  if (req.drain_timeout_ms() > kMaxMoveDrainMs) {
    return call->Reply(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                    "move: the drain timeout is at most one hour"));
  }
  if (absl::Status routed = Route(req.queue()); !routed.ok()) {
    std::optional<v1::QueueOwner> owner = QueueOwnerOf(routed);
    if (owner.has_value() && owner->moving()) {
      // Not "send again": that would wait for the move under way to end.
      routed = absl::FailedPreconditionError(absl::StrCat(
          "queue \"", req.queue(), "\" is being moved to master \"", owner->master(), "\" now"));
    }
    return call->Reply(ToGrpcStatus(routed));
  }
  if (auto exists = engine_->QueueOwner(req.queue()); !exists.ok()) {
    return call->Reply(ToGrpcStatus(exists.status()));
  }
  LogInfo("queue \"%s\": move to \"%s\" asked by credential \"%s\"", req.queue(), req.to(),
          who.name);
  security_.mover->Move(req, [this, call, who](absl::StatusOr<v1::MoveQueueResponse> done) {
    AuditAction(call->context(), who, "MoveQueue", call->request().queue(), done.status());
    if (!done.ok()) return call->Reply(ToGrpcStatus(done.status()));
    call->response() = *std::move(done);
    call->Reply(grpc::Status::OK);
  });
}

void TaskQueueService::HandleAdoptQueues(
    UnaryCall<v1::AdoptQueuesRequest, v1::AdoptQueuesResponse>* call, const Principal& who) {
  const v1::AdoptQueuesRequest& req = call->request();
  std::vector<std::string> queues(req.queues().begin(), req.queues().end());
  if (Refused(call, CheckQueues(call->context(), who, *FindRule("AdoptQueues"), queues))) return;
  if (router_ == nullptr || security_.mover == nullptr) {
    return call->Reply(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                    "this master is not in a cluster (--cluster)"));
  }
  if (queues.empty()) {
    return call->Reply(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "adopt: no queues named"));
  }
  absl::Status s = security_.mover->Adopt(req);
  if (req.commit() || req.abort()) {
    AuditAction(call->context(), who, "AdoptQueues", queues.front(), s);
  }
  ReplyDurable(call, s);
}

void TaskQueueService::HandleListWorkers(
    UnaryCall<v1::ListWorkersRequest, v1::ListWorkersResponse>* call, const Principal& who) {
  size_t limit = call->request().limit();
  if (limit == 0) limit = 1000;
  limit = std::min<size_t>(limit, 10000);
  std::vector<v1::WorkerInfo> workers = engine_->ListWorkers();
  auto& out = call->response();
  uint32_t total = 0;
  // Each queue's owner, looked up once per call (workers share queues).
  absl::flat_hash_map<std::string, bool> visible;
  auto in_scope = [&](const std::string& queue) {
    auto [it, inserted] = visible.try_emplace(queue, false);
    if (inserted) it->second = InScope(who, queue, OwnerOf(queue));
    return it->second;
  };
  for (v1::WorkerInfo& w : workers) {
    if (who.role != v1::ROLE_ADMIN) {
      // Only workers on a queue in the credential's scope, and of them only
      // those queues and their tasks.
      auto* queues = w.mutable_queues();
      queues->erase(std::remove_if(queues->begin(), queues->end(),
                                   [&](const std::string& q) { return !in_scope(q); }),
                    queues->end());
      if (queues->empty()) continue;
      auto* tasks = w.mutable_running_tasks();
      tasks->erase(std::remove_if(tasks->begin(), tasks->end(),
                                  [&](const v1::WorkerInfo::RunningTask& t) {
                                    return !in_scope(t.queue());
                                  }),
                   tasks->end());
    }
    ++total;
    if (static_cast<size_t>(out.workers_size()) < limit) *out.add_workers() = std::move(w);
  }
  out.set_total(total);
  call->Reply(grpc::Status::OK);
}

void TaskQueueService::HandleGetQueueStats(
    UnaryCall<v1::GetQueueStatsRequest, v1::QueueStats>* call, const Principal& who) {
  if (Refused(call, CheckQueues(call->context(), who, *FindRule("GetQueueStats"), {call->request().queue()}))) return;
  if (Refused(call, Route(call->request().queue()))) return;
  auto stats = engine_->Stats(call->request().queue());
  if (!stats.ok()) return call->Reply(ToGrpcStatus(stats.status()));
  call->response() = *std::move(stats);
  call->Reply(grpc::Status::OK);
}

void TaskQueueService::HandleDeleteQueue(
    UnaryCall<v1::DeleteQueueRequest, v1::DeleteQueueResponse>* call, const Principal& who) {
  if (Refused(call, CheckQueues(call->context(), who, *FindRule("DeleteQueue"), {call->request().queue()}))) return;
  if (Refused(call, Route(call->request().queue()))) return;
  const std::string& queue = call->request().queue();
  absl::Status s = engine_->DeleteQueue(queue);
  AuditAction(call->context(), who, "DeleteQueue", queue, s);
  if (s.ok()) {
    LogInfo("queue \"%s\" deleted by credential \"%s\"", queue, who.name);
    if (router_ != nullptr) router_->Forget(queue);
  }
  ReplyDurable(call, s);
}

void TaskQueueService::HandlePurgeQueue(
    UnaryCall<v1::PurgeQueueRequest, v1::PurgeQueueResponse>* call, const Principal& who) {
  if (Refused(call, CheckQueues(call->context(), who, *FindRule("PurgeQueue"), {call->request().queue()}))) return;
  if (Refused(call, Route(call->request().queue()))) return;
  auto purged = engine_->PurgeQueue(call->request().queue());
  AuditAction(call->context(), who, "PurgeQueue", call->request().queue(), purged.status());
  if (!purged.ok()) return call->Reply(ToGrpcStatus(purged.status()));
  call->response().set_purged(*purged);
  ReplyDurable(call, absl::OkStatus());
}

void TaskQueueService::HandleUpdateQueue(
    UnaryCall<v1::UpdateQueueRequest, v1::QueueConfig>* call, const Principal& who) {
  if (Refused(call, CheckQueues(call->context(), who, *FindRule("UpdateQueue"), {call->request().queue()}))) return;
  if (Refused(call, Route(call->request().queue()))) return;
  const auto& req = call->request();
  // Cluster mode: dead letters stay on the queue's master (as at create).
  if (router_ != nullptr && req.update().has_dead_letter() &&
      !req.update().dead_letter().empty() && req.update().dead_letter() != req.queue() &&
      Refused(call, router_->ForSameMaster(req.queue(), req.update().dead_letter(),
                                           "dead_letter"))) {
    return;
  }
  auto updated = engine_->UpdateQueue(req.queue(), req.update());
  AuditAction(call->context(), who, "UpdateQueue", req.queue(), updated.status());
  if (!updated.ok()) return call->Reply(ToGrpcStatus(updated.status()));
  call->response() = *std::move(updated);
  ReplyDurable(call, absl::OkStatus());
}

void TaskQueueService::HandleShutdownQueue(
    UnaryCall<v1::ShutdownQueueRequest, v1::ShutdownQueueResponse>* call, const Principal& who) {
  if (Refused(call, CheckQueues(call->context(), who, *FindRule("ShutdownQueue"), {call->request().queue()}))) return;
  if (Refused(call, Route(call->request().queue()))) return;
  const auto& req = call->request();
  auto dropped = engine_->ShutdownQueue(req.queue(), req.immediate());
  AuditAction(call->context(), who, "ShutdownQueue", req.queue(), dropped.status());
  if (!dropped.ok()) return call->Reply(ToGrpcStatus(dropped.status()));
  call->response().set_dropped(*dropped);
  ReplyDurable(call, absl::OkStatus());
}

// --- tasks by id and dead letters ----------------------------------------------------

void TaskQueueService::HandleGetTask(UnaryCall<v1::GetTaskRequest, v1::Task>* call, const Principal& who) {
  if (Refused(call, CheckTasks(call->context(), who, *FindRule("GetTask"), {call->request().task_id()}))) return;
  if (Refused(call, RouteTask(call->request().task_id()))) return;
  auto task = engine_->GetTask(call->request().task_id());
  if (!task.ok()) return call->Reply(ToGrpcStatus(task.status()));
  call->response() = *std::move(task);
  call->Reply(grpc::Status::OK);
}

void TaskQueueService::HandleCancelTask(
    UnaryCall<v1::CancelTaskRequest, v1::CancelTaskResponse>* call, const Principal& who) {
  if (Refused(call, CheckTasks(call->context(), who, *FindRule("CancelTask"), {call->request().task_id()}))) return;
  if (Refused(call, RouteTask(call->request().task_id()))) return;
  auto previous = engine_->CancelTask(call->request().task_id());
  AuditAction(call->context(), who, "CancelTask", absl::StrCat("task ", call->request().task_id()),
              previous.status());
  if (!previous.ok()) return call->Reply(ToGrpcStatus(previous.status()));
  call->response().set_previous_state(*previous);
  ReplyDurable(call, absl::OkStatus());
}

void TaskQueueService::HandleListDead(UnaryCall<v1::ListDeadRequest, v1::ListDeadResponse>* call, const Principal& who) {
  if (Refused(call, CheckQueues(call->context(), who, *FindRule("ListDead"), {call->request().queue()}))) return;
  if (Refused(call, Route(call->request().queue()))) return;
  const auto& req = call->request();
  auto tasks = engine_->ListDead(req.queue(), req.after_id(), req.limit());
  if (!tasks.ok()) return call->Reply(ToGrpcStatus(tasks.status()));
  for (auto& t : *tasks) *call->response().add_tasks() = std::move(t);
  call->Reply(grpc::Status::OK);
}

void TaskQueueService::HandleRequeueDead(
    UnaryCall<v1::RequeueDeadRequest, v1::RequeueDeadResponse>* call, const Principal& who) {
  if (Refused(call, CheckQueues(call->context(), who, *FindRule("RequeueDead"), {call->request().queue()}))) return;
  if (Refused(call, Route(call->request().queue()))) return;
  if (call->request().task_id() != 0 && Refused(call, RouteTask(call->request().task_id()))) {
    return;
  }
  const auto& req = call->request();
  auto requeued = engine_->RequeueDead(req.queue(), req.task_id());
  AuditAction(call->context(), who, "RequeueDead", req.queue(), requeued.status());
  if (!requeued.ok()) return call->Reply(ToGrpcStatus(requeued.status()));
  call->response().set_requeued(*requeued);
  if (*requeued > 0) LogInfo("%d dead tasks of \"%s\" requeued", *requeued, req.queue());
  ReplyDurable(call, absl::OkStatus());
}

void TaskQueueService::HandlePurgeDead(
    UnaryCall<v1::PurgeDeadRequest, v1::PurgeDeadResponse>* call, const Principal& who) {
  if (Refused(call, CheckQueues(call->context(), who, *FindRule("PurgeDead"), {call->request().queue()}))) return;
  if (Refused(call, Route(call->request().queue()))) return;
  auto purged = engine_->PurgeDead(call->request().queue());
  AuditAction(call->context(), who, "PurgeDead", call->request().queue(), purged.status());
  if (!purged.ok()) return call->Reply(ToGrpcStatus(purged.status()));
  call->response().set_purged(*purged);
  ReplyDurable(call, absl::OkStatus());
}

// --- producers and consumers --------------------------------------------------------

void TaskQueueService::HandlePut(UnaryCall<v1::PutRequest, v1::PutResponse>* call, const Principal& who) {
  v1::PutRequest& req = call->request();
  {
    // The queue and every reply_to: results go only where the producer may.
    std::vector<std::string> queues{req.queue()};
    for (const v1::TaskSpec& t : req.tasks()) {
      if (!t.reply_to().empty()) queues.push_back(t.reply_to());
    }
    if (Refused(call, CheckQueues(call->context(), who, *FindRule("Put"), queues))) return;
  }
  if (Refused(call, Route(req.queue(), QueueRouter::Place::kOnUse))) return;
  if (Refused(call, RouteReplyTo(req))) return;
  WatchRevocation(call, who);
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

void TaskQueueService::HandleGet(UnaryCall<v1::GetRequest, v1::GetResponse>* call, const Principal& who) {
  const v1::GetRequest& req = call->request();
  // An unknown mode must not fall back to the destructive take.
  if (!v1::GetMode_IsValid(req.mode())) {
    return call->Reply(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("unknown get mode ", req.mode(), ": use GET_MODE_TAKE or GET_MODE_LEASE")));
  }
  if (Refused(call, CheckQueues(call->context(), who, *FindRule("Get"), {req.queue()}))) return;
  if (Refused(call, CheckTasks(call->context(), who, *FindRule("Get"), TaskIds(req.acks())))) return;
  // A waiting Get creates the queue (as Put does); a nowait one only reads.
  if (Refused(call, Route(req.queue(), req.nowait() ? QueueRouter::Place::kNo
                                                    : QueueRouter::Place::kOnUse))) {
    return;
  }
  if (router_ != nullptr && Refused(call, RouteTasks(TaskIds(req.acks())))) return;
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
  WatchRevocation(call, who);
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
    UnaryCall<v1::CompleteRequest, v1::CompleteResponse>* call, const Principal& who) {
  if (Refused(call, CheckTasks(call->context(), who, *FindRule("Complete"), {call->request().task_id()}))) return;
  if (Refused(call, RouteTask(call->request().task_id()))) return;
  v1::CompleteRequest& req = call->request();
  ReplyDurable(call, engine_->Complete(req.task_id(), req.lease_id(),
                                       std::move(*req.mutable_result())));
}

absl::StatusOr<uint32_t> TaskQueueService::SettleAcks(
    const google::protobuf::RepeatedPtrField<v1::LeaseRef>& acks, bool manual_task_done) {
  if (acks.size() > static_cast<int>(kMaxTasksPerGet)) {
    return absl::InvalidArgumentError(absl::StrCat(acks.size(), " acks in one call; at most ",
                                                   kMaxTasksPerGet));
  }
  uint32_t settled = 0;
  for (const v1::LeaseRef& ack : acks) {
    // A lease no longer held was acknowledged before (a retried call) or
    // lapsed (its message comes again): nothing to do either way.
    absl::Status s = manual_task_done
                         ? engine_->CompleteAwaitingTaskDone(ack.task_id(), ack.lease_id())
                         : engine_->Complete(ack.task_id(), ack.lease_id(), "");
    if (s.ok()) ++settled;
  }
  return settled;
}

void TaskQueueService::HandleAck(UnaryCall<v1::AckRequest, v1::AckResponse>* call, const Principal& who) {
  if (Refused(call, CheckTasks(call->context(), who, *FindRule("Ack"), TaskIds(call->request().leases())))) return;
  if (router_ != nullptr && Refused(call, RouteTasks(TaskIds(call->request().leases())))) return;
  auto acked = SettleAcks(call->request().leases(), call->request().manual_task_done());
  if (!acked.ok()) return call->Reply(ToGrpcStatus(acked.status()));
  call->response().set_acked(*acked);
  ReplyDurable(call, absl::OkStatus());
}

void TaskQueueService::HandleFail(UnaryCall<v1::FailRequest, v1::FailResponse>* call, const Principal& who) {
  if (Refused(call, CheckTasks(call->context(), who, *FindRule("Fail"), {call->request().task_id()}))) return;
  if (Refused(call, RouteTask(call->request().task_id()))) return;
  v1::FailRequest& req = call->request();
  ReplyDurable(call, engine_->Fail(req.task_id(), req.lease_id(),
                                   std::move(*req.mutable_error()), req.permanent()));
}

void TaskQueueService::HandleRelease(UnaryCall<v1::ReleaseRequest, v1::ReleaseResponse>* call, const Principal& who) {
  if (Refused(call, CheckTasks(call->context(), who, *FindRule("Release"), {call->request().task_id()}))) return;
  if (Refused(call, RouteTask(call->request().task_id()))) return;
  const auto& req = call->request();
  ReplyDurable(call, engine_->Release(req.task_id(), req.lease_id(),
                                      absl::Milliseconds(req.delay_ms())));
}

void TaskQueueService::HandleTaskDone(
    UnaryCall<v1::TaskDoneRequest, v1::TaskDoneResponse>* call, const Principal& who) {
  if (Refused(call, CheckQueues(call->context(), who, *FindRule("TaskDone"), {call->request().queue()}))) return;
  if (Refused(call, Route(call->request().queue()))) return;
  const auto& req = call->request();
  ReplyDurable(call, engine_->TaskDone(req.queue(), req.count()));
}

void TaskQueueService::HandleJoin(UnaryCall<v1::JoinRequest, v1::JoinResponse>* call, const Principal& who) {
  if (Refused(call, CheckQueues(call->context(), who, *FindRule("Join"), {call->request().queue()}))) return;
  if (Refused(call, Route(call->request().queue()))) return;
  WatchRevocation(call, who);
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
  auto who = Authenticate(ctx);
  WorkStreamAuth auth;
  const RpcRule& rule = *FindRule("Work");
  if (!who.ok()) {
    auth.status = ToGrpcStatus(who.status());
  } else if (absl::Status allowed = AuthorizeCall(*who, rule); !allowed.ok()) {
    Refusals().Refuse(Refusal::kPermissionDenied, ctx->peer(), allowed.message());
    Audit(ctx, &*who, AuditName(rule), "", allowed);
    auth.status = ToGrpcStatus(allowed);
  } else {
    if (who->role != v1::ROLE_ADMIN) {
      auth.check_queues = [this, ctx, who = *who, &rule](const std::vector<std::string>& queues) {
        return CheckQueues(ctx, who, rule, queues);
      };
    }
    if (router_ != nullptr) {
      // A worker holds one stream per master, naming only its queues.
      auth.route_queues = [this](const std::vector<std::string>& queues) {
        for (const std::string& q : queues) {
          if (absl::Status s = Route(q, QueueRouter::Place::kOnUse); !s.ok()) return s;
        }
        return absl::OkStatus();
      };
    }
    auth.moves = security_.moves;
    if (who->kind != v1::CREDENTIAL_KIND_MASTER_TOKEN) {
      auth.revocations = &revocations_;
      auth.credential = who->name;
    }
  }
  return new WorkStream(engine_, ctx, std::move(auth));
}

}  // namespace taskq
