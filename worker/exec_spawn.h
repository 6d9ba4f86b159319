// SpawnProcess: starts a program for the exec handler, set up the way
// posix_spawn cannot: resource limits, a cgroup chosen at birth, a fresh
// session, a fixed environment.
//
// How: clone3(2) without CLONE_VM (a copy-on-write child, like fork) with
// CLONE_PIDFD (the pidfd comes with the child, so it can never name a
// recycled pid) and, when a cgroup is given, CLONE_INTO_CGROUP (the child
// is in its cgroup before it runs a single instruction, so nothing it
// starts can be outside it). The child then, using raw system calls only
// (it is a copy of a multithreaded process: no malloc, no locks, no
// sanitizer runtime):
//   - resets every signal disposition to default and its mask to empty,
//   - calls setsid() (its own session and process group: no controlling
//     terminal, and the worker's Ctrl-C does not reach it),
//   - sets the resource limits,
//   - puts the given pipe ends on 0, 1, 2 and marks every other descriptor
//     close-on-exec,
//   - execve()s the program with exactly the given argv and environment.
// A failure before or at execve is sent back on a close-on-exec pipe, so
// SpawnProcess returns only once the program runs (or reports why not),
// like posix_spawn. Needs Linux 5.3 (clone3, pidfd); 5.7 for a cgroup.
//
// Thread-safety: safe to call concurrently (it briefly blocks all signals
// in the calling thread only).
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

// Clones a child straight into the cgroup `cgroup_fd` that exits at once,
// and reaps it: checks that CLONE_INTO_CGROUP works there.
absl::Status ProbeCloneIntoCgroup(int cgroup_fd);

// The candidates for `program`: itself if it contains '/', else each
// directory of `search_path` (':'-separated; empty = ".") + "/" + program.
std::vector<std::string> ProgramCandidates(const std::string& program,
                                           const std::string& search_path);

}  // namespace taskq
