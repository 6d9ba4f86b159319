// SpawnProcess: starts a program for the exec handler, set up the way
// posix_spawn cannot: resource limits, a cgroup, a fresh session, a fixed
// environment.
//
// How: clone(2) with CLONE_VM | CLONE_VFORK (as posix_spawn does: the
// child borrows our memory on a stack of its own while the calling thread
// waits, so nothing is copied) and CLONE_PIDFD (the pidfd comes with the
// child, so it can never name a recycled pid). The child then, using raw
// system calls only (it runs inside a multithreaded process: no malloc, no
// locks, no sanitizer runtime):
//   - resets every signal disposition to default (all signals stay
//     blocked until just before execve),
//   - calls setsid() (its own session and process group: no controlling
//     terminal, and the worker's Ctrl-C does not reach it),
//   - moves itself into the task's cgroup, if any (writes "0" to its
//     cgroup.procs), before the program runs, so whatever the program
//     starts is born inside it,
//   - sets the resource limits (soft and hard),
//   - puts the given pipe ends on 0, 1, 2 and marks every other descriptor
//     close-on-exec, empties its signal mask,
//   - execve()s the program with exactly the given argv and environment.
// The calling thread resumes once the child has exec'd or failed (the
// failure is left in our memory), like posix_spawn. Needs Linux 5.2
// (CLONE_PIDFD); close_range is used when there (5.11), else a loop.
//
// Thread-safety: safe to call concurrently (it blocks all signals in the
// calling thread only, for the duration of the clone).
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace taskq {

struct SpawnRequest {
  // Tried in order until one execs (a bare name's PATH candidates); argv[0]
  // is what the program sees as its name.
  std::vector<std::string> paths;
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "NAME=VALUE"
  int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1;  // must all be > 2
  int cgroup_fd = -1;  // an open cgroup v2 directory, or -1
  struct Limit {
    int resource;  // RLIMIT_*
    rlim_t value;  // soft and hard
  };
  std::vector<Limit> limits;
};

struct SpawnedProcess {
  pid_t pid = -1;
  int pidfd = -1;  // owned by the caller (close-on-exec)
};

// FAILED_PRECONDITION "cannot start PROGRAM: REASON" when the program
// cannot be executed (missing, not executable, ...) or the child cannot be
// set up; UNAVAILABLE when the system is out of processes or memory.
absl::StatusOr<SpawnedProcess> SpawnProcess(const SpawnRequest& request);

// Starts a child that moves itself into the cgroup `cgroup_fd` and exits,
// and reaps it: checks that the worker may put its children there.
absl::Status ProbeJoinCgroup(int cgroup_fd);

// The candidates for `program`: itself if it contains '/', else each
// directory of `search_path` (':'-separated; empty = ".") + "/" + program.
std::vector<std::string> ProgramCandidates(const std::string& program,
                                           const std::string& search_path);

}  // namespace taskq
