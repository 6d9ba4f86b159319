#include "master/memory_engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/limits.h"
#include "common/log.h"

namespace taskq {

namespace {

std::string KindName(v1::QueueKind kind) {
  switch (kind) {
    case v1::QUEUE_KIND_LIFO: return "lifo";
    case v1::QUEUE_KIND_PRIORITY: return "priority";
    default: return "fifo";
  }
}

std::string Describe(const v1::QueueConfig& c) {
  return absl::StrCat("kind ", KindName(c.kind()), ", maxsize ", c.maxsize(), ", lease ",
                      c.lease_ms(), " ms, max attempts ", c.max_attempts());
}

absl::Status QueueMissing(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("queue \"", name,
                                          "\" does not exist (create it with: taskq queue create ",
                                          name, ")"));
}

absl::Status ShuttingDown() { return absl::UnavailableError("master is shutting down"); }

int64_t UnixMillis(absl::Time t) { return absl::ToUnixMillis(t); }

}  // namespace

// Callbacks and deliveries collected under the lock, run after it.
class MemoryEngine::Pending {
 public:
  void Add(absl::AnyInvocable<void()> fn) { calls_.push_back(std::move(fn)); }
  void Deliver(SubscriptionId sub, const DeliverFn& fn, v1::Delivery d) {
    Batch& b = batches_[sub];
    if (!b.fn) b.fn = fn;
    b.items.push_back(std::move(d));
  }
  void WakeTimer() { wake_timer_ = true; }
  void Run(const std::function<void()>& wake) {
    for (auto& [sub, batch] : batches_) batch.fn(std::move(batch.items));
    for (auto& call : calls_) call();
    if (wake_timer_ && wake) wake();
  }

 private:
  struct Batch {
    DeliverFn fn;
    std::vector<v1::Delivery> items;
  };
  std::vector<absl::AnyInvocable<void()>> calls_;
  absl::flat_hash_map<SubscriptionId, Batch> batches_;
  bool wake_timer_ = false;
};

MemoryEngine::MemoryEngine(EngineOptions options, Clock* clock,
                           std::function<void()> on_earlier_deadline)
    : options_(options), clock_(clock), on_earlier_deadline_(std::move(on_earlier_deadline)) {}

MemoryEngine::~MemoryEngine() { Shutdown(); }

// --- queues -------------------------------------------------------------------

v1::QueueConfig MemoryEngine::FillDefaults(v1::QueueConfig c) const {
  if (c.kind() == v1::QUEUE_KIND_UNSPECIFIED) c.set_kind(v1::QUEUE_KIND_FIFO);
  if (c.lease_ms() == 0) {
    c.set_lease_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(options_.default_lease)));
  }
  if (c.max_attempts() == 0) c.set_max_attempts(options_.default_max_attempts);
  return c;
}

MemoryEngine::Queue* MemoryEngine::FindQueue(const std::string& name) {
  auto it = queues_.find(name);
  return it == queues_.end() ? nullptr : it->second.get();
}

absl::StatusOr<MemoryEngine::Queue*> MemoryEngine::FindOrCreateQueue(const std::string& name) {
  // Every caller is a new call (put, get, subscribe): refuse them all here.
  if (shut_down_) return ShuttingDown();
  if (Queue* q = FindQueue(name)) return q;
  if (auto s = ValidateName("queue", name); !s.ok()) return s;
  if (!options_.auto_create_queues) return QueueMissing(name);
  auto q = std::make_unique<Queue>();
  v1::QueueConfig config;
  config.set_name(name);
  q->config = FillDefaults(config);
  Queue* raw = q.get();
  queues_.emplace(name, std::move(q));
  LogInfo("queue \"%s\" created on first use (%s)", name, Describe(raw->config));
  return raw;
}

absl::StatusOr<v1::QueueConfig> MemoryEngine::CreateQueue(const v1::QueueConfig& requested,
                                                          bool exist_ok) {
  if (auto s = ValidateName("queue", requested.name()); !s.ok()) return s;
  if (!v1::QueueKind_IsValid(requested.kind())) {
    return absl::InvalidArgumentError(absl::StrCat("unknown queue kind ", requested.kind()));
  }
  if (requested.lease_ms() != 0 && (requested.lease_ms() < 100 || requested.lease_ms() > 86'400'000)) {
    return absl::InvalidArgumentError(
        absl::StrCat("lease of ", requested.lease_ms(), " ms is outside 100 ms .. 24 h"));
  }
  if (requested.max_attempts() > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("max attempts ", requested.max_attempts(), " is above the limit of 1000"));
  }
  v1::QueueConfig config = FillDefaults(requested);
  MutexLock lock(&mu_);
  if (shut_down_) return ShuttingDown();
  if (Queue* q = FindQueue(config.name())) {
    bool same = q->config.SerializeAsString() == config.SerializeAsString();
    if (exist_ok && same) return q->config;
    return absl::AlreadyExistsError(absl::StrCat("queue \"", config.name(), "\" already exists (",
                                                 Describe(q->config), ")"));
  }
  auto q = std::make_unique<Queue>();
  q->config = config;
  queues_.emplace(config.name(), std::move(q));
  return config;
}

