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
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/client.h"
#include "taskq/v1/taskq.grpc.pb.h"
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
  // write is gone, and the log says what was dropped and, honestly, what
  // that means: the last put was acknowledged (its reply waited for the
  // sync), so only a crash mid-write would have made it unacknowledged.
  CliResult got = cluster.Cli({"get", "jobs", "--max", "10", "--nowait"});
  ASSERT_EQ(got.exit_code, 0) << Describe(got);
  EXPECT_EQ(got.out, "one\ntwo\n");
  const std::string log = cluster.master()->Stderr();
  EXPECT_TRUE(absl::StrContains(log, "ended in a torn transaction")) << log;
  EXPECT_TRUE(absl::StrContains(log, "was dropped")) << log;
  EXPECT_TRUE(absl::StrContains(log, "--fsync always")) << log;
  EXPECT_TRUE(absl::StrContains(log, "if its bytes were damaged after the sync, it had")) << log;
  EXPECT_FALSE(absl::StrContains(log, "none of it had been acknowledged")) << log;
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
  void Fill(const std::string& name = "filler") { Write(name, uint64_t{1} << 40); }
  // Fills all but about `bytes` of what is left.
  void FillLeaving(uint64_t bytes) {
    const uint64_t free_bytes = FreeBytes();
    if (free_bytes > bytes) Write("filler", free_bytes - bytes);
  }
  // A file of `bytes` (or as much as fits).
  void Write(const std::string& name, uint64_t bytes) {
    std::ofstream out(path_ + "/" + name, std::ios::binary);
    std::string block(64 << 10, 'f');
    for (uint64_t done = 0; done < bytes; done += block.size()) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(block.size(), bytes - done));
      if (!out.write(block.data(), static_cast<std::streamsize>(n))) break;
    }
  }
  void Free(const std::string& name = "filler") { std::filesystem::remove(path_ + "/" + name); }
  uint64_t FreeBytes() const {
    struct statvfs fs;
    if (::statvfs(path_.c_str(), &fs) != 0) return 0;
    return static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
  }

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
  // The first that fails may have been made and then failed to commit: its
  // outcome is unknown (the retry may store it), which it says.
  absl::Status refused;
  for (int i = 0; i < 200 && refused.ok(); ++i) refused = put(16, 64 << 10);
  if (refused.code() == absl::StatusCode::kUnavailable) {
    EXPECT_TRUE(absl::StrContains(refused.message(), "outcome unknown")) << refused;
    refused = put(16, 64 << 10);
  }
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


// --- damage in the middle of the write-ahead log ----------------------------------------

// `n` acknowledged puts of 100 tasks each (one transaction each).
std::vector<uint64_t> PutInTransactions(Client& client, int n) {
  std::vector<uint64_t> acked;
  for (int p = 0; p < n; ++p) {
    std::vector<v1::TaskSpec> specs;
    for (int i = 0; i < 100; ++i) specs.push_back(Spec(absl::StrCat("task-", p, "-", i)));
    auto ids = client.Put("jobs", std::move(specs));
    EXPECT_TRUE(ids.ok()) << ids.status();
    if (ids.ok()) acked.insert(acked.end(), ids->begin(), ids->end());
  }
  return acked;
}

void OverwriteWithGarbage(const std::string& path, uint64_t offset, size_t n) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  std::string garbage(n, '\0');
  for (size_t i = 0; i < n; ++i) garbage[i] = static_cast<char>(0xa5 ^ (i * 131));
  ASSERT_EQ(::pwrite(fd, garbage.data(), n, static_cast<off_t>(offset)), static_cast<ssize_t>(n));
  ::close(fd);
}

