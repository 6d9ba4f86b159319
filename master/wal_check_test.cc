// InspectWal against logs written by the real SQLite: it keeps exactly the
// transactions SQLite's own recovery keeps, calls a log cut short at its
// end a torn tail, and calls garbage in the middle (committed transactions
// after it) or a damaged header what it is.
#include "master/wal_check.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace taskq {
namespace {

void Exec(sqlite3* db, const std::string& sql) {
  char* error = nullptr;
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error), SQLITE_OK) << error;
}

class WalCheckTest : public ::testing::Test {
 protected:
  WalCheckTest() {
    char tmpl[] = "/tmp/taskq-walcheck-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  ~WalCheckTest() override {
    if (db_ != nullptr) sqlite3_close(db_);
    std::filesystem::remove_all(dir_);
  }

  // A database in WAL mode that never checkpoints by itself, with one
  // table; each Commit() adds one transaction of `rows` rows.
  void Create() {
    ASSERT_EQ(sqlite3_open((dir_ + "/live.db").c_str(), &db_), SQLITE_OK);
    Exec(db_, "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; PRAGMA synchronous=OFF;");
    Exec(db_, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
  }
  void Commit(int rows = 1, int bytes = 100) {
    std::string sql = "BEGIN;";
    for (int i = 0; i < rows; ++i) {
      absl::StrAppend(&sql, "INSERT INTO t(v) VALUES(randomblob(", bytes, "));");
    }
    sql += "COMMIT;";
    Exec(db_, sql);
  }
  // What a kill -9 leaves: the database and its log as they are now (the
  // live connection stays open, so nothing is checkpointed).
  std::string Crash() {
    const std::string out = absl::StrCat(dir_, "/crash", ++crashes_);
    std::filesystem::create_directories(out);
    std::filesystem::copy_file(dir_ + "/live.db", out + "/taskq.db");
    std::filesystem::copy_file(dir_ + "/live.db-wal", out + "/taskq.db-wal");
    return out;
  }
  static std::string Wal(const std::string& dir) { return dir + "/taskq.db-wal"; }
  static void Overwrite(const std::string& path, uint64_t offset, size_t n) {
    int fd = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    std::string garbage(n, '\0');
    for (size_t i = 0; i < n; ++i) garbage[i] = static_cast<char>(0x5a ^ (i * 31));
    ASSERT_EQ(::pwrite(fd, garbage.data(), n, static_cast<off_t>(offset)),
              static_cast<ssize_t>(n));
    ::close(fd);
  }
  // Rows SQLite's own recovery finds in a crashed copy (-1: not even the
  // table).
  static int64_t RowsSqliteRecovers(const std::string& dir) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open((dir + "/taskq.db").c_str(), &db), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    int64_t rows = -1;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      rows = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rows;
  }

  std::string dir_;
  sqlite3* db_ = nullptr;
  int crashes_ = 0;
};

TEST_F(WalCheckTest, NoLogOrAnEmptyOneIsClean) {
  auto none = InspectWal(dir_ + "/missing-wal");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->file_bytes, 0u);
  EXPECT_TRUE(none->TornTail());
  EXPECT_EQ(none->dropped_bytes, 0u);
}

TEST_F(WalCheckTest, AnIntactLogKeepsEveryTransaction) {
  Create();
  for (int i = 0; i < 20; ++i) Commit();
  const std::string crashed = Crash();
  auto r = InspectWal(Wal(crashed));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->header_valid);
  EXPECT_EQ(r->page_size, 4096u);
  EXPECT_EQ(r->kept_transactions, 21u);  // the CREATE TABLE and 20 inserts
  EXPECT_EQ(r->kept_bytes, r->file_bytes);
  EXPECT_EQ(r->dropped_bytes, 0u);
  EXPECT_EQ(r->dropped_frames, 0u);
  EXPECT_EQ(RowsSqliteRecovers(crashed), 20);
}

