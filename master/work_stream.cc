#include "master/work_stream.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/limits.h"
#include "common/log.h"
#include "master/listener.h"
#include "master/refusals.h"
#include "master/unary_call.h"

namespace taskq {

namespace {
// Caps on deliveries and acks coalesced into one message (besides its
// bytes, kMaxStreamMessageBytes), so that the outbox depth measures what is
// queued.
constexpr int kMaxDeliveriesPerMessage = 512;
constexpr int kMaxAcksPerMessage = 1024;
// Reading stops above this many queued responses and resumes at or below
// kResumeReadAt.
constexpr size_t kPauseReadAbove = 32;
constexpr size_t kResumeReadAt = 8;
// The time left of each lease in `message`, as of now (it is about to be
// written): the worker measures it on its own clock from when it reads it,
// so the two clocks need not agree.
void StampLeaseTimeLeft(v1::WorkResponse* message) {
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  auto left = [now_ms](int64_t deadline_ms) { return std::max<int64_t>(1, deadline_ms - now_ms); };
  for (auto& d : *message->mutable_deliveries()) {
    if (d.lease_deadline_unix_ms() > 0) d.set_lease_ms_left(left(d.lease_deadline_unix_ms()));
  }
  for (auto& e : *message->mutable_extended()) {
    e.set_lease_ms_left(left(e.lease_deadline_unix_ms()));
  }
}

}  // namespace

WorkStream::WorkStream(QueueEngine* engine, grpc::CallbackServerContext* ctx, WorkStreamAuth auth)
    : engine_(engine),
      peer_(ctx->peer()),
      credential_(auth.credential),
      check_queues_(std::move(auth.check_queues)),
      route_queues_(std::move(auth.route_queues)),
      link_(std::make_shared<Link>()),
      moves_(auth.moves) {
  {
    MutexLock lock(&link_->mu);
    link_->stream = this;
  }
  if (!auth.status.ok()) {
    MutexLock lock(&mu_);
    finished_ = true;
    FinishCounted(auth.status);
    return;
  }
  StartRead(&request_bytes_);
  if (auth.revocations != nullptr) {
    revocation_ = auth.revocations->Watch(auth.credential, revoke_stop_);
    // Runs at once if the credential was revoked meanwhile.
    on_revoke_.emplace(revoke_stop_.get_token(),
                       std::function<void()>([this] { EndWith(revocation_->status()); }));
  }
}

absl::Status WorkStream::CheckTask(uint64_t task_id) {
  if (!check_queues_) return absl::OkStatus();
  auto queue = engine_->QueueOfTask(task_id);
  if (!queue.ok()) return absl::OkStatus();
  return check_queues_({*std::move(queue)});
}

void WorkStream::OnReadDone(bool ok) {
  if (!ok) {
    // The worker closed its side or the connection broke: its leases go back
    // now, then whatever acks are queued are flushed before finishing.
    Unsubscribe();
    MutexLock lock(&mu_);
    reads_done_ = true;
    if (!finished_ && !writing_ && acks_pending_ == 0) {
      finished_ = true;
      FinishCounted(grpc::Status::OK);
    }
    return;
  }
  request_.Clear();
  if (!ParseRequest(request_bytes_, &request_)) {
    Refusals().Refuse(Refusal::kMalformed, peer_, "not a valid taskq.v1.WorkRequest");
    return EndWith(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "a Work message is not a valid taskq.v1.WorkRequest (malformed, "
                                "or a string field that is not UTF-8)"));
  }
  request_bytes_.Clear();
  Handle(request_);
  MutexLock lock(&mu_);
  if (!finished_) ReadNextOrPause();
}

void WorkStream::ReadNextOrPause() {
  if (outbox_.size() > kPauseReadAbove) {
    if (!read_paused_) LogDebug("worker stream %s: not reading acks; pausing reads", peer_);
    read_paused_ = true;
    return;
  }
  read_paused_ = false;
  StartRead(&request_bytes_);
}

