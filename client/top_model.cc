#include "client/top_model.h"

#include <algorithm>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/task_format.h"

namespace taskq::cli {
namespace {

constexpr SortKey kSortOrder[] = {SortKey::kName, SortKey::kReady,   SortKey::kLeased,
                                  SortKey::kDead, SortKey::kPutRate, SortKey::kDoneRate};

// Per second between two readings of a counter; nullopt when the counter
// went down (a master restart starts its totals again) or no time passed.
std::optional<double> Rate(uint64_t now, uint64_t before, absl::Duration elapsed) {
  const double seconds = absl::ToDoubleSeconds(elapsed);
  if (now < before || seconds <= 0) return std::nullopt;
  return static_cast<double>(now - before) / seconds;
}

// Text from the master for a cell whose width is counted in bytes: escaped
// for the terminal, and anything beyond ASCII hex-escaped so that one byte
// is one column.
std::string Cell(const std::string& text) {
  std::string escaped = EscapeForTerminal(text);
  for (unsigned char c : escaped) {
    if (c >= 0x80) return absl::CHexEscape(text);
  }
  return escaped;
}

// `text` in at most `width` columns; a cut ends in '~'.
std::string Fit(const std::string& text, size_t width) {
  if (text.size() <= width) return text;
  if (width == 0) return "";
  return text.substr(0, width - 1) + "~";
}

std::string PadRight(const std::string& text, size_t width) {
  return text.size() >= width ? text : text + std::string(width - text.size(), ' ');
}

std::string PadLeft(const std::string& text, size_t width) {
  return text.size() >= width ? text : std::string(width - text.size(), ' ') + text;
}

// Numeric columns of the queue table: heading and width.
struct Column {
  const char* heading;
  size_t width;
};
// Each as wide as its heading with the sort mark, at least.
constexpr Column kQueueColumns[] = {{"READY", 7},  {"DELAYED", 7}, {"LEASED", 7},
                                    {"DEAD", 6},   {"WORKERS", 7}, {"PUT/S", 6},
                                    {"DONE/S", 7}, {"FAIL/S", 6}};
constexpr size_t kMinNameWidth = 8;

std::vector<std::string> QueueCells(const QueueRow& row) {
  return {absl::StrCat(row.ready),   absl::StrCat(row.delayed),   absl::StrCat(row.leased),
          absl::StrCat(row.dead),    absl::StrCat(row.workers),   FormatRate(row.put_rate),
          FormatRate(row.done_rate), FormatRate(row.fail_rate)};
}

// The sorted column's heading carries a '*'.
std::string Heading(const char* name, bool sorted) {
  return sorted ? absl::StrCat("*", name) : std::string(name);
}

bool ColumnIsSorted(size_t column, SortKey key) {
  switch (key) {
    case SortKey::kReady: return column == 0;
    case SortKey::kLeased: return column == 2;
    case SortKey::kDead: return column == 3;
    case SortKey::kPutRate: return column == 5;
    case SortKey::kDoneRate: return column == 6;
    case SortKey::kName: return false;
  }
  return false;
}

std::vector<std::string> QueueTable(const TopView& view, size_t width) {
  size_t numbers = 0;
  for (const Column& c : kQueueColumns) numbers += c.width + 1;
  size_t name_width = 5;  // "QUEUE"
  std::vector<std::string> names;
  for (const QueueRow& row : view.queues) {
    names.push_back(Cell(row.name));
    name_width = std::max(name_width, names.back().size() + 1);  // room for the '*'
  }
  if (width > 0) {
    name_width = std::min(name_width, width > numbers + kMinNameWidth ? width - numbers
                                                                      : kMinNameWidth);
  }
  std::vector<std::string> lines;
  std::string heading =
      PadRight(Heading("QUEUE", view.sort == SortKey::kName), name_width);
  for (size_t i = 0; i < std::size(kQueueColumns); ++i) {
    absl::StrAppend(&heading, " ",
                    PadLeft(Heading(kQueueColumns[i].heading, ColumnIsSorted(i, view.sort)),
                            kQueueColumns[i].width));
  }
  lines.push_back(std::move(heading));
  for (size_t r = 0; r < view.queues.size(); ++r) {
    std::string line = PadRight(Fit(names[r], name_width), name_width);
    const std::vector<std::string> cells = QueueCells(view.queues[r]);
    for (size_t i = 0; i < cells.size(); ++i) {
      absl::StrAppend(&line, " ", PadLeft(cells[i], kQueueColumns[i].width));
    }
    lines.push_back(std::move(line));
  }
  return lines;
}

std::vector<std::string> WorkerTable(const std::vector<WorkerRow>& workers, absl::Time now,
                                     size_t width) {
  // Id and host as wide as they need, up to a cap when the width is
  // bounded; the queues take the rest of the line.
  constexpr size_t kCap = 24;
  size_t id_width = 6, host_width = 4;  // "WORKER", "HOST"
  for (const WorkerRow& w : workers) {
    id_width = std::max(id_width, Cell(w.id).size());
    host_width = std::max(host_width, Cell(w.host).size());
  }
  if (width > 0) {
    id_width = std::min(id_width, kCap);
    host_width = std::min(host_width, kCap);
  }
  auto line = [&](const std::string& id, const std::string& host, const std::string& up,
                  const std::string& credits, const std::string& running,
                  const std::string& queues) {
    return absl::StrCat(PadRight(Fit(id, id_width), id_width), " ",
                        PadRight(Fit(host, host_width), host_width), " ", PadLeft(up, 6), " ",
                        PadLeft(credits, 7), " ", PadLeft(running, 7), " ", queues);
  };
  std::vector<std::string> lines = {line("WORKER", "HOST", "UP", "CREDITS", "RUNNING", "QUEUES")};
  for (const WorkerRow& w : workers) {
    std::vector<std::string> queues;
    for (const std::string& q : w.queues) queues.push_back(Cell(q));
    lines.push_back(line(Cell(w.id), Cell(w.host), FormatAge(now - w.since),
                         absl::StrCat(w.credits), absl::StrCat(w.running),
                         absl::StrJoin(queues, ",")));
  }
  return lines;
}

// Appends the rows of `table` (heading first) to `out`, leaving out rows
// beyond `room` lines with a last line saying how many.
void AppendTable(const std::vector<std::string>& table, const char* what, size_t room,
                 std::vector<std::string>* out) {
  if (room == 0) return;
  if (table.size() <= room) {
    out->insert(out->end(), table.begin(), table.end());
    return;
  }
  if (room == 1) return;
  out->insert(out->end(), table.begin(), table.begin() + static_cast<long>(room - 1));
  out->push_back(absl::StrCat("... ", table.size() - (room - 1), " more ", what));
}

}  // namespace

std::vector<QueueRow> QueueRows(const QueueSample& now, const QueueSample* previous) {
  absl::flat_hash_map<std::string, const v1::QueueStats*> before;
  if (previous != nullptr) {
    for (const v1::QueueStats& q : previous->queues) before[q.config().name()] = &q;
  }
  const absl::Duration elapsed = previous != nullptr ? now.at - previous->at : absl::ZeroDuration();
  std::vector<QueueRow> rows;
  rows.reserve(now.queues.size());
  for (const v1::QueueStats& q : now.queues) {
    QueueRow& row = rows.emplace_back();
    row.name = q.config().name();
    row.ready = q.ready();
    row.delayed = q.delayed();
    row.leased = q.leased();
    row.dead = q.dead();
    row.workers = q.workers();
    auto it = before.find(row.name);
    if (it == before.end()) continue;
    const v1::QueueStats& b = *it->second;
    row.put_rate = Rate(q.total_put(), b.total_put(), elapsed);
    row.done_rate = Rate(q.total_completed(), b.total_completed(), elapsed);
    row.fail_rate = Rate(q.total_failed(), b.total_failed(), elapsed);
  }
  return rows;
}

std::optional<SortKey> SortKeyForKey(char key) {
  switch (key) {
    case 'n': return SortKey::kName;
    case 'r': return SortKey::kReady;
    case 'l': return SortKey::kLeased;
    case 'd': return SortKey::kDead;
    case 'p': return SortKey::kPutRate;
    case 'c': return SortKey::kDoneRate;
    default: return std::nullopt;
  }
}

SortKey NextSortKey(SortKey key) {
  for (size_t i = 0; i < std::size(kSortOrder); ++i) {
    if (kSortOrder[i] == key) return kSortOrder[(i + 1) % std::size(kSortOrder)];
  }
  return SortKey::kName;
}

const char* SortKeyName(SortKey key) {
  switch (key) {
    case SortKey::kName: return "QUEUE";
    case SortKey::kReady: return "READY";
    case SortKey::kLeased: return "LEASED";
    case SortKey::kDead: return "DEAD";
    case SortKey::kPutRate: return "PUT/S";
    case SortKey::kDoneRate: return "DONE/S";
  }
  return "QUEUE";
}

void SortRows(SortKey key, std::vector<QueueRow>* rows) {
  // Unknown rates sort as -1: below every known rate.
  auto number = [key](const QueueRow& r) -> double {
    switch (key) {
      case SortKey::kReady: return static_cast<double>(r.ready);
      case SortKey::kLeased: return static_cast<double>(r.leased);
      case SortKey::kDead: return static_cast<double>(r.dead);
      case SortKey::kPutRate: return r.put_rate.value_or(-1);
      case SortKey::kDoneRate: return r.done_rate.value_or(-1);
      case SortKey::kName: return 0;
    }
    return 0;
  };
  std::stable_sort(rows->begin(), rows->end(), [&](const QueueRow& a, const QueueRow& b) {
    const double x = number(a), y = number(b);
    if (x != y) return x > y;
    return a.name < b.name;
  });
}

std::string FormatRate(std::optional<double> rate) {
  if (!rate.has_value()) return "-";
  const double r = *rate;
  if (r == 0) return "0";
  // Thresholds below the round numbers: 9.97 is "10", not "10.0".
  if (r < 9.95) return absl::StrFormat("%.1f", r);
  if (r < 9999.5) return absl::StrFormat("%.0f", r);
  if (r < 9.95e6) return absl::StrFormat("%.1fk", r / 1e3);
  return absl::StrFormat("%.1fM", r / 1e6);
}

std::string FormatAge(absl::Duration age) {
  const int64_t s = std::max<int64_t>(0, absl::ToInt64Seconds(age));
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrCat(s / 60, "m");
  if (s < 86400) return absl::StrCat(s / 3600, "h");
  return absl::StrCat(s / 86400, "d");
}

std::vector<std::string> RenderTop(const TopView& view, size_t width, size_t height) {
  std::string title = absl::StrCat("taskq top  master ", Cell(view.master));
  if (view.updated != absl::InfinitePast()) {
    absl::StrAppend(&title, "  ", absl::FormatTime("%H:%M:%S", view.updated,
                                                   absl::LocalTimeZone()));
  }
  absl::StrAppend(&title, "  queues ", view.queues.size());
  if (view.workers.has_value()) absl::StrAppend(&title, "  workers ", view.workers->size());
  absl::StrAppend(&title, "  sort: ", SortKeyName(view.sort));
  std::string footer = view.status;
  if (footer.empty() && view.interactive) {
    footer = "q quit  s next sort  n r l d p c sort by queue/ready/leased/dead/put/done";
  }

  const std::vector<std::string> queues = QueueTable(view, width);
  std::vector<std::string> workers;
  if (view.workers.has_value()) workers = WorkerTable(*view.workers, view.now, width);

  // Title, a blank line, the queues, a blank line and the workers, and the
  // footer on the last line. With a bounded height the queues come first;
  // the workers get what is left.
  std::vector<std::string> lines = {title, ""};
  if (height == 0) {
    lines.insert(lines.end(), queues.begin(), queues.end());
    if (view.workers.has_value()) {
      lines.push_back("");
      lines.insert(lines.end(), workers.begin(), workers.end());
    }
    if (!footer.empty()) lines.push_back(footer);
  } else {
    const size_t fixed = lines.size() + 1;  // + the footer
    const size_t room = height > fixed ? height - fixed : 0;
    // The workers get the lines the queues leave, but at least their
    // heading and two rows (or a "more" line) while there is room.
    size_t worker_room = 0;
    if (!workers.empty()) {
      const size_t least = std::min<size_t>(workers.size(), 3);
      worker_room = room > queues.size() + 1 ? room - queues.size() - 1 : 0;
      worker_room = std::max(worker_room, least);
      if (room < worker_room + 1 + 2) worker_room = 0;  // queues first
    }
    AppendTable(queues, "queues", worker_room > 0 ? room - worker_room - 1 : room, &lines);
    if (worker_room > 0) {
      lines.push_back("");
      AppendTable(workers, "workers", worker_room, &lines);
    }
    while (lines.size() + 1 < height) lines.push_back("");
    lines.push_back(footer);
    lines.resize(std::min(lines.size(), height));
  }
  if (width > 0) {
    for (std::string& line : lines) line = Fit(line, width);
  }
  return lines;
}

}  // namespace taskq::cli
