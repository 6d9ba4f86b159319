// Journal: a step's marks become one batch; ids are reserved a block at a time.
#include "master/engine/journal.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"

namespace taskq {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

// Records what a batch was asked to do, as text.
class RecordingBatch final : public StoreBatch {
 public:
  void AddTask(uint64_t id, std::string, absl::string_view payload) override {
    ops.push_back(absl::StrCat("add ", id, " ", payload));
  }
  void UpdateTask(uint64_t id, std::string) override { ops.push_back(absl::StrCat("update ", id)); }
  void DeleteTask(uint64_t id) override { ops.push_back(absl::StrCat("delete ", id)); }
  void PutRecord(absl::string_view key, std::string value) override {
    records[std::string(key)] = value;
  }
  void DeleteRecord(absl::string_view key) override { records[std::string(key)] = "<deleted>"; }
  bool empty() const override { return ops.empty() && records.empty(); }
  std::vector<std::string> ops;
  std::map<std::string, std::string> records;
};

TEST(JournalTest, MarksAreIgnoredUntilEnabled) {
  Journal journal;
  journal.MarkTask(1);
  journal.MarkQueue("q");
  EXPECT_TRUE(journal.empty());
  journal.Enable();
  journal.MarkTask(1);
  EXPECT_FALSE(journal.empty());
  EXPECT_TRUE(journal.IsMarked(1));
}

TEST(JournalTest, FlushWritesEachMarkOnceAndForgetsThem) {
  Journal journal;
  journal.Enable();
  journal.SetReserved(100);
  TaskRecord updated, fresh;
  fresh.task.set_payload("p");
  journal.MarkTask(1);     // changed
  journal.MarkTask(1);     // twice in one step: written once
  journal.MarkNewTask(2);  // created
  journal.MarkTask(3);     // finished: its stored copy goes
  journal.MarkNewTask(4);  // created and finished in one step: nothing to write
  journal.MarkQueue("jobs");
  journal.MarkQueue("gone");
  RecordingBatch batch;
  std::vector<TaskRecord*> written;
  journal.Flush(
      batch, /*next_task_id=*/5,
      [&](uint64_t id) -> TaskRecord* {
        return id == 1 ? &updated : id == 2 ? &fresh : nullptr;
      },
      [](const std::string& name) -> std::optional<std::string> {
        if (name == "jobs") return std::string("config");
        return std::nullopt;
      },
      written);
  std::sort(batch.ops.begin(), batch.ops.end());
  EXPECT_THAT(batch.ops, ElementsAre("add 2 p", "delete 3", "update 1"));
  EXPECT_THAT(batch.records,
              ElementsAre(Pair("qgone", "<deleted>"), Pair("qjobs", "config")));
  EXPECT_EQ(written.size(), 2u);
  EXPECT_TRUE(journal.empty());
  EXPECT_FALSE(journal.IsMarked(1));
}

TEST(JournalTest, IdsAreReservedABlockAheadOnceTheReservedOnesAreReached) {
  Journal journal;
  journal.Enable();
  journal.SetReserved(10);
  auto flush = [&](uint64_t next_id) {
    RecordingBatch batch;
    std::vector<TaskRecord*> written;
    journal.MarkTask(1);
    journal.Flush(
        batch, next_id, [](uint64_t) -> TaskRecord* { return nullptr; },
        [](const std::string&) -> std::optional<std::string> { return std::nullopt; }, written);
    auto it = batch.records.find(Journal::kNextIdKey);
    return it == batch.records.end() ? uint64_t{0} : Journal::DecodeU64(it->second);
  };
  EXPECT_EQ(flush(5), 0u) << "still within the reserved ids";
  EXPECT_EQ(flush(11), 11 + Journal::kIdBlock);
  EXPECT_EQ(flush(12), 0u);
  EXPECT_EQ(Journal::DecodeU64(Journal::EncodeU64(0x0102030405060708)), 0x0102030405060708u);
}

}  // namespace
}  // namespace taskq
