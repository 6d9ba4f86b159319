// NetnsCluster: taskq deployed across hosts of a TestNetwork (netns.h) the
// way README.md's "Across hosts" recipe does it: a master host serving TLS
// on 0.0.0.0:5000 with a certificate from a CA the cluster makes, worker
// hosts and a client host that were given a copy of the token file and the
// CA certificate, the CLI reaching the master through TASKQ_MASTER and
// TASKQ_TOKEN_FILE.
//
//   NetnsCluster c;
//   if (auto why = NetnsCluster::WhyUnavailable(); !why.empty()) GTEST_SKIP() << why;
//   ASSERT_OK(c.Create());                 // hosts master, worker1..3, client
//   ASSERT_OK(c.StartMaster());
//   Process* w = c.StartWorker("worker1", {"--concurrency", "8"});
//   CliResult r = c.Cli({"submit", "--queue", "tasks", ...});
//   c.net().BlackHole("worker1");          // faults: see netns.h
//
// Each host has its own directory, dir()/<host>, which is HOME for the
// programs it runs (the master's default data dir is under it). Program
// output goes to dir()/<host>-<program>-N.out/.err. The destructor stops
// workers, then the master (SIGTERM, SIGKILL after a deadline), dumps their
// logs if the test failed, then deletes the network.
// Thread-safety: none; use it from the test's own thread.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/cluster/netns.h"
#include "tests/harness.h"

namespace taskq::testing {

// Starts `argv` (already wrapped to run on a host) as a program of the host
// whose directory is `host_dir`: HOME there, no TASKQ_* settings inherited
// from the test's environment, then `env`. Output goes to
// `output_dir`/`name`.out/.err. nullptr (and a test failure) if it cannot
// be spawned.
std::unique_ptr<Process> SpawnAsHost(std::vector<std::string> argv, const std::string& host_dir,
                                     std::map<std::string, std::string> env,
                                     const std::string& output_dir, const std::string& name);

class NetnsCluster {
 public:
  static constexpr int kMasterPort = 5000;

  // TestNetwork::WhyUnavailable(), plus a missing openssl.
  static std::string WhyUnavailable();

  NetnsCluster() = default;
  ~NetnsCluster();
  NetnsCluster(const NetnsCluster&) = delete;
  NetnsCluster& operator=(const NetnsCluster&) = delete;

  // Makes hosts "master", "worker1".."worker<workers>", "client" (in that
  // order: the master is 10.213.0.1, the client the last address), a CA and
  // the master's certificate for its address.
  absl::Status Create(int workers = 3);

  TestNetwork& net() { return *net_; }
  const std::string& dir() const { return dir_.path(); }
  std::string HostDir(const std::string& host) const { return dir() + "/" + host; }
  std::vector<std::string> worker_hosts() const;
  std::string master_ip() const { return net_->host("master").address; }
  // master_ip():5000.
  std::string master_address() const;
  // What workers and the CLI are told to use: master_address() unless
  // set_client_master chose another (a delay proxy).
  const std::string& client_master() const { return client_master_; }
  void set_client_master(std::string address) { client_master_ = std::move(address); }
  // The CA certificate as copied to `host` (HOME/ca.pem).
  std::string CaFile(const std::string& host) const { return HostDir(host) + "/ca.pem"; }
  std::string TokenFile(const std::string& host) const;

  // Starts taskq-master on the master host: --listen 0.0.0.0:5000
  // --tls-cert --tls-key --token-file HOME/token --port-file + `extra`;
  // waits until the client host can connect to it, then copies the token
  // to every other host (HOME/taskq.token, mode 0600).
  absl::Status StartMaster(std::vector<std::string> extra = {},
                           absl::Duration timeout = absl::Seconds(30));
  // Stops the master with `signal` and starts it again with the same
  // arguments (same data dir, same port). Its old output is kept.
  absl::Status RestartMaster(int signal, absl::Duration timeout = absl::Seconds(30));
  Process* master() { return master_.get(); }

  // Starts taskq-worker on `host` as the README does: --master
  // client_master() --tls-ca HOME/ca.pem --token-file HOME/taskq.token
  // --queue tasks + `extra`. nullptr (and a test failure) if it cannot.
  Process* StartWorker(const std::string& host, std::vector<std::string> extra = {});
  // Waits until the worker logged its `times`-th "connected to".
  bool WaitWorkerConnected(Process* worker, absl::Duration timeout = absl::Seconds(30),
                           int times = 1);

