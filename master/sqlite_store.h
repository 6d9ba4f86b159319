// SqliteStore: the Store (master/store.h) on SQLite in WAL mode, one file
// <data-dir>/taskq.db. Why SQLite and not RocksDB or a log of our own:
// ARCHITECTURE.md ("Durable store") and bench/README.md ("store spike").
//
// Tables: tasks(id INTEGER PRIMARY KEY, record BLOB, payload BLOB) holds
// each task in one row, its payload inline when small (<= kInlinePayload
// bytes: one row to insert, update and delete); a larger payload lives in
// payloads(id INTEGER PRIMARY KEY, data BLOB), so that a state change,
// which rewrites the row, never rewrites it. records(key BLOB PRIMARY KEY,
// value BLOB) WITHOUT ROWID holds queues and counters.
//
// One committer thread owns the writing connection. Write only queues the
// batch; the committer takes every batch queued so far and applies them in
// one transaction (group commit), with synchronous=FULL for policy always
// (the commit is on disk when it returns), OFF otherwise (the commit has
// reached the OS), plus an fdatasync of the WAL every fsync_interval for
// policy interval. Replies waiting in WhenDurable are released after the
// commit. A failed commit is rolled back, its batches stay queued, and it
// is retried every retry_interval; meanwhile Health() refuses client
// writes, and the replies of the kept batches say UNAVAILABLE "outcome
// unknown" (the retry may still store them). A reserve of free disk space
// (min_free_bytes) makes Health() refuse client writes before SQLite ever
// meets a full disk.
//
// The committer checkpoints the WAL itself (SQLite's automatic checkpoint
// is off): a checkpoint copies the WAL's pages into the database file,
// which may have to grow by up to the WAL's size before the WAL is cut
// back, so it waits while that growth does not fit in the free space —
// else a master that just got a little space back after a crash on a full
// disk would fill it again replaying its WAL.
//
// The database is created with auto_vacuum=INCREMENTAL: when a drained
// backlog leaves many pages free, the idle committer gives them back to
// the file system a few megabytes at a time.
//
// Open reads the WAL before SQLite does (master/wal_check.h): SQLite
// recovers every whole transaction from its start and silently drops the
// rest at the first bad frame. A torn tail (only the transaction a crash
// was writing) is dropped and reported, with what the fsync policy of the
// run that wrote it says about whether it could have been acknowledged.
// Damage with committed transactions after it stops the open, unless
// recover_truncate accepts the loss (a copy of the damaged WAL is kept).
//
// Files: a data dir Open creates is 0700, the database and its WAL, index
// and lock files 0600; an existing dir open to others is only warned about.
//
// Thread-safety: every method is safe from any thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/metrics.h"
#include "common/sync.h"
#include "master/store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace taskq {

struct SqliteStoreOptions {
  std::string dir;  // created if missing
  FsyncPolicy fsync = FsyncPolicy::kAlways;
  absl::Duration fsync_interval = absl::Milliseconds(10);
  // How often a failed commit is tried again.
  absl::Duration retry_interval = absl::Seconds(1);
  // Client writes are refused (RESOURCE_EXHAUSTED) while the data dir's file
  // system has less free space than this; checked every disk_check_interval.
  uint64_t min_free_bytes = uint64_t{128} << 20;
  absl::Duration disk_check_interval = absl::Milliseconds(100);
  // How often the committer, when idle, gives free pages back to the file
  // system (after a large backlog drained: the database file shrinks).
  absl::Duration vacuum_interval = absl::Seconds(1);
  // Called (on the committer thread) when client writes are taken again
  // after a failure or a full disk.
  std::function<void()> on_healthy;
  // Start even though the WAL is damaged before its end, dropping the
  // committed transactions after the damage (--recover-truncate).
  bool recover_truncate = false;
  // Test hook, run by the committer before each commit that must reach the
  // disk (policy always); an error fails that commit as a failed sync would.
  std::function<absl::Status()> before_sync;
};

class SqliteStore final : public Store {
 public:
  // Opens (or creates) the store, recovering SQLite's WAL; says in the log
  // what a torn WAL tail lost. FAILED_PRECONDITION if another master holds
  // the directory or the file is not a taskq store; DATA_LOSS if the WAL is
  // damaged before its end (and not recover_truncate). Writes nothing
  // itself, so that a full disk still opens (read-only: Health() says so).
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(SqliteStoreOptions options);
  ~SqliteStore() override;

