// InspectWal: reads SQLite's write-ahead log file (the store's
// taskq.db-wal) the way SQLite's recovery does, without SQLite and without
// changing it, and says what recovery would keep and what it would drop —
// so that the master can tell a torn tail (a crash cut the last write
// short) from damage in the middle (which SQLite would silently treat as a
// tail and drop every transaction after it).
//
// Format (https://www.sqlite.org/fileformat2.html, "The Write-Ahead Log"):
// a 32-byte header (magic 0x377f0682/0x377f0683, whose low bit says whether
// checksums read the content as big- or little-endian words; version; page
// size; checkpoint number; salt-1, salt-2; a checksum of the first 24
// bytes), then frames of a 24-byte header (page number; for the last frame
// of a transaction, its "commit" frame, the database size in pages, else
// 0; the header's two salts; a checksum over the header's first 8 bytes and
// the page, carried on from the previous frame) and one page. Recovery
// keeps frames from the start while each is valid (salts match, checksum
// matches) and ends at the last valid commit frame: everything after it is
// dropped.
//
// Thread-safety: a plain function of a file's contents.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace taskq {

struct WalReport {
  uint64_t file_bytes = 0;
  uint32_t page_size = 0;       // 0 if unknown (no usable header)
  bool header_valid = false;    // SQLite ignores the whole file otherwise
  // What recovery keeps: whole transactions from the start.
  uint64_t kept_frames = 0;
  uint64_t kept_transactions = 0;
  uint64_t kept_bytes = 0;      // header + kept frames (0 when nothing is kept)
  // What recovery drops: everything from kept_bytes to the end of the file.
  uint64_t dropped_bytes = 0;
  // Frames (or frame headers at the very end) after kept_bytes that carry
  // this log's salts, i.e. were written since the log was last restarted
  // (older frames a restart left behind carry other salts and mean
  // nothing), and how many of them end a transaction.
  uint64_t dropped_frames = 0;
  uint64_t dropped_commits = 0;
  // The last of those commit frames is the last frame of the file (maybe
  // cut short).
  bool dropped_commit_is_last = false;

  // True when what is dropped is at most the one transaction a crash was
  // writing at the end: nothing committed follows the damage.
  bool TornTail() const {
    return dropped_commits == 0 || (dropped_commits == 1 && dropped_commit_is_last);
  }
};

// Reads `path` (no file, or an empty one, is a clean log). `db_page_size`
// (from the database file; 0 if unknown) stands in for a damaged header's
// page size.
absl::StatusOr<WalReport> InspectWal(const std::string& path, uint32_t db_page_size = 0);

// Decides, before SQLite opens the database, what to do with its log:
//  - nothing dropped: nothing to do (returns a report with dropped_bytes 0);
//  - a torn tail: cuts the log back to what SQLite would recover anyway and
//    returns the report, for TornTailMessage once the policy is known;
//  - damage before the end: DATA_LOSS naming the log, what would be lost
//    and --recover-truncate; with `recover_truncate`, copies the log to
//    <path>.damaged-<UTC time> (0600), cuts it back, logs an ERROR saying
//    what was lost, and returns OK.
// Nothing is changed before the decision.
absl::StatusOr<WalReport> PrepareWal(const std::string& path, uint32_t db_page_size,
                                     bool recover_truncate);

// The warning for a torn tail that `report` describes; `fsync_policy` is
// the policy the store recorded for the run that wrote it ("" if unknown).
std::string TornTailMessage(const WalReport& report, const std::string& path,
                            const std::string& fsync_policy);

}  // namespace taskq
