#include "master/cluster/queue_mover.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"

namespace taskq {
namespace {

absl::Status Annotate(const absl::Status& s, absl::string_view what) {
  return absl::Status(s.code(), absl::StrCat(what, ": ", s.message()));
}

}  // namespace

QueueMover::QueueMover(QueueEngine* engine, QueueRouter* router, MoveWatch* watch,
                       QueueMoverOptions options)
    : engine_(engine), router_(router), watch_(watch), options_(std::move(options)) {}

void QueueMover::Stop() {
  std::vector<std::thread> threads;
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    threads.swap(threads_);
  }
  for (std::thread& t : threads) t.join();
}

void QueueMover::Move(const v1::MoveQueueRequest& request, MoveDone done) {
  MutexLock lock(&mu_);
  if (stopping_) {
    done(absl::UnavailableError("master is shutting down"));
    return;
  }
  threads_.emplace_back([this, request, done = std::move(done)] { done(RunMove(request)); });
}

absl::StatusOr<v1::MoveQueueResponse> QueueMover::RunMove(const v1::MoveQueueRequest& request) {
  const std::string& queue = request.queue();
  if (request.to() == router_->self()) {
    return absl::FailedPreconditionError(
        absl::StrCat("queue \"", queue, "\" is on master \"", request.to(), "\" already"));
  }
  auto to = router_->LiveMaster(request.to());
  if (!to.ok()) return absl::InvalidArgumentError(to.status().message());
  const absl::Duration drain = request.drain_timeout_ms() == 0
                                   ? options_.default_drain
                                   : absl::Milliseconds(request.drain_timeout_ms());

  // 1, 2: the group, fenced.
  const std::vector<std::string> group = engine_->TiedQueues(queue);
  auto placements = router_->BeginMove(group, *to);
  if (!placements.ok()) return placements.status();
  if (std::none_of(placements->begin(), placements->end(),
                   [&](const QueuePlacement& p) { return p.queue == queue; })) {
    router_->EndMove(group, to->name, /*moved=*/false);
    return absl::FailedPreconditionError(absl::StrCat(
        "queue \"", queue, "\" has no placement in etcd yet (etcd was away when it was made?); "
        "it can be moved once this master has placed it"));
  }
  const absl::Time fenced_at = absl::Now();
  LogInfo("cluster: moving queue%s %s to master \"%s\" at %s", group.size() > 1 ? "s" : "",
          absl::StrJoin(group, ", "), to->name, to->address);
  for (const std::string& q : group) {
    engine_->FenceQueues({q}, RedirectToMaster(q, *to, /*moving=*/true));
  }
  auto give_up = [&](const absl::Status& why, Client* target) {
    Abort(target, group);
    engine_->UnfenceQueues(group);
    router_->EndMove(group, to->name, /*moved=*/false);
    LogWarning("cluster: the move of queue \"%s\" to \"%s\" failed; it stays here: %s", queue,
               to->name, why.message());
    return why;
  };
  // A tie made between reading the group and the fence (a put naming a
  // reply_to, a dead_letter set) would strand what it sends; the fence
  // stops new ones, so one look now is enough.
  if (engine_->TiedQueues(queue) != group) {
    return give_up(absl::AbortedError("the queues tied to it changed as the move began; "
                                      "nothing moved, send the move again"),
                   nullptr);
  }

  // 3: leases end, or are taken back.
  const absl::Time drain_until = absl::Now() + drain;
  while (engine_->LeasesOn(group) > 0 && absl::Now() < drain_until) {
    {
      MutexLock lock(&mu_);
      if (stopping_) return give_up(absl::UnavailableError("master is shutting down"), nullptr);
    }
    absl::SleepFor(absl::Milliseconds(20));  // polled: leases end on other threads
  }
  const uint64_t taken_back = engine_->TakeBackLeases(group);

  // 4: the copy.
  auto records = engine_->ExportQueues(group);
  if (!records.ok()) return give_up(Annotate(records.status(), "reading the queues"), nullptr);
  auto target = options_.connect(to->address);
  if (!target.ok()) {
    return give_up(Annotate(target.status(), absl::StrCat("connecting to ", to->name)), nullptr);
  }
  if (absl::Status s = Copy(**target, group, *records); !s.ok()) {
    return give_up(Annotate(s, absl::StrCat("copying to ", to->name)), target->get());
  }

  // 5: the switch. An error from etcd leaves it unknown whether the
  // transaction went through: read until etcd answers.
  absl::Status switched = router_->SwitchOwner(*placements, to->name);
  while (!switched.ok() && !absl::IsFailedPrecondition(switched)) {
    auto owner = router_->OwnerInEtcd(queue);
    if (owner.ok()) {
      if (*owner == to->name) switched = absl::OkStatus();
      break;
    }
    LogWarning("cluster: moving \"%s\": etcd does not answer (%s); waiting for it to learn "
               "whether the switch went through",
               queue, owner.status().message());
    {
      MutexLock lock(&mu_);
      // Still fenced: if the switch went through, the target serves them;
      // a restart here asks etcd before serving (QueueRouter::Start).
      if (stopping_) return absl::UnavailableError("master is shutting down");
    }
    absl::SleepFor(absl::Seconds(1));
  }
  if (!switched.ok()) {
    return give_up(Annotate(switched, "switching the owner in etcd"), target->get());
  }

  // 6: the target's now. Drop the copy here, redirect, end streams.
  const std::vector<uint64_t> dropped = engine_->DropQueues(
      group, RedirectToMaster(queue, *to, /*moving=*/false));
  router_->EndMove(group, to->name, /*moved=*/true, dropped);
  watch_->Moved(group, [&](const std::string& q) {
    return RedirectToMaster(q, *to, /*moving=*/false);
  });
  v1::AdoptQueuesRequest commit;
  commit.set_from(router_->self());
  for (const std::string& q : group) commit.add_queues(q);
  commit.set_commit(true);
  if (absl::Status s = (*target)->AdoptQueues(commit); !s.ok()) {
    // The target reads etcd every second and serves them then.
    LogWarning("cluster: master \"%s\" was not told that the move of \"%s\" ended (%s); it "
               "learns it from etcd",
               to->name, queue, s.message());
  }
  const absl::Duration took = absl::Now() - fenced_at;
  LogInfo("cluster: moved queue%s %s to master \"%s\": %d tasks, %d leases taken back, %d ms",
          group.size() > 1 ? "s" : "", absl::StrJoin(group, ", "), to->name,
          records->tasks.size(), taken_back, absl::ToInt64Milliseconds(took));
  v1::MoveQueueResponse response;
  for (const std::string& q : group) response.add_queues(q);
  response.set_tasks(records->tasks.size());
  response.set_taken_back(taken_back);
  response.set_took_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(took)));
  return response;
}

