// MultiMasterCluster: several taskq masters coordinated through etcd, on
// hosts of a TestNetwork (netns.h), the way docs/CLUSTER.md deploys them:
//
//   etcd                 10.213.0.1   etcd, client URL http://10.213.0.1:2379
//   master1..masterM     10.213.0.2.. taskq-master --cluster etcd://10.213.0.1:2379
//                                     --advertise <its ip>:5000 --name masterN
//                                     (TLS: certificates of one CA; one token)
//   worker1..workerW     taskq-worker
//   client               the CLI and benches
//
// Each master may run under a CPU quota (cpu_quota.h: its own cgroup, made
// and removed here) so that it is the bottleneck, as on a small machine.
// Without `cluster` the masters run alone (no etcd, no --cluster): the
// single-master baseline before the cluster mode existed.
//
//   MultiMasterCluster c;
//   if (auto why = MultiMasterCluster::WhyUnavailable(); !why.empty()) GTEST_SKIP() << why;
//   ASSERT_OK(c.Create({.masters = 3, .workers = 2}));   // + etcd started
//   ASSERT_OK(c.StartMasters());
//   c.Cli({"queue", "create", "q2", "--on", "master2"});
//   c.net().BlackHole("etcd");                            // faults: netns.h
//
// Each host has its own directory, dir()/<host> (HOME of what runs there;
// a master's data dir is under it). Output: dir()/<host>-<program>-N.out/.err.
// The destructor stops workers, then masters, then etcd, dumps their logs
// if the test failed, removes the cgroups and deletes the network (which
// kills anything left). A run that died is swept by the next one.
// Thread-safety: none; use it from one thread.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tests/cluster/cpu_quota.h"
#include "tests/cluster/netns.h"
#include "tests/harness.h"

namespace taskq::testing {

class MultiMasterCluster {
 public:
  static constexpr int kMasterPort = 5000;
  static constexpr int kEtcdPort = 2379;

  struct Options {
    int masters = 3;
    int workers = 6;
    // Run the masters in cluster mode with an etcd host; false: no etcd,
    // each master alone.
    bool cluster = true;
    // --cluster-ttl for every master (short: tests see a death quickly).
    std::string cluster_ttl = "3s";
    // CPU quota per master process in cores (0: none). Needs CpuQuota.
    double master_cores = 0;
    // Niceness of the workers (0: as the test): a bench raises it so that
    // the masters, sharing one machine with them, get their quota first.
    int worker_nice = 0;
    // More flags for every master (e.g. {"--store", "memory"}).
    std::vector<std::string> master_flags;
  };

  // NetnsCluster's requirements (namespaces, nftables, openssl), plus
  // etcd when `cluster`, plus a CPU cgroup when `cpu_quota`.
  static std::string WhyUnavailable(bool cluster = true, bool cpu_quota = false);

  MultiMasterCluster() = default;
  ~MultiMasterCluster();
  MultiMasterCluster(const MultiMasterCluster&) = delete;
  MultiMasterCluster& operator=(const MultiMasterCluster&) = delete;

  // Makes the hosts, a CA with a certificate per master, the shared token,
  // the masters' cgroups, and (cluster mode) starts etcd and waits for it.
  absl::Status Create(Options options);

  TestNetwork& net() { return *net_; }
  const Options& options() const { return options_; }
  const std::string& dir() const { return dir_.path(); }
  std::string HostDir(const std::string& host) const { return dir() + "/" + host; }
  std::vector<std::string> worker_hosts() const;
  // "master<i>", 1-based.
  static std::string MasterName(int i);
  std::string MasterIp(int i) const;
  // MasterIp(i):5000.
  std::string MasterAddress(int i) const;
  // etcd's client endpoint, 10.213.0.1:2379 ("" without cluster mode).
  std::string EtcdEndpoint() const;
  // The keys under `prefix` in etcd and their values, read with etcdctl
  // on the etcd host itself (so it works while the etcd host is cut off).
  // Values must be one line each; `keys_only` reads the keys alone (values
  // "") for those that are not.
  absl::StatusOr<std::map<std::string, std::string>> EtcdRead(const std::string& prefix,
                                                              bool keys_only = false);
  std::string CaFile(const std::string& host) const { return HostDir(host) + "/ca.pem"; }
  std::string TokenFile(const std::string& host) const { return HostDir(host) + "/taskq.token"; }

