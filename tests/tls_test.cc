// TLS end to end: a master serving --tls-cert/--tls-key, reached by the CLI
// and a worker that verify it with --tls-ca; a plaintext client is refused.
// The certificate is made for the test with the openssl command.
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

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

TEST_F(Tls, PlaintextClientIsRefused) {
  CliResult r = cluster_.Cli({"queue", "list"}, "", absl::Seconds(30));
  EXPECT_NE(r.exit_code, 0) << Describe(r);
  EXPECT_FALSE(r.timed_out) << Describe(r);
}

TEST_F(Tls, WrongServerNameIsRefused) {
  CliResult r = cluster_.Cli({"--tls-ca", cert_, "--tls-server-name", "someone-else", "queue",
                              "list"});
  EXPECT_NE(r.exit_code, 0) << Describe(r);
}

}  // namespace
}  // namespace taskq::testing
