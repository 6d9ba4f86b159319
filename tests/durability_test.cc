// The durable master's bad days, with the real binaries:
//  - a torn or corrupt tail of the store's newest write-ahead log file (a
//    power cut mid-write): the master starts, recovers every whole record
//    before it, and says in its log what it dropped;
//  - a full disk (a small tmpfs; needs root, skipped otherwise): writes are
//    refused with RESOURCE_EXHAUSTED "disk full", reads are still served,
//    and once space is freed the master takes writes again by itself;
//    nothing it acknowledged is lost across a kill -9 afterwards;
//  - without --data-dir the store lives in the user's XDG data home.
// kill -9 under load is tests/crash_test.cc; store-level fsync behaviour is
// master/durable_engine_test.cc.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/client.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

// The store's write-ahead log (SQLite's WAL file).
std::string Wal(const std::string& data_dir) { return data_dir + "/taskq.db-wal"; }

std::unique_ptr<Client> ClientOf(const Cluster& cluster) {
  auto conn = cluster.Connect();
  EXPECT_TRUE(conn.ok()) << conn.status();
  if (!conn.ok()) return nullptr;
  return std::make_unique<Client>(conn->channel, conn->token);
}

v1::TaskSpec Spec(std::string payload) {
  v1::TaskSpec s;
  s.set_payload(std::move(payload));
  return s;
}

enum class Damage { kTruncate, kCorrupt };

void DamagedTailRecoversToTheLastWholeRecord(Damage damage) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  for (const char* payload : {"one", "two", "three-the-last-write"}) {
    CliResult put = cluster.Cli({"put", "jobs", payload});
    ASSERT_EQ(put.exit_code, 0) << Describe(put);
  }
  absl::Status s = cluster.RestartMaster(SIGKILL, absl::Seconds(30), [&] {
    const std::string wal = Wal(cluster.data_dir());
    ASSERT_TRUE(std::filesystem::exists(wal));
    const auto size = std::filesystem::file_size(wal);
    ASSERT_GT(size, 16u);
    if (damage == Damage::kTruncate) {
      std::filesystem::resize_file(wal, size - 5);  // a write cut short
    } else {
      int fd = ::open(wal.c_str(), O_WRONLY);
      ASSERT_GE(fd, 0);
      const char garbage[8] = {'\xde', '\xad', '\xbe', '\xef', '\xde', '\xad', '\xbe', '\xef'};
      ASSERT_EQ(::pwrite(fd, garbage, sizeof garbage, static_cast<off_t>(size - 8)), 8);
      ::close(fd);
    }
  });
  ASSERT_TRUE(s.ok()) << s;
  // Everything before the damaged record is back, in order; the damaged
  // write is gone, and the log says how many bytes were dropped.
  CliResult got = cluster.Cli({"get", "jobs", "--max", "10", "--nowait"});
  ASSERT_EQ(got.exit_code, 0) << Describe(got);
  EXPECT_EQ(got.out, "one\ntwo\n");
  const std::string log = cluster.master()->Stderr();
  EXPECT_TRUE(absl::StrContains(log, "were dropped")) << log;
  EXPECT_TRUE(absl::StrContains(log, "recovered 1 queues and 2 tasks")) << log;
  // And it takes writes again.
  CliResult put = cluster.Cli({"put", "jobs", "four"});
  EXPECT_EQ(put.exit_code, 0) << Describe(put);
}

TEST(Durability, TruncatedWalTailRecoversToTheLastWholeRecord) {
  DamagedTailRecoversToTheLastWholeRecord(Damage::kTruncate);
}

TEST(Durability, CorruptWalTailRecoversToTheLastWholeRecord) {
  DamagedTailRecoversToTheLastWholeRecord(Damage::kCorrupt);
}

