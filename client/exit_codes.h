// Exit codes of the `taskq` CLI (the shared contract scripts rely on), and
// the mapping from a call's absl::Status to them.
//
// Thread-safety: constants and pure functions.
#pragma once

#include "absl/status/status.h"

namespace taskq::cli {

enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,        // anything not listed below
  kExitUsage = 2,        // bad command line
  kExitEmpty = 3,        // get: queue empty (timed out or --nowait)
  kExitFull = 4,         // put/submit: queue full (timed out or --nowait)
  kExitRefused = 5,      // the master refused the request (auth, bad argument, ...)
  kExitUnreachable = 6,  // the master could not be reached
  kExitTaskFailed = 7,   // submit --wait: at least one task failed or was cancelled
  kExitTimedOut = 8,     // join --timeout, submit --wait-timeout ran out
  kExitShutDown = 9,     // queue shut down: put refused, or get found it drained
  kExitInterrupted = 130,  // Ctrl-C (128 + SIGINT)
};

// What kind of call produced a status: DEADLINE_EXCEEDED means "queue
// empty" for a get but "timed out" for a join or a submit --wait,
// RESOURCE_EXHAUSTED means "queue full" only for a put, and "queue shut
// down" is FAILED_PRECONDITION for a put but OUT_OF_RANGE for a get.
enum class CallKind {
  kAdmin,   // queue admin, task-done, tasks by id, dead letters, leases
  kGet,     // get
  kPut,     // put, submit without --wait
  kWait,    // join
  kSubmit,  // submit --wait (puts and waits)
};

int ExitCodeFor(const absl::Status& status, CallKind kind);

}  // namespace taskq::cli
