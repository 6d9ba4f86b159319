#include "worker/exec_spawn.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

namespace taskq {
namespace {

// struct clone_args of clone3(2), up to the cgroup field (Linux 5.7).
struct CloneArgs {
  uint64_t flags;
  uint64_t pidfd;
  uint64_t child_tid;
  uint64_t parent_tid;
  uint64_t exit_signal;
  uint64_t stack;
  uint64_t stack_size;
  uint64_t tls;
  uint64_t set_tid;
  uint64_t set_tid_size;
  uint64_t cgroup;
};
constexpr uint64_t kCloneIntoCgroup = 0x200000000ULL;
constexpr unsigned kCloseRangeCloexec = 1U << 2;  // CLOSE_RANGE_CLOEXEC

struct KernelRlimit {
  uint64_t cur;
  uint64_t max;
};

// Everything the child needs, built before the clone: the child only reads it.
struct ChildPlan {
  const char* const* paths;
  size_t path_count;
  char* const* argv;
  char* const* envp;
  int fds[3];
  int error_fd;
  const int* limit_resources;
  const KernelRlimit* limit_values;
  size_t limit_count;
  int max_fd;  // for the close-on-exec loop when close_range is missing
};

enum Step : int { kSetsid = 1, kRlimit, kDup, kCloexec, kSigmask, kExec };

struct ChildError {
  int step;
  int err;
};

const char* StepName(int step) {
  switch (step) {
    case kSetsid: return "setsid";
    case kRlimit: return "setrlimit";
    case kDup: return "dup2";
    case kCloexec: return "close_range";
    case kSigmask: return "sigprocmask";
    default: return "execve";
  }
}

// A kernel `struct sigaction` of zeros: SIG_DFL, no flags, empty mask (the
// same bytes whatever the architecture's field order).
const uint64_t kDefaultSigaction[8] = {};
const uint64_t kEmptySigset = 0;

#if defined(__clang__) || defined(__GNUC__)
#define TASKQ_NO_SANITIZE __attribute__((noinline, no_sanitize("address", "thread", "undefined")))
#else
#define TASKQ_NO_SANITIZE
#endif

[[noreturn]] TASKQ_NO_SANITIZE void ChildFail(const ChildPlan* plan, int step, int err) {
  ChildError e{step, err};
  syscall(SYS_write, plan->error_fd, &e, sizeof e);
  syscall(SYS_exit_group, 127);
  __builtin_unreachable();
}

// Runs in the child between clone3 and execve. Raw system calls only: the
// child is a copy of a multithreaded process whose other threads may have
// held locks (malloc's, the sanitizers') at the moment of the clone.
[[noreturn]] TASKQ_NO_SANITIZE void RunChild(const ChildPlan* plan) {
  for (int sig = 1; sig <= 64; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    syscall(SYS_rt_sigaction, sig, kDefaultSigaction, nullptr, 8);  // EINVAL for gaps: fine
  }
  if (syscall(SYS_setsid) < 0) ChildFail(plan, kSetsid, errno);
  for (size_t i = 0; i < plan->limit_count; ++i) {
    if (syscall(SYS_prlimit64, 0, plan->limit_resources[i], &plan->limit_values[i], nullptr) < 0) {
      ChildFail(plan, kRlimit, errno);
    }
  }
  for (int target = 0; target < 3; ++target) {
    if (syscall(SYS_dup3, plan->fds[target], target, 0) < 0) ChildFail(plan, kDup, errno);
  }
  // Everything from 3 up closes at execve (the error pipe too, which is how
  // the parent learns that execve worked).
  if (syscall(SYS_close_range, 3U, ~0U, kCloseRangeCloexec) < 0) {
    for (int fd = 3; fd <= plan->max_fd; ++fd) syscall(SYS_fcntl, fd, F_SETFD, FD_CLOEXEC);
  }
  if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &kEmptySigset, nullptr, 8) < 0) {
    ChildFail(plan, kSigmask, errno);
  }
  // execvp's rules: try each candidate; report EACCES if any was not
  // executable, else the last error.
  int err = ENOENT;
  bool denied = false;
  for (size_t i = 0; i < plan->path_count; ++i) {
    syscall(SYS_execve, plan->paths[i], plan->argv, plan->envp);
    err = errno;
    if (err == EACCES) {
      denied = true;
    } else if (err != ENOENT && err != ENOTDIR) {
      break;
    }
  }
  ChildFail(plan, kExec, denied && (err == ENOENT || err == ENOTDIR) ? EACCES : err);
}

bool HasNul(const std::string& s) { return s.find('\0') != std::string::npos; }

void CloseFd(int fd) {
  if (fd >= 0) ::close(fd);
}

}  // namespace