v1::QueueStats MemoryEngine::StatsOf(const Queue& q) {
  v1::QueueStats s;
  *s.mutable_config() = q.config;
  s.set_ready(q.ready.size());
  s.set_leased(q.leased.size());
  s.set_unfinished(q.unfinished);
  s.set_total_put(q.total_put);
  s.set_total_completed(q.total_completed);
  s.set_total_failed(q.total_failed);
  s.set_waiting_consumers(q.live_getters);
  s.set_waiting_producers(q.live_putters);
  auto it = subs_by_queue_.find(q.config.name());
  s.set_workers(it == subs_by_queue_.end() ? 0 : static_cast<uint32_t>(it->second.size()));
  return s;
}

std::vector<v1::QueueStats> MemoryEngine::ListQueues() {
  MutexLock lock(&mu_);
  std::vector<v1::QueueStats> out;
  out.reserve(queues_.size());
  for (const auto& [name, q] : queues_) out.push_back(StatsOf(*q));
  std::sort(out.begin(), out.end(), [](const v1::QueueStats& a, const v1::QueueStats& b) {
    return a.config().name() < b.config().name();
  });
  return out;
}

absl::StatusOr<v1::QueueStats> MemoryEngine::Stats(const std::string& queue) {
  MutexLock lock(&mu_);
  Queue* q = FindQueue(queue);
  if (!q) return QueueMissing(queue);
  return StatsOf(*q);
}

absl::Status MemoryEngine::DeleteQueue(const std::string& queue) {
  Pending pending;
  {
    MutexLock lock(&mu_);
    Queue* q = FindQueue(queue);
    if (!q) return QueueMissing(queue);
    absl::Status gone = absl::NotFoundError(absl::StrCat("queue \"", queue, "\" was deleted"));
    for (WaitId id : q->getters) FailWaiter(id, gone, pending);
    for (WaitId id : q->putters) FailWaiter(id, gone, pending);
    for (WaitId id : q->joiners) FailWaiter(id, gone, pending);
    for (const ReadyKey& key : q->ready) tasks_.erase(key.id);
    std::vector<uint64_t> leased(q->leased.begin(), q->leased.end());
    for (uint64_t id : leased) {
      ClearLease(tasks_.at(id));
      tasks_.erase(id);
    }
    queues_.erase(queue);
  }
  pending.Run(on_earlier_deadline_);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> MemoryEngine::PurgeQueue(const std::string& queue) {
  Pending pending;
  uint64_t purged;
  {
    MutexLock lock(&mu_);
    Queue* q = FindQueue(queue);
    if (!q) return QueueMissing(queue);
    purged = q->ready.size();
    for (const ReadyKey& key : q->ready) tasks_.erase(key.id);
    q->ready.clear();
    q->unfinished -= purged;
    Settle(*q, pending);
  }
  pending.Run(on_earlier_deadline_);
  return purged;
}

// --- put ------------------------------------------------------------------------

absl::Status MemoryEngine::ValidatePut(const PutArgs& args) const {
  if (args.tasks.empty()) return absl::InvalidArgumentError("put carries no tasks");
  if (args.tasks.size() > kMaxTasksPerPut) {
    return absl::InvalidArgumentError(absl::StrCat("put carries ", args.tasks.size(),
                                                   " tasks; the limit is ", kMaxTasksPerPut,
                                                   " per call: send smaller batches"));
  }
  for (size_t i = 0; i < args.tasks.size(); ++i) {
    const v1::TaskSpec& t = args.tasks[i];
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("task ", i, ": ", why));
    };
    if (t.payload().size() > options_.max_payload_bytes) {
      return bad(absl::StrCat("payload is too large (", t.payload().size(),
                              " bytes; the limit is ", options_.max_payload_bytes, ")"));
    }
    if (!t.handler().empty()) {
      if (auto s = ValidateName("handler", t.handler()); !s.ok()) return bad(s.message());
    }
    if (!t.reply_to().empty()) {
      if (auto s = ValidateName("reply_to queue", t.reply_to()); !s.ok()) return bad(s.message());
    }
    if (static_cast<size_t>(t.headers_size()) > kMaxHeaders) {
      return bad(absl::StrCat("has ", t.headers_size(), " headers; the limit is ", kMaxHeaders));
    }
    for (const auto& [k, v] : t.headers()) {
      if (k.empty() || k.size() > kMaxHeaderKeyBytes || v.size() > kMaxHeaderValueBytes) {
        return bad(absl::StrCat("header keys must be 1..", kMaxHeaderKeyBytes,
                                " bytes and values at most ", kMaxHeaderValueBytes, " bytes"));
      }
    }
    if (static_cast<size_t>(t.args_size()) > kMaxArgs) {
      return bad(absl::StrCat("has ", t.args_size(), " args; the limit is ", kMaxArgs));
    }
    for (const std::string& a : t.args()) {
      if (a.size() > kMaxArgBytes) {
        return bad(absl::StrCat("an arg is ", a.size(), " bytes; the limit is ", kMaxArgBytes));
      }
    }
  }
  return absl::OkStatus();
}