TEST(Durability, GarbageInTheMiddleOfTheWalStopsTheStartUnlessTheLossIsAccepted) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  std::unique_ptr<Client> client = ClientOf(cluster);
  ASSERT_NE(client, nullptr);
  const std::vector<uint64_t> acked = PutInTransactions(*client, 30);
  ASSERT_EQ(acked.size(), 3000u);
  // kill -9 (the WAL stays as it is), then 4 KiB of garbage in its middle.
  cluster.master()->Kill(SIGKILL);
  ASSERT_TRUE(cluster.master()->Wait(absl::Seconds(10)).has_value());
  const std::string wal = Wal(cluster.data_dir());
  const uint64_t wal_bytes = std::filesystem::file_size(wal);
  ASSERT_GT(wal_bytes, 64u << 10);
  OverwriteWithGarbage(wal, wal_bytes / 2, 4096);
  const std::string damaged = ReadFile(wal);

  // The master refuses to start, says why and what to do, and leaves the
  // log as it was.
  auto refused = cluster.Spawn(
      "master-refused", {BinPath("taskq-master"), "--listen", "127.0.0.1:0", "--token-file",
                         cluster.token_file(), "--data-dir", cluster.data_dir()});
  ASSERT_NE(refused, nullptr);
  const std::optional<int> code = refused->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.has_value()) << "the master started on a damaged log: " << refused->Stderr();
  EXPECT_NE(*code, 0);
  const std::string why = refused->Stderr();
  EXPECT_TRUE(absl::StrContains(why, wal)) << why;
  EXPECT_TRUE(absl::StrContains(why, "damaged")) << why;
  EXPECT_TRUE(absl::StrContains(why, "committed transactions")) << why;
  EXPECT_TRUE(absl::StrContains(why, "--recover-truncate")) << why;
  EXPECT_FALSE(absl::StrContains(why, "none of it had been acknowledged")) << why;
  EXPECT_TRUE(ReadFile(wal) == damaged) << "the refused start changed the log";

  // With --recover-truncate it starts, keeps a copy of the damaged log,
  // and says what it lost.
  Cluster accepted;
  ASSERT_TRUE(accepted.Start({"--data-dir", cluster.data_dir(), "--recover-truncate"}).ok());
  const std::string log = accepted.master()->Stderr();
  EXPECT_TRUE(absl::StrContains(log, "ERROR")) << log;
  EXPECT_TRUE(absl::StrContains(log, "--recover-truncate")) << log;
  EXPECT_TRUE(absl::StrContains(log, "committed transactions")) << log;
  bool copied = false;
  for (const auto& entry : std::filesystem::directory_iterator(cluster.data_dir())) {
    if (absl::StartsWith(entry.path().filename().string(), "taskq.db-wal.damaged-")) {
      copied = ReadFile(entry.path().string()) == damaged;
    }
  }
  EXPECT_TRUE(copied) << "no copy of the damaged log in " << cluster.data_dir();
  std::unique_ptr<Client> after = ClientOf(accepted);
  ASSERT_NE(after, nullptr);
  auto stats = after->Stats("jobs");
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_LT(stats->ready(), 3000u);
  const uint64_t kept = stats->ready();

  // The loss was accepted once: later starts (also after a kill -9) are
  // clean and keep what is there.
  ASSERT_EQ(PutInTransactions(*after, 2).size(), 200u);
  ASSERT_TRUE(accepted.RestartMaster(SIGKILL).ok());
  EXPECT_FALSE(absl::StrContains(accepted.master()->Stderr(), "committed transactions"))
      << accepted.master()->Stderr();
  after = ClientOf(accepted);
  ASSERT_NE(after, nullptr);
  stats = after->Stats("jobs");
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->ready(), kept + 200);
}

// --- full disk: refused or unknown, never "refused" and stored ---------------------------

TEST(Durability, PutWhoseCommitFailsOnAFullDiskSaysItsOutcomeIsUnknown) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs";
  TempDir dir;
  SmallDisk disk(dir.path() + "/disk", 64);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here: " << disk.why();
  Cluster cluster;
  ASSERT_TRUE(
      cluster.Start({"--data-dir", dir.path() + "/disk/data", "--min-free-disk-mb", "1"}).ok());
  std::unique_ptr<Client> client = ClientOf(cluster);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Put("small", {Spec("x")}).ok());

  // 2 MB free: above the 1 MB reserve, so the put is taken; its 3 MB
  // commit then fails with ENOSPC. (One request: the client library splits
  // puts at 4 MiB.)
  disk.FillLeaving(2 << 20);
  constexpr int kBig = 48;
  std::vector<v1::TaskSpec> big;
  for (int i = 0; i < kBig; ++i) big.push_back(Spec(std::string(64 << 10, 'b')));
  auto unknown = client->Put("big", std::move(big));
  ASSERT_FALSE(unknown.ok()) << "a 4 MB commit fitted in 3 MB";
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kUnavailable) << unknown.status();
  EXPECT_TRUE(absl::StrContains(unknown.status().message(), "outcome unknown"))
      << unknown.status();
  EXPECT_TRUE(absl::StrContains(unknown.status().message(), "dedup key")) << unknown.status();
  // Meanwhile a put is refused before anything changes: that one is not
  // stored, ever.
  auto refused = client->Put("refused", {Spec("r")});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "disk full")) << refused.status();

  disk.Free();
  ASSERT_TRUE(WaitFor([&] { return client->Put("after", {Spec("a")}).ok(); }, absl::Seconds(30),
                      absl::Milliseconds(100)))
      << cluster.master()->Stderr();
  ASSERT_TRUE(cluster.RestartMaster(SIGKILL).ok());
  client = ClientOf(cluster);
  ASSERT_NE(client, nullptr);
  // The put of unknown outcome was kept and stored by the retry; the
  // refused one was not.
  auto big_stats = client->Stats("big");
  ASSERT_TRUE(big_stats.ok()) << big_stats.status();
  EXPECT_EQ(big_stats->ready(), static_cast<uint64_t>(kBig));
  auto refused_stats = client->Stats("refused");
  EXPECT_TRUE(!refused_stats.ok() || refused_stats->ready() == 0u);
}