std::vector<std::string> ProgramCandidates(const std::string& program,
                                           const std::string& search_path) {
  if (program.find('/') != std::string::npos) return {program};
  std::vector<std::string> out;
  for (absl::string_view dir : absl::StrSplit(search_path, ':')) {
    out.push_back(absl::StrCat(dir.empty() ? "." : dir, "/", program));
  }
  return out;
}

absl::Status ProbeCloneIntoCgroup(int cgroup_fd) {
  int pidfd = -1;
  CloneArgs args{};
  args.flags = CLONE_PIDFD | kCloneIntoCgroup;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  args.cgroup = static_cast<uint64_t>(cgroup_fd);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  long pid = syscall(SYS_clone3, &args, sizeof args);
  if (pid == 0) syscall(SYS_exit_group, 0);
  const int clone_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("clone3 into a cgroup: ", std::strerror(clone_errno)));
  }
  siginfo_t info;
  while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED) < 0 &&
         errno == EINTR) {
  }
  CloseFd(pidfd);
  return absl::OkStatus();
}

absl::StatusOr<SpawnedProcess> SpawnProcess(const SpawnRequest& request) {
  if (request.paths.empty() || request.argv.empty()) {
    return absl::InvalidArgumentError("exec: no program given");
  }
  const std::string& program = request.argv[0];
  for (const auto* list : {&request.paths, &request.argv, &request.env}) {
    for (const std::string& s : *list) {
      if (HasNul(s)) return absl::InvalidArgumentError("exec: an argument contains a NUL byte");
    }
  }
  if (request.stdin_fd <= 2 || request.stdout_fd <= 2 || request.stderr_fd <= 2) {
    return absl::InternalError("exec: the child's pipes must not be descriptors 0-2");
  }

  std::vector<const char*> paths;
  for (const auto& p : request.paths) paths.push_back(p.c_str());
  std::vector<char*> argv, envp;
  for (const auto& a : request.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : request.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  std::vector<int> resources;
  std::vector<KernelRlimit> values;
  for (const auto& limit : request.limits) {
    struct rlimit current;
    if (::getrlimit(limit.resource, &current) != 0) continue;
    // Never above the worker's own hard limit (raising it needs privilege).
    rlim_t value = current.rlim_max == RLIM_INFINITY
                       ? limit.value
                       : std::min<rlim_t>(limit.value, current.rlim_max);
    resources.push_back(limit.resource);
    values.push_back({value, value});
  }
  struct rlimit nofile;
  int max_fd = 65535;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
    max_fd = static_cast<int>(std::min<rlim_t>(nofile.rlim_cur, 1 << 20));
  }

  int error_pipe[2];
  if (::pipe2(error_pipe, O_CLOEXEC) != 0) {
    return absl::UnavailableError(absl::StrCat("exec: pipe: ", std::strerror(errno)));
  }
  ChildPlan plan{paths.data(),
                 paths.size(),
                 argv.data(),
                 envp.data(),
                 {request.stdin_fd, request.stdout_fd, request.stderr_fd},
                 error_pipe[1],
                 resources.data(),
                 values.data(),
                 resources.size(),
                 max_fd};

  int pidfd = -1;
  CloneArgs args{};
  args.flags = CLONE_PIDFD;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  if (request.cgroup_fd >= 0) {
    args.flags |= kCloneIntoCgroup;
    args.cgroup = static_cast<uint64_t>(request.cgroup_fd);
  }
  // The child starts with every signal blocked, so no handler of ours runs
  // in it before it has reset them all.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  long pid = syscall(SYS_clone3, &args, sizeof args);
  if (pid == 0) RunChild(&plan);
  const int clone_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(error_pipe[1]);
  if (pid < 0) {
    ::close(error_pipe[0]);
    std::string why = absl::StrCat("exec: cannot start ", program, ": clone3: ",
                                   std::strerror(clone_errno));
    if (clone_errno == EAGAIN || clone_errno == ENOMEM) return absl::UnavailableError(why);
    if (clone_errno == ENOSYS) absl::StrAppend(&why, " (exec needs Linux 5.3 or later)");
    return absl::FailedPreconditionError(why);
  }

  ChildError child_error{};
  ssize_t n;
  do {
    n = ::read(error_pipe[0], &child_error, sizeof child_error);
  } while (n < 0 && errno == EINTR);
  ::close(error_pipe[0]);
  if (n != static_cast<ssize_t>(sizeof child_error)) {
    return SpawnedProcess{static_cast<pid_t>(pid), pidfd};  // EOF: execve worked
  }
  // It failed and exits at once: reap it.
  siginfo_t info;
  while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED) < 0 &&
         errno == EINTR) {
  }
  CloseFd(pidfd);
  if (child_error.step == kExec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot start ", program, ": ", std::strerror(child_error.err)));
  }
  return absl::FailedPreconditionError(absl::StrCat("cannot start ", program, ": ",
                                                    StepName(child_error.step), ": ",
                                                    std::strerror(child_error.err)));
}

}  // namespace taskq