bool MemoryEngine::Fits(const Queue& q, size_t n) const {
  if (q.config.maxsize() == 0) return true;
  return q.ready.size() + q.leased.size() + n <= q.config.maxsize();
}

MemoryEngine::ReadyKey MemoryEngine::MakeKey(const Queue& q, const v1::Task& task) {
  int64_t seq = next_seq_++;
  switch (q.config.kind()) {
    case v1::QUEUE_KIND_LIFO: return ReadyKey{0, -seq, task.id()};
    case v1::QUEUE_KIND_PRIORITY: return ReadyKey{task.priority(), seq, task.id()};
    default: return ReadyKey{0, seq, task.id()};
  }
}

std::vector<uint64_t> MemoryEngine::Insert(Queue& q, std::vector<v1::TaskSpec>& specs) {
  std::vector<uint64_t> ids;
  ids.reserve(specs.size());
  int64_t now_ms = UnixMillis(clock_->Now());
  for (v1::TaskSpec& spec : specs) {
    uint64_t id = next_task_id_++;
    TaskRecord rec;
    v1::Task& t = rec.task;
    t.set_id(id);
    t.set_queue(q.config.name());
    t.mutable_payload()->swap(*spec.mutable_payload());
    t.mutable_handler()->swap(*spec.mutable_handler());
    t.set_priority(spec.priority());
    t.mutable_reply_to()->swap(*spec.mutable_reply_to());
    t.mutable_headers()->swap(*spec.mutable_headers());
    t.mutable_args()->Swap(spec.mutable_args());
    t.set_enqueued_unix_ms(now_ms);
    rec.key = MakeKey(q, t);
    q.ready.insert(rec.key);
    tasks_.emplace(id, std::move(rec));
    ids.push_back(id);
  }
  q.unfinished += specs.size();
  q.total_put += specs.size();
  return ids;
}

WaitId MemoryEngine::Put(PutArgs args, PutCallback done) {
  Pending pending;
  WaitId wait_id = 0;
  auto fail = [&](absl::Status s) {
    pending.Add([done = std::move(done), s]() mutable { done(s); });
  };
  {
    MutexLock lock(&mu_);
    absl::StatusOr<Queue*> q = FindOrCreateQueue(args.queue);
    absl::Status status = q.ok() ? ValidatePut(args) : q.status();
    if (status.ok() && (*q)->config.maxsize() != 0 && args.tasks.size() > (*q)->config.maxsize()) {
      status = absl::InvalidArgumentError(
          absl::StrCat("put of ", args.tasks.size(), " tasks can never fit queue \"", args.queue,
                       "\" (maxsize ", (*q)->config.maxsize(), "): send smaller batches"));
    }
    // Reply-to queues must exist (or be creatable) before the task is accepted.
    for (size_t i = 0; status.ok() && i < args.tasks.size(); ++i) {
      const std::string& r = args.tasks[i].reply_to();
      if (!r.empty() && (i == 0 || r != args.tasks[i - 1].reply_to())) {
        if (auto rq = FindOrCreateQueue(r); !rq.ok()) {
          status = absl::Status(rq.status().code(),
                                absl::StrCat("reply_to: ", rq.status().message()));
        }
      }
    }
    if (!status.ok()) {
      fail(status);
    } else if ((*q)->live_putters == 0 && Fits(**q, args.tasks.size())) {
      std::vector<uint64_t> ids = Insert(**q, args.tasks);
      Settle(**q, pending);
      pending.Add([done = std::move(done), ids = std::move(ids)]() mutable { done(std::move(ids)); });
    } else if (args.nowait || args.deadline <= clock_->Now()) {
      fail(absl::ResourceExhaustedError(absl::StrCat(
          "queue \"", args.queue, "\" is full (maxsize ", (*q)->config.maxsize(),
          "); retry later or put with a timeout to wait for room")));
    } else {
      Waiter w;
      w.kind = WaitKind::kPut;
      w.queue = args.queue;
      w.deadline = args.deadline;
      w.put = std::move(args);
      w.put_done = std::move(done);
      wait_id = AddWaiter(**q, std::move(w), pending);
    }
  }
  pending.Run(on_earlier_deadline_);
  return wait_id;
}

// --- get --------------------------------------------------------------------------

