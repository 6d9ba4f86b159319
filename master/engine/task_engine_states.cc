// TaskEngine: task states. Leasing, settling leases (complete,
// fail, release, heartbeat), retries with backoff, dead letters, cancel,
// and status lookup by id (live tasks and recently finished ones).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/limits.h"
#include "common/log.h"
#include "master/engine/task_engine.h"
#include "master/engine/pending.h"

namespace taskq {

namespace {

absl::string_view StateName(v1::TaskState state) {
  switch (state) {
    case v1::TASK_STATE_DELAYED: return "delayed";
    case v1::TASK_STATE_READY: return "ready";
    case v1::TASK_STATE_LEASED: return "leased";
    case v1::TASK_STATE_DONE: return "done";
    case v1::TASK_STATE_DEAD: return "dead";
    case v1::TASK_STATE_CANCELLED: return "cancelled";
    case v1::TASK_STATE_FAILED: return "failed";
    default: return "unknown";
  }
}

std::string Attempts(uint32_t n) { return absl::StrCat(n, n == 1 ? " attempt" : " attempts"); }

absl::Status UnknownTask(uint64_t id) {
  return absl::NotFoundError(
      absl::StrCat("task ", id, ": unknown task or finished long ago (or its queue was deleted)"));
}

}  // namespace

// --- states ---------------------------------------------------------------------------

v1::Delivery TaskEngine::Lease(Queue& q, TaskRecord& rec, SubscriptionId holder,
                                 Pending& pending, absl::Duration lease_time) {
  absl::Time now = clock_->Now();
  MarkTask(rec.task.id());
  rec.state = State::kLeased;
  rec.lease_id = leases_.Grant(rec.task.id());
  if (lease_time <= absl::ZeroDuration()) lease_time = absl::Milliseconds(q.config.lease_ms());
  rec.lease_deadline = now + lease_time;
  rec.holder = holder;
  rec.holder_name = "consumer";
  if (holder != 0) {
    Subscription& sub = subs_.at(holder);
    sub.lease_ids.insert(rec.lease_id);
    rec.holder_name = sub.who.worker_id.empty() ? "worker" : sub.who.worker_id;
  }
  rec.task.set_attempt(rec.task.attempt() + 1);
  rec.leased_at = now;
  ++q.total_delivered;
  if (rec.task.attempt() > 1) ++q.total_redelivered;
  Pin(rec);
  WatchDeadline(rec.lease_deadline, pending);
  schedule_.AddLease(rec.lease_deadline, rec.lease_id);
  q.leased.insert(rec.task.id());
  v1::Delivery d;
  *d.mutable_task() = rec.task;
  d.set_lease_id(rec.lease_id);
  d.set_lease_deadline_unix_ms(absl::ToUnixMillis(rec.lease_deadline));
  return d;
}

void TaskEngine::ClearLease(TaskRecord& rec) {
  if (rec.state != State::kLeased) return;
  lease_duration_.Observe(absl::ToDoubleSeconds(clock_->Now() - rec.leased_at));
  schedule_.RemoveLease(rec.lease_deadline, rec.lease_id);
  leases_.End(rec.lease_id);
  if (Queue* q = FindQueue(rec.task.queue())) q->leased.erase(rec.task.id());
  if (rec.holder != 0) {
    if (auto it = subs_.find(rec.holder); it != subs_.end()) it->second.lease_ids.erase(rec.lease_id);
  }
  rec.lease_id = 0;
  rec.lease_deadline = absl::InfiniteFuture();
  rec.holder = 0;
  rec.holder_name.clear();
}

void TaskEngine::Detach(TaskRecord& rec) {
  MarkTask(rec.task.id());
  Unpin(rec);  // whatever it becomes next pins it again if it must
  Queue* q = FindQueue(rec.task.queue());
  // A lease or a delay held the queue in use until now (idle TTL).
  if (q && (rec.state == State::kLeased || rec.state == State::kDelayed)) Used(*q);
  switch (rec.state) {
    case State::kReady:
      if (q) q->ready.Erase(rec.key);
      break;
    case State::kDelayed:
      if (q) q->delayed.erase(rec.delay);
      schedule_.RemoveDelayed(rec.delay);
      break;
    case State::kLeased:
      ClearLease(rec);
      break;
    case State::kDead:
      if (Queue* dlq = FindQueue(rec.dead_in)) dlq->dead.erase(rec.task.id());
      rec.dead_in.clear();
      break;
  }
}

void TaskEngine::MakeReady(Queue& q, TaskRecord& rec, bool new_place) {
  if (new_place) rec.key = MakeKey(q, rec.task);
  MarkTask(rec.task.id());
  rec.state = State::kReady;
  q.ready.Insert(rec.key);
}

void TaskEngine::MakeDelayed(Queue& q, TaskRecord& rec, absl::Time due, Pending& pending) {
  MarkTask(rec.task.id());
  rec.state = State::kDelayed;
  rec.delay = schedule_.AddDelayed(due, rec.task.id());
  Pin(rec);
  WatchDeadline(due, pending);
  q.delayed.insert(rec.delay);
}

absl::Duration TaskEngine::Backoff(const Queue& q, uint32_t attempt) {
  // min(backoff * 2^(attempt-1), cap), then a uniform factor in [0.5, 1]:
  // whole milliseconds in [ceil(d/2), d], never 0, so a retry always passes
  // through "delayed".
  const uint64_t cap = std::max<uint64_t>(1, q.config.backoff_max_ms());
  uint64_t d = std::max<uint64_t>(1, q.config.backoff_ms());
  for (uint32_t i = 1; i < attempt && d < cap; ++i) d *= 2;
  d = std::min(d, cap);
  const uint64_t low = (d + 1) / 2;
  const uint64_t jittered = low + rng_() % (d - low + 1);
  return absl::Milliseconds(static_cast<int64_t>(jittered));
}

void TaskEngine::AddHistory(TaskRecord& rec, absl::string_view how, absl::string_view error) {
  v1::Attempt a;
  a.set_attempt(rec.task.attempt());
  a.set_worker(rec.holder_name);
  a.set_ended_unix_ms(absl::ToUnixMillis(clock_->Now()));
  a.set_how(std::string(how));
  a.set_error(std::string(error.substr(0, kMaxHistoryErrorBytes)));
  rec.history.push_back(std::move(a));
  if (rec.history.size() > kTaskHistoryLength) {
    rec.history.erase(rec.history.begin(),
                      rec.history.begin() + (rec.history.size() - kTaskHistoryLength));
  }
  Recount(rec);
}

void TaskEngine::LoseLease(TaskRecord& rec, LostHow how, std::string error, Pending& pending) {
  Queue* q = FindQueue(rec.task.queue());
  if (q && how == LostHow::kExpired) {
    ++q->total_expired;
    LogEvent(LogLevel::kWarning, "lease expired",
             {{"task", rec.task.id()}, {"queue", rec.task.queue()}, {"worker", rec.holder_name},
              {"attempt", rec.task.attempt()}});
  }
  AddHistory(rec,
             how == LostHow::kFailed       ? "failed"
             : how == LostHow::kExpired    ? "expired"
             : how == LostHow::kRestarted  ? "master restarted"
                                           : "disconnected",
             error);
  Detach(rec);
  if (!q) {  // cannot happen: a deleted queue's tasks are gone
    Forget(rec);
    return;
  }
  if (rec.task.outcome() != v1::OUTCOME_UNSPECIFIED && how != LostHow::kFailed) {
    // A result message is data for its reader, not work that can crash
    // anyone: a lease on it lapses because a reply was lost on the way or
    // the reader went away. It goes back at once, in its old place, never
    // to a dead-letter set: results are delivered until acknowledged.
    rec.last_error = std::move(error);
    MakeReady(*q, rec, /*new_place=*/false);
    Touch(*q, pending);
    return;
  }
  const uint32_t attempt = rec.task.attempt();
  if (attempt >= q->config.max_attempts()) {
    std::string why = absl::StrCat("gave up after ", Attempts(attempt), "; last error: ", error);
    rec.last_error = std::move(error);
    GiveUp(rec, std::move(why), pending);
    return;
  }
  rec.last_error = std::move(error);
  if (how == LostHow::kDisconnected || how == LostHow::kRestarted) {
    // The worker (or the master) is gone, not the task's fault: back in its
    // old place now.
    MakeReady(*q, rec, /*new_place=*/false);
  } else {
    MakeDelayed(*q, rec, clock_->Now() + Backoff(*q, attempt), pending);
  }
  Touch(*q, pending);
}

void TaskEngine::GiveUp(TaskRecord& rec, std::string result_error, Pending& pending) {
  Queue* origin = FindQueue(rec.task.queue());
  std::string dlq_name = rec.task.queue();
  if (origin && !origin->config.dead_letter().empty()) dlq_name = origin->config.dead_letter();
  Queue* dlq = FindQueue(dlq_name);
  if (!dlq && options_.auto_create_queues && !shut_down_ && RoomForAQueue(dlq_name).ok()) {
    v1::QueueConfig config;
    config.set_name(dlq_name);
    dlq = AddQueue(FillDefaults(config), pending);
    LogInfo("dead-letter queue \"%s\" created on first use", dlq_name);
  }
  if (!dlq) {
    LogWarning("dead-letter queue \"%s\" of queue \"%s\" does not exist%s; task %d stays in \"%s\"",
               dlq_name, rec.task.queue(),
               options_.auto_create_queues ? " and --max-queues is reached" : "", rec.task.id(),
               rec.task.queue());
    dlq = origin;
  }
  if (OwesResult(rec)) UncountOwed(rec);  // its FAILED result goes out below
  MarkTask(rec.task.id());
  rec.state = State::kDead;
  rec.dead_in = dlq->config.name();
  dlq->dead.insert(rec.task.id());
  Recount(rec);  // its last error
  Pin(rec);
  if (origin) {
    ++origin->total_failed;
    Touch(*origin, pending);  // room for putters, maybe joiners done
  }
  if (!rec.task.reply_to().empty()) {
    DeliverResult(rec, /*last_use=*/false, v1::OUTCOME_FAILED, "", std::move(result_error),
                  pending);
  }
}

void TaskEngine::Finish(TaskRecord& rec, v1::TaskState final_state, v1::Outcome outcome,
                          std::string result, std::string error, bool send_result,
                          Pending& pending, bool awaiting_task_done) {
  const uint64_t id = rec.task.id();
  Queue* q = FindQueue(rec.task.queue());
  // Its one result goes out now (or was sent when it died; or, with
  // send_result false, none is sent).
  if (OwesResult(rec)) UncountOwed(rec);
  Detach(rec);
  if (q) {
    if (final_state == v1::TASK_STATE_DONE) {
      if (awaiting_task_done) {
        ++q->awaiting_task_done;  // TaskDone counts it completed
      } else {
        ++q->total_completed;
      }
      // Put -> result of work, not of a result message being read.
      if (rec.task.outcome() == v1::OUTCOME_UNSPECIFIED) {
        const double ms = static_cast<double>(absl::ToUnixMillis(clock_->Now()) -
                                              rec.task.enqueued_unix_ms());
        task_latency_.Observe(std::max(0.0, ms / 1000));
      }
    }
    if (final_state == v1::TASK_STATE_CANCELLED) ++q->total_cancelled;
    Touch(*q, pending);
  }
  FreeDedupKey(rec);
  RememberFinished(rec, final_state);
  if (send_result && !rec.task.reply_to().empty()) {
    DeliverResult(rec, /*last_use=*/true, outcome, std::move(result), std::move(error), pending);
  }
  DropRecord(id);
}

void TaskEngine::DeliverResult(TaskRecord& rec, bool last_use, v1::Outcome outcome,
                               std::string result, std::string error, Pending& pending) {
  const std::string& reply_to = rec.task.reply_to();
  // The reply queue was made (or checked) when the task was put. If it is
  // gone now, its owner deleted it (e.g. `submit --wait` gave up): do not
  // resurrect it as an orphan nobody reads. Results bypass maxsize and
  // shutdown: a result is never lost to backpressure.
  Queue* q = FindQueue(reply_to);
  if (!q) {
    LogInfo("result of task %d dropped: its reply_to queue \"%s\" was deleted", rec.task.id(),
            reply_to);
    return;
  }
  uint64_t id = next_task_id_++;
  MarkNewTask(id);
  TaskRecord& r = AddRecord(id);
  r.task.set_id(id);
  r.task.set_result_of(rec.task.id());
  // Moved where it can be; empty strings are not set (setting one
  // allocates).
  if (!result.empty()) r.task.set_payload(std::move(result));
  if (!error.empty()) r.task.set_error(std::move(error));
  if (last_use) {
    if (!rec.task.headers().empty()) r.task.mutable_headers()->swap(*rec.task.mutable_headers());
    r.task.mutable_queue()->swap(*rec.task.mutable_reply_to());  // rec's reply_to is empty now
  } else {
    *r.task.mutable_headers() = rec.task.headers();
    r.task.set_queue(reply_to);
  }
  r.task.set_outcome(outcome);
  r.task.set_enqueued_unix_ms(absl::ToUnixMillis(clock_->Now()));
  Recount(r);  // never refused: a result is never lost to the budget
  MakeReady(*q, r, /*new_place=*/true);
  MaybeCool(r);
  ++q->total_put;
  Used(*q);
  Touch(*q, pending);
}

void TaskEngine::FreeDedupKey(const TaskRecord& rec) {
  if (rec.dedup_key.empty()) return;
  Queue* q = FindQueue(rec.task.queue());
  if (!q) return;
  auto it = q->dedup.find(rec.dedup_key);
  if (it != q->dedup.end() && it->second == rec.task.id()) q->dedup.erase(it);
}

void TaskEngine::Forget(TaskRecord& rec) {
  const uint64_t id = rec.task.id();
  if (OwesResult(rec)) UncountOwed(rec);  // it ends without a result
  Detach(rec);
  FreeDedupKey(rec);
  DropRecord(id);
}

// --- settling leases ----------------------------------------------------------------

absl::StatusOr<TaskRecord*> TaskEngine::FindLease(uint64_t task_id,
                                                                  uint64_t lease_id) {
  auto it = tasks_.find(task_id);
  if (it != tasks_.end()) {
    TaskRecord& rec = it->second;
    if (rec.state == State::kLeased && rec.lease_id == lease_id) return &rec;
    if (rec.state == State::kLeased) {
      return absl::FailedPreconditionError(absl::StrCat(
          "lease lost: task ", task_id, " is held under a newer lease (lease ", lease_id,
          " expired or was given back and the task was handed out again); "
          "this report is discarded"));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "lease lost: task ", task_id, " is no longer held under lease ", lease_id,
        " (it expired or was given back; the task is ", StateName(ProtoState(rec.state)),
        " now); this report is discarded"));
  }
  if (std::optional<v1::TaskState> finished = finished_.StateOf(task_id)) {
    const v1::TaskState state = *finished;
    if (state == v1::TASK_STATE_CANCELLED) {
      return absl::FailedPreconditionError(
          absl::StrCat("task ", task_id, " was cancelled; this report is discarded"));
    }
    return absl::FailedPreconditionError(absl::StrCat("lease lost: task ", task_id, " is already ",
                                                      StateName(state),
                                                      "; this report is discarded"));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "lease lost: task ", task_id, " is unknown (finished long ago, or its queue was deleted); "
      "this report is discarded"));
}

