// TaskRecord's stored form: each state round-trips, the live task is left
// as it was, and a damaged record is DATA_LOSS.
#include "master/engine/task_record.h"

#include <gtest/gtest.h>

namespace taskq {
namespace {

TaskRecord Sample(TaskRecord::State state) {
  TaskRecord rec;
  rec.task.set_id(42);
  rec.task.set_queue("jobs");
  rec.task.set_payload("the payload");
  rec.task.set_handler("square");
  rec.task.set_reply_to("_results.x");
  rec.task.set_attempt(2);
  rec.state = state;
  rec.key = ReadyKey{3, 17, 42};
  rec.delay = DelayKey{absl::FromUnixMicros(1700000000123456), 9, 42};
  rec.holder_name = "worker-1";
  rec.dedup_key = "k";
  rec.last_error = "boom";
  v1::Attempt a;
  a.set_attempt(1);
  a.set_how("failed");
  rec.history.push_back(a);
  rec.dead_in = "jobs.dead";
  return rec;
}

TEST(TaskRecordTest, EveryStateRoundTrips) {
  for (TaskRecord::State state : {TaskRecord::State::kReady, TaskRecord::State::kDelayed,
                                  TaskRecord::State::kLeased, TaskRecord::State::kDead}) {
    TaskRecord rec = Sample(state);
    const std::string before = rec.task.SerializeAsString();
    const std::string stored = SerializeTaskRecord(rec);
    EXPECT_EQ(rec.task.SerializeAsString(), before) << "the live task is given back unchanged";
    EXPECT_EQ(stored.find("the payload"), std::string::npos) << "the payload is stored apart";

    TaskRecord back;
    absl::StatusOr<v1::TaskState> got = DecodeTaskRecord(42, stored, "the payload", back);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, ProtoState(state));
    EXPECT_EQ(back.state, state);
    EXPECT_EQ(back.task.SerializeAsString(), before);
    EXPECT_EQ(back.key, rec.key);
    EXPECT_EQ(back.dedup_key, "k");
    EXPECT_EQ(back.last_error, "boom");
    ASSERT_EQ(back.history.size(), 1u);
    EXPECT_EQ(back.history[0].how(), "failed");
    if (state == TaskRecord::State::kDelayed) {
      EXPECT_EQ(back.delay.due, rec.delay.due);
      EXPECT_EQ(back.delay.seq, 0u) << "the Schedule gives it its place";
    }
    if (state == TaskRecord::State::kLeased) {
      EXPECT_EQ(back.holder_name, "worker-1");
    }
    if (state == TaskRecord::State::kDead) {
      EXPECT_EQ(back.dead_in, "jobs.dead");
    }
  }
}

TEST(TaskRecordTest, ADamagedRecordIsDataLoss) {
  TaskRecord rec;
  absl::StatusOr<v1::TaskState> got = DecodeTaskRecord(7, "\xff\xff\xff", "", rec);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(got.status().message().find("task record 7"), std::string::npos);
}

TEST(TaskRecordTest, FootprintGrowsWithWhatTheRecordHolds) {
  TaskRecord small;
  TaskRecord big = Sample(TaskRecord::State::kReady);
  EXPECT_GE(Footprint(small), kRecordOverhead);
  EXPECT_GT(Footprint(big), Footprint(small) + big.task.payload().size());
}

}  // namespace
}  // namespace taskq