v1::Delivery MemoryEngine::Lease(Queue& q, TaskRecord& rec, SubscriptionId holder) {
  absl::Time now = clock_->Now();
  rec.leased = true;
  rec.lease_id = next_lease_id_++;
  rec.lease_deadline = now + absl::Milliseconds(q.config.lease_ms());
  rec.holder = holder;
  rec.task.set_attempt(rec.task.attempt() + 1);
  lease_deadlines_.insert({rec.lease_deadline, rec.lease_id});
  lease_to_task_[rec.lease_id] = rec.task.id();
  q.leased.insert(rec.task.id());
  if (holder != 0) subs_[holder].lease_ids.insert(rec.lease_id);
  v1::Delivery d;
  *d.mutable_task() = rec.task;
  d.set_lease_id(rec.lease_id);
  d.set_lease_deadline_unix_ms(UnixMillis(rec.lease_deadline));
  return d;
}

// Takes up to `max` ready tasks for one Get. Take mode removes them.
std::vector<v1::Delivery> MemoryEngine::TakeReady(Queue& q, const GetArgs& args,
                                                  Pending& pending) {
  std::vector<v1::Delivery> out;
  absl::Time earliest_before = NextDeadlineLocked();
  while (!q.ready.empty() && out.size() < args.max_tasks) {
    uint64_t id = q.ready.begin()->id;
    q.ready.erase(q.ready.begin());
    auto it = tasks_.find(id);
    if (args.lease) {
      out.push_back(Lease(q, it->second, 0));
      continue;
    }
    v1::Delivery d;
    it->second.task.set_attempt(it->second.task.attempt() + 1);
    *d.mutable_task() = std::move(it->second.task);
    out.push_back(std::move(d));
    tasks_.erase(it);
    if (args.manual_task_done) {
      ++q.awaiting_task_done;
    } else {
      --q.unfinished;
      ++q.total_completed;
    }
  }
  if (NextDeadlineLocked() < earliest_before) pending.WakeTimer();
  return out;
}

WaitId MemoryEngine::Get(GetArgs args, GetCallback done) {
  Pending pending;
  WaitId wait_id = 0;
  auto fail = [&](absl::Status s) {
    pending.Add([done = std::move(done), s]() mutable { done(s); });
  };
  if (args.max_tasks == 0) args.max_tasks = 1;
  {
    MutexLock lock(&mu_);
    absl::StatusOr<Queue*> q = FindOrCreateQueue(args.queue);
    if (!q.ok()) {
      fail(q.status());
    } else if (args.max_tasks > kMaxTasksPerGet) {
      fail(absl::InvalidArgumentError(absl::StrCat("max_tasks ", args.max_tasks,
                                                   " is above the limit of ", kMaxTasksPerGet)));
    } else if ((*q)->live_getters == 0 && !(*q)->ready.empty()) {
      std::vector<v1::Delivery> got = TakeReady(**q, args, pending);
      Settle(**q, pending);
      pending.Add([done = std::move(done), got = std::move(got)]() mutable { done(std::move(got)); });
    } else if (args.nowait || args.deadline <= clock_->Now()) {
      fail(absl::DeadlineExceededError(absl::StrCat("queue \"", args.queue, "\" is empty")));
    } else {
      Waiter w;
      w.kind = WaitKind::kGet;
      w.queue = args.queue;
      w.deadline = args.deadline;
      w.get = std::move(args);
      w.get_done = std::move(done);
      wait_id = AddWaiter(**q, std::move(w), pending);
    }
  }
  pending.Run(on_earlier_deadline_);
  return wait_id;
}

// --- dispatch ---------------------------------------------------------------------

void MemoryEngine::Settle(Queue& q, Pending& pending) {
  // Iterative, not recursive: admitting a putter makes tasks ready, serving
  // a take-mode getter makes room for putters.
  for (;;) {
    Dispatch(q, pending);
    if (!AdmitPutters(q, pending)) break;
  }
  WakeJoiners(q, pending);
}

