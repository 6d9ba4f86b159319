#include "master/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "master/wal_check.h"

namespace taskq {

namespace {

// SQLite's own log (a damaged WAL, I/O errors) goes to the master's log.
void SqliteLog(void*, int code, const char* message) {
  if (code == SQLITE_NOTICE_RECOVER_WAL) {
    LogInfo("store: sqlite: %s", message);  // "recovered N frames from WAL file F"
    return;
  }
  // Busy/schema notices and "automatic index" warnings are not worth a line.
  if ((code & 0xff) == SQLITE_NOTICE || (code & 0xff) == SQLITE_SCHEMA) return;
  LogWarning("store: sqlite (%d): %s", code, message);
}

void InstallSqliteLog() {
  static std::once_flag once;
  std::call_once(once, [] { sqlite3_config(SQLITE_CONFIG_LOG, SqliteLog, nullptr); });
}

absl::Status SqliteError(sqlite3* db, int rc, absl::string_view what, const std::string& dir) {
  const int primary = rc & 0xff;
  const std::string detail = absl::StrCat(db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  if (primary == SQLITE_FULL) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "disk full: ", what, " failed in --data-dir ", dir, " (", detail,
        "); the master is read-only until space is freed: reads work, writes are refused"));
  }
  return absl::UnavailableError(absl::StrCat("store I/O error: ", what, " failed in --data-dir ",
                                             dir, " (", detail,
                                             "); writes are refused until it recovers, reads "
                                             "still work"));
}

// What the replies of changes that were made but could not be stored yet
// say: the store keeps them and retries, so they may still be stored.
absl::Status OutcomeUnknown(const absl::Status& why) {
  return absl::UnavailableError(absl::StrCat(
      "outcome unknown: the change was made but storing it failed (", why.message(),
      "); the master keeps it and retries, so it may still be stored (or be lost if the master "
      "stops first). If you retry, use a dedup key so that it is not stored twice"));
}

}  // namespace

// --- batches and statements ---------------------------------------------------------

class SqliteStore::Batch final : public StoreBatch {
 public:
  enum class Kind { kAddTask, kUpdateTask, kDeleteTask, kPutRecord, kDeleteRecord };
  struct Op {
    Kind kind;
    uint64_t id;
    std::string key;    // records
    std::string value;  // task record or record value
    std::string payload;
  };
  void AddTask(uint64_t id, std::string record, absl::string_view payload) override {
    ops.push_back(Op{Kind::kAddTask, id, {}, std::move(record), std::string(payload)});
  }
  void UpdateTask(uint64_t id, std::string record) override {
    ops.push_back(Op{Kind::kUpdateTask, id, {}, std::move(record), {}});
  }
  void DeleteTask(uint64_t id) override { ops.push_back(Op{Kind::kDeleteTask, id, {}, {}, {}}); }
  void PutRecord(absl::string_view key, std::string value) override {
    ops.push_back(Op{Kind::kPutRecord, 0, std::string(key), std::move(value), {}});
  }
  void DeleteRecord(absl::string_view key) override {
    ops.push_back(Op{Kind::kDeleteRecord, 0, std::string(key), {}, {}});
  }
  bool empty() const override { return ops.empty(); }

  std::vector<Op> ops;
};

struct SqliteStore::Statements {
  sqlite3_stmt* begin = nullptr;
  sqlite3_stmt* commit = nullptr;
  sqlite3_stmt* rollback = nullptr;
  sqlite3_stmt* add_task = nullptr;
  sqlite3_stmt* add_payload = nullptr;
  sqlite3_stmt* update_task = nullptr;
  sqlite3_stmt* put_record = nullptr;
  sqlite3_stmt* delete_record = nullptr;
  // kDeleteBatch ids a statement: a finished task's two deletes are the most
  // frequent writes, and one statement per row cost more than the rows.
  sqlite3_stmt* delete_tasks = nullptr;
  sqlite3_stmt* delete_payloads = nullptr;

  ~Statements() {
    for (sqlite3_stmt* s : {begin, commit, rollback, add_task, add_payload, update_task,
                            put_record, delete_record, delete_tasks, delete_payloads}) {
      sqlite3_finalize(s);
    }
  }
};

namespace {

int Exec(sqlite3* db, const char* sql) { return sqlite3_exec(db, sql, nullptr, nullptr, nullptr); }

// The first column of the first row of `sql` as an integer (-1 if none).
int64_t PragmaInt(sqlite3* db, const char* sql) {
  sqlite3_stmt* st = nullptr;
  int64_t value = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
    value = sqlite3_column_int64(st, 0);
  }
  sqlite3_finalize(st);
  return value;
}

