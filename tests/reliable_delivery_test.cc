// Fault tests with real processes for issue 5 (SIGKILL of a worker is in
// worker_kill_test.cc):
//  - a worker stopped (SIGSTOP) past its lease: its tasks are handed to
//    another worker; once resumed (SIGCONT) its lease is refused, and every
//    task yields exactly one result;
//  - a master restart (kill -9) while a worker runs: the worker reconnects
//    and serves new tasks; with the durable store (the default) tasks queued
//    before the restart and results not yet read are still there, with
//    --store memory they are lost.
#include <signal.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

// True if a line of `log` names `task <id>` and a lost or refused lease.
bool LogsLostLease(const std::string& log, const std::string& id) {
  for (const std::string& line : Lines(log)) {
    if (absl::StrContains(line, absl::StrCat("task ", id, " ")) &&
        absl::StrContains(line, "lease")) {
      return true;
    }
  }
  return false;
}

TEST(ReliableDelivery, StoppedWorkerPastItsLeaseIsReplacedAndCannotReportLate) {
  Cluster cluster;
  absl::Status s = cluster.Start();
  ASSERT_TRUE(s.ok()) << s;
  CliResult create = cluster.Cli(
      {"queue", "create", "tasks", "--lease", "1", "--backoff", "0.001", "--max-attempts", "5"});
  ASSERT_EQ(create.exit_code, 0) << Describe(create);

  Process* a = cluster.StartWorker({"--concurrency", "2", "--id", "worker-a"});
  ASSERT_TRUE(cluster.WaitWorkerConnected(a)) << a->Stderr();
  // Each task outlives the 1 s lease; worker A heartbeats while it runs.
  CliResult submit = cluster.Cli(
      {"submit", "--queue", "tasks", "--handler", "sleep", "--reply-to", "res", "2", "2"});
  ASSERT_EQ(submit.exit_code, 0) << Describe(submit);
  const std::vector<std::string> ids = Lines(submit.out);
  ASSERT_EQ(ids.size(), 2u);
  ASSERT_TRUE(WaitFor([&] { return cluster.StatNumber("tasks", "leased") == 2; },
                      absl::Seconds(20), absl::Milliseconds(10)));

  // A freezes holding both leases; its heartbeats stop, the leases expire.
  a->Kill(SIGSTOP);
  Process* b = cluster.StartWorker({"--concurrency", "2", "--id", "worker-b"});
  ASSERT_NE(b, nullptr);
  for (const std::string& id : ids) {
    ASSERT_TRUE(WaitFor(
        [&] {
          CliResult st = cluster.Cli({"status", id});
          return absl::StrContains(st.out, "worker: worker-b\n") ||
                 absl::StrContains(st.out, "state: done\n");
        },
        absl::Seconds(20), absl::Milliseconds(20)))
        << "task " << id << " was not handed to worker-b\n"
        << b->Stderr();
  }
  a->Kill(SIGCONT);

  // One result per task: B's.
  std::map<std::string, int> results;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  size_t total = 0;
  while (total < 2 && absl::Now() < deadline) {
    CliResult r = cluster.Cli({"get", "res", "--show-ids", "--max", "10", "--timeout", "2"});
    if (r.exit_code == 3) continue;
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    for (const std::string& line : Lines(r.out)) {
      std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits('\t', 1));
      ASSERT_EQ(parts.size(), 2u) << line;
      EXPECT_EQ(parts[1], "slept 2");
      ++results[parts[0]];
      ++total;
    }
  }
  ASSERT_EQ(total, 2u) << "worker-b:\n" << b->Stderr();
  EXPECT_EQ(results, (std::map<std::string, int>{{ids[0], 1}, {ids[1], 1}}));

  // A, resumed, learns that each lease is gone: its heartbeat or its late
  // result is refused (it logs which); nothing it sends yields a result.
  for (const std::string& id : ids) {
    EXPECT_TRUE(WaitFor([&] { return LogsLostLease(a->Stderr(), id); }, absl::Seconds(20),
                        absl::Milliseconds(20)))
        << "worker-a never learned that task " << id << " lost its lease:\n"
        << a->Stderr();
  }
  CliResult extra = cluster.Cli({"get", "res", "--nowait"});
  EXPECT_EQ(extra.exit_code, 3) << "a second result appeared: " << Describe(extra);
  EXPECT_EQ(cluster.StatNumber("tasks", "total_completed"), 2);
  EXPECT_EQ(cluster.StatNumber("tasks", "unfinished"), 0);

  // Each task's history records A's lost attempt.
  for (const std::string& id : ids) {
    CliResult st = cluster.Cli({"status", id});
    EXPECT_TRUE(absl::StrContains(st.out, "state: done\n")) << st.out;
    EXPECT_TRUE(absl::StrContains(st.out, "attempts: 2\n")) << st.out;
    std::vector<std::string> lines = Lines(st.out);
    ASSERT_FALSE(lines.empty());
    const std::string& first = lines.back();  // one attempt lost: the last line
    EXPECT_TRUE(absl::StrContains(first, "worker-a")) << st.out;
    EXPECT_TRUE(absl::StrContains(first, "expired") || absl::StrContains(first, "disconnected"))
        << st.out;
  }
}