void MemoryEngine::Dispatch(Queue& q, Pending& pending) {
  while (!q.ready.empty() && !q.getters.empty()) {
    WaitId id = q.getters.front();
    q.getters.pop_front();
    auto it = waiters_.find(id);
    if (it == waiters_.end()) continue;  // finished earlier (lazy deletion)
    Waiter& w = it->second;
    std::vector<v1::Delivery> got = TakeReady(q, w.get, pending);
    --q.live_getters;
    if (w.deadline != absl::InfiniteFuture()) wait_deadlines_.erase({w.deadline, id});
    pending.Add([done = std::move(w.get_done), got = std::move(got)]() mutable {
      done(std::move(got));
    });
    waiters_.erase(it);
  }
  if (q.ready.empty()) return;
  auto subs_it = subs_by_queue_.find(q.config.name());
  if (subs_it == subs_by_queue_.end() || subs_it->second.empty()) return;
  const std::vector<SubscriptionId>& subs = subs_it->second;
  size_t& next = round_robin_[q.config.name()];
  absl::Time earliest_before = NextDeadlineLocked();
  // Round robin, one task per worker with credit per turn, so one fast
  // worker with a big window does not take everything.
  size_t idle_in_a_row = 0;
  while (!q.ready.empty() && idle_in_a_row < subs.size()) {
    next %= subs.size();
    SubscriptionId sub_id = subs[next++];
    Subscription& sub = subs_.at(sub_id);
    if (sub.credits == 0) {
      ++idle_in_a_row;
      continue;
    }
    idle_in_a_row = 0;
    --sub.credits;
    uint64_t id = q.ready.begin()->id;
    q.ready.erase(q.ready.begin());
    pending.Deliver(sub_id, sub.deliver, Lease(q, tasks_.at(id), sub_id));
  }
  if (NextDeadlineLocked() < earliest_before) pending.WakeTimer();
}

bool MemoryEngine::AdmitPutters(Queue& q, Pending& pending) {
  bool admitted = false;
  while (!q.putters.empty()) {
    WaitId id = q.putters.front();
    auto it = waiters_.find(id);
    if (it == waiters_.end()) {
      q.putters.pop_front();
      continue;
    }
    Waiter& w = it->second;
    if (!Fits(q, w.put.tasks.size())) break;  // FIFO: nobody overtakes the head
    q.putters.pop_front();
    --q.live_putters;
    std::vector<uint64_t> ids = Insert(q, w.put.tasks);
    if (w.deadline != absl::InfiniteFuture()) wait_deadlines_.erase({w.deadline, id});
    pending.Add([done = std::move(w.put_done), ids = std::move(ids)]() mutable {
      done(std::move(ids));
    });
    waiters_.erase(it);
    admitted = true;
  }
  return admitted;
}

void MemoryEngine::WakeJoiners(Queue& q, Pending& pending) {
  if (q.unfinished != 0 || q.joiners.empty()) return;
  for (WaitId id : q.joiners) {
    auto it = waiters_.find(id);
    if (it == waiters_.end()) continue;
    if (it->second.deadline != absl::InfiniteFuture()) {
      wait_deadlines_.erase({it->second.deadline, id});
    }
    pending.Add([done = std::move(it->second.join_done)]() mutable { done(absl::OkStatus()); });
    waiters_.erase(it);
  }
  q.joiners.clear();
}

// --- settle leases -------------------------------------------------------------------

absl::StatusOr<MemoryEngine::TaskRecord*> MemoryEngine::FindLease(uint64_t task_id,
                                                                  uint64_t lease_id) {
  auto it = tasks_.find(task_id);
  if (it == tasks_.end() || !it->second.leased || it->second.lease_id != lease_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        "lease lost: task ", task_id, " is no longer held under lease ", lease_id,
        " (it expired, was released, or the task was completed or deleted); "
        "this report is discarded"));
  }
  return &it->second;
}

void MemoryEngine::ClearLease(TaskRecord& rec) {
  if (!rec.leased) return;
  lease_deadlines_.erase({rec.lease_deadline, rec.lease_id});
  lease_to_task_.erase(rec.lease_id);
  if (Queue* q = FindQueue(rec.task.queue())) q->leased.erase(rec.task.id());
  if (rec.holder != 0) {
    if (auto it = subs_.find(rec.holder); it != subs_.end()) it->second.lease_ids.erase(rec.lease_id);
  }
  rec.leased = false;
  rec.lease_id = 0;
  rec.lease_deadline = absl::InfiniteFuture();
  rec.holder = 0;
}

void MemoryEngine::DeliverResult(const TaskRecord& rec, v1::Outcome outcome, std::string result,
                                 std::string error, Pending& pending) {
  const std::string& reply_to = rec.task.reply_to();
  // The reply queue was made (or checked) when the task was put. If it is
  // gone now, its owner deleted it (e.g. `submit --wait` gave up): do not
  // resurrect it as an orphan nobody reads.
  Queue* rq = FindQueue(reply_to);
  if (!rq) {
    LogInfo("result of task %d dropped: its reply_to queue \"%s\" was deleted", rec.task.id(),
            reply_to);
    return;
  }
  Queue& q = *rq;
  uint64_t id = next_task_id_++;
  TaskRecord r;
  r.task.set_id(id);
  r.task.set_queue(reply_to);
  r.task.set_payload(std::move(result));
  *r.task.mutable_headers() = rec.task.headers();
  r.task.set_result_of(rec.task.id());
  r.task.set_outcome(outcome);
  r.task.set_error(std::move(error));
  r.task.set_enqueued_unix_ms(UnixMillis(clock_->Now()));
  r.key = MakeKey(q, r.task);
  q.ready.insert(r.key);
  ++q.unfinished;
  ++q.total_put;
  tasks_.emplace(id, std::move(r));
  Settle(q, pending);
}

