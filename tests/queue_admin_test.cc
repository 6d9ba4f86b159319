// Queue kinds, administration and join through the CLI: LIFO and priority
// order, queue create/list/stats/delete/purge, and join / join --timeout.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

class QueueAdmin : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start();
    ASSERT_TRUE(s.ok()) << s;
  }
  void Run(std::vector<std::string> args) {
    CliResult r = cluster_.Cli(std::move(args));
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
  }
  // Takes everything from `queue` with --nowait, one get per payload.
  std::vector<std::string> Drain(const std::string& queue) {
    std::vector<std::string> got;
    for (int i = 0; i < 100; ++i) {
      CliResult r = cluster_.Cli({"get", queue, "--nowait"});
      if (r.exit_code == 3) break;
      EXPECT_EQ(r.exit_code, 0) << Describe(r);
      if (r.exit_code != 0) break;
      for (const std::string& l : Lines(r.out)) got.push_back(l);
    }
    return got;
  }
  Cluster cluster_;
};

TEST_F(QueueAdmin, LifoHandsOutNewestFirst) {
  Run({"queue", "create", "stack", "--kind", "lifo"});
  Run({"put", "stack", "a", "b", "c"});
  Run({"put", "stack", "d"});
  EXPECT_EQ(Drain("stack"), (std::vector<std::string>{"d", "c", "b", "a"}));
}

TEST_F(QueueAdmin, PriorityHandsOutLowestValueFirstTiesInPutOrder) {
  Run({"queue", "create", "prio", "--kind", "priority"});
  Run({"put", "prio", "five", "--priority", "5"});
  Run({"put", "prio", "one", "--priority", "1"});
  Run({"put", "prio", "three", "--priority", "3"});
  Run({"put", "prio", "one-again", "--priority", "1"});
  Run({"put", "prio", "zero"});  // default priority 0
  EXPECT_EQ(Drain("prio"),
            (std::vector<std::string>{"zero", "one", "one-again", "three", "five"}));
}

