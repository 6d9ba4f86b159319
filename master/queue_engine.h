// QueueEngine: the master's named queues of tasks, as an interface.
//
// The gRPC layer (master/service.cc) translates RPCs into these calls;
// TaskEngine (master/engine/task_engine.h) implements them, in memory only or backed
// by a durable Store (master/store.h). Calls that may wait (Put on a full queue, Get on an
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

// Who a Work stream is, as ListWorkers shows it. Implicit from the worker
// id alone, for callers that know no more (tests).
struct WorkerIdentity {
  WorkerIdentity() = default;
  WorkerIdentity(std::string id) : worker_id(std::move(id)) {}  // NOLINT(runtime/explicit)
  WorkerIdentity(const char* id) : worker_id(id) {}               // NOLINT(runtime/explicit)
  std::string worker_id;
  std::string host;        // as the worker reported it
  std::string peer;        // the connection's address
  std::string credential;  // the credential's name ("" for the master token)
};

// ListWorkers lists at most this many running tasks per worker.
inline constexpr size_t kMaxListedRunningTasks = 32;

// Names of private result queues (`taskq submit --wait`'s): they get the
// master's results_ttl unless they set an idle TTL.
inline constexpr char kResultQueuePrefix[] = "_results.";

// Master-wide defaults for queues that do not set their own, and the
// engine's own memory bounds.
struct EngineOptions {
  absl::Duration default_lease = absl::Seconds(30);
  uint32_t default_max_attempts = 3;
  // Retry backoff: attempt n waits min(backoff * 2^(n-1), backoff_max),
  // times a random factor in [0.5, 1] (jitter).
  absl::Duration default_backoff = absl::Seconds(1);
  absl::Duration default_backoff_max = absl::Seconds(60);
  // Create a queue (with defaults) on first Put, waiting Get or subscribe,
  // as the seed's QueueManager users expect; false = NOT_FOUND for unknown
  // queues. Reads (a nowait Get, Stats, Join, ListDead) never create one.
  bool auto_create_queues = true;
  // Most queues the engine holds: creating one more (CreateQueue or on
  // first use) is refused with RESOURCE_EXHAUSTED. Recovery loads every
  // stored queue, even beyond it.
  size_t max_queues = 10000;
  size_t max_payload_bytes = 1 << 20;
  // Seed of the backoff jitter; 0 = seeded from std::random_device. Tests
  // set it to get reproducible delays.
  uint64_t random_seed = 0;
  // GetTask answers for finished tasks (done, cancelled, purged) from a
  // memory of the most recent ones, without payloads; bounded by both.
  size_t finished_task_memory = 100000;
  size_t finished_task_memory_bytes = 64 << 20;
  // Memory for task records (master/memory_budget.h). With a durable
  // store: beyond it newly queued ready tasks keep only their place in
  // their queue (about 30 bytes) and are read back from the store when
  // they are handed out, and puts of delayed tasks are refused. Without a
  // store: puts beyond it are refused.
  size_t memory_budget_bytes = size_t{256} << 20;
  // With a store: the most bytes of records that cannot go cold (delayed,
  // leased, dead); puts of delayed tasks beyond it are refused. 0 = the
  // memory budget (what the master uses; tests may keep ready tasks cold
  // without starving delayed ones).
  size_t pinned_budget_bytes = 0;
  // With a store: every put is refused beyond the memory budget plus the
  // pinned budget plus this, which ready tasks whose write is not committed
  // yet (so they cannot go cold) may take.
  size_t cooling_slack_bytes = size_t{64} << 20;
  // Leases revoked by CancelTask, remembered so that the holder's next
  // heartbeat is answered CANCELLED ("stop") rather than "lease lost".
  size_t revoked_lease_memory = 10000;
  // The idle TTL of queues named "_results.*" created without one (the
  // master's --results-ttl); zero = never. Applied when the queue is
  // created (or, for one stored by an older master, when it is loaded).
  absl::Duration results_ttl = absl::Hours(24);
  // The first task id the engine assigns (ids go on from the largest
  // stored one if that is higher). Cluster mode puts the master's node
  // number in the top 16 bits (docs/CLUSTER.md); 0 = start at 1.
  uint64_t task_id_base = 0;
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
  // Lease mode: how long these leases last; zero = the queue's lease_ms.
  absl::Duration lease_time = absl::ZeroDuration();
};