void MemoryEngine::Finish(TaskRecord& rec, v1::Outcome outcome, std::string result,
                          std::string error, Pending& pending) {
  Queue* q = FindQueue(rec.task.queue());
  if (rec.leased) {
    ClearLease(rec);
  } else if (q) {
    q->ready.erase(rec.key);
  }
  uint64_t id = rec.task.id();
  if (q) {
    --q->unfinished;
    if (outcome == v1::OUTCOME_OK) {
      ++q->total_completed;
    } else {
      ++q->total_failed;
    }
  }
  if (!rec.task.reply_to().empty()) {
    DeliverResult(rec, outcome, std::move(result), std::move(error), pending);
  }
  tasks_.erase(id);
  if (q) Settle(*q, pending);
}

void MemoryEngine::ReturnLease(TaskRecord& rec, absl::string_view why, Pending& pending) {
  Queue* q = FindQueue(rec.task.queue());
  if (q && rec.task.attempt() >= q->config.max_attempts()) {
    std::string error = absl::StrCat("gave up after ", rec.task.attempt(), " attempts: ", why);
    if (!rec.task.error().empty()) absl::StrAppend(&error, " (last error: ", rec.task.error(), ")");
    Finish(rec, v1::OUTCOME_FAILED, "", std::move(error), pending);
    return;
  }
  ClearLease(rec);
  if (!q) return;
  q->ready.insert(rec.key);
  Settle(*q, pending);
}

absl::Status MemoryEngine::Complete(uint64_t task_id, uint64_t lease_id, std::string result) {
  if (result.size() > options_.max_payload_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("result is too large (", result.size(),
                                                   " bytes; the limit is ",
                                                   options_.max_payload_bytes, ")"));
  }
  Pending pending;
  {
    MutexLock lock(&mu_);
    absl::StatusOr<TaskRecord*> rec = FindLease(task_id, lease_id);
    if (!rec.ok()) return rec.status();
    Finish(**rec, v1::OUTCOME_OK, std::move(result), "", pending);
  }
  pending.Run(on_earlier_deadline_);
  return absl::OkStatus();
}

absl::Status MemoryEngine::Fail(uint64_t task_id, uint64_t lease_id, std::string error,
                                bool permanent) {
  if (error.size() > kMaxErrorBytes) error.resize(kMaxErrorBytes);
  Pending pending;
  {
    MutexLock lock(&mu_);
    absl::StatusOr<TaskRecord*> found = FindLease(task_id, lease_id);
    if (!found.ok()) return found.status();
    TaskRecord& rec = **found;
    Queue* q = FindQueue(rec.task.queue());
    if (permanent || !q || rec.task.attempt() >= q->config.max_attempts()) {
      std::string why = permanent ? error
                                  : absl::StrCat("gave up after ", rec.task.attempt(),
                                                 " attempts; last error: ", error);
      Finish(rec, v1::OUTCOME_FAILED, "", std::move(why), pending);
    } else {
      rec.task.set_error(std::move(error));
      ClearLease(rec);
      q->ready.insert(rec.key);
      Settle(*q, pending);
    }
  }
  pending.Run(on_earlier_deadline_);
  return absl::OkStatus();
}

absl::StatusOr<absl::Time> MemoryEngine::ExtendLease(uint64_t lease_id) {
  MutexLock lock(&mu_);
  auto it = lease_to_task_.find(lease_id);
  if (it == lease_to_task_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "lease lost: lease ", lease_id, " is no longer held (expired, released or completed)"));
  }
  TaskRecord& rec = tasks_.at(it->second);
  Queue* q = FindQueue(rec.task.queue());
  lease_deadlines_.erase({rec.lease_deadline, lease_id});
  rec.lease_deadline = clock_->Now() + absl::Milliseconds(q ? q->config.lease_ms() : 30000);
  lease_deadlines_.insert({rec.lease_deadline, lease_id});
  return rec.lease_deadline;
}

absl::Status MemoryEngine::TaskDone(const std::string& queue, uint32_t count) {
  if (count == 0) count = 1;
  Pending pending;
  {
    MutexLock lock(&mu_);
    Queue* q = FindQueue(queue);
    if (!q) return QueueMissing(queue);
    if (count > q->awaiting_task_done) {
      return absl::FailedPreconditionError(absl::StrCat(
          "task_done called for ", count, " tasks but only ", q->awaiting_task_done,
          " taken with manual_task_done are outstanding on queue \"", queue, "\""));
    }
    q->awaiting_task_done -= count;
    q->unfinished -= count;
    q->total_completed += count;
    Settle(*q, pending);
  }
  pending.Run(on_earlier_deadline_);
  return absl::OkStatus();
}

