// HandlerRegistry: the named handlers a worker can run, and the context a
// handler gets. A task's `handler` field picks the entry; builtins (square,
// sleep, exec) are registered by the Worker, and a C++ program embedding the
// worker adds its own before Worker::Run():
//
//   Register("name", Handler)        synchronous, CPU-bound: runs on the
//                                    worker's CPU pool (--threads), holding
//                                    one of its threads until it returns.
//   RegisterInline("name", Handler)  synchronous and cheap (microseconds,
//                                    never blocks, e.g. square): runs right
//                                    on the worker's I/O scheduler. Two
//                                    thread hand-offs per task cost more
//                                    than such a handler itself.
//   RegisterAsync("name", AsyncHandler)  a coroutine (rt::Task): runs on the
//                                    worker's I/O scheduler and holds no
//                                    thread while it awaits (timers, fds,
//                                    child processes, RPCs). It must not
//                                    block: CPU-heavy work belongs in a
//                                    synchronous handler.
//
// Result convention: a handler returns its output bytes, or a status.
// InvalidArgument, FailedPrecondition, Unimplemented, PermissionDenied and
// OutOfRange mean "retrying cannot help" (a PERMANENT failure: the master
// gives the task up at once); every other error is retried by the master
// up to the queue's max attempts. ReleaseTask(delay) is special: the task is
// given back (nack) without a failure and runs again after `delay`.
//
// Stopping: HandlerContext::stop_token() fires when the worker hard-stops
// (drain timeout, second signal), when a user cancels the task, or when its
// lease is lost; the result of a stopped task is not reported (or the task
// is released), so a handler should just return soon (any status).
//
// Thread-safety: Register/RegisterAsync/Run/Has/Names are safe from any
// thread. Handlers run concurrently (one task per call) and must be safe to
// call concurrently. A HandlerContext is used by one task at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"  // common/sync.h uses absl::Now without including it
#include "absl/time/time.h"
#include "common/runtime/executor.h"
#include "common/runtime/task.h"
#include "common/sync.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq {

// What a handler sees of the task it runs. Valid only during the call.
class HandlerContext {
 public:
  // `stop` may be a default token (never stops), e.g. in tests.
  HandlerContext(const v1::Task& task, absl::string_view worker_id, std::stop_token stop = {})
      : task_(task), worker_id_(worker_id), stop_(std::move(stop)) {}

  const v1::Task& task() const { return task_; }
  const std::string& payload() const { return task_.payload(); }
  const google::protobuf::RepeatedPtrField<std::string>& args() const { return task_.args(); }
  const google::protobuf::Map<std::string, std::string>& headers() const {
    return task_.headers();
  }
  // 1 on first delivery; higher when an earlier try failed or was lost
  // (not after a release).
  uint32_t attempt() const { return task_.attempt(); }
  absl::string_view worker_id() const { return worker_id_; }

  // Fires on a hard stop of the worker, when the task is cancelled by a
  // user, or when its lease is lost. Pass it to every runtime wait
  // (rt::SleepFor(d, ctx.stop_token()), WaitReadable, ...).
  std::stop_token stop_token() const { return stop_; }
  // True once stop_token() fired. Long synchronous handlers should poll it
  // and give up (any error; the result is not used).
  bool stopping() const { return stop_.stop_requested(); }
  // For synchronous handlers: blocks until `deadline` or a stop; returns
  // true if stopping. Use this instead of sleeping so the worker can stop
  // the task promptly.
  bool WaitForStop(absl::Time deadline) const;

 private:
  const v1::Task& task_;
  absl::string_view worker_id_;
  std::stop_token stop_;
};

using Handler = std::function<absl::StatusOr<std::string>(const HandlerContext&)>;
// A coroutine handler. The function object is kept alive by the registry
// while the coroutine runs, so a lambda's captures stay valid; parameters
// other than the context must be copied into the coroutine.
using AsyncHandler = std::function<rt::Task<absl::StatusOr<std::string>>(HandlerContext&)>;

// True if `status` (a handler's error) must not be retried; see above.
bool IsPermanentFailure(const absl::Status& status);

// What a handler returns to give its task back to the master without a
// failure (a nack): the task is ready again after `delay` (0 = at once; at
// most 365 days) and the attempt is not counted. E.g. a rate-limited API:
//   if (throttled) return ReleaseTask(absl::Seconds(30));
// (An ABORTED status carrying the delay as a payload; through code that
// drops payloads it degrades to an ordinary retryable failure.)
absl::Status ReleaseTask(absl::Duration delay);
// True if `status` came from ReleaseTask; sets *delay (clamped to 0..365
// days) when it is not null.
bool IsReleaseRequest(const absl::Status& status, absl::Duration* delay = nullptr);

class HandlerRegistry {
 public:
  // Adds a handler. Fails with INVALID_ARGUMENT for a bad name (same rules
  // as queue names) or an empty function, ALREADY_EXISTS if taken.
  absl::Status Register(absl::string_view name, Handler handler);
  absl::Status RegisterInline(absl::string_view name, Handler handler);
  absl::Status RegisterAsync(absl::string_view name, AsyncHandler handler);

  // Runs the handler the task names: a synchronous one on `cpu` (and back
  // to the caller's executor afterwards; inline if `cpu` is null or the
  // handler was registered inline), an async one in the calling coroutine. An unknown name is a permanent failure
  // ("no handler named X on worker Y"); an exception thrown by a handler
  // becomes a retryable INTERNAL error (nothing escapes). `context` must
  // outlive the returned task.
  rt::Task<absl::StatusOr<std::string>> Run(HandlerContext& context,
                                            rt::Executor* cpu = nullptr) const;

  bool Has(absl::string_view name) const;
  std::vector<std::string> Names() const;  // sorted

 private:
  struct Entry {
    Handler sync;        // exactly one of the two is set
    AsyncHandler async;
    bool inline_sync = false;  // `sync` runs on the caller's thread
  };
  absl::Status Add(absl::string_view name, Entry entry);

  mutable Mutex mu_;
  // shared_ptr so Run can call a handler without holding mu_.
  absl::flat_hash_map<std::string, std::shared_ptr<const Entry>> handlers_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace taskq