// What a Put stored: ids in request order, and which of them are existing
// tasks with the same dedup key (nothing stored for those).
struct PutResult {
  std::vector<uint64_t> ids;
  std::vector<bool> existing;  // same length as ids
  bool any_existing() const {
    for (bool e : existing) {
      if (e) return true;
    }
    return false;
  }
};

using PutCallback = absl::AnyInvocable<void(absl::StatusOr<PutResult>)>;
using GetCallback = absl::AnyInvocable<void(absl::StatusOr<std::vector<v1::Delivery>>)>;
using DoneCallback = absl::AnyInvocable<void(absl::Status)>;
// Receives leased tasks for a subscription. May be called concurrently from
// several threads; the receiver serialises its own writes.
using DeliverFn = std::function<void(std::vector<v1::Delivery>)>;

// Queues on their way to another master: stored records, as the store
// holds them (proto/taskq/v1/stored.proto).
struct MovedTask {
  uint64_t id = 0;
  std::string record;   // StoredTask
  std::string payload;
};
struct MovedQueues {
  std::vector<std::string> queues;  // StoredQueue records
  std::vector<MovedTask> tasks;
};

// What a delivery costs a worker stream's outbox, for the byte bound below
// (its payload plus the rest of the message, near enough).
inline size_t DeliveryBytes(const v1::Delivery& d) { return d.task().payload().size() + 256; }
// Deliveries handed to a subscription but not yet written to its stream
// (DeliveriesWritten) are bounded by this many bytes, plus one task: a
// worker that grants credits and never reads cannot grow the master.
inline constexpr size_t kMaxUnwrittenDeliveryBytes = size_t{8} << 20;

class QueueEngine {
 public:
  virtual ~QueueEngine() = default;

  // --- admin ---------------------------------------------------------------
  // Creates a queue; with exist_ok, succeeds if one with equal settings
  // exists. Returns the stored settings (defaults filled in).
  virtual absl::StatusOr<v1::QueueConfig> CreateQueue(const v1::QueueConfig& config,
                                                      bool exist_ok) = 0;
  // One page of queues in name order (see ListQueuesRequest);
  // INVALID_ARGUMENT for a page token the engine did not give out.
  virtual absl::StatusOr<v1::ListQueuesResponse> ListQueues(
      const v1::ListQueuesRequest& request) = 0;
  virtual absl::StatusOr<v1::QueueStats> Stats(const std::string& queue) = 0;
  // The queue's owner (QueueConfig.owner: the credential that created it,
  // empty if none) without computing its stats: the master checks a
  // producer's right to its own queues by it on every call. NOT_FOUND if
  // there is no such queue.
  virtual absl::StatusOr<std::string> QueueOwner(const std::string& queue) {
    auto stats = Stats(queue);
    if (!stats.ok()) return stats.status();
    return stats->config().owner();
  }
  // Fails every call waiting on the queue with NOT_FOUND; outstanding leases
  // can no longer complete.
  virtual absl::Status DeleteQueue(const std::string& queue) = 0;
  // Drops ready and delayed tasks (each sends a CANCELLED result to its
  // reply_to), returns how many. Leased tasks stay.
  virtual absl::StatusOr<uint64_t> PurgeQueue(const std::string& queue) = 0;
  // Changes the set fields of an existing queue; returns the stored config.
  virtual absl::StatusOr<v1::QueueConfig> UpdateQueue(const std::string& queue,
                                                      const v1::QueueConfigUpdate& update) = 0;
  // Python 3.13's Queue.shutdown: puts fail from now on, gets drain, then
  // fail with OUT_OF_RANGE. `immediate` also drops every ready and delayed
  // task now; returns how many were dropped.
  virtual absl::StatusOr<uint64_t> ShutdownQueue(const std::string& queue, bool immediate) = 0;

