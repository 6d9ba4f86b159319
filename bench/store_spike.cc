// taskq-store-spike: which store should the durable master use? Drives
// RocksDB, SQLite in WAL mode and a minimal append-only log of our own with
// the write pattern of the seed's square workload, under three fsync
// policies, and measures tasks/s, syncs per task, recovery of 1M queued
// tasks and the bytes left on disk after consumption. bench/README.md
// ("store spike") describes the workload and how to read the table.
//
// No gRPC and no engine: a producer thread, 4 worker threads and a result
// consumer stand in for the master's engine and hand task ids to each other
// in memory (Pipeline); only the writes go to the store, one atomic batch
// per step (put 100 tasks; lease up to 32; complete them; consume up to
// 1000 results).
//
// Thread-safety: a program, not a library. Store::Write is called from the
// workload's threads concurrently (and Write and Drain are thread-safe);
// the other Store methods run on the main thread while no workload thread
// is running. Each store's own threads (committer, syncer) share state
// with writers only under the store's mutex.
#include <dlfcn.h>
#include <fcntl.h>
#include <nmmintrin.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/version.h>
#include <rocksdb/write_batch.h>
#include <sqlite3.h>

#include "absl/container/flat_hash_map.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/sync.h"

// --- sync accounting ---------------------------------------------------------
// Every fsync/fdatasync in the process (RocksDB's WAL, SST and MANIFEST
// syncs, SQLite's WAL and database syncs, our log's) goes through these two
// definitions: the executable's symbols take precedence over libc's for the
// shared libraries, so one counter covers all three stores the same way.
namespace {
std::atomic<uint64_t> g_sync_calls{0};
std::atomic<uint64_t> g_sync_nanos{0};

int TimedSync(int (*real)(int), int fd) {
  const auto start = std::chrono::steady_clock::now();
  const int rc = real(fd);
  const auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::steady_clock::now() - start)
                         .count();
  g_sync_calls.fetch_add(1, std::memory_order_relaxed);
  g_sync_nanos.fetch_add(static_cast<uint64_t>(nanos), std::memory_order_relaxed);
  return rc;
}
}  // namespace

extern "C" int fdatasync(int fd) {
  using Fn = int (*)(int);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "fdatasync"));
  return TimedSync(real, fd);
}

extern "C" int fsync(int fd) {
  using Fn = int (*)(int);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "fsync"));
  return TimedSync(real, fd);
}

namespace taskq {
namespace {

// --- the workload's shape ----------------------------------------------------
constexpr size_t kPayloadBytes = 100;
constexpr size_t kTaskMetaBytes = 30;
constexpr size_t kTaskValueBytes = kTaskMetaBytes + kPayloadBytes;
constexpr size_t kLeaseBytes = 20;
constexpr size_t kResultBytes = 30;
constexpr size_t kProducerBatch = 100;
constexpr size_t kWorkerBatch = 32;
constexpr size_t kConsumerBatch = 1000;
constexpr uint64_t kWindow = 1000;  // put, result not yet consumed
constexpr int kWorkers = 4;
constexpr absl::Duration kSyncInterval = absl::Milliseconds(10);
// A store that leaves one writer waiting this long is broken, not slow.
constexpr absl::Duration kStallTimeout = absl::Seconds(60);

// The root of all data directories (a fresh mkdtemp); Die removes it. Set
// once in main before any other thread exists.
std::string g_root;

[[noreturn]] void Die(const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::fprintf(stderr, "taskq-store-spike: FATAL: ");
  std::vfprintf(stderr, format, args);
  std::fprintf(stderr, "\n");
  va_end(args);
  if (!g_root.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(g_root, ignored);
  }
  std::_Exit(1);
}

std::string Format(const char* format, ...) {
  char buf[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buf, sizeof buf, format, args);
  va_end(args);
  return buf;
}

double Seconds(absl::Time start) { return absl::ToDoubleSeconds(absl::Now() - start); }

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
}

// Waits on `cv` (with `mu` held) and dies if that takes kStallTimeout.
void WaitOrDie(CondVar* cv, Mutex* mu, absl::Time started, const char* what)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
  if (cv->WaitWithDeadline(mu, started + kStallTimeout) &&
      absl::Now() >= started + kStallTimeout) {
    Die("%s: no progress for %s", what, absl::FormatDuration(kStallTimeout).c_str());
  }
}

// --- encoding ----------------------------------------------------------------
void PutBE64(char* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<char>(v & 0xff);
}
void PutBE32(char* p, uint32_t v) {
  for (int i = 3; i >= 0; --i, v >>= 8) p[i] = static_cast<char>(v & 0xff);
}
uint64_t GetBE64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
void PutLE(char* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i, v >>= 8) p[i] = static_cast<char>(v & 0xff);
}
uint64_t GetLE(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// CRC-32C (Castagnoli): the SSE4.2 instruction when the CPU has it (every
// x86-64 server of the last decade), else a table. zlib's crc32 would do
// too, but hardware CRC-32C is ~5x faster and recovery reads every byte.
uint32_t g_crc_table[256];
void InitCrcTable() {
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    g_crc_table[i] = c;
  }
}
uint32_t Crc32cTable(const char* p, size_t n) {
  uint32_t c = ~0u;
  for (size_t i = 0; i < n; ++i) c = g_crc_table[(c ^ static_cast<uint8_t>(p[i])) & 0xff] ^ (c >> 8);
  return ~c;
}
__attribute__((target("sse4.2"))) uint32_t Crc32cHw(const char* p, size_t n) {
  uint64_t c = ~0u;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; n > 0; --n, ++p) c32 = _mm_crc32_u8(c32, static_cast<uint8_t>(*p));
  return ~c32;
}
bool g_crc_hw = false;
uint32_t Crc32c(const char* p, size_t n) { return g_crc_hw ? Crc32cHw(p, n) : Crc32cTable(p, n); }

// --- operations and batches --------------------------------------------------
// One operation of an atomic batch. Each store maps it onto its own keys:
// kComplete deletes the task and its lease and inserts the result.
enum class OpKind : uint8_t { kPutTask = 1, kLease = 2, kComplete = 3, kDeleteResult = 4 };

struct Op {
  OpKind kind = OpKind::kPutTask;
  uint8_t len = 0;  // bytes of `value` in use
  uint32_t attempt = 0;
  uint64_t id = 0;
  char value[kTaskValueBytes] = {};
};
using Batch = std::vector<Op>;

// Task record: 30 B of metadata (queue, enqueue time, not-before, priority,
// attempts, flags) and a 100 B payload of random bytes, so that RocksDB's
// compression cannot make the disk numbers look better than real payloads.
Op MakePutTask(uint64_t id) {
  Op op;
  op.kind = OpKind::kPutTask;
  op.id = id;
  op.len = kTaskValueBytes;
  char* meta = op.value;
  PutLE(meta, 1, 4);             // queue id
  PutLE(meta + 4, id, 8);        // enqueue time stand-in
  PutLE(meta + 12, 0, 8);        // not before
  PutLE(meta + 20, 0, 4);        // priority
  PutLE(meta + 24, 0, 2);        // attempts
  PutLE(meta + 26, 0x10001, 4);  // flags
  uint64_t state = id;
  for (size_t i = 0; i < kPayloadBytes; i += 8) {
    const uint64_t r = SplitMix64(&state);
    std::memcpy(op.value + kTaskMetaBytes + i, &r, std::min<size_t>(8, kPayloadBytes - i));
  }
  return op;
}

// Lease record (~20 B): attempt, worker, lease deadline.
Op MakeLease(uint64_t id, uint32_t attempt) {
  Op op;
  op.kind = OpKind::kLease;
  op.id = id;
  op.attempt = attempt;
  op.len = kLeaseBytes;
  PutLE(op.value, attempt, 4);
  PutLE(op.value + 4, 7, 4);            // worker
  PutLE(op.value + 8, id + 30000, 8);   // deadline
  return op;
}

