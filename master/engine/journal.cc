#include "master/engine/journal.h"

#include "absl/strings/str_cat.h"

namespace taskq {

std::string Journal::QueueKey(absl::string_view name) { return absl::StrCat(kQueuePrefix, name); }

std::string Journal::EncodeU64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return out;
}

uint64_t Journal::DecodeU64(absl::string_view s) {
  uint64_t v = 0;
  for (size_t i = 0; i < s.size() && i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(s[i]);
  return v;
}

void Journal::Clear() {
  tasks_.clear();
  new_tasks_.clear();
  queues_.clear();
}

void Journal::Flush(StoreBatch& batch, uint64_t next_task_id,
                    absl::FunctionRef<TaskRecord*(uint64_t)> task,
                    absl::FunctionRef<std::optional<std::string>(const std::string&)> queue,
                    std::vector<TaskRecord*>& written) {
  written.reserve(written.size() + tasks_.size());
  for (uint64_t id : tasks_) {
    const bool fresh = new_tasks_.contains(id);
    TaskRecord* rec = task(id);
    if (rec == nullptr) {
      // Finished (or forgotten). Created and finished in this same step:
      // nothing was ever written.
      if (!fresh) batch.DeleteTask(id);
      continue;
    }
    if (fresh) {
      batch.AddTask(id, SerializeTaskRecord(*rec), rec->task.payload());
    } else {
      batch.UpdateTask(id, SerializeTaskRecord(*rec));
    }
    written.push_back(rec);
  }
  for (const std::string& name : queues_) {
    if (std::optional<std::string> record = queue(name)) {
      batch.PutRecord(QueueKey(name), *std::move(record));
    } else {
      batch.DeleteRecord(QueueKey(name));
    }
  }
  if (next_task_id > ids_reserved_) {
    ids_reserved_ = next_task_id + kIdBlock;
    batch.PutRecord(kNextIdKey, EncodeU64(ids_reserved_));
  }
  Clear();
}

}  // namespace taskq
