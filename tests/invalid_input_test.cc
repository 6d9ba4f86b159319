// Bad input through the CLI: every refusal has the documented exit code and
// a message a person can act on, and the master keeps serving afterwards.
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

constexpr int kMaxPayload = 1024;

class InvalidInput : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start({"--max-payload-bytes", std::to_string(kMaxPayload)});
    ASSERT_TRUE(s.ok()) << s;
  }
  void ExpectMasterStillServes() {
    CliResult r = cluster_.Cli({"put", "ok-queue", "fine"});
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    CliResult g = cluster_.Cli({"get", "ok-queue", "--nowait"});
    EXPECT_EQ(g.exit_code, 0) << Describe(g);
    EXPECT_EQ(g.out, "fine\n");
  }
  Cluster cluster_;
};

TEST_F(InvalidInput, BadQueueNameNamesTheRule) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"put", "bad name!", "x"},
           {"queue", "create", "semi;colon"},
           {"get", "sl/ash", "--nowait"}}) {
    CliResult r = cluster_.Cli(args);
    EXPECT_EQ(r.exit_code, 5) << Describe(r);
    EXPECT_TRUE(absl::StrContains(r.err, "A-Za-z0-9_.:-")) << Describe(r);
  }
  CliResult dot = cluster_.Cli({"queue", "create", ".hidden"});
  EXPECT_EQ(dot.exit_code, 5) << Describe(dot);
  EXPECT_TRUE(absl::StrContains(dot.err, "'.'")) << Describe(dot);

  CliResult long_name = cluster_.Cli({"queue", "create", std::string(129, 'q')});
  EXPECT_EQ(long_name.exit_code, 5) << Describe(long_name);
  EXPECT_TRUE(absl::StrContains(long_name.err, "128")) << Describe(long_name);
  ExpectMasterStillServes();
}

TEST_F(InvalidInput, OversizedPayloadIsTooLarge) {
  CliResult r = cluster_.Cli({"put", "data", std::string(kMaxPayload + 1, 'p')});
  EXPECT_EQ(r.exit_code, 5) << Describe(r);
  EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(r.err), "too large")) << Describe(r);

  // Same through stdin and through submit.
  CliResult in = cluster_.Cli({"put", "data", "-"}, std::string(4 * kMaxPayload, 'p') + "\n");
  EXPECT_EQ(in.exit_code, 5) << Describe(in);
  EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(in.err), "too large")) << Describe(in);
  CliResult sub = cluster_.Cli(
      {"submit", "--queue", "tasks", "--handler", "square", std::string(kMaxPayload + 1, '7')});
  EXPECT_EQ(sub.exit_code, 5) << Describe(sub);

  // A payload at the limit is fine; nothing oversized got in.
  CliResult fits = cluster_.Cli({"put", "data", std::string(kMaxPayload, 'p')});
  EXPECT_EQ(fits.exit_code, 0) << Describe(fits);
  EXPECT_EQ(cluster_.StatNumber("data", "ready"), 1);
  ExpectMasterStillServes();
}

TEST_F(InvalidInput, UsageErrorsExitTwo) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"frobnicate"},
           {"queue", "create", "k", "--kind", "sideways"},
           {"put"},
           {"get", "q", "--timeout", "soon"},
           {"submit", "--queue", "tasks", "1"}}) {  // --handler missing
    CliResult r = cluster_.Cli(args);
    EXPECT_EQ(r.exit_code, 2) << Describe(r);
    EXPECT_FALSE(r.err.empty()) << Describe(r);
  }
}

TEST_F(InvalidInput, UnreachableMasterExitsSix) {
  // Port 1 on loopback: nothing listens there. The CLI keeps trying for
  // --retry-for (default 30 s, too long for a test), then exits 6; with
  // --retry-for 0 it gives up at once.
  for (const char* retry_for : {"2", "0"}) {
    absl::Time start = absl::Now();
    CliResult r = cluster_.CliRaw(
        {"--master", "127.0.0.1:1", "--token-file", cluster_.token_file(),
         "--retry-for", retry_for, "queue", "list"},
        "", absl::Seconds(25));
    absl::Duration took = absl::Now() - start;
    EXPECT_EQ(r.exit_code, 6) << Describe(r);
    EXPECT_TRUE(absl::StartsWith(r.err, "taskq: ")) << Describe(r);
    EXPECT_LT(took, absl::Seconds(15)) << "--retry-for " << retry_for;
  }
}

TEST_F(InvalidInput, UnknownQueueWithoutAutoCreate) {
  Cluster strict;
  absl::Status s = strict.Start({"--no-auto-create"});
  ASSERT_TRUE(s.ok()) << s;
  CliResult put = strict.Cli({"put", "nowhere", "x"});
  EXPECT_EQ(put.exit_code, 5) << Describe(put);
  EXPECT_TRUE(absl::StrContains(put.err, "nowhere")) << Describe(put);
  CliResult create = strict.Cli({"queue", "create", "somewhere"});
  ASSERT_EQ(create.exit_code, 0) << Describe(create);
  CliResult put2 = strict.Cli({"put", "somewhere", "x"});
  EXPECT_EQ(put2.exit_code, 0) << Describe(put2);
}

}  // namespace
}  // namespace taskq::testing
