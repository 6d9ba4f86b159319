// TaskEngine: moving queues to another master (cluster mode; the protocol
// is master/cluster/queue_mover.h, the rules docs/CLUSTER.md "Moving a
// queue"). The owner fences the group, lets leases end or takes them back,
// exports the stored records; the target imports them with their ids; the
// owner drops its copy once etcd names the target.
#include <algorithm>
#include <deque>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "master/engine/pending.h"
#include "master/engine/task_engine.h"
#include "taskq/v1/stored.pb.h"

namespace taskq {

std::vector<std::string> TaskEngine::TiedQueues(const std::string& queue) {
  MutexLock lock(&mu_);
  std::vector<std::string> group;
  absl::flat_hash_set<std::string> seen;
  std::deque<std::string> todo;
  auto add = [&](const std::string& name) {
    if (!name.empty() && seen.insert(name).second) todo.push_back(name);
  };
  add(queue);
  while (!todo.empty()) {
    const std::string name = std::move(todo.front());
    todo.pop_front();
    group.push_back(name);
    if (const Queue* q = FindQueue(name)) {
      add(q->config.dead_letter());
      for (const auto& [reply_to, n] : q->owed_by_reply_to) add(reply_to);
      for (uint64_t id : q->dead) {
        const TaskRecord& rec = tasks_.at(id);
        add(rec.task.queue());
        add(rec.task.reply_to());
      }
    }
    // The queues that send here: dead letters, or results owed.
    for (const auto& [other_name, other] : queues_) {
      if (other->config.dead_letter() == name || other->owed_by_reply_to.contains(name)) {
        add(other_name);
      }
    }
  }
  std::sort(group.begin(), group.end());
  return group;
}

void TaskEngine::FenceQueues(const std::vector<std::string>& queues, absl::Status why) {
  Pending pending;
  {
    MutexLock lock(&mu_);
    for (const std::string& name : queues) {
      Queue* q = FindQueue(name);
      if (q == nullptr) continue;
      q->fence = why;
      // Copies: FailWaiter compacts the lists it is called for.
      std::vector<WaitId> waiting = q->getters.Ids();
      waiting.insert(waiting.end(), q->putters.begin(), q->putters.end());
      waiting.insert(waiting.end(), q->joiners.begin(), q->joiners.end());
      for (WaitId id : waiting) FailWaiter(id, why, pending);
    }
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
}

void TaskEngine::UnfenceQueues(const std::vector<std::string>& queues) {
  Pending pending;
  {
    MutexLock lock(&mu_);
    for (const std::string& name : queues) {
      Queue* q = FindQueue(name);
      if (q == nullptr || q->fence.ok()) continue;
      q->fence = absl::OkStatus();
      Touch(*q, pending);  // hands out what waited meanwhile
    }
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
}

uint64_t TaskEngine::LeasesOn(const std::vector<std::string>& queues) {
  MutexLock lock(&mu_);
  uint64_t n = 0;
  for (const std::string& name : queues) {
    if (const Queue* q = FindQueue(name)) n += q->leased.size();
  }
  return n;
}

uint64_t TaskEngine::TakeBackLeases(const std::vector<std::string>& queues) {
  Pending pending;
  uint64_t taken = 0;
  {
    MutexLock lock(&mu_);
    for (const std::string& name : queues) {
      Queue* q = FindQueue(name);
      if (q == nullptr) continue;
      const std::vector<uint64_t> leased(q->leased.begin(), q->leased.end());
      for (uint64_t id : leased) {
        TaskRecord& rec = tasks_.at(id);
        AddHistory(rec, "moved", "its queue moved to another master while it was leased");
        // Not counted: the worker did not fail it (as Release).
        rec.task.set_attempt(rec.task.attempt() - 1);
        Detach(rec);
        MakeReady(*q, rec, /*new_place=*/false);
        ++taken;
      }
      Touch(*q, pending);
    }
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return taken;
}

absl::StatusOr<MovedQueues> TaskEngine::ExportQueues(const std::vector<std::string>& queues) {
  MutexLock lock(&mu_);
  MovedQueues out;
  std::vector<uint64_t> cold;
  auto add_hot = [&](TaskRecord& rec) {
    MovedTask t;
    t.id = rec.task.id();
    t.payload = rec.task.payload();
    t.record = SerializeTaskRecord(rec);
    out.tasks.push_back(std::move(t));
  };
  for (const std::string& name : queues) {
    Queue* q = FindQueue(name);
    if (q == nullptr) continue;
    if (q->fence.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("queue \"", name, "\" is not fenced for a move"));
    }
    if (!q->leased.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "queue \"", name, "\" still has ", q->leased.size(), " leased tasks"));
    }
    out.queues.push_back(StoredQueueOf(*q));
    for (const ReadyKey& key : q->ready) {
      auto it = tasks_.find(key.id);
      if (it == tasks_.end()) {
        cold.push_back(key.id);
      } else {
        add_hot(it->second);
      }
    }
    for (const DelayKey& key : q->delayed) add_hot(tasks_.at(key.id));
    for (uint64_t id : q->dead) add_hot(tasks_.at(id));
  }
  if (!cold.empty()) {
    if (store_ == nullptr) return absl::InternalError("cold tasks without a store");
    size_t read = 0;
    absl::Status s = store_->ReadTasks(cold, [&](uint64_t id, absl::string_view record,
                                                 absl::string_view payload) {
      out.tasks.push_back({id, std::string(record), std::string(payload)});
      ++read;
      return true;
    });
    if (!s.ok()) return s;
    if (read != cold.size()) {
      return absl::DataLossError(absl::StrCat("store: ", cold.size() - read, " of ", cold.size(),
                                              " queued tasks could not be read back"));
    }
  }
  return out;
}

void TaskEngine::PlaceImported(Queue& q, TaskRecord& rec, Pending& pending) {
  const uint64_t id = rec.task.id();
  next_seq_ = std::max(next_seq_, std::abs(rec.key.minor) + 1);
  if (!rec.dedup_key.empty()) q.dedup[rec.dedup_key] = id;
  switch (rec.state) {
    case State::kLeased:  // not exported; stored mid-lease by an older master
      rec.state = State::kReady;
      [[fallthrough]];
    case State::kReady:
      q.ready.Insert(rec.key);
      MaybeCool(rec);
      break;
    case State::kDelayed:
      rec.delay = schedule_.AddDelayed(rec.delay.due, id);
      q.delayed.insert(rec.delay);
      WatchDeadline(rec.delay.due, pending);
      Pin(rec);
      break;
    case State::kDead: {
      Queue* dlq = FindQueue(rec.dead_in);
      if (dlq == nullptr) dlq = &q;
      rec.dead_in = dlq->config.name();
      dlq->dead.insert(id);
      Pin(rec);
      break;
    }
  }
  if (OwesResult(rec)) CountOwed(q, rec);
  MarkNewTask(id);  // record and payload
}

absl::Status TaskEngine::ImportQueues(const std::vector<std::string>& group, bool replace,
                                      const MovedQueues& records) {
  Pending pending;
  absl::Status status;
  {
    MutexLock lock(&mu_);
    if (auto s = Writable(); !s.ok()) return s;
    if (replace) {
      for (const std::string& name : group) {
        if (FindQueue(name) != nullptr) RemoveQueue(name, pending);
      }
    }
    for (const std::string& record : records.queues) {
      v1::StoredQueue sq;
      if (!sq.ParseFromString(record)) {
        status = absl::InvalidArgumentError("a moved queue record does not parse");
        break;
      }
      const std::string& name = sq.config().name();
      if (std::find(group.begin(), group.end(), name) == group.end()) {
        status = absl::InvalidArgumentError(
            absl::StrCat("moved queue \"", name, "\" is not in the group being moved"));
        break;
      }
      if (FindQueue(name) != nullptr) {  // `replace` dropped every copy of the group
        status = absl::FailedPreconditionError(absl::StrCat(
            "moved queue \"", name, "\" is here already (the first chunk replaces a copy)"));
        break;
      }
      RestoreQueueState(*AddQueue(sq.config(), pending), sq);
      MarkQueue(name);
    }
    for (size_t i = 0; status.ok() && i < records.tasks.size(); ++i) {
      const MovedTask& t = records.tasks[i];
      TaskRecord rec;
      absl::StatusOr<v1::TaskState> state = DecodeTaskRecord(t.id, t.record, t.payload, rec);
      if (!state.ok()) {
        status = state.status();
        break;
      }
      Queue* q = FindQueue(rec.task.queue());
      if (q == nullptr || tasks_.contains(t.id) ||
          std::find(group.begin(), group.end(), rec.task.queue()) == group.end()) {
        status = absl::InvalidArgumentError(absl::StrCat(
            "moved task ", t.id, " of queue \"", rec.task.queue(),
            "\" does not belong to a queue of the move, or is here already"));
        break;
      }
      TaskRecord& added = AddRecord(t.id);
      added = std::move(rec);
      Recount(added);
      PlaceImported(*q, added, pending);
    }
    for (const std::string& name : group) {
      if (Queue* q = FindQueue(name)) Touch(*q, pending);
    }
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return status;
}

std::vector<uint64_t> TaskEngine::DropQueues(const std::vector<std::string>& queues,
                                             absl::Status why) {
  Pending pending;
  std::vector<uint64_t> dropped;
  {
    MutexLock lock(&mu_);
    for (const std::string& name : queues) {
      Queue* q = FindQueue(name);
      if (q == nullptr) continue;
      for (const ReadyKey& key : q->ready) dropped.push_back(key.id);
      for (const DelayKey& key : q->delayed) dropped.push_back(key.id);
      dropped.insert(dropped.end(), q->leased.begin(), q->leased.end());
      dropped.insert(dropped.end(), q->dead.begin(), q->dead.end());
      RemoveQueue(name, pending, why);
    }
    EndStep(pending);
  }
  pending.Run(on_earlier_deadline_);
  return dropped;
}

}  // namespace taskq