// Completion: the result record is the seed's "i * i = i*i" text, 30 B.
Op MakeComplete(uint64_t id, uint32_t attempt) {
  Op op;
  op.kind = OpKind::kComplete;
  op.id = id;
  op.attempt = attempt;
  op.len = kResultBytes;
  char text[64];
  const unsigned long long i = id;
  std::snprintf(text, sizeof text, "%llu * %llu = %llu", i, i, i * i);
  std::memset(op.value, ' ', kResultBytes);
  std::memcpy(op.value, text, std::min(std::strlen(text), kResultBytes));
  return op;
}

Op MakeDeleteResult(uint64_t id) {
  Op op;
  op.kind = OpKind::kDeleteResult;
  op.id = id;
  return op;
}

enum class Policy { kAlways, kInterval, kNever };

// What a store holds after a run, and how many changes it applied in all:
// proof that the writes happened, not just that the store ends empty.
struct LiveCounts {
  uint64_t tasks = 0, leases = 0, results = 0;
  uint64_t changes = 0;           // as the store counts them (see changes_per_task)
  uint64_t changes_per_task = 0;  // what one task's put, lease, complete and consume add
};

struct ScanResult {
  uint64_t tasks = 0;      // task records found
  uint64_t bytes = 0;      // value bytes seen
  double seconds = 0;      // open + scan
  double open_seconds = 0; // of which open (SQLite reads its WAL at the first query, in scan)
};

// A store under test. Write applies one batch atomically and returns once
// the batch is as durable as the policy promises (kAlways: on disk; the
// others: accepted, maybe only in memory). Write and Drain are thread-safe.
class Store {
 public:
  virtual ~Store() = default;
  virtual void Write(const Batch& batch) = 0;
  // Returns once every accepted batch is applied (written to the OS).
  virtual void Drain() = 0;
  virtual LiveCounts CountLive() = 0;
  // Reclaims what consumption left behind (RocksDB: CompactRange; SQLite:
  // checkpoint(TRUNCATE); our log: nothing, it keeps everything).
  virtual void Compact() = 0;
  // like_crash: leave the files as a kill -9 would (no final checkpoint).
  virtual void Close(bool like_crash) = 0;
};

// --- RocksDB -------------------------------------------------------------------
// Keys: 't'+id (task), 'l'+id+attempt (lease), 'r'+id (result), ids
// big-endian so keys sort by id. Every key is written exactly once and then
// deleted once, so deletes are SingleDelete: a flush drops a put and its
// single-delete together instead of carrying a tombstone down the tree.
// (That is why the lease key carries the attempt: a retry writes a new key.)
void CheckOk(const rocksdb::Status& s, const char* what) {
  if (!s.ok()) Die("rocksdb %s: %s", what, s.ToString().c_str());
}

class RocksStore final : public Store {
 public:
  // own_group_commit (kAlways only): write with sync=false and let one
  // syncer thread call SyncWAL() for everyone waiting; otherwise kAlways
  // writes with sync=true and RocksDB's write group shares the sync.
  // memtable_mb: write_buffer_size, 0 for RocksDB's default (64 MiB).
  RocksStore(const std::string& dir, Policy policy, bool own_group_commit, size_t memtable_mb)
      : policy_(policy), own_group_commit_(own_group_commit && policy == Policy::kAlways) {
    rocksdb::Options options = DbOptions(memtable_mb);
    options.create_if_missing = true;
    rocksdb::DB* db = nullptr;
    CheckOk(rocksdb::DB::Open(options, dir, &db), "open");
    db_.reset(db);
    if (policy_ == Policy::kInterval) syncer_ = std::thread([this] { IntervalSyncLoop(); });
    if (own_group_commit_) syncer_ = std::thread([this] { GroupSyncLoop(); });
  }
  ~RocksStore() override {
    if (db_) Close(false);
  }

  // Defaults as shipped (snappy, 2 background jobs), except the memtable
  // size if memtable_mb > 0. A small memtable is cheaper here: deleted
  // entries stay in it until a flush (insert cost grows with its size), and
  // after a crash only the unflushed part of the WAL is replayed.
  static rocksdb::Options DbOptions(size_t memtable_mb) {
    rocksdb::Options options;
    if (memtable_mb > 0) options.write_buffer_size = memtable_mb << 20;
    return options;
  }

  void Write(const Batch& batch) override {
    rocksdb::WriteBatch wb(batch.size() * 64);
    char key[16];
    char key2[16];
    for (const Op& op : batch) {
      const rocksdb::Slice value(op.value, op.len);
      switch (op.kind) {
        case OpKind::kPutTask:
          CheckOk(wb.Put(Key(key, 't', op.id), value), "batch");
          break;
        case OpKind::kLease:
          CheckOk(wb.Put(LeaseKey(key, op.id, op.attempt), value), "batch");
          break;
        case OpKind::kComplete:
          CheckOk(wb.SingleDelete(Key(key, 't', op.id)), "batch");
          CheckOk(wb.SingleDelete(LeaseKey(key2, op.id, op.attempt)), "batch");
          CheckOk(wb.Put(Key(key, 'r', op.id), value), "batch");
          break;
        case OpKind::kDeleteResult:
          CheckOk(wb.SingleDelete(Key(key, 'r', op.id)), "batch");
          break;
      }
    }
    rocksdb::WriteOptions options;
    options.sync = policy_ == Policy::kAlways && !own_group_commit_;
    CheckOk(db_->Write(options, &wb), "write");
    // The latest sequence number after our write covers our write.
    if (own_group_commit_) WaitSynced(db_->GetLatestSequenceNumber());
  }

  void Drain() override {}  // Write is synchronous

