// Scenario 5 of the multi-host cluster: a master far away. A delay proxy
// on the master host (taskq-delay-proxy: every byte is passed on N ms late
// in each direction) stands in for distance; nftables on the client's
// link drops 1 % of packets.
//   - At 200 ms round trip the CLI, the workers and `submit --wait` work.
//   - Connecting (TCP + TLS handshake + the first call) succeeds every
//     time at 0, 100 and 300 ms added round trip with 1 % loss.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/cluster/netns_cluster.h"

namespace taskq::testing {
namespace {

class Distance : public ClusterFixture<> {};

TEST_F(Distance, CliWorkersAndSubmitWaitWorkWithTheMaster200MsAway) {
  ASSERT_NE(cluster_.StartDelayProxy(5001, absl::Milliseconds(100)), nullptr);
  cluster_.set_client_master(absl::StrCat(cluster_.master_ip(), ":5001"));
  std::vector<Process*> workers;
  for (const std::string& host : cluster_.worker_hosts()) {
    workers.push_back(cluster_.StartWorker(host, {"--concurrency", "8"}));
  }
  for (Process* w : workers) ASSERT_TRUE(cluster_.WaitWorkerConnected(w, absl::Seconds(60)));

  CliResult list = cluster_.Cli({"queue", "list"});
  ASSERT_EQ(list.exit_code, 0) << Describe(list);
  std::cout << "[measure] 200 ms away: `queue list` took " << absl::FormatDuration(list.elapsed)
            << "\n";

  std::vector<std::string> args = {"submit", "--queue", "tasks", "--handler", "square", "--wait"};
  std::set<std::string> expected;
  for (long long i = 1; i <= 500; ++i) {
    args.push_back(absl::StrCat(i));
    expected.insert(absl::StrCat(i, " * ", i, " = ", i * i));
  }
  CliResult r = cluster_.Cli(args, absl::Seconds(120));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(CheckEachOnce(Lines(r.out), expected), "");
  std::cout << "[measure] 200 ms away: 500 squares with submit --wait took "
            << absl::FormatDuration(r.elapsed) << "\n";
}

TEST_F(Distance, ConnectSucceedsAt0To300MsAddedRoundTripWith1PercentLoss) {
  constexpr int kTries = 16;
  constexpr int kAtOnce = 4;
  absl::Status s = cluster_.net().Loss("client", 1);
  ASSERT_TRUE(s.ok()) << s;
  for (int rtt_ms : {0, 100, 300}) {
    if (rtt_ms == 0) {
      cluster_.set_client_master(cluster_.master_address());
    } else {
      const int port = 5000 + rtt_ms;
      ASSERT_NE(cluster_.StartDelayProxy(port, absl::Milliseconds(rtt_ms / 2)), nullptr);
      cluster_.set_client_master(absl::StrCat(cluster_.master_ip(), ":", port));
    }
    int ok = 0;
    absl::Duration slowest;
    std::string failures;
    // A few CLIs at once, each its own connection.
    for (int started = 0; started < kTries; started += kAtOnce) {
      std::vector<std::unique_ptr<Process>> batch;
      std::vector<absl::Time> starts;
      for (int i = 0; i < kAtOnce; ++i) {
        starts.push_back(absl::Now());
        batch.push_back(cluster_.StartCli({"queue", "list"}));
        ASSERT_NE(batch.back(), nullptr);
      }
      for (int i = 0; i < kAtOnce; ++i) {
        std::optional<int> rc = batch[i]->Wait(absl::Seconds(90));
        slowest = std::max(slowest, absl::Now() - starts[i]);
        if (rc == 0) {
          ++ok;
        } else {
          absl::StrAppend(&failures, "exit ", rc.value_or(-1), ": ", batch[i]->Stderr());
        }
      }
    }
    std::cout << "[measure] connect with 1% loss, +" << rtt_ms << " ms round trip: " << ok << "/"
              << kTries << " succeeded, slowest " << absl::FormatDuration(slowest) << "\n";
    EXPECT_EQ(ok, kTries) << "+" << rtt_ms << " ms: " << failures;
  }
}

}  // namespace
}  // namespace taskq::testing