// --- a crash on a full disk ---------------------------------------------------------------

uint64_t EpochOf(uint64_t lease_id) { return lease_id >> 40; }

TEST(Durability, MasterCrashedOnAFullDiskStartsReadOnlyAndResumesWhenSpaceIsFreed) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs";
  TempDir dir;
  SmallDisk disk(dir.path() + "/disk", 64);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here: " << disk.why();
  Cluster cluster;
  ASSERT_TRUE(
      cluster.Start({"--data-dir", dir.path() + "/disk/data", "--min-free-disk-mb", "8"}).ok());
  std::unique_ptr<Client> client = ClientOf(cluster);
  ASSERT_NE(client, nullptr);
  std::vector<uint64_t> acked;
  for (int p = 0; p < 10; ++p) {
    std::vector<v1::TaskSpec> specs;
    for (int i = 0; i < 20; ++i) specs.push_back(Spec(std::string(64 << 10, 'x')));
    auto ids = client->Put("jobs", std::move(specs));
    ASSERT_TRUE(ids.ok()) << ids.status();
    acked.insert(acked.end(), ids->begin(), ids->end());
  }
  GetOptions lease;
  lease.lease = true;
  lease.nowait = true;
  auto first = client->Get("jobs", lease);
  ASSERT_TRUE(first.ok() && first->size() == 1) << first.status();
  const uint64_t epoch_before = EpochOf((*first)[0].lease_id());

  // Something else fills the disk (12 MB of it in a file freed later), and
  // the master crashes.
  disk.Write("filler-small", 12 << 20);
  disk.Fill();
  ASSERT_LT(disk.FreeBytes(), 1u << 20);
  ASSERT_TRUE(cluster.RestartMaster(SIGKILL, absl::Seconds(20)).ok())
      << "the master does not start on a full disk";
  const std::string log = cluster.master()->Stderr();
  EXPECT_TRUE(absl::StrContains(log, "starting read-only")) << log;

  // Reads are served; writes are refused as "read-only"; nothing is handed out.
  client = ClientOf(cluster);
  ASSERT_NE(client, nullptr);
  auto stats = client->Stats("jobs");
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->ready(), acked.size());  // the leased one is ready again
  auto task = client->GetTask(acked.back());
  ASSERT_TRUE(task.ok()) << task.status();
  auto put = client->Put("jobs", {Spec("more")});
  EXPECT_EQ(put.status().code(), absl::StatusCode::kResourceExhausted) << put.status();
  EXPECT_TRUE(absl::StrContains(put.status().message(), "read-only")) << put.status();
  auto leased = client->Get("jobs", lease);
  EXPECT_EQ(leased.status().code(), absl::StatusCode::kResourceExhausted) << leased.status();

  // A little space freed: it takes writes again by itself, and replaying
  // the log does not fill the disk again.
  disk.Free("filler-small");
  ASSERT_TRUE(WaitFor([&] { return client->Put("jobs", {Spec("more")}).ok(); },
                      absl::Seconds(30), absl::Milliseconds(100)))
      << cluster.master()->Stderr();
  for (int i = 0; i < 20; ++i) {
    auto more = client->Put("jobs", {Spec("more")});
    ASSERT_TRUE(more.ok()) << "put " << i << " after resuming: " << more.status() << "\n"
                           << cluster.master()->Stderr();
  }
  EXPECT_GE(disk.FreeBytes(), 8u << 20) << cluster.master()->Stderr();
  auto second = client->Get("jobs", lease);
  ASSERT_TRUE(second.ok() && second->size() == 1) << second.status();
  const uint64_t epoch_read_only = EpochOf((*second)[0].lease_id());
  EXPECT_GT(epoch_read_only, epoch_before);

  // The read-only boot's epoch was stored before its first lease: the
  // next boot's leases are newer still; nothing acknowledged was lost.
  ASSERT_TRUE(cluster.RestartMaster(SIGKILL).ok());
  client = ClientOf(cluster);
  ASSERT_NE(client, nullptr);
  auto third = client->Get("jobs", lease);
  ASSERT_TRUE(third.ok() && third->size() == 1) << third.status();
  EXPECT_GT(EpochOf((*third)[0].lease_id()), epoch_read_only);
  for (uint64_t id : acked) {
    auto t = client->GetTask(id);
    ASSERT_TRUE(t.ok()) << "acknowledged task " << id << ": " << t.status();
  }
}

