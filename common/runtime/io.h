// Waiting for file descriptors and child processes without holding a thread:
// the coroutine suspends on its scheduler's IoDriver (epoll) and is posted
// back to its executor when the fd is ready.
//
//   absl::Status s = co_await rt::WaitReadable(fd, stop, absl::Now() + absl::Seconds(1));
//   if (s.ok()) n = read(fd, buf, sizeof buf);      // ready: read (may still be EAGAIN)
//
//   absl::StatusOr<int> pidfd = rt::OpenPidfd(pid);  // caller owns and closes it
//   absl::StatusOr<int> ws = co_await rt::WaitChildExit(*pidfd, stop);
//   if (ws.ok() && WIFEXITED(*ws)) code = WEXITSTATUS(*ws);
//
// Results of WaitReadable / WaitWritable: OK when ready (level-triggered:
// data to read / room to write, or an error or hang-up the next read/write
// reports; regular files are always ready); DEADLINE_EXCEEDED
// "deadline exceeded" at `deadline`; CANCELLED "cancelled" when `stop`
// fires; CANCELLED "scheduler shutting down" at shutdown; INVALID_ARGUMENT
// for a bad fd; FAILED_PRECONDITION when the driverless overload is awaited
// off a pool thread. Use non-blocking fds: readiness may be stolen by
// another reader between the wake-up and the read.
//
// Deadlines follow the monotonic clock (converted once, when the wait is
// created; see sleep.h). Do not close an fd while a coroutine waits on it.
//
// Thread-safety: safe from any thread; each awaiter is awaited once.
// Costs: one or two epoll_ctl calls per wait (EPOLLONESHOT registration,
// removed after the last waiter on that fd), plus a timer when a deadline is
// given; one Executor::Post on wake-up. WaitChildExit adds a waitid(2).
#pragma once

#include <sys/types.h>

#include <stop_token>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/runtime/io_driver.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/task.h"

namespace taskq::rt {

FdAwaiter WaitReadable(int fd, std::stop_token stop = {},
                       absl::Time deadline = absl::InfiniteFuture());
FdAwaiter WaitReadable(IoDriver& io, int fd, std::stop_token stop = {},
                       absl::Time deadline = absl::InfiniteFuture());
FdAwaiter WaitReadable(Scheduler& sched, int fd, std::stop_token stop = {},
                       absl::Time deadline = absl::InfiniteFuture());

FdAwaiter WaitWritable(int fd, std::stop_token stop = {},
                       absl::Time deadline = absl::InfiniteFuture());
FdAwaiter WaitWritable(IoDriver& io, int fd, std::stop_token stop = {},
                       absl::Time deadline = absl::InfiniteFuture());
FdAwaiter WaitWritable(Scheduler& sched, int fd, std::stop_token stop = {},
                       absl::Time deadline = absl::InfiniteFuture());

// A pidfd (close-on-exec) for child `pid`, from pidfd_open(2) (the raw syscall). The caller
// owns it and must close it. Open it right after spawning (before anything
// can reap the child), so it cannot refer to a recycled pid.
absl::StatusOr<int> OpenPidfd(pid_t pid);

// Waits until the child behind `pidfd` exits, reaps it (waitid(P_PIDFD,
// WEXITED)) and returns its wait status in waitpid(2) form: use WIFEXITED /
// WEXITSTATUS / WIFSIGNALED / WTERMSIG. The caller still owns (and closes)
// `pidfd`. On DEADLINE_EXCEEDED or CANCELLED the child is left running and
// unreaped: kill it and wait again (or reap it otherwise). Errors:
// FAILED_PRECONDITION "not a child of this process / already reaped"
// (ECHILD), INVALID_ARGUMENT for a bad pidfd, plus WaitReadable's.
Task<absl::StatusOr<int>> WaitChildExit(int pidfd, std::stop_token stop = {},
                                        absl::Time deadline = absl::InfiniteFuture());
Task<absl::StatusOr<int>> WaitChildExit(IoDriver& io, int pidfd, std::stop_token stop = {},
                                        absl::Time deadline = absl::InfiniteFuture());
Task<absl::StatusOr<int>> WaitChildExit(Scheduler& sched, int pidfd, std::stop_token stop = {},
                                        absl::Time deadline = absl::InfiniteFuture());

}  // namespace taskq::rt