  LiveCounts CountLive() override {
    LiveCounts counts;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      switch (it->key()[0]) {
        case 't': ++counts.tasks; break;
        case 'l': ++counts.leases; break;
        case 'r': ++counts.results; break;
        default: Die("rocksdb: unexpected key");
      }
    }
    CheckOk(it->status(), "iterate");
    // A fresh DB's sequence number counts key updates: put, lease put,
    // complete's two single-deletes and result put, the result's delete.
    counts.changes = db_->GetLatestSequenceNumber();
    counts.changes_per_task = 6;
    return counts;
  }

  void Compact() override {
    rocksdb::CompactRangeOptions options;
    options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    CheckOk(db_->CompactRange(options, nullptr, nullptr), "compact");
  }

  // RocksDB's Close does not flush the memtable while the WAL is on, so a
  // plain close leaves the files as a kill -9 would: the reopen replays
  // the WAL either way.
  void Close(bool /*like_crash*/) override {
    {
      MutexLock lock(&mu_);
      closing_ = true;
      wanted_cv_.SignalAll();
    }
    if (syncer_.joinable()) syncer_.join();
    CheckOk(db_->Close(), "close");
    db_.reset();
  }

  static ScanResult Scan(const std::string& dir, size_t memtable_mb) {
    const absl::Time start = absl::Now();
    rocksdb::DB* raw = nullptr;
    CheckOk(rocksdb::DB::Open(DbOptions(memtable_mb), dir, &raw), "reopen");
    std::unique_ptr<rocksdb::DB> db(raw);
    ScanResult result;
    result.open_seconds = Seconds(start);
    rocksdb::ReadOptions options;
    const rocksdb::Slice upper("u", 1);
    options.iterate_upper_bound = &upper;
    std::vector<uint64_t> ids;  // the ready index a master would rebuild
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(options));
    for (it->Seek(rocksdb::Slice("t", 1)); it->Valid(); it->Next()) {
      ids.push_back(GetBE64(it->key().data() + 1));
      result.bytes += it->value().size();
    }
    CheckOk(it->status(), "scan");
    result.tasks = ids.size();
    result.seconds = Seconds(start);
    it.reset();
    CheckOk(db->Close(), "close");
    return result;
  }

 private:
  static rocksdb::Slice Key(char* buf, char prefix, uint64_t id) {
    buf[0] = prefix;
    PutBE64(buf + 1, id);
    return rocksdb::Slice(buf, 9);
  }
  static rocksdb::Slice LeaseKey(char* buf, uint64_t id, uint32_t attempt) {
    buf[0] = 'l';
    PutBE64(buf + 1, id);
    PutBE32(buf + 9, attempt);
    return rocksdb::Slice(buf, 13);
  }

  void WaitSynced(rocksdb::SequenceNumber seq) {
    const absl::Time start = absl::Now();
    MutexLock lock(&mu_);
    if (seq > wanted_) {
      wanted_ = seq;
      wanted_cv_.Signal();
    }
    while (synced_ < seq) WaitOrDie(&synced_cv_, &mu_, start, "rocksdb SyncWAL waiter");
  }

  // Group commit: whoever waits while a SyncWAL runs is covered by the next.
  void GroupSyncLoop() {
    for (;;) {
      {
        MutexLock lock(&mu_);
        while (wanted_ <= synced_ && !closing_) wanted_cv_.Wait(&mu_);
        if (wanted_ <= synced_) return;  // closing, nobody waits
      }
      // Every write with a sequence number up to `upto` has done its write()
      // to the WAL file (sequence numbers are published after the WAL write).
      const rocksdb::SequenceNumber upto = db_->GetLatestSequenceNumber();
      CheckOk(db_->SyncWAL(), "SyncWAL");
      MutexLock lock(&mu_);
      synced_ = std::max(synced_, upto);
      synced_cv_.SignalAll();
    }
  }

  void IntervalSyncLoop() {
    rocksdb::SequenceNumber synced = db_->GetLatestSequenceNumber();
    absl::Time next = absl::Now() + kSyncInterval;
    for (;;) {
      {
        MutexLock lock(&mu_);
        while (!closing_ && absl::Now() < next) wanted_cv_.WaitWithDeadline(&mu_, next);
        if (closing_) return;
      }
      next = std::max(next + kSyncInterval, absl::Now());
      const rocksdb::SequenceNumber latest = db_->GetLatestSequenceNumber();
      if (latest == synced) continue;  // nothing new
      CheckOk(db_->SyncWAL(), "SyncWAL");
      synced = latest;
    }
  }

  const Policy policy_;
  const bool own_group_commit_;
  std::unique_ptr<rocksdb::DB> db_;
  std::thread syncer_;
  Mutex mu_;
  CondVar wanted_cv_;  // wakes the syncer
  CondVar synced_cv_;  // wakes writers waiting for their sync
  rocksdb::SequenceNumber wanted_ ABSL_GUARDED_BY(mu_) = 0;
  rocksdb::SequenceNumber synced_ ABSL_GUARDED_BY(mu_) = 0;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
};

// --- SQLite ---------------------------------------------------------------------
// One connection (opened NOMUTEX, guarded by conn_mu_), journal_mode=WAL,
// three rowid tables: tasks(id, payload, meta), leases(id, meta),
// results(id, value). Writers hand their batch to one committer thread and
// the committer applies everything queued in ONE transaction (group
// commit: with synchronous=FULL each COMMIT is one WAL fsync). kAlways
// writers wait for the commit that contains their batch; the others return
// at once (at most kMaxPending batches queue up). Policies:
//   always:   synchronous=FULL (WAL synced at every commit);
//   interval: synchronous=NORMAL (no sync at commit; the WAL is synced at
//             checkpoints) plus a syncer thread that fdatasyncs the -wal
//             file through its own descriptor every 10 ms if something
//             was committed since the last sync;
//   never:    synchronous=OFF (no sync at all, not even at checkpoints).
// Checkpoints: SQLite's default auto-checkpoint (WAL > 1000 pages, run by
// the committing thread).
class SqliteStore final : public Store {
 public:
  static constexpr size_t kMaxPending = 64;

  SqliteStore(const std::string& dir, Policy policy) : policy_(policy), path_(dir + "/queue.db") {
    MutexLock conn(&conn_mu_);
    db_ = OpenDb(path_);
    const std::string mode = QueryText(db_, "PRAGMA journal_mode=WAL");
    if (mode != "wal") Die("sqlite: journal_mode is %s, not wal", mode.c_str());
    Exec(db_, policy == Policy::kAlways     ? "PRAGMA synchronous=FULL"
              : policy == Policy::kInterval ? "PRAGMA synchronous=NORMAL"
                                            : "PRAGMA synchronous=OFF");
    Exec(db_,
         "CREATE TABLE tasks(id INTEGER PRIMARY KEY, payload BLOB NOT NULL, meta BLOB NOT NULL);"
         "CREATE TABLE leases(id INTEGER PRIMARY KEY, meta BLOB NOT NULL);"
         "CREATE TABLE results(id INTEGER PRIMARY KEY, value BLOB NOT NULL);");
    begin_ = Prepare(db_, "BEGIN");
    commit_ = Prepare(db_, "COMMIT");
    put_task_ = Prepare(db_, "INSERT INTO tasks(id, payload, meta) VALUES(?, ?, ?)");
    put_lease_ = Prepare(db_, "INSERT OR REPLACE INTO leases(id, meta) VALUES(?, ?)");
    delete_task_ = Prepare(db_, "DELETE FROM tasks WHERE id = ?");
    delete_lease_ = Prepare(db_, "DELETE FROM leases WHERE id = ?");
    put_result_ = Prepare(db_, "INSERT INTO results(id, value) VALUES(?, ?)");
    delete_result_ = Prepare(db_, "DELETE FROM results WHERE id = ?");
    committer_ = std::thread([this] { CommitLoop(); });
    if (policy_ == Policy::kInterval) syncer_ = std::thread([this] { SyncLoop(); });
  }
  ~SqliteStore() override {
    if (committer_.joinable()) Close(false);
  }

  void Write(const Batch& batch) override {
    const absl::Time start = absl::Now();
    MutexLock lock(&mu_);
    while (pending_.size() >= kMaxPending) WaitOrDie(&room_cv_, &mu_, start, "sqlite queue");
    pending_.push_back(batch);
    const uint64_t ticket = ++submitted_;
    work_cv_.Signal();
    if (policy_ != Policy::kAlways) return;
    while (committed_ < ticket) WaitOrDie(&done_cv_, &mu_, start, "sqlite commit waiter");
  }

  void Drain() override {
    const absl::Time start = absl::Now();
    MutexLock lock(&mu_);
    while (committed_ < submitted_) WaitOrDie(&done_cv_, &mu_, start, "sqlite drain");
  }

  LiveCounts CountLive() override {
    Drain();
    MutexLock conn(&conn_mu_);
    LiveCounts counts;
    counts.tasks = std::stoull(QueryText(db_, "SELECT count(*) FROM tasks"));
    counts.leases = std::stoull(QueryText(db_, "SELECT count(*) FROM leases"));
    counts.results = std::stoull(QueryText(db_, "SELECT count(*) FROM results"));
    // Rows inserted or deleted: task, lease, their deletes, result, its delete.
    counts.changes = static_cast<uint64_t>(sqlite3_total_changes64(db_));
    counts.changes_per_task = 6;
    return counts;
  }

