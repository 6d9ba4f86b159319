// `taskq-master init` end to end: the files it makes and their modes, the
// master on that data dir serving TLS only, the CLI with the CA, refusals
// that come at once, and `init --rotate-server-cert` served without a
// restart while a worker stays connected.
#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "common/auth.h"
#include "common/join_bundle.h"
#include "common/x509.h"
#include "gtest/gtest.h"
#include "taskq/v1/taskq.grpc.pb.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int Mode(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 07777);
}

class Init : public ::testing::Test {
 protected:
  // Runs `taskq-master init --data-dir dir args...`.
  CliResult RunInit(const std::string& dir, std::vector<std::string> args = {}) {
    std::vector<std::string> argv = {BinPath("taskq-master"), "init", "--data-dir", dir};
    argv.insert(argv.end(), args.begin(), args.end());
    CliResult r;
    auto p = cluster_.Spawn("init-" + std::to_string(++inits_), argv);
    if (p == nullptr) return r;
    auto status = p->Wait(absl::Seconds(30));
    r.exit_code = status.value_or(-1);
    r.timed_out = !status.has_value();
    r.out = p->Stdout();
    r.err = p->Stderr();
    return r;
  }
  std::string Tls(const std::string& file) const { return cluster_.data_dir() + "/tls/" + file; }
  // Initialises the cluster's data dir and starts the master on it.
  void InitAndStart() {
    CliResult r = RunInit(cluster_.data_dir(), {"--host", "127.0.0.1"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    absl::Status s = cluster_.Start();
    ASSERT_TRUE(s.ok()) << s;
  }
  // SHA-256 of the certificate the master serves to a new connection.
  std::string ServedFingerprint() {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadAll(Tls("ca.pem"));
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
    auto channel = grpc::CreateCustomChannel(cluster_.address(), grpc::SslCredentials(ssl), args);
    auto stub = v1::TaskQueue::NewStub(channel);
    auto token = LoadToken(cluster_.token_file());
    if (!token.ok()) return "no token";
    grpc::ClientContext context;
    context.AddMetadata(kAuthMetadataKey, BearerValue(*token));
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ListQueuesRequest request;
    v1::ListQueuesResponse response;
    grpc::Status status = stub->ListQueues(&context, request, &response);
    if (!status.ok()) return "call failed: " + status.error_message();
    auto pems = context.auth_context()->FindPropertyValues("x509_pem_cert");
    if (pems.empty()) return "no certificate";
    auto fingerprint = CertificateSha256Hex(std::string(pems.front().data(), pems.front().size()));
    return fingerprint.ok() ? *fingerprint : "unparsable certificate";
  }
  std::vector<std::string> CaFlags() const { return {"--tls-ca", Tls("ca.pem")}; }

  Cluster cluster_;
  int inits_ = 0;
};

TEST_F(Init, MakesPrivateFilesAndNeverReplacesTheCa) {
  const std::string dir = cluster_.data_dir();
  CliResult r = RunInit(dir, {"--host", "master.example", "--host", "10.1.2.3"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(Mode(dir), 0700);
  EXPECT_EQ(Mode(dir + "/tls"), 0700);
  for (const char* f : {"ca.pem", "ca.key", "server.pem", "server.key", "hosts"}) {
    EXPECT_EQ(Mode(Tls(f)), 0600) << f;
  }
  EXPECT_EQ(Mode(dir + "/credentials"), 0600);
  EXPECT_EQ(Mode(dir + "/admin.join"), 0600);
  EXPECT_EQ(ReadAll(Tls("hosts")), "master.example\n10.1.2.3\n");
  // What it made and what to do next; never a secret.
  EXPECT_TRUE(absl::StrContains(r.out, "master.example, 10.1.2.3")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "localhost")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "Next:")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "tq1.")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "PRIVATE KEY")) << r.out;

  // The admin's bundle: the --host masters, the CA, a token.
  auto bundle = ReadJoinBundle(dir + "/admin.join");
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  ASSERT_EQ(bundle->master_size(), 2);
  EXPECT_EQ(bundle->master(0), "master.example:5000");
  EXPECT_EQ(bundle->master(1), "10.1.2.3:5000");
  EXPECT_EQ(bundle->ca_pem(), ReadAll(Tls("ca.pem")));
  EXPECT_EQ(bundle->credential(), "admin");
  EXPECT_TRUE(absl::StartsWith(bundle->token(), "tq1.")) << "token format";

