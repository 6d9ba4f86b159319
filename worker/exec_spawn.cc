#include "worker/exec_spawn.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/runtime/sanitizers.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

namespace taskq {
namespace {

constexpr unsigned kCloseRangeCloexec = 1U << 2;  // CLOSE_RANGE_CLOEXEC

// Under ThreadSanitizer the child gets its own copy of memory instead of
// sharing ours: TSan does not know about a raw clone, and a child running
// in the parent's memory (with its thread's TSan state) corrupted that
// state and made TSan report races that are not there. The child then
// reports a failure through a pipe rather than in `ChildPlan`.
constexpr bool kShareMemory = !kUnderTsan;
// The child's stack: it only makes system calls.
constexpr size_t kChildStack = 64 * 1024;

struct KernelRlimit {
  uint64_t cur;
  uint64_t max;
};

enum Step : int { kSetsid = 1, kCgroup, kRlimit, kDup, kSigmask, kExec };

// Everything the child needs, built before the clone. The child shares
// our memory (CLONE_VM) while we wait for it (CLONE_VFORK): it reads this
// and writes only `failed_step` / `failed_errno`.
struct ChildPlan {
  const char* const* paths;
  size_t path_count;
  char* const* argv;
  char* const* envp;
  int fds[3];
  int cgroup_procs_fd;  // cgroup.procs of the task's cgroup, or -1
  const int* limit_resources;
  const KernelRlimit* limit_values;
  size_t limit_count;
  int max_fd;  // for the close-on-exec loop when close_range is missing
  int failed_step;
  int failed_errno;
  int report_fd;  // !kShareMemory: where the child writes {step, errno}
};

const char* StepName(int step) {
  switch (step) {
    case kSetsid: return "setsid";
    case kCgroup: return "joining its cgroup";
    case kRlimit: return "setrlimit";
    case kDup: return "dup2";
    case kSigmask: return "sigprocmask";
    default: return "execve";
  }
}

// A kernel `struct sigaction` of zeros: SIG_DFL, no flags, empty mask (the
// same bytes whatever the architecture's field order).
const uint64_t kDefaultSigaction[8] = {};
const uint64_t kEmptySigset = 0;

#if defined(__clang__) || defined(__GNUC__)
#define TASKQ_CHILD_CODE __attribute__((noinline, no_sanitize("address", "thread", "undefined")))
#else
#define TASKQ_CHILD_CODE
#endif

TASKQ_CHILD_CODE int ChildFail(ChildPlan* plan, int step, int err) {
  plan->failed_step = step;
  plan->failed_errno = err;
  if (plan->report_fd >= 0) {
    const int report[2] = {step, err};
    syscall(SYS_write, plan->report_fd, report, sizeof report);
  }
  syscall(SYS_exit_group, 127);
  return 127;
}

// Runs in the child between clone and execve, on its own stack, in our
// memory, while our thread waits. Raw system calls only: other threads of
// this process may hold locks (malloc's, the sanitizers') that the child
// would wait for forever.
TASKQ_CHILD_CODE int RunChild(void* arg) {
  ChildPlan* plan = static_cast<ChildPlan*>(arg);
  for (int sig = 1; sig <= 64; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    syscall(SYS_rt_sigaction, sig, kDefaultSigaction, nullptr, 8);  // EINVAL for gaps: fine
  }
  if (syscall(SYS_setsid) < 0) return ChildFail(plan, kSetsid, errno);
  // Into the task's cgroup before anything else runs: whatever the program
  // starts is born there. ("0" moves the writer.)
  if (plan->cgroup_procs_fd >= 0 && syscall(SYS_write, plan->cgroup_procs_fd, "0", 1) != 1) {
    return ChildFail(plan, kCgroup, errno);
  }
  for (size_t i = 0; i < plan->limit_count; ++i) {
    if (syscall(SYS_prlimit64, 0, plan->limit_resources[i], &plan->limit_values[i], nullptr) < 0) {
      return ChildFail(plan, kRlimit, errno);
    }
  }
  for (int target = 0; target < 3; ++target) {
    if (syscall(SYS_dup3, plan->fds[target], target, 0) < 0) return ChildFail(plan, kDup, errno);
  }
  // Everything from 3 up closes at execve.
  if (syscall(SYS_close_range, 3U, ~0U, kCloseRangeCloexec) < 0) {
    for (int fd = 3; fd <= plan->max_fd; ++fd) syscall(SYS_fcntl, fd, F_SETFD, FD_CLOEXEC);
  }
  if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &kEmptySigset, nullptr, 8) < 0) {
    return ChildFail(plan, kSigmask, errno);
  }
  // execvp's rules: try each candidate; report EACCES if one was not
  // executable and none ran, else the last error.
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
  return ChildFail(plan, kExec, denied && (err == ENOENT || err == ENOTDIR) ? EACCES : err);
}

