#include "master/engine/task_record.h"

#include "absl/strings/str_cat.h"
#include "master/memory_budget.h"
#include "taskq/v1/stored.pb.h"

namespace taskq {

v1::TaskState ProtoState(TaskRecord::State state) {
  switch (state) {
    case TaskRecord::State::kDelayed: return v1::TASK_STATE_DELAYED;
    case TaskRecord::State::kReady: return v1::TASK_STATE_READY;
    case TaskRecord::State::kLeased: return v1::TASK_STATE_LEASED;
    case TaskRecord::State::kDead: return v1::TASK_STATE_DEAD;
  }
  return v1::TASK_STATE_UNSPECIFIED;
}

size_t Footprint(const TaskRecord& rec) {
  size_t n = kRecordOverhead + TaskBytes(rec.task) + rec.dedup_key.size() +
             rec.last_error.size() + rec.holder_name.size();
  for (const v1::Attempt& a : rec.history) {
    n += sizeof(v1::Attempt) + a.error().size() + a.worker().size() + a.how().size();
  }
  return n;
}

std::string SerializeTaskRecord(TaskRecord& rec) {
  v1::StoredTask out;
  v1::Task& t = *out.mutable_task();
  // Borrow the task (a swap, not a copy) without its payload, which is
  // stored apart; both go back below.
  t.Swap(&rec.task);
  std::string payload;
  t.mutable_payload()->swap(payload);
  t.set_state(ProtoState(rec.state));
  t.set_dedup_key(rec.dedup_key);
  t.set_last_error(rec.last_error);
  for (const v1::Attempt& a : rec.history) *t.add_history() = a;
  out.set_ready_major(rec.key.major);
  out.set_ready_minor(rec.key.minor);
  out.set_due_unix_us(
      rec.state == TaskRecord::State::kDelayed ? absl::ToUnixMicros(rec.delay.due) : 0);
  out.set_dead_in(rec.state == TaskRecord::State::kDead ? rec.dead_in : "");
  out.set_holder(rec.state == TaskRecord::State::kLeased ? rec.holder_name : "");
  std::string bytes = out.SerializeAsString();
  t.clear_state();
  t.clear_dedup_key();
  t.clear_last_error();
  t.clear_history();
  t.mutable_payload()->swap(payload);
  t.Swap(&rec.task);
  return bytes;
}

namespace {

absl::Status CorruptTask(uint64_t id) {
  return absl::DataLossError(absl::StrCat("store: cannot parse task record ", id,
                                          "; the data dir is damaged (restore a backup)"));
}

}  // namespace

absl::StatusOr<v1::TaskState> DecodeTaskRecord(uint64_t id, absl::string_view record,
                                               absl::string_view payload, TaskRecord& rec) {
  v1::StoredTask st;
  if (!st.ParseFromArray(record.data(), static_cast<int>(record.size()))) {
    return CorruptTask(id);
  }
  v1::Task& t = *st.mutable_task();
  const v1::TaskState state = t.state();
  rec.dedup_key = t.dedup_key();
  rec.last_error = t.last_error();
  rec.history.assign(t.history().begin(), t.history().end());
  t.clear_state();
  t.clear_dedup_key();
  t.clear_last_error();
  t.clear_history();
  rec.task = std::move(t);
  rec.task.set_id(id);
  rec.task.set_payload(std::string(payload));
  rec.key = ReadyKey{st.ready_major(), st.ready_minor(), id};
  switch (state) {
    case v1::TASK_STATE_DELAYED:
      rec.state = TaskRecord::State::kDelayed;
      rec.delay = DelayKey{absl::FromUnixMicros(st.due_unix_us()), 0, id};
      break;
    case v1::TASK_STATE_LEASED:
      rec.state = TaskRecord::State::kLeased;
      rec.holder_name = st.holder();
      break;
    case v1::TASK_STATE_DEAD:
      rec.state = TaskRecord::State::kDead;
      rec.dead_in = st.dead_in();
      break;
    default:
      rec.state = TaskRecord::State::kReady;
      break;
  }
  return state;
}

}  // namespace taskq
