// TaskEngine: the QueueEngine. All state lives in RAM; with a Store
// (Recover) every change is also written to it, so that a restarted master
// rebuilds the same state (task_engine_store.cc). Without one, everything
// is lost when the master exits (--store memory). One engine for both: the
// name says what it holds (tasks), not where.
//
// A task is in exactly one state: delayed (per-queue set ordered by due
// time), ready (per-queue set in hand-out order), leased (lease deadline
// tracked), or dead (in some queue's dead-letter set). Finished tasks are
// removed and remembered, without payload, in a bounded "recently finished"
// memory for GetTask. docs/QUEUES.md states the rules for users.
//
// One mutex guards all state. Work that must not run under it — callbacks
// finishing RPCs, deliveries to worker streams — is collected into a
// `Pending` list while locked and run after unlocking. State changes mark
// their queue "touched"; touched queues are settled (tasks handed out,
// putters admitted, joiners woken) once at the end of the locked step, so
// everything that becomes ready in one step is ordered before any of it is
// handed out.
//
// With a store, each locked step marks the tasks and queues it changed;
// EndStep writes them as one batch (the step is atomic on disk too: a
// completion and its result, a put of many tasks) and the step's replies
// wait for that batch to be durable (pending.h).
//
// The engine composes small parts, each with its own header (and, but for
// Pending, its own test); none locks: the engine's one mutex guards them:
//   ReadySet (ready_set.h)         a queue's ready tasks in hand-out order
//   Schedule (schedule.h)          every deadline: leases, delayed tasks,
//                                  waiting calls, idle checks
//   LeaseTable (lease_table.h)     current leases, lease ids, revoked leases
//   TaskRecord (task_record.h)     a live task and its stored form
//   FinishedTasks (finished_tasks.h)  compact memory of finished tasks
//   Journal (journal.h)            a step's changes, one store batch
//   WaitLine (wait_line.h)         a queue's blocked getters, putters, joiners
//   Pending (pending.h)            what a step leaves to do after unlocking
// Its own code: task_engine.cc (queues, put, get, hand-out, waiting calls,
// time), task_engine_states.cc (task states: leases settled, retries, dead
// letters, cancel, lookup by id), task_engine_store.cc (the durable copy:
// persisting, cold ready tasks, recovery), task_engine_idle.cc (results owed
// to each queue, queues idle past their TTL).
//
// Thread-safety: all public methods are safe from any thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "common/clock.h"
#include "common/metrics.h"
#include "common/sync.h"
#include "master/engine/finished_tasks.h"
#include "master/engine/journal.h"
#include "master/engine/lease_table.h"
#include "master/engine/ready_set.h"
#include "master/engine/schedule.h"
#include "master/engine/task_record.h"
#include "master/engine/wait_line.h"
#include "master/memory_budget.h"
#include "master/queue_engine.h"
#include "master/store.h"
#include "taskq/v1/stored.pb.h"

namespace taskq {

class TaskEngine final : public QueueEngine {
 public:
  // `on_earlier_deadline` is called (without the lock) whenever the earliest
  // pending deadline moves earlier, so a timer thread can re-arm.
  TaskEngine(EngineOptions options, Clock* clock,
               std::function<void()> on_earlier_deadline = nullptr);
  ~TaskEngine() override;

  absl::StatusOr<v1::QueueConfig> CreateQueue(const v1::QueueConfig& config,
                                              bool exist_ok) override;
  absl::StatusOr<v1::ListQueuesResponse> ListQueues(
      const v1::ListQueuesRequest& request) override;
  absl::StatusOr<v1::QueueStats> Stats(const std::string& queue) override;
  absl::Status DeleteQueue(const std::string& queue) override;
  absl::StatusOr<uint64_t> PurgeQueue(const std::string& queue) override;
  absl::StatusOr<v1::QueueConfig> UpdateQueue(const std::string& queue,
                                              const v1::QueueConfigUpdate& update) override;
  absl::StatusOr<uint64_t> ShutdownQueue(const std::string& queue, bool immediate) override;