absl::Status TaskEngine::Complete(uint64_t task_id, uint64_t lease_id, std::string result) {
  if (result.size() > options_.max_payload_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("result is too large (", result.size(),
                                                   " bytes; the limit is ",
                                                   options_.max_payload_bytes, ")"));
  }
  Pending pending;
  {
    MutexLock lock(&mu_);
    if (auto s = Writable(); !s.ok()) return s;
    absl::StatusOr<TaskRecord*> rec = FindLease(task_id, lease_id);
    if (!rec.ok()) return rec.status();
    Finish(**rec, v1::TASK_STATE_DONE, v1::OUTCOME_OK, std::move(result), "", true, pending);
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return absl::OkStatus();
}

absl::Status TaskEngine::CompleteAwaitingTaskDone(uint64_t task_id, uint64_t lease_id) {
  Pending pending;
  {
    MutexLock lock(&mu_);
    if (auto s = Writable(); !s.ok()) return s;
    absl::StatusOr<TaskRecord*> rec = FindLease(task_id, lease_id);
    if (!rec.ok()) return rec.status();
    Finish(**rec, v1::TASK_STATE_DONE, v1::OUTCOME_OK, "", "", true, pending,
           /*awaiting_task_done=*/true);
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return absl::OkStatus();
}

absl::Status TaskEngine::Fail(uint64_t task_id, uint64_t lease_id, std::string error,
                                bool permanent) {
  if (error.size() > kMaxErrorBytes) error.resize(kMaxErrorBytes);
  Pending pending;
  {
    MutexLock lock(&mu_);
    if (auto s = Writable(); !s.ok()) return s;
    absl::StatusOr<TaskRecord*> found = FindLease(task_id, lease_id);
    if (!found.ok()) return found.status();
    TaskRecord& rec = **found;
    if (permanent) {
      AddHistory(rec, "failed", error);
      Detach(rec);
      rec.last_error = error;
      GiveUp(rec, std::move(error), pending);
    } else {
      LoseLease(rec, LostHow::kFailed, std::move(error), pending);
    }
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return absl::OkStatus();
}

absl::Status TaskEngine::Release(uint64_t task_id, uint64_t lease_id, absl::Duration delay) {
  if (delay < absl::ZeroDuration() || delay > absl::Milliseconds(kMaxDelayMs)) {
    return absl::InvalidArgumentError("release delay must be between 0 and 365 days");
  }
  Pending pending;
  {
    MutexLock lock(&mu_);
    if (auto s = Writable(); !s.ok()) return s;
    absl::StatusOr<TaskRecord*> found = FindLease(task_id, lease_id);
    if (!found.ok()) return found.status();
    TaskRecord& rec = **found;
    Queue* q = FindQueue(rec.task.queue());
    AddHistory(rec, "released", "");
    // Not counted: the next delivery carries the same attempt number.
    rec.task.set_attempt(rec.task.attempt() - 1);
    Detach(rec);
    if (delay <= absl::ZeroDuration()) {
      MakeReady(*q, rec, /*new_place=*/false);
    } else {
      MakeDelayed(*q, rec, clock_->Now() + delay, pending);
    }
    Touch(*q, pending);
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return absl::OkStatus();
}

absl::StatusOr<absl::Time> TaskEngine::ExtendLease(uint64_t lease_id) {
  MutexLock lock(&mu_);
  std::optional<uint64_t> task_id = leases_.TaskOf(lease_id);
  if (!task_id) {
    if (std::optional<uint64_t> revoked = leases_.RevokedTask(lease_id)) {
      return absl::CancelledError(absl::StrCat("task ", *revoked,
                                               " was cancelled: stop running it (lease ",
                                               lease_id, " is revoked)"));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "lease lost: lease ", lease_id, " is no longer held (expired, released or completed)"));
  }
  TaskRecord& rec = tasks_.at(*task_id);
  Queue* q = FindQueue(rec.task.queue());
  schedule_.RemoveLease(rec.lease_deadline, lease_id);
  rec.lease_deadline = clock_->Now() + absl::Milliseconds(q ? q->config.lease_ms() : 30000);
  schedule_.AddLease(rec.lease_deadline, lease_id);
  return rec.lease_deadline;
}

// --- tasks by id -------------------------------------------------------------------

v1::Task TaskEngine::Describe(const TaskRecord& rec) const {
  v1::Task t = rec.task;
  t.set_state(ProtoState(rec.state));
  if (rec.state == State::kDelayed) t.set_not_before_unix_ms(absl::ToUnixMillis(rec.delay.due));
  if (rec.state == State::kLeased) t.set_worker(rec.holder_name);
  if (rec.state == State::kDead) t.set_origin_queue(rec.task.queue());
  t.set_dedup_key(rec.dedup_key);
  t.set_last_error(rec.last_error);
  for (const v1::Attempt& a : rec.history) *t.add_history() = a;
  return t;
}

void TaskEngine::RememberFinished(TaskRecord& rec, v1::TaskState state) {
  finished_.Add(rec.task, state,
                FinishedTasks::Extra{std::move(rec.dedup_key), std::move(rec.last_error),
                                     std::move(rec.history)});
}

absl::StatusOr<v1::Task> TaskEngine::GetTask(uint64_t task_id) {
  if (task_id == 0) return absl::InvalidArgumentError("task id 0 is not a task (ids start at 1)");
  MutexLock lock(&mu_);
  if (auto it = tasks_.find(task_id); it != tasks_.end()) return Describe(it->second);
  if (std::optional<v1::Task> f = finished_.Describe(task_id)) return *std::move(f);
  if (TaskRecord* cold = FindCold(task_id)) return Describe(*cold);
  return UnknownTask(task_id);
}

absl::StatusOr<std::string> TaskEngine::QueueOfTask(uint64_t task_id) {
  MutexLock lock(&mu_);
  if (auto it = tasks_.find(task_id); it != tasks_.end()) return it->second.task.queue();
  if (const std::string* queue = finished_.QueueOf(task_id)) return *queue;
  if (TaskRecord* cold = FindCold(task_id)) return cold->task.queue();
  return UnknownTask(task_id);
}

absl::StatusOr<v1::TaskState> TaskEngine::CancelTask(uint64_t task_id) {
  if (task_id == 0) return absl::InvalidArgumentError("task id 0 is not a task (ids start at 1)");
  Pending pending;
  v1::TaskState previous;
  {
    MutexLock lock(&mu_);
    if (auto s = Writable(); !s.ok()) return s;
    auto it = tasks_.find(task_id);
    if (it == tasks_.end() && FindCold(task_id) != nullptr) it = tasks_.find(task_id);
    if (it == tasks_.end()) {
      if (std::optional<v1::TaskState> finished = finished_.StateOf(task_id)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "task ", task_id, " cannot be cancelled: it is already ", StateName(*finished)));
      }
      return UnknownTask(task_id);
    }
    TaskRecord& rec = it->second;
    const Queue* home = FindQueue(rec.state == State::kDead ? rec.dead_in : rec.task.queue());
    if (home != nullptr) {
      if (auto s = Fenced(*home); !s.ok()) return s;
    }
    previous = ProtoState(rec.state);
    if (rec.state == State::kLeased) leases_.RememberRevoked(rec.lease_id, task_id);
    // A dead task already sent its FAILED result: no second one.
    bool send_result = rec.state != State::kDead;
    Finish(rec, v1::TASK_STATE_CANCELLED, v1::OUTCOME_CANCELLED, "",
           absl::StrCat("task ", task_id, " was cancelled"), send_result, pending);
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  LogInfo("task %d cancelled (was %s)", task_id, StateName(previous));
  return previous;
}

// --- dead letters ---------------------------------------------------------------------

absl::StatusOr<std::vector<v1::Task>> TaskEngine::ListDead(const std::string& queue,
                                                             uint64_t after_id, uint32_t limit) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  if (limit == 0) limit = kDefaultListDead;
  if (limit > kMaxListDead) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit ", limit, " is above the maximum page of ", kMaxListDead));
  }
  MutexLock lock(&mu_);
  Queue* q = FindQueue(queue);
  if (!q) {
    return absl::NotFoundError(absl::StrCat("queue \"", queue, "\" does not exist"));
  }
  std::vector<v1::Task> out;
  size_t bytes = 0;
  for (auto it = q->dead.upper_bound(after_id); it != q->dead.end() && out.size() < limit; ++it) {
    out.push_back(Describe(tasks_.at(*it)));
    bytes += out.back().ByteSizeLong();
    if (bytes >= kMaxListDeadBytes) break;  // large payloads: a shorter page
  }
  return out;
}

