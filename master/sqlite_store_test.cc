// SqliteStore on its own: what a sequence of batches leaves on disk (only
// each row's final state counts, however the committer groups them), large
// payloads kept apart, reads by id, one master per data dir, and a reopen
// that finds everything committed.
#include "master/sqlite_store.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/sync.h"
#include "gtest/gtest.h"

namespace taskq {
namespace {

class SqliteStoreTest : public ::testing::Test {
 protected:
  SqliteStoreTest() {
    char tmpl[] = "/tmp/taskq-sqlite-XXXXXX";
    dir_ = mkdtemp(tmpl);
    Open();
  }
  ~SqliteStoreTest() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Open() {
    SqliteStoreOptions options;
    options.dir = dir_;
    options.fsync = FsyncPolicy::kNever;
    options.vacuum_interval = absl::Milliseconds(5);
    auto store = SqliteStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void Reopen() {
    store_.reset();
    Open();
  }
  // Writes the batch and waits until it is committed.
  void WriteAndWait(std::unique_ptr<StoreBatch> batch) {
    const uint64_t seq = store_->Write(std::move(batch));
    Notification done;
    absl::Status status;
    store_->WhenDurable(seq, [&](absl::Status s) {
      status = s;
      done.Notify();
    });
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
    ASSERT_TRUE(status.ok()) << status;
  }
  // id -> (record, payload) of every stored task.
  std::map<uint64_t, std::pair<std::string, std::string>> Tasks() {
    std::map<uint64_t, std::pair<std::string, std::string>> out;
    EXPECT_TRUE(store_->ScanTasks(
                          [&](uint64_t id, absl::string_view record, absl::string_view payload) {
                            out[id] = {std::string(record), std::string(payload)};
                            return true;
                          },
                          /*payloads=*/true)
                    .ok());
    return out;
  }

  std::string dir_;
  std::unique_ptr<SqliteStore> store_;
};

TEST_F(SqliteStoreTest, OnlyEachRowsFinalStateIsStored) {
  // Queued back to back: the committer may take them as one group or many.
  auto a = store_->NewBatch();
  a->AddTask(1, "r1", "p1");
  a->AddTask(2, "r2", "p2");
  a->AddTask(3, "r3", "p3");
  a->PutRecord("qjobs", "v1");
  store_->Write(std::move(a));
  auto b = store_->NewBatch();
  b->UpdateTask(1, "r1-leased");
  b->DeleteTask(2);
  b->PutRecord("qjobs", "v2");
  store_->Write(std::move(b));
  auto c = store_->NewBatch();
  c->UpdateTask(1, "r1-ready-again");
  c->AddTask(4, "r4", "p4");
  c->DeleteTask(4);  // born and gone
  c->PutRecord("qother", "o");
  c->DeleteRecord("qother");
  WriteAndWait(std::move(c));

  auto tasks = Tasks();
  ASSERT_EQ(tasks.size(), 2u);
  EXPECT_EQ(tasks[1], (std::pair<std::string, std::string>{"r1-ready-again", "p1"}));
  EXPECT_EQ(tasks[3], (std::pair<std::string, std::string>{"r3", "p3"}));
  auto jobs = store_->GetRecord("qjobs");
  ASSERT_TRUE(jobs.ok() && jobs->has_value());
  EXPECT_EQ(**jobs, "v2");
  auto other = store_->GetRecord("qother");
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->has_value());

