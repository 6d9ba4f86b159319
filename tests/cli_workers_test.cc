// `taskq workers` (the ListWorkers RPC): the workers connected now with
// their id, host, address, queues, credits and running tasks, as a table
// and as JSON; a reader credential sees only the workers on its queues, a
// producer is refused; a worker that stops leaves the list.
#include <signal.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

std::string HostName() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) return "localhost";
  return host;
}

class CliWorkers : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start({"--store", "memory"});
    ASSERT_TRUE(s.ok()) << s;
    jobs_ = cluster_.StartWorker({"--id", "w-jobs", "--queue", "jobs", "--concurrency", "2",
                                  "--prefetch", "0"});
    ASSERT_NE(jobs_, nullptr);
    ASSERT_TRUE(cluster_.WaitWorkerConnected(jobs_));
    other_ = cluster_.StartWorker({"--id", "w-other", "--queue", "other"});
    ASSERT_NE(other_, nullptr);
    ASSERT_TRUE(cluster_.WaitWorkerConnected(other_));
  }

  // `workers --json` as `token_file` sees it ("" = the admin token).
  CliResult Workers(const std::string& token_file = "") {
    std::vector<std::string> args = {"workers", "--json"};
    return token_file.empty() ? cluster_.Cli(args) : cluster_.CliWithToken(token_file, args);
  }

  // A credential's token written to a file in the test dir.
  std::string CredentialToken(const std::string& name, std::vector<std::string> flags) {
    std::vector<std::string> args = {"credential", "create", name};
    args.insert(args.end(), flags.begin(), flags.end());
    CliResult made = cluster_.Cli(args);
    EXPECT_EQ(made.exit_code, 0) << Describe(made);
    const std::string path = absl::StrCat(cluster_.dir(), "/", name, ".token");
    absl::Status written = WriteFile(path, Lines(made.out).empty() ? "" : Lines(made.out)[0]);
    EXPECT_TRUE(written.ok()) << written;
    return path;
  }

  Cluster cluster_;
  Process* jobs_ = nullptr;
  Process* other_ = nullptr;
};

TEST_F(CliWorkers, ShowsEachWorkerWithItsRunningTasks) {
  CliResult put = cluster_.Cli({"submit", "--queue", "jobs", "--handler", "sleep", "30"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  ASSERT_EQ(Lines(put.out).size(), 1u) << Describe(put);
  const std::string id = Lines(put.out)[0];

  std::string json;
  ASSERT_TRUE(WaitFor(
      [&] {
        CliResult r = Workers();
        json = r.out;
        return r.exit_code == 0 && absl::StrContains(r.out, "\"running\":1");
      },
      absl::Seconds(20)))
      << json;
  EXPECT_EQ(cluster_.PyJson(json, "[w['worker_id'] for w in d['workers']]"),
            R"(["w-jobs", "w-other"])");
  EXPECT_EQ(cluster_.PyJson(json, "d['total']"), "2");
  const std::string w0 = "d['workers'][0]";
  EXPECT_EQ(cluster_.PyJson(json, w0 + "['host']"), HostName());
  EXPECT_EQ(cluster_.PyJson(json, w0 + "['queues']"), R"(["jobs"])");
  EXPECT_EQ(cluster_.PyJson(json, w0 + "['peer'].startswith('127.0.0.1:')"), "true");
  EXPECT_EQ(cluster_.PyJson(json, w0 + "['running_tasks']"),
            absl::StrCat(R"([{"attempt": 1, "queue": "jobs", "task_id": )", id, "}]"));
  // --concurrency 2 --prefetch 0: one slot busy, one free.
  EXPECT_EQ(cluster_.PyJson(json, w0 + "['credits']"), "1");
  EXPECT_EQ(cluster_.PyJson(json, w0 + "['since_unix_ms'] > 0"), "true");

  CliResult table = cluster_.Cli({"workers"});
  ASSERT_EQ(table.exit_code, 0) << Describe(table);
  std::vector<std::string> lines = Lines(table.out);
  ASSERT_EQ(lines.size(), 3u) << table.out;
  EXPECT_TRUE(absl::StartsWith(lines[0], "ID")) << lines[0];
  EXPECT_TRUE(absl::StartsWith(lines[1], "w-jobs")) << lines[1];
  EXPECT_TRUE(absl::StrContains(lines[1], absl::StrCat("  ", id))) << lines[1];
  EXPECT_TRUE(absl::StrContains(lines[2], "w-other")) << lines[2];
}

TEST_F(CliWorkers, AReaderSeesTheWorkersOnItsQueuesAndAProducerIsRefused) {
  const std::string reader = CredentialToken("watch", {"--role", "reader", "--queues", "jobs"});
  CliResult seen = Workers(reader);
  ASSERT_EQ(seen.exit_code, 0) << Describe(seen);
  EXPECT_EQ(cluster_.PyJson(seen.out, "[w['worker_id'] for w in d['workers']]"), R"(["w-jobs"])");
  EXPECT_EQ(cluster_.PyJson(seen.out, "d['total']"), "1");

  const std::string producer = CredentialToken("feed", {"--role", "producer", "--queues", "jobs"});
  CliResult refused = Workers(producer);
  EXPECT_NE(refused.exit_code, 0) << Describe(refused);
  EXPECT_TRUE(absl::StrContains(refused.err, "list workers")) << refused.err;
  EXPECT_EQ(refused.out, "");
}

TEST_F(CliWorkers, AStoppedWorkerLeavesTheList) {
  other_->Kill(SIGTERM);
  ASSERT_TRUE(other_->Wait(absl::Seconds(20)).has_value());
  std::string json;
  ASSERT_TRUE(WaitFor(
      [&] {
        CliResult r = Workers();
        json = r.out;
        return r.exit_code == 0 && !absl::StrContains(r.out, "w-other");
      },
      absl::Seconds(20)))
      << json;
  EXPECT_EQ(cluster_.PyJson(json, "[w['worker_id'] for w in d['workers']]"), R"(["w-jobs"])");
}

}  // namespace
}  // namespace taskq::testing
