// TaskEngine: queues and their settings, put, get, hand-out
// (getters and worker subscriptions), waiting calls and time. Task states
// are task_engine_states.cc's.
#include "master/engine/task_engine.h"

#include <algorithm>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/limits.h"
#include "common/log.h"
#include "master/engine/pending.h"

namespace taskq {

namespace {

std::string KindName(v1::QueueKind kind) {
  switch (kind) {
    case v1::QUEUE_KIND_LIFO: return "lifo";
    case v1::QUEUE_KIND_PRIORITY: return "priority";
    default: return "fifo";
  }
}

std::string DescribeConfig(const v1::QueueConfig& c) {
  return absl::StrCat("kind ", KindName(c.kind()), ", maxsize ", c.maxsize(), ", lease ",
                      c.lease_ms(), " ms, max attempts ", c.max_attempts(), ", backoff ",
                      c.backoff_ms(), "..", c.backoff_max_ms(), " ms, dead letters to \"",
                      c.dead_letter().empty() ? c.name() : c.dead_letter(), "\"",
                      c.idle_ttl_ms() == 0
                          ? ""
                          : absl::StrCat(", idle TTL ",
                                         absl::FormatDuration(absl::Milliseconds(
                                             static_cast<int64_t>(c.idle_ttl_ms())))));
}

absl::Status QueueMissing(const std::string& name) {
  return absl::NotFoundError(absl::StrCat("queue \"", name,
                                          "\" does not exist (create it with: taskq queue create ",
                                          name, ")"));
}

absl::Status ShuttingDown() { return absl::UnavailableError("master is shutting down"); }

absl::Status QueueShutDown(const std::string& name) {
  return absl::FailedPreconditionError(
      absl::StrCat("queue \"", name, "\" is shut down: it accepts no more tasks"));
}

absl::Status QueueShutDownAndEmpty(const std::string& name) {
  return absl::OutOfRangeError(
      absl::StrCat("queue \"", name, "\" is shut down and empty: no task will come"));
}

uint64_t SeedOf(const EngineOptions& options) {
  if (options.random_seed != 0) return options.random_seed;
  std::random_device device;
  return (uint64_t{device()} << 32) ^ device();
}

}  // namespace

TaskEngine::TaskEngine(EngineOptions options, Clock* clock,
                           std::function<void()> on_earlier_deadline)
    : options_(options),
      clock_(clock),
      on_earlier_deadline_(std::move(on_earlier_deadline)),
      rng_(SeedOf(options)),
      leases_(options.revoked_lease_memory),
      finished_(options.finished_task_memory, options.finished_task_memory_bytes),
      memory_(options.memory_budget_bytes, options.pinned_budget_bytes,
              options.cooling_slack_bytes) {
  MutexLock lock(&mu_);
  next_task_id_ = std::max<uint64_t>(next_task_id_, options_.task_id_base);
}

TaskEngine::~TaskEngine() { Shutdown(); }

void TaskEngine::Touch(Queue& q, Pending& pending) {
  pending.Touch(&q);
  MarkQueue(q.config.name());
}

void TaskEngine::EndStep(Pending& pending) {
  SettleTouched(pending);
  Persist(pending);
  CoolDown();
}

// --- queues -------------------------------------------------------------------

v1::QueueConfig TaskEngine::FillDefaults(v1::QueueConfig c) const {
  if (c.kind() == v1::QUEUE_KIND_UNSPECIFIED) c.set_kind(v1::QUEUE_KIND_FIFO);
  if (c.lease_ms() == 0) {
    c.set_lease_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(options_.default_lease)));
  }
  if (c.max_attempts() == 0) c.set_max_attempts(options_.default_max_attempts);
  if (c.backoff_ms() == 0) {
    c.set_backoff_ms(static_cast<uint32_t>(
        std::max<int64_t>(1, absl::ToInt64Milliseconds(options_.default_backoff))));
  }
  if (c.backoff_max_ms() == 0) {
    // A first retry set above the default cap raises the cap with it.
    c.set_backoff_max_ms(std::max(
        c.backoff_ms(), static_cast<uint32_t>(std::max<int64_t>(
                            1, absl::ToInt64Milliseconds(options_.default_backoff_max)))));
  }
  if (!c.has_idle_ttl_ms()) {
    // Private result queues (`submit --wait`'s, and any made on first use
    // as a reply_to) must not outlive their reader for ever.
    const bool results = absl::StartsWith(c.name(), kResultQueuePrefix);
    c.set_idle_ttl_ms(results ? static_cast<uint64_t>(std::max<int64_t>(
                                    0, absl::ToInt64Milliseconds(options_.results_ttl)))
                              : 0);
  }
  return c;
}

