// Worker: the taskq-worker session as a library, on the coroutine runtime.
//
// It holds one Work stream to the master (rt::ClientStream: one reader
// coroutine, one writer coroutine fed by an outbox), takes deliveries under
// a credit window of concurrency + prefetch, runs each task as a coroutine
// through a HandlerRegistry, extends leases while tasks run, and reports
// completions, failures and releases (batched; each finished task returns
// its credit). When the stream ends it reconnects with backoff (100 ms
// doubling to 5 s, jittered); tasks whose stream died are stopped and
// their results dropped, because the master took their leases back.
//
// Cluster mode (docs/CLUSTER.md, "Workers"): Run() first asks the master
// given for the cluster map (GetCluster); without one (a single master, an
// older one, or no answer) everything is as above. In a cluster it holds
// one such stream per master (a Link), each naming only that master's
// queues, with its own reconnect backoff; a stream refused with a redirect
// moves the named queue to its owner's stream (worker/cluster_routes.h).
// `concurrency` slots are shared by all streams; each stream grants up to
// concurrency + prefetch credits of its own.
//
// Fencing (docs/WORKER.md, "Failure detection"): a task stops no later than
// the master may hand it to another worker. The channel's keepalive ends a
// stream whose link died within 2 x keepalive (default 2 s: within 4 s,
// before the master, whose own --keepalive needs at least 5 s, can notice),
// and a lease whose time left, as the master last confirmed it, runs out on
// our clock stops its task even while the stream looks alive.
//
// Threads: an rt::Scheduler of `io_threads` threads (default 1, plus its
// epoll thread) runs the session and the async handlers (sleep, exec, ...),
// which hold no thread while they wait, and inline handlers such as square;
// a ThreadPool of `threads` threads runs synchronous (CPU-bound) handlers. `concurrency` tasks
// run at once whatever their kind; so --threads 2 --concurrency 1000 runs
// 1000 sleeps at once on a handful of threads.
//
// Usage:
//   taskq::Worker worker(options);
//   worker.handlers().Register("upper", MyUpperHandler);  // optional
//   absl::Status s = worker.Run();  // blocks until Stop()
//
// Stopping (see docs/WORKER.md): Stop() drains — no new credits,
// deliveries not started yet are released at once, running tasks may
// finish until drain_timeout, then they are released (no failure counted)
// and told to stop, and the stream is closed. StopNow() is Stop() with the
// drain timeout already passed. A task's stop token also fires when a user
// cancels it, its lease is lost (a refused heartbeat) or may have run out
// (no heartbeat confirmed in time), or its stream ends; its result is then
// not reported.
//
// Thread-safety: Run() is called once, from one thread that no runtime
// scheduler owns. Stop(), StopNow(), has_stuck_handlers() and
// tasks_in_flight() are safe from any thread (e.g. a signal watcher);
// handlers() is used before Run(). The destructor waits for running
// handlers.
#pragma once

#include <cstdint>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"  // common/sync.h uses absl::Now without including it
#include "absl/time/time.h"
#include "common/channel.h"
#include "common/grpc_coro.h"
#include "common/runtime/event.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/semaphore.h"
#include "common/runtime/task.h"
#include "common/sync.h"
#include "taskq/v1/taskq.grpc.pb.h"
#include "worker/cluster_routes.h"
#include "worker/exec_config.h"
#include "worker/handler_registry.h"
#include "worker/thread_pool.h"
#include "worker/worker_metrics.h"

