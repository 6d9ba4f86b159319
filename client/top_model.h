// What `taskq top` shows, computed from samples and laid out as text, with
// no terminal or network in it (client/top_command.cc draws it):
//
// - QueueRows: one row per queue from the latest ListQueues sample, with
//   rates (puts/s, completions/s, failures/s) from the difference of the
//   totals between this sample and the previous one;
// - SortRows / the sort keys the user cycles through;
// - RenderTop: the screen's lines for a width and height (long names cut,
//   rows beyond the height left out with a "+N more" line), or unbounded
//   for the plain mode on a pipe.
//
// Thread-safety: plain functions and values; no shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq::cli {

struct QueueRow {
  std::string name;
  uint64_t ready = 0;
  uint64_t delayed = 0;
  uint64_t leased = 0;
  uint64_t dead = 0;
  uint32_t workers = 0;
  // Per second over the last interval; nullopt until the queue has been
  // seen twice (or its totals went down: a master restart).
  std::optional<double> put_rate;
  std::optional<double> done_rate;  // completed
  std::optional<double> fail_rate;  // given up (max attempts, permanent)
};

// One ListQueues answer and when it was taken.
struct QueueSample {
  std::vector<v1::QueueStats> queues;
  absl::Time at;
};

// Rows for `now`; rates against `previous` (nullptr: none yet).
std::vector<QueueRow> QueueRows(const QueueSample& now, const QueueSample* previous);

// A connected worker, as the workers section shows it.
struct WorkerRow {
  std::string id;
  std::string host;
  absl::Time since;
  uint32_t credits = 0;
  uint32_t running = 0;
  std::vector<std::string> queues;
};

// The columns a user can sort by. Names ascend; numbers descend (the
// busiest first), ties by name.
enum class SortKey { kName, kReady, kLeased, kDead, kPutRate, kDoneRate };

// The key a key press selects: n r l d p c; nullopt for other keys.
std::optional<SortKey> SortKeyForKey(char key);
// `s` cycles: name, ready, leased, dead, put/s, done/s, name...
SortKey NextSortKey(SortKey key);
// The column's heading ("NAME", "READY", ... "PUT/S", "DONE/S").
const char* SortKeyName(SortKey key);

void SortRows(SortKey key, std::vector<QueueRow>* rows);

// Everything one screen shows.
struct TopView {
  std::string master;     // address shown in the title
  absl::Time updated;     // when the rows were sampled (InfinitePast: never)
  SortKey sort = SortKey::kName;
  std::vector<QueueRow> queues;  // already sorted
  // nullopt: the master does not list workers (section left out).
  std::optional<std::vector<WorkerRow>> workers;
  absl::Time now;
  std::string status;  // "" or e.g. the last error; shown on the last line
  bool interactive = true;  // say which keys do what
};

// The lines of one screen, each at most `width` columns and at most
// `height` lines (0 = no limit for either: the plain mode). Text from the
// master (names, hosts) is escaped for the terminal.
std::vector<std::string> RenderTop(const TopView& view, size_t width, size_t height);

// "12", "3.4", "1.2k", "5.6M": a rate in at most 6 columns; "-" if unknown.
std::string FormatRate(std::optional<double> rate);

// "45s", "12m", "3h", "2d": how long ago `since` was.
std::string FormatAge(absl::Duration age);

}  // namespace taskq::cli
