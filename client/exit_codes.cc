#include "client/exit_codes.h"

namespace taskq::cli {

int ExitCodeFor(const absl::Status& status, CallKind kind) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kDeadlineExceeded:
      if (kind == CallKind::kGet) return kExitEmpty;
      if (kind == CallKind::kWait || kind == CallKind::kSubmit) return kExitTimedOut;
      return kExitError;
    case absl::StatusCode::kResourceExhausted:
      if (kind == CallKind::kPut || kind == CallKind::kSubmit) return kExitFull;
      return kExitError;
    case absl::StatusCode::kFailedPrecondition:
      // The only precondition a put can miss: the queue is shut down.
      if (kind == CallKind::kPut || kind == CallKind::kSubmit) return kExitShutDown;
      return kExitRefused;
    case absl::StatusCode::kOutOfRange:
      // A get on a shut-down queue that has been drained.
      if (kind == CallKind::kGet || kind == CallKind::kSubmit) return kExitShutDown;
      return kExitError;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
      return kExitRefused;
    case absl::StatusCode::kUnavailable:
      return kExitUnreachable;
    default:
      return kExitError;
  }
}

}  // namespace taskq::cli