absl::Status QueueMover::Copy(Client& target, const std::vector<std::string>& group,
                              const MovedQueues& records) {
  v1::AdoptQueuesRequest chunk;
  size_t bytes = 0;
  bool first = true;
  auto start = [&] {
    chunk.Clear();
    chunk.set_from(router_->self());
    for (const std::string& q : group) chunk.add_queues(q);
    chunk.set_replace(first);
    bytes = 0;
  };
  auto send = [&]() -> absl::Status {
    absl::Status s = target.AdoptQueues(chunk);
    first = false;
    start();
    return s;
  };
  start();
  for (const std::string& q : records.queues) chunk.add_stored_queues(q);
  for (const MovedTask& t : records.tasks) {
    const size_t size = t.record.size() + t.payload.size() + 32;
    if (bytes > 0 && bytes + size > options_.chunk_bytes) {
      if (absl::Status s = send(); !s.ok()) return s;
    }
    auto* task = chunk.add_tasks();
    task->set_id(t.id);
    task->set_record(t.record);
    task->set_payload(t.payload);
    bytes += size;
  }
  return send();
}

void QueueMover::Abort(Client* target, const std::vector<std::string>& group) {
  if (target == nullptr) return;
  v1::AdoptQueuesRequest abort;
  abort.set_from(router_->self());
  for (const std::string& q : group) abort.add_queues(q);
  abort.set_abort(true);
  if (absl::Status s = target->AdoptQueues(abort); !s.ok()) {
    LogWarning("cluster: the target of a failed move keeps a copy it does not serve (%s); a "
               "later move there replaces it",
               s.message());
  }
}

absl::Status QueueMover::Adopt(const v1::AdoptQueuesRequest& request) {
  const std::vector<std::string> group(request.queues().begin(), request.queues().end());
  if (request.from() == router_->self()) {
    return absl::InvalidArgumentError("a master does not move queues to itself");
  }
  if (request.commit()) return router_->Adopt(group);
  // Only copies this master does not serve are dropped or replaced.
  for (const std::string& q : group) {
    if (router_->Owns(q)) {
      return absl::FailedPreconditionError(
          absl::StrCat("queue \"", q, "\" is served by master \"", router_->self(),
                       "\" already: not replaced by a copy from \"", request.from(), "\""));
    }
  }
  if (request.abort()) {
    engine_->DropQueues(group, absl::NotFoundError("a move that failed"));
    return absl::OkStatus();
  }
  MovedQueues records;
  records.queues.assign(request.stored_queues().begin(), request.stored_queues().end());
  records.tasks.reserve(request.tasks_size());
  for (const auto& t : request.tasks()) records.tasks.push_back({t.id(), t.record(), t.payload()});
  return engine_->ImportQueues(group, request.replace(), records);
}

}  // namespace taskq
