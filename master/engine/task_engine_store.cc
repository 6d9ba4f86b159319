// TaskEngine: the durable copy. Each locked step's changes are
// written to the Store as one batch (Persist), and Recover rebuilds the
// engine from it after a restart. Record formats: proto/taskq/v1/stored.proto.
//
// A lease is written (state and attempt) like any change; a delivery on a
// worker's stream does not wait for it (handing a task out acknowledges
// nothing; the completion's ack waits). After a restart a task that was leased
// is ready again in its old place with that attempt counted ("master
// restarted" in its history), or given up if it was the last attempt. Lease
// ids carry the store's boot epoch in their top bits, so a lease granted
// before the restart can never settle a task afterwards.
//
// Beyond the memory budget, ready tasks go cold (see task_engine.h) and
// are read back in batches when handed out; restart brings ready tasks back
// cold, reading records but no payloads.
#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "master/engine/task_engine.h"
#include "master/engine/pending.h"
#include "taskq/v1/stored.pb.h"

namespace taskq {

namespace {

// Lease ids are (boot epoch << kEpochShift) + a counter.
constexpr int kEpochShift = 40;

absl::Status Corrupt(absl::string_view what, absl::string_view key) {
  return absl::DataLossError(absl::StrCat("store: cannot parse ", what, " record ",
                                          absl::CHexEscape(key),
                                          "; the data dir is damaged (restore a backup)"));
}


}  // namespace

absl::Status TaskEngine::Writable() {
  if (store_ == nullptr) return absl::OkStatus();
  return store_->Health();
}

void TaskEngine::WhenDurable(DoneCallback done) {
  Store* store;
  {
    MutexLock lock(&mu_);
    store = store_;
  }
  if (store == nullptr) return done(absl::OkStatus());
  store->WhenDurable(store->LastWritten(), std::move(done));
}

void TaskEngine::Persist(Pending& pending) {
  if (store_ == nullptr) return;
  if (!journal_.empty()) {
    std::unique_ptr<StoreBatch> batch = store_->NewBatch();
    std::vector<TaskRecord*> written;
    journal_.Flush(
        *batch, next_task_id_,
        [&](uint64_t id) -> TaskRecord* {
          mu_.AssertHeld();  // called back inside Persist
          auto it = tasks_.find(id);
          return it == tasks_.end() ? nullptr : &it->second;
        },
        [&](const std::string& name) -> std::optional<std::string> {
          mu_.AssertHeld();  // called back inside Persist
          const Queue* q = FindQueue(name);
          if (q == nullptr) return std::nullopt;
          return StoredQueueOf(*q);
        },
        written);
    const uint64_t seq = store_->Write(std::move(batch));
    for (TaskRecord* rec : written) rec->written_seq = seq;
    for (uint64_t id : to_cool_) cooling_.emplace_back(seq, id);
  }
  to_cool_.clear();
  // Replies wait for everything written so far, not only this step's batch:
  // what they report may rest on an earlier step's changes.
  pending.WaitFor(store_, store_->LastWritten());
}

std::string TaskEngine::StoredQueueOf(const Queue& q) const {
  v1::StoredQueue sq;
  *sq.mutable_config() = q.config;
  sq.set_shut_down(q.shut_down);
  sq.set_awaiting_task_done(q.awaiting_task_done);
  sq.set_total_put(q.total_put);
  sq.set_total_completed(q.total_completed);
  sq.set_total_failed(q.total_failed);
  sq.set_total_cancelled(q.total_cancelled);
  return sq.SerializeAsString();
}

void TaskEngine::RestoreQueueState(Queue& q, const v1::StoredQueue& sq) {
  q.shut_down = sq.shut_down();
  q.awaiting_task_done = sq.awaiting_task_done();
  q.total_put = sq.total_put();
  q.total_completed = sq.total_completed();
  q.total_failed = sq.total_failed();
  q.total_cancelled = sq.total_cancelled();
}

// --- cold ready tasks -------------------------------------------------------------

TaskRecord& TaskEngine::AddRecord(uint64_t id) { return tasks_[id]; }

void TaskEngine::Recount(TaskRecord& rec) {
  const size_t now = Footprint(rec);
  memory_.Remove(rec.counted_bytes);
  memory_.Add(now);
  rec.counted_bytes = now;
}

void TaskEngine::Pin(TaskRecord& rec) {
  if (rec.pinned_bytes != 0) return;
  rec.pinned_bytes = std::max<size_t>(rec.counted_bytes, 1);
  memory_.Pin(rec.pinned_bytes);
}

void TaskEngine::Unpin(TaskRecord& rec) {
  memory_.Unpin(rec.pinned_bytes);
  rec.pinned_bytes = 0;
}

void TaskEngine::DropRecord(uint64_t id) {
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  Unpin(it->second);
  memory_.Remove(it->second.counted_bytes);
  tasks_.erase(it);
}

MemoryUsage TaskEngine::Memory() {
  MutexLock lock(&mu_);
  return memory_.usage();
}

void TaskEngine::MaybeCool(const TaskRecord& rec) {
  if (store_ != nullptr && memory_.over_budget()) {
    to_cool_.push_back(rec.task.id());
  }
}

void TaskEngine::CoolDown() {
  if (cooling_.empty()) return;
  const uint64_t committed = store_->LastCommitted();
  while (!cooling_.empty() && cooling_.front().first <= committed) {
    const uint64_t id = cooling_.front().second;
    cooling_.pop_front();
    auto it = tasks_.find(id);
    // Still ready, and what the store has is its latest state.
    if (it != tasks_.end() && it->second.state == State::kReady &&
        it->second.written_seq <= committed && !journal_.IsMarked(id)) {
      DropRecord(id);
    }
  }
}

absl::Status TaskEngine::Hydrate(const std::vector<uint64_t>& ids) {
  if (ids.empty() || store_ == nullptr) return absl::OkStatus();
  absl::Status s = store_->ReadTasks(ids, [&](uint64_t id, absl::string_view record,
                                              absl::string_view payload) {
    mu_.AssertHeld();  // called back inside Hydrate
    if (tasks_.contains(id)) return true;
    TaskRecord rec;
    absl::StatusOr<v1::TaskState> state = DecodeTaskRecord(id, record, payload, rec);
    if (!state.ok()) {
      LogError("%s", state.status().message());
      return true;
    }
    rec.state = State::kReady;  // only ready tasks go cold
    TaskRecord& added = AddRecord(id);
    added = std::move(rec);
    Recount(added);
    return true;
  });
  if (!s.ok()) LogError("store: reading queued tasks back failed (tried again later): %s", s.message());
  return s;
}

absl::Status TaskEngine::HydrateHead(const Queue& q, size_t n) {
  if (store_ == nullptr || n == 0) return absl::OkStatus();
  std::vector<uint64_t> cold;
  size_t seen = 0;
  for (auto it = q.ready.begin(); it != q.ready.end() && seen < n; ++it, ++seen) {
    if (!tasks_.contains(it->id)) cold.push_back(it->id);
  }
  return Hydrate(cold);
}

TaskRecord* TaskEngine::HotHead(Queue& q, size_t batch) {
  while (!q.ready.empty()) {
    const uint64_t id = q.ready.Front().id;
    if (auto it = tasks_.find(id); it != tasks_.end()) return &it->second;
    // Cold: read it back with the ones behind it, `batch` at a time.
    if (!HydrateHead(q, std::max<size_t>(batch, 1)).ok()) return nullptr;
    if (auto it = tasks_.find(id); it != tasks_.end()) return &it->second;
    // Read, but not there or not readable: it cannot be handed out. Its
    // stored copy (if any) stays for an operator to look at.
    LogError("store: queued task %d of queue \"%s\" has no readable stored record; it is "
             "skipped (the data dir may be damaged)",
             id, q.config.name());
    q.ready.PopFront();
  }
  return nullptr;
}

TaskRecord* TaskEngine::FindCold(uint64_t id) {
  if (store_ == nullptr) return nullptr;
  TaskRecord rec;
  bool found = false;
  absl::Status s = store_->ReadTasks({id}, [&](uint64_t, absl::string_view record,
                                               absl::string_view payload) {
    found = DecodeTaskRecord(id, record, payload, rec).ok();
    return false;
  });
  if (!s.ok() || !found) return nullptr;
  // Cold only if it still holds its place in its queue (the store may lag
  // behind a task that finished a moment ago).
  const Queue* q = FindQueue(rec.task.queue());
  if (q == nullptr || !q->ready.Contains(rec.key)) return nullptr;
  rec.state = State::kReady;
  TaskRecord& added = AddRecord(id);
  added = std::move(rec);
  Recount(added);
  return &added;
}

absl::Status TaskEngine::LoadQueues(Pending& pending) {
  absl::Status bad;
  absl::Status s = store_->ScanRecords(Journal::kQueuePrefix, [&](absl::string_view key,
                                                         absl::string_view value) {
    mu_.AssertHeld();  // called back inside LoadQueues
    v1::StoredQueue sq;
    if (!sq.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      bad = Corrupt("queue", key);
      return false;
    }
    // Stored by a master from before idle TTLs: the rule for new queues
    // applies (a "_results.*" queue gets --results-ttl).
    const bool upgraded = !sq.config().has_idle_ttl_ms();
    Queue* q = AddQueue(upgraded ? FillDefaults(sq.config()) : sq.config(), pending);
    if (upgraded) upgraded_queues_.push_back(q->config.name());
    RestoreQueueState(*q, sq);
    return true;
  });
  return s.ok() ? bad : s;
}

absl::Status TaskEngine::LoadTasks(std::vector<uint64_t>& leased) {
  absl::Status bad;
  uint64_t orphans = 0;
  // Ready tasks come back cold (only their place in their queue): restart
  // reads records but no payloads. The others are read back in full below.
  std::vector<uint64_t> others;
  absl::Status s = store_->ScanTasks(
      [&](uint64_t id, absl::string_view record, absl::string_view) {
        mu_.AssertHeld();  // called back inside LoadTasks
        TaskRecord rec;
        absl::StatusOr<v1::TaskState> state = DecodeTaskRecord(id, record, "", rec);
        if (!state.ok()) {
          bad = state.status();
          return false;
        }
        Queue* q = FindQueue(rec.task.queue());
        if (q == nullptr) {  // cannot happen: a queue's delete deletes its tasks
          ++orphans;
          MarkTask(id);  // deleted by the recovery batch
          return true;
        }
        if (OwesResult(rec)) CountOwed(*q, rec);  // a leased one is settled below
        next_seq_ = std::max(next_seq_, std::abs(rec.key.minor) + 1);
        next_task_id_ = std::max(next_task_id_, id + 1);
        if (!rec.dedup_key.empty()) q->dedup[rec.dedup_key] = id;
        if (rec.state == State::kReady) {
          q->ready.Insert(rec.key);
        } else {
          others.push_back(id);
        }
        return true;
      },
      /*payloads=*/false);
  if (!s.ok()) return s;
  if (!bad.ok()) return bad;
  std::vector<uint64_t> delayed;
  s = store_->ReadTasks(others, [&](uint64_t id, absl::string_view record,
                                    absl::string_view payload) {
    mu_.AssertHeld();  // called back inside LoadTasks
    TaskRecord& rec = AddRecord(id);
    if (!DecodeTaskRecord(id, record, payload, rec).ok()) return true;  // parsed once already
    Recount(rec);
    Pin(rec);  // delayed, leased or dead: in memory for good
    Queue* q = FindQueue(rec.task.queue());
    switch (rec.state) {
      case State::kDelayed:
        delayed.push_back(id);  // ordered below
        break;
      case State::kLeased:
        leased.push_back(id);  // settled once everything is back
        break;
      case State::kDead: {
        Queue* dlq = FindQueue(rec.dead_in);
        if (dlq == nullptr) dlq = q;
        rec.dead_in = dlq->config.name();
        dlq->dead.insert(id);
        break;
      }
      case State::kReady:
        break;
    }
    return true;
  });
  if (!s.ok()) return s;
  // Reads come back in no particular order: equal due times are ordered by
  // id, and leases are settled by id, so a restart is deterministic.
  std::sort(delayed.begin(), delayed.end());
  for (uint64_t id : delayed) {
    TaskRecord& rec = tasks_.at(id);
    rec.delay = schedule_.AddDelayed(rec.delay.due, id);
    FindQueue(rec.task.queue())->delayed.insert(rec.delay);
  }
  std::sort(leased.begin(), leased.end());
  if (orphans > 0) LogWarning("store: dropped %d tasks of queues that no longer exist", orphans);
  return absl::OkStatus();
}

absl::Status TaskEngine::Recover(Store* store) {
  const absl::Time start = absl::Now();
  Pending pending;
  {
    MutexLock lock(&mu_);
    store_ = store;
    journal_.Enable();
    memory_.set_durable(true);  // ready tasks can go cold from now on
    auto epoch_value = store_->GetRecord(Journal::kEpochKey);
    if (!epoch_value.ok()) return epoch_value.status();
    const uint64_t epoch = (*epoch_value ? Journal::DecodeU64(**epoch_value) : 0) + 1;
    leases_.StartAt((epoch << kEpochShift) + 1);
    auto next_id = store_->GetRecord(Journal::kNextIdKey);
    if (!next_id.ok()) return next_id.status();
    if (*next_id) next_task_id_ = std::max(next_task_id_, Journal::DecodeU64(**next_id));
    journal_.SetReserved(next_task_id_);  // the next Persist reserves a new block

    if (auto s = LoadQueues(pending); !s.ok()) return s;
    if (queues_.size() > options_.max_queues) {
      LogWarning("store: %d queues recovered, more than --max-queues %d: all are served, but "
                 "no new queue can be created until enough are deleted",
                 queues_.size(), options_.max_queues);
    }
    std::vector<uint64_t> leased;
    if (auto s = LoadTasks(leased); !s.ok()) return s;
    // What was just read needs no writing back.
    std::vector<uint64_t> orphans = journal_.MarkedTasks();
    journal_.Clear();
    for (uint64_t id : orphans) MarkTask(id);
    for (const std::string& name : upgraded_queues_) MarkQueue(name);  // their TTL, written
    upgraded_queues_.clear();
    for (uint64_t id : leased) {
      LoseLease(tasks_.at(id), LostHow::kRestarted,
                "the master restarted while the task was leased", pending);
    }
    uint64_t ready = 0, delayed = 0, dead = 0;
    for (const auto& [name, q] : queues_) {
      ready += q->ready.size();
      delayed += q->delayed.size();
      dead += q->dead.size();
    }
    // The new epoch is on disk before any lease of this boot is handed out.
    std::unique_ptr<StoreBatch> batch = store_->NewBatch();
    batch->PutRecord(Journal::kEpochKey, Journal::EncodeU64(epoch));
    store_->Write(std::move(batch));
    EndStep(pending);
    LogInfo("store: recovered %d queues and %d tasks (%d ready, %d delayed, %d dead; %d were "
            "leased and are ready again) in %d ms",
            queues_.size(), ready + delayed + dead, ready, delayed, dead, leased.size(),
            absl::ToInt64Milliseconds(absl::Now() - start));
  }
  absl::Status durable = absl::UnknownError("not run");
  Notification synced;
  store->WhenDurable(store->LastWritten(), [&](absl::Status s) {
    durable = s;
    synced.Notify();
  });
  synced.WaitForNotification();
  pending.Run(on_earlier_deadline_);
  // A full disk (or a failing one) does not stop the start: reads are
  // served, writes refused, and nothing is handed out until the store takes
  // writes again (Writable). The new epoch is stored before that: it is
  // the first batch the store's retry commits, so no lease of this boot
  // can outlive a restart with its epoch unrecorded.
  if (absl::Status health = store->Health(); !durable.ok() || !health.ok()) {
    LogWarning("starting read-only: %s. Nothing is handed out to workers until the store "
               "takes writes again, which it does by itself once space is freed",
               health.ok() ? durable.message() : health.message());
  }
  return absl::OkStatus();
}

void TaskEngine::OnStoreHealthy() {
  Pending pending;
  {
    MutexLock lock(&mu_);
    for (const auto& [name, q] : queues_) Touch(*q, pending);
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
}

}  // namespace taskq