absl::Status TaskEngine::Requeue(TaskRecord& rec, Pending& pending) {
  const std::string origin = rec.task.queue();
  absl::StatusOr<Queue*> found = FindOrCreateQueue(origin, pending);
  if (!found.ok()) {
    return absl::Status(found.status().code(),
                        absl::StrCat("task ", rec.task.id(), " cannot go back to queue \"", origin,
                                     "\": ", found.status().message()));
  }
  Queue& q = **found;
  if (q.shut_down) {
    return absl::FailedPreconditionError(absl::StrCat(
        "task ", rec.task.id(), " cannot go back: queue \"", origin, "\" is shut down"));
  }
  Detach(rec);
  rec.task.set_attempt(0);  // a fresh start; the history stays
  if (!rec.dedup_key.empty()) {
    // Its key stayed taken while it was dead, unless its queue was deleted
    // and re-created meanwhile and a new task took the key.
    auto [it, inserted] = q.dedup.try_emplace(rec.dedup_key, rec.task.id());
    if (!inserted && it->second != rec.task.id()) rec.dedup_key.clear();
  }
  MakeReady(q, rec, /*new_place=*/true);
  CountOwed(q, rec);  // a new life: one more result
  Used(q);
  Touch(q, pending);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> TaskEngine::RequeueDead(const std::string& queue, uint64_t task_id) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  Pending pending;
  uint64_t requeued = 0;
  {
    MutexLock lock(&mu_);
    if (auto s = Writable(); !s.ok()) return s;
    Queue* q = FindQueue(queue);
    if (!q) {
      return absl::NotFoundError(absl::StrCat("queue \"", queue, "\" does not exist"));
    }
    if (auto s = Fenced(*q); !s.ok()) return s;
    if (task_id != 0) {
      if (!q->dead.contains(task_id)) {
        return absl::NotFoundError(absl::StrCat("task ", task_id,
                                                " is not in the dead-letter set of queue \"",
                                                queue, "\""));
      }
      if (absl::Status s = Requeue(tasks_.at(task_id), pending); !s.ok()) return s;
      requeued = 1;
    } else {
      // All that can go back; a task whose origin queue is gone or shut
      // down stays dead (and listed).
      std::vector<uint64_t> ids(q->dead.begin(), q->dead.end());
      for (uint64_t id : ids) {
        if (absl::Status s = Requeue(tasks_.at(id), pending); s.ok()) {
          ++requeued;
        } else {
          LogWarning("requeue of dead task %d skipped: %s", id, s.message());
        }
      }
    }
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return requeued;
}

absl::StatusOr<uint64_t> TaskEngine::PurgeDead(const std::string& queue) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  Pending pending;
  uint64_t purged;
  {
    MutexLock lock(&mu_);
    if (auto s = Writable(); !s.ok()) return s;
    Queue* q = FindQueue(queue);
    if (!q) {
      return absl::NotFoundError(absl::StrCat("queue \"", queue, "\" does not exist"));
    }
    if (auto s = Fenced(*q); !s.ok()) return s;
    std::vector<uint64_t> ids(q->dead.begin(), q->dead.end());
    for (uint64_t id : ids) {
      // Its FAILED result went out when it died; purging ends it as failed.
      Finish(tasks_.at(id), v1::TASK_STATE_FAILED, v1::OUTCOME_FAILED, "", "", false, pending);
    }
    purged = ids.size();
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return purged;
}

}  // namespace taskq
