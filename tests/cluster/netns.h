// TestNetwork: a private network of hosts made of Linux network namespaces,
// for tests that need several machines (a master host, worker hosts, a
// client host) and faults between them.
//
//   bridge namespace  tq<pid>-<n>-net:  bridge br0, one port p<i> per host
//   host namespaces   tq<pid>-<n>-<host>: lo and eth0 = 10.213.0.<i>/24
//
// The hosts share one /24 and have no other route: nothing a test does can
// reach a real network. Programs run inside a host through Wrap(): `ip netns
// exec NS setpriv --pdeathsig KILL -- PROGRAM...`, so they also die when
// the test process dies, however it dies.
//
// Faults, one at a time per host (setting one replaces the last):
//   LinkDown    eth0 of the host is down: the host's own sends fail at once
//               (ENETUNREACH); the others' packets to it vanish.
//   BlackHole   the bridge drops every frame to or from the host: packets
//               are held without any error on either side.
//   Reject      the host's firewall answers everything with a TCP reset
//               (an ICMP host-unreachable for other protocols), both ways:
//               connections fail at once with an error on both sides.
//   Loss(N)     the bridge drops N % of the frames to and from the host
//               (each direction, at random).
//   Heal        undoes any of these.
//
// Teardown: the destructor kills every process inside the namespaces and
// deletes them. SIGINT, SIGTERM and SIGHUP do the same (async-signal-safe:
// kill the processes, unmount the namespaces) before the signal takes its
// normal course. Creating a network first sweeps leftovers of runs that
// were SIGKILLed (namespaces tq<pid>-* whose pid is dead).
//
// Needs root, `ip` (iproute2), `nft` (nftables) and `setpriv`
// (util-linux); WhyUnavailable() says what is missing, for GTEST_SKIP.
// Thread-safety: none; use a TestNetwork from the test's own thread.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/harness.h"

namespace taskq::testing {

struct NetHost {
  std::string name;         // as given to Create, e.g. "worker1"
  std::string netns;        // e.g. "tq4242-1-worker1"
  std::string address;      // e.g. "10.213.0.2"
  std::string bridge_port;  // its port in the bridge namespace, e.g. "p2"
};

class TestNetwork {
 public:
  // "" when this machine can make namespaces, else the reason it cannot
  // (not root, a tool missing, namespaces refused).
  static std::string WhyUnavailable();

  // Creates the bridge and one host per name, in order: the first gets
  // 10.213.0.1, the next 10.213.0.2, ... (at most 200 hosts).
  static absl::StatusOr<std::unique_ptr<TestNetwork>> Create(
      const std::vector<std::string>& host_names);

  ~TestNetwork();
  TestNetwork(const TestNetwork&) = delete;
  TestNetwork& operator=(const TestNetwork&) = delete;

  // The host of that name; fails the test (and returns the first host) if
  // there is none.
  const NetHost& host(const std::string& name) const;
  const std::vector<NetHost>& hosts() const { return hosts_; }

  // `argv` run inside the host: the `ip netns exec` prefix + argv.
  std::vector<std::string> Wrap(const std::string& host, std::vector<std::string> argv) const;
  // Just the prefix (for Cluster::set_master_wrapper and the like).
  std::vector<std::string> Wrapper(const std::string& host) const;

  absl::Status LinkDown(const std::string& host);
  absl::Status BlackHole(const std::string& host);
  absl::Status Reject(const std::string& host);
  absl::Status Loss(const std::string& host, int percent);
  // Link up, no firewall rule: the host is reachable again.
  absl::Status Heal(const std::string& host);

  // Connects a TCP socket from inside `from` to address:port within
  // `timeout`; returns the connected descriptor (the caller closes it) or
  // why not. For probes ("is the master reachable from the client host?").
  absl::StatusOr<int> ConnectFrom(const std::string& from, const std::string& address, int port,
                                  absl::Duration timeout) const;

  // A TCP socket listening on the host's address:port (the caller closes
  // it). The kernel completes handshakes into its backlog, so probes can
  // connect to it without anyone calling accept.
  absl::StatusOr<int> ListenIn(const std::string& host, int port) const;
  // A non-blocking TCP socket made inside the host's namespace.
  absl::StatusOr<int> SocketIn(const std::string& host) const;

  // Processes running inside the host's namespace (any depth, any parent).
  std::vector<pid_t> Pids(const std::string& host) const;

  // Kills what runs inside namespaces named tq<pid>-... of dead processes
  // and deletes them. Create does this first.
  static void SweepLeftovers();

 private:
  TestNetwork() = default;
  absl::Status Build(const std::vector<std::string>& host_names);
  // Runs a command to completion (30 s at most); its stderr in the error.
  absl::Status Run(std::vector<std::string> argv);
  // The same, returning what it printed.
  absl::StatusOr<std::string> Output(std::vector<std::string> argv);
  // Waits until the host's eth0 and its bridge port are operationally up:
  // `ip link set up` returns before the kernel's link watch (up to 1 s
  // later) lets packets through, and a probe in between is lost.
  absl::Status WaitOperational(const NetHost& host);
  // Replaces the host's bridge chain with `rules` (nft syntax, one a line).
  absl::Status SetBridgeRules(const NetHost& host, const std::vector<std::string>& rules);
  absl::Status SetHostFirewall(const NetHost& host, bool reject);
  void Teardown();

  std::string prefix_;       // tq<pid>-<n>-
  std::string bridge_ns_;    // prefix_ + "net"
  std::vector<NetHost> hosts_;
  std::vector<std::string> created_;  // namespaces to delete, in creation order
  std::unique_ptr<TempDir> logs_;     // output of the commands it runs
  int runs_ = 0;
};

}  // namespace taskq::testing
