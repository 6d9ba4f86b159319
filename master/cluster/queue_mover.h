// QueueMover: `taskq queue move NAME --to MASTER` (cluster mode; the rules
// for users are docs/CLUSTER.md "Moving a queue", the design
// ARCHITECTURE.md). Copy-then-switch, driven by the queue's owner:
//
//   1. group:   the queue and every queue tied to it (dead letters, result
//               queues; QueueEngine::TiedQueues): they move together;
//   2. fence:   the router answers UNAVAILABLE "moving" (nothing done: the
//               client sends again) and the engine hands nothing out;
//   3. drain:   leases run to their end up to the drain timeout; the rest
//               are taken back (ready again; the late report is refused);
//   4. copy:    the stored records go to the target (AdoptQueues, in
//               chunks, ids kept), which stores them durably but does not
//               serve them;
//   5. switch:  one etcd transaction names the target the owner of every
//               queue of the group, if each is still placed here;
//   6. commit:  this master drops its copy, redirects calls (and calls by
//               id of the moved tasks) to the target, ends the Work streams
//               that took from the group; the target starts serving.
//
// A failure before 5 leaves this master the owner: the fence is lifted and
// the target told to drop its copy. After 5 the target is the owner
// whatever happens here (a crash before 6 leaves a copy this master no
// longer serves). At every point exactly one master serves the group, so
// no task is lost or handed out twice.
//
// The target side: Adopt stores the chunks, and on `commit` serves the
// queues once etcd names it their owner.
//
// Thread-safety: all methods from any thread. Each move runs on a thread
// of its own; the destructor waits for them.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/client.h"
#include "common/limits.h"
#include "common/sync.h"
#include "master/cluster/move_watch.h"
#include "master/cluster/router.h"
#include "master/queue_engine.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq {

struct QueueMoverOptions {
  // A client of the master at `address`, as this master (its master
  // token; TLS against its CA, which the masters share).
  std::function<absl::StatusOr<std::unique_ptr<Client>>(const std::string& address)> connect;
  // Records per AdoptQueues call: at most this many bytes (and the gRPC
  // message limit is 4 MiB).
  size_t chunk_bytes = 3 << 20;
  absl::Duration default_drain = absl::Milliseconds(kDefaultMoveDrainMs);
};

class QueueMover {
 public:
  QueueMover(QueueEngine* engine, QueueRouter* router, MoveWatch* watch,
             QueueMoverOptions options);
  ~QueueMover() { Stop(); }

  // Moves under way stop (one still draining gives up and stays here) and
  // are waited for; later ones are refused UNAVAILABLE.
  void Stop();

  using MoveDone = std::function<void(absl::StatusOr<v1::MoveQueueResponse>)>;
  // Runs the move on a thread of its own and calls `done` with the result.
  // The caller checked the credential and that the queue is served here.
  void Move(const v1::MoveQueueRequest& request, MoveDone done);

  // Target side, one AdoptQueues call.
  absl::Status Adopt(const v1::AdoptQueuesRequest& request);

 private:
  absl::StatusOr<v1::MoveQueueResponse> RunMove(const v1::MoveQueueRequest& request);
  // Sends the records in chunks; the first replaces any older copy.
  absl::Status Copy(Client& target, const std::vector<std::string>& group,
                    const MovedQueues& records);
  // Best effort: the target drops its copy (a failed move).
  void Abort(Client* target, const std::vector<std::string>& group);

  QueueEngine* const engine_;
  QueueRouter* const router_;
  MoveWatch* const watch_;
  const QueueMoverOptions options_;

  Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

}  // namespace taskq
