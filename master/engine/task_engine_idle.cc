// TaskEngine: the lifecycle of reply queues. Results owed to each
// queue (QueueStats.pending_results: a reader knows a job's results are all
// in when none is owed and nothing is left to read), and the idle TTL: a
// queue nobody has used for its idle_ttl_ms, that nothing holds in use and
// that is owed no result, is deleted with what it holds.
//
// Results owed are counted in the same locked steps as the task changes
// that make or settle them: a live task (delayed, ready or leased) with a
// reply_to owes one. A put or a requeue adds one; a completion, a give-up
// (its FAILED result), a cancel, a purge, an immediate shutdown, a take
// (the taker has the task), or the deletion of the task's own queue settles
// it. Recovery counts them again from the stored tasks.
//
// Idle checks sit in the engine's Schedule (schedule.h, one per
// queue with a TTL) and are fired by AdvanceTo like every other deadline.
// A use of the queue only stamps last_used (cheap, on the hot path); the
// check, when it comes due, re-arms itself at last_used + TTL if the queue
// was used meanwhile. last_used is not stored: after a restart every
// queue's idle clock starts from the restart.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "master/engine/task_engine.h"
#include "master/engine/pending.h"

namespace taskq {

// --- results owed -------------------------------------------------------------------

void TaskEngine::CountOwed(Queue& q, const TaskRecord& rec) {
  const std::string& reply_to = rec.task.reply_to();
  if (reply_to.empty()) return;
  ++q.owed_by_reply_to[reply_to];
  ++pending_results_[reply_to];
}

void TaskEngine::UncountOwed(const TaskRecord& rec) {
  const std::string& reply_to = rec.task.reply_to();
  if (reply_to.empty()) return;
  if (Queue* q = FindQueue(rec.task.queue())) {
    auto it = q->owed_by_reply_to.find(reply_to);
    if (it != q->owed_by_reply_to.end() && --it->second == 0) q->owed_by_reply_to.erase(it);
  }
  SubtractOwed(reply_to, 1);
}

void TaskEngine::SubtractOwed(const std::string& reply_to, uint64_t n) {
  auto it = pending_results_.find(reply_to);
  if (it == pending_results_.end()) return;
  it->second -= std::min(n, it->second);
  if (it->second != 0) return;
  pending_results_.erase(it);
  // The job is over: the reply queue's idle clock starts now.
  if (Queue* q = FindQueue(reply_to)) Used(*q);
}

uint64_t TaskEngine::ResultsOwedTo(const std::string& name) const {
  auto it = pending_results_.find(name);
  return it == pending_results_.end() ? 0 : it->second;
}

// --- idle TTL -----------------------------------------------------------------------

void TaskEngine::DisarmIdleCheck(Queue& q) {
  if (q.idle_check == absl::InfiniteFuture()) return;
  schedule_.RemoveIdleCheck(q.idle_check, q.config.name());
  q.idle_check = absl::InfiniteFuture();
}

void TaskEngine::ArmIdleCheck(Queue& q, absl::Time at, Pending& pending) {
  DisarmIdleCheck(q);
  if (q.config.idle_ttl_ms() == 0) return;
  WatchDeadline(at, pending);
  q.idle_check = at;
  schedule_.AddIdleCheck(at, q.config.name());
}

bool TaskEngine::InUse(const Queue& q) const {
  if (!q.fence.ok()) return true;  // moving: its copy goes when the move ends
  if (q.getters.live() != 0 || q.putters.live() != 0 || q.joiners.live() != 0) return true;
  if (auto it = subs_by_queue_.find(q.config.name());
      it != subs_by_queue_.end() && !it->second.empty()) {
    return true;  // a worker takes from it
  }
  // Someone holds a lease on it (it will complete or come back), or a
  // task of it waits for its time; or a task somewhere still owes it a
  // result (the queue must be there to receive it).
  return !q.leased.empty() || !q.delayed.empty() || ResultsOwedTo(q.config.name()) != 0;
}

void TaskEngine::ExpireIdleQueues(absl::Time now, Pending& pending) {
  while (auto due = schedule_.IdleCheckDue(now)) {
    const std::string name = std::move(due->second);
    Queue* q = FindQueue(name);
    if (q == nullptr) {  // cannot happen: a deleted queue disarms its check
      schedule_.RemoveIdleCheck(due->first, name);
      continue;
    }
    DisarmIdleCheck(*q);
    if (shut_down_) continue;  // the master is stopping: its next start re-arms
    const absl::Duration ttl = absl::Milliseconds(static_cast<int64_t>(q->config.idle_ttl_ms()));
    if (!Writable().ok()) {
      // The delete could not be stored: try again once the store takes writes.
      ArmIdleCheck(*q, now + absl::Seconds(1), pending);
      continue;
    }
    if (InUse(*q)) {
      Used(*q);
      ArmIdleCheck(*q, now + ttl, pending);
      continue;
    }
    if (q->last_used + ttl > now) {  // used since the check was armed
      ArmIdleCheck(*q, q->last_used + ttl, pending);
      continue;
    }
    LogInfo("queue \"%s\" expired: nobody read from or put on it for %s (its idle TTL is %s); "
            "deleted with %d ready tasks and %d dead ones",
            name, absl::FormatDuration(now - q->last_used), absl::FormatDuration(ttl),
            q->ready.size(), q->dead.size());
    RemoveQueue(name, pending);
  }
}

}  // namespace taskq