  void Compact() override {
    Drain();
    MutexLock conn(&conn_mu_);
    int wal_frames = 0;
    int checkpointed = 0;
    const int rc = sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE,
                                             &wal_frames, &checkpointed);
    if (rc != SQLITE_OK) Die("sqlite checkpoint: %s", sqlite3_errmsg(db_));
  }

  void Close(bool like_crash) override {
    {
      MutexLock lock(&mu_);
      closing_ = true;
      work_cv_.SignalAll();
      stop_cv_.SignalAll();
    }
    committer_.join();  // applies what is still queued first
    if (syncer_.joinable()) syncer_.join();
    MutexLock conn(&conn_mu_);
    if (like_crash) {
      // Leave the WAL un-checkpointed, as a kill -9 would.
      sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, static_cast<int*>(nullptr));
    }
    for (sqlite3_stmt* st : {begin_, commit_, put_task_, put_lease_, delete_task_, delete_lease_,
                             put_result_, delete_result_}) {
      sqlite3_finalize(st);
    }
    if (sqlite3_close(db_) != SQLITE_OK) Die("sqlite close: %s", sqlite3_errmsg(db_));
    db_ = nullptr;
  }

  static ScanResult Scan(const std::string& dir) {
    const absl::Time start = absl::Now();
    sqlite3* db = OpenDb(dir + "/queue.db");
    sqlite3_stmt* st = Prepare(db, "SELECT id, payload FROM tasks");
    ScanResult result;
    result.open_seconds = Seconds(start);
    std::vector<uint64_t> ids;  // the ready index a master would rebuild
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      ids.push_back(static_cast<uint64_t>(sqlite3_column_int64(st, 0)));
      if (sqlite3_column_blob(st, 1) == nullptr) Die("sqlite: task without payload");
      result.bytes += static_cast<uint64_t>(sqlite3_column_bytes(st, 1));
    }
    if (rc != SQLITE_DONE) Die("sqlite scan: %s", sqlite3_errmsg(db));
    result.tasks = ids.size();
    result.seconds = Seconds(start);
    sqlite3_finalize(st);
    if (sqlite3_close(db) != SQLITE_OK) Die("sqlite close: %s", sqlite3_errmsg(db));
    return result;
  }

 private:
  static sqlite3* OpenDb(const std::string& path) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK) {
      Die("sqlite open %s: %s", path.c_str(), db ? sqlite3_errmsg(db) : "out of memory");
    }
    return db;
  }
  static void Exec(sqlite3* db, const char* sql) {
    char* error = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &error) != SQLITE_OK) {
      Die("sqlite %s: %s", sql, error ? error : "?");
    }
  }
  static std::string QueryText(sqlite3* db, const char* sql) {
    sqlite3_stmt* st = Prepare(db, sql);
    if (sqlite3_step(st) != SQLITE_ROW) Die("sqlite %s: %s", sql, sqlite3_errmsg(db));
    std::string text(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
    sqlite3_finalize(st);
    return text;
  }
  static sqlite3_stmt* Prepare(sqlite3* db, const char* sql) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) {
      Die("sqlite prepare %s: %s", sql, sqlite3_errmsg(db));
    }
    return st;
  }
  void Run(sqlite3_stmt* st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(conn_mu_) {
    if (sqlite3_step(st) != SQLITE_DONE) Die("sqlite step: %s", sqlite3_errmsg(db_));
    sqlite3_reset(st);
  }
  void RunWithId(sqlite3_stmt* st, uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(conn_mu_) {
    sqlite3_bind_int64(st, 1, static_cast<sqlite3_int64>(id));
    Run(st);
  }

  void Apply(const Batch& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(conn_mu_) {
    for (const Op& op : batch) {
      const auto id = static_cast<sqlite3_int64>(op.id);
      switch (op.kind) {
        case OpKind::kPutTask:
          sqlite3_bind_int64(put_task_, 1, id);
          sqlite3_bind_blob(put_task_, 2, op.value + kTaskMetaBytes, kPayloadBytes, SQLITE_STATIC);
          sqlite3_bind_blob(put_task_, 3, op.value, kTaskMetaBytes, SQLITE_STATIC);
          Run(put_task_);
          break;
        case OpKind::kLease:
          sqlite3_bind_int64(put_lease_, 1, id);
          sqlite3_bind_blob(put_lease_, 2, op.value, op.len, SQLITE_STATIC);
          Run(put_lease_);
          break;
        case OpKind::kComplete:
          RunWithId(delete_task_, op.id);
          RunWithId(delete_lease_, op.id);
          sqlite3_bind_int64(put_result_, 1, id);
          sqlite3_bind_blob(put_result_, 2, op.value, op.len, SQLITE_STATIC);
          Run(put_result_);
          break;
        case OpKind::kDeleteResult:
          RunWithId(delete_result_, op.id);
          break;
      }
    }
  }

  void CommitLoop() {
    std::vector<Batch> work;
    for (;;) {
      uint64_t upto;
      {
        MutexLock lock(&mu_);
        while (pending_.empty() && !closing_) work_cv_.Wait(&mu_);
        if (pending_.empty()) return;  // closing and drained
        work.swap(pending_);
        upto = submitted_;
        room_cv_.SignalAll();
      }
      {
        MutexLock conn(&conn_mu_);
        Run(begin_);
        for (const Batch& batch : work) Apply(batch);
        Run(commit_);
      }
      work.clear();
      MutexLock lock(&mu_);
      committed_ = upto;
      done_cv_.SignalAll();
    }
  }

  // kInterval: fdatasync the WAL every 10 ms through our own descriptor (not
  // under conn_mu_, so commits go on meanwhile). SQLite never replaces the
  // -wal file while the connection is open, it only rewrites it from the
  // start after a checkpoint; a sync of the same inode covers every commit
  // whose write() finished before it.
  void SyncLoop() {
    uint64_t synced = 0;
    int wal_fd = -1;
    absl::Time next = absl::Now() + kSyncInterval;
    for (;;) {
      uint64_t committed;
      {
        MutexLock lock(&mu_);
        while (!closing_ && absl::Now() < next) stop_cv_.WaitWithDeadline(&mu_, next);
        if (closing_) break;
        committed = committed_;
      }
      next = std::max(next + kSyncInterval, absl::Now());
      if (committed == synced) continue;
      if (wal_fd < 0) {
        wal_fd = open((path_ + "-wal").c_str(), O_RDONLY | O_CLOEXEC);
        if (wal_fd < 0) Die("open %s-wal: %s", path_.c_str(), std::strerror(errno));
      }
      if (fdatasync(wal_fd) != 0) Die("fdatasync wal: %s", std::strerror(errno));
      synced = committed;
    }
    if (wal_fd >= 0) close(wal_fd);
  }

  const Policy policy_;
  const std::string path_;
  std::thread committer_;
  std::thread syncer_;

  Mutex conn_mu_;  // the connection and its statements
  sqlite3* db_ ABSL_GUARDED_BY(conn_mu_) = nullptr;
  sqlite3_stmt* begin_ ABSL_GUARDED_BY(conn_mu_) = nullptr;
  sqlite3_stmt* commit_ ABSL_GUARDED_BY(conn_mu_) = nullptr;
  sqlite3_stmt* put_task_ ABSL_GUARDED_BY(conn_mu_) = nullptr;
  sqlite3_stmt* put_lease_ ABSL_GUARDED_BY(conn_mu_) = nullptr;
  sqlite3_stmt* delete_task_ ABSL_GUARDED_BY(conn_mu_) = nullptr;
  sqlite3_stmt* delete_lease_ ABSL_GUARDED_BY(conn_mu_) = nullptr;
  sqlite3_stmt* put_result_ ABSL_GUARDED_BY(conn_mu_) = nullptr;
  sqlite3_stmt* delete_result_ ABSL_GUARDED_BY(conn_mu_) = nullptr;

  Mutex mu_;  // the hand-off to the committer
  CondVar work_cv_;  // wakes the committer
  CondVar room_cv_;  // wakes writers waiting for queue room
  CondVar done_cv_;  // wakes writers waiting for their commit
  CondVar stop_cv_;  // wakes the syncer when closing
  std::vector<Batch> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t submitted_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t committed_ ABSL_GUARDED_BY(mu_) = 0;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
};

// --- our own log --------------------------------------------------------------
// One append-only file of records [u32 len][u32 crc32c(payload)][payload],
// one record per atomic batch; payload = ops of [u8 kind][u64 id]
// [u32 attempt][u8 len][value]. Writers encode their record and append it
// to an in-memory buffer; one committer thread write()s everything
// buffered so far and, for kAlways, fdatasyncs it (group commit) and
// publishes the durable offset that kAlways writers wait on. kInterval: a
// syncer thread fdatasyncs every 10 ms if something new was written.
// Nothing is ever reclaimed: consumed tasks stay in the file until a
// compaction we did not write (a real log would rotate segments and
// rewrite or drop old ones).
struct LogIndex {
  absl::flat_hash_map<uint64_t, uint64_t> tasks;    // id -> file offset of its record
  absl::flat_hash_map<uint64_t, uint32_t> leases;   // id -> attempt
  absl::flat_hash_map<uint64_t, uint64_t> results;  // id -> file offset of its record
  uint64_t valid_bytes = 0;                         // up to the first torn record
  uint64_t ops = 0;
};

constexpr size_t kLogHeaderBytes = 8;
constexpr size_t kLogOpHeaderBytes = 14;

// Rebuilds the live state from a log image; stops at a torn tail.
void ReplayLog(const char* data, uint64_t size, LogIndex* index, uint64_t* value_bytes) {
  uint64_t off = 0;
  while (size - off >= kLogHeaderBytes) {
    const uint64_t len = GetLE(data + off, 4);
    const auto crc = static_cast<uint32_t>(GetLE(data + off + 4, 4));
    if (len == 0 || len > size - off - kLogHeaderBytes) break;
    const char* p = data + off + kLogHeaderBytes;
    if (Crc32c(p, len) != crc) break;
    const char* end = p + len;
    while (p < end) {
      if (end - p < static_cast<ptrdiff_t>(kLogOpHeaderBytes)) Die("log: short op");
      const auto kind = static_cast<OpKind>(p[0]);
      const uint64_t id = GetLE(p + 1, 8);
      const auto attempt = static_cast<uint32_t>(GetLE(p + 9, 4));
      const auto vlen = static_cast<uint8_t>(p[13]);
      if (end - p < static_cast<ptrdiff_t>(kLogOpHeaderBytes + vlen)) Die("log: short value");
      switch (kind) {
        case OpKind::kPutTask:
          index->tasks[id] = off;
          *value_bytes += vlen;
          break;
        case OpKind::kLease: index->leases[id] = attempt; break;
        case OpKind::kComplete:
          index->tasks.erase(id);
          index->leases.erase(id);
          index->results[id] = off;
          break;
        case OpKind::kDeleteResult: index->results.erase(id); break;
        default: Die("log: unknown op %d", static_cast<int>(p[0]));
      }
      p += kLogOpHeaderBytes + vlen;
      ++index->ops;
    }
    off += kLogHeaderBytes + len;
  }
  index->valid_bytes = off;
}

// Opens, maps and replays a log file. Returns the seconds it took, and in
// *open_seconds those of open + mmap (MAP_POPULATE reads the file).
double ReplayLogFile(const std::string& path, LogIndex* index, uint64_t* value_bytes,
                     double* open_seconds = nullptr) {
  const absl::Time start = absl::Now();
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Die("open %s: %s", path.c_str(), std::strerror(errno));
  struct stat st{};
  if (fstat(fd, &st) != 0) Die("fstat: %s", std::strerror(errno));
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > 0) {
    void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (map == MAP_FAILED) Die("mmap: %s", std::strerror(errno));
    madvise(map, size, MADV_SEQUENTIAL);
    if (open_seconds != nullptr) *open_seconds = Seconds(start);
    ReplayLog(static_cast<const char*>(map), size, index, value_bytes);
    munmap(map, size);
  }
  close(fd);
  return Seconds(start);
}

class LogStore final : public Store {
 public:
  static constexpr size_t kMaxBuffered = 8 << 20;

  LogStore(const std::string& dir, Policy policy) : policy_(policy), path_(dir + "/queue.log") {
    fd_ = open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) Die("open %s: %s", path_.c_str(), std::strerror(errno));
    // A new log's directory entry must be durable once; a real log does the
    // same when it starts a segment.
    const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0 || fsync(dir_fd) != 0) Die("fsync %s: %s", dir.c_str(), std::strerror(errno));
    close(dir_fd);
    committer_ = std::thread([this] { CommitLoop(); });
    if (policy_ == Policy::kInterval) syncer_ = std::thread([this] { SyncLoop(); });
  }
  ~LogStore() override {
    if (fd_ >= 0) Close(false);
  }

  void Write(const Batch& batch) override {
    std::string record(kLogHeaderBytes, '\0');
    record.reserve(kLogHeaderBytes + batch.size() * (kLogOpHeaderBytes + kTaskValueBytes));
    for (const Op& op : batch) {
      char head[kLogOpHeaderBytes];
      head[0] = static_cast<char>(op.kind);
      PutLE(head + 1, op.id, 8);
      PutLE(head + 9, op.attempt, 4);
      head[13] = static_cast<char>(op.len);
      record.append(head, sizeof head);
      record.append(op.value, op.len);
    }
    const size_t len = record.size() - kLogHeaderBytes;
    PutLE(record.data(), len, 4);
    PutLE(record.data() + 4, Crc32c(record.data() + kLogHeaderBytes, len), 4);

    const absl::Time start = absl::Now();
    MutexLock lock(&mu_);
    while (buffer_.size() > kMaxBuffered) WaitOrDie(&progress_cv_, &mu_, start, "log buffer");
    buffer_.append(record);
    appended_ += record.size();
    const uint64_t end = appended_;
    data_cv_.Signal();
    if (policy_ != Policy::kAlways) return;
    while (durable_ < end) WaitOrDie(&progress_cv_, &mu_, start, "log sync waiter");
  }

  void Drain() override {
    const absl::Time start = absl::Now();
    MutexLock lock(&mu_);
    while (written_ < appended_) WaitOrDie(&progress_cv_, &mu_, start, "log drain");
  }

  LiveCounts CountLive() override {
    Drain();
    LogIndex index;
    uint64_t value_bytes = 0;
    ReplayLogFile(path_, &index, &value_bytes);
    uint64_t appended;
    {
      MutexLock lock(&mu_);
      appended = appended_;
    }
    if (index.valid_bytes != appended) {
      Die("log: replay stopped at %llu of %llu bytes", static_cast<unsigned long long>(index.valid_bytes),
          static_cast<unsigned long long>(appended));
    }
    // One op per task for its put, lease, completion and consumption.
    return {index.tasks.size(), index.leases.size(), index.results.size(), index.ops, 4};
  }

  void Compact() override {}  // keeps everything

  void Close(bool /*like_crash*/) override {
    {
      MutexLock lock(&mu_);
      closing_ = true;
      data_cv_.SignalAll();
      progress_cv_.SignalAll();
    }
    committer_.join();  // writes what is still buffered first
    if (syncer_.joinable()) syncer_.join();
    close(fd_);
    fd_ = -1;
  }

  static ScanResult Scan(const std::string& dir) {
    LogIndex index;
    ScanResult result;
    result.seconds = ReplayLogFile(dir + "/queue.log", &index, &result.bytes, &result.open_seconds);
    result.tasks = index.tasks.size();
    return result;
  }

 private:
  void CommitLoop() {
    std::string out;
    for (;;) {
      uint64_t end;
      {
        MutexLock lock(&mu_);
        while (buffer_.empty() && !closing_) data_cv_.Wait(&mu_);
        if (buffer_.empty()) return;  // closing and drained
        out.swap(buffer_);
        end = appended_;
      }
      for (size_t done = 0; done < out.size();) {
        const ssize_t n = write(fd_, out.data() + done, out.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) Die("log write: %s", std::strerror(errno));
        done += static_cast<size_t>(n);
      }
      if (policy_ == Policy::kAlways && fdatasync(fd_) != 0) {
        Die("log fdatasync: %s", std::strerror(errno));
      }
      out.clear();
      MutexLock lock(&mu_);
      written_ = end;
      if (policy_ == Policy::kAlways) durable_ = end;
      progress_cv_.SignalAll();
    }
  }

  void SyncLoop() {
    uint64_t synced = 0;
    absl::Time next = absl::Now() + kSyncInterval;
    for (;;) {
      uint64_t written;
      {
        MutexLock lock(&mu_);
        while (!closing_ && absl::Now() < next) progress_cv_.WaitWithDeadline(&mu_, next);
        if (closing_) return;
        written = written_;
      }
      next = std::max(next + kSyncInterval, absl::Now());
      if (written == synced) continue;
      if (fdatasync(fd_) != 0) Die("log fdatasync: %s", std::strerror(errno));
      synced = written;
      MutexLock lock(&mu_);
      durable_ = std::max(durable_, synced);
    }
  }

  const Policy policy_;
  const std::string path_;
  int fd_ = -1;  // written by the committer only (after construction)
  std::thread committer_;
  std::thread syncer_;
  Mutex mu_;
  CondVar data_cv_;      // wakes the committer
  CondVar progress_cv_;  // wakes writers (written_/durable_ moved) and the syncer
  std::string buffer_ ABSL_GUARDED_BY(mu_);
  uint64_t appended_ ABSL_GUARDED_BY(mu_) = 0;  // file offset after the last appended record
  uint64_t written_ ABSL_GUARDED_BY(mu_) = 0;   // bytes handed to write()
  uint64_t durable_ ABSL_GUARDED_BY(mu_) = 0;   // bytes covered by an fdatasync
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
};