  // Runs `taskq --tls-ca HOME/ca.pem args...` on `host` with TASKQ_MASTER
  // and TASKQ_TOKEN_FILE set; kills it and fails the test past `timeout`.
  CliResult Cli(std::vector<std::string> args, absl::Duration timeout = absl::Seconds(60),
                const std::string& host = "client");
  // The same in the background; the caller owns it.
  std::unique_ptr<Process> StartCli(std::vector<std::string> args,
                                    const std::string& host = "client");

  // Starts taskq-delay-proxy on the master host: listens on
  // master_ip():`port`, forwards to the master over the host's loopback,
  // delaying each direction by `one_way`. Waits until it listens. The
  // cluster owns it (nullptr and a test failure if it cannot start).
  Process* StartDelayProxy(int port, absl::Duration one_way);

  // Any program on `host` with that host's HOME (plus `env`); output in
  // dir() as <name>.out/.err. nullptr (and a test failure) if it cannot.
  std::unique_ptr<Process> Spawn(const std::string& host, const std::string& name,
                                 std::vector<std::string> argv,
                                 std::map<std::string, std::string> env = {});

 private:
  absl::Status MakeCertificates();
  absl::Status RunToEnd(const std::string& name, std::vector<std::string> argv);
  absl::Status StartMasterProcess(absl::Duration timeout);
  std::string NextName(const std::string& host, const std::string& program);
  void DumpLogsIfFailed();

  TempDir dir_;
  std::unique_ptr<TestNetwork> net_;  // declared before the processes: deleted last
  int workers_count_ = 0;
  std::string client_master_;
  std::vector<std::string> master_args_;
  std::unique_ptr<Process> master_;
  std::vector<std::unique_ptr<Process>> old_masters_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::vector<std::unique_ptr<Process>> proxies_;
  int counter_ = 0;
};

// "" if `lines` holds each of `expected` exactly once and nothing else;
// otherwise how it differs (counts, and a few examples of each kind).
std::string CheckEachOnce(const std::vector<std::string>& lines,
                          const std::set<std::string>& expected);

// The start every cluster scenario shares: skip where namespaces cannot be
// made, else the hosts and the TLS master of the README recipe, and with
// kSlowWorkers a worker on each worker host serving queue "tasks" with the
// exec command `slow` (reads a line, sleeps 0.2 s, prints it back),
// 2 at a time. Base is ::testing::Test or ::testing::TestWithParam<P>.
enum class ClusterStart { kMasterOnly, kSlowWorkers };
template <typename Base = ::testing::Test, ClusterStart kStart = ClusterStart::kMasterOnly>
class ClusterFixture : public Base {
 protected:
  void SetUp() override {
    if (std::string why = NetnsCluster::WhyUnavailable(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_TRUE(cluster_.Create().ok());
    absl::Status s = cluster_.StartMaster();
    ASSERT_TRUE(s.ok()) << s;
    if (kStart != ClusterStart::kSlowWorkers) return;
    for (const std::string& host : cluster_.worker_hosts()) {
      Process* w = cluster_.StartWorker(
          host, {"--concurrency", "2", "--allow-exec",
                 R"(slow=/bin/sh -c "read n; /bin/sleep 0.2; echo $n")"});
      ASSERT_TRUE(cluster_.WaitWorkerConnected(w)) << host;
    }
  }

  // Starts `submit --wait` from the client host of the payloads 1..n for
  // the `slow` exec command (fills `expected` with them) and waits until
  // `printed` results are out while it still runs. nullptr, with the test
  // failed, if it cannot start or ends first.
  std::unique_ptr<Process> StartSlowSubmit(int n, size_t printed, std::set<std::string>* expected) {
    std::vector<std::string> args = {"submit", "--queue", "tasks", "--handler", "exec",
                                     "--arg",  "slow",    "--wait"};
    for (int i = 1; i <= n; ++i) {
      args.push_back(std::to_string(i));
      expected->insert(std::to_string(i));
    }
    std::unique_ptr<Process> submit = cluster_.StartCli(args);
    if (submit == nullptr) {
      ADD_FAILURE() << "submit --wait did not start";
      return nullptr;
    }
    const bool out = WaitFor(
        [&] { return Lines(submit->Stdout()).size() >= printed || !submit->Running(); },
        absl::Seconds(60), absl::Milliseconds(5));
    if (!out || !submit->Running()) {
      ADD_FAILURE() << "submit --wait ended or stalled before " << printed
                    << " results: " << submit->Stderr();
      return nullptr;
    }
    return submit;
  }

  NetnsCluster cluster_;
};

}  // namespace taskq::testing
