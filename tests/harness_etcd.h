// A real etcd (Debian's etcd-server) for tests: one member on 127.0.0.1
// with free ports and a data dir in a temp dir, started and waited for
// (a read answers), always stopped by the destructor.
//
// Thread-safety: use from the test's thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/etcd_client.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {

class EtcdServer {
 public:
  EtcdServer() = default;
  ~EtcdServer() = default;

  // True if /usr/bin/etcd exists (tests skip with a reason otherwise).
  static bool Installed();

  absl::Status Start(absl::Duration timeout = absl::Seconds(30));
  // A client of it (fails the test and returns nullptr if it cannot be made).
  std::unique_ptr<EtcdClient> Client(absl::Duration call_timeout = absl::Seconds(5)) const;
  // HOST:PORT of its client URL.
  const std::string& endpoint() const { return endpoint_; }
  Process* process() { return process_.get(); }

 private:
  TempDir dir_;
  std::string endpoint_;
  std::unique_ptr<Process> process_;
};

// Starts `master` (not started yet) as the cluster member `name` of
// `etcd`'s cluster: --cluster, --name, --advertise 127.0.0.1:0 (its bound
// port) and `extra_args`. With `token_from`, it uses that master's token,
// so one token works on every master of the test.
absl::Status StartClusterMaster(Cluster& master, const EtcdServer& etcd, const std::string& name,
                                std::vector<std::string> extra_args = {},
                                const Cluster* token_from = nullptr);

// How many masters `master` sees up (GetCluster with its token); -1 if it
// does not answer.
int MastersUpAsSeenBy(const Cluster& master);

// Starts masters[i] as names[i] in `etcd`'s cluster (StartClusterMaster,
// each with masters[0]'s token) and waits until every one sees them all up,
// so a test can place queues on any of them.
absl::Status StartClusterMasters(absl::Span<Cluster> masters, const EtcdServer& etcd,
                                 const std::vector<std::string>& names,
                                 const std::vector<std::string>& extra_args = {});

// A fixture with a started etcd and a client of it; skips the test when
// etcd-server is not installed.
class EtcdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!EtcdServer::Installed()) GTEST_SKIP() << "etcd-server is not installed";
    absl::Status s = etcd_.Start();
    ASSERT_TRUE(s.ok()) << s;
    client_ = etcd_.Client();
    ASSERT_NE(client_, nullptr);
  }

  EtcdServer etcd_;
  std::unique_ptr<EtcdClient> client_;
};

}  // namespace taskq::testing
