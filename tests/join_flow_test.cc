// The join-bundle flow end to end (issue 14), against the real binaries:
// `taskq-master init`, the master on that data dir (TLS on every address),
// `taskq --join <data-dir>/admin.join credential create ... --bundle F`,
// then `taskq-worker --join F` and `taskq --join F` with nothing else: the
// seed job runs with a worker and a producer bundle, a certificate (mTLS)
// worker bundle (whose first master address is dead), $TASKQ_JOIN, the
// token printed once, list and revoke; a bundle others can read is refused.
//
// (Named join_flow_test: common/join_bundle_test.cc, the file format's unit
// test, already owns the target name join_bundle_test.)
#include <sys/stat.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/join_bundle.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

int ModeOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 07777);
}

class JoinFlow : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status init = cluster_.InitMaster();
    ASSERT_TRUE(init.ok()) << init;
    admin_ = cluster_.data_dir() + "/admin.join";
    ASSERT_EQ(ModeOf(admin_), 0600) << "init made no private " << admin_;
    absl::Status s = cluster_.Start();
    ASSERT_TRUE(s.ok()) << s;
  }

  // The CLI with a bundle and nothing else but, for the admin bundle, the
  // master's ephemeral port (init wrote the default port into it).
  CliResult Admin(std::vector<std::string> args) {
    args.insert(args.begin(), {"--join", admin_, "--master", cluster_.address()});
    return cluster_.CliRaw(std::move(args));
  }
  CliResult As(const std::string& bundle, std::vector<std::string> args) {
    args.insert(args.begin(), {"--join", bundle});
    return cluster_.CliRaw(std::move(args));
  }
  // `credential create NAME ... --bundle DIR/NAME.join`; returns the path.
  std::string CreateBundle(const std::string& name, std::vector<std::string> flags) {
    const std::string path = absl::StrCat(cluster_.dir(), "/", name, ".join");
    std::vector<std::string> args = {"credential", "create", name};
    args.insert(args.end(), flags.begin(), flags.end());
    args.insert(args.end(), {"--bundle", path});
    CliResult r = Admin(args);
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.out, path + "\n") << "only the path, never the secret";
    EXPECT_EQ(ModeOf(path), 0600);
    return path;
  }
  // taskq-worker --join BUNDLE, nothing else; waits for its stream.
  Process* StartWorker(const std::string& bundle) {
    workers_.push_back(cluster_.Spawn(absl::StrCat("worker-", workers_.size()),
                                      {BinPath("taskq-worker"), "--join", bundle}));
    Process* w = workers_.back().get();
    if (w == nullptr) return nullptr;
    EXPECT_TRUE(WaitFor([&] { return Count(w->Stderr(), "connected to") > 0 || !w->Running(); },
                        absl::Seconds(20)));
    EXPECT_TRUE(w->Running()) << w->Stderr();
    return w;
  }
  void ExpectSeedJob(const std::string& producer_bundle) {
    CliResult r = As(producer_bundle,
                     {"submit", "--queue", "tasks", "--handler", "square", "--wait", "1", "2", "3"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    std::vector<std::string> lines = Lines(r.out);
    EXPECT_EQ(std::set<std::string>(lines.begin(), lines.end()),
              (std::set<std::string>{"1 * 1 = 1", "2 * 2 = 4", "3 * 3 = 9"}))
        << r.out;
  }

  Cluster cluster_;
  std::string admin_;
  std::vector<std::unique_ptr<Process>> workers_;  // stopped before the cluster
};

TEST_F(JoinFlow, WorkerAndProducerBundlesRunTheSeedJob) {
  const std::string w1 = CreateBundle("w1", {"--role", "worker", "--queues", "tasks"});
  const std::string p1 = CreateBundle("p1", {"--role", "producer", "--queues", "tasks"});
  auto bundle = ReadJoinBundle(w1);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ(bundle->credential(), "w1");
  // The master announces init's --host names with the port it listens on.
  ASSERT_EQ(bundle->master_size(), 1);
  EXPECT_EQ(bundle->master(0), cluster_.address());
  EXPECT_TRUE(absl::StartsWith(bundle->token(), "tq1.")) << "a token credential";
  EXPECT_NE(bundle->ca_pem().find("BEGIN CERTIFICATE"), std::string::npos);
  ASSERT_NE(StartWorker(w1), nullptr);
  ExpectSeedJob(p1);
}

TEST_F(JoinFlow, CertificateCredentialWorkerServes) {
  const std::string w2 =
      CreateBundle("w2", {"--role", "worker", "--queues", "tasks", "--cert", "--expires", "1d",
                          "--bundle-master", "127.0.0.1:1", "--bundle-master", cluster_.address()});
  auto bundle = ReadJoinBundle(w2);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_TRUE(bundle->token().empty()) << "a certificate credential sends no token";
  // The first address refuses: the worker goes on to the second.
  EXPECT_EQ(bundle->master_size(), 2);
  EXPECT_NE(bundle->client_cert_pem().find("BEGIN CERTIFICATE"), std::string::npos);
  EXPECT_NE(bundle->client_key_pem().find("PRIVATE KEY"), std::string::npos);
  ASSERT_NE(StartWorker(w2), nullptr);
  ExpectSeedJob(CreateBundle("p2", {"--role", "producer", "--queues", "tasks"}));

  CliResult list = Admin({"credential", "list"});
  ASSERT_EQ(list.exit_code, 0) << Describe(list);
  bool found = false;
  for (const std::string& line : Lines(list.out)) {
    if (absl::StartsWith(line, "w2 ")) {
      found = true;
      EXPECT_TRUE(absl::StrContains(line, " worker ")) << line;
      EXPECT_TRUE(absl::StrContains(line, " certificate ")) << line;
    }
  }
  EXPECT_TRUE(found) << list.out;
}

TEST_F(JoinFlow, TaskqJoinFromTheEnvironment) {
  const std::string p1 = CreateBundle("p1", {"--role", "producer", "--queues", "tasks"});
  ProcessOptions o;
  o.argv = {BinPath("taskq"), "put", "tasks", "hello"};
  o.env = cluster_.ChildEnv();
  o.env["TASKQ_JOIN"] = p1;
  o.env["TASKQ_MASTER"] = "127.0.0.1:1";  // the bundle wins over the environment
  o.output_dir = cluster_.dir();
  o.name = "cli-env";
  auto p = Process::Start(std::move(o));
  ASSERT_TRUE(p.ok()) << p.status();
  auto status = (*p)->Wait(absl::Seconds(30));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, 0) << (*p)->Stderr();
  CliResult stats = Admin({"queue", "stats", "tasks"});
  EXPECT_TRUE(absl::StrContains(stats.out, "\nready: 1\n")) << Describe(stats);
}

