// The flags `taskq put` and `taskq submit` share for when and how often a
// task may run: --delay, --not-before and --dedup-key, their parsing
// (times as RFC 3339 or Unix seconds, "{}" in a dedup key replaced by each
// payload) and how they are applied to the tasks of one command.
//
// Thread-safety: pure functions, plus CLI11 set-up used from main's thread.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/client.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq::cli {

struct ScheduleFlags {
  double delay_seconds = -1;  // < 0: not given
  std::string not_before;     // "": not given
  std::string dedup_key;      // "": not given
};

// Adds --delay, --not-before and --dedup-key to `app`.
void AddScheduleFlags(CLI::App* app, ScheduleFlags* flags);

// A point in time from the command line: RFC 3339
// ("2025-01-31T08:00:00Z", "2025-01-31T09:00:00.5+01:00") or Unix seconds
// ("1738310400", fractions allowed). INVALID_ARGUMENT otherwise.
absl::StatusOr<absl::Time> ParseTimeArg(absl::string_view text);

// The dedup key of one task: every "{}" in `pattern` replaced by `payload`.
// With several payloads the pattern must contain "{}" (checked by
// ApplyScheduleFlags), so that each task gets its own key. INVALID_ARGUMENT
// if the key is empty or longer than kMaxDedupKeyBytes.
absl::StatusOr<std::string> ExpandDedupKey(absl::string_view pattern, absl::string_view payload);

// Sets delay / not-before and dedup keys on `tasks` (payloads already
// set). `now` anchors a --delay too long for TaskSpec.delay_ms. A usage
// problem is INVALID_ARGUMENT with a message for the user.
absl::Status ApplyScheduleFlags(const ScheduleFlags& flags, absl::Time now,
                                std::vector<v1::TaskSpec>* tasks);

// For every task the master deduplicated, prints on stderr
// "taskq: task ID already exists with dedup key "K": nothing stored".
// `keys` are the tasks' dedup keys in put order.
void ReportExisting(const PutReceipt& receipt, const std::vector<std::string>& keys);

// The tasks' dedup keys, in order (empty strings if none were given).
std::vector<std::string> DedupKeys(const std::vector<v1::TaskSpec>& tasks);

}  // namespace taskq::cli
