// QueueEngine: the master's named queues of tasks, as an interface.
//
// The gRPC layer (master/service.cc) translates RPCs into these calls; the
// in-memory engine (memory_engine.h) implements them today and the durable
// store will tomorrow. Calls that may wait (Put on a full queue, Get on an
// empty one, Join) never block a thread: they take a callback, return at
// once, and the engine runs the callback exactly once, either before the
// call returns or later from whichever thread makes the condition true or
// from the timer (deadline). Callbacks run with no engine lock held, so they
// may call back into the engine.
//
// Thread-safety: every method is safe to call from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq {

// Identifies a blocked Put/Get/Join so that it can be cancelled (e.g. when
// the client goes away). 0 = the call finished at once; nothing to cancel.
using WaitId = uint64_t;
// Identifies a worker's subscription (one Work stream).
using SubscriptionId = uint64_t;

// Master-wide defaults for queues that do not set their own.
struct EngineOptions {
  absl::Duration default_lease = absl::Seconds(30);
  uint32_t default_max_attempts = 3;
  // Create a queue (with defaults) on first Put/Get/subscribe, as the seed's
  // QueueManager users expect; false = NOT_FOUND for unknown queues.
  bool auto_create_queues = true;
  size_t max_payload_bytes = 1 << 20;
};

struct PutArgs {
  std::string queue;
  std::vector<v1::TaskSpec> tasks;
  bool nowait = false;
  absl::Time deadline = absl::InfiniteFuture();  // when waiting for room ends
};

struct GetArgs {
  std::string queue;
  uint32_t max_tasks = 1;
  bool nowait = false;
  absl::Time deadline = absl::InfiniteFuture();
  bool lease = false;             // false = take-and-acknowledge
  bool manual_task_done = false;  // take mode: count done only on TaskDone
};

using PutCallback = absl::AnyInvocable<void(absl::StatusOr<std::vector<uint64_t>>)>;
using GetCallback = absl::AnyInvocable<void(absl::StatusOr<std::vector<v1::Delivery>>)>;
using DoneCallback = absl::AnyInvocable<void(absl::Status)>;
// Receives leased tasks for a subscription. May be called concurrently from
// several threads; the receiver serialises its own writes.
using DeliverFn = std::function<void(std::vector<v1::Delivery>)>;

class QueueEngine {
 public:
  virtual ~QueueEngine() = default;

  // --- admin ---------------------------------------------------------------
  // Creates a queue; with exist_ok, succeeds if one with equal settings
  // exists. Returns the stored settings (defaults filled in).
  virtual absl::StatusOr<v1::QueueConfig> CreateQueue(const v1::QueueConfig& config,
                                                      bool exist_ok) = 0;
  virtual std::vector<v1::QueueStats> ListQueues() = 0;
  virtual absl::StatusOr<v1::QueueStats> Stats(const std::string& queue) = 0;
  // Fails every call waiting on the queue with NOT_FOUND; outstanding leases
  // can no longer complete.
  virtual absl::Status DeleteQueue(const std::string& queue) = 0;
  // Drops ready tasks, returns how many.
  virtual absl::StatusOr<uint64_t> PurgeQueue(const std::string& queue) = 0;

  // --- producers / consumers -----------------------------------------------
  virtual WaitId Put(PutArgs args, PutCallback done) = 0;
  virtual WaitId Get(GetArgs args, GetCallback done) = 0;
  // Ends a waiting Put/Get/Join early: its callback runs with CANCELLED.
  // No effect if it already finished.
  virtual void CancelWait(WaitId id) = 0;

  // Acknowledges a lease and puts one result on the task's reply_to queue,
  // atomically. FAILED_PRECONDITION if the lease is no longer current.
  virtual absl::Status Complete(uint64_t task_id, uint64_t lease_id, std::string result) = 0;
  // Reports a failed attempt: retried until max attempts, or given up at
  // once if permanent; a given-up task puts a FAILED result on reply_to.
  virtual absl::Status Fail(uint64_t task_id, uint64_t lease_id, std::string error,
                            bool permanent) = 0;
  // Pushes a lease's deadline out by the queue's lease time and returns the
  // new deadline. FAILED_PRECONDITION if the lease is no longer current.
  virtual absl::StatusOr<absl::Time> ExtendLease(uint64_t lease_id) = 0;
  virtual absl::Status TaskDone(const std::string& queue, uint32_t count) = 0;
  virtual WaitId Join(const std::string& queue, absl::Time deadline, DoneCallback done) = 0;

  // --- workers ---------------------------------------------------------------
  // Registers a worker stream on `queues`. Leased tasks are handed to
  // `deliver` while the subscription has credits.
  virtual absl::StatusOr<SubscriptionId> Subscribe(const std::vector<std::string>& queues,
                                                   const std::string& worker_id,
                                                   DeliverFn deliver) = 0;
  virtual absl::Status AddCredits(SubscriptionId sub, uint32_t credits) = 0;
  // Ends a subscription: every lease it holds returns to ready at once
  // (counted as an attempt). Deliveries in flight to it may still arrive and
  // must be dropped by the receiver.
  virtual void Unsubscribe(SubscriptionId sub) = 0;

  // --- time -------------------------------------------------------------------
  // Fires every deadline (wait timeouts, lease expiries) at or before `now`.
  // The master's timer thread calls this; tests call it with a fake clock.
  virtual void AdvanceTo(absl::Time now) = 0;
  // The earliest pending deadline, or InfiniteFuture.
  virtual absl::Time NextDeadline() = 0;

  // Fails every waiting call with CANCELLED (master shutting down).
  virtual void Shutdown() = 0;
};

}  // namespace taskq