// Runs one prepared statement to completion and resets it.
int Step(sqlite3_stmt* st) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

// Rows deleted by one statement (DELETE ... WHERE id IN (?1, ..., ?N)).
constexpr int kDeleteBatch = 64;

std::string DeleteBatchSql(const char* table) {
  std::string sql = absl::StrCat("DELETE FROM ", table, " WHERE id IN (");
  for (int i = 1; i <= kDeleteBatch; ++i) absl::StrAppend(&sql, i > 1 ? ", " : "", "?", i);
  return sql + ")";
}

int BindId(sqlite3_stmt* st, uint64_t id) {
  return sqlite3_bind_int64(st, 1, static_cast<sqlite3_int64>(id));
}

int BindBlob(sqlite3_stmt* st, int index, const std::string& value) {
  // SQLITE_STATIC: the batch outlives the statement's step.
  return sqlite3_bind_blob64(st, index, value.data(), value.size(), SQLITE_STATIC);
}

absl::Status OpenConnection(const std::string& path, bool writer, sqlite3** out) {
  const int flags = writer ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
                           : SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX;
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status s = absl::FailedPreconditionError(
        absl::StrCat("cannot open the store ", path, ": ", db ? sqlite3_errmsg(db) : "no memory"));
    sqlite3_close(db);
    return s;
  }
  sqlite3_extended_result_codes(db, 1);
  *out = db;
  return absl::OkStatus();
}

}  // namespace

// --- open and close ---------------------------------------------------------------------

namespace {

// The record holding the fsync policy of the last run (written when it
// changes), so that a torn WAL tail can be reported for what it was.
constexpr char kFsyncKey[] = "sfsync";

// Creates a missing data dir 0700 (its parents as usual); warns about an
// existing one that others may read (it is not ours to change).
absl::Status PrepareDataDir(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if ((st.st_mode & 077) != 0) {
      LogWarning("store: --data-dir %s is open to its group or others (mode %o): they may read "
                 "every queued payload; chmod 700 it",
                 dir, st.st_mode & 0777);
    }
    return absl::OkStatus();
  }
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(dir).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (ec || (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) ||
      ::chmod(dir.c_str(), 0700) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create --data-dir ", dir, ": ", ec ? ec.message() : strerror(errno)));
  }
  return absl::OkStatus();
}

// Creates the database file 0600 if missing (SQLite gives its WAL and
// index files the database file's mode). True if the database is new
// (empty: also one whose creation a crash interrupted).
absl::StatusOr<bool> CreateDatabaseFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno != EEXIST) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create ", path, ": ", strerror(errno)));
    }
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && st.st_size == 0;
  }
  const bool ok = ::fchmod(fd, 0600) == 0;  // whatever the umask
  ::close(fd);
  if (!ok) return absl::FailedPreconditionError(absl::StrCat("cannot chmod ", path));
  return true;
}

// The page size in the database file's header; SQLite's default (which a
// taskq store keeps) while the file has none yet.
uint32_t DatabasePageSize(const std::string& path) {
  constexpr uint32_t kDefault = 4096;
  unsigned char h[18] = {};
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return kDefault;
  const bool read = ::pread(fd, h, sizeof h, 0) == static_cast<ssize_t>(sizeof h);
  ::close(fd);
  if (!read) return kDefault;
  const uint32_t size = (uint32_t{h[16]} << 8) | h[17];
  return size == 1 ? 65536 : size;
}