// The probe's child: joins the cgroup and exits.
TASKQ_CHILD_CODE int ProbeChild(void* arg) {
  ChildPlan* plan = static_cast<ChildPlan*>(arg);
  if (syscall(SYS_write, plan->cgroup_procs_fd, "0", 1) != 1) return ChildFail(plan, kCgroup, errno);
  syscall(SYS_exit_group, 0);
  return 0;
}

bool HasNul(const std::string& s) { return s.find('\0') != std::string::npos; }

// Clones `fn(plan)` as a vfork-style child (sharing our memory, on its own
// stack, with every signal blocked) and returns once it has exec'd or
// exited: its pid and pidfd, or an errno value.
absl::StatusOr<SpawnedProcess> CloneChild(int (*fn)(void*), ChildPlan* plan) {
  // One stack per spawning thread, kept: the thread waits while the child
  // uses it, and unmapping a stack on every spawn costs more than the rest.
  thread_local std::unique_ptr<char[]> stack_memory;
  if (stack_memory == nullptr) stack_memory.reset(new char[kChildStack]);
  void* stack = stack_memory.get();
  // The child starts with every signal blocked, so no handler of ours runs
  // on its stack before it has reset them all.
  int report[2] = {-1, -1};
  plan->report_fd = -1;
  if (!kShareMemory) {
    if (::pipe2(report, O_CLOEXEC) != 0) {
      return absl::UnavailableError(absl::StrCat("pipe: ", std::strerror(errno)));
    }
    plan->report_fd = report[1];
  }
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int pidfd = -1;
  pid_t pid = ::clone(fn, static_cast<char*>(stack) + kChildStack,
                      (kShareMemory ? CLONE_VM : 0) | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, plan,
                      &pidfd);
  const int clone_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (!kShareMemory) {
    // The child has exec'd (closing its end) or exited by now (vfork).
    ::close(report[1]);
    int failure[2];
    if (pid >= 0 && ::read(report[0], failure, sizeof failure) == sizeof failure) {
      plan->failed_step = failure[0];
      plan->failed_errno = failure[1];
    }
    ::close(report[0]);
  }
  if (pid < 0) {
    std::string why = absl::StrCat("clone: ", std::strerror(clone_errno));
    if (clone_errno == EAGAIN || clone_errno == ENOMEM) return absl::UnavailableError(why);
    if (clone_errno == EINVAL) absl::StrAppend(&why, " (exec needs Linux 5.3 or later)");
    return absl::FailedPreconditionError(why);
  }
  return SpawnedProcess{pid, pidfd};
}

// Reaps a child that failed before exec (it has exited already).
void ReapFailed(int pidfd) {
  siginfo_t info;
  while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED) < 0 &&
         errno == EINTR) {
  }
  ::close(pidfd);
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

absl::Status ProbeJoinCgroup(int cgroup_fd) {
  int procs = ::openat(cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
  if (procs < 0) return absl::FailedPreconditionError(absl::StrCat("cgroup.procs: ", std::strerror(errno)));
  ChildPlan plan{};
  plan.cgroup_procs_fd = procs;
  absl::StatusOr<SpawnedProcess> child = CloneChild(ProbeChild, &plan);
  ::close(procs);
  if (!child.ok()) return absl::FailedPreconditionError(child.status().message());
  ReapFailed(child->pidfd);
  if (plan.failed_step != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot move a process into it: ", std::strerror(plan.failed_errno)));
  }
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
  int procs = -1;
  if (request.cgroup_fd >= 0) {
    procs = ::openat(request.cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
    if (procs < 0) {
      return absl::UnavailableError(
          absl::StrCat("exec: cannot open its cgroup's cgroup.procs: ", std::strerror(errno)));
    }
  }

  ChildPlan plan{paths.data(),
                 paths.size(),
                 argv.data(),
                 envp.data(),
                 {request.stdin_fd, request.stdout_fd, request.stderr_fd},
                 procs,
                 resources.data(),
                 values.data(),
                 resources.size(),
                 max_fd,
                 0,
                 0,
                 -1};
  absl::StatusOr<SpawnedProcess> child = CloneChild(RunChild, &plan);
  if (procs >= 0) ::close(procs);
  if (!child.ok()) {
    return absl::Status(child.status().code(),
                        absl::StrCat("exec: cannot start ", program, ": ", child.status().message()));
  }
  if (plan.failed_step == 0) return child;  // it runs the program
  ReapFailed(child->pidfd);
  if (plan.failed_step == kExec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot start ", program, ": ", std::strerror(plan.failed_errno)));
  }
  return absl::FailedPreconditionError(absl::StrCat("cannot start ", program, ": ",
                                                    StepName(plan.failed_step), ": ",
                                                    std::strerror(plan.failed_errno)));
}

}  // namespace taskq
