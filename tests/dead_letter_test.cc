// A handler that always fails, run by a real worker: after the queue's max
// attempts the task lands in the dead-letter queue with its last error and
// its attempt history, `submit --wait` reports it failed, and `taskq dlq
// list|show|requeue|purge` manage the dead letters (requeued tasks run
// again and, still failing, come back).
#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

// The ids in "task ID failed: ..." lines of `submit --wait`'s stderr.
std::vector<std::string> FailedIds(const std::string& err) {
  std::vector<std::string> ids;
  for (const std::string& line : Lines(err)) {
    if (!absl::StartsWith(line, "task ")) continue;
    std::vector<std::string> words = absl::StrSplit(line, ' ');
    uint64_t id;
    if (words.size() > 2 && words[2] == "failed:" && absl::SimpleAtoi(words[1], &id)) {
      ids.push_back(words[1]);
    }
  }
  return ids;
}

// An exec command that echoes its payload to stderr and exits 3.
constexpr char kFailer[] = R"(fail=/bin/sh -c "cat >&2; exit 3")";

// `dlq list` rows without the header, split at tabs.
std::vector<std::vector<std::string>> DeadRows(const CliResult& r) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> lines = Lines(r.out);
  for (size_t i = 1; i < lines.size(); ++i) rows.push_back(absl::StrSplit(lines[i], '\t'));
  return rows;
}

