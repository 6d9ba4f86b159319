// TLS end to end: a master serving --tls-cert/--tls-key, reached by the CLI
// and a worker that verify it with --tls-ca; a plaintext client is refused.
// The certificate is made for the test with the openssl command.
#include <unistd.h>

#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/harness.h"
#include "tests/harness_http2.h"

namespace taskq::testing {
namespace {

class Tls : public ::testing::Test {
 protected:
  void SetUp() override {
    cert_ = cluster_.dir() + "/cert.pem";
    key_ = cluster_.dir() + "/key.pem";
    auto openssl = cluster_.Spawn(
        "openssl", {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=taskq-test", "-addext", "subjectAltName=DNS:taskq-test",
                    "-keyout", key_, "-out", cert_});
    ASSERT_NE(openssl, nullptr);
    auto status = openssl->Wait(absl::Seconds(60));
    ASSERT_TRUE(status.has_value() && *status == 0) << openssl->Stderr();
    absl::Status s = cluster_.Start({"--tls-cert", cert_, "--tls-key", key_});
    ASSERT_TRUE(s.ok()) << s;
  }
  // Global flags that make the CLI or a worker verify the master.
  std::vector<std::string> TlsFlags() const {
    return {"--tls-ca", cert_, "--tls-server-name", "taskq-test"};
  }

  Cluster cluster_;
  std::string cert_, key_;
};

TEST_F(Tls, CliAndWorkerRunTheSeedJobOverTls) {
  Process* worker = cluster_.StartWorker(TlsFlags());
  ASSERT_NE(worker, nullptr);
  ASSERT_TRUE(cluster_.WaitWorkerConnected(worker));
  std::vector<std::string> args = TlsFlags();
  for (const char* a : {"submit", "--queue", "tasks", "--handler", "square", "--wait", "3", "4"}) {
    args.push_back(a);
  }
  CliResult r = cluster_.Cli(args);
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.out, "3 * 3 = 9")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "4 * 4 = 16")) << r.out;
}

// A TLS refusal is not something a retry fixes: the CLI says what to do at
// once instead of retrying for --retry-for (30 s by default).
TEST_F(Tls, PlaintextClientIsRefusedAtOnceWithAHint) {
  CliResult r = cluster_.Cli({"queue", "list"}, "", absl::Seconds(30));
  EXPECT_EQ(r.exit_code, 6) << Describe(r);
  EXPECT_LT(r.elapsed, absl::Seconds(10)) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "the master serves TLS")) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "--tls-ca")) << Describe(r);
  EXPECT_FALSE(absl::StrContains(r.err, "retrying")) << Describe(r);
}

TEST_F(Tls, WrongServerNameIsRefusedAtOnceWithAHint) {
  CliResult r = cluster_.Cli({"--tls-ca", cert_, "--tls-server-name", "someone-else", "queue",
                              "list"});
  EXPECT_EQ(r.exit_code, 6) << Describe(r);
  EXPECT_LT(r.elapsed, absl::Seconds(10)) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "not made for the name")) << Describe(r);
  EXPECT_FALSE(absl::StrContains(r.err, "retrying")) << Describe(r);
}

// A plaintext master at its limit of connections closes a new one just as a
// TLS master closes a plaintext client ("Socket closed"): that one is
// retried, and the call goes through once a connection is free.
TEST(TlsRefusal, PlaintextMasterAtItsConnectionLimitIsStillRetried) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start({"--max-unauthenticated", "1"}).ok());
  int hog = ConnectTcp(cluster.address());
  ASSERT_GE(hog, 0);
  auto cli = cluster.StartCli({"--retry-for", "20", "queue", "list"});
  ASSERT_NE(cli, nullptr);
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(cli->Stderr(), "retrying"); },
                      absl::Seconds(10)))
      << cli->Stderr();
  ::close(hog);
  auto status = cli->Wait(absl::Seconds(20));
  ASSERT_TRUE(status.has_value()) << cli->Stderr();
  EXPECT_EQ(*status, 0) << cli->Stderr();
}

}  // namespace
}  // namespace taskq::testing