  absl::StatusOr<v1::Task> GetTask(uint64_t task_id) override;
  absl::StatusOr<std::string> QueueOfTask(uint64_t task_id) override;
  absl::StatusOr<std::string> QueueOwner(const std::string& queue) override;
  absl::StatusOr<v1::TaskState> CancelTask(uint64_t task_id) override;

  absl::StatusOr<std::vector<v1::Task>> ListDead(const std::string& queue, uint64_t after_id,
                                                 uint32_t limit) override;
  absl::StatusOr<uint64_t> RequeueDead(const std::string& queue, uint64_t task_id) override;
  absl::StatusOr<uint64_t> PurgeDead(const std::string& queue) override;

  WaitId Put(PutArgs args, PutCallback done) override;
  WaitId Get(GetArgs args, GetCallback done) override;
  void CancelWait(WaitId id) override;

  absl::Status Complete(uint64_t task_id, uint64_t lease_id, std::string result) override;
  absl::Status CompleteAwaitingTaskDone(uint64_t task_id, uint64_t lease_id) override;
  absl::Status Fail(uint64_t task_id, uint64_t lease_id, std::string error,
                    bool permanent) override;
  absl::Status Release(uint64_t task_id, uint64_t lease_id, absl::Duration delay) override;
  absl::StatusOr<absl::Time> ExtendLease(uint64_t lease_id) override;
  absl::Status TaskDone(const std::string& queue, uint32_t count) override;
  WaitId Join(const std::string& queue, absl::Time deadline, DoneCallback done) override;

  absl::StatusOr<SubscriptionId> Subscribe(const std::vector<std::string>& queues,
                                           const WorkerIdentity& who,
                                           DeliverFn deliver) override;
  absl::Status AddCredits(SubscriptionId sub, uint32_t credits) override;
  void DeliveriesWritten(SubscriptionId sub, size_t bytes) override;
  void Unsubscribe(SubscriptionId sub) override;
  std::vector<v1::WorkerInfo> ListWorkers() override;

  void AdvanceTo(absl::Time now) override;
  absl::Time NextDeadline() override;
  void Shutdown() override;
  void WhenDurable(DoneCallback done) override;

  std::vector<std::string> TiedQueues(const std::string& queue) override;
  void FenceQueues(const std::vector<std::string>& queues, absl::Status why) override;
  void UnfenceQueues(const std::vector<std::string>& queues) override;
  uint64_t LeasesOn(const std::vector<std::string>& queues) override;
  uint64_t TakeBackLeases(const std::vector<std::string>& queues) override;
  absl::StatusOr<MovedQueues> ExportQueues(const std::vector<std::string>& queues) override;
  absl::Status ImportQueues(const std::vector<std::string>& group, bool replace,
                            const MovedQueues& records) override;
  std::vector<uint64_t> DropQueues(const std::vector<std::string>& queues,
                                   absl::Status why) override;

  // Makes `store` (which outlives the engine) the engine's durable copy:
  // rebuilds queues and tasks from it, returns tasks that were leased when
  // the master stopped to ready (the attempt counts; their old leases can
  // no longer settle), and from then on writes every change to it. Call once,
  // before any other method.
  absl::Status Recover(Store* store);
  // Called when the store is writable again after a failure: hands out
  // what waited meanwhile.
  void OnStoreHealthy();

  // Memory taken by task records and waiting puts (memory_budget.h).
  MemoryUsage Memory();

  // --- metrics (read at scrape time; docs/METRICS.md) -------------------------
  // One queue's counts and totals.
  struct QueueSample {
    std::string name;
    uint64_t ready = 0, delayed = 0, leased = 0, dead = 0;
    uint64_t puts = 0, completions = 0, failures = 0, cancellations = 0;
    uint64_t deliveries = 0, redeliveries = 0, expiries = 0;
    // Since the ready task that became ready first was put; zero when none
    // is ready.
    absl::Duration oldest_ready_age;
  };
  struct Sample {
    size_t queues = 0;                // every queue the engine holds
    std::vector<QueueSample> first;   // the first `max_queues` of them by name
    size_t workers = 0;               // Work stream subscriptions
    uint64_t worker_credits = 0;      // credits they have granted and not used
  };
  // Takes the lock once; O(max_queues + workers).
  Sample Metrics(size_t max_queues);
  // Observed without the lock (atomics): put -> completion of a task (not of
  // a result message), and how long each lease was held until it ended.
  const metrics::Histogram& task_latency() const { return task_latency_; }
  const metrics::Histogram& lease_duration() const { return lease_duration_; }

