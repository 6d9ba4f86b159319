// The `exec` handler: runs a command the worker's operator allowed, with
// the task's payload on its stdin and its stdout as the result.
//
// Security rules (docs/WORKER.md, "The exec handler"):
//   - The task names a command (args[0]); the operator fixed its whole
//     command line (--allow-exec 'NAME=PROGRAM ARG...', see exec_config.h).
//     More task arguments are refused unless the command was given
//     --allow-exec-args, and then they are appended to its argv.
//   - No shell is involved; argv is passed as given. A program given with
//     a '/' runs as that path; a bare name is looked up in the worker's
//     PATH when the task starts.
//   - The child's environment is only what exec_config.h lists (no
//     TASKQ_*, nothing else of the worker's).
//   - The child gets only stdin/stdout/stderr (every other descriptor is
//     closed), default signal dispositions, an empty signal mask, its own
//     session, and the configured resource limits (exec_spawn.h).
//   - Everything it starts dies with it (exec_containment.h): when the
//     child exits, when the task is told to stop, when stdout overflows
//     and at the --exec-timeout.
//   - Output is capped at ExecLimits::max_output; more is a failure.
//
// It is a coroutine: the pipes are non-blocking and awaited with
// rt::WaitReadable / rt::WaitWritable, and the child's exit on its pidfd,
// so no thread is held while the child runs. It must be awaited on a
// runtime Scheduler thread.
//
// Thread-safety: ExecHandler is immutable after Create; operator() is safe
// to call concurrently. Copies share the configuration and containment.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/runtime/task.h"
#include "worker/exec_config.h"
#include "worker/exec_containment.h"
#include "worker/handler_registry.h"

namespace taskq {

struct ExecLimits {
  size_t max_output = 1 << 20;  // stdout bytes kept as the result
  size_t stderr_tail = 2048;    // last stderr bytes quoted in an error
  // When the task is told to stop or times out: SIGTERM to the child's
  // process group, then SIGKILL to everything of the task if the child is
  // still alive this much later.
  absl::Duration kill_grace = absl::Seconds(2);
};

class ExecHandler {
 public:
  // Allows nothing: every exec task is refused.
  ExecHandler() = default;

  // Checks the flags (INVALID_ARGUMENT naming the flag) and, when at least
  // one command is allowed, sets up the containment (FAILED_PRECONDITION
  // if --exec-cgroup names a directory that does not work). Logs the
  // warnings of ExecConfig and how processes are contained.
  static absl::StatusOr<ExecHandler> Create(const ExecOptions& options, ExecLimits limits = {});

  // Errors:
  //   INVALID_ARGUMENT     no command name in args[0]                (permanent)
  //   FAILED_PRECONDITION  the command is not allowed here, the task sent
  //                        arguments it may not, the program cannot be
  //                        started, or it wrote more than max_output (permanent)
  //   UNKNOWN              it exited non-zero or died of a signal (retryable);
  //                        the message ends with its stderr tail
  //   DEADLINE_EXCEEDED    it ran past --exec-timeout (retryable); killed
  //   CANCELLED            the task was told to stop; killed
  //   UNAVAILABLE          out of pipes, processes or cgroups (retryable)
  // This object must outlive the returned task (the registry keeps it).
  rt::Task<absl::StatusOr<std::string>> operator()(HandlerContext& context) const;

  // Null when nothing is allowed.
  const ExecConfig* config() const { return config_.get(); }
  const ExecContainment* containment() const { return containment_.get(); }

 private:
  std::shared_ptr<const ExecConfig> config_;
  std::shared_ptr<ExecContainment> containment_;
  ExecLimits limits_;
};

}  // namespace taskq
