// MemoryEngine: the in-memory QueueEngine. Everything lives in RAM and is
// lost when the master exits (the durable store replaces it later).
//
// One mutex guards all state. Work that must not run under it — callbacks
// finishing RPCs, deliveries to worker streams — is collected into a
// `Pending` list while locked and run after unlocking.
//
// Thread-safety: all public methods are safe from any thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "common/clock.h"
#include "common/sync.h"
#include "master/queue_engine.h"

namespace taskq {

class MemoryEngine final : public QueueEngine {
 public:
  // `on_earlier_deadline` is called (without the lock) whenever the earliest
  // pending deadline moves earlier, so a timer thread can re-arm.
  MemoryEngine(EngineOptions options, Clock* clock,
               std::function<void()> on_earlier_deadline = nullptr);
  ~MemoryEngine() override;

  absl::StatusOr<v1::QueueConfig> CreateQueue(const v1::QueueConfig& config,
                                              bool exist_ok) override;
  std::vector<v1::QueueStats> ListQueues() override;
  absl::StatusOr<v1::QueueStats> Stats(const std::string& queue) override;
  absl::Status DeleteQueue(const std::string& queue) override;
  absl::StatusOr<uint64_t> PurgeQueue(const std::string& queue) override;

  WaitId Put(PutArgs args, PutCallback done) override;
  WaitId Get(GetArgs args, GetCallback done) override;
  void CancelWait(WaitId id) override;

  absl::Status Complete(uint64_t task_id, uint64_t lease_id, std::string result) override;
  absl::Status Fail(uint64_t task_id, uint64_t lease_id, std::string error,
                    bool permanent) override;
  absl::StatusOr<absl::Time> ExtendLease(uint64_t lease_id) override;
  absl::Status TaskDone(const std::string& queue, uint32_t count) override;
  WaitId Join(const std::string& queue, absl::Time deadline, DoneCallback done) override;

  absl::StatusOr<SubscriptionId> Subscribe(const std::vector<std::string>& queues,
                                           const std::string& worker_id,
                                           DeliverFn deliver) override;
  absl::Status AddCredits(SubscriptionId sub, uint32_t credits) override;
  void Unsubscribe(SubscriptionId sub) override;

  void AdvanceTo(absl::Time now) override;
  absl::Time NextDeadline() override;
  void Shutdown() override;

 private:
  // Work to do once the lock is released.
  class Pending;

  // Order of ready tasks in a queue: (major, minor, id), smallest first.
  // FIFO: (0, seq); LIFO: (0, -seq); PRIORITY: (priority, seq).
  struct ReadyKey {
    int64_t major;
    int64_t minor;
    uint64_t id;
    bool operator<(const ReadyKey& o) const {
      if (major != o.major) return major < o.major;
      if (minor != o.minor) return minor < o.minor;
      return id < o.id;
    }
  };

  struct TaskRecord {
    v1::Task task;
    ReadyKey key;            // where it sits while ready
    bool leased = false;
    uint64_t lease_id = 0;   // current lease; 0 when ready
    absl::Time lease_deadline = absl::InfiniteFuture();
    SubscriptionId holder = 0;  // Work stream holding the lease (0 = unary)
  };

  enum class WaitKind { kPut, kGet, kJoin };
  struct Waiter {
    WaitKind kind;
    std::string queue;
    absl::Time deadline;
    PutArgs put;   // kPut
    GetArgs get;   // kGet
    PutCallback put_done;
    GetCallback get_done;
    DoneCallback join_done;
  };

  struct Queue {
    v1::QueueConfig config;
    absl::btree_set<ReadyKey> ready;
    absl::flat_hash_set<uint64_t> leased;
    uint64_t unfinished = 0;          // put and not done (Join waits for 0)
    uint64_t awaiting_task_done = 0;  // taken with manual_task_done
    uint64_t total_put = 0;
    uint64_t total_completed = 0;
    uint64_t total_failed = 0;
    // Blocked calls, oldest first. May hold ids of finished waiters (lazy
    // deletion); live counts are kept separately.
    std::deque<WaitId> getters;
    std::deque<WaitId> putters;
    std::vector<WaitId> joiners;
    uint32_t live_getters = 0;
    uint32_t live_putters = 0;
  };

  struct Subscription {
    std::vector<std::string> queues;
    std::string worker_id;
    uint32_t credits = 0;
    DeliverFn deliver;
    absl::flat_hash_set<uint64_t> lease_ids;
  };

  // --- helpers; all require mu_ -----------------------------------------
  // UNAVAILABLE after Shutdown; NOT_FOUND if missing and auto-create is off.
  absl::StatusOr<Queue*> FindOrCreateQueue(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Queue* FindQueue(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::QueueConfig FillDefaults(v1::QueueConfig config) const;
  v1::QueueStats StatsOf(const Queue& q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  ReadyKey MakeKey(const Queue& q, const v1::Task& task) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ValidatePut(const PutArgs& args) const;
  bool Fits(const Queue& q, size_t n) const;

  // Stores tasks (room already checked) and returns their ids.
  std::vector<uint64_t> Insert(Queue& q, std::vector<v1::TaskSpec>& specs)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes up to args.max_tasks ready tasks for one Get (take or lease).
  std::vector<v1::Delivery> TakeReady(Queue& q, const GetArgs& args, Pending& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After any change to q: serve getters and workers, admit putters that now
  // fit, wake joiners when nothing is unfinished.
  void Settle(Queue& q, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Dispatch(Queue& q, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AdmitPutters(Queue& q, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WakeJoiners(Queue& q, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Puts a result message on the task's reply_to queue, bypassing maxsize.
  void DeliverResult(const TaskRecord& rec, v1::Outcome outcome, std::string result,
                     std::string error, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Delivery Lease(Queue& q, TaskRecord& rec, SubscriptionId holder)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Lease lost (expired or holder gone): back to ready, or given up.
  void ReturnLease(TaskRecord& rec, absl::string_view why, Pending& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a task: removes it and (if it has reply_to) delivers its result.
  void Finish(TaskRecord& rec, v1::Outcome outcome, std::string result, std::string error,
              Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ClearLease(TaskRecord& rec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<TaskRecord*> FindLease(uint64_t task_id, uint64_t lease_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Parks a blocked call on q's list for its kind, with its deadline.
  WaitId AddWaiter(Queue& q, Waiter w, Pending& pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes a waiter and schedules its callback with `status`.
  void FailWaiter(WaitId id, absl::Status status, Pending& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CompactWaitLists(Queue& q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Time NextDeadlineLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const EngineOptions options_;
  Clock* const clock_;
  const std::function<void()> on_earlier_deadline_;

  Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_task_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_lease_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_wait_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_sub_id_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<std::string, std::unique_ptr<Queue>> queues_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, TaskRecord> tasks_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, uint64_t> lease_to_task_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<WaitId, Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<SubscriptionId, Subscription> subs_ ABSL_GUARDED_BY(mu_);
  // Subscribers per queue name (kept across delete/re-create of the queue).
  absl::flat_hash_map<std::string, std::vector<SubscriptionId>> subs_by_queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, size_t> round_robin_ ABSL_GUARDED_BY(mu_);
  // Deadlines: (when, wait id) and (when, lease id).
  absl::btree_set<std::pair<absl::Time, WaitId>> wait_deadlines_ ABSL_GUARDED_BY(mu_);
  absl::btree_set<std::pair<absl::Time, uint64_t>> lease_deadlines_ ABSL_GUARDED_BY(mu_);
};

}  // namespace taskq
