// WorkStream: the master's end of one worker's Work stream (bidi, callback
// API, raw ByteBuffers). It subscribes the worker to its queues, turns the
// worker's credits into engine credits, writes deliveries and acks
// (coalescing whatever queued up while a write was in flight into one
// message), and settles the completions, failures, releases and heartbeats
// the worker sends. Heartbeats are confirmed (WorkResponse.extended), and
// every lease in a message carries its time left as of the write, so the
// worker can stop a task before its lease may run out here. When the
// stream ends for any reason (the worker's keepalive or the master's:
// --keepalive) it unsubscribes, which returns the worker's leases to ready
// at once.
//
// It parses the worker's messages itself (a malformed one ends the stream
// with INVALID_ARGUMENT) and serializes its own, so it knows their size:
// a message carries at most kMaxStreamMessageBytes of deliveries (or one
// task, if that alone is larger), and the engine hands the stream no more
// than kMaxUnwrittenDeliveryBytes of deliveries that are not written yet
// (DeliveriesWritten), so a worker that grants credits and never reads
// holds a bounded part of the master's memory. A worker that sends reports
// but never reads the acks is bounded too: reading pauses while the outbox
// is deep.
//
// Lifetime: gRPC deletes nothing; OnDone deletes the stream. The engine may
// still hold a delivery callback after that: it reaches the stream through
// a shared `Link` that OnDone clears, and drops what arrives late (those
// leases were already returned by Unsubscribe).
//
// Credentials: the stream checks the queues the worker subscribes to and
// the queue of each task it reports on (WorkStreamAuth::check_queues; a
// report on a task outside them is acked PERMISSION_DENIED), and ends with
// UNAUTHENTICATED when its credential is revoked (its leases return to
// ready at once, as for any stream that ends).
//
// Thread-safety: gRPC serialises OnReadDone and OnWriteDone per operation
// type but runs them concurrently with engine deliveries; mu_ guards the
// outbox and stream state. The engine is never called with mu_ held (it
// may deliver to this stream from inside the call).
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/sync.h"
#include "master/queue_engine.h"
#include "master/rpc_metrics.h"
#include "master/cluster/move_watch.h"
#include "master/revocations.h"
#include "taskq/v1/taskq.grpc.pb.h"

namespace taskq {

// Who opened the stream, as the service decided.
struct WorkStreamAuth {
  // A refusal ends the stream at once with this status.
  grpc::Status status;
  // OK if the credential may work on these queues (else PERMISSION_DENIED,
  // already audited); empty = no check (an admin).
  std::function<absl::Status(const std::vector<std::string>& queues)> check_queues;
  // Cluster mode: OK if these queues are all served by this master, else
  // the redirect of the first that is not (Start is refused with it);
  // empty = a single master.
  std::function<absl::Status(const std::vector<std::string>& queues)> route_queues;
  // When set, the stream ends once `credential` is revoked.
  Revocations* revocations = nullptr;
  std::string credential;
  // Cluster mode: the stream ends with the redirect once one of its queues
  // moves to another master.
  MoveWatch* moves = nullptr;
};

class WorkStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  WorkStream(QueueEngine* engine, grpc::CallbackServerContext* ctx, WorkStreamAuth auth);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;

 private:
  // Finish, counted in taskq_rpcs_total{method="Work"} (master/rpc_metrics.h).
  void FinishCounted(const grpc::Status& status);
  struct Link {
    Mutex mu;
    WorkStream* stream ABSL_GUARDED_BY(mu) = nullptr;
  };
  // One message waiting to be written.
  struct Outgoing {
    v1::WorkResponse message;
    size_t bytes = 0;            // near enough
    size_t delivery_bytes = 0;   // DeliveryBytes of its deliveries
  };

  void Handle(v1::WorkRequest& req);
  absl::Status Start(const v1::WorkRequest::Start& start);
  void Deliver(std::vector<v1::Delivery> deliveries);
  v1::WorkResponse::Ack MakeAck(uint64_t task_id, uint64_t lease_id, const absl::Status& s);
  // Queues acks whose changes are now durable (or failed to be: `durable`).
  void SendAcks(std::vector<v1::WorkResponse::Ack> acks, const absl::Status& durable);
  // Queues confirmations of applied heartbeats.
  void SendExtended(std::vector<v1::WorkResponse::Extended> extended);
  // The message `bytes` more can be appended to (not the one being written).
  Outgoing& Tail(size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WriteNext() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts the next read unless the outbox is too deep (then OnWriteDone
  // resumes it).
  void ReadNextOrPause() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndWith(const grpc::Status& status);
  // OK if the credential may report on `task_id` (an unknown task is left
  // to the engine).
  absl::Status CheckTask(uint64_t task_id);
  void Unsubscribe();

  QueueEngine* const engine_;
  const std::string peer_;
  const std::string credential_;  // its name; "" for the master token
  const std::function<absl::Status(const std::vector<std::string>&)> check_queues_;
  const std::function<absl::Status(const std::vector<std::string>&)> route_queues_;
  std::shared_ptr<Link> link_;

  Mutex mu_;
  // Owned by the single outstanding read.
  grpc::ByteBuffer request_bytes_;
  v1::WorkRequest request_;
  // The message being written (serialized from outbox_.front()).
  grpc::ByteBuffer writing_bytes_ ABSL_GUARDED_BY(mu_);
  std::deque<Outgoing> outbox_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // outbox_.front() is in flight
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;  // a write failed: connection gone
  // Reading is paused while the outbox is deep: a worker that sends reports
  // but does not read the acks cannot grow the master's memory.
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  // Ack batches waiting for durability; the stream finishes after them.
  int acks_pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool subscribed_ ABSL_GUARDED_BY(mu_) = false;
  bool unsubscribed_ ABSL_GUARDED_BY(mu_) = false;
  SubscriptionId sub_ ABSL_GUARDED_BY(mu_) = 0;
  std::string worker_id_ ABSL_GUARDED_BY(mu_);

  // Revocation: the ticket marks the stream revoked and stops
  // revoke_stop_, whose callback ends the stream. Declared last so the
  // callback is destroyed first (its destructor waits for a running one).
  std::stop_source revoke_stop_;
  std::unique_ptr<Revocations::Ticket> revocation_;
  std::optional<std::stop_callback<std::function<void()>>> on_revoke_;
  // Moves: the same for a queue of the stream moving away (set in Start).
  MoveWatch* const moves_;
  std::stop_source move_stop_;
  std::unique_ptr<MoveWatch::Ticket> move_ticket_;
  std::optional<std::stop_callback<std::function<void()>>> on_move_;
};

}  // namespace taskq