  // --- tasks by id -----------------------------------------------------------
  // A live task (state, attempt, holder, history, ...) or a recently
  // finished one (without its payload). NOT_FOUND otherwise.
  virtual absl::StatusOr<v1::Task> GetTask(uint64_t task_id) = 0;
  // The queue a live or recently finished task belongs to (what
  // GetTask(...).queue() says, without copying the task): the master checks
  // a credential's right to touch a task by it. NOT_FOUND otherwise.
  virtual absl::StatusOr<std::string> QueueOfTask(uint64_t task_id) {
    auto task = GetTask(task_id);
    if (!task.ok()) return task.status();
    return task->queue();
  }
  // Cancels a delayed, ready, leased or dead task; returns the state it was
  // in. FAILED_PRECONDITION if it already finished, NOT_FOUND if unknown.
  virtual absl::StatusOr<v1::TaskState> CancelTask(uint64_t task_id) = 0;

  // --- dead letters ---------------------------------------------------------
  // Dead tasks held by `queue`'s dead-letter set with id > after_id, by id.
  virtual absl::StatusOr<std::vector<v1::Task>> ListDead(const std::string& queue,
                                                         uint64_t after_id, uint32_t limit) = 0;
  // Moves one dead task (task_id != 0) or all of them back to their origin
  // queue as ready, attempts reset. Returns how many moved.
  virtual absl::StatusOr<uint64_t> RequeueDead(const std::string& queue, uint64_t task_id) = 0;
  // Drops every task in `queue`'s dead-letter set; returns how many.
  virtual absl::StatusOr<uint64_t> PurgeDead(const std::string& queue) = 0;

  // --- producers / consumers -----------------------------------------------
  virtual WaitId Put(PutArgs args, PutCallback done) = 0;
  virtual WaitId Get(GetArgs args, GetCallback done) = 0;
  // Ends a waiting Put/Get/Join early: its callback runs with CANCELLED.
  // No effect if it already finished.
  virtual void CancelWait(WaitId id) = 0;

  // Acknowledges a lease and puts one result on the task's reply_to queue,
  // atomically. FAILED_PRECONDITION if the lease is no longer current.
  virtual absl::Status Complete(uint64_t task_id, uint64_t lease_id, std::string result) = 0;
  // Complete with an empty result, but the task stays unfinished (Join
  // waits) until TaskDone counts it, as a take with manual_task_done: a
  // consumer that leases, then acknowledges (AckRequest.manual_task_done).
  virtual absl::Status CompleteAwaitingTaskDone(uint64_t task_id, uint64_t lease_id) = 0;
  // Reports a failed attempt: retried until max attempts, or given up at
  // once if permanent; a given-up task puts a FAILED result on reply_to.
  virtual absl::Status Fail(uint64_t task_id, uint64_t lease_id, std::string error,
                            bool permanent) = 0;
  // Gives a lease back without counting a failure (nack): the task is ready
  // again after `delay` (at once: in its old place), and its next delivery
  // carries the same attempt number.
  virtual absl::Status Release(uint64_t task_id, uint64_t lease_id, absl::Duration delay) = 0;
  // Pushes a lease's deadline out by the queue's lease time and returns the
  // new deadline. FAILED_PRECONDITION if the lease is no longer current;
  // CANCELLED if it was revoked because its task was cancelled (the holder
  // should stop running it).
  virtual absl::StatusOr<absl::Time> ExtendLease(uint64_t lease_id) = 0;
  virtual absl::Status TaskDone(const std::string& queue, uint32_t count) = 0;
  virtual WaitId Join(const std::string& queue, absl::Time deadline, DoneCallback done) = 0;

