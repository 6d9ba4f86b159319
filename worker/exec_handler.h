// The `exec` handler: runs an allowed program with the task's args as its
// argv, the payload on its stdin, and its stdout as the result.
//
// Security rules (see docs/WORKER.md):
//   - args[0] must equal, byte for byte, one --allow-exec entry; nothing
//     else runs. An entry containing '/' is executed as that path (relative
//     ones against the worker's working directory); a bare name (no '/') is
//     looked up in the worker's PATH, because that is what its operator
//     allowed.
//   - No shell is involved; argv is passed as given.
//   - The child gets only stdin/stdout/stderr (every other descriptor is
//     closed), default signal dispositions and an empty signal mask, and
//     runs in its own process group (a Ctrl-C on the worker's terminal
//     reaches the worker, which drains, not the children).
//   - Output is capped at ExecLimits::max_output; more is a failure.
//
// It is a coroutine: the pipes are non-blocking and awaited with
// rt::WaitReadable / rt::WaitWritable, and the child's exit with
// rt::WaitChildExit on a pidfd, so no thread is held while the child runs.
// It must be awaited on a runtime Scheduler thread.
//
// Thread-safety: RunProgram and ExecHandler::operator() are safe to call
// concurrently.
#pragma once

#include <cstddef>
#include <stop_token>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/runtime/task.h"
#include "worker/handler_registry.h"

namespace taskq {

struct ExecLimits {
  size_t max_output = 1 << 20;  // stdout bytes kept as the result
  size_t stderr_tail = 2048;    // last stderr bytes quoted in an error
  // When the task is told to stop: SIGTERM to the child's process group,
  // then SIGKILL if it is still alive this much later.
  absl::Duration kill_grace = absl::Seconds(2);
};

// Runs argv[0] with `argv` (search_path: resolve a bare name via PATH),
// writes `input` to its stdin and returns its stdout. `input` must stay
// valid until the task finishes. Errors:
//   FAILED_PRECONDITION  the program cannot be started, or wrote more than
//                        max_output (retrying will not help)
//   UNKNOWN              it exited non-zero or died of a signal (retryable);
//                        the message ends with its stderr tail
//   CANCELLED            `stop` fired; the child's process group got
//                        SIGTERM (SIGKILL after kill_grace) and was reaped
rt::Task<absl::StatusOr<std::string>> RunProgram(std::vector<std::string> argv, bool search_path,
                                                 absl::string_view input, std::stop_token stop,
                                                 ExecLimits limits = {});

class ExecHandler {
 public:
  explicit ExecHandler(std::vector<std::string> allowed, ExecLimits limits = {})
      : allowed_(std::move(allowed)), limits_(limits) {}

  // Refuses (FAILED_PRECONDITION, permanent) when args is empty or args[0]
  // is not allowed; otherwise RunProgram. This object must outlive the
  // returned task (the registry keeps it alive).
  rt::Task<absl::StatusOr<std::string>> operator()(HandlerContext& context) const;

 private:
  std::vector<std::string> allowed_;
  ExecLimits limits_;
};

}  // namespace taskq