  // Starts master i (1-based) and waits until the client host can connect
  // to it. `extra` flags are kept for restarts.
  absl::Status StartMaster(int i, std::vector<std::string> extra = {},
                           absl::Duration timeout = absl::Seconds(30));
  // Masters 1..options().masters, one after the other; in cluster mode
  // then WaitClusterFormed.
  absl::Status StartMasters(absl::Duration timeout = absl::Seconds(30));
  // Waits until every running master's GetCluster (`taskq cluster status
  // --json` from the client host) lists all the running masters as up: a
  // master registers in etcd in the background, and the others learn it
  // from their watch.
  absl::Status WaitClusterFormed(absl::Duration timeout = absl::Seconds(30));
  // Sends `signal` to master i and waits for it to exit (SIGKILL past 10 s).
  absl::Status StopMaster(int i, int signal);
  // Starts master i again with the arguments of its last start.
  absl::Status RestartMaster(int i, absl::Duration timeout = absl::Seconds(30));
  Process* master(int i);
  // CPU seconds master i's current process has used (utime + stime).
  double MasterCpuSeconds(int i);
  // Times master i's cgroup ran out of quota (-1 without a quota).
  long MasterThrottled(int i) const;

  // taskq-worker on `host`: --master MasterAddress(master) --tls-ca
  // --token-file, one --queue per `queues`, + `extra`. nullptr (and a test
  // failure) if it cannot start.
  Process* StartWorker(const std::string& host, const std::vector<std::string>& queues,
                       std::vector<std::string> extra = {}, int master = 1);
  // Waits until the worker logged its `times`-th "connected to".
  bool WaitWorkerConnected(Process* worker, absl::Duration timeout = absl::Seconds(30),
                           int times = 1);
  // Stops every worker (SIGTERM, SIGKILL past 10 s); their output is kept.
  void StopWorkers();

  // `taskq --tls-ca HOME/ca.pem args...` on `host` with TASKQ_MASTER =
  // MasterAddress(master) and TASKQ_TOKEN_FILE; killed (and the test
  // failed) past `timeout`.
  CliResult Cli(std::vector<std::string> args, int master = 1,
                absl::Duration timeout = absl::Seconds(60), const std::string& host = "client");
  std::unique_ptr<Process> StartCli(std::vector<std::string> args, int master = 1,
                                    const std::string& host = "client");

  // Any program on `host` with its HOME (plus `env`); nullptr (and a test
  // failure) if it cannot start. `quota`: inside that cgroup.
  std::unique_ptr<Process> Spawn(const std::string& host, const std::string& name,
                                 std::vector<std::string> argv,
                                 std::map<std::string, std::string> env = {},
                                 const CpuQuota* quota = nullptr);

 private:
  absl::Status MakeCertificates();
  absl::Status RunToEnd(const std::string& name, std::vector<std::string> argv);
  absl::Status StartEtcd();
  absl::Status StartMasterProcess(int i, absl::Duration timeout);
  std::string NextName(const std::string& host, const std::string& program);
  void DumpLogsIfFailed();

  struct MasterSlot {
    std::vector<std::string> args;
    std::unique_ptr<CpuQuota> quota;
    std::unique_ptr<Process> process;
    std::vector<std::unique_ptr<Process>> old;  // earlier runs (their logs)
  };

  TempDir dir_;
  Options options_;
  std::unique_ptr<TestNetwork> net_;  // declared first: deleted last
  std::unique_ptr<Process> etcd_;
  std::vector<MasterSlot> masters_;   // index i-1 for master i
  std::vector<std::unique_ptr<Process>> workers_;
  int counter_ = 0;
};

}  // namespace taskq::testing