// One text/blob column of the first row of `sql` ("" if none).
std::string QueryString(sqlite3* db, const char* sql) {
  sqlite3_stmt* st = nullptr;
  std::string out;
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
    auto* p = static_cast<const char*>(sqlite3_column_blob(st, 0));
    out.assign(p ? p : "", static_cast<size_t>(sqlite3_column_bytes(st, 0)));
  }
  sqlite3_finalize(st);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(SqliteStoreOptions options) {
  InstallSqliteLog();
  if (absl::Status s = PrepareDataDir(options.dir); !s.ok()) return s;
  const std::string path = options.dir + "/taskq.db";
  const std::string wal = path + "-wal";

  // One master per data dir: SQLite would let two share the file, and
  // then each would hand out the other's tasks.
  const std::string lock_path = options.dir + "/LOCK";
  int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open ", lock_path, ": ", strerror(errno)));
  }
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(lock_fd);
    return absl::FailedPreconditionError(
        absl::StrCat("--data-dir ", options.dir, " is in use by another master"));
  }
  auto fail_early = [&](absl::Status s) {
    ::close(lock_fd);
    return s;
  };
  absl::StatusOr<bool> fresh = CreateDatabaseFile(path);
  if (!fresh.ok()) return fail_early(fresh.status());
  // What SQLite's recovery would drop from the WAL, decided before SQLite
  // touches it.
  absl::StatusOr<WalReport> wal_report =
      PrepareWal(wal, DatabasePageSize(path), options.recover_truncate);
  if (!wal_report.ok()) return fail_early(wal_report.status());

  sqlite3* writer = nullptr;
  if (auto s = OpenConnection(path, /*writer=*/true, &writer); !s.ok()) return fail_early(s);
  auto fail = [&](absl::string_view what) {
    absl::Status s = absl::FailedPreconditionError(
        absl::StrCat("cannot open the store in --data-dir ", options.dir, ": ", what, ": ",
                     sqlite3_errmsg(writer)));
    sqlite3_close(writer);
    ::close(lock_fd);
    return s;
  };
  // Nothing below writes to an existing store: on a full disk it still
  // opens, read-only until space is freed.
  //
  // Free pages go back to the file system (MaybeVacuum). This only takes
  // effect while the database is new, so it comes before anything else.
  if (*fresh && Exec(writer, "PRAGMA auto_vacuum=INCREMENTAL") != SQLITE_OK) {
    return fail("auto_vacuum");
  }
  if (Exec(writer, "PRAGMA journal_mode=WAL") != SQLITE_OK) return fail("WAL mode");
  // always: every commit syncs the WAL. interval: commits do not, but
  // checkpoints sync the WAL before and the database after copying, and
  // the committer syncs the WAL every fsync_interval. never: nothing does.
  const char* synchronous = options.fsync == FsyncPolicy::kAlways     ? "PRAGMA synchronous=FULL"
                            : options.fsync == FsyncPolicy::kInterval ? "PRAGMA synchronous=NORMAL"
                                                                      : "PRAGMA synchronous=OFF";
  if (Exec(writer, synchronous) != SQLITE_OK) return fail("synchronous");
  // A checkpointed WAL is cut back, so its tail is always the newest writes.
  if (Exec(writer, "PRAGMA journal_size_limit=0") != SQLITE_OK) return fail("journal size");
  // The committer checkpoints (MaybeCheckpoint), when the disk has room.
  if (Exec(writer, "PRAGMA wal_autocheckpoint=0") != SQLITE_OK) return fail("autocheckpoint");
  if (PragmaInt(writer, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                        "('tasks', 'payloads', 'records')") != 3 &&
      Exec(writer,
           "CREATE TABLE IF NOT EXISTS tasks(id INTEGER PRIMARY KEY, record BLOB NOT NULL, "
           "payload BLOB);"
           "CREATE TABLE IF NOT EXISTS payloads(id INTEGER PRIMARY KEY, data BLOB NOT NULL);"
           "CREATE TABLE IF NOT EXISTS records(key BLOB PRIMARY KEY, value BLOB NOT NULL) "
           "WITHOUT ROWID;") != SQLITE_OK) {
    return fail("schema");
  }
  std::string stored_fsync =
      QueryString(writer, absl::StrCat("SELECT value FROM records WHERE key = CAST('", kFsyncKey,
                                       "' AS BLOB)")
                              .c_str());
  if (wal_report->dropped_bytes > 0) {
    std::string message = TornTailMessage(*wal_report, wal, stored_fsync);
    if (wal_report->dropped_frames > 0) {
      LogWarning("%s", message);
    } else {
      LogInfo("%s", message);
    }
  }

  auto st = std::make_unique<Statements>();
  struct {
    sqlite3_stmt** out;
    const char* sql;
  } prepared[] = {
      {&st->begin, "BEGIN IMMEDIATE"},
      {&st->commit, "COMMIT"},
      {&st->rollback, "ROLLBACK"},
      {&st->add_task, "INSERT OR REPLACE INTO tasks(id, record, payload) VALUES(?1, ?2, ?3)"},
      {&st->add_payload, "INSERT OR REPLACE INTO payloads(id, data) VALUES(?1, ?2)"},
      {&st->update_task, "UPDATE tasks SET record = ?2 WHERE id = ?1"},
      {&st->put_record, "INSERT OR REPLACE INTO records(key, value) VALUES(?1, ?2)"},
      {&st->delete_record, "DELETE FROM records WHERE key = ?1"},
  };
  const std::string delete_tasks_sql = DeleteBatchSql("tasks");
  const std::string delete_payloads_sql = DeleteBatchSql("payloads");
  for (auto [out, sql] : {std::pair{&st->delete_tasks, &delete_tasks_sql},
                          std::pair{&st->delete_payloads, &delete_payloads_sql}}) {
    if (sqlite3_prepare_v3(writer, sql->c_str(), -1, SQLITE_PREPARE_PERSISTENT, out, nullptr) !=
        SQLITE_OK) {
      st.reset();
      return fail("delete batch");
    }
  }
  for (auto& p : prepared) {
    if (sqlite3_prepare_v3(writer, p.sql, -1, SQLITE_PREPARE_PERSISTENT, p.out, nullptr) !=
        SQLITE_OK) {
      st.reset();
      return fail(p.sql);
    }
  }
  sqlite3* reader = nullptr;
  if (auto s = OpenConnection(path, /*writer=*/false, &reader); !s.ok()) {
    st.reset();
    sqlite3_close(writer);
    ::close(lock_fd);
    return s;
  }
  return std::unique_ptr<SqliteStore>(new SqliteStore(std::move(options), lock_fd, writer, reader,
                                                      std::move(st), std::move(stored_fsync)));
}

