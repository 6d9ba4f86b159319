// The worker side of leases, end to end with the real master:
//  - `taskq cancel` of a running task: the worker's next heartbeat is
//    refused (CANCELLED), its handler is stopped at once and its slot is
//    free for the next task; no result is reported for it.
//  - graceful drain on SIGTERM: prefetched deliveries are released at once,
//    running ones at the drain deadline (no failure, no attempt counted),
//    and the worker exits 0.
#include <signal.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

TEST(WorkerCancel, CancellingARunningTaskStopsItsHandler) {
  Cluster cluster;
  absl::Status s = cluster.Start();
  ASSERT_TRUE(s.ok()) << s;
  // A 1 s lease: heartbeats every ~333 ms carry the cancellation quickly.
  CliResult create = cluster.Cli({"queue", "create", "tasks", "--lease", "1"});
  ASSERT_EQ(create.exit_code, 0) << Describe(create);
  Process* worker = cluster.StartWorker({"--concurrency", "1", "--id", "w-cancel"});
  ASSERT_NE(worker, nullptr);

  CliResult submit = cluster.Cli(
      {"submit", "--queue", "tasks", "--handler", "sleep", "--reply-to", "res", "300"});
  ASSERT_EQ(submit.exit_code, 0) << Describe(submit);
  std::vector<std::string> ids = Lines(submit.out);
  ASSERT_EQ(ids.size(), 1u);
  const std::string& id = ids[0];
  ASSERT_TRUE(WaitFor([&] { return cluster.StatNumber("tasks", "leased") == 1; },
                      absl::Seconds(20), absl::Milliseconds(20)))
      << worker->Stderr();

  CliResult cancel = cluster.Cli({"cancel", id});
  ASSERT_EQ(cancel.exit_code, 0) << Describe(cancel);
  ASSERT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(worker->Stderr(),
                                 absl::StrCat("task ", id, " stopped: it was cancelled"));
      },
      absl::Seconds(20), absl::Milliseconds(20)))
      << worker->Stderr();

  // The only slot is free again: a new task runs now, not in 300 s.
  CliResult next = cluster.Cli({"submit", "--queue", "tasks", "--handler", "square", "--wait",
                                "--wait-timeout", "20", "12"});
  ASSERT_EQ(next.exit_code, 0) << Describe(next) << worker->Stderr();
  EXPECT_EQ(next.out, "12 * 12 = 144\n");
  // One result for the cancelled task: the master's CANCELLED one.
  CliResult results = cluster.Cli({"get", "res", "--max", "10", "--timeout", "1"});
  EXPECT_EQ(Lines(results.out).size(), 1u) << Describe(results);
  EXPECT_FALSE(absl::StrContains(worker->Stderr(), "slept 300"));
}

TEST(WorkerDrain, SigtermReleasesPrefetchedAtOnceAndRunningAtTheDeadline) {
  Cluster cluster;
  absl::Status s = cluster.Start();
  ASSERT_TRUE(s.ok()) << s;
  Process* worker = cluster.StartWorker(
      {"--concurrency", "1", "--prefetch", "2", "--drain-timeout", "1", "--id", "w-drain"});
  ASSERT_NE(worker, nullptr);
  CliResult submit = cluster.Cli(
      {"submit", "--queue", "tasks", "--handler", "sleep", "--reply-to", "res", "300", "300",
       "300"});
  ASSERT_EQ(submit.exit_code, 0) << Describe(submit);
  std::vector<std::string> ids = Lines(submit.out);
  ASSERT_EQ(ids.size(), 3u);
  ASSERT_TRUE(WaitFor([&] { return cluster.StatNumber("tasks", "leased") == 3; },
                      absl::Seconds(20), absl::Milliseconds(20)))
      << worker->Stderr();

  const absl::Time signalled = absl::Now();
  worker->Kill(SIGTERM);
  // The two prefetched deliveries come back at once, before the deadline.
  ASSERT_TRUE(WaitFor([&] { return cluster.StatNumber("tasks", "ready") == 2; },
                      absl::Seconds(20), absl::Milliseconds(10)))
      << worker->Stderr();
  std::optional<int> exit = worker->Wait(absl::Seconds(20));
  ASSERT_TRUE(exit.has_value()) << worker->Stderr();
  EXPECT_EQ(*exit, 0) << worker->Stderr();
  EXPECT_GE(absl::Now() - signalled, absl::Seconds(1));   // the running one had its drain time
  EXPECT_LT(absl::Now() - signalled, absl::Seconds(15));  // and no more than that (+ slack)

  // All three are ready again; nothing failed, no attempt was counted.
  EXPECT_TRUE(WaitFor([&] { return cluster.StatNumber("tasks", "ready") == 3; },
                      absl::Seconds(10), absl::Milliseconds(20)));
  EXPECT_EQ(cluster.StatNumber("tasks", "leased"), 0);
  EXPECT_EQ(cluster.StatNumber("tasks", "total_failed"), 0);
  for (const std::string& id : ids) {
    CliResult status = cluster.Cli({"status", id});
    ASSERT_EQ(status.exit_code, 0) << Describe(status);
    EXPECT_TRUE(absl::StrContains(status.out, "state: ready")) << status.out;
    EXPECT_TRUE(absl::StrContains(status.out, "released")) << status.out;
    EXPECT_FALSE(absl::StrContains(status.out, "failed")) << status.out;
  }
  CliResult results = cluster.Cli({"get", "res", "--nowait"});
  EXPECT_EQ(results.exit_code, 3) << Describe(results);  // no result for any of them
}

}  // namespace
}  // namespace taskq::testing
