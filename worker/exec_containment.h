// ExecContainment: keeps together every process an exec task starts (its
// child, grandchildren, daemons that called setsid or double-forked), so
// that all of them die with the task.
//
// One of two ways, chosen when the worker starts (--exec-cgroup):
//
//   cgroup   When the worker can create cgroup v2 directories (it runs as
//            root, or in a systemd unit with Delegate=yes): a directory
//            <the worker's cgroup>/taskq-exec-PID-N/task-M per task. The
//            child moves itself into it before it runs the program, so
//            whatever it starts is in it too, setsid or not; the task's end
//            writes cgroup.kill, which kills all of them at once. Only a
//            process that may write cgroup files (root, or the worker's
//            own user inside a delegated subtree) can leave.
//   session  The fallback. The child leads a new session; the worker is a
//            child subreaper (PR_SET_CHILD_SUBREAPER), so descendants whose
//            parent dies become the worker's children. At the task's end
//            its process group and every process of its session get
//            SIGKILL; then each process the worker adopted that is in no
//            running task's session is killed unless a running exec task
//            started before it (it could be that task's). So a daemon that
//            left its session is killed at once when no other exec task is
//            running, and otherwise when the last task that was already
//            running when it was started has ended.
//
// Either way the worker reaps zombies it adopted, but never a running
// task's own child (that task's coroutine reaps it through its pidfd), and
// never a child in the worker's own session (one that a custom handler
// may be waiting for). An embedding program whose own children call
// setsid should not enable exec in session mode.
//
// A worker that crashed leaves its cgroups behind: the next worker started
// with the same cgroup kills what is left in them and removes them.
//
// Thread-safety: ExecContainment is safe from any thread; a TaskProcesses
// is used by one task at a time.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/runtime/task.h"
#include "common/sync.h"

namespace taskq {

class TaskProcesses;

class ExecContainment : public std::enable_shared_from_this<ExecContainment> {
 public:
  enum class Mode { kCgroup, kSession };

  // `setting`: "auto" (cgroup if it works here, else session), "off"
  // (session), or a cgroup v2 directory to create task cgroups in (an
  // error if that does not work). Probes by moving a child into a test
  // cgroup and killing it there; in session mode makes this process a
  // child subreaper.
  static absl::StatusOr<std::shared_ptr<ExecContainment>> Create(const std::string& setting);
  // Kills whatever is left in its cgroups and removes them.
  ~ExecContainment();
  ExecContainment(const ExecContainment&) = delete;
  ExecContainment& operator=(const ExecContainment&) = delete;

  Mode mode() const { return mode_; }
  // For the startup log, e.g. "cgroup /sys/fs/cgroup/.../taskq-exec-12-1"
  // or "session (no cgroup: ...)".
  const std::string& description() const { return description_; }

  // A new task's container (its cgroup is created now). Call before
  // spawning its child.
  absl::StatusOr<std::unique_ptr<TaskProcesses>> Begin();

  // Reaps zombies this process adopted and, when `kill_orphans` (session
  // mode), kills adopted processes no running task may own (see above).
  // `keep` (a task's own child, not reaped yet) is left alone. Returns
  // how many it signalled.
  static int Sweep(bool kill_orphans, pid_t keep = 0);

 private:
  friend class TaskProcesses;
  ExecContainment(Mode mode, std::string dir, std::string description)
      : mode_(mode), dir_(std::move(dir)), description_(std::move(description)) {}

  // Cgroup directories that could not be removed yet (still populated):
  // tried again on later tasks and at destruction.
  void DeferRemoval(std::string path) ABSL_LOCKS_EXCLUDED(mu_);
  void RetryRemovals() ABSL_LOCKS_EXCLUDED(mu_);

  const Mode mode_;
  const std::string dir_;  // cgroup mode: this worker's cgroup directory
  const std::string description_;

  Mutex mu_;
  uint64_t next_task_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> deferred_ ABSL_GUARDED_BY(mu_);
};

// The processes of one exec task.
class TaskProcesses {
 public:
  ~TaskProcesses();  // stops counting as running; removes its cgroup
  TaskProcesses(const TaskProcesses&) = delete;
  TaskProcesses& operator=(const TaskProcesses&) = delete;

  // The cgroup directory to clone the child into, or -1 (session mode).
  int cgroup_fd() const { return cgroup_fd_; }
  // The child was spawned (it leads its session and process group). It
  // must stay unreaped until KillAndWait returned.
  void SetLeader(pid_t pid);
  // SIGTERM to the child's process group (a polite stop).
  void Terminate();
  // SIGKILLs every process of the task, the child included, and waits
  // (polling every 10 ms, holding no thread) until none is left or
  // `timeout` passed; returns false then. Session mode: then kills the
  // orphans it may (ExecContainment::Sweep).
  rt::Task<bool> KillAndWait(absl::Duration timeout);

 private:
  friend class ExecContainment;
  TaskProcesses(std::shared_ptr<ExecContainment> owner, uint64_t registration,
                std::string cgroup_dir, int cgroup_fd)
      : owner_(std::move(owner)),
        registration_(registration),
        cgroup_dir_(std::move(cgroup_dir)),
        cgroup_fd_(cgroup_fd) {}

  // SIGKILLs every process of the task; true if one may still be alive.
  bool KillAllAndCheck();
  void Unregister();

  std::shared_ptr<ExecContainment> owner_;
  uint64_t registration_;  // in the process-wide table of running tasks
  bool registered_ = true;
  std::string cgroup_dir_;  // empty in session mode
  int cgroup_fd_ = -1;
  pid_t leader_ = 0;
};

}  // namespace taskq