// --- the workload ---------------------------------------------------------------
// In-memory hand-off between the workload's threads: the window of tasks in
// flight, put-but-unleased ids, completed-but-unconsumed ids. Every wait
// ends at the config's deadline, which stops the run.
class Pipeline {
 public:
  Pipeline(uint64_t window, absl::Time deadline) : window_(window), deadline_(deadline) {}

  // Producer: reserves room for k more tasks. False when the run stops.
  bool EnterWindow(uint64_t k) {
    MutexLock lock(&mu_);
    while (!stop_ && in_flight_ + k > window_) Wait(&room_cv_);
    if (stop_) return false;
    in_flight_ += k;
    return true;
  }
  void LeaveWindow(uint64_t k) {
    MutexLock lock(&mu_);
    in_flight_ -= k;
    room_cv_.Signal();
  }
  void PushReady(const std::vector<uint64_t>& ids) {
    MutexLock lock(&mu_);
    ready_.insert(ready_.end(), ids.begin(), ids.end());
    ready_cv_.SignalAll();
  }
  bool PopReady(size_t max, std::vector<uint64_t>* out) { return Pop(&ready_, &ready_cv_, max, out); }
  void PushResults(const std::vector<uint64_t>& ids) {
    MutexLock lock(&mu_);
    results_.insert(results_.end(), ids.begin(), ids.end());
    results_cv_.Signal();
  }
  bool PopResults(size_t max, std::vector<uint64_t>* out) {
    return Pop(&results_, &results_cv_, max, out);
  }
  void Stop() {
    MutexLock lock(&mu_);
    StopLocked();
  }
  bool timed_out() {
    MutexLock lock(&mu_);
    return timed_out_;
  }