absl::Status TaskEngine::ValidateConfig(const v1::QueueConfig& c) const {
  if (auto s = ValidateName("queue", c.name()); !s.ok()) return s;
  if (!v1::QueueKind_IsValid(c.kind())) {
    return absl::InvalidArgumentError(absl::StrCat("unknown queue kind ", c.kind()));
  }
  if (c.lease_ms() != 0 && (c.lease_ms() < kMinLeaseMs || c.lease_ms() > kMaxLeaseMs)) {
    return absl::InvalidArgumentError(absl::StrCat("lease of ", c.lease_ms(), " ms is outside ",
                                                   kMinLeaseMs, " ms .. 24 h"));
  }
  if (c.max_attempts() > kMaxMaxAttempts) {
    return absl::InvalidArgumentError(absl::StrCat("max attempts ", c.max_attempts(),
                                                   " is above the limit of ", kMaxMaxAttempts));
  }
  if (c.backoff_ms() > kMaxBackoffMs) {
    return absl::InvalidArgumentError(absl::StrCat(
        "backoff of ", c.backoff_ms(), " ms is above the limit of ", kMaxBackoffMs, " ms (1 h)"));
  }
  if (c.backoff_max_ms() > kMaxBackoffMaxMs) {
    return absl::InvalidArgumentError(absl::StrCat("backoff cap of ", c.backoff_max_ms(),
                                                   " ms is above the limit of ", kMaxBackoffMaxMs,
                                                   " ms (24 h)"));
  }
  if (c.backoff_ms() != 0 && c.backoff_max_ms() != 0 && c.backoff_max_ms() < c.backoff_ms()) {
    return absl::InvalidArgumentError(absl::StrCat("backoff cap (backoff_max_ms ",
                                                   c.backoff_max_ms(), ") is below backoff_ms ",
                                                   c.backoff_ms(), ": raise the cap"));
  }
  if (!c.dead_letter().empty()) {
    if (auto s = ValidateName("dead-letter queue", c.dead_letter()); !s.ok()) return s;
  }
  if (c.idle_ttl_ms() > kMaxIdleTtlMs) {
    return absl::InvalidArgumentError(absl::StrCat("idle TTL of ", c.idle_ttl_ms(),
                                                   " ms is above the limit of ", kMaxIdleTtlMs,
                                                   " ms (365 days); 0 = never"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TaskEngine::Queue*> TaskEngine::FindToChange(const std::string& name) {
  Queue* q = FindQueue(name);
  if (q == nullptr) return QueueMissing(name);
  if (!q->fence.ok()) return q->fence;
  return q;
}

TaskEngine::Queue* TaskEngine::FindQueue(const std::string& name) {
  auto it = queues_.find(name);
  return it == queues_.end() ? nullptr : it->second.get();
}

TaskEngine::Queue* TaskEngine::AddQueue(v1::QueueConfig config, Pending& pending) {
  auto q = std::make_unique<Queue>();
  q->config = std::move(config);
  Queue* raw = q.get();
  queues_[raw->config.name()] = std::move(q);
  queue_names_.insert(raw->config.name());
  MarkQueue(raw->config.name());
  Used(*raw);
  ArmIdleCheck(*raw, raw->last_used + absl::Milliseconds(static_cast<int64_t>(
                                          raw->config.idle_ttl_ms())),
               pending);
  return raw;
}

absl::Status TaskEngine::RoomForAQueue(const std::string& name) const {
  if (queues_.size() < options_.max_queues) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "queue \"", name, "\" cannot be created: the master holds ", queues_.size(),
      " queues, its limit (--max-queues ", options_.max_queues,
      "); delete queues that are no longer used (taskq queue delete) or restart the master "
      "with a larger --max-queues"));
}

absl::StatusOr<TaskEngine::Queue*> TaskEngine::FindOrCreateQueue(const std::string& name,
                                                                     Pending& pending) {
  // Every caller is a new call (put, get, subscribe): refuse them all here.
  if (shut_down_) return ShuttingDown();
  if (Queue* q = FindQueue(name)) return q;
  if (auto s = ValidateName("queue", name); !s.ok()) return s;
  if (!options_.auto_create_queues) return QueueMissing(name);
  if (auto s = RoomForAQueue(name); !s.ok()) return s;
  v1::QueueConfig config;
  config.set_name(name);
  Queue* q = AddQueue(FillDefaults(config), pending);
  LogInfo("queue \"%s\" created on first use (%s)", name, DescribeConfig(q->config));
  return q;
}

absl::StatusOr<v1::QueueConfig> TaskEngine::CreateQueue(const v1::QueueConfig& requested,
                                                          bool exist_ok) {
  if (auto s = ValidateConfig(requested); !s.ok()) return s;
  v1::QueueConfig config = FillDefaults(requested);
  Pending pending;
  {
    MutexLock lock(&mu_);
    if (shut_down_) return ShuttingDown();
    if (Queue* q = FindQueue(config.name())) {
      bool same = q->config.SerializeAsString() == config.SerializeAsString();
      if (exist_ok && same) return q->config;
      return absl::AlreadyExistsError(absl::StrCat("queue \"", config.name(),
                                                   "\" already exists (", DescribeConfig(q->config),
                                                   ")"));
    }
    if (auto s = Writable(); !s.ok()) return s;
    if (auto s = RoomForAQueue(config.name()); !s.ok()) return s;
    config = AddQueue(config, pending)->config;
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return config;
}

absl::StatusOr<v1::QueueConfig> TaskEngine::UpdateQueue(const std::string& queue,
                                                          const v1::QueueConfigUpdate& update) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  Pending pending;
  v1::QueueConfig config;
  {
    MutexLock lock(&mu_);
    if (auto s = Writable(); !s.ok()) return s;
    absl::StatusOr<Queue*> found = FindToChange(queue);
    if (!found.ok()) return found.status();
    Queue* q = *found;
    config = q->config;
    if (update.has_maxsize()) config.set_maxsize(update.maxsize());
    if (update.has_lease_ms()) config.set_lease_ms(update.lease_ms());
    if (update.has_max_attempts()) config.set_max_attempts(update.max_attempts());
    if (update.has_backoff_ms()) config.set_backoff_ms(update.backoff_ms());
    if (update.has_backoff_max_ms()) config.set_backoff_max_ms(update.backoff_max_ms());
    if (update.has_dead_letter()) config.set_dead_letter(update.dead_letter());
    if (update.has_idle_ttl_ms()) config.set_idle_ttl_ms(update.idle_ttl_ms());
    // 0 = the master's default, as at create.
    if (auto s = ValidateConfig(config); !s.ok()) return s;
    config = FillDefaults(config);
    q->config = config;
    // A new TTL counts from now.
    Used(*q);
    ArmIdleCheck(*q, q->last_used + absl::Milliseconds(static_cast<int64_t>(
                                        config.idle_ttl_ms())),
                 pending);
    Touch(*q, pending);  // a larger maxsize admits waiting putters
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  LogInfo("queue \"%s\" updated (%s)", queue, DescribeConfig(config));
  return config;
}

v1::QueueStats TaskEngine::StatsOf(const Queue& q) {
  v1::QueueStats s;
  *s.mutable_config() = q.config;
  s.set_ready(q.ready.size());
  s.set_delayed(q.delayed.size());
  s.set_leased(q.leased.size());
  s.set_dead(q.dead.size());
  s.set_unfinished(Unfinished(q));
  s.set_total_put(q.total_put);
  s.set_total_completed(q.total_completed);
  s.set_total_failed(q.total_failed);
  s.set_total_cancelled(q.total_cancelled);
  s.set_waiting_consumers(q.getters.live());
  s.set_waiting_producers(q.putters.live());
  s.set_shut_down(q.shut_down);
  s.set_pending_results(ResultsOwedTo(q.config.name()));
  auto it = subs_by_queue_.find(q.config.name());
  s.set_workers(it == subs_by_queue_.end() ? 0 : static_cast<uint32_t>(it->second.size()));
  return s;
}

absl::StatusOr<v1::ListQueuesResponse> TaskEngine::ListQueues(
    const v1::ListQueuesRequest& request) {
  const uint32_t page_size = request.page_size() == 0
                                 ? kDefaultQueuePage
                                 : std::min(request.page_size(), kMaxQueuePage);
  // The token is the last name of the previous page: any valid name pages
  // on (also one deleted meanwhile); anything else was not given out.
  const std::string& after = request.page_token();
  if (!after.empty() && !ValidateName("queue", after).ok()) {
    return absl::InvalidArgumentError(
        "page_token is not one this master gave out: start again with an empty page_token");
  }
  MutexLock lock(&mu_);
  v1::ListQueuesResponse page;
  auto it = after.empty() ? queue_names_.begin() : queue_names_.upper_bound(after);
  for (; it != queue_names_.end() && static_cast<uint32_t>(page.queues_size()) < page_size;
       ++it) {
    *page.add_queues() = StatsOf(*queues_.at(*it));
  }
  if (it != queue_names_.end() && page.queues_size() > 0) {
    page.set_next_page_token(page.queues(page.queues_size() - 1).config().name());
  }
  return page;
}

TaskEngine::Sample TaskEngine::Metrics(size_t max_queues) {
  MutexLock lock(&mu_);
  Sample out;
  out.queues = queues_.size();
  out.first.reserve(std::min(max_queues, queue_names_.size()));
  for (const std::string& name : queue_names_) {
    if (out.first.size() >= max_queues) break;
    const Queue& q = *queues_.at(name);
    QueueSample& s = out.first.emplace_back();
    s.name = name;
    s.ready = q.ready.size();
    s.delayed = q.delayed.size();
    s.leased = q.leased.size();
    s.dead = q.dead.size();
    s.puts = q.total_put;
    s.completions = q.total_completed;
    s.failures = q.total_failed;
    s.cancellations = q.total_cancelled;
    s.deliveries = q.total_delivered;
    s.redeliveries = q.total_redelivered;
    s.expiries = q.total_expired;
    if (auto put = OldestReadyPut(*queues_.at(name))) {
      s.oldest_ready_age = std::max(absl::ZeroDuration(), clock_->Now() - *put);
    }
  }
  out.workers = subs_.size();
  for (const auto& [id, sub] : subs_) out.worker_credits += sub.credits;
  return out;
}

ReadyKey TaskEngine::LongestReady(const Queue& q) const {
  switch (q.config.kind()) {
    case v1::QUEUE_KIND_LIFO:  // (0, -seq): the last key
      return *std::prev(q.ready.end());
    case v1::QUEUE_KIND_PRIORITY: {  // (priority, seq): each level's first key
      constexpr int kMaxPriorityLevelsScanned = 64;
      ReadyKey best = q.ready.Front();
      auto it = q.ready.begin();
      for (int level = 0; level < kMaxPriorityLevelsScanned && it != q.ready.end(); ++level) {
        if (it->minor < best.minor) best = *it;
        if (it->major == std::numeric_limits<int64_t>::max()) break;
        it = q.ready.LowerBound(ReadyKey{it->major + 1, std::numeric_limits<int64_t>::min(), 0});
      }
      return best;
    }
    default:  // FIFO (0, seq): the first key
      return q.ready.Front();
  }
}

std::optional<absl::Time> TaskEngine::OldestReadyPut(Queue& q) {
  if (q.ready.empty()) return std::nullopt;
  const uint64_t id = LongestReady(q).id;
  const TaskRecord* rec = nullptr;
  if (auto it = tasks_.find(id); it != tasks_.end()) {
    rec = &it->second;
  } else {
    rec = FindCold(id);  // one row, once: it stays in memory until handed out
  }
  if (rec == nullptr) return std::nullopt;
  return absl::FromUnixMillis(rec->task.enqueued_unix_ms());
}

absl::StatusOr<v1::QueueStats> TaskEngine::Stats(const std::string& queue) {
  MutexLock lock(&mu_);
  Queue* q = FindQueue(queue);
  if (!q) return QueueMissing(queue);
  return StatsOf(*q);
}

absl::StatusOr<std::string> TaskEngine::QueueOwner(const std::string& queue) {
  MutexLock lock(&mu_);
  const Queue* q = FindQueue(queue);
  if (!q) return QueueMissing(queue);
  return q->config.owner();
}

absl::Status TaskEngine::DeleteQueue(const std::string& queue) {
  Pending pending;
  {
    MutexLock lock(&mu_);
    if (auto s = Writable(); !s.ok()) return s;
    if (auto found = FindToChange(queue); !found.ok()) return found.status();
    RemoveQueue(queue, pending);
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return absl::OkStatus();
}

void TaskEngine::RemoveQueue(const std::string& queue, Pending& pending, absl::Status gone) {
  Queue* q = FindQueue(queue);
  if (gone.ok()) gone = absl::NotFoundError(absl::StrCat("queue \"", queue, "\" was deleted"));
  // Copies: FailWaiter compacts the lists it is called for.
  std::vector<WaitId> waiting = q->getters.Ids();
  waiting.insert(waiting.end(), q->putters.begin(), q->putters.end());
  waiting.insert(waiting.end(), q->joiners.begin(), q->joiners.end());
  for (WaitId id : waiting) FailWaiter(id, gone, pending);
  // Everything the queue holds: its own tasks in any state, and the dead
  // tasks (of any origin) in its dead-letter set. Its own tasks that died
  // into another queue's dead-letter set stay there.
  std::vector<uint64_t> ids;
  for (const ReadyKey& key : q->ready) ids.push_back(key.id);
  for (const DelayKey& key : q->delayed) ids.push_back(key.id);
  ids.insert(ids.end(), q->leased.begin(), q->leased.end());
  ids.insert(ids.end(), q->dead.begin(), q->dead.end());
  for (uint64_t id : ids) {
    if (auto it = tasks_.find(id); it != tasks_.end()) {
      Forget(it->second);
    } else {
      MarkTask(id);  // a cold ready task: only its stored copy to delete
    }
  }
  // What is still counted as owed is the cold tasks' share: they will send
  // no result either.
  for (const auto& [reply_to, n] : q->owed_by_reply_to) SubtractOwed(reply_to, n);
  q->owed_by_reply_to.clear();
  // Its dedup keys die with it, also those of its tasks that sit dead in
  // another queue's dead-letter set (written, so a restart agrees).
  for (const auto& [name, other] : queues_) {
    if (name == queue) continue;
    for (uint64_t id : other->dead) {
      TaskRecord& rec = tasks_.at(id);
      if (rec.task.queue() == queue && !rec.dedup_key.empty()) {
        rec.dedup_key.clear();
        MarkTask(id);
      }
    }
  }
  DisarmIdleCheck(*q);
  pending.Untouch(q);
  queues_.erase(queue);
  queue_names_.erase(queue);
  MarkQueue(queue);
}

uint64_t TaskEngine::DropWaiting(Queue& q, absl::string_view why, Pending& pending) {
  uint64_t dropped = 0;
  // Ready tasks a chunk at a time: cold ones are read back (their reply_to
  // gets a result), and a huge cold backlog is never all in memory at once.
  while (TaskRecord* rec = HotHead(q, kHydrateBatch)) {
    Finish(*rec, v1::TASK_STATE_CANCELLED, v1::OUTCOME_CANCELLED, "", std::string(why),
           /*send_result=*/true, pending);
    ++dropped;
  }
  std::vector<uint64_t> delayed;
  for (const DelayKey& key : q.delayed) delayed.push_back(key.id);
  for (uint64_t id : delayed) {
    Finish(tasks_.at(id), v1::TASK_STATE_CANCELLED, v1::OUTCOME_CANCELLED, "", std::string(why),
           /*send_result=*/true, pending);
    ++dropped;
  }
  return dropped;
}

absl::StatusOr<uint64_t> TaskEngine::PurgeQueue(const std::string& queue) {
  Pending pending;
  uint64_t purged;
  {
    MutexLock lock(&mu_);
    if (auto s = Writable(); !s.ok()) return s;
    absl::StatusOr<Queue*> found = FindToChange(queue);
    if (!found.ok()) return found.status();
    Queue* q = *found;
    purged = DropWaiting(*q, absl::StrCat("purged from queue \"", queue, "\""), pending);
    Touch(*q, pending);
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return purged;
}

absl::StatusOr<uint64_t> TaskEngine::ShutdownQueue(const std::string& queue, bool immediate) {
  if (auto s = ValidateName("queue", queue); !s.ok()) return s;
  Pending pending;
  uint64_t dropped = 0;
  {
    MutexLock lock(&mu_);
    if (auto s = Writable(); !s.ok()) return s;
    absl::StatusOr<Queue*> found = FindToChange(queue);
    if (!found.ok()) return found.status();
    Queue* q = *found;
    q->shut_down = true;
    std::vector<WaitId> putters = q->putters.Ids();
    for (WaitId id : putters) FailWaiter(id, QueueShutDown(queue), pending);
    if (immediate) {
      dropped = DropWaiting(*q, absl::StrCat("queue \"", queue, "\" was shut down"), pending);
    }
    Touch(*q, pending);  // getters of a drained queue fail now
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  LogInfo("queue \"%s\" shut down%s", queue,
          immediate ? absl::StrCat(" immediately; ", dropped, " tasks dropped") : "");
  return dropped;
}

// --- put ------------------------------------------------------------------------

absl::Status TaskEngine::ValidatePut(const PutArgs& args) const {
  if (args.tasks.empty()) return absl::InvalidArgumentError("put carries no tasks");
  if (args.tasks.size() > kMaxTasksPerPut) {
    return absl::InvalidArgumentError(absl::StrCat("put carries ", args.tasks.size(),
                                                   " tasks; the limit is ", kMaxTasksPerPut,
                                                   " per call: send smaller batches"));
  }
  const int64_t latest_ms = absl::ToUnixMillis(clock_->Now()) + kMaxDelayMs;
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
    if (t.dedup_key().size() > kMaxDedupKeyBytes) {
      return bad(absl::StrCat("dedup key is ", t.dedup_key().size(), " bytes; the limit is ",
                              kMaxDedupKeyBytes));
    }
    if (int64_t{t.delay_ms()} > kMaxDelayMs) {
      return bad(absl::StrCat("delay of ", t.delay_ms(), " ms is above the limit of 365 days"));
    }
    if (t.not_before_unix_ms() < 0) {
      return bad(absl::StrCat("not_before_unix_ms ", t.not_before_unix_ms(), " is negative"));
    }
    if (t.not_before_unix_ms() > latest_ms) {
      return bad(absl::StrCat("not_before_unix_ms ", t.not_before_unix_ms(),
                              " is more than 365 days ahead"));
    }
  }
  return absl::OkStatus();
}

size_t TaskEngine::CountNew(const Queue& q, const std::vector<v1::TaskSpec>& specs) const {
  size_t n = 0;
  absl::flat_hash_set<absl::string_view> batch_keys;
  for (const v1::TaskSpec& spec : specs) {
    const std::string& key = spec.dedup_key();
    if (key.empty()) {
      ++n;
    } else if (!q.dedup.contains(key) && batch_keys.insert(key).second) {
      ++n;
    }
  }
  return n;
}

PutDemand TaskEngine::MeasureNew(const Queue& q, const std::vector<v1::TaskSpec>& specs) const {
  PutDemand demand;
  absl::flat_hash_set<absl::string_view> batch_keys;
  const int64_t now_ms = absl::ToUnixMillis(clock_->Now());
  for (const v1::TaskSpec& spec : specs) {
    const std::string& key = spec.dedup_key();
    if (!key.empty() && (q.dedup.contains(key) || !batch_keys.insert(key).second)) continue;
    const size_t bytes = kRecordOverhead + SpecBytes(spec, q.config.name());
    demand.bytes += bytes;
    if (spec.delay_ms() > 0 || spec.not_before_unix_ms() > now_ms) demand.delayed_bytes += bytes;
  }
  return demand;
}

bool TaskEngine::Fits(const Queue& q, size_t n) const {
  if (q.config.maxsize() == 0) return true;
  return Held(q) + n <= q.config.maxsize();
}

ReadyKey TaskEngine::MakeKey(const Queue& q, const v1::Task& task) {
  return ReadySet::KeyFor(q.config.kind(), task.priority(), next_seq_++, task.id());
}

PutResult TaskEngine::Insert(Queue& q, std::vector<v1::TaskSpec>& specs, Pending& pending) {
  PutResult out;
  out.ids.reserve(specs.size());
  out.existing.reserve(specs.size());
  const absl::Time now = clock_->Now();
  const int64_t now_ms = absl::ToUnixMillis(now);
  for (v1::TaskSpec& spec : specs) {
    if (!spec.dedup_key().empty()) {
      if (auto it = q.dedup.find(spec.dedup_key()); it != q.dedup.end()) {
        out.ids.push_back(it->second);
        out.existing.push_back(true);
        continue;
      }
    }
    uint64_t id = next_task_id_++;
    MarkNewTask(id);
    TaskRecord& rec = AddRecord(id);
    v1::Task& t = rec.task;
    t.set_id(id);
    t.set_queue(q.config.name());
    // Moved, not copied; an empty field is left alone (asking for a
    // mutable one would allocate an empty string).
    if (!spec.payload().empty()) t.mutable_payload()->swap(*spec.mutable_payload());
    if (!spec.handler().empty()) t.mutable_handler()->swap(*spec.mutable_handler());
    t.set_priority(spec.priority());
    if (!spec.reply_to().empty()) t.mutable_reply_to()->swap(*spec.mutable_reply_to());
    if (!spec.headers().empty()) t.mutable_headers()->swap(*spec.mutable_headers());
    if (!spec.args().empty()) t.mutable_args()->Swap(spec.mutable_args());
    t.set_enqueued_unix_ms(now_ms);
    if (!spec.dedup_key().empty()) {
      rec.dedup_key = spec.dedup_key();
      q.dedup[rec.dedup_key] = id;
    }
    CountOwed(q, rec);
    absl::Time due = now + absl::Milliseconds(spec.delay_ms());
    if (spec.not_before_unix_ms() > 0) {
      due = std::max(due, absl::FromUnixMillis(spec.not_before_unix_ms()));
    }
    Recount(rec);
    if (due > now) {
      MakeDelayed(q, rec, due, pending);
    } else {
      MakeReady(q, rec, /*new_place=*/true);
      MaybeCool(rec);
    }
    ++q.total_put;
    out.ids.push_back(id);
    out.existing.push_back(false);
  }
  Used(q);
  Touch(q, pending);
  return out;
}

WaitId TaskEngine::Put(PutArgs args, PutCallback done) {
  Pending pending;
  WaitId wait_id = 0;
  auto fail = [&](absl::Status s) {
    pending.Reply(std::move(done), s);
  };
  {
    MutexLock lock(&mu_);
    absl::StatusOr<Queue*> found = FindOrCreateQueue(args.queue, pending);
    absl::Status status = found.ok() ? ValidatePut(args) : found.status();
    if (status.ok()) status = Writable();
    Queue* q = found.ok() ? *found : nullptr;
    if (status.ok()) status = Fenced(*q);
    if (status.ok() && q->shut_down) status = QueueShutDown(args.queue);
    const size_t fresh = status.ok() ? CountNew(*q, args.tasks) : 0;
    if (status.ok() && q->config.maxsize() != 0 && fresh > q->config.maxsize()) {
      status = absl::InvalidArgumentError(
          absl::StrCat("put of ", fresh, " tasks can never fit queue \"", args.queue,
                       "\" (maxsize ", q->config.maxsize(), "): send smaller batches"));
    }
    // Reply-to queues must exist (or be creatable) before the task is accepted.
    for (size_t i = 0; status.ok() && i < args.tasks.size(); ++i) {
      const std::string& r = args.tasks[i].reply_to();
      if (!r.empty() && (i == 0 || r != args.tasks[i - 1].reply_to())) {
        if (auto rq = FindOrCreateQueue(r, pending); !rq.ok()) {
          status = absl::Status(rq.status().code(),
                                absl::StrCat("reply_to: ", rq.status().message()));
        } else {
          status = Fenced(**rq);  // moving away: it cannot be tied to a queue staying
        }
      }
    }
    const bool fits_now = status.ok() && q->putters.live() == 0 && Fits(*q, fresh);
    const bool may_wait = !args.nowait && args.deadline > clock_->Now();
    PutDemand demand;
    if (status.ok() && (fits_now || may_wait)) {
      // Whatever the put stores, or holds while it waits, must fit the
      // memory budget (a put that fails "full" at once holds nothing).
      demand = MeasureNew(*q, args.tasks);
      demand.will_wait = !fits_now;
      status = memory_.Admit(demand);
    }
    if (!status.ok()) {
      fail(status);
    } else if (fits_now) {
      PutResult stored = Insert(*q, args.tasks, pending);
      pending.Reply(std::move(done), std::move(stored));
    } else if (!may_wait) {
      fail(absl::ResourceExhaustedError(absl::StrCat(
          "queue \"", args.queue, "\" is full (maxsize ", q->config.maxsize(),
          "); retry later or put with a timeout to wait for room")));
    } else {
      Waiter w;
      w.kind = WaitKind::kPut;
      w.queue = args.queue;
      w.deadline = args.deadline;
      w.put = std::move(args);
      w.put_bytes = demand.bytes;
      w.put_done = std::move(done);
      wait_id = AddWaiter(*q, std::move(w), pending);
    }
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return wait_id;
}

// --- get --------------------------------------------------------------------------

std::vector<v1::Delivery> TaskEngine::TakeReady(Queue& q, const GetArgs& args,
                                                  Pending& pending) {
  std::vector<v1::Delivery> out;
  // The reply is bounded in bytes as well as tasks (one task alone may be
  // larger): a reply over the client's message cap would be lost with the
  // tasks it took.
  size_t bytes = 0;
  while (out.size() < args.max_tasks && bytes < kMaxStreamMessageBytes) {
    TaskRecord* head = HotHead(q, args.max_tasks - out.size());
    if (head == nullptr) break;  // none left, or the store cannot be read now
    TaskRecord& rec = *head;
    const uint64_t id = rec.task.id();
    q.ready.PopFront();
    if (args.lease) {
      out.push_back(Lease(q, rec, 0, pending, args.lease_time));
      bytes += DeliveryBytes(out.back());
      continue;
    }
    // Take: handed out and acknowledged in one step. The taker has it: the
    // master sends no result for it.
    if (OwesResult(rec)) UncountOwed(rec);
    MarkTask(id);
    rec.task.set_attempt(rec.task.attempt() + 1);
    FreeDedupKey(rec);
    RememberFinished(rec, v1::TASK_STATE_DONE);
    v1::Delivery d;
    *d.mutable_task() = std::move(rec.task);
    bytes += DeliveryBytes(d);
    out.push_back(std::move(d));
    DropRecord(id);
    if (args.manual_task_done) {
      ++q.awaiting_task_done;
    } else {
      ++q.total_completed;
    }
  }
  Touch(q, pending);
  return out;
}

WaitId TaskEngine::Get(GetArgs args, GetCallback done) {
  Pending pending;
  WaitId wait_id = 0;
  auto fail = [&](absl::Status s) {
    pending.Reply(std::move(done), s);
  };
  if (args.max_tasks == 0) args.max_tasks = 1;
  {
    MutexLock lock(&mu_);
    // A get that will not wait only reads: an unknown queue is an empty one
    // and is not created (a get that waits must park on its queue).
    const bool waits = !args.nowait && args.deadline > clock_->Now();
    absl::StatusOr<Queue*> found = absl::NotFoundError("");
    if (waits || FindQueue(args.queue) != nullptr) {
      found = FindOrCreateQueue(args.queue, pending);
    } else if (shut_down_) {
      found = ShuttingDown();
    } else if (auto s = ValidateName("queue", args.queue); !s.ok()) {
      found = s;
    } else if (!options_.auto_create_queues) {
      found = QueueMissing(args.queue);
    } else {
      found = absl::DeadlineExceededError(absl::StrCat("queue \"", args.queue, "\" is empty"));
    }
    Queue* q = found.ok() ? *found : nullptr;
    if (q != nullptr) Used(*q);  // a reader, whatever it finds
    absl::Status writable = Writable();
    if (!found.ok()) {
      fail(found.status());
    } else if (!writable.ok()) {
      fail(writable);
    } else if (!q->fence.ok()) {
      fail(q->fence);
    } else if (args.max_tasks > kMaxTasksPerGet) {
      fail(absl::InvalidArgumentError(absl::StrCat("max_tasks ", args.max_tasks,
                                                   " is above the limit of ", kMaxTasksPerGet)));
    } else if (q->getters.live() == 0 && !q->ready.empty()) {
      std::vector<v1::Delivery> got = TakeReady(*q, args, pending);
      pending.Reply(std::move(done), std::move(got));
    } else if (q->shut_down && q->ready.empty() && q->delayed.empty()) {
      fail(QueueShutDownAndEmpty(args.queue));
    } else if (args.nowait || args.deadline <= clock_->Now()) {
      fail(absl::DeadlineExceededError(absl::StrCat("queue \"", args.queue, "\" is empty")));
    } else {
      Waiter w;
      w.kind = WaitKind::kGet;
      w.queue = args.queue;
      w.deadline = args.deadline;
      w.get = std::move(args);
      w.get_done = std::move(done);
      wait_id = AddWaiter(*q, std::move(w), pending);
    }
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return wait_id;
}

// --- hand-out ---------------------------------------------------------------------

void TaskEngine::SettleTouched(Pending& pending) {
  for (;;) {
    // Settling never deletes a queue, so none of these pointers dangles.
    Pending::Touched touched = pending.TakeTouched();
    if (touched.empty()) return;
    for (Queue* q : touched) Settle(*q, pending);
  }
}

void TaskEngine::Settle(Queue& q, Pending& pending) {
  // Iterative, not recursive: admitting a putter makes tasks ready, serving
  // a take-mode getter makes room for putters.
  for (;;) {
    Dispatch(q, pending);
    if (!AdmitPutters(q, pending)) break;
  }
  if (q.shut_down && q.ready.empty() && q.delayed.empty() && q.getters.live() != 0) {
    std::vector<WaitId> getters = q.getters.Ids();
    for (WaitId id : getters) FailWaiter(id, QueueShutDownAndEmpty(q.config.name()), pending);
  }
  WakeJoiners(q, pending);
}

void TaskEngine::Dispatch(Queue& q, Pending& pending) {
  // Nothing is handed out while the store refuses writes (a take or a lease
  // could not be recorded); OnStoreHealthy settles every queue again. Nor
  // while the queue moves to another master (UnfenceQueues settles it).
  if (!Writable().ok() || !q.fence.ok()) return;
  while (!q.ready.empty() && !q.getters.empty()) {
    WaitId id = q.getters.Front();
    q.getters.PopFront();
    auto it = waiters_.find(id);
    if (it == waiters_.end()) continue;  // finished earlier (lazy deletion)
    Waiter& w = it->second;
    std::vector<v1::Delivery> got = TakeReady(q, w.get, pending);
    q.getters.Ended();
    Used(q);
    if (w.deadline != absl::InfiniteFuture()) schedule_.RemoveWait(w.deadline, id);
    pending.Reply(std::move(w.get_done), std::move(got));
    waiters_.erase(it);
  }
  if (q.ready.empty()) return;
  auto subs_it = subs_by_queue_.find(q.config.name());
  if (subs_it == subs_by_queue_.end() || subs_it->second.empty()) return;
  const std::vector<SubscriptionId>& subs = subs_it->second;
  size_t credits = 0;
  for (SubscriptionId sub_id : subs) credits += subs_.at(sub_id).credits;
  size_t& next = round_robin_[q.config.name()];
  // Round robin, one task per worker with credit per turn, so one fast
  // worker with a big window does not take everything.
  size_t idle_in_a_row = 0;
  while (!q.ready.empty() && idle_in_a_row < subs.size()) {
    next %= subs.size();
    SubscriptionId sub_id = subs[next++];
    Subscription& sub = subs_.at(sub_id);
    if (sub.credits == 0 || sub.unwritten_bytes >= kMaxUnwrittenDeliveryBytes) {
      ++idle_in_a_row;
      continue;
    }
    idle_in_a_row = 0;
    // Cold tasks are read back as many as the credits left, a batch at a
    // time, so a huge window never reads everything at once.
    TaskRecord* rec = HotHead(q, std::min(credits, kHydrateBatch));
    if (rec == nullptr) return;  // none left, or the store cannot be read now
    --sub.credits;
    --credits;
    q.ready.PopFront();
    v1::Delivery delivery = Lease(q, *rec, sub_id, pending);
    sub.unwritten_bytes += DeliveryBytes(delivery);
    pending.Deliver(sub_id, sub.deliver, std::move(delivery));
  }
}

bool TaskEngine::AdmitPutters(Queue& q, Pending& pending) {
  bool admitted = false;
  while (!q.putters.empty()) {
    WaitId id = q.putters.Front();
    auto it = waiters_.find(id);
    if (it == waiters_.end()) {
      q.putters.PopFront();
      continue;
    }
    Waiter& w = it->second;
    // FIFO: nobody overtakes the head.
    if (!Fits(q, CountNew(q, w.put.tasks))) break;
    q.putters.PopFront();
    q.putters.Ended();
    memory_.RemoveWaiting(w.put_bytes);  // counted as records from here on
    PutResult stored = Insert(q, w.put.tasks, pending);
    if (w.deadline != absl::InfiniteFuture()) schedule_.RemoveWait(w.deadline, id);
    pending.Reply(std::move(w.put_done), std::move(stored));
    waiters_.erase(it);
    admitted = true;
  }
  return admitted;
}

void TaskEngine::WakeJoiners(Queue& q, Pending& pending) {
  if (Unfinished(q) != 0 || q.joiners.empty()) return;
  Used(q);
  for (WaitId id : q.joiners) {
    auto it = waiters_.find(id);
    if (it == waiters_.end()) continue;
    if (it->second.deadline != absl::InfiniteFuture()) {
      schedule_.RemoveWait(it->second.deadline, id);
    }
    pending.Reply(std::move(it->second.join_done), absl::OkStatus());
    waiters_.erase(it);
  }
  q.joiners.Clear();
}

absl::Status TaskEngine::TaskDone(const std::string& queue, uint32_t count) {
  if (count == 0) count = 1;
  Pending pending;
  {
    MutexLock lock(&mu_);
    if (auto s = Writable(); !s.ok()) return s;
    absl::StatusOr<Queue*> found = FindToChange(queue);
    if (!found.ok()) return found.status();
    Queue* q = *found;
    if (count > q->awaiting_task_done) {
      return absl::FailedPreconditionError(absl::StrCat(
          "task_done called for ", count, " tasks but only ", q->awaiting_task_done,
          " taken with manual_task_done are outstanding on queue \"", queue, "\""));
    }
    q->awaiting_task_done -= count;
    q->total_completed += count;
    Touch(*q, pending);
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return absl::OkStatus();
}

WaitId TaskEngine::Join(const std::string& queue, absl::Time deadline, DoneCallback done) {
  Pending pending;
  WaitId wait_id = 0;
  {
    MutexLock lock(&mu_);
    Queue* q = shut_down_ ? nullptr : FindQueue(queue);
    absl::Status status = shut_down_ ? ShuttingDown() : q ? Fenced(*q) : QueueMissing(queue);
    if (status.ok() && Unfinished(*q) != 0 && deadline <= clock_->Now()) {
      status = absl::DeadlineExceededError(absl::StrCat(
          "queue \"", queue, "\" still has ", Unfinished(*q), " unfinished tasks"));
    }
    if (!status.ok() || Unfinished(*q) == 0) {
      pending.Reply(std::move(done), status);
    } else {
      Waiter w;
      w.kind = WaitKind::kJoin;
      w.queue = queue;
      w.deadline = deadline;
      w.join_done = std::move(done);
      wait_id = AddWaiter(*q, std::move(w), pending);
    }
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return wait_id;
}

// --- workers ----------------------------------------------------------------------------

absl::StatusOr<SubscriptionId> TaskEngine::Subscribe(const std::vector<std::string>& queues,
                                                       const WorkerIdentity& who,
                                                       DeliverFn deliver) {
  if (queues.empty() || queues.size() > kMaxQueuesPerWorker) {
    return absl::InvalidArgumentError(absl::StrCat("a worker takes from 1 to ",
                                                   kMaxQueuesPerWorker, " queues, not ",
                                                   queues.size()));
  }
  if (who.worker_id.size() > kMaxWorkerIdBytes || who.host.size() > kMaxWorkerIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker id or host is longer than ", kMaxWorkerIdBytes, " bytes"));
  }
  Pending pending;  // queues created on first use are written
  SubscriptionId id;
  {
    MutexLock lock(&mu_);
    for (const std::string& name : queues) {
      if (auto q = FindOrCreateQueue(name, pending); !q.ok()) return q.status();
    }
    Persist(pending);
    id = next_sub_id_++;
    Subscription& sub = subs_[id];
    sub.who = who;
    sub.since = clock_->Now();
    sub.deliver = std::move(deliver);
    for (const std::string& name : queues) {
      if (std::find(sub.queues.begin(), sub.queues.end(), name) != sub.queues.end()) continue;
      sub.queues.push_back(name);
      subs_by_queue_[name].push_back(id);
    }
  }
  pending.Run(on_earlier_deadline_);  // a new queue's idle check may be the earliest
  return id;
}

std::vector<v1::WorkerInfo> TaskEngine::ListWorkers() {
  MutexLock lock(&mu_);
  std::vector<std::pair<SubscriptionId, const Subscription*>> subs;
  subs.reserve(subs_.size());
  for (const auto& [id, sub] : subs_) subs.emplace_back(id, &sub);
  std::sort(subs.begin(), subs.end());  // ids grow: oldest first
  std::vector<v1::WorkerInfo> out;
  out.reserve(subs.size());
  for (const auto& [id, sub] : subs) {
    v1::WorkerInfo& info = out.emplace_back();
    info.set_worker_id(sub->who.worker_id);
    info.set_host(sub->who.host);
    info.set_peer(sub->who.peer);
    info.set_credential(sub->who.credential);
    info.set_since_unix_ms(absl::ToUnixMillis(sub->since));
    for (const std::string& q : sub->queues) info.add_queues(q);
    info.set_credits(sub->credits);
    info.set_running(static_cast<uint32_t>(sub->lease_ids.size()));
    std::vector<uint64_t> tasks;
    tasks.reserve(sub->lease_ids.size());
    for (uint64_t lease : sub->lease_ids) {
      if (auto task = leases_.TaskOf(lease)) tasks.push_back(*task);
    }
    const size_t listed = std::min(tasks.size(), kMaxListedRunningTasks);
    std::partial_sort(tasks.begin(), tasks.begin() + listed, tasks.end());
    for (size_t i = 0; i < listed; ++i) {
      auto rec = tasks_.find(tasks[i]);
      if (rec == tasks_.end()) continue;  // leased tasks are in memory; be safe
      auto* running = info.add_running_tasks();
      running->set_task_id(tasks[i]);
      running->set_queue(rec->second.task.queue());
      running->set_attempt(rec->second.task.attempt());
    }
  }
  return out;
}

absl::Status TaskEngine::AddCredits(SubscriptionId sub_id, uint32_t credits) {
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
      if (Queue* q = FindQueue(name)) pending.Touch(q);
    }
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return absl::OkStatus();
}

void TaskEngine::DeliveriesWritten(SubscriptionId sub_id, size_t bytes) {
  Pending pending;
  {
    MutexLock lock(&mu_);
    auto it = subs_.find(sub_id);
    if (it == subs_.end()) return;
    Subscription& sub = it->second;
    const bool was_full = sub.unwritten_bytes >= kMaxUnwrittenDeliveryBytes;
    sub.unwritten_bytes -= std::min(bytes, sub.unwritten_bytes);
    if (!was_full || sub.unwritten_bytes >= kMaxUnwrittenDeliveryBytes) return;
    for (const std::string& name : sub.queues) {
      if (Queue* q = FindQueue(name)) pending.Touch(q);
    }
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
}

void TaskEngine::Unsubscribe(SubscriptionId sub_id) {
  Pending pending;
  {
    MutexLock lock(&mu_);
    auto it = subs_.find(sub_id);
    if (it == subs_.end()) return;
    Subscription& sub = it->second;
    // Detach first so the returned tasks are not handed straight back to it.
    sub.credits = 0;
    for (const std::string& name : sub.queues) {
      if (Queue* q = FindQueue(name)) Used(*q);  // a reader until now
      auto list = subs_by_queue_.find(name);
      if (list == subs_by_queue_.end()) continue;
      std::erase(list->second, sub_id);
      if (list->second.empty()) {
        subs_by_queue_.erase(list);
        round_robin_.erase(name);
      }
    }
    std::vector<uint64_t> leases(sub.lease_ids.begin(), sub.lease_ids.end());
    std::sort(leases.begin(), leases.end());  // deterministic order
    std::string why = absl::StrCat("worker ", sub.who.worker_id, " disconnected");
    for (uint64_t lease_id : leases) {
      if (std::optional<uint64_t> task_id = leases_.TaskOf(lease_id)) {
        LoseLease(tasks_.at(*task_id), LostHow::kDisconnected, why, pending);
      }
    }
    subs_.erase(sub_id);
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
}

// --- waiting and time -----------------------------------------------------------------------

absl::Time TaskEngine::NextDeadlineLocked() {
  return schedule_.Next();
}

absl::Time TaskEngine::NextDeadline() {
  MutexLock lock(&mu_);
  return NextDeadlineLocked();
}

void TaskEngine::WatchDeadline(absl::Time t, Pending& pending) {
  if (t < NextDeadlineLocked()) pending.WakeTimer();
}

WaitId TaskEngine::AddWaiter(Queue& q, Waiter w, Pending& pending) {
  WaitId id = next_wait_id_++;
  if (w.deadline != absl::InfiniteFuture()) {
    WatchDeadline(w.deadline, pending);
    schedule_.AddWait(w.deadline, id);
  }
  switch (w.kind) {
    case WaitKind::kPut:
      q.putters.Push(id);
      memory_.AddWaiting(w.put_bytes);
      break;
    case WaitKind::kGet:
      q.getters.Push(id);
      break;
    case WaitKind::kJoin:
      q.joiners.Push(id);
      break;
  }
  waiters_.emplace(id, std::move(w));
  return id;
}

void TaskEngine::FailWaiter(WaitId id, absl::Status status, Pending& pending) {
  auto it = waiters_.find(id);
  if (it == waiters_.end()) return;
  Waiter& w = it->second;
  if (w.deadline != absl::InfiniteFuture()) schedule_.RemoveWait(w.deadline, id);
  Queue* q = FindQueue(w.queue);
  if (q) Used(*q);  // a waiting call counts as use until it ends
  switch (w.kind) {
    case WaitKind::kPut:
      if (q) {
        q->putters.Ended();
        Touch(*q, pending);  // a smaller batch behind it may fit now
      }
      memory_.RemoveWaiting(w.put_bytes);
      pending.Reply(std::move(w.put_done), status);
      break;
    case WaitKind::kGet:
      if (q) q->getters.Ended();
      pending.Reply(std::move(w.get_done), status);
      break;
    case WaitKind::kJoin:
      if (q) q->joiners.Ended();
      pending.Reply(std::move(w.join_done), status);
      break;
  }
  waiters_.erase(it);
  if (q) CompactWaitLists(*q);
}

void TaskEngine::CompactWaitLists(Queue& q) {
  auto is_live = [this](WaitId id) {
    mu_.AssertHeld();  // called back inside CompactWaitLists
    return waiters_.contains(id);
  };
  q.getters.Compact(is_live);
  q.putters.Compact(is_live);
  q.joiners.Compact(is_live);
}

void TaskEngine::CancelWait(WaitId id) {
  if (id == 0) return;
  Pending pending;
  {
    MutexLock lock(&mu_);
    FailWaiter(id, absl::CancelledError("cancelled by the client"), pending);
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
}

void TaskEngine::AdvanceTo(absl::Time now) {
  Pending pending;
  {
    MutexLock lock(&mu_);
    // 1. Lease expiries, oldest deadline first: retried after backoff or
    //    given up.
    while (auto due = schedule_.LeaseDue(now)) {
      std::optional<uint64_t> task_id = leases_.TaskOf(due->second);
      if (!task_id) {
        schedule_.RemoveLease(due->first, due->second);
        continue;
      }
      TaskRecord& rec = tasks_.at(*task_id);
      std::string why = absl::StrCat("lease expired: ", rec.holder_name,
                                     " neither finished nor extended it in time");
      LoseLease(rec, LostHow::kExpired, std::move(why), pending);
    }
    // 2. Delayed tasks that are due become ready, in due order; all of them
    //    before any is handed out, so the queue's order decides among them.
    while (std::optional<DelayKey> due = schedule_.DelayedDue(now)) {
      TaskRecord& rec = tasks_.at(due->id);
      Queue* q = FindQueue(rec.task.queue());
      Detach(rec);
      MakeReady(*q, rec, /*new_place=*/true);
      Touch(*q, pending);
    }
    SettleTouched(pending);
    // 3. Waiting calls whose time is up (after hand-out: a getter whose
    //    deadline is now still gets a task that became ready now).
    while (auto due = schedule_.WaitDue(now)) {
      const WaitId id = due->second;
      auto it = waiters_.find(id);
      if (it == waiters_.end()) {
        schedule_.RemoveWait(due->first, id);
        continue;
      }
      const std::string& name = it->second.queue;
      Queue* q = FindQueue(name);
      absl::Status status;
      switch (it->second.kind) {
        case WaitKind::kPut:
          status = absl::ResourceExhaustedError(absl::StrCat(
              "queue \"", name, "\" is full (maxsize ", q ? q->config.maxsize() : 0,
              "): no room within the timeout"));
          break;
        case WaitKind::kGet:
          status = absl::DeadlineExceededError(
              absl::StrCat("queue \"", name, "\" is empty: no task within the timeout"));
          break;
        case WaitKind::kJoin:
          status = absl::DeadlineExceededError(absl::StrCat(
              "queue \"", name, "\" still has ", q ? Unfinished(*q) : 0, " unfinished tasks"));
          break;
      }
      FailWaiter(id, status, pending);
    }
    // 4. Queues idle past their TTL (after everything above: an expiry or
    //    time-out now may have been their last use).
    ExpireIdleQueues(now, pending);
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
}

void TaskEngine::Shutdown() {
  Pending pending;
  {
    MutexLock lock(&mu_);
    shut_down_ = true;
    std::vector<WaitId> ids;
    ids.reserve(waiters_.size());
    for (const auto& [id, w] : waiters_) ids.push_back(id);
    for (WaitId id : ids) FailWaiter(id, ShuttingDown(), pending);
    // No settling: nothing new is handed out once the master is stopping.
  }
  pending.Run(nullptr);
}

}  // namespace taskq
