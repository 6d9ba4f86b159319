// Reply queues through the CLI and the real master (issue 13, "a job's
// results are never stranded"): a reply queue is kept while a task still
// owes it a result, however long nobody reads it; `queue stats` and `queue
// list` tell a reader when the results are all in (PENDING_RESULTS 0); once
// unread for its idle TTL (--results-ttl for _results.* queues, --idle-ttl
// for others) the master deletes it and logs it; TTLs and the results owed
// survive a kill -9 of the master.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

// `taskq queue list` as NAME -> the row's columns (header checked).
std::map<std::string, std::vector<std::string>> ListRows(Cluster& cluster) {
  std::map<std::string, std::vector<std::string>> rows;
  CliResult r = cluster.Cli({"queue", "list"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<std::string> lines = Lines(r.out);
  if (lines.empty()) return rows;
  std::vector<std::string> header = absl::StrSplit(lines[0], ' ', absl::SkipEmpty());
  EXPECT_EQ(header.size(), 10u) << lines[0];
  if (header.size() >= 10) {
    EXPECT_EQ(header[8], "PENDING_RESULTS");
    EXPECT_EQ(header[9], "IDLE_TTL");
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> cols = absl::StrSplit(lines[i], ' ', absl::SkipEmpty());
    if (!cols.empty()) rows[cols[0]] = cols;
  }
  return rows;
}

void Ok(Cluster& cluster, std::vector<std::string> args) {
  CliResult r = cluster.Cli(std::move(args));
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
}

TEST(ReplyQueue, KeptWhileItsJobRunsReportsWhenTheResultsAreInThenExpiresUnread) {
  Cluster cluster;
  // A reply queue unread for 3 s (and owed nothing) is deleted.
  ASSERT_TRUE(cluster.Start({"--results-ttl", "3"}).ok());
  Ok(cluster, {"put", "jobs", "7", "8", "--handler", "square", "--reply-to", "_results.job1"});
  auto rows = ListRows(cluster);
  ASSERT_TRUE(rows.contains("_results.job1"));
  EXPECT_EQ(rows["_results.job1"][8], "2");   // PENDING_RESULTS
  EXPECT_EQ(rows["_results.job1"][9], "3s");  // IDLE_TTL: the master's --results-ttl
  EXPECT_EQ(rows["jobs"][9], "-");            // other queues: never

  // No worker yet: the job "runs" longer than the TTL. A queue with a 1 s
  // TTL that nothing holds expires meanwhile (the clock for this test)...
  Ok(cluster, {"queue", "create", "probe", "--idle-ttl", "1"});
  ASSERT_TRUE(WaitFor([&] { return !ListRows(cluster).contains("probe"); }, absl::Seconds(30)));
  // ...and then so much longer than 3 s that the reply queue would be gone.
  Ok(cluster, {"queue", "create", "probe2", "--idle-ttl", "4"});
  ASSERT_TRUE(WaitFor([&] { return !ListRows(cluster).contains("probe2"); }, absl::Seconds(30)));
  EXPECT_EQ(cluster.StatNumber("_results.job1", "pending_results"), 2);

  // The job runs: a reader sees its results are all in (nothing owed,
  // results ready), then leaves them unread.
  Process* worker = cluster.StartWorker({"--queue", "jobs"});
  ASSERT_NE(worker, nullptr);
  ASSERT_TRUE(WaitFor(
      [&] {
        auto s = cluster.Stats("_results.job1");
        return s["pending_results"] == "0" && s["ready"] == "2";
      },
      absl::Seconds(30)));
  ASSERT_TRUE(WaitFor([&] { return !ListRows(cluster).contains("_results.job1"); },
                      absl::Seconds(30)));
  EXPECT_TRUE(absl::StrContains(cluster.master()->Stderr(), "queue \"_results.job1\" expired"))
      << cluster.master()->Stderr();
  EXPECT_TRUE(ListRows(cluster).contains("jobs"));  // no TTL
}

// A reader blocked in a long poll holds the queue past its TTL.
TEST(ReplyQueue, AWaitingGetHoldsTheQueuePastItsTtl) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  Ok(cluster, {"queue", "create", "inbox", "--idle-ttl", "1"});
  std::unique_ptr<Process> reader = cluster.StartCli({"get", "inbox", "--timeout", "60"});
  ASSERT_TRUE(WaitFor([&] { return cluster.StatNumber("inbox", "waiting_consumers") == 1; },
                      absl::Seconds(30)));
  // More than the TTL passes: a queue made after the reader started, with
  // the same TTL and nothing holding it, expires.
  Ok(cluster, {"queue", "create", "probe", "--idle-ttl", "1"});
  ASSERT_TRUE(WaitFor([&] { return !ListRows(cluster).contains("probe"); }, absl::Seconds(30)));
  Ok(cluster, {"put", "inbox", "hello"});
  EXPECT_EQ(reader->Wait(absl::Seconds(30)), 0);
  EXPECT_EQ(reader->Stdout(), "hello\n");
  // Unused from now on: it goes.
  ASSERT_TRUE(WaitFor([&] { return !ListRows(cluster).contains("inbox"); }, absl::Seconds(30)));
}

TEST(ReplyQueue, TtlsAndResultsOwedSurviveAKillOfTheMaster) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start({"--results-ttl", "3600"}).ok());
  Ok(cluster, {"queue", "create", "idle", "--idle-ttl", "1000"});
  CliResult updated = cluster.Cli({"queue", "update", "idle", "--idle-ttl", "2000"});
  EXPECT_EQ(updated.exit_code, 0) << Describe(updated);
  EXPECT_TRUE(absl::StrContains(updated.out, "idle_ttl_ms: 2000000")) << updated.out;
  Ok(cluster, {"put", "jobs", "1", "2", "--handler", "square", "--reply-to", "_results.r"});
  ASSERT_TRUE(cluster.RestartMaster(SIGKILL).ok());

  auto stats = cluster.Stats("_results.r");
  EXPECT_EQ(stats["pending_results"], "2");
  EXPECT_EQ(stats["idle_ttl_ms"], "3600000");
  EXPECT_EQ(cluster.Stats("idle")["idle_ttl_ms"], "2000000");
  auto rows = ListRows(cluster);
  EXPECT_EQ(rows["_results.r"][9], "1h");
  EXPECT_EQ(rows["idle"][9], "33m20s");
  Ok(cluster, {"queue", "update", "idle", "--idle-ttl", "0"});
  EXPECT_EQ(ListRows(cluster)["idle"][9], "-");
  CliResult refused = cluster.Cli({"queue", "update", "idle", "--idle-ttl", "40000000"});
  EXPECT_EQ(refused.exit_code, 2) << Describe(refused);  // beyond 365 days
  EXPECT_TRUE(absl::StrContains(refused.err, "--idle-ttl")) << refused.err;
}

}  // namespace
}  // namespace taskq::testing