 private:
  bool Pop(std::deque<uint64_t>* queue, CondVar* cv, size_t max, std::vector<uint64_t>* out) {
    MutexLock lock(&mu_);
    while (!stop_ && queue->empty()) Wait(cv);
    if (stop_) return false;
    const size_t n = std::min(max, queue->size());
    out->assign(queue->begin(), queue->begin() + static_cast<ptrdiff_t>(n));
    queue->erase(queue->begin(), queue->begin() + static_cast<ptrdiff_t>(n));
    return true;
  }
  void Wait(CondVar* cv) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (cv->WaitWithDeadline(&mu_, deadline_) && absl::Now() >= deadline_) {
      timed_out_ = true;
      StopLocked();
    }
  }
  void StopLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    stop_ = true;
    room_cv_.SignalAll();
    ready_cv_.SignalAll();
    results_cv_.SignalAll();
  }

  const uint64_t window_;
  const absl::Time deadline_;
  Mutex mu_;
  CondVar room_cv_;
  CondVar ready_cv_;
  CondVar results_cv_;
  uint64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<uint64_t> ready_ ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> results_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool timed_out_ ABSL_GUARDED_BY(mu_) = false;
};

struct DiskUsage {
  uint64_t apparent = 0;   // sum of file sizes
  uint64_t allocated = 0;  // blocks (RocksDB preallocates its WAL)
};

DiskUsage DirUsage(const std::string& dir) {
  DiskUsage usage;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    struct stat st{};
    if (entry.is_regular_file() && stat(entry.path().c_str(), &st) == 0) {
      usage.apparent += static_cast<uint64_t>(st.st_size);
      usage.allocated += static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  return usage;
}

// Drops dir's files from the page cache (this guest's; a VM host may still
// cache them): fdatasync then POSIX_FADV_DONTNEED, which drops clean pages.
void EvictFromPageCache(const std::string& dir) {
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const int fd = open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
  }
}

struct Backend {
  std::string name;
  std::function<std::unique_ptr<Store>(const std::string& dir, Policy policy, bool variant)> open;
  std::function<ScanResult(const std::string& dir)> scan;
};

struct Config {
  const Backend* backend;
  Policy policy;
  bool variant;  // RocksDB kAlways: our own group commit over SyncWAL
  std::string label;
};

struct RunResult {
  std::string problem;  // empty when correct and complete
  uint64_t consumed = 0;  // results consumed (all tasks unless it timed out)
  double seconds = 0;
  uint64_t syncs = 0;
  double sync_ms = 0;  // mean fsync/fdatasync latency
  double cpu_seconds = 0;
  DiskUsage end;    // after consumption, store open
  DiskUsage final;  // after Compact and Close
};

RunResult RunWorkload(const Config& config, const std::string& dir, uint64_t n,
                      absl::Duration timeout) {
  RunResult result;
  std::filesystem::create_directories(dir);
  std::unique_ptr<Store> store = config.backend->open(dir, config.policy, config.variant);

  const uint64_t syncs0 = g_sync_calls.load();
  const uint64_t sync_nanos0 = g_sync_nanos.load();
  const double cpu0 = CpuSeconds();
  const absl::Time start = absl::Now();
  Pipeline pipe(kWindow, start + timeout);

  std::thread producer([&] {
    Batch batch;
    std::vector<uint64_t> ids;
    for (uint64_t next = 0; next < n;) {
      const uint64_t k = std::min<uint64_t>(kProducerBatch, n - next);
      if (!pipe.EnterWindow(k)) return;
      batch.clear();
      ids.clear();
      for (uint64_t id = next; id < next + k; ++id) {
        batch.push_back(MakePutTask(id));
        ids.push_back(id);
      }
      store->Write(batch);
      pipe.PushReady(ids);
      next += k;
    }
  });
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&] {
      Batch batch;
      std::vector<uint64_t> ids;
      while (pipe.PopReady(kWorkerBatch, &ids)) {
        batch.clear();
        for (uint64_t id : ids) batch.push_back(MakeLease(id, 1));
        store->Write(batch);
        batch.clear();
        for (uint64_t id : ids) batch.push_back(MakeComplete(id, 1));
        store->Write(batch);
        pipe.PushResults(ids);
      }
    });
  }
  std::vector<uint8_t> seen(n, 0);
  uint64_t consumed = 0;
  uint64_t bad = 0;  // duplicates or unknown ids
  std::thread consumer([&] {
    Batch batch;
    std::vector<uint64_t> ids;
    while (consumed < n && pipe.PopResults(kConsumerBatch, &ids)) {
      batch.clear();
      for (uint64_t id : ids) batch.push_back(MakeDeleteResult(id));
      store->Write(batch);
      for (uint64_t id : ids) {
        if (id >= n || seen[id]++ != 0) ++bad;
      }
      consumed += ids.size();
      pipe.LeaveWindow(ids.size());
    }
    pipe.Stop();
  });
  consumer.join();
  producer.join();
  for (auto& t : workers) t.join();
  store->Drain();
  result.seconds = Seconds(start);
  result.consumed = consumed;
  result.cpu_seconds = CpuSeconds() - cpu0;
  result.syncs = g_sync_calls.load() - syncs0;
  if (result.syncs > 0) {
    result.sync_ms = static_cast<double>(g_sync_nanos.load() - sync_nanos0) * 1e-6 /
                     static_cast<double>(result.syncs);
  }

  if (pipe.timed_out()) {
    result.problem = Format("timed out after %s (%llu of %llu consumed)",
                            absl::FormatDuration(timeout).c_str(),
                            static_cast<unsigned long long>(consumed),
                            static_cast<unsigned long long>(n));
  } else if (bad != 0) {
    result.problem = Format("%llu duplicate or unknown results", static_cast<unsigned long long>(bad));
  } else if (std::count(seen.begin(), seen.end(), uint8_t{1}) != static_cast<ptrdiff_t>(n)) {
    result.problem = "missing results";
  }
  const LiveCounts live = store->CountLive();
  if (result.problem.empty() && live.changes != live.changes_per_task * n) {
    result.problem = Format("the store applied %llu changes, want %llu",
                            static_cast<unsigned long long>(live.changes),
                            static_cast<unsigned long long>(live.changes_per_task * n));
  }
  if (result.problem.empty() && (live.tasks || live.leases || live.results)) {
    result.problem = Format("store not empty after the run: %llu tasks, %llu leases, %llu results",
                            static_cast<unsigned long long>(live.tasks),
                            static_cast<unsigned long long>(live.leases),
                            static_cast<unsigned long long>(live.results));
  }
  result.end = DirUsage(dir);
  store->Compact();
  store->Close(false);
  store.reset();
  result.final = DirUsage(dir);
  std::filesystem::remove_all(dir);
  return result;
}

