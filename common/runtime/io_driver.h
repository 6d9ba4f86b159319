// IoDriver: the reactor. One thread per Scheduler blocks in epoll_pwait2
// with a timeout of the nearest timer, then fires expired timers and ready
// file descriptors by POSTING each waiting coroutine to the executor it was
// running on when it suspended (never resuming it on the driver thread).
//
// Users normally go through the free functions, which find the driver of the
// calling pool thread (Scheduler::Current()->io()):
//   co_await rt::SleepFor(absl::Milliseconds(5));         // sleep.h
//   co_await rt::WaitReadable(fd, stop, deadline);        // io.h
//   co_await rt::WaitChildExit(pidfd);                    // io.h
//   rt::DeadlineStop ds(deadline, parent_stop);           // deadline_stop.h
//
// What it holds: a TimerQueue (sleeps, fd-wait deadlines, callback Timers)
// and, per file descriptor with waiters, one EPOLLONESHOT registration for
// the union of their interests (ADD on the first waiter, DEL after the
// last). Readiness is level-triggered: a wait returns OK once the fd is
// ready (or has an error/hang-up; the caller's read/write then reports it).
// An eventfd wakes the thread when a timer earlier than the one it sleeps
// for is inserted; a new fd registration needs no wake-up (epoll_ctl on a
// thread blocked in epoll_wait takes effect at once).
//
// Stop() (Scheduler::Shutdown calls it before draining the pool) wakes every
// pending wait with ShutdownError() and runs every pending callback Timer
// with ShutdownError(); waits and Timers started afterwards complete at once
// the same way. So shutdown never strands a coroutine waiting here.
//
// Rules: one file descriptor may have any number of read and write waiters
// (all readers wake on readability). Do not close an fd while a coroutine
// waits on it (epoll forgets closed fds: the wait would end only by its
// deadline, its stop token or shutdown).
//
// Thread-safety: every public method is safe from any thread, except Stop(),
// which must not run on the driver thread itself.
// Costs: a timer insert/cancel is O(log n) under the driver's mutex (plus an
// eventfd write when it becomes the earliest while the driver sleeps); an
// fd wait is one or two epoll_ctl calls; firing is one Executor::Post.
#pragma once

#include <sys/epoll.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <stop_token>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/runtime/cancel.h"
#include "common/runtime/executor.h"
#include "common/runtime/timer_queue.h"
#include "common/sync.h"

namespace taskq::rt {

class IoDriver;

// `co_await` result of SleepFor / SleepUntil (sleep.h): OK when the time has
// come, CANCELLED if the stop token fired or the driver stopped first.
class SleepAwaiter final : public CancellableWait {
 public:
  // `io` null: the wait fails with FAILED_PRECONDITION (no driver found).
  SleepAwaiter(IoDriver* io, MonoNanos when, std::stop_token stop);

 private:
  friend class IoDriver;
  void Arm() override;
  void Disarm() override;

  IoDriver* const io_;
  TimerNode node_;
};

// `co_await` result of WaitReadable / WaitWritable (io.h): OK when ready,
// DEADLINE_EXCEEDED at the deadline, CANCELLED on stop or driver stop,
// INVALID_ARGUMENT for a bad fd.
class FdAwaiter final : public CancellableWait {
 public:
  // `events`: EPOLLIN or EPOLLOUT. `deadline` kMonoNever: none.
  FdAwaiter(IoDriver* io, int fd, uint32_t events, MonoNanos deadline, std::stop_token stop);

 private:
  friend class IoDriver;
  void Arm() override;
  void Disarm() override;

  IoDriver* const io_;
  const int fd_;
  const uint32_t events_;
  TimerNode deadline_node_;
};

struct IoDriverOptions {
  // Thread name (truncated to 15 characters).
  std::string name = "rt-io";
  // Where to resume a coroutine that suspended on a thread no executor owns
  // (Scheduler passes itself). nullptr: resume on the driver thread.
  Executor* fallback = nullptr;
};

class IoDriver {
 public:
  class Timer;

  // Starts the driver thread. Aborts if the kernel refuses an epoll or
  // eventfd descriptor (the process is out of descriptors at start-up).
  explicit IoDriver(IoDriverOptions options = {});
  ~IoDriver();  // Stop()
  IoDriver(const IoDriver&) = delete;
  IoDriver& operator=(const IoDriver&) = delete;

  // Wakes every pending wait with ShutdownError(), runs pending Timers with
  // it, joins the thread. Idempotent; must not be called on the driver thread.
  void Stop();