TEST(DeadLetters, AlwaysFailingTaskLandsInTheDlqWithItsErrorAndHistory) {
  Cluster cluster;
  absl::Status s = cluster.Start();
  ASSERT_TRUE(s.ok()) << s;
  CliResult create = cluster.Cli({"queue", "create", "jobs", "--max-attempts", "3", "--backoff",
                                  "0.001", "--lease", "10", "--dead-letter", "jobs.dlq"});
  ASSERT_EQ(create.exit_code, 0) << Describe(create);

  Process* worker = cluster.StartWorker(
      {"--queue", "jobs", "--allow-exec", kFailer, "--concurrency", "2", "--id", "failer"});
  ASSERT_TRUE(cluster.WaitWorkerConnected(worker)) << worker->Stderr();

  // The command echoes its payload to stderr and exits 3: a retryable error.
  const std::vector<std::string> exec = {"submit", "--queue", "jobs",  "--handler",
                                         "exec",   "--arg",   "fail", "--wait"};
  std::vector<std::string> args = exec;
  args.push_back("boom-1");
  args.push_back("boom-2");
  CliResult submit = cluster.Cli(args);
  ASSERT_EQ(submit.exit_code, 7) << Describe(submit);
  EXPECT_TRUE(absl::StrContains(submit.err, "gave up after 3 attempts")) << submit.err;
  EXPECT_TRUE(absl::StrContains(submit.err, "2 failed of 2 tasks")) << submit.err;
  std::vector<std::string> ids = FailedIds(submit.err);
  ASSERT_EQ(ids.size(), 2u) << submit.err;

  // Which id is which payload: from their status.
  std::string boom1;
  for (const std::string& id : ids) {
    CliResult st = cluster.Cli({"status", id});
    ASSERT_EQ(st.exit_code, 0) << Describe(st);
    EXPECT_TRUE(absl::StrContains(st.out, "state: dead\n")) << st.out;
    EXPECT_TRUE(absl::StrContains(st.out, "attempts: 3\n")) << st.out;
    EXPECT_TRUE(absl::StrContains(st.out, "origin_queue: jobs\n")) << st.out;
    EXPECT_TRUE(absl::StrContains(st.out, "exited with status 3")) << st.out;
    if (absl::StrContains(st.out, "payload: \"boom-1\"")) boom1 = id;
    // Three attempts on record, each on the worker, each failed with the
    // program's stderr.
    std::vector<std::string> lines = Lines(st.out);
    auto history = std::find(lines.begin(), lines.end(), "history:");
    ASSERT_NE(history, lines.end()) << st.out;
    ASSERT_EQ(lines.end() - history - 1, 3) << st.out;
    for (auto it = history + 1; it != lines.end(); ++it) {
      EXPECT_TRUE(absl::StrContains(*it, "failer")) << *it;
      EXPECT_TRUE(absl::StrContains(*it, "failed")) << *it;
      EXPECT_TRUE(absl::StrContains(*it, "boom-")) << *it;
    }
  }
  ASSERT_FALSE(boom1.empty());
  const std::string boom2 = ids[0] == boom1 ? ids[1] : ids[0];
  const std::string low = std::min(ids[0], ids[1], [](const std::string& a, const std::string& b) {
    return std::stoull(a) < std::stoull(b);
  });
  const std::string high = low == ids[0] ? ids[1] : ids[0];

  EXPECT_EQ(cluster.StatNumber("jobs", "total_failed"), 2);
  EXPECT_EQ(cluster.StatNumber("jobs", "dead"), 0);
  EXPECT_EQ(cluster.StatNumber("jobs", "unfinished"), 0);
  EXPECT_EQ(cluster.StatNumber("jobs.dlq", "dead"), 2);

  // dlq list: header, then one row per task by id.
  CliResult list = cluster.Cli({"dlq", "list", "jobs.dlq"});
  ASSERT_EQ(list.exit_code, 0) << Describe(list);
  EXPECT_EQ(Lines(list.out)[0], "ID\tORIGIN\tATTEMPTS\tHANDLER\tLAST_ERROR");
  auto rows = DeadRows(list);
  ASSERT_EQ(rows.size(), 2u) << list.out;
  EXPECT_EQ(rows[0][0], low);
  EXPECT_EQ(rows[1][0], high);
  for (const auto& row : rows) {
    ASSERT_EQ(row.size(), 5u);
    EXPECT_EQ(row[1], "jobs");
    EXPECT_EQ(row[2], "3");
    EXPECT_EQ(row[3], "exec");
    EXPECT_TRUE(absl::StrContains(row[4], "exited with status 3")) << row[4];
  }
  EXPECT_EQ(DeadRows(cluster.Cli({"dlq", "list", "jobs"})).size(), 0u);  // not its own
  EXPECT_EQ(DeadRows(cluster.Cli({"dlq", "list", "jobs.dlq", "--limit", "1"})).size(), 1u);
  auto after = DeadRows(cluster.Cli({"dlq", "list", "jobs.dlq", "--after", low}));
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0][0], high);
  CliResult json = cluster.Cli({"dlq", "list", "jobs.dlq", "--json"});
  EXPECT_EQ(Lines(json.out).size(), 2u) << json.out;
  EXPECT_TRUE(absl::StrContains(json.out, "\"state\":\"TASK_STATE_DEAD\"")) << json.out;

  // dlq show: the payload and history; only from the set that holds it.
  CliResult show = cluster.Cli({"dlq", "show", "jobs.dlq", boom1});
  ASSERT_EQ(show.exit_code, 0) << Describe(show);
  EXPECT_TRUE(absl::StrContains(show.out, "payload: \"boom-1\"")) << show.out;
  EXPECT_TRUE(absl::StrContains(show.out, "last_error: ")) << show.out;
  CliResult elsewhere = cluster.Cli({"dlq", "show", "jobs", boom1});
  EXPECT_EQ(elsewhere.exit_code, 5) << Describe(elsewhere);
  EXPECT_TRUE(absl::StrContains(elsewhere.err, "not in the dead-letter set")) << elsewhere.err;

  // With no worker running, requeued tasks wait in their origin queue.
  worker->Stop();
  CliResult one = cluster.Cli({"dlq", "requeue", "jobs.dlq", boom1});
  ASSERT_EQ(one.exit_code, 0) << Describe(one);
  EXPECT_EQ(one.out, "1\n");
  EXPECT_EQ(cluster.StatNumber("jobs", "ready"), 1);
  CliResult requeued = cluster.Cli({"status", boom1});
  EXPECT_TRUE(absl::StrContains(requeued.out, "state: ready\n")) << requeued.out;
  EXPECT_TRUE(absl::StrContains(requeued.out, "attempts: 0\n")) << requeued.out;
  auto left = DeadRows(cluster.Cli({"dlq", "list", "jobs.dlq"}));
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0][0], boom2);
  CliResult all = cluster.Cli({"dlq", "requeue", "jobs.dlq", "--all"});
  EXPECT_EQ(all.out, "1\n") << Describe(all);
  EXPECT_EQ(cluster.StatNumber("jobs", "ready"), 2);
  CliResult missing = cluster.Cli({"dlq", "requeue", "jobs.dlq", "999999"});
  EXPECT_EQ(missing.exit_code, 5) << Describe(missing);

  // They run again, fail again, and come back to the DLQ.
  Process* again =
      cluster.StartWorker({"--queue", "jobs", "--allow-exec", kFailer, "--id", "failer-2"});
  ASSERT_NE(again, nullptr);
  ASSERT_TRUE(WaitFor([&] { return cluster.StatNumber("jobs.dlq", "dead") == 2; },
                      absl::Seconds(30), absl::Milliseconds(20)))
      << again->Stderr();
  CliResult history = cluster.Cli({"status", boom1});
  EXPECT_TRUE(absl::StrContains(history.out, "failer-2")) << history.out;

  // Purge: gone for good (FAILED); the master still knows them as such.
  CliResult purge = cluster.Cli({"dlq", "purge", "jobs.dlq"});
  EXPECT_EQ(purge.out, "2\n") << Describe(purge);
  EXPECT_EQ(DeadRows(cluster.Cli({"dlq", "list", "jobs.dlq"})).size(), 0u);
  EXPECT_EQ(cluster.StatNumber("jobs.dlq", "dead"), 0);
  CliResult purged = cluster.Cli({"status", boom1});
  EXPECT_TRUE(absl::StrContains(purged.out, "state: failed\n")) << Describe(purged);
}

}  // namespace
}  // namespace taskq::testing
