// How the CLI shows tasks and queue counters: `taskq status` / `dlq show`
// as `key: value` lines (JSON: client/json_format.h), one-line table cells for `dlq list`, task
// states and times by name, and the Python-style qsize/empty/full derived
// from QueueStats.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq::cli {

// "delayed", "ready", "leased", "done", "dead", "cancelled", "failed";
// "unknown" for anything else.
std::string StateName(v1::TaskState state);

// "2025-01-31T08:00:00.123Z" (UTC, milliseconds); "" for 0.
std::string FormatUnixMs(int64_t unix_ms);

// `text` on one line: newlines and tabs become spaces, trailing whitespace
// is dropped, and it is cut to `max_chars` with "..." appended.
std::string OneLine(absl::string_view text, size_t max_chars);

// `text` made safe to show on a terminal: whatever could move the cursor or
// change the terminal's state is written as an escape; printable ASCII,
// valid UTF-8 text, newlines and tabs stay as they are.
// - C0 controls other than \n and \t (ESC, CR, BEL, backspace, ...) and
//   bytes that are not valid UTF-8: \xNN;
// - DEL, the C1 controls U+0080..U+009F (an 8-bit CSI is U+009B) and the
//   bidirectional overrides U+202A..U+202E, U+2066..U+2069: \uNNNN.
// Backslashes are not doubled: this is for reading, not for parsing
// (scripts read the CLI through a pipe, which gets the exact bytes).
std::string EscapeForTerminal(absl::string_view text);

// A payload for humans: C-escaped and cut to `max_chars` (with "...").
std::string ShowPayload(absl::string_view payload, size_t max_chars = 200);

// The `key: value` lines of `taskq status` and `taskq dlq show`, in order
// (every key always present, empty value when not applicable), followed by
// "history:" and one line per attempt:
//   "  ATTEMPT  ENDED  WORKER  HOW  ERROR".
std::vector<std::string> TaskStatusLines(const v1::Task& task);

// Python's qsize()/empty()/full() for a queue. qsize counts the tasks in
// the queue that a get may still return: ready + delayed (leased ones were
// handed out, as a Python get removes an item). full means a put would
// wait now: maxsize > 0 and ready + delayed + leased >= maxsize (leased
// tasks keep their room until they are done).
struct QueueSizes {
  uint64_t qsize = 0;
  bool empty = true;
  bool full = false;
};
QueueSizes SizesOf(const v1::QueueStats& stats);

// `taskq queue stats` as ordered (key, value) pairs.
std::vector<std::pair<std::string, std::string>> StatsFields(const v1::QueueStats& stats);

// `taskq queue create/update` output: the stored settings as (key, value).
std::vector<std::pair<std::string, std::string>> ConfigFields(const v1::QueueConfig& config);

}  // namespace taskq::cli
