// FinishedTasks: what GetTask answers for a finished task, and the bounds.
#include "master/engine/finished_tasks.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace taskq {
namespace {

v1::Task MakeTask(uint64_t id, const std::string& queue = "jobs") {
  v1::Task t;
  t.set_id(id);
  t.set_queue(queue);
  t.set_payload("payload that is not kept");
  t.set_handler("square");
  t.set_priority(-3);
  t.set_reply_to("_results.abc");
  (*t.mutable_headers())["trace"] = "not kept";
  t.add_args("not kept");
  t.set_attempt(2);
  t.set_enqueued_unix_ms(1700000000123);
  t.set_result_of(7);
  t.set_outcome(v1::OUTCOME_OK);
  t.set_error("not kept either");
  return t;
}

TEST(FinishedTasksTest, DescribesWhatWasKeptWithoutPayloadHeadersOrArgs) {
  FinishedTasks finished(10, 1 << 20);
  FinishedTasks::Extra extra;
  extra.dedup_key = "k1";
  extra.last_error = "boom";
  v1::Attempt a;
  a.set_attempt(1);
  a.set_worker("w1");
  a.set_how("failed");
  a.set_error("boom");
  extra.history.push_back(a);
  finished.Add(MakeTask(5), v1::TASK_STATE_DONE, std::move(extra));

  std::optional<v1::Task> got = finished.Describe(5);
  ASSERT_TRUE(got.has_value());
  v1::Task want;
  want.set_id(5);
  want.set_queue("jobs");
  want.set_handler("square");
  want.set_priority(-3);
  want.set_reply_to("_results.abc");
  want.set_attempt(2);
  want.set_enqueued_unix_ms(1700000000123);
  want.set_result_of(7);
  want.set_outcome(v1::OUTCOME_OK);
  want.set_state(v1::TASK_STATE_DONE);
  want.set_dedup_key("k1");
  want.set_last_error("boom");
  *want.add_history() = a;
  EXPECT_EQ(got->SerializeAsString(), want.SerializeAsString()) << got->DebugString();
  EXPECT_EQ(finished.StateOf(5), v1::TASK_STATE_DONE);
  ASSERT_NE(finished.QueueOf(5), nullptr);
  EXPECT_EQ(*finished.QueueOf(5), "jobs");
  EXPECT_FALSE(finished.Describe(6).has_value());
  EXPECT_FALSE(finished.StateOf(6).has_value());
  EXPECT_EQ(finished.QueueOf(6), nullptr);
}

TEST(FinishedTasksTest, ForgetsTheOldestBeyondTheCount) {
  FinishedTasks finished(3, 1 << 20);
  for (uint64_t id = 1; id <= 5; ++id) finished.Add(MakeTask(id), v1::TASK_STATE_DONE, {});
  EXPECT_EQ(finished.size(), 3u);
  EXPECT_FALSE(finished.Contains(1));
  EXPECT_FALSE(finished.Contains(2));
  for (uint64_t id = 3; id <= 5; ++id) {
    ASSERT_TRUE(finished.Describe(id).has_value()) << id;
    EXPECT_EQ(finished.Describe(id)->id(), id);
  }
}

TEST(FinishedTasksTest, ForgetsTheOldestBeyondTheBytesButKeepsTheNewest) {
  FinishedTasks finished(1000, 1);
  finished.Add(MakeTask(1), v1::TASK_STATE_CANCELLED, {});
  finished.Add(MakeTask(2), v1::TASK_STATE_FAILED, {});
  EXPECT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished.StateOf(2), v1::TASK_STATE_FAILED);
}

TEST(FinishedTasksTest, NamesAreSharedAndFreedWithTheirLastRecord) {
  FinishedTasks finished(2, 1 << 20);
  finished.Add(MakeTask(1, "a"), v1::TASK_STATE_DONE, {});
  const size_t one = finished.bytes();
  finished.Add(MakeTask(2, "a"), v1::TASK_STATE_DONE, {});
  const size_t per_record = finished.bytes() - one;  // names shared: no new name
  // Two records on other queues push out both "a" records: "a" is freed.
  finished.Add(MakeTask(3, "b"), v1::TASK_STATE_DONE, {});
  finished.Add(MakeTask(4, "b"), v1::TASK_STATE_DONE, {});
  EXPECT_EQ(finished.bytes(), one + per_record);
  EXPECT_EQ(*finished.QueueOf(4), "b");
  // A freed name's slot is reused and answers with its new text.
  finished.Add(MakeTask(5, "c"), v1::TASK_STATE_DONE, {});
  EXPECT_EQ(*finished.QueueOf(5), "c");
  EXPECT_EQ(*finished.QueueOf(4), "b");
}

TEST(FinishedTasksTest, ManyNamesComingAndGoingStayCorrect) {
  // More names than the recent-name cache holds, each freed and reused.
  FinishedTasks finished(3, 1 << 20);
  for (uint64_t id = 1; id <= 60; ++id) {
    finished.Add(MakeTask(id, "q" + std::to_string(id % 7)), v1::TASK_STATE_DONE, {});
    for (uint64_t back = id > 2 ? id - 2 : 1; back <= id; ++back) {
      ASSERT_EQ(*finished.QueueOf(back), "q" + std::to_string(back % 7)) << id << " " << back;
      ASSERT_EQ(finished.Describe(back)->reply_to(), "_results.abc");
    }
  }
}

TEST(FinishedTasksTest, ZeroRemembersNothing) {
  FinishedTasks finished(0, 1 << 20);
  finished.Add(MakeTask(1), v1::TASK_STATE_DONE, {});
  EXPECT_EQ(finished.size(), 0u);
  EXPECT_FALSE(finished.Contains(1));
}

}  // namespace
}  // namespace taskq
