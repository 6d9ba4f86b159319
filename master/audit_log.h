// AuditLog: one line per admin action (queue create/delete/purge/update/
// shutdown, task cancel, dead-letter requeue/purge, credential create/
// revoke) and per refused credential use, appended to --audit-log
// (default <data-dir>/audit.log, mode 0600; "-" = stderr):
//
//   2026-12-05T01:02:03.456Z queue.delete credential=ops role=admin
//       peer=ipv4:10.0.0.7:51234 target=billing result=OK
//   ... Put credential=p1 role=producer peer=... target=billing
//       result=PERMISSION_DENIED: credential "p1" may not touch queue ...
//
// (one line each). Never a token, key or payload: callers pass names and
// status messages only; every field is escaped (no spaces, no newlines) and
// cut to a bounded length.
//
// Rate limit: at most `lines_per_second` lines (a burst of as many); the
// rest are counted per action and summarised every `summary_every`:
//   <time> audit.suppressed count=1234 actions=Put:1200,Get:34
// so a flood of refused calls cannot fill the disk. A background thread
// writes the summaries; the destructor writes the last one.
//
// Thread-safety: Record may be called from any thread (one Mutex).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/sync.h"

namespace taskq {

struct AuditOptions {
  double lines_per_second = 20;
  absl::Duration summary_every = absl::Seconds(10);
  // Tests: a fake clock and no background thread (they call Tick).
  const Clock* clock = nullptr;
  bool background = true;
};

struct AuditEntry {
  std::string action;      // "queue.delete", or the refused RPC's name
  std::string credential;  // empty = "-"
  std::string role;        // empty = "-"
  std::string peer;        // empty = "-"
  std::string target;      // queue, credential or task; empty = "-"
  absl::Status result;
};

class AuditLog {
 public:
  // Opens `path` for appending (created 0600; an existing file is set to
  // 0600), "-" = stderr.
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(const std::string& path,
                                                        AuditOptions options = {});
  ~AuditLog();

  void Record(const AuditEntry& entry);
  // Writes the summary of suppressed lines if one is due.
  void Tick();

 private:
  AuditLog(int fd, bool owns_fd, AuditOptions options);
  void WriteLine(const std::string& line) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SummaryLocked(absl::Time now, bool force) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Time Now() const;

  const int fd_;
  const bool owns_fd_;
  const AuditOptions options_;
  // State below is protected by mu_.
  Mutex mu_;
  CondVar wake_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  double tokens_ ABSL_GUARDED_BY(mu_);
  absl::Time refilled_ ABSL_GUARDED_BY(mu_);
  absl::Time last_summary_ ABSL_GUARDED_BY(mu_);
  uint64_t suppressed_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, uint64_t> suppressed_by_action_ ABSL_GUARDED_BY(mu_);
  std::thread ticker_;  // started last, joined first
};

}  // namespace taskq