struct RecoveryResult {
  std::string problem;
  double write_seconds = 0;
  ScanResult warm;  // reopened right after the writer closed (kill -9 of the process)
  ScanResult cold;  // reopened again after evicting the files from the page cache
  DiskUsage disk;
};

// Writes m queued tasks (policy never, batches of 100), closes as a crash
// would, then times open + scan of all task records twice.
RecoveryResult RunRecovery(const Backend& backend, const std::string& dir, uint64_t m,
                           absl::Duration timeout) {
  RecoveryResult result;
  std::filesystem::create_directories(dir);
  const absl::Time start = absl::Now();
  {
    std::unique_ptr<Store> store = backend.open(dir, Policy::kNever, false);
    Batch batch;
    for (uint64_t next = 0; next < m; next += kProducerBatch) {
      if (absl::Now() > start + timeout) {
        result.problem = Format("writing %llu tasks took over %s", static_cast<unsigned long long>(m),
                                absl::FormatDuration(timeout).c_str());
        store->Close(true);
        std::filesystem::remove_all(dir);
        return result;
      }
      batch.clear();
      for (uint64_t id = next; id < std::min(m, next + kProducerBatch); ++id) {
        batch.push_back(MakePutTask(id));
      }
      store->Write(batch);
    }
    store->Drain();
    store->Close(true);
  }
  result.write_seconds = Seconds(start);
  result.warm = backend.scan(dir);
  EvictFromPageCache(dir);
  result.cold = backend.scan(dir);
  result.disk = DirUsage(dir);
  const uint64_t want_bytes = m * kTaskValueBytes;
  for (const ScanResult* scan : {&result.warm, &result.cold}) {
    if (scan->tasks != m || (scan->bytes != want_bytes && scan->bytes != m * kPayloadBytes)) {
      result.problem = Format("scan found %llu tasks (%llu bytes), want %llu",
                              static_cast<unsigned long long>(scan->tasks),
                              static_cast<unsigned long long>(scan->bytes),
                              static_cast<unsigned long long>(m));
    }
  }
  std::filesystem::remove_all(dir);
  return result;
}

// Raw fdatasync latency on the data directory's file system, for context:
// 4 KiB appended to a growing file (the size changes: a journal commit),
// then 4 KiB overwritten in place in the same, already synced file.
std::string ProbeFsync(const std::string& dir) {
  const std::string path = dir + "/fsync-probe";
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) Die("open %s: %s", path.c_str(), std::strerror(errno));
  char block[4096];
  std::memset(block, 'x', sizeof block);
  constexpr int kRounds = 200;
  auto measure = [&](bool append) {
    std::vector<double> ms;
    const absl::Time give_up = absl::Now() + absl::Seconds(5);
    for (int i = 0; i < kRounds && absl::Now() < give_up; ++i) {
      const ssize_t n = append ? write(fd, block, sizeof block)
                               : pwrite(fd, block, sizeof block, static_cast<off_t>(i) * 4096);
      if (n != static_cast<ssize_t>(sizeof block)) Die("probe write: %s", std::strerror(errno));
      const absl::Time t = absl::Now();
      if (fdatasync(fd) != 0) Die("probe fdatasync: %s", std::strerror(errno));
      ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    }
    std::sort(ms.begin(), ms.end());
    double sum = 0;
    for (double v : ms) sum += v;
    return Format("avg %.3f p50 %.3f p99 %.3f ms (n=%zu)", sum / static_cast<double>(ms.size()),
                  ms[ms.size() / 2], ms[std::min(ms.size() - 1, ms.size() * 99 / 100)], ms.size());
  };
  const std::string append = measure(true);
  const std::string overwrite = measure(false);
  close(fd);
  unlink(path.c_str());
  return "append 4 KiB + fdatasync: " + append + "; overwrite 4 KiB in place + fdatasync: " + overwrite;
}

std::string FsName(const std::string& dir) {
  struct statfs fs{};
  if (statfs(dir.c_str(), &fs) != 0) return "?";
  switch (static_cast<unsigned long>(fs.f_type)) {
    case 0xEF53: return "ext4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x01021994: return "tmpfs (NOT a disk: fsync is free)";
    case 0x794c7630: return "overlayfs";
    default: return Format("f_type 0x%lx", static_cast<unsigned long>(fs.f_type));
  }
}

std::string Mib(uint64_t bytes) {
  if (bytes < (1 << 20)) return Format("%.0f KiB", static_cast<double>(bytes) / 1024);
  return Format("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
}

std::string LoadAverage() {
  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) != 3) return "?";
  return Format("%.2f %.2f %.2f", load[0], load[1], load[2]);
}

constexpr char kUsage[] =
    "usage: taskq-store-spike [--tasks N] [--recovery-tasks M] [--dir DIR]\n"
    "         [--timeout SECONDS] [--only LABELS] [--no-recovery]\n"
    "\n"
    "Runs the square workload's write pattern against RocksDB, SQLite (WAL)\n"
    "and an append-only log under fsync policies always/interval/never, then\n"
    "recovery of M queued tasks per store, and prints one markdown table.\n"
    "  --tasks N           tasks per config (default 200000)\n"
    "  --recovery-tasks M  queued tasks for the recovery scan (default 1000000)\n"
    "  --dir DIR           data directories go in a fresh DIR/spike.XXXXXX,\n"
    "                      removed at the end (default /work/tmp-spike)\n"
    "  --timeout SECONDS   abort one config after this long (default 120)\n"
    "  --only LABELS       comma-separated backend or backend/policy labels,\n"
    "                      e.g. rocksdb,log/always\n"
    "  --no-recovery       skip the recovery scans\n"
    "Backends: rocksdb (RocksDB's defaults), rocksdb-mt4 (4 MiB memtable),\n"
    "sqlite, log.\n";

std::vector<std::string> SplitCommas(const std::string& text) {
  std::vector<std::string> items;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    if (comma > pos) items.push_back(text.substr(pos, comma - pos));
    pos = comma + 1;
  }
  return items;
}

// `label` is "backend/policy"; an item selects it if it is the backend or
// a prefix of the label that includes the backend and a slash.
bool Selected(const std::string& only, const std::string& label) {
  if (only.empty()) return true;
  for (const std::string& item : SplitCommas(only)) {
    if (label.compare(0, item.size(), item) != 0) continue;
    if (item.find('/') != std::string::npos || label[item.size()] == '/') return true;
  }
  return false;
}

bool BackendSelected(const std::string& only, const std::string& backend) {
  if (only.empty()) return true;
  for (const std::string& item : SplitCommas(only)) {
    if (item.substr(0, item.find('/')) == backend) return true;
  }
  return false;
}