TEST_F(JoinFlow, TokenIsPrintedOnceThenListedAndRevoked) {
  CliResult r = Admin({"credential", "create", "r1", "--role", "reader"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const std::vector<std::string> out = Lines(r.out);
  ASSERT_EQ(out.size(), 1u) << r.out;
  EXPECT_TRUE(absl::StartsWith(out[0], "tq1.")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.err, "shown only this once")) << r.err;
  const std::string token_file = cluster_.dir() + "/r1.token";
  ASSERT_TRUE(WriteFile(token_file, out[0] + "\n").ok());

  CliResult reader = cluster_.CliWithToken(token_file, {"--tls-ca",
      cluster_.data_dir() + "/tls/ca.pem", "queue", "list"});
  EXPECT_EQ(reader.exit_code, 0) << Describe(reader);

  CliResult list = Admin({"credential", "list"});
  ASSERT_EQ(list.exit_code, 0) << Describe(list);
  EXPECT_TRUE(absl::StartsWith(list.out, "NAME  ")) << list.out;
  EXPECT_TRUE(absl::StrContains(list.out, "\nr1 ")) << list.out;
  EXPECT_FALSE(absl::StrContains(list.out, out[0])) << "a secret in the list";

  r = Admin({"credential", "revoke", "r1"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  reader = cluster_.CliWithToken(token_file, {"--tls-ca", cluster_.data_dir() + "/tls/ca.pem",
                                              "queue", "list"});
  EXPECT_EQ(reader.exit_code, 5) << Describe(reader);
  EXPECT_TRUE(absl::StrContains(reader.err, "revoked")) << reader.err;
  list = Admin({"credential", "list"});
  EXPECT_FALSE(absl::StrContains(list.out, "\nr1 ")) << list.out;
  list = Admin({"credential", "list", "--all"});
  EXPECT_TRUE(absl::StrContains(list.out, "REVOKED")) << list.out;
  EXPECT_TRUE(absl::StrContains(list.out, "\nr1 ")) << list.out;
}

TEST_F(JoinFlow, ABundleOthersCanReadIsRefused) {
  const std::string w1 = CreateBundle("w1", {"--role", "worker", "--queues", "tasks"});
  ASSERT_EQ(::chmod(w1.c_str(), 0640), 0);
  auto worker = cluster_.Spawn("worker-readable", {BinPath("taskq-worker"), "--join", w1});
  ASSERT_NE(worker, nullptr);
  auto status = worker->Wait(absl::Seconds(20));
  ASSERT_TRUE(status.has_value()) << "a worker with a readable bundle kept running";
  EXPECT_EQ(*status, 1);
  EXPECT_TRUE(absl::StrContains(worker->Stderr(), "run: chmod 600 " + w1)) << worker->Stderr();

  CliResult r = As(w1, {"queue", "list"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "run: chmod 600 " + w1)) << r.err;

  // Nor does create overwrite an existing file.
  r = Admin({"credential", "create", "w3", "--role", "worker", "--queues", "tasks", "--bundle",
             w1});
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "exists")) << r.err;
}

}  // namespace
}  // namespace taskq::testing