TEST(Durability, WithoutDataDirTheStoreLivesInTheUsersDataHome) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start({"--store", "sqlite"}).ok());
  CliResult put = cluster.Cli({"put", "jobs", "kept"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  const std::string expected = cluster.dir() + "/home/.local/share/taskq";
  EXPECT_TRUE(absl::StrContains(cluster.master()->Stderr(), "store: " + expected))
      << cluster.master()->Stderr();
  EXPECT_TRUE(std::filesystem::exists(expected + "/taskq.db"));
}

// A tmpfs mounted for one test and always unmounted.
class SmallDisk {
 public:
  SmallDisk(const std::string& path, int megabytes) : path_(path) {
    std::filesystem::create_directories(path);
    const std::string opts = absl::StrCat("size=", megabytes, "m");
    mounted_ = ::mount("tmpfs", path.c_str(), "tmpfs", 0, opts.c_str()) == 0;
    if (!mounted_) why_ = strerror(errno);
  }
  ~SmallDisk() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }

  // Fills what is left with a file, so the next write fails with ENOSPC.
  void Fill() {
    std::ofstream out(path_ + "/filler", std::ios::binary);
    std::string block(64 << 10, 'f');
    for (int i = 0; i < 4096 && out.write(block.data(), block.size()); ++i) {
    }
  }
  void Free() { std::filesystem::remove(path_ + "/filler"); }

 private:
  std::string path_;
  bool mounted_ = false;
  std::string why_;
};

TEST(Durability, FullDiskRefusesWritesKeepsReadsAndRecoversWhenSpaceReturns) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs";
  TempDir dir;
  SmallDisk disk(dir.path() + "/disk", 128);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here: " << disk.why();
  Cluster cluster;
  ASSERT_TRUE(
      cluster.Start({"--data-dir", dir.path() + "/disk/data", "--min-free-disk-mb", "16"}).ok());
  std::unique_ptr<Client> client = ClientOf(cluster);
  ASSERT_NE(client, nullptr);

  std::vector<uint64_t> acked;
  auto put = [&](int n, size_t bytes) -> absl::Status {
    std::vector<v1::TaskSpec> specs;
    for (int i = 0; i < n; ++i) specs.push_back(Spec(std::string(bytes, 'x')));
    auto ids = client->Put("jobs", std::move(specs));
    if (ids.ok()) acked.insert(acked.end(), ids->begin(), ids->end());
    return ids.status();
  };
  ASSERT_TRUE(put(10, 100).ok());

  disk.Fill();
  // Writes are refused once the free space is below the reserve (checked
  // every 100 ms, so a few may still fit); a bounded number of 1 MB tries.
  absl::Status refused;
  for (int i = 0; i < 200 && refused.ok(); ++i) refused = put(16, 64 << 10);
  ASSERT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "disk full")) << refused;
  // Later writes are refused up front, with the same reason; reads work.
  absl::Status again = put(1, 10);
  EXPECT_EQ(again.code(), absl::StatusCode::kResourceExhausted) << again;
  auto stats = client->Stats("jobs");
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_GE(stats->ready(), acked.size());
  CliResult take = cluster.Cli({"get", "jobs", "--nowait"});
  EXPECT_NE(take.exit_code, 0) << Describe(take);  // a take is a write too

  disk.Free();
  ASSERT_TRUE(WaitFor([&] { return put(1, 10).ok(); }, absl::Seconds(30),
                      absl::Milliseconds(100)))
      << cluster.master()->Stderr();

  // Nothing acknowledged was lost, before or after the full disk.
  ASSERT_TRUE(cluster.RestartMaster(SIGKILL).ok());
  client = ClientOf(cluster);
  ASSERT_NE(client, nullptr);
  for (uint64_t id : acked) {
    auto task = client->GetTask(id);
    ASSERT_TRUE(task.ok()) << "acknowledged task " << id << ": " << task.status();
    EXPECT_EQ(task->state(), v1::TASK_STATE_READY);
  }
}

}  // namespace
}  // namespace taskq::testing
