// Scenario 2 of the multi-host cluster: a worker host's link goes down
// mid-run, as a black hole (packets held, no error), with errors (TCP
// resets, ICMP unreachable) and as its interface going down.
//
// worker1 runs four exec tasks: two that finish right after the cut (they
// wait for a file the test creates once the link is cut, so their
// completions are late) and two long ones (30 s: they outlive the
// detection bound). Then worker2 and worker3 join and worker1 is cut off.
// What a user must see:
//   - worker1's four tasks start on worker2/worker3 within the detection
//     bound (10 s by default, plus 2 s for the redelivery itself);
//   - worker1 stops the tasks whose leases it can no longer extend, within
//     the same bound (no task process is left on its host);
//   - once worker1 is back, its late completions are refused: every task
//     has exactly one result, and worker1's four tasks have theirs from
//     worker2/worker3.
// Each exec task leaves marker files (dir/markers/<worker>-<n>.start|.done)
// and prints "<n> <worker>" as its result.
#include <sys/stat.h>

#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/cluster/netns_cluster.h"

namespace taskq::testing {
namespace {

// The default detection bound (worker and master keepalive: 5 s ping, 5 s
// to answer) plus time for another worker to take the task.
constexpr absl::Duration kBound = absl::Seconds(12);
// How long the test keeps measuring when the bound is missed.
constexpr absl::Duration kMeasureFor = absl::Seconds(45);

enum class Cut { kBlackHole, kReject, kLinkDown };

std::string CutName(const ::testing::TestParamInfo<Cut>& info) {
  switch (info.param) {
    case Cut::kBlackHole: return "BlackHole";
    case Cut::kReject: return "RejectWithErrors";
    case Cut::kLinkDown: return "LinkDown";
  }
  return "?";
}

// For gtest's messages ("GetParam() = BlackHole").
void PrintTo(Cut cut, std::ostream* os) { *os << CutName({cut, 0}); }

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

class WorkerCut : public ::testing::TestWithParam<Cut> {
 protected:
  void SetUp() override {
    if (std::string why = NetnsCluster::WhyUnavailable(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_TRUE(cluster_.Create().ok());
    absl::Status s = cluster_.StartMaster();
    ASSERT_TRUE(s.ok()) << s;
    markers_ = cluster_.dir() + "/markers";
    ASSERT_EQ(::mkdir(markers_.c_str(), 0755), 0);
  }

  std::string Marker(const std::string& worker, int n, const std::string& what) const {
    return absl::StrCat(markers_, "/", worker, "-", n, ".", what);
  }

  // The `job` exec command of a worker: reads "N HOW", leaves its markers,
  // prints "N WORKER". On worker1 HOW is seconds to sleep, or "go": wait
  // for the file markers/go. The other workers always take 1 s.
  Process* StartWorker(const std::string& host) {
    const std::string run =
        host == "worker1"
            ? absl::StrCat("if [ $how = go ]; then while [ ! -e ", markers_,
                           "/go ]; do /bin/sleep 0.05; done; else /bin/sleep $how; fi")
            : "/bin/sleep 1";
    const std::string job =
        absl::StrCat("job=/bin/sh -c \"read n how; : > ", markers_, "/", host, "-$n.start; ", run,
                     "; : > ", markers_, "/", host, "-$n.done; echo $n ", host, "\"");
    return cluster_.StartWorker(host, {"--concurrency", "4", "--allow-exec", job});
  }

  absl::Status ApplyCut(const std::string& host) {
    switch (GetParam()) {
      case Cut::kBlackHole: return cluster_.net().BlackHole(host);
      case Cut::kReject: return cluster_.net().Reject(host);
      case Cut::kLinkDown: return cluster_.net().LinkDown(host);
    }
    return absl::InternalError("unknown cut");
  }

  NetnsCluster cluster_;
  std::string markers_;
};

TEST_P(WorkerCut, ItsTasksMoveWithinTheBoundItStopsThemAndItsLateResultsAreRefused) {
  Process* w1 = StartWorker("worker1");
  ASSERT_TRUE(cluster_.WaitWorkerConnected(w1));
  CliResult put = cluster_.Cli({"submit", "--queue", "tasks", "--handler", "exec", "--arg", "job",
                                "--reply-to", "results", "1 go", "2 30", "3 go", "4 30"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  std::vector<std::string> ids = Lines(put.out);
  ASSERT_EQ(ids.size(), 4u) << put.out;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (int n = 1; n <= 4; ++n) {
          if (!Exists(Marker("worker1", n, "start"))) return false;
        }
        return true;
      },
      absl::Seconds(30)))
      << "worker1 did not start its four tasks";
  Process* w2 = StartWorker("worker2");
  Process* w3 = StartWorker("worker3");
  ASSERT_TRUE(cluster_.WaitWorkerConnected(w2));
  ASSERT_TRUE(cluster_.WaitWorkerConnected(w3));

  const absl::Time cut = absl::Now();
  absl::Status s = ApplyCut("worker1");
  ASSERT_TRUE(s.ok()) << s;
  // Tasks 1 and 3 finish now, on the far side of the cut: late completions.
  // (Behind a black hole or a dead interface nothing can tell worker1 so
  // soon. Resets may: then it rightly stops them before they finish.)
  ASSERT_TRUE(WriteFile(markers_ + "/go", "").ok());
  const bool late = WaitFor(
      [&] { return Exists(Marker("worker1", 1, "done")) && Exists(Marker("worker1", 3, "done")); },
      absl::Seconds(5));
  if (GetParam() != Cut::kReject) {
    EXPECT_TRUE(late) << "tasks 1 and 3 did not finish on worker1 after the cut";
  }

  // 1. Its tasks go to the other workers within the bound.
  auto moved = [&](int n) {
    return Exists(Marker("worker2", n, "start")) || Exists(Marker("worker3", n, "start"));
  };
  bool all_moved = WaitFor([&] { return moved(1) && moved(2) && moved(3) && moved(4); },
                           kMeasureFor, absl::Milliseconds(20));
  const absl::Duration redelivered = absl::Now() - cut;
  EXPECT_TRUE(all_moved) << "worker1's tasks were not redelivered within "
                         << absl::FormatDuration(kMeasureFor);
  EXPECT_LE(redelivered, kBound) << "worker1's tasks were redelivered only after "
                                 << absl::FormatDuration(redelivered);

  // 2. The cut-off worker stopped them: nothing but the worker is left on
  //    its host, and the long tasks never finished there.
  const pid_t w1_pid = w1->pid();
  bool stopped = WaitFor(
      [&] {
        std::vector<pid_t> left = cluster_.net().Pids("worker1");
        return left.size() == 1 && left[0] == w1_pid;
      },
      std::max(cut + kMeasureFor - absl::Now(), absl::ZeroDuration()), absl::Milliseconds(20));
  const absl::Duration stop_time = absl::Now() - cut;
  EXPECT_TRUE(stopped) << "worker1 still runs task processes "
                       << absl::FormatDuration(kMeasureFor) << " after the cut";
  EXPECT_LE(stop_time, kBound) << "worker1 stopped its tasks only after "
                               << absl::FormatDuration(stop_time);
  EXPECT_FALSE(Exists(Marker("worker1", 2, "done")));
  EXPECT_FALSE(Exists(Marker("worker1", 4, "done")));
  std::cout << "[measure] worker cut (" << CutName({GetParam(), 0})
            << "): tasks redelivered after " << absl::FormatDuration(redelivered)
            << ", cut-off worker stopped them after " << absl::FormatDuration(stop_time) << "\n";

  // 3. It comes back; worker2 and worker3 leave, so the next task can only
  //    run on worker1, after whatever it sends first on its new stream.
  const absl::Time healed = absl::Now();  // Heal returns once the link is up
  s = cluster_.net().Heal("worker1");
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(cluster_.WaitWorkerConnected(w1, absl::Seconds(60), 2)) << "worker1 did not return";
  std::cout << "[measure] worker cut (" << CutName({GetParam(), 0})
            << "): worker1 reconnected " << absl::FormatDuration(absl::Now() - healed)
            << " after the link came back\n";
  ASSERT_TRUE(WaitFor([&] { return moved(1) && moved(2) && moved(3) && moved(4); },
                      absl::Seconds(30)));
  w2->Stop();
  w3->Stop();
  CliResult fifth = cluster_.Cli({"submit", "--queue", "tasks", "--handler", "exec", "--arg",
                                  "job", "--reply-to", "results", "5 0"});
  ASSERT_EQ(fifth.exit_code, 0) << Describe(fifth);
  ids.push_back(std::string(absl::StripAsciiWhitespace(fifth.out)));

  // One result per task; worker1's four from the others, the fifth from it.
  std::map<std::string, std::vector<std::string>> results;  // task id -> payloads
  size_t count = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        CliResult got = cluster_.Cli({"get", "results", "--max", "100", "--timeout", "1",
                                      "--show-ids"});
        for (const std::string& line : Lines(got.out)) {
          std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('\t', 1));
          results[kv.first].push_back(kv.second);
          ++count;
        }
        return count >= ids.size();
      },
      absl::Seconds(60), absl::Milliseconds(1)))
      << count << " results";
  CliResult more = cluster_.Cli({"get", "results", "--nowait", "--show-ids"});
  EXPECT_EQ(more.exit_code, 3) << "a result more than the tasks: " << Describe(more);
  ASSERT_EQ(results.size(), ids.size());
  for (int n = 1; n <= 5; ++n) {
    const std::string& id = ids[n - 1];
    ASSERT_EQ(results[id].size(), 1u) << "task " << n;
    if (n <= 4) {
      EXPECT_TRUE(results[id][0] == absl::StrCat(n, " worker2") ||
                  results[id][0] == absl::StrCat(n, " worker3"))
          << "task " << n << ": " << results[id][0];
    } else {
      EXPECT_EQ(results[id][0], "5 worker1");
    }
  }
  std::cout << "[measure] worker cut (" << CutName({GetParam(), 0})
            << "): tasks 1 and 3 " << (late ? "finished" : "were stopped")
            << " on worker1 after the cut; its log lines about results: "
            << Count(w1->Stderr(), "result for task") << "\n";
}

INSTANTIATE_TEST_SUITE_P(Cuts, WorkerCut,
                         ::testing::Values(Cut::kBlackHole, Cut::kReject, Cut::kLinkDown), CutName);

}  // namespace
}  // namespace taskq::testing