void WorkStream::Handle(v1::WorkRequest& req) {
  bool subscribed;
  {
    MutexLock lock(&mu_);
    subscribed = subscribed_;
  }
  if (!subscribed) {
    if (!req.has_start()) {
      return EndWith(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                  "the first Work message must carry `start` (queues)"));
    }
    if (absl::Status s = Start(req.start()); !s.ok()) return EndWith(ToGrpcStatus(s));
  } else if (req.has_start()) {
    return EndWith(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "`start` may only be sent once per Work stream"));
  }
  size_t reports = static_cast<size_t>(req.completions_size()) + req.failures_size() +
                   req.releases_size() + req.extend_lease_ids_size();
  if (reports > kMaxReportsPerWorkMessage) {
    return EndWith(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("a Work message carries ", reports, " reports; the limit is ",
                     kMaxReportsPerWorkMessage, ": send them in several messages")));
  }
  std::vector<v1::WorkResponse::Ack> acks;
  // A report on a task outside the credential's queues is refused alone.
  for (auto& c : *req.mutable_completions()) {
    absl::Status s = CheckTask(c.task_id());
    if (s.ok()) s = engine_->Complete(c.task_id(), c.lease_id(), std::move(*c.mutable_result()));
    acks.push_back(MakeAck(c.task_id(), c.lease_id(), s));
  }
  for (auto& f : *req.mutable_failures()) {
    absl::Status s = CheckTask(f.task_id());
    if (s.ok()) {
      s = engine_->Fail(f.task_id(), f.lease_id(), std::move(*f.mutable_error()), f.permanent());
    }
    acks.push_back(MakeAck(f.task_id(), f.lease_id(), s));
  }
  for (const auto& r : req.releases()) {
    absl::Status s = CheckTask(r.task_id());
    if (s.ok()) s = engine_->Release(r.task_id(), r.lease_id(), absl::Milliseconds(r.delay_ms()));
    acks.push_back(MakeAck(r.task_id(), r.lease_id(), s));
  }
  // A refused heartbeat is acked with task_id 0: CANCELLED = the task was
  // cancelled (stop running it), FAILED_PRECONDITION = the lease was lost.
  // An applied one is confirmed at once (a lease lives in memory only, so
  // there is nothing to wait for), with the new deadline.
  std::vector<v1::WorkResponse::Extended> extended;
  for (uint64_t lease_id : req.extend_lease_ids()) {
    auto deadline = engine_->ExtendLease(lease_id);
    if (!deadline.ok()) {
      acks.push_back(MakeAck(0, lease_id, deadline.status()));
      continue;
    }
    v1::WorkResponse::Extended& e = extended.emplace_back();
    e.set_lease_id(lease_id);
    e.set_lease_deadline_unix_ms(absl::ToUnixMillis(*deadline));
  }
  if (!extended.empty()) SendExtended(std::move(extended));
  if (!acks.empty()) {
    // An ack tells the worker its report is settled for good: it goes out
    // only once the change is durable (fsync policy), in report order.
    {
      MutexLock lock(&mu_);
      ++acks_pending_;
    }
    engine_->WhenDurable([link = link_, acks = std::move(acks)](absl::Status durable) mutable {
      MutexLock lock(&link->mu);
      if (link->stream) link->stream->SendAcks(std::move(acks), durable);
    });
  }
  if (req.credits() > 0) {
    SubscriptionId sub;
    {
      MutexLock lock(&mu_);
      sub = sub_;
    }
    if (absl::Status s = engine_->AddCredits(sub, req.credits()); !s.ok()) {
      return EndWith(ToGrpcStatus(s));
    }
  }
}

