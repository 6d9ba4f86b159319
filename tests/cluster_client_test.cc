// Clients follow the cluster map (issue 18, docs/CLUSTER.md "Clients"): two
// masters and a real etcd on 127.0.0.1 sharing one token, and the real CLI
// pointed at the master that does NOT own the queue. put/get/status by id,
// submit --wait and results work through it; `cluster status` lists every
// master with its queues (table and --json); `queue list` shows the queues
// of every master once; a killed owner makes the CLI fail at once with
// "owner NAME is down" and the unreachable exit code.
#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/client.h"
#include "common/cluster_map.h"
#include "gtest/gtest.h"
#include "tests/harness.h"
#include "tests/harness_etcd.h"

namespace taskq::testing {
namespace {

constexpr int kMasters = 2;
constexpr int kExitUnreachable = 6;  // docs/CLI.md, exit codes
const char* const kNames[kMasters] = {"m1", "m2"};
constexpr absl::Duration kTtl = absl::Seconds(2);
constexpr absl::Duration kDownWithin = absl::Seconds(20);

class ClusterClientTest : public EtcdTest {
 protected:
  void SetUp() override {
    EtcdTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    absl::Status s = StartClusterMasters(absl::MakeSpan(m_), etcd_, {kNames, kNames + kMasters},
                                         {"--cluster-ttl", absl::FormatDuration(kTtl)});
    ASSERT_TRUE(s.ok()) << s;
  }

  // A library client given master i's address (it follows redirects).
  std::unique_ptr<Client> ClientOf(int i) {
    return m_[i].NewClient({.call_timeout = absl::Seconds(5)});
  }

  // The CLI pointed at master i.
  CliResult Cli(int i, std::vector<std::string> args, const std::string& stdin_data = "") {
    return m_[i].Cli(std::move(args), stdin_data);
  }

  void Create(int via, const std::string& queue, const std::string& on) {
    CliResult r = Cli(via, {"queue", "create", queue, "--on", on});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
  }

  taskq::testing::Cluster m_[kMasters];
};

std::vector<uint64_t> Ids(const std::string& out) {
  std::vector<uint64_t> ids;
  for (absl::string_view line : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
    uint64_t id = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &id)) ids.push_back(id);
  }
  return ids;
}

