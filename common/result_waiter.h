// taskq::ResultWaiter / SubmitAndWait: put tasks and collect each one's
// result as it arrives: what `taskq submit --wait` runs.
//
// Thread-safety: a ResultWaiter serves one Run() call; Cancel() and
// summary() may be called from any thread meanwhile.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/client.h"
#include "common/result_reader.h"
#include "common/sync.h"

namespace taskq {

struct SubmitOptions {
  std::string queue;     // where the tasks go
  std::string reply_to;  // where their results come back; required
  // For the whole submission (puts and results); then DEADLINE_EXCEEDED.
  absl::Duration timeout = absl::InfiniteDuration();
  size_t put_batch = 1000;                      // tasks per Put request
  uint32_t get_batch = 1000;                    // results per Get request
  absl::Duration poll_chunk = absl::Seconds(1);  // long-poll per Get
  // Results are read with leases of this length and acknowledged once
  // reported (ResultReader): a reply lost on the way comes again after it.
  absl::Duration result_lease = absl::Seconds(10);
  // Tasks without a dedup_key get "<dedup_prefix><index>", so that a Put
  // sent again after a lost connection stores them once. Empty = a random
  // "submit.<16 hex digits>:" per Run.
  std::string dedup_prefix = {};
  // Called (serialised with OnResult) for a task the master deduplicated
  // onto the existing task `id` whose reply_to is another queue: its result
  // will not come here, so it is not waited for. `existing` is GetTask's
  // answer (NOT_FOUND if the master no longer knows the task).
  std::function<void(size_t index, uint64_t id, const absl::StatusOr<v1::Task>& existing)>
      on_not_waited = nullptr;
};

struct SubmitSummary {
  std::vector<uint64_t> ids;  // ids of the tasks put, in submission order
  size_t results = 0;         // tasks that have their result
  size_t failed = 0;          // of those, OUTCOME_FAILED
  size_t cancelled = 0;       // of those, OUTCOME_CANCELLED
  // Tasks the master deduplicated onto an existing task (PutReceipt), and
  // of those the ones not waited for (their result goes to another queue).
  // A payload deduplicated onto a task of the same submission is counted
  // in `existing` and reported once, under the first index.
  size_t existing = 0;
  size_t not_waited = 0;
  // Second result for a task: the master broke exactly-once delivery.
  size_t duplicates = 0;
  // A result delivered again (its lease lapsed after a lost reply or a
  // lost acknowledgement) and dropped, as the reader has it already.
  size_t redelivered = 0;
  // Results for tasks this submission did not put (e.g. left over on a
  // shared reply_to queue from an earlier run); they are consumed and
  // dropped.
  size_t ignored = 0;
};

// Puts tasks (reply_to set to SubmitOptions::reply_to) and collects their
// results, pipelined: one thread puts batches while the calling thread
// long-polls the reply_to queue and reports each result the moment it
// arrives, so a long job shows progress and no result waits for the last
// put. The reply_to queue should belong to this submission alone: results
// are taken from it, and results of other tasks are dropped.
//
// Across network cuts and master restarts: puts and polls are retried
// until the timeout (tasks carry dedup keys, so a put sent twice stores
// them once), and results are read with leases and acknowledged after
// OnResult returned (ResultReader), so each task's result is reported
// exactly once, none lost.
class ResultWaiter {
 public:
  // Called once per task waited for with its index in the submitted vector
  // and its result message (result_of = the task id, outcome, payload or
  // error). Calls are serialised (never concurrent) but may come from the
  // put thread or the calling thread. Tasks the master deduplicated onto a
  // task whose results go elsewhere are not waited for (see
  // SubmitOptions::on_not_waited).
  using OnResult = std::function<void(size_t index, const v1::Task& result)>;

  ResultWaiter(Client* client, SubmitOptions options);
  ~ResultWaiter();
  ResultWaiter(const ResultWaiter&) = delete;
  ResultWaiter& operator=(const ResultWaiter&) = delete;

  // Call once per ResultWaiter.
  // Blocks until every task waited for has a result (OK), the timeout
  // passes (DEADLINE_EXCEEDED), Cancel() (CANCELLED), or a put or get fails
  // (its status). A failed or cancelled task is not an error here: see
  // summary().failed and summary().cancelled.
  absl::Status Run(std::vector<v1::TaskSpec> tasks, OnResult on_result);
  // Makes Run return CANCELLED soon, aborting calls in flight.
  void Cancel();
  // Counters so far (final once Run returned).
  SubmitSummary summary() const;

 private:
  void PutAll(std::vector<v1::TaskSpec> tasks, size_t batch_limit, absl::Time deadline);
  using Matched = std::vector<std::pair<size_t, ResultReader::Result>>;
  // Files the results under their tasks; returns the ones to report.
  // Results of other tasks are acknowledged (dropped).
  Matched Match(std::vector<ResultReader::Result> results) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reports them, then queues their acknowledgements.
  void Report(Matched matched);
  // Registers the ids of one stored batch starting at index `first`.
  // Deduplicated ones are waited for only if their results come to our
  // reply_to queue (asks the master with GetTask).
  void Register(size_t first, const PutReceipt& receipt);

  Client* const client_;
  const SubmitOptions options_;
  CallCanceller canceller_;
  OnResult on_result_;

  mutable Mutex mu_;
  SubmitSummary summary_ ABSL_GUARDED_BY(mu_);
  // Distinct tasks registered to be waited for so far.
  size_t waiting_ ABSL_GUARDED_BY(mu_) = 0;
  struct Entry {
    size_t index;      // in the submitted vector
    bool have_result;  // its result was reported
  };
  absl::flat_hash_map<uint64_t, Entry> ids_ ABSL_GUARDED_BY(mu_);
  // Results that came before the Put that created their task returned
  // (not acknowledged until reported).
  std::vector<ResultReader::Result> early_ ABSL_GUARDED_BY(mu_);
  // Second results Match found (the reader finds most of them first).
  size_t duplicates_seen_ ABSL_GUARDED_BY(mu_) = 0;
  // Acknowledgements for the poller to send with its next poll.
  std::vector<v1::LeaseRef> acks_ ABSL_GUARDED_BY(mu_);
  bool puts_done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status put_status_ ABSL_GUARDED_BY(mu_);

  // Serialises on_result_ and on_not_waited calls.
  Mutex report_mu_;
};

// Creates `reply_to` (exist_ok: a private queue made for one submission)
// to receive the results of tasks put on `queue`. In a cluster it goes on
// the master that owns `queue`, as a task's results must stay on its
// queue's master (docs/CLUSTER.md); a `queue` not placed yet is created
// first (with default settings, as a Put would auto-create it).
absl::Status CreateReplyQueue(Client& client, const std::string& reply_to,
                              const std::string& queue);

// One-call form of ResultWaiter::Run. `summary` (optional) receives the
// counters whatever the outcome.
absl::Status SubmitAndWait(Client& client, const SubmitOptions& options,
                           std::vector<v1::TaskSpec> tasks, ResultWaiter::OnResult on_result,
                           SubmitSummary* summary = nullptr);

}  // namespace taskq
