// The handlers every taskq-worker has:
//   square  payload: a decimal 64-bit integer n  -> "n * n = n²", e.g.
//           "3 * 3 = 9" (the seed's task_worker.py). A payload that is not
//           an integer, or whose square does not fit in 64 bits, is a
//           permanent failure.
//   sleep   payload: seconds as a decimal, e.g. "0.5" -> "slept 0.5". A
//           coroutine: it holds no thread while it sleeps. Wakes early
//           (retryable CANCELLED) when the task is told to stop.
//   exec    see exec_handler.h (a coroutine too).
//
// square is synchronous and registered inline (it takes well under a
// microsecond, so it runs on the worker's I/O scheduler without a hop to the
// CPU pool); sleep and exec are async handlers (also on the I/O scheduler).
//
// Thread-safety: the functions are stateless and safe from any thread.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/runtime/task.h"
#include "worker/exec_handler.h"
#include "worker/handler_registry.h"

namespace taskq {

// Longest sleep the `sleep` handler accepts (a longer one is a mistake).
inline constexpr absl::Duration kMaxSleep = absl::Hours(24);

// "n * n = n²" for a decimal payload (surrounding whitespace allowed).
absl::StatusOr<std::string> Square(absl::string_view payload);

// Parses a sleep payload: a finite, non-negative decimal number of seconds
// no greater than kMaxSleep.
absl::StatusOr<absl::Duration> ParseSleepSeconds(absl::string_view payload);

absl::StatusOr<std::string> SquareHandler(const HandlerContext& context);
// Awaited on a runtime scheduler thread (it sleeps on that scheduler's
// timers).
rt::Task<absl::StatusOr<std::string>> SleepHandler(HandlerContext& context);

// Registers square, sleep and `exec` (a default ExecHandler allows nothing).
absl::Status RegisterBuiltinHandlers(HandlerRegistry* registry, ExecHandler exec);

}  // namespace taskq