  // --- workers ---------------------------------------------------------------
  // Registers a worker stream on `queues`. Leased tasks are handed to
  // `deliver` while the subscription has credits.
  virtual absl::StatusOr<SubscriptionId> Subscribe(const std::vector<std::string>& queues,
                                                   const WorkerIdentity& who,
                                                   DeliverFn deliver) = 0;
  // Every subscription now, oldest first, each with at most
  // kMaxListedRunningTasks of its running tasks (lowest ids first). The
  // caller filters by credential and applies its limit.
  virtual std::vector<v1::WorkerInfo> ListWorkers() = 0;
  virtual absl::Status AddCredits(SubscriptionId sub, uint32_t credits) = 0;
  // The receiver wrote `bytes` (DeliveryBytes) of deliveries to the worker:
  // that much more may be handed to it.
  virtual void DeliveriesWritten(SubscriptionId sub, size_t bytes) = 0;
  // Ends a subscription: every lease it holds returns to ready at once
  // (counted as an attempt). Deliveries in flight to it may still arrive and
  // must be dropped by the receiver.
  virtual void Unsubscribe(SubscriptionId sub) = 0;

  // --- time -------------------------------------------------------------------
  // Fires every deadline (lease expiries, delayed tasks coming due, wait
  // timeouts) at or before `now`.
  // The master's timer thread calls this; tests call it with a fake clock.
  virtual void AdvanceTo(absl::Time now) = 0;
  // The earliest pending deadline (including the earliest delayed task), or
  // InfiniteFuture.
  virtual absl::Time NextDeadline() = 0;

  // Fails every waiting call with CANCELLED (master shutting down).
  virtual void Shutdown() = 0;

  // --- durability ---------------------------------------------------------------
  // Runs `done` once every change made before the call is as durable as the
  // store's fsync policy promises (at once without a store), or with the
  // store's error (RESOURCE_EXHAUSTED, UNAVAILABLE) if it could not be
  // stored. Callers reply to a state-changing call only from `done`; the
  // engine's own callbacks (Put, Get, Join) already wait for it.
  virtual void WhenDurable(DoneCallback done) = 0;

  // --- moving queues to another master (cluster mode, docs/CLUSTER.md) -----
  // A master stores a task and what it sends (results, dead letters) in one
  // local step, so a queue moves with the queues tied to it. The owner
  // fences the group (FenceQueues), lets leases end (LeasesOn), takes the
  // rest back (TakeBackLeases), exports (ExportQueues) and, once etcd names
  // the target, drops its copy (DropQueues); the target ImportQueues.
  //
  // `queue` and every queue tied to it, transitively: its dead_letter, the
  // queues its tasks (live or dead) send results to, the origin queues of
  // the dead tasks it holds, and the queues tied that way to them. Names
  // without a queue here (a reply queue not made yet) are included.
  virtual std::vector<std::string> TiedQueues(const std::string& queue) = 0;
  // While fenced, nothing of these queues is handed out and every call
  // that would change them (put, get, update, purge, shutdown, delete,
  // task done, cancel, requeue, purge dead) answers `why`; calls waiting on
  // them end with `why` now. Leases settle as usual. Unfence lifts it.
  virtual void FenceQueues(const std::vector<std::string>& queues, absl::Status why) = 0;
  virtual void UnfenceQueues(const std::vector<std::string>& queues) = 0;
  // Leases held now on tasks of these queues.
  virtual uint64_t LeasesOn(const std::vector<std::string>& queues) = 0;
  // Every lease on them goes back ready in its old place without counting
  // an attempt ("moved" in its history); its holder's report is refused.
  virtual uint64_t TakeBackLeases(const std::vector<std::string>& queues) = 0;
  // The stored records of these (fenced, lease-free) queues and of every
  // task they hold: ready (cold ones read back), delayed and dead.
  virtual absl::StatusOr<MovedQueues> ExportQueues(const std::vector<std::string>& queues) = 0;
  // Stores what ExportQueues gave (queues first, then tasks, in chunks),
  // ids kept. `replace`: drop any copy of `group` held here first.
  virtual absl::Status ImportQueues(const std::vector<std::string>& group, bool replace,
                                    const MovedQueues& records) = 0;
  // Deletes these queues and their tasks without sending any result;
  // calls waiting on them end with `why`. Returns the ids of the tasks
  // dropped.
  virtual std::vector<uint64_t> DropQueues(const std::vector<std::string>& queues,
                                           absl::Status why) = 0;
};

}  // namespace taskq
