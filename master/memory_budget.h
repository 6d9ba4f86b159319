// MemoryBudget: how much memory the engine's task records take, and which
// puts --memory-budget-mb still admits.
//
// The engine reports every record it holds (Add/Remove, in bytes from
// TaskBytes and its own record overhead), which of them must stay in memory
// (Pin/Unpin: delayed, leased and dead tasks; without a store, all of
// them), and the payloads of puts waiting for room in a full queue
// (AddWaiting/RemoveWaiting). Admit decides a new put:
//
//   without a store  every task stays in memory: a put is refused once the
//                    records plus waiting puts plus this put exceed the
//                    budget.
//   with a store     a ready task beyond the budget goes cold (only its
//                    place in its queue stays), so ready tasks are not
//                    refused; delayed ones cannot go cold: a put with
//                    delayed tasks is refused once pinned records plus
//                    waiting puts plus its delayed tasks exceed the pinned
//                    budget (the master makes it the budget too). A ready
//                    task goes cold only once its write is committed, so
//                    under a write flood memory runs ahead; a hard cap (the
//                    budget, plus the pinned budget, plus a slack for
//                    uncommitted writes) refuses every put beyond that. In
//                    all, records stay under about twice the budget.
//   waiting          a put that would wait for room holds its payload in
//                    the master meanwhile: refused if the puts already
//                    waiting plus it exceed the budget.
//
// Refusals are RESOURCE_EXHAUSTED with a message naming --memory-budget-mb
// and what to do. Nothing else is ever refused for memory: completions and
// their results, retries (a failed task waits delayed), requeues and
// recovery add to the records whatever the budget, so results can exceed it
// by one result per outstanding lease.
//
// Thread-safety: none; the engine uses it under its own lock.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq {

// Bytes of a task's variable parts as a record holds them: payload, names,
// headers and args (each string with its allocation overhead). The fixed
// part of a record is the engine's to add.
size_t TaskBytes(const v1::Task& task);
// The same for a task about to be put on `queue` (so that a put can be
// judged before its records exist).
size_t SpecBytes(const v1::TaskSpec& spec, const std::string& queue);

struct MemoryUsage {
  size_t budget_bytes = 0;
  size_t task_bytes = 0;         // every record in memory
  size_t pinned_bytes = 0;       // of those, the ones that cannot go cold
  size_t waiting_put_bytes = 0;  // puts waiting for room
  size_t hard_cap_bytes = 0;     // with a store: beyond this every put is refused
  size_t peak_task_bytes = 0;    // the most task_bytes reached
};

// What a put would add.
struct PutDemand {
  size_t bytes = 0;          // all its new tasks (records included)
  size_t delayed_bytes = 0;  // of those, the delayed ones
  bool will_wait = false;    // it waits for room in a full queue
};

class MemoryBudget {
 public:
  // `budget_bytes`: --memory-budget-mb. `pinned_budget_bytes`: with a
  // store, what delayed, leased and dead tasks may take (0 = the budget).
  // `cooling_slack_bytes`: with a store, headroom for ready tasks whose
  // write is not committed yet (they cannot go cold before).
  MemoryBudget(size_t budget_bytes, size_t pinned_budget_bytes, size_t cooling_slack_bytes)
      : budget_(budget_bytes),
        pinned_budget_(pinned_budget_bytes == 0 ? budget_bytes : pinned_budget_bytes),
        slack_(cooling_slack_bytes) {}

  // With a store, ready tasks can go cold (see the header comment).
  void set_durable(bool durable) { durable_ = durable; }

  void Add(size_t bytes) {
    task_bytes_ += bytes;
    if (task_bytes_ > peak_) peak_ = task_bytes_;
  }
  void Remove(size_t bytes) { task_bytes_ -= bytes <= task_bytes_ ? bytes : task_bytes_; }
  void Pin(size_t bytes) { pinned_bytes_ += bytes; }
  void Unpin(size_t bytes) { pinned_bytes_ -= bytes <= pinned_bytes_ ? bytes : pinned_bytes_; }
  void AddWaiting(size_t bytes) { waiting_bytes_ += bytes; }
  void RemoveWaiting(size_t bytes) {
    waiting_bytes_ -= bytes <= waiting_bytes_ ? bytes : waiting_bytes_;
  }

  // Records take more than the budget: new ready tasks should go cold.
  bool over_budget() const { return task_bytes_ > budget_; }

  // OK, or RESOURCE_EXHAUSTED saying which limit `demand` would cross.
  absl::Status Admit(const PutDemand& demand) const;

  MemoryUsage usage() const;

 private:
  // Ready tasks up to the budget, pinned ones up to theirs, and the slack.
  size_t HardCap() const { return budget_ + pinned_budget_ + slack_; }

  const size_t budget_;
  const size_t pinned_budget_;
  const size_t slack_;
  bool durable_ = false;
  size_t task_bytes_ = 0;
  size_t pinned_bytes_ = 0;
  size_t waiting_bytes_ = 0;
  size_t peak_ = 0;
};

}  // namespace taskq