WaitId MemoryEngine::Join(const std::string& queue, absl::Time deadline, DoneCallback done) {
  Pending pending;
  WaitId wait_id = 0;
  {
    MutexLock lock(&mu_);
    Queue* q = shut_down_ ? nullptr : FindQueue(queue);
    absl::Status status = shut_down_ ? ShuttingDown() : q ? absl::OkStatus() : QueueMissing(queue);
    if (status.ok() && q->unfinished != 0 && deadline <= clock_->Now()) {
      status = absl::DeadlineExceededError(absl::StrCat(
          "queue \"", queue, "\" still has ", q->unfinished, " unfinished tasks"));
    }
    if (!status.ok() || q->unfinished == 0) {
      pending.Add([done = std::move(done), status]() mutable { done(status); });
    } else {
      Waiter w;
      w.kind = WaitKind::kJoin;
      w.queue = queue;
      w.deadline = deadline;
      w.join_done = std::move(done);
      wait_id = AddWaiter(*q, std::move(w), pending);
    }
  }
  pending.Run(on_earlier_deadline_);
  return wait_id;
}

// --- workers ----------------------------------------------------------------------------

absl::StatusOr<SubscriptionId> MemoryEngine::Subscribe(const std::vector<std::string>& queues,
                                                       const std::string& worker_id,
                                                       DeliverFn deliver) {
  if (queues.empty() || queues.size() > kMaxQueuesPerWorker) {
    return absl::InvalidArgumentError(absl::StrCat("a worker takes from 1 to ",
                                                   kMaxQueuesPerWorker, " queues, not ",
                                                   queues.size()));
  }
  if (worker_id.size() > kMaxWorkerIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker id is longer than ", kMaxWorkerIdBytes, " bytes"));
  }
  MutexLock lock(&mu_);
  for (const std::string& name : queues) {
    if (auto q = FindOrCreateQueue(name); !q.ok()) return q.status();
  }
  SubscriptionId id = next_sub_id_++;
  Subscription& sub = subs_[id];
  sub.worker_id = worker_id;
  sub.deliver = std::move(deliver);
  for (const std::string& name : queues) {
    if (std::find(sub.queues.begin(), sub.queues.end(), name) != sub.queues.end()) continue;
    sub.queues.push_back(name);
    subs_by_queue_[name].push_back(id);
  }
  return id;
}

absl::Status MemoryEngine::AddCredits(SubscriptionId sub_id, uint32_t credits) {
  Pending pending;
  {
    MutexLock lock(&mu_);
    auto it = subs_.find(sub_id);
    if (it == subs_.end()) return absl::NotFoundError("no such worker subscription");
    Subscription& sub = it->second;
    if (static_cast<uint64_t>(sub.credits) + sub.lease_ids.size() + credits > kMaxCredits) {
      return absl::InvalidArgumentError(
          absl::StrCat("credit window above the limit of ", kMaxCredits, " tasks in flight"));
    }
    sub.credits += credits;
    for (const std::string& name : sub.queues) {
      if (Queue* q = FindQueue(name)) Settle(*q, pending);
    }
  }
  pending.Run(on_earlier_deadline_);
  return absl::OkStatus();
}

void MemoryEngine::Unsubscribe(SubscriptionId sub_id) {
  Pending pending;
  {
    MutexLock lock(&mu_);
    auto it = subs_.find(sub_id);
    if (it == subs_.end()) return;
    Subscription& sub = it->second;
    // Detach first so the returned tasks are not handed straight back to it.
    sub.credits = 0;
    for (const std::string& name : sub.queues) {
      auto list = subs_by_queue_.find(name);
      if (list == subs_by_queue_.end()) continue;
      std::erase(list->second, sub_id);
      if (list->second.empty()) {
        subs_by_queue_.erase(list);
        round_robin_.erase(name);
      }
    }
    std::vector<uint64_t> leases(sub.lease_ids.begin(), sub.lease_ids.end());
    std::string why = absl::StrCat("worker ", sub.worker_id, " disconnected");
    for (uint64_t lease_id : leases) {
      auto t = lease_to_task_.find(lease_id);
      if (t != lease_to_task_.end()) ReturnLease(tasks_.at(t->second), why, pending);
    }
    subs_.erase(sub_id);
  }
  pending.Run(on_earlier_deadline_);
}

// --- waiting and time -----------------------------------------------------------------------

absl::Time MemoryEngine::NextDeadlineLocked() {
  absl::Time t = absl::InfiniteFuture();
  if (!wait_deadlines_.empty()) t = wait_deadlines_.begin()->first;
  if (!lease_deadlines_.empty()) t = std::min(t, lease_deadlines_.begin()->first);
  return t;
}

absl::Time MemoryEngine::NextDeadline() {
  MutexLock lock(&mu_);
  return NextDeadlineLocked();
}