SqliteStore::SqliteStore(SqliteStoreOptions options, int lock_fd, sqlite3* writer,
                         sqlite3* reader, std::unique_ptr<Statements> statements,
                         std::string stored_fsync)
    : options_(std::move(options)),
      path_(options_.dir + "/taskq.db"),
      lock_fd_(lock_fd),
      writer_(writer),
      statements_(std::move(statements)),
      reader_(reader) {
  wal_frame_bytes_ = PragmaInt(writer_, "PRAGMA page_size") + 24;
  sqlite3_wal_hook(writer_, &SqliteStore::OnWalCommit, this);
  {
    MutexLock lock(&mu_);
    CheckFreeSpace();  // Health() is right from the start
  }
  // Remembered for the next start's report of a torn WAL tail.
  const std::string fsync(FsyncPolicyName(options_.fsync));
  if (stored_fsync != fsync) {
    auto batch = NewBatch();
    batch->PutRecord(kFsyncKey, fsync);
    Write(std::move(batch));
  }
  committer_ = std::thread([this] { CommitLoop(); });
}

SqliteStore::~SqliteStore() {
  Close();
  // Statements belong to the writer: finalized before it closes.
  statements_.reset();
  sqlite3_close(writer_);
  {
    MutexLock lock(&read_mu_);
    sqlite3_close(reader_);
  }
  ::close(lock_fd_);  // releases the data dir for the next master
}