int Main(int argc, char** argv) {
  uint64_t tasks = 200000;
  uint64_t recovery_tasks = 1000000;
  std::string base = "/work/tmp-spike";
  double timeout_s = 120;
  std::string only;
  bool recovery = true;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fputs(kUsage, stderr);
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--tasks") tasks = std::stoull(value());
    else if (arg == "--recovery-tasks") recovery_tasks = std::stoull(value());
    else if (arg == "--dir") base = value();
    else if (arg == "--timeout") timeout_s = std::stod(value());
    else if (arg == "--only") only = value();
    else if (arg == "--no-recovery") recovery = false;
    else {
      std::fputs(kUsage, stderr);
      return arg == "--help" || arg == "-h" ? 0 : 2;
    }
  }
  if (tasks == 0 || recovery_tasks == 0 || timeout_s <= 0) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const absl::Duration timeout = absl::Seconds(timeout_s);

  InitCrcTable();
  g_crc_hw = __builtin_cpu_supports("sse4.2");
  std::filesystem::create_directories(base);
  std::string root = base + "/spike.XXXXXX";
  if (mkdtemp(root.data()) == nullptr) Die("mkdtemp %s: %s", root.c_str(), std::strerror(errno));
  g_root = root;

  std::printf("fdatasync on %s (%s): %s\n", root.c_str(), FsName(root).c_str(), ProbeFsync(root).c_str());
  std::printf("store spike: %llu tasks per config (put batch %zu, lease/complete batch <= %zu, "
              "consume batch <= %zu, window %llu, %d workers), recovery of %llu tasks; "
              "rocksdb %d.%d.%d, sqlite %s, crc32c %s; %u cores, load %s\n",
              static_cast<unsigned long long>(tasks), kProducerBatch, kWorkerBatch, kConsumerBatch,
              static_cast<unsigned long long>(kWindow), kWorkers,
              static_cast<unsigned long long>(recovery_tasks), ROCKSDB_MAJOR, ROCKSDB_MINOR,
              ROCKSDB_PATCH, sqlite3_libversion(), g_crc_hw ? "sse4.2" : "table",
              std::thread::hardware_concurrency(), LoadAverage().c_str());
  std::fflush(stdout);

  const Backend rocks{"rocksdb",
                      [](const std::string& dir, Policy policy, bool variant) -> std::unique_ptr<Store> {
                        return std::make_unique<RocksStore>(dir, policy, variant, 0);
                      },
                      [](const std::string& dir) { return RocksStore::Scan(dir, 0); }};
  const Backend rocks_mt4{"rocksdb-mt4",
                          [](const std::string& dir, Policy policy, bool variant) -> std::unique_ptr<Store> {
                            return std::make_unique<RocksStore>(dir, policy, variant, 4);
                          },
                          [](const std::string& dir) { return RocksStore::Scan(dir, 4); }};
  const Backend sqlite{"sqlite",
                       [](const std::string& dir, Policy policy, bool) -> std::unique_ptr<Store> {
                         return std::make_unique<SqliteStore>(dir, policy);
                       },
                       SqliteStore::Scan};
  const Backend log{"log",
                    [](const std::string& dir, Policy policy, bool) -> std::unique_ptr<Store> {
                      return std::make_unique<LogStore>(dir, policy);
                    },
                    LogStore::Scan};
  const std::vector<Config> configs = {
      {&rocks, Policy::kAlways, false, "always (sync=true)"},
      {&rocks, Policy::kAlways, true, "always (own gc)"},
      {&rocks, Policy::kInterval, false, "interval"},
      {&rocks, Policy::kNever, false, "never"},
      {&rocks_mt4, Policy::kAlways, false, "always (sync=true)"},
      {&rocks_mt4, Policy::kInterval, false, "interval"},
      {&rocks_mt4, Policy::kNever, false, "never"},
      {&sqlite, Policy::kAlways, false, "always"},
      {&sqlite, Policy::kInterval, false, "interval"},
      {&sqlite, Policy::kNever, false, "never"},
      {&log, Policy::kAlways, false, "always"},
      {&log, Policy::kInterval, false, "interval"},
      {&log, Policy::kNever, false, "never"},
  };

  bool all_ok = true;
  std::vector<std::pair<const Config*, RunResult>> runs;
  int index = 0;
  for (const Config& config : configs) {
    const std::string label = config.backend->name + "/" + config.label;
    if (!Selected(only, label)) continue;
    RunResult run = RunWorkload(config, root + "/run" + std::to_string(index++), tasks, timeout);
    std::printf("%-28s %9.0f tasks/s  %7llu syncs  %.3f ms/sync  cpu %.2f s  end %s (allocated %s)  "
                "final %s  %s\n",
                label.c_str(), static_cast<double>(run.consumed) / run.seconds,
                static_cast<unsigned long long>(run.syncs), run.sync_ms, run.cpu_seconds,
                Mib(run.end.apparent).c_str(), Mib(run.end.allocated).c_str(),
                Mib(run.final.apparent).c_str(), run.problem.empty() ? "ok" : run.problem.c_str());
    std::fflush(stdout);
    all_ok = all_ok && run.problem.empty();
    runs.emplace_back(&config, std::move(run));
  }

  std::vector<std::pair<const Backend*, RecoveryResult>> recoveries;
  if (recovery) {
    for (const Backend* backend : {&rocks, &rocks_mt4, &sqlite, &log}) {
      if (!BackendSelected(only, backend->name)) continue;
      RecoveryResult r = RunRecovery(*backend, root + "/recovery-" + backend->name, recovery_tasks, timeout);
      std::printf("recovery %-8s write %.2f s, open+scan warm %.3f s (open %.3f), cold %.3f s "
                  "(open %.3f), %s on disk  %s\n",
                  backend->name.c_str(), r.write_seconds, r.warm.seconds, r.warm.open_seconds,
                  r.cold.seconds, r.cold.open_seconds,
                  Mib(r.disk.apparent).c_str(), r.problem.empty() ? "ok" : r.problem.c_str());
      std::fflush(stdout);
      all_ok = all_ok && r.problem.empty();
      recoveries.emplace_back(backend, std::move(r));
    }
  }

  const std::string recovered = recovery_tasks % 1000000 == 0
                                    ? Format("%lluM", static_cast<unsigned long long>(recovery_tasks / 1000000))
                                    : std::to_string(recovery_tasks);
  std::printf("\n| backend | policy | tasks/s | syncs | tasks/sync | ms/sync | CPU µs/task | disk after run "
              "| disk after compact | recovery %s warm / cold s | ok |\n"
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
              recovered.c_str());
  for (const auto& [config, run] : runs) {
    std::string recovery_cell = "-";
    for (const auto& [backend, r] : recoveries) {
      if (backend == config->backend) {
        recovery_cell = Format("%.3f / %.3f", r.warm.seconds, r.cold.seconds);
      }
    }
    const double per_sync =
        run.syncs ? static_cast<double>(run.consumed) / static_cast<double>(run.syncs) : 0;
    std::printf("| %s | %s | %.0f | %llu | %s | %s | %.1f | %s | %s | %s | %s |\n",
                config->backend->name.c_str(), config->label.c_str(),
                static_cast<double>(run.consumed) / run.seconds, static_cast<unsigned long long>(run.syncs),
                run.syncs ? Format("%.1f", per_sync).c_str() : "-",
                run.syncs ? Format("%.3f", run.sync_ms).c_str() : "-",
                run.cpu_seconds * 1e6 / static_cast<double>(std::max<uint64_t>(run.consumed, 1)),
                Mib(run.end.apparent).c_str(), Mib(run.final.apparent).c_str(), recovery_cell.c_str(),
                run.problem.empty() ? "yes" : run.problem.c_str());
  }
  std::printf("\nload average at the end: %s\n", LoadAverage().c_str());
  std::error_code ignored;
  std::filesystem::remove_all(root, ignored);
  return all_ok ? 0 : 1;
}

}  // namespace
}  // namespace taskq

int main(int argc, char** argv) { return taskq::Main(argc, argv); }
