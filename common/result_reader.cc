#include "common/result_reader.h"

#include <algorithm>
#include <utility>

#include "common/call_retry.h"
#include "common/limits.h"

namespace taskq {

ResultReader::ResultReader(Client* client, std::string queue, Options options)
    : client_(client), queue_(std::move(queue)), options_(options) {}

absl::StatusOr<std::vector<ResultReader::Result>> ResultReader::Poll(absl::Duration timeout,
                                                                     CallCanceller* canceller) {
  GetOptions get;
  get.max_tasks = std::clamp<uint32_t>(options_.batch, 1, kMaxTasksPerGet);
  get.timeout = timeout;
  get.lease = true;
  get.lease_time = options_.lease;
  get.canceller = canceller;
  // At most one request's worth rides along; the rest go with later polls.
  const size_t sending = std::min<size_t>(acks_.size(), kMaxTasksPerGet);
  get.acks.assign(acks_.begin(), acks_.begin() + sending);
  auto got = client_->Get(queue_, get);
  // An answer from the master (results, or "empty") means the acks were
  // applied; after a lost connection they may or may not have been, and
  // are sent again (an ack of a lease no longer held is skipped).
  if (got.ok() || MasterAnswered(got.status())) {
    acks_.erase(acks_.begin(), acks_.begin() + sending);
  }
  if (!got.ok()) return got.status();
  std::vector<Result> fresh;
  fresh.reserve(got->size());
  for (v1::Delivery& d : *got) {
    v1::LeaseRef lease;
    lease.set_task_id(d.task().id());
    lease.set_lease_id(d.lease_id());
    auto [it, fresh_task] = seen_.try_emplace(d.task().result_of(), d.task().id());
    if (!fresh_task) {
      ++(it->second == d.task().id() ? copies_ : duplicates_);
      acks_.push_back(lease);  // had it already: just make it go away
      continue;
    }
    fresh.push_back({std::move(*d.mutable_task()), lease});
  }
  return fresh;
}

absl::Status ResultReader::Flush() {
  while (!acks_.empty()) {
    const size_t sending = std::min<size_t>(acks_.size(), kMaxTasksPerGet);
    std::vector<v1::LeaseRef> batch(acks_.begin(), acks_.begin() + sending);
    auto acked = client_->Ack(batch);
    if (!acked.ok()) return acked.status();
    acks_.erase(acks_.begin(), acks_.begin() + sending);
  }
  return absl::OkStatus();
}

}  // namespace taskq
