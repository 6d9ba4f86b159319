// The multi-master harness itself (multi_master_cluster.h, cpu_quota.h):
// a CPU quota limits what runs in it and is removed afterwards, a master
// under a quota serves a worker and the CLI across hosts, etcd answers on
// its host, and nothing (namespaces, cgroups) outlives the cluster.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/cluster/cpu_quota.h"
#include "tests/cluster/multi_master_cluster.h"
#include "tests/cluster/netns_cluster.h"

namespace taskq::testing {
namespace {

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

TEST(CpuQuotaTest, ThrottlesWhatRunsInsideAndIsRemovedAfterwards) {
  if (std::string why = CpuQuota::WhyUnavailable(); !why.empty()) GTEST_SKIP() << why;
  std::string path;
  pid_t pid = 0;
  {
    auto quota = CpuQuota::Create("spin", 0.05);
    ASSERT_TRUE(quota.ok()) << quota.status();
    path = (*quota)->path();
    TempDir dir;
    ProcessOptions o;
    o.argv = (*quota)->Wrap({"/bin/sh", "-c", "while :; do :; done"});
    o.output_dir = dir.path();
    o.name = "spin";
    auto spin = Process::Start(o);
    ASSERT_TRUE(spin.ok()) << spin.status();
    pid = (*spin)->pid();
    // A busy loop uses its 5 ms per 100 ms period at once: throttled.
    EXPECT_TRUE(WaitFor([&] { return (*quota)->Throttled() >= 3; }, absl::Seconds(20)))
        << (*quota)->Kind() << " " << path;
    EXPECT_TRUE(absl::StrContains(ReadFile(absl::StrCat("/proc/", pid, "/cgroup")),
                                  path.substr(path.rfind('/'))));
    // Still running when the quota goes: the quota kills it.
    EXPECT_TRUE((*spin)->Running());
    quota->reset();
    EXPECT_TRUE((*spin)->Wait(absl::Seconds(10)).has_value());
  }
  EXPECT_FALSE(Exists(path));
}

TEST(MultiMasterHarnessTest, QuotaMasterServesAcrossHostsAndEverythingIsRemoved) {
  if (std::string why = MultiMasterCluster::WhyUnavailable(/*cluster=*/true, /*cpu_quota=*/true);
      !why.empty()) {
    GTEST_SKIP() << why;
  }
  {
    MultiMasterCluster c;
    MultiMasterCluster::Options o;
    o.masters = 1;
    o.workers = 1;
    o.cluster = true;  // etcd up on its host
    o.master_cores = 0.25;
    ASSERT_TRUE(c.Create(o).ok());
    // etcd answers on its host (what the masters will use).
    auto keys = c.EtcdRead("/taskq/");
    ASSERT_TRUE(keys.ok()) << keys.status();
    EXPECT_TRUE(keys->empty());

    // One master without --cluster (the single-master baseline), under
    // its quota, reached with TLS and the shared token from other hosts.
    MultiMasterCluster plain;
    o.cluster = false;
    ASSERT_TRUE(plain.Create(o).ok());
    absl::Status s = plain.StartMaster(1);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_TRUE(absl::StrContains(ReadFile(absl::StrCat("/proc/", plain.master(1)->pid(),
                                                        "/cgroup")),
                                  "-master1"));
    Process* w = plain.StartWorker("worker1", {"tasks"}, {"--concurrency", "2"});
    ASSERT_TRUE(plain.WaitWorkerConnected(w));
    CliResult r = plain.Cli({"submit", "--queue", "tasks", "--handler", "square", "--wait",
                             "3", "4"});
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(CheckEachOnce(Lines(r.out), {"3 * 3 = 9", "4 * 4 = 16"}), "") << Describe(r);
    EXPECT_GT(plain.MasterCpuSeconds(1), 0);
    EXPECT_GE(plain.MasterThrottled(1), 0);
  }
  // No namespace and no cgroup of this process is left.
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/run/netns", ec)) {
    const std::string name = e.path().filename().string();
    EXPECT_FALSE(absl::StartsWith(name, absl::StrCat("tq", ::getpid(), "-"))) << name;
  }
  for (const char* root : {"/sys/fs/cgroup", "/sys/fs/cgroup/cpu"}) {
    for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
      const std::string name = e.path().filename().string();
      EXPECT_FALSE(absl::StartsWith(name, absl::StrCat("tq", ::getpid(), "-cpu-"))) << name;
    }
  }
}

}  // namespace
}  // namespace taskq::testing
