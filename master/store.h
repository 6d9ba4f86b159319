// Store: the durable records under the queue engine (the master's
// --data-dir). The engine describes each locked step's changes as one
// atomic batch, hands it over with Write (cheap: the store's own thread
// applies it, so the engine's lock is not held for I/O), and defers the
// replies of that step with WhenDurable, which runs them once the batch is
// stored as the fsync policy promises:
//
//   always    on disk (fdatasync) before any reply; the batches that queue
//             up meanwhile share the next sync (group commit).
//   interval  written to the OS before any reply (kill -9 loses nothing),
//             synced every --fsync-interval-ms (a power cut loses at most
//             that window).
//   never     written to the OS before any reply, never synced by us (the
//             OS writes back when it likes): for throwaway queues.
//
// Batches are applied in Write order, and WhenDurable callbacks run in
// sequence order, so a reply never overtakes the changes it depends on.
//
// Disk full: the store keeps a reserve of free space and reports itself
// unhealthy (RESOURCE_EXHAUSTED) below it, so that client writes are refused
// before the disk is really full; it turns healthy again when space is
// freed. Should a write or sync fail anyway (the disk filled too fast, an
// I/O error), the failed batch and every later one are kept in order in
// memory, every WhenDurable of them fails with that status (nothing
// unstored is acknowledged), and a background retry writes them once it
// can. Either way on_healthy is called when writes are taken again.
//
// Thread-safety: every method is safe from any thread. Write must be called
// in the order the batches' changes were made (the engine calls it under
// its lock).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace taskq {

enum class FsyncPolicy { kAlways, kInterval, kNever };

// "always", "interval" or "never".
absl::StatusOr<FsyncPolicy> ParseFsyncPolicy(absl::string_view name);
absl::string_view FsyncPolicyName(FsyncPolicy policy);

// One atomic group of changes. Two kinds of record: tasks (a record of
// everything but the payload, rewritten when the task's state changes, and
// the payload, written once) and small named records (queues, counters).
class StoreBatch {
 public:
  virtual ~StoreBatch() = default;
  virtual void AddTask(uint64_t id, std::string record, absl::string_view payload) = 0;
  // A new record for an existing task; its payload stays.
  virtual void UpdateTask(uint64_t id, std::string record) = 0;
  virtual void DeleteTask(uint64_t id) = 0;
  virtual void PutRecord(absl::string_view key, std::string value) = 0;
  virtual void DeleteRecord(absl::string_view key) = 0;
  virtual bool empty() const = 0;
};

class Store {
 public:
  using DurableCallback = absl::AnyInvocable<void(absl::Status)>;
  using RecordFn = std::function<bool(absl::string_view key, absl::string_view value)>;
  using TaskFn =
      std::function<bool(uint64_t id, absl::string_view record, absl::string_view payload)>;

  virtual ~Store() = default;

  virtual std::unique_ptr<StoreBatch> NewBatch() = 0;
  // Queues `batch` after every earlier one and returns its sequence number
  // (> 0). Cheap: the batch is applied by the store's own thread. Never
  // refuses: if it cannot be stored, its WhenDurable says so.
  virtual uint64_t Write(std::unique_ptr<StoreBatch> batch) = 0;
  // The sequence number of the last Write (0 before the first).
  virtual uint64_t LastWritten() = 0;
  // Runs `done` once batch `seq` (and so every earlier one) is stored — in
  // the OS (survives kill -9) for every policy, and on disk for `always` —
  // with OK; or with the store's error if it is not stored. May run before
  // returning; otherwise on the store's thread.
  virtual void WhenDurable(uint64_t seq, DurableCallback done) = 0;
  // OK, or why client writes are refused now: RESOURCE_EXHAUSTED (disk
  // full) or UNAVAILABLE (I/O error).
  virtual absl::Status Health() = 0;

  // Reads, of what is stored (not of batches still queued).
  virtual absl::StatusOr<std::optional<std::string>> GetRecord(absl::string_view key) = 0;
  // Records whose key starts with `prefix`, in key order, until fn says stop.
  virtual absl::Status ScanRecords(absl::string_view prefix, const RecordFn& fn) = 0;
  // Tasks in id order, until fn says stop; without payloads (fn gets "")
  // unless `payloads`.
  virtual absl::Status ScanTasks(const TaskFn& fn, bool payloads) = 0;
  // The given tasks (record and payload), those that are stored, in no
  // particular order.
  virtual absl::Status ReadTasks(const std::vector<uint64_t>& ids, const TaskFn& fn) = 0;
  // The sequence number of the last batch that reads can see.
  virtual uint64_t LastCommitted() = 0;
};

}  // namespace taskq