 private:
  // Work to do once the lock is released (pending.h).
  class Pending;

  using State = TaskRecord::State;

  enum class WaitKind { kPut, kGet, kJoin };
  struct Waiter {
    WaitKind kind;
    std::string queue;
    absl::Time deadline;
    PutArgs put;   // kPut
    size_t put_bytes = 0;  // kPut: what memory_ counts for it while it waits
    GetArgs get;   // kGet
    PutCallback put_done;
    GetCallback get_done;
    DoneCallback join_done;
  };

  struct Queue {
    v1::QueueConfig config;
    ReadySet ready;
    absl::btree_set<DelayKey> delayed;
    absl::flat_hash_set<uint64_t> leased;
    absl::btree_set<uint64_t> dead;  // this queue's dead-letter set, by id
    // Dedup keys of tasks put on this queue that are not finished.
    absl::flat_hash_map<std::string, uint64_t> dedup;
    bool shut_down = false;
    uint64_t awaiting_task_done = 0;  // taken with manual_task_done
    uint64_t total_put = 0;
    uint64_t total_completed = 0;
    uint64_t total_failed = 0;
    uint64_t total_cancelled = 0;
    // Metrics only: leases granted, of them retries (attempt > 1), leases
    // that ran out.
    uint64_t total_delivered = 0;
    uint64_t total_redelivered = 0;
    uint64_t total_expired = 0;
    // Blocked calls, oldest first. May hold ids of finished waiters (lazy
    // deletion); live counts are kept separately.
    WaitLine getters;
    WaitLine putters;
    WaitLine joiners;
    // This queue's tasks that still owe a result, by reply_to: its share of
    // pending_results_, subtracted whole when the queue is deleted (cold
    // tasks included, whose records are not in memory).
    absl::flat_hash_map<std::string, uint64_t> owed_by_reply_to;
    // Idle TTL: when it was last used (a get, a put, a waiting call or
    // lease ending, ...; the master's start), and when its idle check is
    // due (InfiniteFuture: none armed). Not stored.
    absl::Time last_used = absl::InfinitePast();
    absl::Time idle_check = absl::InfiniteFuture();
    // Being moved to another master (FenceQueues): what calls that would
    // change it answer; OK = not fenced. Not stored.
    absl::Status fence;
  };

  struct Subscription {
    std::vector<std::string> queues;
    WorkerIdentity who;
    absl::Time since;
    uint32_t credits = 0;
    // Bytes handed to `deliver` and not yet reported written: nothing more
    // is handed over while it is at kMaxUnwrittenDeliveryBytes.
    size_t unwritten_bytes = 0;
    DeliverFn deliver;
    absl::flat_hash_set<uint64_t> lease_ids;
  };

  // How a lease ended without completing (history's `how`).
  enum class LostHow { kFailed, kExpired, kDisconnected, kRestarted };

