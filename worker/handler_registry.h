// HandlerRegistry: the named handlers a worker can run, and the context a
// handler gets. A task's `handler` field picks the entry; builtins (square,
// sleep, exec) are registered by the Worker, and a C++ program embedding the
// worker adds its own with Register() before Worker::Run().
//
// Result convention: a handler returns its output bytes, or a status.
// InvalidArgument, FailedPrecondition, Unimplemented, PermissionDenied and
// OutOfRange mean "retrying cannot help" (a PERMANENT failure: the master
// gives the task up at once); every other error is retried by the master
// up to the queue's max attempts.
//
// Thread-safety: Register/Run/Has/Names are safe from any thread. Handlers
// themselves run concurrently on the worker's threads (one task per call)
// and must be safe to call concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/time/clock.h"  // common/sync.h uses absl::Now without including it
#include "common/sync.h"
#include "taskq/v1/taskq.pb.h"
#include "worker/stop_signal.h"

namespace taskq {

// What a handler sees of the task it runs. Valid only during the call.
class HandlerContext {
 public:
  // `stop` may be null (never stops), e.g. in tests.
  HandlerContext(const v1::Task& task, absl::string_view worker_id, const StopSignal* stop)
      : task_(task), worker_id_(worker_id), stop_(stop) {}

  const v1::Task& task() const { return task_; }
  const std::string& payload() const { return task_.payload(); }
  const google::protobuf::RepeatedPtrField<std::string>& args() const { return task_.args(); }
  const google::protobuf::Map<std::string, std::string>& headers() const {
    return task_.headers();
  }
  // 1 on first delivery; higher when an earlier try failed or was lost.
  uint32_t attempt() const { return task_.attempt(); }
  absl::string_view worker_id() const { return worker_id_; }

  // True once the worker is hard-stopping (drain timeout passed). Long
  // handlers should poll this and give up with a (retryable) error.
  bool stopping() const { return stop_ != nullptr && stop_->stopped(); }
  // Sleeps until `deadline` or a hard stop; returns true if stopping. Use
  // this instead of sleeping so the worker can shut down promptly.
  bool WaitForStop(absl::Time deadline) const;
  // The hard-stop flag itself (may be null), for handlers that wait in
  // their own loops (e.g. exec polling a child process).
  const StopSignal* stop_signal() const { return stop_; }

 private:
  const v1::Task& task_;
  absl::string_view worker_id_;
  const StopSignal* stop_;
};

using Handler = std::function<absl::StatusOr<std::string>(const HandlerContext&)>;

// True if `status` (a handler's error) must not be retried; see above.
bool IsPermanentFailure(const absl::Status& status);

class HandlerRegistry {
 public:
  // Adds a handler. Fails with INVALID_ARGUMENT for a bad name (same rules
  // as queue names) or an empty function, ALREADY_EXISTS if taken.
  absl::Status Register(absl::string_view name, Handler handler);

  // Runs the handler the task names. An unknown name is a permanent
  // failure ("no handler named X on worker Y"); an exception thrown by a
  // handler becomes a retryable INTERNAL error (nothing escapes).
  absl::StatusOr<std::string> Run(const HandlerContext& context) const;

  bool Has(absl::string_view name) const;
  std::vector<std::string> Names() const;  // sorted

 private:
  mutable Mutex mu_;
  // shared_ptr so Run can call a handler without holding mu_.
  absl::flat_hash_map<std::string, std::shared_ptr<const Handler>> handlers_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace taskq
