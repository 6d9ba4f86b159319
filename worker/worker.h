// Worker: the taskq-worker session as a library. It holds one Work stream
// to the master, takes deliveries under a credit window of
// concurrency + prefetch, runs each on a fixed pool of `concurrency`
// threads through a HandlerRegistry, extends leases while handlers run, and
// reports completions and failures (batched, each returning its credit).
// When the stream ends it reconnects with backoff (100 ms doubling to 5 s,
// jittered); results of tasks whose stream died are dropped, because the
// master already returned their leases.
//
// Usage:
//   taskq::Worker worker(options);
//   worker.handlers().Register("upper", MyUpperHandler);  // optional
//   absl::Status s = worker.Run();  // blocks until Stop()
//
// Stopping: each session's tasks see their own StopSignal. A graceful
// Stop() raises it at once for tasks of streams that already ended (their
// results cannot be reported), and for the live stream's tasks only when
// the drain timeout passes (StopNow: at once).
//
// Thread-safety: Run() is called once, from one thread. Stop(), StopNow()
// and handlers() (before Run) may be called from any thread, e.g. a
// signal-watcher thread. The destructor waits for running handlers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/channel.h"
#include "absl/time/clock.h"  // common/sync.h uses absl::Now without including it
#include "common/sync.h"
#include "taskq/v1/taskq.grpc.pb.h"
#include "worker/handler_registry.h"
#include "worker/stop_signal.h"
#include "worker/thread_pool.h"

namespace taskq {

struct WorkerOptions {
  ConnectOptions connect;
  // Queues to take tasks from; empty = {"tasks"}.
  std::vector<std::string> queues;
  // Handlers running at once (pool threads); 0 = number of cores.
  int concurrency = 0;
  // Deliveries taken beyond `concurrency`, waiting for a free thread.
  int prefetch = 0;
  // Programs the exec handler may run (see exec_handler.h).
  std::vector<std::string> allow_exec;
  // Shown in the master's stats and logs; empty = "hostname:pid".
  std::string id;
  // On Stop(): how long running tasks may take to finish before they are
  // told to stop (StopSignal) and reported as retryable failures.
  absl::Duration drain_timeout = absl::Seconds(30);
  // After the drain timeout: how long handlers get to notice the stop flag
  // before the stream is closed regardless.
  absl::Duration stop_grace = absl::Seconds(5);
};

// "hostname:pid".
std::string DefaultWorkerId();

class Worker {
 public:
  explicit Worker(WorkerOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Has square, sleep and exec; add custom handlers before Run().
  HandlerRegistry& handlers() { return handlers_; }
  const std::string& id() const { return options_.id; }

  // Serves until stopped. Returns OK after a stop (graceful or not), or an
  // error at once for bad options or an unreadable token file. A master
  // that is unreachable or refuses the stream is retried, not an error.
  absl::Status Run();

  // Graceful stop: no new credits; running and already delivered tasks
  // finish (up to drain_timeout) and are reported; then the stream closes
  // and Run() returns. Idempotent; safe from any thread.
  void Stop();
  // Hard stop: like Stop() with the drain timeout already passed, so
  // handlers are told to stop at once.
  void StopNow();

  // True if Run() returned while a handler still ignored the stop flag
  // after stop_grace (the destructor would wait for it; a program may
  // prefer to _exit).
  bool has_stuck_handlers() const;

 private:
  struct Lease {
    uint64_t task_id = 0;
    uint64_t session = 0;
    absl::Duration extend_every;
    absl::Time next_extend;
  };
  // Tasks of one session (stream) that are queued or running, and the stop
  // signal their handlers see.
  struct SessionTasks {
    uint32_t count = 0;
    std::shared_ptr<StopSignal> stop = std::make_shared<StopSignal>();
  };
  struct SessionResult {
    absl::Status status;
    bool connected = false;  // the first message went out
    bool healthy = false;    // connected and lasted or received something
  };

  absl::Status ValidateOptions() const;
  SessionResult RunSession(v1::TaskQueue::Stub* stub, const std::string& token);
  void SendLoop(grpc::ClientReaderWriter<v1::WorkRequest, v1::WorkResponse>* stream,
                grpc::ClientContext* context, uint64_t session);
  // Notes (and logs, once per stream) that the stream is up.
  void MarkConnected() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fills `request` from the outbox and due heartbeats; returns true if it
  // has anything to send.
  bool TakeOutbox(uint64_t session, bool first, v1::WorkRequest* request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleResponse(uint64_t session, v1::WorkResponse* response);
  void HandleAck(const v1::WorkResponse::Ack& ack) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunTask(uint64_t session, std::shared_ptr<const StopSignal> stop, v1::Task task,
               uint64_t lease_id);
  void FinishTask(uint64_t session, const v1::Task& task, uint64_t lease_id,
                  absl::StatusOr<std::string> result);
  // Raises the stop signal of the tasks of every session (all) or of every
  // session but the live one, whose results can still be reported.
  void StopTasks(bool all) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hard-stops running handlers and waits up to stop_grace for them.
  void WaitForHandlers() ABSL_LOCKS_EXCLUDED(mu_);
  uint32_t window() const {
    return static_cast<uint32_t>(options_.concurrency + options_.prefetch);
  }

  WorkerOptions options_;
  HandlerRegistry handlers_;
  std::unique_ptr<ThreadPool> pool_;  // created by Run()

  mutable Mutex mu_;
  CondVar cv_;  // any change below: wakes the sender and Run()'s waits
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time drain_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool hard_stopped_ ABSL_GUARDED_BY(mu_) = false;  // every task told to stop
  bool stuck_handlers_ ABSL_GUARDED_BY(mu_) = false;
  // The current session (stream); sessions are numbered from 1.
  uint64_t session_ ABSL_GUARDED_BY(mu_) = 0;
  bool session_live_ ABSL_GUARDED_BY(mu_) = false;  // may still send on it
  bool session_over_ ABSL_GUARDED_BY(mu_) = false;  // its reader saw the end
  bool half_closed_ ABSL_GUARDED_BY(mu_) = false;   // WritesDone sent
  bool connected_ ABSL_GUARDED_BY(mu_) = false;  // first message sent or received
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Deliveries accepted and not finished, of every session: they hold pool
  // threads and credit slots.
  uint32_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  // The same tasks by session; an entry lives while it has tasks or is the
  // current session.
  absl::flat_hash_map<uint64_t, SessionTasks> tasks_by_session_ ABSL_GUARDED_BY(mu_);
  // Leases of the current session, by lease id, for heartbeats.
  absl::flat_hash_map<uint64_t, Lease> leases_ ABSL_GUARDED_BY(mu_);
  // Outbox of the current session, coalesced by the sender.
  uint32_t credits_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::WorkRequest::Completion> completions_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::FailRequest> failures_ ABSL_GUARDED_BY(mu_);
  // Leases we reported as failed and whose ack has not come yet: an ack
  // for one of these is about a failure, not a completion.
  absl::flat_hash_set<uint64_t> failures_sent_ ABSL_GUARDED_BY(mu_);
};

}  // namespace taskq
