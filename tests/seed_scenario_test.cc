// The seed's distributed-process scenario, end to end through the real
// binaries: a master, two workers, and `taskq submit` of 1..100 to the
// `square` handler, each result "n * n = n²" exactly once. Also the plain
// Python-queue path: put payloads on a data queue and get them back.
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

class SeedScenario : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start();
    ASSERT_TRUE(s.ok()) << s;
  }
  Cluster cluster_;
};

TEST_F(SeedScenario, SquaresOneToHundredWithTwoWorkers) {
  ASSERT_NE(cluster_.StartWorker(), nullptr);
  ASSERT_NE(cluster_.StartWorker(), nullptr);

  std::vector<std::string> args = {"submit", "--queue", "tasks", "--handler", "square",
                                   "--wait", "--show-ids"};
  for (int n = 1; n <= 100; ++n) args.push_back(std::to_string(n));
  CliResult r = cluster_.Cli(args, "", absl::Seconds(50));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);

  std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 100u) << Describe(r);
  std::set<long long> seen_n;
  std::set<std::string> seen_ids;
  for (const std::string& line : lines) {
    std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits('\t', 1));
    ASSERT_EQ(parts.size(), 2u) << "not ID<TAB>RESULT: " << line;
    uint64_t id = 0;
    EXPECT_TRUE(absl::SimpleAtoi(parts[0], &id)) << "bad task id in: " << line;
    EXPECT_TRUE(seen_ids.insert(parts[0]).second) << "task id twice: " << line;
    std::vector<std::string> words = absl::StrSplit(parts[1], ' ');
    long long n = 0;
    ASSERT_FALSE(words.empty());
    ASSERT_TRUE(absl::SimpleAtoi(words[0], &n)) << line;
    EXPECT_EQ(parts[1], absl::StrCat(n, " * ", n, " = ", n * n));
    EXPECT_TRUE(seen_n.insert(n).second) << "result for " << n << " twice";
  }
  EXPECT_EQ(seen_n.size(), 100u);
  EXPECT_EQ(*seen_n.begin(), 1);
  EXPECT_EQ(*seen_n.rbegin(), 100);

  // The private result queue `_results.<hex>` is deleted at the end.
  CliResult list = cluster_.Cli({"queue", "list"});
  ASSERT_EQ(list.exit_code, 0) << Describe(list);
  EXPECT_EQ(list.out.find("_results."), std::string::npos) << list.out;

  // SIGTERM stops workers and master cleanly (exit 0).
  for (const auto& w : cluster_.workers()) EXPECT_EQ(w->Stop(absl::Seconds(20)), 0) << w->Stderr();
  EXPECT_EQ(cluster_.master()->Stop(absl::Seconds(20)), 0) << cluster_.master()->Stderr();
}

TEST_F(SeedScenario, PlainOutputAndSixtyFourBitValues) {
  ASSERT_NE(cluster_.StartWorker({"--concurrency", "2"}), nullptr);
  CliResult r = cluster_.Cli({"submit", "--queue", "tasks", "--handler", "square", "--wait",
                              "3", "0", "3037000499"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<std::string> lines = Lines(r.out);
  std::multiset<std::string> got(lines.begin(), lines.end());
  std::multiset<std::string> want = {"3 * 3 = 9", "0 * 0 = 0",
                                     "3037000499 * 3037000499 = 9223372030926249001"};
  EXPECT_EQ(got, want) << Describe(r);
}

TEST_F(SeedScenario, BadPayloadIsReportedAsFailedTask) {
  ASSERT_NE(cluster_.StartWorker({"--concurrency", "2"}), nullptr);
  CliResult r = cluster_.Cli(
      {"submit", "--queue", "tasks", "--handler", "square", "--wait", "5", "not-a-number"});
  EXPECT_EQ(r.exit_code, 7) << Describe(r);
  EXPECT_EQ(r.out, "5 * 5 = 25\n") << Describe(r);
  EXPECT_NE(r.err.find("failed"), std::string::npos) << Describe(r);
}

TEST_F(SeedScenario, SubmitFromStdin) {
  ASSERT_NE(cluster_.StartWorker({"--concurrency", "2"}), nullptr);
  CliResult r = cluster_.Cli(
      {"submit", "--queue", "tasks", "--handler", "square", "--wait", "-"}, "6\n7\n");
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<std::string> lines = Lines(r.out);
  std::multiset<std::string> got(lines.begin(), lines.end());
  EXPECT_EQ(got, (std::multiset<std::string>{"6 * 6 = 36", "7 * 7 = 49"})) << Describe(r);
}

TEST_F(SeedScenario, PutAndGetDataQueueInFifoOrder) {
  CliResult put = cluster_.Cli({"put", "data", "first", "second", "third"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  std::vector<std::string> ids = Lines(put.out);
  ASSERT_EQ(ids.size(), 3u) << Describe(put);

  for (const std::string want : {"first", "second", "third"}) {
    CliResult get = cluster_.Cli({"get", "data", "--nowait"});
    ASSERT_EQ(get.exit_code, 0) << Describe(get);
    EXPECT_EQ(get.out, want + "\n") << Describe(get);
  }
  CliResult empty = cluster_.Cli({"get", "data", "--nowait"});
  EXPECT_EQ(empty.exit_code, 3) << Describe(empty);
}

TEST_F(SeedScenario, PutFromStdinAndGetManyWithIds) {
  CliResult put = cluster_.Cli({"put", "data", "-"}, "a\nb\nc\n");
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  std::vector<std::string> ids = Lines(put.out);
  ASSERT_EQ(ids.size(), 3u) << Describe(put);

  std::vector<std::string> got;
  ASSERT_TRUE(WaitFor(
      [&] {
        CliResult g = cluster_.Cli({"get", "data", "--show-ids", "--max", "3", "--timeout", "5"});
        if (g.exit_code != 0) return true;  // reported below
        for (const std::string& l : Lines(g.out)) got.push_back(l);
        return got.size() >= 3;
      },
      absl::Seconds(20)));
  ASSERT_EQ(got.size(), 3u);
  const char* payloads[] = {"a", "b", "c"};
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(got[i], absl::StrCat(ids[i], "\t", payloads[i]));
}

}  // namespace
}  // namespace taskq::testing
