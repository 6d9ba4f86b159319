// Authentication end to end: the master's token file, the CLI with a wrong,
// missing or over-readable token, and a worker with a wrong token.
#include <sys/stat.h>

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

bool MentionsAuthentication(const std::string& text) {
  return absl::StrContains(absl::AsciiStrToLower(text), "authenticat");
}

class Auth : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start();
    ASSERT_TRUE(s.ok()) << s;
    wrong_token_ = cluster_.dir() + "/wrong-token";
    ASSERT_TRUE(WriteFile(wrong_token_, "this-is-not-the-token\n", 0600).ok());
  }
  Cluster cluster_;
  std::string wrong_token_;
};

TEST_F(Auth, MasterCreatesPrivateTokenFile) {
  struct stat st;
  ASSERT_EQ(::stat(cluster_.token_file().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  std::string token(absl::StripAsciiWhitespace(ReadFile(cluster_.token_file())));
  EXPECT_GE(token.size(), 32u) << "token looks too short to be a 256-bit secret";
  // The secret is never printed.
  EXPECT_FALSE(absl::StrContains(cluster_.master()->Stdout(), token));
  EXPECT_FALSE(absl::StrContains(cluster_.master()->Stderr(), token));
}

TEST_F(Auth, RightTokenWorks) {
  CliResult r = cluster_.Cli({"queue", "list"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
}

TEST_F(Auth, WrongTokenIsRefused) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"queue", "list"}, {"put", "data", "x"}, {"get", "data", "--nowait"}}) {
    CliResult r = cluster_.CliWithToken(wrong_token_, args);
    EXPECT_EQ(r.exit_code, 5) << Describe(r);
    EXPECT_TRUE(MentionsAuthentication(r.err)) << Describe(r);
    EXPECT_TRUE(absl::StartsWith(r.err, "taskq: ")) << Describe(r);
  }
  // Nothing was put by the refused call.
  CliResult get = cluster_.Cli({"get", "data", "--nowait"});
  EXPECT_EQ(get.exit_code, 3) << Describe(get);
}

TEST_F(Auth, MissingTokenFileIsAClearError) {
  const std::string missing = cluster_.dir() + "/no-such-token";
  CliResult r = cluster_.CliWithToken(missing, {"queue", "list"});
  EXPECT_NE(r.exit_code, 0) << Describe(r);
  EXPECT_NE(r.exit_code, 6) << "not a connectivity problem: " << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "token")) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, missing)) << "names the file: " << Describe(r);
}

TEST_F(Auth, GroupReadableTokenFileIsRefusedWithChmodHint) {
  const std::string loose = cluster_.dir() + "/loose-token";
  ASSERT_TRUE(WriteFile(loose, ReadFile(cluster_.token_file()), 0640).ok());
  CliResult r = cluster_.CliWithToken(loose, {"queue", "list"});
  EXPECT_NE(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "chmod")) << Describe(r);
}

TEST_F(Auth, TokenIsNotAcceptedOnTheCommandLine) {
  // There is no --token flag: secrets in argv leak through ps.
  CliResult r = cluster_.CliRaw({"--master", cluster_.address(), "--token", "x", "queue", "list"});
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
}

TEST_F(Auth, WorkerWithWrongTokenGetsNoTasks) {
  CliResult put = cluster_.Cli(
      {"submit", "--queue", "tasks", "--handler", "square", "--reply-to", "res", "4"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);

  Process* bad = cluster_.StartWorkerWithToken(wrong_token_, {"--concurrency", "1"});
  ASSERT_NE(bad, nullptr);
  // The worker says why it is not working (or gives up): wait for that.
  EXPECT_TRUE(WaitFor([&] { return MentionsAuthentication(bad->Stderr()) || !bad->Running(); },
                      absl::Seconds(20)))
      << "worker with a wrong token neither logged an authentication error nor exited:\n"
      << bad->Stderr();
  EXPECT_EQ(cluster_.StatNumber("tasks", "leased"), 0);
  EXPECT_EQ(cluster_.StatNumber("tasks", "ready"), 1);
  EXPECT_EQ(cluster_.StatNumber("tasks", "workers"), 0);
  CliResult none = cluster_.Cli({"get", "res", "--nowait"});
  EXPECT_EQ(none.exit_code, 3) << Describe(none);

  // The same task is done once a worker with the right token shows up.
  ASSERT_NE(cluster_.StartWorker({"--concurrency", "1"}), nullptr);
  CliResult res = cluster_.Cli({"get", "res", "--timeout", "20"});
  EXPECT_EQ(res.exit_code, 0) << Describe(res);
  EXPECT_EQ(res.out, "4 * 4 = 16\n");
}

// A guessable token must not protect a master: it refuses to start and
// says how to make a good one.
TEST(MasterToken, WeakTokenFileStopsTheMaster) {
  for (const std::string& weak : {std::string("abc"), std::string(64, 'a'),
                                  std::string("0123456789abcdef0123456789abcdef")}) {
    Cluster cluster;
    ASSERT_TRUE(WriteFile(cluster.token_file(), weak + "\n", 0600).ok());
    absl::Status s = cluster.Start({}, absl::Seconds(20));
    ASSERT_FALSE(s.ok()) << "master started with the token \"" << weak << "\"";
    ASSERT_NE(cluster.master(), nullptr);
    EXPECT_NE(cluster.master()->exit_status().value_or(0), 0);
    const std::string err = cluster.master()->Stderr();
    EXPECT_TRUE(absl::StrContains(err, "weak token")) << err;
    EXPECT_TRUE(absl::StrContains(err, "openssl rand -hex 32")) << err;
    EXPECT_TRUE(absl::StrContains(err, cluster.token_file())) << err;
    if (weak.size() > 8) {
      EXPECT_FALSE(absl::StrContains(err, weak)) << "the token was printed: " << err;
    }
  }
}

// A random token the operator made (openssl rand -hex 16: 128 bits) works
// for the master, the CLI and a worker.
TEST(MasterToken, OperatorMadeRandomTokenWorks) {
  Cluster cluster;
  ASSERT_TRUE(WriteFile(cluster.token_file(), "3f9a1c07be5d4e2a8c6b0f1d7e3a9520\n", 0600).ok());
  absl::Status s = cluster.Start();
  ASSERT_TRUE(s.ok()) << s;
  Process* worker = cluster.StartWorker({"--concurrency", "1"});
  ASSERT_NE(worker, nullptr);
  CliResult r = cluster.Cli({"submit", "--queue", "tasks", "--handler", "square", "--wait", "3"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "3 * 3 = 9\n");
}

}  // namespace
}  // namespace taskq::testing