TEST_F(ClusterClientTest, ThroughAMasterThatDoesNotOwnTheQueueTheCliPutsGetsAndShowsTasks) {
  Create(0, "jobs", "m2");  // asked of m1, owned by m2
  CliResult put = Cli(0, {"put", "jobs", "alpha", "beta"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  const std::vector<uint64_t> ids = Ids(put.out);
  ASSERT_EQ(ids.size(), 2u) << put.out;
  EXPECT_NE(NodeOfTask(ids[0]), 0u) << "a cluster master's id carries its node";

  // Task by id through the master that did not make it.
  CliResult status = Cli(0, {"status", absl::StrCat(ids[0]), "--json"});
  ASSERT_EQ(status.exit_code, 0) << Describe(status);
  EXPECT_EQ(m_[0].PyJson(status.out, "d['queue']"), "jobs");
  EXPECT_EQ(m_[0].PyJson(status.out, "d['state']"), "TASK_STATE_READY");

  CliResult stats = Cli(0, {"queue", "stats", "jobs", "--json"});
  ASSERT_EQ(stats.exit_code, 0) << Describe(stats);
  EXPECT_EQ(m_[0].PyJson(stats.out, "d['ready']"), "2");

  CliResult got = Cli(0, {"get", "jobs", "--nowait"});
  ASSERT_EQ(got.exit_code, 0) << Describe(got);
  EXPECT_EQ(got.out, "alpha\n");

  // Lease through m1, complete by id through m1: the owner settles it.
  CliResult leased = Cli(0, {"get", "jobs", "--nowait", "--lease", "--json"});
  ASSERT_EQ(leased.exit_code, 0) << Describe(leased);
  const std::string id = m_[0].PyJson(leased.out, "d['id']");
  const std::string lease = m_[0].PyJson(leased.out, "d['lease_id']");
  CliResult done = Cli(0, {"complete", id, "--lease", lease});
  EXPECT_EQ(done.exit_code, 0) << Describe(done);
  CliResult after = Cli(0, {"status", id, "--json"});
  ASSERT_EQ(after.exit_code, 0) << Describe(after);
  EXPECT_EQ(m_[0].PyJson(after.out, "d['state']"), "TASK_STATE_DONE");
}

TEST_F(ClusterClientTest, SubmitWaitAndResultsWorkThroughAMasterThatDoesNotOwnTheQueue) {
  Create(0, "squares", "m2");
  // The worker serves the owner's queue at the owner.
  ASSERT_NE(m_[1].StartWorker({"--queue", "squares"}), nullptr);
  CliResult waited =
      Cli(0, {"submit", "--queue", "squares", "--handler", "square", "--wait", "3", "4"});
  ASSERT_EQ(waited.exit_code, 0) << Describe(waited);
  EXPECT_TRUE(absl::StrContains(waited.out, "9")) << waited.out;
  EXPECT_TRUE(absl::StrContains(waited.out, "16")) << waited.out;

  // A named reply queue (placed with the tasks' queue), read via m1.
  CliResult put = Cli(0, {"submit", "--queue", "squares", "--handler", "square", "--reply-to",
                          "answers", "5"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  CliResult results = Cli(0, {"results", "answers", "--json"});
  ASSERT_EQ(results.exit_code, 0) << Describe(results);
  EXPECT_TRUE(absl::StrContains(results.out, "25")) << results.out;
}

TEST_F(ClusterClientTest, ClusterStatusListsEveryMasterAndItsQueues) {
  Create(1, "alpha", "m1");
  Create(0, "beta", "m2");
  ASSERT_EQ(Cli(0, {"put", "beta", "x"}).exit_code, 0);

  CliResult json = Cli(0, {"cluster", "status", "--json"});
  ASSERT_EQ(json.exit_code, 0) << Describe(json);
  EXPECT_EQ(m_[0].PyJson(json.out, "d['clustered']"), "true");
  EXPECT_EQ(m_[0].PyJson(json.out, "[m['name'] for m in d['masters']]"), R"(["m1", "m2"])");
  EXPECT_EQ(m_[0].PyJson(json.out, "[m['up'] for m in d['masters']]"), "[true, true]");
  EXPECT_EQ(m_[0].PyJson(json.out, "all(m['node'] > 0 for m in d['masters'])"), "true");
  EXPECT_EQ(m_[0].PyJson(json.out, "[m['address'] for m in d['masters']]"),
            absl::StrCat(R"([")", m_[0].address(), R"(", ")", m_[1].address(), R"("])"));
  EXPECT_EQ(m_[0].PyJson(json.out,
                         "[[q['name'] for q in m['queue_stats']] for m in d['masters']]"),
            R"([["alpha"], ["beta"]])");
  EXPECT_EQ(m_[0].PyJson(json.out, "d['masters'][1]['queue_stats'][0]['ready']"), "1");

  CliResult table = Cli(1, {"cluster", "status"});
  ASSERT_EQ(table.exit_code, 0) << Describe(table);
  const std::vector<std::string> lines = Lines(table.out);
  ASSERT_GE(lines.size(), 6u) << table.out;
  EXPECT_TRUE(absl::StartsWith(lines[0], "NAME")) << table.out;
  EXPECT_TRUE(absl::StartsWith(lines[1], "m1")) << table.out;
  EXPECT_TRUE(absl::StrContains(lines[1], m_[0].address())) << table.out;
  EXPECT_TRUE(absl::StrContains(lines[2], " up ")) << table.out;
  EXPECT_TRUE(absl::StrContains(table.out, "\nMASTER")) << table.out;
  bool beta_row = false;
  for (const std::string& line : lines) {
    std::vector<std::string> cols = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (cols.size() >= 3 && cols[0] == "m2" && cols[1] == "beta") beta_row = cols[2] == "1";
  }
  EXPECT_TRUE(beta_row) << table.out;
}

TEST_F(ClusterClientTest, QueueListShowsTheQueuesOfEveryMasterOnce) {
  Create(0, "a1", "m1");
  Create(0, "b2", "m2");
  Create(1, "c2", "m2");
  CliResult json = Cli(0, {"queue", "list", "--json"});
  ASSERT_EQ(json.exit_code, 0) << Describe(json);
  EXPECT_EQ(m_[0].PyJson(json.out, "[(q['name'], q['master']) for q in d['queues']]"),
            R"([["a1", "m1"], ["b2", "m2"], ["c2", "m2"]])");
  CliResult table = Cli(1, {"queue", "list"});
  ASSERT_EQ(table.exit_code, 0) << Describe(table);
  const std::vector<std::string> lines = Lines(table.out);
  ASSERT_EQ(lines.size(), 4u) << table.out;
  EXPECT_TRUE(absl::EndsWith(lines[0], "MASTER")) << table.out;
  EXPECT_TRUE(absl::StartsWith(lines[1], "a1 ")) << table.out;
  EXPECT_TRUE(absl::EndsWith(lines[1], "m1")) << table.out;
  EXPECT_TRUE(absl::EndsWith(lines[3], "m2")) << table.out;
}

TEST_F(ClusterClientTest, AKilledOwnerMakesTheCliFailAtOnceNamingIt) {
  Create(0, "jobs", "m2");
  Create(0, "local", "m1");
  ASSERT_EQ(Cli(0, {"put", "jobs", "x"}).exit_code, 0);
  m_[1].master()->Kill(SIGKILL);
  // m1 calls m2 down once its lease lapses.
  CliResult last;
  ASSERT_TRUE(WaitFor(
      [&] {
        last = Cli(0, {"cluster", "status", "--json"});
        return last.exit_code == 0 &&
               m_[0].PyJson(last.out, "[m['up'] for m in d['masters']]") == "[true, false]";
      },
      kDownWithin, absl::Milliseconds(200)))
      << Describe(last);
  EXPECT_TRUE(absl::StrContains(last.err, "m2")) << Describe(last);

  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"put", "jobs", "y"},
        std::vector<std::string>{"get", "jobs", "--nowait"},
        std::vector<std::string>{"queue", "stats", "jobs"}}) {
    const absl::Time start = absl::Now();
    CliResult r = Cli(0, args);
    EXPECT_EQ(r.exit_code, kExitUnreachable) << Describe(r);
    EXPECT_TRUE(absl::StrContains(r.err, "owner m2 is down")) << Describe(r);
    EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "not retried: " << Describe(r);
  }
  // m1's own queues keep working.
  EXPECT_EQ(Cli(0, {"put", "local", "z"}).exit_code, 0);
  CliResult table = Cli(0, {"cluster", "status"});
  EXPECT_EQ(table.exit_code, 0) << Describe(table);
  EXPECT_TRUE(absl::StrContains(table.out, "down")) << table.out;
}

}  // namespace
}  // namespace taskq::testing