void RestartWhileAWorkerRuns(bool durable) {
  Cluster cluster;
  absl::Status s = durable ? cluster.Start() : cluster.Start({"--store", "memory"});
  ASSERT_TRUE(s.ok()) << s;
  Process* w = cluster.StartWorker({"--concurrency", "2", "--id", "survivor"});
  ASSERT_TRUE(cluster.WaitWorkerConnected(w)) << w->Stderr();

  CliResult before = cluster.Cli({"submit", "--queue", "tasks", "--handler", "square", "--wait",
                                  "--wait-timeout", "20", "3"});
  ASSERT_EQ(before.exit_code, 0) << Describe(before);
  EXPECT_EQ(before.out, "3 * 3 = 9\n");

  // Queued on a queue nobody serves, and a result nobody read yet.
  CliResult queued = cluster.Cli({"put", "pending", "a", "b"});
  ASSERT_EQ(queued.exit_code, 0) << Describe(queued);
  const std::vector<std::string> queued_ids = Lines(queued.out);
  ASSERT_EQ(queued_ids.size(), 2u);
  CliResult unread = cluster.Cli(
      {"submit", "--queue", "tasks", "--handler", "square", "--reply-to", "unread", "4"});
  ASSERT_EQ(unread.exit_code, 0) << Describe(unread);
  ASSERT_TRUE(WaitFor([&] { return cluster.StatNumber("unread", "ready") == 1; },
                      absl::Seconds(20), absl::Milliseconds(20)));

  const size_t connects = Count(w->Stderr(), "connected to");
  s = cluster.RestartMaster(SIGKILL);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(WaitFor([&] { return Count(w->Stderr(), "connected to") > connects; },
                      absl::Seconds(30), absl::Milliseconds(20)))
      << "the worker did not reconnect:\n"
      << w->Stderr();
  EXPECT_TRUE(w->Running());

  if (durable) {
    // Everything acknowledged is back: the queued tasks, in order, and the
    // unread result.
    EXPECT_EQ(cluster.StatNumber("pending", "ready"), 2);
    for (const std::string& id : queued_ids) {
      CliResult st = cluster.Cli({"status", id});
      EXPECT_EQ(st.exit_code, 0) << Describe(st);
      EXPECT_TRUE(absl::StrContains(st.out, "state: ready")) << st.out;
    }
    CliResult got = cluster.Cli({"get", "pending", "--max", "2", "--nowait"});
    ASSERT_EQ(got.exit_code, 0) << Describe(got);
    EXPECT_TRUE(absl::StrContains(got.out, "a\n") && absl::StrContains(got.out, "b\n")) << got.out;
    EXPECT_LT(got.out.find("a\n"), got.out.find("b\n")) << got.out;
    CliResult result = cluster.Cli({"get", "unread", "--nowait"});
    ASSERT_EQ(result.exit_code, 0) << Describe(result);
    EXPECT_TRUE(absl::StrContains(result.out, "4 * 4 = 16")) << result.out;
  } else {
    // The in-memory store kept nothing: the queue, its tasks and the unread
    // result are gone. Checked before any new put: task ids start again at
    // 1 in a new master.
    CliResult stats = cluster.Cli({"queue", "stats", "pending"});
    EXPECT_EQ(stats.exit_code, 5) << Describe(stats);
    EXPECT_TRUE(absl::StrContains(stats.err, "does not exist")) << stats.err;
    for (const std::string& id : queued_ids) {
      CliResult st = cluster.Cli({"status", id});
      EXPECT_EQ(st.exit_code, 5) << Describe(st);
    }
    CliResult lost = cluster.Cli({"get", "unread", "--nowait"});
    EXPECT_EQ(lost.exit_code, 3) << Describe(lost);
  }

  // The reconnected worker serves new tasks.
  CliResult after = cluster.Cli({"submit", "--queue", "tasks", "--handler", "square", "--wait",
                                 "--wait-timeout", "20", "5", "6"});
  ASSERT_EQ(after.exit_code, 0) << Describe(after);
  std::vector<std::string> results = Lines(after.out);
  EXPECT_EQ(std::set<std::string>(results.begin(), results.end()),
            (std::set<std::string>{"5 * 5 = 25", "6 * 6 = 36"}));
}

TEST(ReliableDelivery, MasterKilledWorkersReconnectAndQueuedTasksSurvive) {
  RestartWhileAWorkerRuns(/*durable=*/true);
}

TEST(ReliableDelivery, MasterKilledWithMemoryStoreLosesQueuedTasks) {
  RestartWhileAWorkerRuns(/*durable=*/false);
}

}  // namespace
}  // namespace taskq::testing