void SqliteStore::Close() {
  {
    MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.SignalAll();
  if (committer_.joinable()) committer_.join();
}

// --- writing ------------------------------------------------------------------------------

std::unique_ptr<StoreBatch> SqliteStore::NewBatch() { return std::make_unique<Batch>(); }

uint64_t SqliteStore::Write(std::unique_ptr<StoreBatch> batch) {
  MutexLock lock(&mu_);
  const uint64_t seq = ++last_written_;
  queued_.push_back(Queued{seq, std::move(batch)});
  cv_.Signal();
  return seq;
}

uint64_t SqliteStore::LastWritten() {
  MutexLock lock(&mu_);
  return last_written_;
}

absl::Status SqliteStore::Health() {
  MutexLock lock(&mu_);
  return failure_.ok() ? low_disk_ : failure_;
}

void SqliteStore::WhenDurable(uint64_t seq, DurableCallback done) {
  absl::Status status;
  {
    MutexLock lock(&mu_);
    if (seq > last_committed_) {
      if (failure_.ok()) {
        waiters_.push_back(Waiter{seq, std::move(done)});
        cv_.Signal();
        return;
      }
      status = OutcomeUnknown(failure_);  // kept for the retry: not stored yet
    }
  }
  done(status);
}

absl::Status SqliteStore::Commit(const std::vector<Queued>& group, bool durable) {
  Statements& st = *statements_;
  // One transaction needs only each row's final state. Tasks live for a few
  // milliseconds under load, so a task put, leased and completed (or a
  // result added and taken) within one group often needs no write at all;
  // a queue's record, rewritten by every step, is written once.
  struct TaskFate {
    const Batch::Op* add = nullptr;   // created in this group (has the payload)
    const Batch::Op* last = nullptr;  // its final op here
  };
  absl::flat_hash_map<uint64_t, TaskFate> tasks;
  absl::flat_hash_map<absl::string_view, const Batch::Op*> last_record;
  for (const Queued& q : group) {
    for (const Batch::Op& op : static_cast<const Batch&>(*q.batch).ops) {
      if (op.kind == Batch::Kind::kPutRecord || op.kind == Batch::Kind::kDeleteRecord) {
        last_record[op.key] = &op;
        continue;
      }
      TaskFate& fate = tasks[op.id];
      if (op.kind == Batch::Kind::kAddTask) fate.add = &op;
      fate.last = &op;
    }
  }
  // Rows whose last op here deletes them: deleted together at the end (each
  // id has one final op in the group, so the order between rows is free).
  std::vector<uint64_t> deleted;
  int rc = Step(st.begin);
  for (size_t i = 0; rc == SQLITE_OK && i < group.size(); ++i) {
    for (const Batch::Op& op : static_cast<const Batch&>(*group[i].batch).ops) {
      switch (op.kind) {
        case Batch::Kind::kAddTask:
        case Batch::Kind::kUpdateTask:
        case Batch::Kind::kDeleteTask: {
          const TaskFate& fate = tasks[op.id];
          if (fate.last != &op) break;  // a later op of this group decides
          if (op.kind == Batch::Kind::kDeleteTask) {
            if (fate.add != nullptr) break;  // born and gone within the group
            deleted.push_back(op.id);
          } else if (fate.add != nullptr) {
            // New in this group: its payload, with its latest record.
            const std::string& payload = fate.add->payload;
            const bool inline_payload = payload.size() <= kInlinePayload;
            BindId(st.add_task, op.id);
            BindBlob(st.add_task, 2, op.value);
            if (inline_payload) BindBlob(st.add_task, 3, payload);  // else NULL
            rc = Step(st.add_task);
            if (rc == SQLITE_OK && !inline_payload) {
              BindId(st.add_payload, op.id);
              BindBlob(st.add_payload, 2, payload);
              rc = Step(st.add_payload);
            }
          } else {
            BindId(st.update_task, op.id);
            BindBlob(st.update_task, 2, op.value);
            rc = Step(st.update_task);
          }
          break;
        }
        case Batch::Kind::kPutRecord:
          if (last_record[op.key] != &op) break;
          BindBlob(st.put_record, 1, op.key);
          BindBlob(st.put_record, 2, op.value);
          rc = Step(st.put_record);
          break;
        case Batch::Kind::kDeleteRecord:
          if (last_record[op.key] != &op) break;
          BindBlob(st.delete_record, 1, op.key);
          rc = Step(st.delete_record);
          break;
      }
      if (rc != SQLITE_OK) break;
    }
  }
  for (size_t i = 0; rc == SQLITE_OK && i < deleted.size(); i += kDeleteBatch) {
    for (sqlite3_stmt* batch : {st.delete_tasks, st.delete_payloads}) {
      // A short last batch repeats its last id in the unused places.
      for (int k = 0; k < kDeleteBatch; ++k) {
        const uint64_t id = deleted[std::min(i + k, deleted.size() - 1)];
        sqlite3_bind_int64(batch, k + 1, static_cast<sqlite3_int64>(id));
      }
      rc = Step(batch);
      if (rc != SQLITE_OK) break;
    }
  }
  absl::Status hook;
  if (rc == SQLITE_OK && durable && options_.before_sync) hook = options_.before_sync();
  if (rc == SQLITE_OK && hook.ok()) rc = Step(st.commit);
  if (rc == SQLITE_OK && hook.ok()) return absl::OkStatus();
  absl::Status error = hook.ok() ? SqliteError(writer_, rc, "commit", options_.dir) : hook;
  if (!sqlite3_get_autocommit(writer_)) Step(st.rollback);
  return error;
}

uint64_t SqliteStore::FreeBytes() const {
  struct statvfs fs;
  if (::statvfs(options_.dir.c_str(), &fs) != 0) return UINT64_MAX;  // unknown: do not refuse
  return static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
}

bool SqliteStore::CheckFreeSpace() {
  const uint64_t free_bytes = FreeBytes();
  const bool was_low = !low_disk_.ok();
  // Refuse below the reserve; take writes again only with some room to
  // spare, so that a disk hovering at the limit does not flap.
  const uint64_t limit =
      was_low ? options_.min_free_bytes + options_.min_free_bytes / 4 : options_.min_free_bytes;
  if (free_bytes < limit) {
    if (!was_low) {
      low_disk_ = absl::ResourceExhaustedError(absl::StrCat(
          "disk full: ", free_bytes >> 20, " MB free in --data-dir ", options_.dir,
          ", below the master's reserve of ", options_.min_free_bytes >> 20,
          " MB (--min-free-disk-mb); the master is read-only until space is freed: reads "
          "work, writes are refused"));
      LogError("store: %s", low_disk_.message());
    }
    return false;
  }
  if (!was_low) return false;
  low_disk_ = absl::OkStatus();
  LogInfo("store: %d MB free in --data-dir again: taking writes", free_bytes >> 20);
  return failure_.ok();
}

void SqliteStore::SyncWalFile() const {
  // The WAL holds every commit since the last checkpoint (which synced the
  // database file itself); one fdatasync covers them all.
  int fd = ::open((path_ + "-wal").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  const absl::Time start = absl::Now();
  const int rc = ::fdatasync(fd);
  const int err = errno;
  metrics_.fsync_seconds.Observe(absl::ToDoubleSeconds(absl::Now() - start));
  if (rc != 0) LogWarning("store: fdatasync of the WAL failed: %s", strerror(err));
  ::close(fd);
}

int SqliteStore::OnWalCommit(void* store, sqlite3*, const char*, int frames) {
  auto* self = static_cast<SqliteStore*>(store);  // on the committer's thread
  // `frames` counts the whole WAL; it starts over after a checkpoint.
  const int added = frames >= self->wal_frames_ ? frames - self->wal_frames_ : frames;
  self->metrics_.wal_bytes_written.Add(static_cast<uint64_t>(added) *
                                       static_cast<uint64_t>(self->wal_frame_bytes_));
  self->wal_frames_ = frames;
  return SQLITE_OK;
}

void SqliteStore::MaybeCheckpoint() {
  constexpr int kCheckpointFrames = 1000;  // SQLite's own automatic threshold
  if (wal_frames_ < kCheckpointFrames) return;
  // Checkpointing writes the WAL's pages into the database file, which
  // grows to the size of the newest database image before the WAL can be
  // cut back. That may dip into the reserve (the WAL's space comes back
  // right after), but it must fit in what is free: a checkpoint that runs
  // out of space half way leaves the disk full, the database file grown
  // and the WAL still uncut — after a crash on a full disk, replaying a
  // long WAL that way filled the space freed for it again. The WAL keeps
  // every change safe meanwhile; it just grows.
  constexpr uint64_t kMargin = 1 << 20;
  const int64_t image = PragmaInt(writer_, "PRAGMA page_count") *
                        PragmaInt(writer_, "PRAGMA page_size");
  std::error_code ec;
  const auto file = static_cast<int64_t>(std::filesystem::file_size(path_, ec));
  const uint64_t growth = !ec && image > file ? static_cast<uint64_t>(image - file) : 0;
  const uint64_t free_bytes = FreeBytes();
  if (growth > 0 && free_bytes < growth + kMargin) {
    if (!checkpoint_deferred_) {
      LogWarning("store: not checkpointing the write-ahead log (%d frames) for now: the "
                 "database file must grow by %d MB for it and --data-dir %s has %d MB free; it "
                 "waits until that much is free, and the write-ahead log grows meanwhile",
                 wal_frames_, (growth >> 20) + 1, options_.dir, free_bytes >> 20);
      checkpoint_deferred_ = true;
    }
    return;
  }
  if (checkpoint_deferred_) {
    LogInfo("store: checkpointing the write-ahead log again (%d frames)", wal_frames_);
    checkpoint_deferred_ = false;
  }
  int log_frames = 0, copied = 0;
  const int rc =
      sqlite3_wal_checkpoint_v2(writer_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &copied);
  if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
    LogWarning("store: checkpoint of the write-ahead log failed: %s", sqlite3_errmsg(writer_));
  }
  // Complete: the next commit starts the WAL over (and cuts it back).
  if (rc == SQLITE_OK && copied == log_frames) wal_frames_ = 0;
}

void SqliteStore::MaybeVacuum() {
  const int64_t free_pages = PragmaInt(writer_, "PRAGMA freelist_count");
  const int64_t pages = PragmaInt(writer_, "PRAGMA page_count");
  // Worth it only when a good part of the file is free: a steady load
  // reuses its free pages by itself.
  if (free_pages < 1024 || free_pages * 4 < pages) return;
  // A few megabytes per round, so that commits are not held up for long.
  if (Exec(writer_, "PRAGMA incremental_vacuum(2048)") != SQLITE_OK) {
    LogWarning("store: giving free space back failed: %s", sqlite3_errmsg(writer_));
  }
}

void SqliteStore::Run(std::vector<DurableCallback> calls, const absl::Status& status) {
  for (auto& c : calls) c(status);
}

void SqliteStore::CommitLoop() {
  const bool always = options_.fsync == FsyncPolicy::kAlways;
  const bool interval = options_.fsync == FsyncPolicy::kInterval;
  absl::Time next_sync = absl::Now() + options_.fsync_interval;
  absl::Time next_retry = absl::InfinitePast();
  absl::Time next_disk_check = absl::InfinitePast();
  absl::Time next_vacuum = absl::Now() + options_.vacuum_interval;
  bool unsynced = false;  // interval: commits since the last WAL sync
  mu_.Lock();
  for (;;) {
    absl::Time now = absl::Now();
    bool healthy_again = false;
    if (now >= next_disk_check) {
      healthy_again = CheckFreeSpace();
      next_disk_check = now + options_.disk_check_interval;
    }
    const bool may_commit = !queued_.empty() && (failure_.ok() || now >= next_retry);
    if (may_commit) {
      // Every batch queued so far, in one transaction.
      std::vector<Queued> group;
      group.reserve(queued_.size());
      for (Queued& q : queued_) group.push_back(std::move(q));
      queued_.clear();
      const bool retry = !failure_.ok();
      mu_.Unlock();
      const absl::Time start = absl::Now();
      absl::Status s = Commit(group, always);
      metrics_.commit_seconds.Observe(absl::ToDoubleSeconds(absl::Now() - start));
      metrics_.group_batches.Observe(static_cast<double>(group.size()));
      mu_.Lock();
      if (!s.ok()) {
        // Back to the front, in order, for the retry; nothing is answered
        // OK, and nothing "refused" either: the retry may still store it.
        for (auto it = group.rbegin(); it != group.rend(); ++it) queued_.push_front(std::move(*it));
        if (failure_.ok()) LogError("store: %s", s.message());
        failure_ = s;
        next_retry = absl::Now() + options_.retry_interval;
        std::vector<DurableCallback> failed;
        for (Waiter& w : waiters_) failed.push_back(std::move(w.done));
        waiters_.clear();
        mu_.Unlock();
        Run(std::move(failed), OutcomeUnknown(s));
        mu_.Lock();
        continue;
      }
      last_committed_ = group.back().seq;
      unsynced = true;
      if (retry) {
        failure_ = absl::OkStatus();
        LogInfo("store: writable again; the writes kept meanwhile are stored");
        healthy_again = low_disk_.ok();
      }
      std::vector<DurableCallback> ready;
      while (!waiters_.empty() && waiters_.front().seq <= last_committed_) {
        ready.push_back(std::move(waiters_.front().done));
        waiters_.pop_front();
      }
      mu_.Unlock();
      Run(std::move(ready), absl::OkStatus());
      group.clear();  // frees the batches outside the lock
      MaybeCheckpoint();
      mu_.Lock();
    }
    if (interval && unsynced && absl::Now() >= next_sync) {
      mu_.Unlock();
      SyncWalFile();
      mu_.Lock();
      unsynced = false;
      next_sync = absl::Now() + options_.fsync_interval;
    }
    if (healthy_again && options_.on_healthy) {
      mu_.Unlock();
      options_.on_healthy();
      mu_.Lock();
    }
    if (may_commit) continue;  // more may have queued meanwhile
    if (stopping_ && (queued_.empty() || !failure_.ok())) break;
    if (failure_.ok() && absl::Now() >= next_vacuum) {
      // Not while below the reserve: moving pages writes to the WAL first.
      const bool room = low_disk_.ok();
      mu_.Unlock();
      if (room) MaybeVacuum();
      MaybeCheckpoint();  // also one put off for want of space
      mu_.Lock();
      next_vacuum = absl::Now() + options_.vacuum_interval;
      continue;
    }
    absl::Time wake = std::min(next_disk_check, next_vacuum);
    if (!failure_.ok() && !queued_.empty()) wake = std::min(wake, next_retry);
    if (interval && unsynced) wake = std::min(wake, next_sync);
    if (queued_.empty() || !failure_.ok()) cv_.WaitWithDeadline(&mu_, wake);
  }
  // Stopping: answer whoever still waits (everything committed was
  // answered already; what is left is not stored).
  std::vector<DurableCallback> rest;
  for (Waiter& w : waiters_) rest.push_back(std::move(w.done));
  waiters_.clear();
  absl::Status why = failure_.ok() ? absl::UnavailableError("master is shutting down") : failure_;
  if (!queued_.empty()) {
    LogError("store: stopping with %d writes not stored (they were never acknowledged)",
             queued_.size());
  }
  mu_.Unlock();
  if (interval && unsynced) SyncWalFile();
  Run(std::move(rest), why);
}

// --- reading ------------------------------------------------------------------------------

absl::StatusOr<std::optional<std::string>> SqliteStore::GetRecord(absl::string_view key) {
  std::optional<std::string> out;
  absl::Status s = ScanRecords(key, [&](absl::string_view k, absl::string_view v) {
    if (k == key) out = std::string(v);
    return false;
  });
  if (!s.ok()) return s;
  return out;
}

namespace {

// Runs `sql` on `db` (after bind(statement)) and calls row(statement,
// column 1) per row until it returns false.
template <typename Bind, typename Row>
absl::Status Query(sqlite3* db, const char* sql, const std::string& dir, const Bind& bind,
                   const Row& row) {
  sqlite3_stmt* st = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db, rc, "read", dir);
  bind(st);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    auto* v = static_cast<const char*>(sqlite3_column_blob(st, 1));
    absl::string_view value(v ? v : "", static_cast<size_t>(sqlite3_column_bytes(st, 1)));
    if (!row(st, value)) {
      rc = SQLITE_DONE;
      break;
    }
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? absl::OkStatus() : SqliteError(db, rc, "read", dir);
}

void NoBind(sqlite3_stmt*) {}

}  // namespace