namespace taskq {

// A worker pings the master after 2 s without one and gives the connection
// up when a ping stays unanswered for 2 s: a dead link is noticed within
// 4 s, before the master can notice it (2 x its --keepalive at most, and
// never sooner than its --keepalive, 5 s by default), so the worker's
// tasks stop before the master hands them out again. Keep it below half
// the master's --keepalive.
inline constexpr absl::Duration kDefaultWorkerKeepalive = absl::Seconds(2);

// ConnectOptions with the worker's keepalive.
inline ConnectOptions DefaultWorkerConnectOptions() {
  ConnectOptions options;
  options.keepalive = kDefaultWorkerKeepalive;
  return options;
}

struct WorkerOptions {
  // The master (in a cluster: any of its masters), token, TLS, connect
  // timeout and keepalive (kMinKeepalive to
  // kMaxKeepalive; the connect timeout kMinConnectTimeout to
  // kMaxConnectTimeout).
  ConnectOptions connect = DefaultWorkerConnectOptions();
  // Queues to take tasks from; empty = {"tasks"}.
  std::vector<std::string> queues;
  // Threads of the CPU pool running synchronous handlers; 0 = cores.
  int threads = 0;
  // Tasks running at once (synchronous and async); 0 = `threads`.
  int concurrency = 0;
  // Deliveries taken beyond `concurrency`, waiting for a free slot.
  int prefetch = 0;
  // Threads of the scheduler running the session and async handlers.
  int io_threads = 1;
  // What the exec handler may run, and how (see exec_config.h).
  ExecOptions exec;
  // Shown in the master's stats and logs; empty = "hostname:pid".
  std::string id;
  // On Stop(): how long running tasks may take to finish before they are
  // released back to the master and told to stop.
  absl::Duration drain_timeout = absl::Seconds(30);
  // When no stream can take results any more (Run is about to return): how
  // long stopped handlers get to return before Run() gives up on them.
  absl::Duration stop_grace = absl::Seconds(5);
  // If >= 0: a non-blocking signalfd (e.g. for SIGTERM and SIGINT, blocked
  // in every thread) that Run() watches as a coroutine, so no thread waits
  // for signals: the first signal drains (Stop), a second one stops at
  // once (StopNow). The caller owns and closes it.
  int stop_signal_fd = -1;
};

// "hostname:pid".
std::string DefaultWorkerId();
// This host's name (gethostname), "localhost" if it has none.
std::string HostName();

class Worker {
 public:
  explicit Worker(WorkerOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Has square, sleep and exec; add custom handlers before Run().
  HandlerRegistry& handlers() { return handlers_; }
  // What --http-listen serves (safe from any thread).
  const WorkerMetrics& metrics() const { return metrics_; }
  const std::string& id() const { return options_.id; }
  const WorkerOptions& options() const { return options_; }

  // Serves until stopped. Returns OK after a stop (graceful or not), or an
  // error at once for bad options or an unreadable token file. A master
  // that is unreachable or refuses the stream is retried, not an error.
  absl::Status Run();

  // Graceful stop (drain); see the header comment. Idempotent.
  void Stop();
  // Hard stop: like Stop() with the drain timeout already passed.
  void StopNow();

  // True if Run() returned while a handler still ignored its stop token
  // after stop_grace (the destructor would wait for it; a program may
  // prefer to _exit).
  bool has_stuck_handlers() const;
  // Deliveries accepted and not finished (running or waiting for a slot).
  size_t tasks_in_flight() const;

 private:
  using WorkStream = rt::ClientStream<v1::WorkRequest, v1::WorkResponse>;

  // Why a task's result will not be reported (its outcome is decided).
  enum class Settled {
    kNo,           // report the result when the handler returns
    kReleased,     // given back to the master (drain); told to stop
    kLeaseLost,    // a heartbeat was refused: expired or revoked
    kLeaseLapsed,  // no heartbeat confirmed before the lease may run out
    kCancelled,    // a heartbeat was refused: cancelled by a user
    kStreamEnded,  // its stream ended: the master took the lease back
    kStopped,      // no stream can take its result (stopping)
  };
  enum class ReportKind { kCompletion, kFailure, kRelease };
  // One Work stream's route and state: a single master has one; in
  // cluster mode there is one per master (docs/CLUSTER.md, "Workers").
  // Created under mu_ and never destroyed before the Worker; every field
  // but the constant ones and outbox_event is guarded by Worker::mu_ (a
  // nested struct cannot name it in ABSL_GUARDED_BY).
  struct Link {
    // Constant after creation.
    WorkRoute route;
    std::unique_ptr<v1::TaskQueue::Stub> stub;
    // Wakes this stream's writer: something to send, or its plans changed.
    rt::Event outbox_event;

    std::vector<std::string> queues;       // what its next Start names
    std::vector<std::string> started;      // what the live stream's Start named
    bool loop_running = false;             // its LinkLoop coroutine is alive
    // A queue was added while the stream was up: drain it (no credits)
    // and reconnect naming the new set, by cycle_deadline at the latest.
    bool cycle = false;
    absl::Time cycle_deadline = absl::InfiniteFuture();
    // The current session (stream); sessions are numbered from 1.
    uint64_t session = 0;
    bool session_live = false;  // may still send on it
    bool session_over = false;  // its reader saw the end
    bool half_closed = false;   // WritesDone sent
    bool connected = false;     // first message sent or received
    bool ever_connected = false;  // a later connect is a reconnect
    bool drain_expired = false;   // live tasks were released (drain or cycle)
    grpc::ClientContext* context = nullptr;
    // The live stream's unsettled tasks by lease id (heartbeats, acks).
    absl::flat_hash_map<uint64_t, uint64_t> leases;
    // Outbox of the live stream, coalesced by the writer.
    uint32_t credits = 0;
    std::vector<v1::WorkRequest::Completion> completions;
    std::vector<v1::FailRequest> failures;
    std::vector<v1::ReleaseRequest> releases;
    // Reports sent on the live stream whose ack has not come yet, by lease.
    absl::flat_hash_map<uint64_t, ReportKind> reports_sent;
  };
  // One delivery, from acceptance until its handler returned.
  struct TaskRun {
    uint64_t task_id = 0;
    uint64_t lease_id = 0;
    Link* link = nullptr;   // the stream's master it came from
    uint64_t session = 0;   // the stream it came on (of link)
    std::stop_source stop;  // the handler's stop token
    bool started = false;   // holds a slot and runs its handler
    Settled settled = Settled::kNo;
    absl::Duration extend_every;  // heartbeat period
    absl::Time next_extend;
    // When the lease may run out on the master, by our clock: its time
    // left as the master last stated it (on the delivery or a confirmed
    // heartbeat), counted from when we read that, less a margin for the
    // message's time in flight. Infinite if the master does not say (an
    // older one).
    absl::Time fence_at = absl::InfiniteFuture();
  };
  struct SessionResult {
    absl::Status status;
    bool connected = false;  // the first message went out
    bool healthy = false;    // connected and lasted or received something
  };
  using StopList = std::vector<std::stop_source>;

  absl::Status ValidateOptions() const;

  // Coroutines, all on io_.
  rt::Task<void> Serve(std::string token);
  // The seed master's cluster map (clustered=false if it has none, is an
  // older master or cannot be asked now).
  rt::Task<v1::GetClusterResponse> AskCluster(v1::TaskQueue::Stub* stub, const std::string& token);
  // Moves `link`'s queues where the seed master's map says they are now
  // (their owner's address, or parked when it is down).
  // True if any moved.
  rt::Task<bool> Reroute(Link* link, const std::string& token);
  // One stream's connect / reconnect loop, until stopping or its queues
  // moved elsewhere.
  rt::Task<void> LinkLoop(Link* link, std::string token);
  // Stop() / StopNow() on signals read from `fd`, until `stop`.
  rt::Task<void> WatchSignals(int fd, std::stop_token stop);
  rt::Task<SessionResult> RunSession(Link* link, std::string token);
  rt::Task<void> ReadLoop(WorkStream* stream, Link* link, uint64_t session, bool* received);
  rt::Task<void> WriteLoop(WorkStream* stream, Link* link, uint64_t session);
  rt::Task<void> RunTask(uint64_t run_id, v1::Task task, std::stop_token stop);
  // Stops every task still running and waits up to stop_grace for them.
  rt::Task<void> WaitForHandlers();

  // The link of `route`, created (with its channel) if new.
  Link* LinkFor(const WorkRoute& route) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds `queue` to `link` (cycling its stream if it is up); the link's
  // loop is to be spawned by the caller when this returns true.
  bool AddQueue(Link* link, const std::string& queue) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SpawnLoops(const std::vector<Link*>& links, const std::string& token);
  // `link`'s loop ends; true if it was the last one.
  bool EndLoop(Link* link) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void HandleResponse(Link* link, uint64_t session, v1::WorkResponse* response)
      ABSL_LOCKS_EXCLUDED(mu_);
  void HandleAck(Link& link, const v1::WorkResponse::Ack& ack, StopList* to_stop)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The reader saw the end of `session`.
  void EndSession(Link* link, uint64_t session) ABSL_LOCKS_EXCLUDED(mu_);
  void FinishTask(uint64_t run_id, absl::StatusOr<std::string> result) ABSL_LOCKS_EXCLUDED(mu_);
  // Fills `request` from the outbox and due heartbeats; true if it has
  // anything to send.
  bool TakeOutbox(Link& link, bool first, v1::WorkRequest* request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // When the writer must wake up next (heartbeats, drain deadline, ...).
  absl::Time NextWake(const Link& link, absl::Time confirm_at, absl::Time close_deadline) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Notes (and logs, once per stream) that the stream is up.
  void MarkConnected(Link& link) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Decides a task's outcome: no heartbeats any more, stop its handler
  // (the caller requests the stops in `to_stop` after unlocking).
  void Settle(uint64_t run_id, TaskRun& run, Settled why, StopList* to_stop)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void QueueRelease(Link& link, uint64_t task_id, uint64_t lease_id, absl::Duration delay)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Releases the link's live stream's unsettled tasks (only those not
  // started, or all); returns how many.
  size_t ReleaseLiveTasks(Link& link, bool only_waiting, StopList* to_stop)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stops the tasks whose lease may have run out on the master by `now`
  // (fence_at passed without a confirmed heartbeat).
  void FenceLapsedLeases(Link& link, absl::Time now, StopList* to_stop)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Unsettled tasks of the link's live stream (what a drain waits for).
  size_t LiveUnsettled(const Link& link) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Deliveries of `link` not finished (they hold its credits).
  uint32_t RunsOf(const Link& link) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void RequestStops(StopList& to_stop);

  // Each stream's credit window; the shared `slots_` caps what runs.
  uint32_t window() const {
    return static_cast<uint32_t>(options_.concurrency + options_.prefetch);
  }

  WorkerOptions options_;
  std::string host_;  // sent in Start, shown by `taskq workers`
  // Why the exec flags were refused (Run() returns it), or OK.
  absl::Status exec_status_;
  HandlerRegistry handlers_;
  WorkerMetrics metrics_{&handlers_};
  // Created by Run() before any coroutine starts; never reset while one
  // runs.
  std::unique_ptr<rt::Scheduler> io_;
  std::unique_ptr<ThreadPool> cpu_;
  std::unique_ptr<rt::Semaphore> slots_;  // `concurrency` permits, shared by all streams
  // The seed master's channel (Run()); other masters get their own.
  std::shared_ptr<grpc::Channel> seed_channel_;

  // Set when the last task finished.
  rt::Event idle_event_;
  // Set when the last LinkLoop ended.
  rt::Event links_done_;
  // Requested by Stop(): ends the reconnect backoff.
  std::stop_source stop_;
  // Requested when Serve() ends: ends WatchSignals().
  std::stop_source serve_done_;

  mutable Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time drain_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool stuck_handlers_ ABSL_GUARDED_BY(mu_) = false;
  // Every stream's route and state, by WorkRoute::Key().
  absl::flat_hash_map<std::string, std::unique_ptr<Link>> links_ ABSL_GUARDED_BY(mu_);
  int loops_running_ ABSL_GUARDED_BY(mu_) = 0;
  // Every accepted delivery of every session, by run id (from 1).
  absl::flat_hash_map<uint64_t, TaskRun> runs_ ABSL_GUARDED_BY(mu_);
  uint64_t next_run_id_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace taskq
