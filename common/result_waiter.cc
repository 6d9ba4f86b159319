#include "common/result_waiter.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/limits.h"

namespace taskq {
namespace {

absl::Status Annotate(const absl::Status& status, absl::string_view prefix) {
  return absl::Status(status.code(), absl::StrCat(prefix, status.message()));
}


}  // namespace

ResultWaiter::ResultWaiter(Client* client, SubmitOptions options)
    : client_(client), options_(std::move(options)) {}

ResultWaiter::~ResultWaiter() = default;

void ResultWaiter::Cancel() { canceller_.Cancel(); }

SubmitSummary ResultWaiter::summary() const {
  MutexLock lock(&mu_);
  return summary_;
}

ResultWaiter::Matched ResultWaiter::Match(std::vector<ResultReader::Result> results) {
  Matched matched;
  for (ResultReader::Result& result : results) {
    auto it = ids_.find(result.message.result_of());
    if (it == ids_.end()) {
      // Its Put may still be on the way back to us: the master acknowledges
      // a put before we learn the ids, and a fast worker can finish first.
      if (!puts_done_ && put_status_.ok()) {
        early_.push_back(std::move(result));
      } else {
        ++summary_.ignored;
        acks_.push_back(result.lease);
      }
      continue;
    }
    if (it->second.have_result) {
      ++duplicates_seen_;
      acks_.push_back(result.lease);
      continue;
    }
    it->second.have_result = true;
    ++summary_.results;
    if (result.message.outcome() == v1::OUTCOME_FAILED) ++summary_.failed;
    if (result.message.outcome() == v1::OUTCOME_CANCELLED) ++summary_.cancelled;
    matched.emplace_back(it->second.index, std::move(result));
  }
  return matched;
}

void ResultWaiter::Report(Matched matched) {
  if (matched.empty()) return;
  {
    MutexLock lock(&report_mu_);
    for (const auto& [index, result] : matched) on_result_(index, result.message);
  }
  // Acknowledged only once reported: a reader that dies before this point
  // leaves them to the next reader.
  MutexLock lock(&mu_);
  for (const auto& [index, result] : matched) acks_.push_back(result.lease);
}

void ResultWaiter::Register(size_t first, const PutReceipt& receipt) {
  // Deduplicated tasks may belong to someone else: ask where their results
  // go (before locking: these are calls to the master).
  std::vector<std::pair<size_t, absl::StatusOr<v1::Task>>> looked_up;
  for (size_t k = 0; k < receipt.ids.size(); ++k) {
    if (receipt.existing[k]) looked_up.emplace_back(k, client_->GetTask(receipt.ids[k]));
  }
  struct NotWaited {
    size_t index;
    uint64_t id;
    absl::StatusOr<v1::Task> existing;
  };
  std::vector<NotWaited> not_waited;
  {
    MutexLock lock(&mu_);
    size_t next_lookup = 0;
    for (size_t k = 0; k < receipt.ids.size(); ++k) {
      const uint64_t id = receipt.ids[k];
      summary_.ids.push_back(id);
      const absl::StatusOr<v1::Task>* existing = nullptr;
      if (receipt.existing[k]) {
        ++summary_.existing;
        existing = &looked_up[next_lookup++].second;
      }
      // Deduplicated onto a task of this submission: waited for already.
      if (ids_.contains(id)) continue;
      if (existing != nullptr &&
          !(existing->ok() && (*existing)->reply_to() == options_.reply_to)) {
        ++summary_.not_waited;
        not_waited.push_back({first + k, id, *existing});
        continue;
      }
      ids_[id] = Entry{first + k, false};
      ++waiting_;
    }
  }
  if (not_waited.empty() || !options_.on_not_waited) return;
  MutexLock lock(&report_mu_);
  for (const NotWaited& n : not_waited) options_.on_not_waited(n.index, n.id, n.existing);
}

void ResultWaiter::PutAll(std::vector<v1::TaskSpec> tasks, size_t batch_limit,
                          absl::Time deadline) {
  size_t next = 0;
  while (next < tasks.size()) {
    const size_t first = next;
    const size_t n = std::min(batch_limit, tasks.size() - next);
    std::vector<v1::TaskSpec> batch(std::make_move_iterator(tasks.begin() + first),
                                    std::make_move_iterator(tasks.begin() + first + n));
    next += n;
    PutOptions put;
    put.timeout = deadline == absl::InfiniteFuture() ? absl::InfiniteDuration()
                                                     : deadline - absl::Now();
    put.max_batch = batch_limit;
    put.canceller = &canceller_;
    auto receipt = client_->PutWithReceipt(options_.queue, std::move(batch), put);
    if (!receipt.ok()) {
      {
        MutexLock lock(&mu_);
        put_status_ =
            Annotate(receipt.status(), absl::StrCat("putting tasks on ", options_.queue, ": "));
        puts_done_ = true;
        early_.clear();
      }
      // Wakes the poller out of its long-poll so Run returns the error now.
      canceller_.Cancel();
      return;
    }
    Register(first, *receipt);
    Matched matched;
    bool all_done;
    {
      MutexLock lock(&mu_);
      if (next == tasks.size()) puts_done_ = true;
      std::vector<ResultReader::Result> early = std::move(early_);
      early_.clear();
      matched = Match(std::move(early));
      all_done = puts_done_ && summary_.results == waiting_;
    }
    Report(std::move(matched));
    // Every result came before the last Put returned: wake the poller from
    // its long-poll now rather than at the end of its chunk. Nothing it
    // could still receive is ours, so cutting its call short loses nothing.
    if (all_done) canceller_.Cancel();
  }
}

absl::Status ResultWaiter::Run(std::vector<v1::TaskSpec> tasks, OnResult on_result) {
  if (options_.reply_to.empty()) {
    return absl::InvalidArgumentError("a submission needs a reply_to queue for its results");
  }
  if (auto s = ValidateName("queue", options_.queue); !s.ok()) return s;
  if (auto s = ValidateName("reply_to queue", options_.reply_to); !s.ok()) return s;
  on_result_ = std::move(on_result);
  {
    MutexLock lock(&mu_);
    summary_ = SubmitSummary{};
    summary_.ids.reserve(tasks.size());
    waiting_ = 0;
    ids_.clear();
    ids_.reserve(tasks.size());
    early_.clear();
    puts_done_ = false;
    put_status_ = absl::OkStatus();
  }
  if (tasks.empty()) return absl::OkStatus();

  const absl::Time deadline = options_.timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : absl::Now() + std::max(options_.timeout, absl::ZeroDuration());
  for (size_t i = 0; i < tasks.size(); ++i) {
    tasks[i].set_reply_to(options_.reply_to);
    if (!options_.dedup_prefix.empty() && tasks[i].dedup_key().empty()) {
      tasks[i].set_dedup_key(absl::StrCat(options_.dedup_prefix, i));
    }
  }
  AddRetryDedupKeys(tasks, "submit");
  const size_t batch_limit = PutBatchLimit(*client_, options_.queue, options_.put_batch);
  std::thread putter(
      [this, &tasks, batch_limit, deadline] { PutAll(std::move(tasks), batch_limit, deadline); });

  ResultReader reader(client_, options_.reply_to,
                      {.lease = options_.result_lease, .batch = options_.get_batch});
  absl::Status status;
  for (;;) {
    {
      MutexLock lock(&mu_);
      for (const v1::LeaseRef& ack : acks_) reader.Ack(ack);
      acks_.clear();
      summary_.redelivered = reader.copies();
      summary_.duplicates = duplicates_seen_ + reader.duplicates();
      if (!put_status_.ok()) {
        status = put_status_;
        break;
      }
      if (puts_done_ && summary_.results == waiting_) break;
    }
    if (canceller_.cancelled()) {
      status = absl::CancelledError("submission cancelled");
      break;
    }
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      MutexLock lock(&mu_);
      status = absl::DeadlineExceededError(absl::StrCat(
          "timed out waiting for results: ", waiting_ - summary_.results, " of ", waiting_,
          " tasks have none yet", puts_done_ ? "" : " (and not every task was put yet)"));
      break;
    }
    auto got = reader.Poll(std::min(options_.poll_chunk, deadline - now), &canceller_);
    if (!got.ok()) {
      // Empty for now, cancelled (by Cancel() or a failed put), or the
      // master out of reach (the client retried until this poll's deadline;
      // what was in flight comes again): the top of the loop decides.
      if (absl::IsDeadlineExceeded(got.status()) || absl::IsUnavailable(got.status())) continue;
      if (absl::IsCancelled(got.status()) && canceller_.cancelled()) continue;
      status = Annotate(got.status(),
                        absl::StrCat("reading results from ", options_.reply_to, ": "));
      break;
    }
    Matched matched;
    {
      MutexLock lock(&mu_);
      matched = Match(*std::move(got));
    }
    Report(std::move(matched));
  }
  if (!status.ok()) canceller_.Cancel();  // stops a putter still waiting for room
  putter.join();
  if (status.ok()) {
    // The last acknowledgements. Should they not get through, the results
    // come again to a later reader of this queue (or go with it, when the
    // caller deletes its private queue): nothing is lost either way.
    {
      MutexLock lock(&mu_);
      for (const v1::LeaseRef& ack : acks_) reader.Ack(ack);
      acks_.clear();
    }
    reader.Flush().IgnoreError();
  }
  return status;
}