  const std::string ca = ReadAll(Tls("ca.pem"));
  CliResult again = RunInit(dir);
  EXPECT_EQ(again.exit_code, 1) << Describe(again);
  EXPECT_TRUE(absl::StrContains(again.err, "already has a CA")) << again.err;
  EXPECT_TRUE(absl::StrContains(again.err, "--rotate-server-cert")) << again.err;
  EXPECT_EQ(ReadAll(Tls("ca.pem")), ca);
}

TEST_F(Init, MasterServesTlsOnlyAndRefusalsComeAtOnce) {
  InitAndStart();
  // Plaintext, even on loopback: refused at once, saying what to give.
  CliResult plain = cluster_.Cli({"queue", "list"});
  EXPECT_EQ(plain.exit_code, 6) << Describe(plain);
  EXPECT_LT(plain.elapsed, absl::Seconds(10)) << Describe(plain);
  EXPECT_TRUE(absl::StrContains(plain.err, "serves TLS")) << Describe(plain);

  std::vector<std::string> list = CaFlags();
  list.insert(list.end(), {"queue", "list"});
  CliResult ok = cluster_.Cli(list);
  EXPECT_EQ(ok.exit_code, 0) << Describe(ok);
  // The admin's bundle alone (its token, its CA) is enough.
  CliResult joined = cluster_.CliRaw({"--join",
                                      cluster_.data_dir() + "/admin.join", "--master",
                                      cluster_.address(), "queue", "create", "jobs"});
  EXPECT_EQ(joined.exit_code, 0) << Describe(joined);

  // Another deployment's CA does not vouch for this master.
  const std::string other = cluster_.dir() + "/other";
  ASSERT_EQ(RunInit(other).exit_code, 0);
  CliResult wrong_ca =
      cluster_.Cli({"--tls-ca", other + "/tls/ca.pem", "queue", "list"});
  EXPECT_EQ(wrong_ca.exit_code, 6) << Describe(wrong_ca);
  EXPECT_LT(wrong_ca.elapsed, absl::Seconds(10)) << Describe(wrong_ca);
  EXPECT_TRUE(absl::StrContains(wrong_ca.err, "not signed by the CA")) << Describe(wrong_ca);
  EXPECT_FALSE(absl::StrContains(wrong_ca.err, "retrying")) << Describe(wrong_ca);
}

TEST_F(Init, RotatedCertificateIsServedWithoutRestartAndWorkersKeepWorking) {
  InitAndStart();
  const std::string before = ServedFingerprint();
  ASSERT_EQ(before, *CertificateSha256Hex(ReadAll(Tls("server.pem"))));
  Process* worker = cluster_.StartWorker(CaFlags());
  ASSERT_NE(worker, nullptr);
  ASSERT_TRUE(cluster_.WaitWorkerConnected(worker));

  CliResult rotate = RunInit(cluster_.data_dir(), {"--rotate-server-cert"});
  ASSERT_EQ(rotate.exit_code, 0) << Describe(rotate);
  const std::string after = *CertificateSha256Hex(ReadAll(Tls("server.pem")));
  ASSERT_NE(after, before);
  EXPECT_EQ(Mode(Tls("server.pem")), 0600);
  EXPECT_EQ(Mode(Tls("server.key")), 0600);
  // The first init's --host is kept: clients reach 127.0.0.1 as before.
  EXPECT_TRUE(absl::StrContains(rotate.out, "127.0.0.1")) << rotate.out;
  std::string served;
  EXPECT_TRUE(WaitFor([&] { return (served = ServedFingerprint()) == after; }, absl::Seconds(15)))
      << "still served: " << served;

  // The worker connected before the rotation still serves tasks given
  // through a connection made after it.
  std::vector<std::string> args = CaFlags();
  for (const char* a : {"submit", "--queue", "tasks", "--handler", "square", "--wait", "3", "4"}) {
    args.push_back(a);
  }
  CliResult r = cluster_.Cli(args);
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.out, "3 * 3 = 9")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "4 * 4 = 16")) << r.out;
}

TEST_F(Init, RotationNeedsACa) {
  CliResult r = RunInit(cluster_.data_dir(), {"--rotate-server-cert"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "has no CA")) << r.err;
}

}  // namespace
}  // namespace taskq::testing