// A checkpoint copies the WAL into the database file, which first has to
// grow by up to the WAL's size. When that does not fit, the WAL waits: it
// is not replayed into the little space freed after a crash on a full disk
// (an older master did that, filled the disk again and failed to start).
TEST(Durability, ALongWalIsNotReplayedIntoTheSpaceFreedAfterACrashOnAFullDisk) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs";
  TempDir dir;
  SmallDisk disk(dir.path() + "/disk", 68);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here: " << disk.why();
  // 56 MB for the master: two ~18 MB transactions and their checkpoints
  // fit, the third one's checkpoint does not (8 MB free, 18 needed).
  disk.Write("filler-kept", 8 << 20);
  disk.Write("filler-small", 4 << 20);  // freed after the crash: still too little
  Cluster cluster;
  // Each put below is one 16 MB request, so one transaction: the master
  // reads requests that large only with large payloads allowed (and the
  // client library would split it at 4 MiB, so it goes through the stub).
  ASSERT_TRUE(cluster
                  .Start({"--data-dir", dir.path() + "/disk/data", "--min-free-disk-mb", "1",
                          "--max-payload-bytes", std::to_string(8 << 20)})
                  .ok());
  std::vector<uint64_t> acked;
  {
    // Released before the restart: a live channel would lend its dead
    // connection to the next one (gRPC shares them by address).
    auto conn = cluster.Connect();
    ASSERT_TRUE(conn.ok()) << conn.status();
    auto stub = v1::TaskQueue::NewStub(conn->channel);
    for (int p = 0; p < 3; ++p) {
      v1::PutRequest req;
      req.set_queue("jobs");
      for (int i = 0; i < 1000; ++i) req.add_tasks()->set_payload(std::string(16000, 'a' + p));
      v1::PutResponse resp;
      grpc::ClientContext ctx;
      PrepareContext(&ctx, conn->token, absl::Seconds(60));
      grpc::Status s = stub->Put(&ctx, req, &resp);
      ASSERT_TRUE(s.ok()) << "put " << p << ": " << s.error_message();
      acked.insert(acked.end(), resp.ids().begin(), resp.ids().end());
    }
  }
  std::unique_ptr<Client> client;
  // The disk fills up, the master crashes, a little space is freed, and
  // it starts again.
  disk.Fill();
  uint64_t freed = 0;
  ASSERT_TRUE(cluster
                  .RestartMaster(SIGKILL, absl::Seconds(30),
                                 [&] {
                                   disk.Free();
                                   disk.Free("filler-small");
                                   freed = disk.FreeBytes();
                                 })
                  .ok());
  client = ClientOf(cluster);
  ASSERT_NE(client, nullptr);
  for (int i = 0; i < 30; ++i) {
    auto put = client->Put("small", {Spec("s")});
    ASSERT_TRUE(put.ok()) << "put " << i << ": " << put.status() << "\n"
                          << cluster.master()->Stderr();
  }
  EXPECT_GE(disk.FreeBytes() + (2 << 20), freed) << cluster.master()->Stderr();
  EXPECT_TRUE(absl::StrContains(cluster.master()->Stderr(), "not checkpointing"))
      << cluster.master()->Stderr();
  for (uint64_t id : {acked.front(), acked.back()}) {
    auto t = client->GetTask(id);
    EXPECT_TRUE(t.ok()) << "acknowledged task " << id << ": " << t.status();
  }
  auto stats = client->Stats("jobs");
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->ready(), acked.size());
}

}  // namespace
}  // namespace taskq::testing