absl::Status SqliteStore::ScanRecords(absl::string_view prefix, const RecordFn& fn) {
  MutexLock lock(&read_mu_);
  // Keys are blobs compared bytewise: every key >= prefix that starts with it.
  return Query(reader_, "SELECT key, value FROM records WHERE key >= ?1 ORDER BY key",
               options_.dir,
               [&](sqlite3_stmt* st) {
                 // A zero-length blob, not NULL, for the empty prefix.
                 sqlite3_bind_blob64(st, 1, prefix.empty() ? "" : prefix.data(), prefix.size(),
                                     SQLITE_STATIC);
               },
               [&](sqlite3_stmt* st, absl::string_view value) {
                 auto* k = static_cast<const char*>(sqlite3_column_blob(st, 0));
                 absl::string_view key(k ? k : "", static_cast<size_t>(sqlite3_column_bytes(st, 0)));
                 if (!absl::StartsWith(key, prefix)) return false;
                 return fn(key, value);
               });
}

namespace {

absl::string_view Blob(sqlite3_stmt* st, int column) {
  auto* p = static_cast<const char*>(sqlite3_column_blob(st, column));
  return absl::string_view(p ? p : "", static_cast<size_t>(sqlite3_column_bytes(st, column)));
}

}  // namespace

absl::Status SqliteStore::ScanTasks(const TaskFn& fn, bool payloads) {
  MutexLock lock(&read_mu_);
  const char* sql = payloads ? "SELECT t.id, t.record, COALESCE(t.payload, p.data) FROM tasks t "
                               "LEFT JOIN payloads p ON p.id = t.id ORDER BY t.id"
                             : "SELECT id, record FROM tasks ORDER BY id";
  return Query(reader_, sql, options_.dir, NoBind,
               [&](sqlite3_stmt* st, absl::string_view record) {
                 return fn(static_cast<uint64_t>(sqlite3_column_int64(st, 0)), record,
                           payloads ? Blob(st, 2) : absl::string_view());
               });
}

