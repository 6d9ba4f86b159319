// taskq::ResultReader: reads result messages from a reply queue so that
// none is lost between master and reader and each task's result reaches
// the caller once.
//
// Results are taken with a short lease (Get in LEASE mode) and
// acknowledged only after the caller has processed them: an acknowledgement
// rides on the next poll (GetRequest.acks) or goes out with Flush(). A
// reply lost on the way (connection cut, master restarted) leaves its
// results leased; the lease lapses and they are delivered again. A result
// delivered again after the caller had it (its acknowledgement was lost)
// is recognised by its task id (result_of), acknowledged and dropped.
//
// Thread-safety: not thread-safe; one thread polls. The CallCanceller
// passed to Poll may be cancelled from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/client.h"

namespace taskq {

class ResultReader {
 public:
  struct Options {
    // How long a delivered result stays leased to this reader. A reply lost
    // on the way is delivered again this long after it was sent.
    absl::Duration lease = absl::Seconds(10);
    uint32_t batch = 1000;  // results per poll (1..kMaxTasksPerGet)
  };
  // One result: the message and the lease to acknowledge once processed.
  struct Result {
    v1::Task message;
    v1::LeaseRef lease;
  };

  ResultReader(Client* client, std::string queue, Options options);

  // Long-polls up to `timeout` for results not seen before, sending the
  // acknowledgements queued so far. Returns an empty vector when none came
  // (the queue stayed empty, or every one was a copy already seen), and
  // the client's error otherwise (UNAVAILABLE after its retries: the caller
  // may poll again; the acknowledgements stay queued).
  absl::StatusOr<std::vector<Result>> Poll(absl::Duration timeout, CallCanceller* canceller);
  // Queues the acknowledgement of a processed result.
  void Ack(const v1::LeaseRef& lease) { acks_.push_back(lease); }
  // Sends the queued acknowledgements now (at the end of a read).
  absl::Status Flush();
  // Results handed out so far (each task once).
  size_t delivered() const { return seen_.size(); }
  // Results already handed out, received again (the same message: its
  // reply or acknowledgement was lost) and dropped.
  size_t copies() const { return copies_; }
  // Second result messages for a task already handed out, dropped: each
  // task should yield one, so this is a bug in the master.
  size_t duplicates() const { return duplicates_; }

 private:
  Client* const client_;
  const std::string queue_;
  const Options options_;
  // result_of -> id of the result message handed out for it.
  absl::flat_hash_map<uint64_t, uint64_t> seen_;
  std::vector<v1::LeaseRef> acks_;  // processed, not yet acknowledged
  size_t copies_ = 0;
  size_t duplicates_ = 0;
};

}  // namespace taskq