  Reopen();
  EXPECT_EQ(Tasks().size(), 2u);
}

// Deletes go to disk many rows per statement: every count around a
// statement's size, with small and large payloads, leaves exactly the rows
// that were not deleted, also after a reopen.
TEST_F(SqliteStoreTest, DeletesOfManyRowsInOneGroupRemoveExactlyThoseRows) {
  const std::string big(SqliteStore::kInlinePayload + 1, 'x');
  uint64_t next_id = 1;
  std::map<uint64_t, bool> kept;  // id -> large payload
  for (int count : {1, 2, 63, 64, 65, 129, 200}) {
    auto add = store_->NewBatch();
    std::vector<uint64_t> ids;
    for (int i = 0; i < count + 3; ++i) {
      const uint64_t id = next_id++;
      const bool large = id % 3 == 0;
      add->AddTask(id, absl::StrCat("r", id), large ? big : absl::StrCat("p", id));
      ids.push_back(id);
      kept[id] = large;
    }
    WriteAndWait(std::move(add));
    // Delete all but three, spread out, in one batch (one group).
    auto del = store_->NewBatch();
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i == 0 || i == ids.size() / 2 || i + 1 == ids.size()) continue;
      del->DeleteTask(ids[i]);
      kept.erase(ids[i]);
    }
    WriteAndWait(std::move(del));
  }
  for (bool reopened : {false, true}) {
    if (reopened) Reopen();
    auto tasks = Tasks();
    ASSERT_EQ(tasks.size(), kept.size()) << "reopened " << reopened;
    for (const auto& [id, large] : kept) {
      ASSERT_TRUE(tasks.contains(id)) << id;
      EXPECT_EQ(tasks[id].first, absl::StrCat("r", id));
      EXPECT_EQ(tasks[id].second, large ? big : absl::StrCat("p", id));
    }
  }
}

TEST_F(SqliteStoreTest, LargePayloadsLiveApartAndSurviveUpdates) {
  const std::string large(SqliteStore::kInlinePayload + 1, 'L');
  auto a = store_->NewBatch();
  a->AddTask(7, "r", large);
  WriteAndWait(std::move(a));
  auto b = store_->NewBatch();
  b->UpdateTask(7, "r2");
  WriteAndWait(std::move(b));
  std::string read_payload;
  ASSERT_TRUE(store_->ReadTasks({7, 8}, [&](uint64_t id, absl::string_view record,
                                             absl::string_view payload) {
                      EXPECT_EQ(id, 7u);
                      EXPECT_EQ(record, "r2");
                      read_payload = std::string(payload);
                      return true;
                    }).ok());
  EXPECT_EQ(read_payload, large);
  auto c = store_->NewBatch();
  c->DeleteTask(7);
  WriteAndWait(std::move(c));
  EXPECT_TRUE(Tasks().empty());
}

TEST_F(SqliteStoreTest, SpaceOfADrainedBacklogGoesBackToTheFileSystem) {
  const std::string payload(900, 'p');
  for (uint64_t batch = 0; batch < 20; ++batch) {
    auto b = store_->NewBatch();
    for (uint64_t i = 0; i < 1000; ++i) b->AddTask(batch * 1000 + i + 1, "record", payload);
    WriteAndWait(std::move(b));
  }
  const uint64_t full = store_->DiskBytes();
  ASSERT_GT(full, 18u << 20);
  auto drain = store_->NewBatch();
  for (uint64_t id = 1; id <= 20000; ++id) drain->DeleteTask(id);
  WriteAndWait(std::move(drain));
  // The idle committer gives the free pages back, a few MB per round.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (store_->DiskBytes() > full / 4 && absl::Now() < deadline) {
    auto nudge = store_->NewBatch();  // a commit checkpoints the WAL
    nudge->PutRecord("nudge", "x");
    WriteAndWait(std::move(nudge));
  }
  EXPECT_LE(store_->DiskBytes(), full / 4) << "full " << full;
}

TEST_F(SqliteStoreTest, ASecondStoreOnTheSameDirectoryIsRefused) {
  SqliteStoreOptions options;
  options.dir = dir_;
  auto second = SqliteStore::Open(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("in use by another master"), absl::string_view::npos)
      << second.status();
}

TEST_F(SqliteStoreTest, AFreshDataDirAndItsFilesAreOnlyTheOwners) {
  store_.reset();
  SqliteStoreOptions options;
  options.dir = dir_ + "/new/data";
  options.fsync = FsyncPolicy::kNever;
  auto store = SqliteStore::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  store_ = *std::move(store);
  auto batch = store_->NewBatch();
  batch->AddTask(1, "r", "p");
  WriteAndWait(std::move(batch));  // the WAL and its index exist now

  struct stat st;
  ASSERT_EQ(::stat(options.dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u) << std::oct << (st.st_mode & 0777);
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(options.dir)) {
    ASSERT_EQ(::stat(entry.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << entry.path() << " " << std::oct << (st.st_mode & 0777);
    ++files;
  }
  EXPECT_GE(files, 4);  // taskq.db, -wal, -shm, LOCK
}

}  // namespace
}  // namespace taskq