  bool stopped() const;
  // Queued timers: sleeps, fd-wait deadlines and Timers (for tests, metrics).
  size_t pending_timers() const;
  // Coroutines waiting for fd readiness (for tests, metrics).
  size_t pending_fd_waits() const;
  Executor* fallback() const { return fallback_; }

 private:
  friend class SleepAwaiter;
  friend class FdAwaiter;

  // What TimerNode::owner points at.
  enum NodeKind : int { kSleepNode = 1, kFdDeadlineNode = 2, kCallbackNode = 3 };

  struct FdState {
    uint32_t generation = 0;  // tags epoll events, so a stale event for a reused fd is ignored
    bool in_epoll = false;    // ADDed (possibly disarmed by EPOLLONESHOT)
    uint32_t armed = 0;       // interest currently armed (0 after an event fired)
    std::vector<FdAwaiter*> waiters;
  };

  // Work collected under mu_ and run after releasing it.
  struct Batch {
    std::vector<Resumption> resumptions;
    std::vector<std::pair<Timer*, absl::Status>> callbacks;
  };

  void Loop();
  int WaitForEvents(epoll_event* events, int max, MonoNanos until);
  void RunBatch(Batch& batch);
  void Wake();

  void ArmSleep(SleepAwaiter* w);
  void DisarmSleep(SleepAwaiter* w);
  void ArmFd(FdAwaiter* w);
  void DisarmFd(FdAwaiter* w);

  // Inserts a node; returns whether the driver thread must be woken.
  bool InsertTimerLocked(TimerNode* node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A node left the queue (deadline reached, or stopping): complete its owner.
  void ExpireLocked(TimerNode* node, const absl::Status& status, Batch& batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void HandleFdEventLocked(const epoll_event& ev, Batch& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes `w` from its fd's waiter list if there; re-syncs epoll.
  void DetachFdWaiterLocked(FdAwaiter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes the epoll registration of `fd` match its waiters (ADD/MOD/DEL);
  // erases the FdState when no waiter is left.
  absl::Status SyncFdLocked(int fd) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string name_;
  Executor* const fallback_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  bool use_pwait2_ = true;  // driver thread only: false if the kernel lacks epoll_pwait2

  mutable Mutex mu_;
  CondVar callback_done_;  // a callback Timer finished running (Timer::Cancel waits)
  TimerQueue timers_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<int, FdState> fds_ ABSL_GUARDED_BY(mu_);
  size_t fd_waits_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t next_generation_ ABSL_GUARDED_BY(mu_) = 1;
  // The deadline the driver thread is blocked until; kAwake while it runs
  // (it recomputes before blocking, so inserts need not wake it then).
  static constexpr MonoNanos kAwake = std::numeric_limits<MonoNanos>::min();
  MonoNanos sleeping_until_ ABSL_GUARDED_BY(mu_) = kAwake;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  Mutex join_mu_;  // serialises Stop
  bool joined_ ABSL_GUARDED_BY(join_mu_) = false;
  std::thread thread_;
  std::thread::id thread_id_;  // written by the constructor only
};

// A callback run once on the driver thread at a deadline (monotonic clock):
// the building block of DeadlineStop. The callback gets OK when its time
// came, or ShutdownError() when the driver stopped first (then it runs on
// the thread calling Stop, or inside this constructor if the driver had
// already stopped). It runs without driver locks held, so it may start or
// cancel waits and request stops; it should be short (it delays other
// timers).
//
// Thread-safety: Cancel (and the destructor) may be called from any thread,
// including from inside the callback.
class IoDriver::Timer {
 public:
  Timer(IoDriver& io, absl::Time deadline, absl::AnyInvocable<void(absl::Status)> fn);
  Timer(IoDriver& io, absl::Duration after, absl::AnyInvocable<void(absl::Status)> fn);
  ~Timer() { Cancel(); }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Prevents the callback from running; true if it had not started. If it is
  // running on another thread, waits for it to return (so after Cancel the
  // callback's captures may be destroyed).
  bool Cancel();

 private:
  friend class IoDriver;
  enum State { kPending, kRunning, kDone };

  void Start(MonoNanos when);

  IoDriver& io_;
  TimerNode node_;  // guarded by io_.mu_ (it lives in io_.timers_)
  absl::AnyInvocable<void(absl::Status)> fn_;
  State state_ ABSL_GUARDED_BY(io_.mu_) = kPending;
  std::thread::id runner_ ABSL_GUARDED_BY(io_.mu_);  // who runs fn_ while kRunning
};

}  // namespace taskq::rt
