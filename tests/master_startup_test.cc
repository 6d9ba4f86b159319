// The master's start-up contract: the port file and the "listening" line,
// refusing a non-loopback address without TLS, clean exit on SIGTERM, and a
// worker that rides out a master restart.
#include <signal.h>

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

TEST(MasterStartup, PortFileMatchesListeningLine) {
  Cluster cluster;
  absl::Status s = cluster.Start();
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(absl::StartsWith(cluster.address(), "127.0.0.1:")) << cluster.address();
  EXPECT_NE(cluster.address(), "127.0.0.1:0");
  const std::string line = absl::StrCat("taskq-master listening on ", cluster.address());
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(cluster.master()->Stdout(), line); },
                      absl::Seconds(5)))
      << "stdout: " << cluster.master()->Stdout();
}

TEST(MasterStartup, SigtermExitsZero) {
  Cluster cluster;
  absl::Status s = cluster.Start();
  ASSERT_TRUE(s.ok()) << s;
  // A blocked get must not keep the master from shutting down.
  std::unique_ptr<Process> getter = cluster.StartCli({"get", "q", "--timeout", "60"});
  ASSERT_TRUE(WaitFor([&] { return cluster.StatNumber("q", "waiting_consumers") == 1; },
                      absl::Seconds(15), absl::Milliseconds(20)));
  cluster.master()->Kill(SIGTERM);
  EXPECT_EQ(cluster.master()->Wait(absl::Seconds(15)), 0) << cluster.master()->Stderr();
  // The get itself rides the stop (the master said it did nothing): it
  // says it is retrying and waits for a master to come back, up to its
  // --timeout (tests/cli_restart_test.cc sees it through a restart).
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(getter->Stderr(), "retrying"); },
                      absl::Seconds(15)))
      << getter->Stderr();
  EXPECT_TRUE(getter->Running()) << getter->Stderr();
}

TEST(MasterStartup, RefusesNonLoopbackWithoutTls) {
  TempDir dir;
  ProcessOptions o;
  o.argv = {BinPath("taskq-master"), "--listen", "0.0.0.0:0", "--port-file",
            dir.path() + "/port", "--token-file", dir.path() + "/token"};
  o.env = {{"HOME", dir.path()},
           {"TASKQ_MASTER", ""},
           {"TASKQ_TOKEN_FILE", ""},
           {"TASKQ_JOIN", ""}};
  o.output_dir = dir.path();
  o.name = "master";
  auto p = Process::Start(std::move(o));
  ASSERT_TRUE(p.ok()) << p.status();
  std::optional<int> status = (*p)->Wait(absl::Seconds(20));
  ASSERT_TRUE(status.has_value()) << "master is serving 0.0.0.0 without TLS";
  EXPECT_NE(*status, 0);
  const std::string output = (*p)->Stdout() + (*p)->Stderr();
  EXPECT_TRUE(absl::StrContains(output, "--insecure") || absl::StrContains(output, "--tls-cert"))
      << output;
  EXPECT_TRUE(ReadFile(dir.path() + "/port").empty()) << "wrote a port file anyway";
}

TEST(MasterStartup, UnknownFlagIsAUsageError) {
  TempDir dir;
  ProcessOptions o;
  o.argv = {BinPath("taskq-master"), "--no-such-flag"};
  o.output_dir = dir.path();
  o.name = "master";
  auto p = Process::Start(std::move(o));
  ASSERT_TRUE(p.ok()) << p.status();
  std::optional<int> status = (*p)->Wait(absl::Seconds(20));
  ASSERT_TRUE(status.has_value());
  EXPECT_NE(*status, 0);
}

TEST(MasterStartup, WorkerReconnectsAfterMasterRestart) {
  Cluster first;
  absl::Status s = first.Start();
  ASSERT_TRUE(s.ok()) << s;
  Process* worker = first.StartWorker({"--concurrency", "1"});
  ASSERT_TRUE(first.WaitWorkerConnected(worker)) << worker->Stderr();
  CliResult r1 = first.Cli({"submit", "--queue", "tasks", "--handler", "square", "--wait", "2"});
  EXPECT_EQ(r1.exit_code, 0) << Describe(r1);
  EXPECT_EQ(r1.out, "2 * 2 = 4\n");

  // Restart the master on the same address with the same token.
  const std::string address = first.address();
  EXPECT_EQ(first.master()->Stop(absl::Seconds(15)), 0);
  std::unique_ptr<Process> second =
      first.Spawn("master-2", {BinPath("taskq-master"), "--listen", address, "--port-file",
                               first.dir() + "/port-2", "--token-file", first.token_file(),
                               "--data-dir", first.data_dir()});
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(WaitFor([&] { return !ReadFile(first.dir() + "/port-2").empty() ||
                                   !second->Running(); },
                      absl::Seconds(20)));
  ASSERT_TRUE(second->Running()) << "could not restart on " << address << ":\n"
                                 << second->Stderr();
  CliResult r2 = first.Cli({"submit", "--queue", "tasks", "--handler", "square", "--wait",
                            "--wait-timeout", "30", "3"},
                           "", absl::Seconds(40));
  EXPECT_EQ(r2.exit_code, 0) << Describe(r2) << "\nworker:\n" << worker->Stderr();
  EXPECT_EQ(r2.out, "3 * 3 = 9\n");
  EXPECT_EQ(second->Stop(absl::Seconds(15)), 0);
}

}  // namespace
}  // namespace taskq::testing