namespace {

// The master owning `queue` in a GetCluster answer; "" if not placed (or
// not visible to this credential).
std::string PlacedOn(const v1::GetClusterResponse& cluster, const std::string& queue) {
  for (const v1::ClusterPlacement& placement : cluster.placements()) {
    if (placement.queue() == queue) return placement.master();
  }
  return "";
}

}  // namespace

absl::Status CreateReplyQueue(Client& client, const std::string& reply_to,
                              const std::string& queue) {
  v1::QueueConfig config;
  config.set_name(reply_to);
  auto cluster = client.GetCluster();
  if (!cluster.ok()) return cluster.status();
  std::string on;
  if (cluster->clustered()) {
    on = PlacedOn(*cluster, queue);
    if (on.empty()) {
      v1::QueueConfig task_queue;
      task_queue.set_name(queue);
      // ALREADY_EXISTS: made meanwhile with other settings; placed anyway.
      auto made = client.CreateQueue(task_queue, /*exist_ok=*/true);
      if (!made.ok() && !absl::IsAlreadyExists(made.status())) return made.status();
      cluster = client.GetCluster();
      if (!cluster.ok()) return cluster.status();
      on = PlacedOn(*cluster, queue);
    }
  }
  return client.CreateQueue(config, /*exist_ok=*/true, on).status();
}

absl::Status SubmitAndWait(Client& client, const SubmitOptions& options,
                           std::vector<v1::TaskSpec> tasks, ResultWaiter::OnResult on_result,
                           SubmitSummary* summary) {
  ResultWaiter waiter(&client, options);
  absl::Status status = waiter.Run(std::move(tasks), std::move(on_result));
  if (summary != nullptr) *summary = waiter.summary();
  return status;
}

}  // namespace taskq