WaitId MemoryEngine::AddWaiter(Queue& q, Waiter w, Pending& pending) {
  WaitId id = next_wait_id_++;
  if (w.deadline != absl::InfiniteFuture()) {
    if (w.deadline < NextDeadlineLocked()) pending.WakeTimer();
    wait_deadlines_.insert({w.deadline, id});
  }
  switch (w.kind) {
    case WaitKind::kPut:
      q.putters.push_back(id);
      ++q.live_putters;
      break;
    case WaitKind::kGet:
      q.getters.push_back(id);
      ++q.live_getters;
      break;
    case WaitKind::kJoin:
      q.joiners.push_back(id);
      break;
  }
  waiters_.emplace(id, std::move(w));
  return id;
}

void MemoryEngine::FailWaiter(WaitId id, absl::Status status, Pending& pending) {
  auto it = waiters_.find(id);
  if (it == waiters_.end()) return;
  Waiter& w = it->second;
  if (w.deadline != absl::InfiniteFuture()) wait_deadlines_.erase({w.deadline, id});
  Queue* q = FindQueue(w.queue);
  switch (w.kind) {
    case WaitKind::kPut:
      if (q) --q->live_putters;
      pending.Add([done = std::move(w.put_done), status]() mutable { done(status); });
      break;
    case WaitKind::kGet:
      if (q) --q->live_getters;
      pending.Add([done = std::move(w.get_done), status]() mutable { done(status); });
      break;
    case WaitKind::kJoin:
      pending.Add([done = std::move(w.join_done), status]() mutable { done(status); });
      break;
  }
  waiters_.erase(it);
  if (q) CompactWaitLists(*q);
}

void MemoryEngine::CompactWaitLists(Queue& q) {
  // Lazy deletion leaves ids of finished waiters behind; drop them once they
  // outnumber the live ones so churn cannot grow the lists without bound.
  auto drop_finished = [this](auto& ids) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    size_t kept = 0;
    for (WaitId id : ids) {
      if (waiters_.contains(id)) ids[kept++] = id;
    }
    ids.resize(kept);
  };
  if (q.getters.size() > 2 * static_cast<size_t>(q.live_getters) + 64) drop_finished(q.getters);
  if (q.putters.size() > 2 * static_cast<size_t>(q.live_putters) + 64) drop_finished(q.putters);
  if (q.joiners.size() > 64) drop_finished(q.joiners);
}

void MemoryEngine::CancelWait(WaitId id) {
  if (id == 0) return;
  Pending pending;
  {
    MutexLock lock(&mu_);
    FailWaiter(id, absl::CancelledError("cancelled by the client"), pending);
  }
  pending.Run(on_earlier_deadline_);
}

void MemoryEngine::AdvanceTo(absl::Time now) {
  Pending pending;
  {
    MutexLock lock(&mu_);
    while (!wait_deadlines_.empty() && wait_deadlines_.begin()->first <= now) {
      WaitId id = wait_deadlines_.begin()->second;
      auto it = waiters_.find(id);
      if (it == waiters_.end()) {
        wait_deadlines_.erase(wait_deadlines_.begin());
        continue;
      }
      const std::string& name = it->second.queue;
      absl::Status status;
      switch (it->second.kind) {
        case WaitKind::kPut: {
          Queue* q = FindQueue(name);
          status = absl::ResourceExhaustedError(absl::StrCat(
              "queue \"", name, "\" is full (maxsize ", q ? q->config.maxsize() : 0,
              "): no room within the timeout"));
          break;
        }
        case WaitKind::kGet:
          status = absl::DeadlineExceededError(
              absl::StrCat("queue \"", name, "\" is empty: no task within the timeout"));
          break;
        case WaitKind::kJoin: {
          Queue* q = FindQueue(name);
          status = absl::DeadlineExceededError(absl::StrCat(
              "queue \"", name, "\" still has ", q ? q->unfinished : 0, " unfinished tasks"));
          break;
        }
      }
      FailWaiter(id, status, pending);
    }
    while (!lease_deadlines_.empty() && lease_deadlines_.begin()->first <= now) {
      uint64_t lease_id = lease_deadlines_.begin()->second;
      auto t = lease_to_task_.find(lease_id);
      if (t == lease_to_task_.end()) {
        lease_deadlines_.erase(lease_deadlines_.begin());
        continue;
      }
      ReturnLease(tasks_.at(t->second), "lease expired", pending);
    }
  }
  pending.Run(on_earlier_deadline_);
}

void MemoryEngine::Shutdown() {
  Pending pending;
  {
    MutexLock lock(&mu_);
    shut_down_ = true;
    std::vector<WaitId> ids;
    ids.reserve(waiters_.size());
    for (const auto& [id, w] : waiters_) ids.push_back(id);
    for (WaitId id : ids) FailWaiter(id, ShuttingDown(), pending);
  }
  pending.Run(nullptr);
}

}  // namespace taskq