TEST_F(WalCheckTest, ALogCutShortInItsLastTransactionIsATornTail) {
  Create();
  for (int i = 0; i < 10; ++i) Commit();
  Commit(/*rows=*/200, /*bytes=*/200);  // the last transaction spans many pages
  const std::string crashed = Crash();
  const uint64_t size = std::filesystem::file_size(Wal(crashed));
  std::filesystem::resize_file(Wal(crashed), size - 100);
  auto r = InspectWal(Wal(crashed));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->TornTail());
  EXPECT_EQ(r->kept_transactions, 11u);
  EXPECT_GT(r->dropped_frames, 1u);
  EXPECT_EQ(r->dropped_commits, 1u);  // its commit frame, cut short
  EXPECT_TRUE(r->dropped_commit_is_last);
  EXPECT_EQ(r->kept_bytes + r->dropped_bytes, size - 100);
  EXPECT_EQ(RowsSqliteRecovers(crashed), 10);
}

TEST_F(WalCheckTest, AnUncommittedLastTransactionIsATornTail) {
  Create();
  for (int i = 0; i < 5; ++i) Commit();
  const std::string crashed = Crash();
  // The last transaction's commit frame never made it.
  const uint64_t size = std::filesystem::file_size(Wal(crashed));
  std::filesystem::resize_file(Wal(crashed), size - 4096 - 24);
  auto r = InspectWal(Wal(crashed));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->TornTail());
  EXPECT_EQ(r->dropped_commits, 0u);
  EXPECT_EQ(RowsSqliteRecovers(crashed), 4);
}

TEST_F(WalCheckTest, GarbageInTheMiddleIsNotATornTail) {
  Create();
  for (int i = 0; i < 60; ++i) Commit(/*rows=*/20, /*bytes=*/300);
  const std::string crashed = Crash();
  const uint64_t size = std::filesystem::file_size(Wal(crashed));
  Overwrite(Wal(crashed), size / 2, 4096);
  auto r = InspectWal(Wal(crashed));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->TornTail());
  EXPECT_GT(r->dropped_commits, 10u);
  EXPECT_LT(r->kept_bytes, size / 2 + 1);
  // SQLite itself keeps exactly what InspectWal says and drops the rest.
  EXPECT_EQ(RowsSqliteRecovers(crashed), static_cast<int64_t>(r->kept_transactions - 1) * 20);
}

TEST_F(WalCheckTest, GarbageOverTheLastCommittedTransactionsIsNotATornTail) {
  Create();
  for (int i = 0; i < 10; ++i) Commit();
  const std::string crashed = Crash();
  // Each small transaction is one or two frames; the second to last is hit.
  const uint64_t size = std::filesystem::file_size(Wal(crashed));
  Overwrite(Wal(crashed), size - 3 * (4096 + 24), 64);
  auto r = InspectWal(Wal(crashed));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->TornTail()) << r->dropped_commits;
}

TEST_F(WalCheckTest, ADamagedHeaderIsNotATornTail) {
  Create();
  for (int i = 0; i < 10; ++i) Commit();
  const std::string crashed = Crash();
  Overwrite(Wal(crashed), 0, 32);
  auto r = InspectWal(Wal(crashed), /*db_page_size=*/4096);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->header_valid);
  EXPECT_EQ(r->kept_bytes, 0u);
  EXPECT_FALSE(r->TornTail());
  EXPECT_GE(r->dropped_commits, 10u);
  // SQLite ignores the whole log, even the CREATE TABLE in it.
  EXPECT_EQ(RowsSqliteRecovers(crashed), -1);
}

TEST_F(WalCheckTest, FramesARestartLeftBehindDoNotCount) {
  Create();
  for (int i = 0; i < 30; ++i) Commit();
  // A complete checkpoint, then one write: SQLite starts the log over from
  // its beginning with new salts; the old frames stay behind it.
  Exec(db_, "PRAGMA wal_checkpoint(PASSIVE)");
  Commit();
  const std::string crashed = Crash();
  auto r = InspectWal(Wal(crashed));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kept_transactions, 1u);
  EXPECT_GT(r->dropped_bytes, 0u);  // the old generation
  EXPECT_EQ(r->dropped_frames, 0u);
  EXPECT_TRUE(r->TornTail());
  EXPECT_EQ(RowsSqliteRecovers(crashed), 31);
}

}  // namespace
}  // namespace taskq