  // The key of q's ready task that became ready first (the smallest
  // sequence number), for the oldest-ready-age gauge; q.ready not empty.
  // PRIORITY queues: looks at the first kMaxPriorityLevelsScanned levels.
  ReadyKey LongestReady(const Queue& q) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // When q's longest-ready task was put (read back if it is cold);
  // nullopt if none is ready or it cannot be read now.
  std::optional<absl::Time> OldestReadyPut(Queue& q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- queues (task_engine.cc); all require mu_ ----------------------------
  // UNAVAILABLE after Shutdown; NOT_FOUND if missing and auto-create is off.
  absl::StatusOr<Queue*> FindOrCreateQueue(const std::string& name, Pending& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Queue* FindQueue(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // OK if one more queue fits under options_.max_queues; otherwise
  // RESOURCE_EXHAUSTED naming `name` and --max-queues.
  absl::Status RoomForAQueue(const std::string& name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds a queue (config complete) and arms its idle check.
  Queue* AddQueue(v1::QueueConfig config, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Deletes a queue with everything it holds; waiting calls fail with
  // `gone` (default: NOT_FOUND "was deleted").
  void RemoveQueue(const std::string& name, Pending& pending,
                   absl::Status gone = absl::OkStatus()) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // OK, or the fence status of a queue being moved (task_engine_move.cc).
  static absl::Status Fenced(const Queue& q) { return q.fence; }
  // The queue an admin call is about to change: NOT_FOUND if missing, its
  // fence status while it moves.
  absl::StatusOr<Queue*> FindToChange(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The stored form of a queue (its StoredQueue record), and back: its
  // state and counters from one (recovery and ImportQueues).
  std::string StoredQueueOf(const Queue& q) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void RestoreQueueState(Queue& q, const v1::StoredQueue& sq);
  // Puts a task read from a stored record in its place: ready, delayed or
  // dead (ImportQueues).
  void PlaceImported(Queue& q, TaskRecord& rec, Pending& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::QueueConfig FillDefaults(v1::QueueConfig config) const;
  absl::Status ValidateConfig(const v1::QueueConfig& config) const;
  v1::QueueStats StatsOf(const Queue& q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static uint64_t Unfinished(const Queue& q) {
    return q.ready.size() + q.delayed.size() + q.leased.size() + q.awaiting_task_done;
  }
  // Ready + delayed + leased: what maxsize bounds.
  static uint64_t Held(const Queue& q) {
    return q.ready.size() + q.delayed.size() + q.leased.size();
  }
  ReadyKey MakeKey(const Queue& q, const v1::Task& task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ValidatePut(const PutArgs& args) const;
  // How many of `specs` a put would store (the rest are dedup hits).
  size_t CountNew(const Queue& q, const std::vector<v1::TaskSpec>& specs) const;
  // What storing them would add to memory (the count is CountNew's).
  PutDemand MeasureNew(const Queue& q, const std::vector<v1::TaskSpec>& specs) const;
  bool Fits(const Queue& q, size_t n) const;
  // Drops ready and delayed tasks, each with a CANCELLED result saying `why`.
  uint64_t DropWaiting(Queue& q, absl::string_view why, Pending& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Stores tasks (room already checked): ready, or delayed until their time.
  PutResult Insert(Queue& q, std::vector<v1::TaskSpec>& specs, Pending& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes up to args.max_tasks ready tasks for one Get (take or lease).
  std::vector<v1::Delivery> TakeReady(Queue& q, const GetArgs& args, Pending& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks q for settling at the end of the locked step (and for writing).
  void Touch(Queue& q, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a locked step: settles touched queues, then writes what changed.
  void EndStep(Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Settles every touched queue (settling one may touch others).
  void SettleTouched(Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After any change to q: serve getters and workers, admit putters that now
  // fit, wake joiners when nothing is unfinished, fail getters of a drained
  // shut-down queue.
  void Settle(Queue& q, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Dispatch(Queue& q, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AdmitPutters(Queue& q, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WakeJoiners(Queue& q, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Parks a blocked call on q's list for its kind, with its deadline.
  WaitId AddWaiter(Queue& q, Waiter w, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes a waiter and schedules its callback with `status`.
  void FailWaiter(WaitId id, absl::Status status, Pending& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CompactWaitLists(Queue& q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Time NextDeadlineLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Asks the timer to re-arm if `t` is earlier than every pending deadline.
  void WatchDeadline(absl::Time t, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- results owed, idle TTL (task_engine_idle.cc); all require mu_ ---------
  // A task that will send a result: live (delayed, ready or leased) with a
  // reply_to. Counted when it becomes one (put, requeue, recovery) and
  // uncounted when it stops (finished, given up, taken, forgotten).
  static bool OwesResult(const TaskRecord& rec) {
    return !rec.task.reply_to().empty() && rec.state != State::kDead;
  }
  void CountOwed(Queue& q, const TaskRecord& rec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UncountOwed(const TaskRecord& rec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops `n` results owed to `reply_to`; when none is left, the reply
  // queue's idle clock starts now.
  void SubtractOwed(const std::string& reply_to, uint64_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t ResultsOwedTo(const std::string& name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // q is in use now: its idle clock starts again.
  void Used(Queue& q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { q.last_used = clock_->Now(); }
  // (Re-)arms q's idle check for `at` (none if q has no TTL).
  void ArmIdleCheck(Queue& q, absl::Time at, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DisarmIdleCheck(Queue& q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // True while q is in use whatever its clock says: a call waits on it, a
  // worker takes from it, a task of it is leased or delayed, or a result
  // is still owed to it.
  bool InUse(const Queue& q) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs the idle checks due at `now`: deletes the queues idle past their
  // TTL, re-arms the others.
  void ExpireIdleQueues(absl::Time now, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- the store (task_engine_store.cc); all require mu_ ----------------------
  void MarkTask(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { journal_.MarkTask(id); }
  // A task created in this step: its payload is written too.
  void MarkNewTask(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { journal_.MarkNewTask(id); }
  void MarkQueue(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    journal_.MarkQueue(name);
  }
  // Writes the marked tasks and queues as one batch; the step's replies wait
  // for it.
  void Persist(Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // OK, or why the store refuses writes now (the call is refused with it).
  absl::Status Writable() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LoadQueues(Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LoadTasks(std::vector<uint64_t>& leased) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- cold ready tasks (task_engine_store.cc) ---------------------------------
  // Beyond the memory budget a ready task can be "cold": in its queue's ready
  // set but not in tasks_; its record is read back from the store when
  // needed. Only tasks whose last write is committed go cold.
  // Adds an empty record to tasks_; Recount it once filled.
  TaskRecord& AddRecord(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Brings what memory_ counts for rec up to date (after it was filled or
  // grew).
  void Recount(TaskRecord& rec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Counts rec as pinned (it entered a state that cannot go cold), or not.
  void Pin(TaskRecord& rec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unpin(TaskRecord& rec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes a record from tasks_ (and from memory_).
  void DropRecord(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads cold ready tasks back into tasks_ (those the store has); the
  // store's error if it could not read (nothing is dropped then).
  absl::Status Hydrate(const std::vector<uint64_t>& ids) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A cold ready task by id, read back into tasks_; nullptr if there is none.
  TaskRecord* FindCold(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes sure the first `n` ready tasks of q are in tasks_.
  absl::Status HydrateHead(const Queue& q, size_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The record of q's first ready task, read back (with up to `batch` - 1
  // behind it) if it is cold. nullptr if q has no ready task or the store
  // cannot be read now (the task stays queued; callers stop and retry at
  // the next step). Every path that hands out or drops ready tasks goes
  // through here, so a cold task is never lost for want of a read-back.
  TaskRecord* HotHead(Queue& q, size_t batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ready tasks read back from the store at most this many at a time.
  static constexpr size_t kHydrateBatch = 1024;
  // A new ready task: goes cold once written, if memory is over budget.
  void MaybeCool(const TaskRecord& rec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops the records of cooling tasks whose writes are committed.
  void CoolDown() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // --- task states (task_engine_states.cc); all require mu_ -------------------
  // lease_time zero = the queue's lease_ms.
  v1::Delivery Lease(Queue& q, TaskRecord& rec, SubscriptionId holder, Pending& pending,
                     absl::Duration lease_time = absl::ZeroDuration())
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes rec out of whichever set of its state holds it.
  void Detach(TaskRecord& rec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ClearLease(TaskRecord& rec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // new_place = false puts it back where it was (a lease returned at once).
  void MakeReady(Queue& q, TaskRecord& rec, bool new_place) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MakeDelayed(Queue& q, TaskRecord& rec, absl::Time due, Pending& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Retry delay for the attempt that just ended, with jitter.
  absl::Duration Backoff(const Queue& q, uint32_t attempt) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddHistory(TaskRecord& rec, absl::string_view how, absl::string_view error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A lease was lost or failed (retryable): counts the attempt, then retries
  // (after backoff; at once in its old place for a disconnect) or gives up.
  void LoseLease(TaskRecord& rec, LostHow how, std::string error, Pending& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves a detached task to its dead-letter set; a FAILED result saying
  // `result_error` goes to its reply_to.
  void GiveUp(TaskRecord& rec, std::string result_error, Pending& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a task for good: removes it, remembers it as `final_state`, frees
  // its dedup key, and (if send_result and it has reply_to) puts a result.
  // `awaiting_task_done`: a done task counts as unfinished until TaskDone.
  void Finish(TaskRecord& rec, v1::TaskState final_state, v1::Outcome outcome,
              std::string result, std::string error, bool send_result, Pending& pending,
              bool awaiting_task_done = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Puts a result message on the task's reply_to queue, bypassing maxsize.
  // `last_use`: rec is dropped next, so its headers and reply_to move into
  // the result instead of being copied.
  void DeliverResult(TaskRecord& rec, bool last_use, v1::Outcome outcome, std::string result,
                     std::string error, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreeDedupKey(const TaskRecord& rec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops a record whose queue (or dead-letter set) is being deleted.
  void Forget(TaskRecord& rec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<TaskRecord*> FindLease(uint64_t task_id, uint64_t lease_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The full status view of a live task.
  v1::Task Describe(const TaskRecord& rec) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Remembers rec as finished in `state`, taking its dedup key, last error
  // and history (its record is dropped next).
  void RememberFinished(TaskRecord& rec, v1::TaskState state)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Back from a dead-letter set to its origin queue, or why not.
  absl::Status Requeue(TaskRecord& rec, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const EngineOptions options_;
  Clock* const clock_;
  // Atomics: need no lock (observed under mu_ all the same).
  metrics::Histogram task_latency_{metrics::LatencySecondsBuckets()};
  metrics::Histogram lease_duration_{metrics::LatencySecondsBuckets()};
  const std::function<void()> on_earlier_deadline_;

  Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_task_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_wait_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_sub_id_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::unique_ptr<Queue>> queues_ ABSL_GUARDED_BY(mu_);
  // The names of queues_ in order, for ListQueues pages.
  absl::btree_set<std::string> queue_names_ ABSL_GUARDED_BY(mu_);
  // Node map: a TaskRecord& stays valid while other tasks come and go.
  absl::node_hash_map<uint64_t, TaskRecord> tasks_ ABSL_GUARDED_BY(mu_);
  LeaseTable leases_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<WaitId, Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<SubscriptionId, Subscription> subs_ ABSL_GUARDED_BY(mu_);
  // Subscribers per queue name (kept across delete/re-create of the queue).
  absl::flat_hash_map<std::string, std::vector<SubscriptionId>> subs_by_queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, size_t> round_robin_ ABSL_GUARDED_BY(mu_);
  // Every deadline: leases, delayed tasks, waiting calls, idle checks.
  Schedule schedule_ ABSL_GUARDED_BY(mu_);
  // Results owed to each queue name by tasks on any queue (only names
  // with some owed; QueueStats.pending_results). By name, not by queue: a
  // reply queue deleted and made again is still owed them.
  absl::flat_hash_map<std::string, uint64_t> pending_results_ ABSL_GUARDED_BY(mu_);
  // Recently finished tasks, oldest first (bounded by options_).
  FinishedTasks finished_ ABSL_GUARDED_BY(mu_);

  // The durable copy (null: memory only), and what the current step changed.
  Store* store_ ABSL_GUARDED_BY(mu_) = nullptr;
  Journal journal_ ABSL_GUARDED_BY(mu_);
  // Recovery: queues loaded without an idle TTL (stored by an older
  // master), written back with the one they got.
  std::vector<std::string> upgraded_queues_ ABSL_GUARDED_BY(mu_);
  // Bytes of the records in tasks_ (approximate: Footprint), which of them
  // are pinned, and of waiting puts; what puts it admits.
  MemoryBudget memory_ ABSL_GUARDED_BY(mu_);
  // New ready tasks to go cold: ids of this step, then (batch seq, id).
  std::vector<uint64_t> to_cool_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<uint64_t, uint64_t>> cooling_ ABSL_GUARDED_BY(mu_);
};

}  // namespace taskq
