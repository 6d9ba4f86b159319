#include "common/runtime/io.h"

#include <signal.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/runtime/sleep.h"

namespace taskq::rt {
namespace {

FdAwaiter MakeFdWait(IoDriver* io, int fd, uint32_t events, std::stop_token stop,
                     absl::Time deadline) {
  return FdAwaiter(io, fd, events, MonotonicDeadline(deadline), std::move(stop));
}

// The waitpid(2)-style status for what waitid(2) reported.
int WaitStatusOf(const siginfo_t& info) {
  switch (info.si_code) {
    case CLD_EXITED:
      return (info.si_status & 0xff) << 8;
    case CLD_KILLED:
      return info.si_status & 0x7f;
    case CLD_DUMPED:
      return (info.si_status & 0x7f) | 0x80;
    default:  // stopped/continued: not requested (no WSTOPPED/WCONTINUED)
      return (info.si_status & 0xff) << 8;
  }
}

Task<absl::StatusOr<int>> WaitChildExitOn(IoDriver* io, int pidfd, std::stop_token stop,
                                          absl::Time deadline) {
  // Converted once so that retries after a spurious wake keep the deadline.
  const MonoNanos when = MonotonicDeadline(deadline);
  while (true) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    int rc = waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info,
                    WEXITED | WNOHANG);
    if (rc < 0) {
      int err = errno;
      if (err == EINTR) continue;
      std::string msg = absl::StrCat("waitid(pidfd ", pidfd, "): ", strerror(err));
      if (err == ECHILD) {
        co_return absl::FailedPreconditionError(
            absl::StrCat(msg, " (not a child of this process, or already reaped)"));
      }
      if (err == EBADF || err == EINVAL) co_return absl::InvalidArgumentError(msg);
      co_return absl::InternalError(msg);
    }
    if (info.si_pid != 0) co_return WaitStatusOf(info);
    // Still running: the pidfd becomes readable when it exits.
    absl::Status s = co_await FdAwaiter(io, pidfd, EPOLLIN, when, stop);
    if (!s.ok()) co_return s;
  }
}

}  // namespace

FdAwaiter WaitReadable(int fd, std::stop_token stop, absl::Time deadline) {
  return MakeFdWait(CurrentIoDriver(), fd, EPOLLIN, std::move(stop), deadline);
}
FdAwaiter WaitReadable(IoDriver& io, int fd, std::stop_token stop, absl::Time deadline) {
  return MakeFdWait(&io, fd, EPOLLIN, std::move(stop), deadline);
}
FdAwaiter WaitReadable(Scheduler& sched, int fd, std::stop_token stop, absl::Time deadline) {
  return MakeFdWait(&sched.io(), fd, EPOLLIN, std::move(stop), deadline);
}

FdAwaiter WaitWritable(int fd, std::stop_token stop, absl::Time deadline) {
  return MakeFdWait(CurrentIoDriver(), fd, EPOLLOUT, std::move(stop), deadline);
}
FdAwaiter WaitWritable(IoDriver& io, int fd, std::stop_token stop, absl::Time deadline) {
  return MakeFdWait(&io, fd, EPOLLOUT, std::move(stop), deadline);
}
FdAwaiter WaitWritable(Scheduler& sched, int fd, std::stop_token stop, absl::Time deadline) {
  return MakeFdWait(&sched.io(), fd, EPOLLOUT, std::move(stop), deadline);
}

absl::StatusOr<int> OpenPidfd(pid_t pid) {
  // The raw syscall: glibc 2.36's <sys/pidfd.h> declares pidfd_open without
  // extern "C", so C++ cannot link against it.
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0u));
  if (fd < 0) {
    int err = errno;
    std::string msg = absl::StrCat("pidfd_open(", pid, "): ", strerror(err));
    if (err == ESRCH) return absl::NotFoundError(msg);
    if (err == EINVAL) return absl::InvalidArgumentError(msg);
    if (err == EMFILE || err == ENFILE || err == ENOMEM) return absl::ResourceExhaustedError(msg);
    if (err == ENOSYS) return absl::UnimplementedError(msg);
    return absl::InternalError(msg);
  }
  return fd;
}

Task<absl::StatusOr<int>> WaitChildExit(int pidfd, std::stop_token stop, absl::Time deadline) {
  return WaitChildExitOn(CurrentIoDriver(), pidfd, std::move(stop), deadline);
}
Task<absl::StatusOr<int>> WaitChildExit(IoDriver& io, int pidfd, std::stop_token stop,
                                        absl::Time deadline) {
  return WaitChildExitOn(&io, pidfd, std::move(stop), deadline);
}
Task<absl::StatusOr<int>> WaitChildExit(Scheduler& sched, int pidfd, std::stop_token stop,
                                        absl::Time deadline) {
  return WaitChildExitOn(&sched.io(), pidfd, std::move(stop), deadline);
}

}  // namespace taskq::rt