  std::unique_ptr<StoreBatch> NewBatch() override;
  uint64_t Write(std::unique_ptr<StoreBatch> batch) override;
  uint64_t LastWritten() override;
  void WhenDurable(uint64_t seq, DurableCallback done) override;
  absl::Status Health() override;
  absl::StatusOr<std::optional<std::string>> GetRecord(absl::string_view key) override;
  absl::Status ScanRecords(absl::string_view prefix, const RecordFn& fn) override;
  absl::Status ScanTasks(const TaskFn& fn, bool payloads) override;
  absl::Status ReadTasks(const std::vector<uint64_t>& ids, const TaskFn& fn) override;
  uint64_t LastCommitted() override;

  // Payloads up to this size are stored in the task's row.
  static constexpr size_t kInlinePayload = 1024;

  const std::string& dir() const { return options_.dir; }

  // What the committer measures (atomics, read at scrape time; docs/METRICS.md).
  struct Metrics {
    // Applying one group of batches, COMMIT (and with --fsync always the
    // sync inside it) included.
    metrics::Histogram commit_seconds{metrics::LatencySecondsBuckets()};
    // The committer's own fdatasync of the WAL (--fsync interval); with
    // --fsync always SQLite syncs inside COMMIT (commit_seconds).
    metrics::Histogram fsync_seconds{metrics::LatencySecondsBuckets()};
    // Batches (engine steps) per group commit.
    metrics::Histogram group_batches{metrics::ExponentialBuckets(1, 2, 14)};
    // Bytes appended to the WAL (frames x (page size + 24-byte header)).
    metrics::Counter wal_bytes_written;
  };
  const Metrics& metrics() const { return metrics_; }
  // Bytes of the store's files (database and WAL).
  uint64_t DiskBytes() const;
  // Commits what is queued, stops the committer, closes the connections.
  // Replies still waiting are answered (OK, or the store's error).
  void Close();

 private:
  class Batch;
  struct Queued {
    uint64_t seq;
    std::unique_ptr<StoreBatch> batch;
  };
  struct Waiter {
    uint64_t seq;
    DurableCallback done;
  };
  // Prepared statements of the writing connection.
  struct Statements;

  SqliteStore(SqliteStoreOptions options, int lock_fd, sqlite3* writer, sqlite3* reader,
              std::unique_ptr<Statements> statements, std::string stored_fsync);
  void CommitLoop();
  // Applies `group` in one transaction; the error if it was rolled back.
  absl::Status Commit(const std::vector<Queued>& group, bool durable);
  // Updates low_disk_; true if client writes were refused and now are not.
  bool CheckFreeSpace() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t FreeBytes() const;
  void SyncWalFile() const;
  // Returns free pages to the file system when many are free (committer).
  void MaybeVacuum();
  // Checkpoints the WAL once it is long, if the database file may grow by
  // what that needs (committer).
  void MaybeCheckpoint();
  // SQLite's WAL hook: frames in the WAL after each commit.
  static int OnWalCommit(void* store, sqlite3* db, const char* name, int frames);
  static void Run(std::vector<DurableCallback> calls, const absl::Status& status);

  const SqliteStoreOptions options_;
  const std::string path_;  // the database file
  const int lock_fd_;       // flock'ed: one master per data dir

  // Only the committer thread uses the writing connection.
  sqlite3* const writer_;
  std::unique_ptr<Statements> statements_;

  Mutex read_mu_;
  sqlite3* const reader_ ABSL_PT_GUARDED_BY(read_mu_);

  Mutex mu_;
  CondVar cv_;
  std::deque<Queued> queued_ ABSL_GUARDED_BY(mu_);  // written, not committed
  std::deque<Waiter> waiters_ ABSL_GUARDED_BY(mu_);  // by seq
  uint64_t last_written_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t last_committed_ ABSL_GUARDED_BY(mu_) = 0;
  // A commit failed: the queued batches wait for the retry.
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  // Free space is below min_free_bytes: client writes are refused.
  absl::Status low_disk_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Committer only: frames in the WAL (SQLite's hook), and whether the last
  // checkpoint was put off for want of space (logged once per episode).
  int wal_frames_ = 0;
  bool checkpoint_deferred_ = false;
  int64_t wal_frame_bytes_ = 0;  // page size + frame header (committer; set once)
  mutable Metrics metrics_;  // SyncWalFile is const
  std::thread committer_;
};

}  // namespace taskq