TEST_F(QueueAdmin, ListShowsQueuesWithKindAndCounts) {
  Run({"queue", "create", "alpha", "--kind", "priority"});
  Run({"put", "beta", "x", "y"});  // auto-created on first use
  CliResult r = cluster_.Cli({"queue", "list"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<std::string> lines = Lines(r.out);
  ASSERT_GE(lines.size(), 3u) << Describe(r);
  EXPECT_TRUE(absl::StartsWith(lines[0], "NAME")) << lines[0];
  for (const char* col : {"KIND", "READY", "LEASED", "UNFINISHED", "WORKERS"}) {
    EXPECT_TRUE(absl::StrContains(lines[0], col)) << lines[0];
  }
  bool alpha = false, beta = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> cols = absl::StrSplit(lines[i], ' ', absl::SkipEmpty());
    ASSERT_GE(cols.size(), 6u) << lines[i];
    if (cols[0] == "alpha") {
      alpha = true;
      EXPECT_EQ(cols[1], "priority");
      EXPECT_EQ(cols[2], "0");
    }
    if (cols[0] == "beta") {
      beta = true;
      EXPECT_EQ(cols[1], "fifo");
      EXPECT_EQ(cols[2], "2");  // READY
      EXPECT_EQ(cols[4], "2");  // UNFINISHED
    }
  }
  EXPECT_TRUE(alpha && beta) << r.out;
}

TEST_F(QueueAdmin, StatsReportsSettingsAndCounters) {
  Run({"queue", "create", "st", "--maxsize", "10", "--lease", "5", "--max-attempts", "4"});
  Run({"put", "st", "a", "b", "c"});
  Run({"get", "st", "--nowait"});
  auto stats = cluster_.Stats("st");
  for (const char* key : {"name", "kind", "maxsize", "lease_ms", "max_attempts", "ready", "leased",
                          "unfinished", "total_put", "total_completed", "total_failed",
                          "waiting_consumers", "waiting_producers", "workers"}) {
    EXPECT_TRUE(stats.count(key)) << "missing key " << key;
  }
  EXPECT_EQ(stats["name"], "st");
  EXPECT_EQ(stats["kind"], "fifo");
  EXPECT_EQ(stats["maxsize"], "10");
  EXPECT_EQ(stats["lease_ms"], "5000");
  EXPECT_EQ(stats["max_attempts"], "4");
  EXPECT_EQ(stats["ready"], "2");
  EXPECT_EQ(stats["leased"], "0");
  EXPECT_EQ(stats["unfinished"], "2");
  EXPECT_EQ(stats["total_put"], "3");
  EXPECT_EQ(stats["workers"], "0");
}

TEST_F(QueueAdmin, CreateTwiceNeedsExistOkAndSameSettings) {
  Run({"queue", "create", "dup", "--maxsize", "3"});
  CliResult again = cluster_.Cli({"queue", "create", "dup", "--maxsize", "3"});
  EXPECT_EQ(again.exit_code, 5) << Describe(again);
  Run({"queue", "create", "dup", "--maxsize", "3", "--exist-ok"});
  CliResult different = cluster_.Cli({"queue", "create", "dup", "--maxsize", "4", "--exist-ok"});
  EXPECT_EQ(different.exit_code, 5) << Describe(different);
}

TEST_F(QueueAdmin, PurgeDropsReadyTasks) {
  Run({"put", "pg", "1", "2", "3"});
  CliResult r = cluster_.Cli({"queue", "purge", "pg"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.out, "3")) << Describe(r);
  CliResult get = cluster_.Cli({"get", "pg", "--nowait"});
  EXPECT_EQ(get.exit_code, 3) << Describe(get);
  EXPECT_EQ(cluster_.StatNumber("pg", "ready"), 0);
}

TEST_F(QueueAdmin, DeleteRemovesTheQueue) {
  Run({"queue", "create", "gone", "--kind", "lifo"});
  Run({"put", "gone", "x"});
  Run({"queue", "delete", "gone"});
  CliResult stats = cluster_.Cli({"queue", "stats", "gone"});
  EXPECT_EQ(stats.exit_code, 5) << Describe(stats);
  CliResult list = cluster_.Cli({"queue", "list"});
  ASSERT_EQ(list.exit_code, 0) << Describe(list);
  for (const std::string& line : Lines(list.out)) {
    EXPECT_FALSE(absl::StartsWith(line, "gone ")) << list.out;
  }
  CliResult again = cluster_.Cli({"queue", "delete", "gone"});
  EXPECT_EQ(again.exit_code, 5) << Describe(again);
}

TEST_F(QueueAdmin, DeleteWakesBlockedGet) {
  Run({"queue", "create", "doomed"});
  std::unique_ptr<Process> getter = cluster_.StartCli({"get", "doomed", "--timeout", "30"});
  ASSERT_NE(getter, nullptr);
  ASSERT_TRUE(WaitFor([&] { return cluster_.StatNumber("doomed", "waiting_consumers") == 1; },
                      absl::Seconds(15), absl::Milliseconds(20)));
  Run({"queue", "delete", "doomed"});
  std::optional<int> status = getter->Wait(absl::Seconds(10));
  ASSERT_TRUE(status.has_value()) << "get still blocked after its queue was deleted";
  EXPECT_EQ(*status, 5) << getter->Stderr();
}

TEST_F(QueueAdmin, JoinReturnsWhenWorkerHasCompletedEverything) {
  CliResult submit =
      cluster_.Cli({"submit", "--queue", "jq", "--handler", "sleep", "0.2", "0.2", "0.3"});
  ASSERT_EQ(submit.exit_code, 0) << Describe(submit);
  EXPECT_EQ(cluster_.StatNumber("jq", "unfinished"), 3);
  ASSERT_NE(cluster_.StartWorker({"--queue", "jq", "--concurrency", "2"}), nullptr);
  CliResult join = cluster_.Cli({"join", "jq", "--timeout", "30"});
  EXPECT_EQ(join.exit_code, 0) << Describe(join);
  // join returned only once every task was done.
  EXPECT_EQ(cluster_.StatNumber("jq", "unfinished"), 0);
  EXPECT_EQ(cluster_.StatNumber("jq", "total_completed"), 3);
}

TEST_F(QueueAdmin, JoinTimesOutOnUnfinishedTask) {
  Run({"put", "jt", "pending"});
  CliResult join = cluster_.Cli({"join", "jt", "--timeout", "0.2"});
  EXPECT_EQ(join.exit_code, 8) << Describe(join);
  EXPECT_GE(join.elapsed, absl::Milliseconds(150)) << Describe(join);
  // Python's get() (take mode) marks the task done, so join now returns.
  Run({"get", "jt", "--nowait"});
  CliResult again = cluster_.Cli({"join", "jt", "--timeout", "5"});
  EXPECT_EQ(again.exit_code, 0) << Describe(again);
}

TEST_F(QueueAdmin, ManualTaskDoneHoldsJoinUntilTaskDone) {
  Run({"put", "td", "a", "b"});
  CliResult get = cluster_.Cli({"get", "td", "--max", "2", "--timeout", "5",
                                "--manual-task-done"});
  ASSERT_EQ(get.exit_code, 0) << Describe(get);
  size_t taken = Lines(get.out).size();
  if (taken < 2) Run({"get", "td", "--nowait", "--manual-task-done"});
  EXPECT_EQ(cluster_.StatNumber("td", "unfinished"), 2);
  // Taken but not marked done: join still waits (Python's task_done/join).
  CliResult join = cluster_.Cli({"join", "td", "--timeout", "0.2"});
  EXPECT_EQ(join.exit_code, 8) << Describe(join);
  Run({"task-done", "td"});
  EXPECT_EQ(cluster_.StatNumber("td", "unfinished"), 1);
  Run({"task-done", "td", "--count", "1"});
  CliResult done = cluster_.Cli({"join", "td", "--timeout", "5"});
  EXPECT_EQ(done.exit_code, 0) << Describe(done);
}

TEST_F(QueueAdmin, JoinOnEmptyQueueReturnsAtOnce) {
  Run({"queue", "create", "idle"});
  CliResult join = cluster_.Cli({"join", "idle", "--timeout", "5"});
  EXPECT_EQ(join.exit_code, 0) << Describe(join);
}

}  // namespace
}  // namespace taskq::testing