absl::Status WorkStream::Start(const v1::WorkRequest::Start& start) {
  std::vector<std::string> queues(start.queues().begin(), start.queues().end());
  if (check_queues_) {
    if (absl::Status s = check_queues_(queues); !s.ok()) return s;
  }
  if (moves_ != nullptr) {
    // Watched before the route check: a move that ends after the check
    // still ends this stream.
    move_ticket_ = moves_->Watch(queues, move_stop_);
    on_move_.emplace(move_stop_.get_token(), std::function<void()>([this] {
                       EndWith(ToGrpcStatus(move_ticket_->status()));
                     }));
  }
  if (route_queues_) {
    if (absl::Status s = route_queues_(queues); !s.ok()) return s;
  }
  WorkerIdentity who;
  who.worker_id = start.worker_id();
  who.host = start.host();
  who.peer = DisplayPeer(peer_);
  who.credential = credential_;
  auto sub = engine_->Subscribe(queues, who,
                                [link = link_](std::vector<v1::Delivery> deliveries) {
                                  MutexLock lock(&link->mu);
                                  if (link->stream) link->stream->Deliver(std::move(deliveries));
                                });
  if (!sub.ok()) return sub.status();
  std::string worker = absl::CEscape(start.worker_id());
  bool too_late;
  {
    MutexLock lock(&mu_);
    subscribed_ = true;
    sub_ = *sub;
    worker_id_ = worker;
    too_late = unsubscribed_;
  }
  if (too_late) {
    engine_->Unsubscribe(*sub);
    return absl::CancelledError("stream ended while subscribing");
  }
  // Tells the worker it was accepted before any task is ready for it.
  StartSendInitialMetadata();
  LogEvent(LogLevel::kInfo, "worker connected",
           {{"worker", worker}, {"peer", peer_}, {"queues", absl::StrJoin(queues, ",")}});
  return absl::OkStatus();
}

void WorkStream::Deliver(std::vector<v1::Delivery> deliveries) {
  MutexLock lock(&mu_);
  if (finished_ || unsubscribed_ || broken_) return;  // leases already returned
  for (auto& d : deliveries) {
    const size_t bytes = DeliveryBytes(d);
    Outgoing& out = Tail(bytes);
    *out.message.add_deliveries() = std::move(d);
    out.bytes += bytes;
    out.delivery_bytes += bytes;
  }
  if (!writing_) WriteNext();
}

v1::WorkResponse::Ack WorkStream::MakeAck(uint64_t task_id, uint64_t lease_id,
                                          const absl::Status& s) {
  if (!s.ok()) {
    LogEvent(LogLevel::kDebug, absl::StrCat("report refused: ", s.message()),
             {{"task", task_id}, {"lease", lease_id}, {"peer", peer_}});
  }
  v1::WorkResponse::Ack ack;
  ack.set_task_id(task_id);
  ack.set_lease_id(lease_id);
  ack.set_code(static_cast<int32_t>(s.code()));
  if (!s.ok()) ack.set_message(std::string(s.message()));
  return ack;
}

void WorkStream::SendAcks(std::vector<v1::WorkResponse::Ack> acks, const absl::Status& durable) {
  MutexLock lock(&mu_);
  --acks_pending_;
  if (finished_ || broken_) return;
  for (auto& ack : acks) {
    // Settled in memory but not stored: the worker must not count on it.
    if (!durable.ok() && ack.code() == 0) {
      ack.set_code(static_cast<int32_t>(durable.code()));
      ack.set_message(std::string(durable.message()));
    }
    const size_t bytes = 32 + ack.message().size();
    Outgoing& out = Tail(bytes);
    *out.message.add_acks() = std::move(ack);
    out.bytes += bytes;
  }
  if (!writing_) WriteNext();
}

void WorkStream::SendExtended(std::vector<v1::WorkResponse::Extended> extended) {
  MutexLock lock(&mu_);
  if (finished_ || broken_) return;
  for (auto& e : extended) {
    constexpr size_t kBytes = 32;
    Outgoing& out = Tail(kBytes);
    *out.message.add_extended() = std::move(e);
    out.bytes += kBytes;
  }
  if (!writing_) WriteNext();
}

