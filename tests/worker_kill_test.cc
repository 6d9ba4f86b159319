// A worker killed with SIGKILL while it holds leases: its tasks go back to
// ready when its stream ends, another worker runs them, and every task
// yields exactly one result message (results are exactly-once).
#include <signal.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

TEST(WorkerKill, LeasedTasksAreRedeliveredAndYieldOneResultEach) {
  Cluster cluster;
  absl::Status s = cluster.Start();
  ASSERT_TRUE(s.ok()) << s;

  Process* a = cluster.StartWorker({"--concurrency", "4", "--id", "worker-a"});
  ASSERT_NE(a, nullptr);

  std::vector<std::string> args = {"submit", "--queue", "tasks", "--handler", "sleep",
                                   "--reply-to", "res"};
  for (int i = 0; i < 8; ++i) args.push_back("1.5");
  CliResult submit = cluster.Cli(args);
  ASSERT_EQ(submit.exit_code, 0) << Describe(submit);
  std::vector<std::string> ids = Lines(submit.out);
  ASSERT_EQ(ids.size(), 8u) << Describe(submit);
  ASSERT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 8u) << "ids are unique";

  // Worker A holds exactly its concurrency: 4 leased, 4 ready.
  ASSERT_TRUE(WaitFor([&] { return cluster.StatNumber("tasks", "leased") == 4; },
                      absl::Seconds(20), absl::Milliseconds(20)))
      << a->Stderr();
  EXPECT_EQ(cluster.StatNumber("tasks", "ready"), 4);

  a->Kill(SIGKILL);
  ASSERT_EQ(a->Wait(absl::Seconds(10)), 128 + SIGKILL);

  Process* b = cluster.StartWorker({"--concurrency", "8", "--id", "worker-b"});
  ASSERT_NE(b, nullptr);

  std::map<std::string, int> results;  // task id -> count
  const absl::Time deadline = absl::Now() + absl::Seconds(40);
  size_t total = 0;
  while (total < 8 && absl::Now() < deadline) {
    CliResult r = cluster.Cli({"get", "res", "--show-ids", "--max", "8", "--timeout", "2"});
    if (r.exit_code == 3) continue;  // nothing yet
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    for (const std::string& line : Lines(r.out)) {
      std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits('\t', 1));
      ASSERT_EQ(parts.size(), 2u) << line;
      EXPECT_EQ(parts[1], "slept 1.5") << line;
      ++results[parts[0]];
      ++total;
    }
  }
  ASSERT_EQ(total, 8u) << "results received: " << total << "\nworker-b:\n" << b->Stderr();
  for (const auto& [id, count] : results) EXPECT_EQ(count, 1) << "result " << id;
  // `get --show-ids` prints, for a result message, the id of the task it is
  // the result of: exactly the ids submit printed.
  std::set<std::string> got;
  for (const auto& [id, count] : results) got.insert(id);
  EXPECT_EQ(got, std::set<std::string>(ids.begin(), ids.end()));

  // Nothing left and nothing more coming: the queue is finished, and no
  // duplicate result shows up afterwards.
  ASSERT_TRUE(WaitFor([&] { return cluster.StatNumber("tasks", "unfinished") == 0; },
                      absl::Seconds(10), absl::Milliseconds(20)));
  EXPECT_EQ(cluster.StatNumber("tasks", "total_completed"), 8);
  CliResult empty = cluster.Cli({"get", "res", "--nowait"});
  EXPECT_EQ(empty.exit_code, 3) << Describe(empty);
}

}  // namespace
}  // namespace taskq::testing