absl::Status SqliteStore::ReadTasks(const std::vector<uint64_t>& ids, const TaskFn& fn) {
  MutexLock lock(&read_mu_);
  // One statement for the whole list: the ids go in as a carray-free
  // "IN (...)" of bound parameters, in chunks SQLite accepts.
  constexpr size_t kChunk = 500;
  for (size_t start = 0; start < ids.size(); start += kChunk) {
    const size_t n = std::min(kChunk, ids.size() - start);
    std::string sql =
        "SELECT t.id, t.record, COALESCE(t.payload, p.data) FROM tasks t "
        "LEFT JOIN payloads p ON p.id = t.id WHERE t.id IN (?";
    for (size_t i = 1; i < n; ++i) sql += ",?";
    sql += ")";
    absl::Status s = Query(
        reader_, sql.c_str(), options_.dir,
        [&](sqlite3_stmt* st) {
          for (size_t i = 0; i < n; ++i) {
            sqlite3_bind_int64(st, static_cast<int>(i + 1),
                               static_cast<sqlite3_int64>(ids[start + i]));
          }
        },
        [&](sqlite3_stmt* st, absl::string_view record) {
          return fn(static_cast<uint64_t>(sqlite3_column_int64(st, 0)), record, Blob(st, 2));
        });
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

uint64_t SqliteStore::LastCommitted() {
  MutexLock lock(&mu_);
  return last_committed_;
}

uint64_t SqliteStore::DiskBytes() const {
  uint64_t total = 0;
  std::error_code ec;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    auto size = std::filesystem::file_size(path_ + suffix, ec);
    if (!ec) total += size;
  }
  return total;
}

}  // namespace taskq