WorkStream::Outgoing& WorkStream::Tail(size_t bytes) {
  const bool front_in_flight = writing_ && outbox_.size() == 1;
  if (outbox_.empty() || front_in_flight) {
    outbox_.emplace_back();
    return outbox_.back();
  }
  const Outgoing& last = outbox_.back();
  if (last.message.deliveries_size() >= kMaxDeliveriesPerMessage ||
      last.message.acks_size() >= kMaxAcksPerMessage ||
      (last.bytes > 0 && last.bytes + bytes > kMaxStreamMessageBytes)) {
    outbox_.emplace_back();
  }
  return outbox_.back();
}

void WorkStream::WriteNext() {
  writing_ = true;
  Outgoing& front = outbox_.front();
  StampLeaseTimeLeft(&front.message);
  if (grpc::Status s = SerializeResponse(front.message, &writing_bytes_); !s.ok()) {
    LogError("worker stream %s: cannot serialize a message: %s", peer_, s.error_message());
  }
  front.message.Clear();  // its payloads now live in writing_bytes_ only
  StartWrite(&writing_bytes_);
}

void WorkStream::OnWriteDone(bool ok) {
  SubscriptionId sub = 0;
  size_t written = 0;
  {
    MutexLock lock(&mu_);
    written = outbox_.front().delivery_bytes;
    sub = subscribed_ && !unsubscribed_ ? sub_ : 0;
  }
  // The engine may hand over more now (and deliver into this stream: not
  // under mu_). A failed write frees its share as well.
  if (sub != 0 && written > 0) engine_->DeliveriesWritten(sub, written);
  MutexLock lock(&mu_);
  outbox_.pop_front();
  writing_bytes_.Clear();
  writing_ = false;
  if (!ok) {
    // Broken connection: the read side fails too and finishes the stream.
    broken_ = true;
    outbox_.clear();
    if (reads_done_ && !finished_) {
      finished_ = true;
      FinishCounted(grpc::Status::OK);
    }
    return;
  }
  if (finished_) return;
  if (read_paused_ && outbox_.size() <= kResumeReadAt) ReadNextOrPause();
  if (!outbox_.empty()) {
    WriteNext();
  } else if (reads_done_ && acks_pending_ == 0) {
    finished_ = true;
    FinishCounted(grpc::Status::OK);
  }
}

void WorkStream::FinishCounted(const grpc::Status& status) {
  static RpcMetrics::MethodCounts* const counts = RpcMetrics::Get().ForMethod("Work");
  counts->Count(status.error_code());
  Finish(status);
}

void WorkStream::EndWith(const grpc::Status& status) {
  Unsubscribe();
  MutexLock lock(&mu_);
  if (finished_) return;
  finished_ = true;
  LogEvent(LogLevel::kWarning, absl::StrCat("worker stream ended: ", status.error_message()),
           {{"worker", worker_id_}, {"peer", peer_}});
  // Keep only the message being written: gRPC still reads it.
  while (outbox_.size() > (writing_ ? 1u : 0u)) outbox_.pop_back();
  FinishCounted(status);
}

void WorkStream::Unsubscribe() {
  SubscriptionId sub;
  std::string worker;
  {
    MutexLock lock(&mu_);
    if (unsubscribed_) return;
    unsubscribed_ = true;
    if (!subscribed_) return;
    sub = sub_;
    worker = worker_id_;
  }
  engine_->Unsubscribe(sub);
  LogEvent(LogLevel::kInfo, "worker disconnected; its leases returned to ready",
           {{"worker", worker}, {"peer", peer_}});
}

void WorkStream::OnDone() {
  {
    MutexLock lock(&link_->mu);
    link_->stream = nullptr;
  }
  Unsubscribe();
  delete this;
}

}  // namespace taskq
