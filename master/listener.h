// Listener: the master's own accept loop in front of gRPC. It binds the
// --listen address, accepts connections on one thread and hands each to the
// gRPC server (ExternalConnectionAcceptor, with the server's credentials:
// TLS and the token check work as for gRPC's own ports). It exists because
// gRPC 1.51's accept loop gives up for good on the first EMFILE, leaving a
// live master that never accepts again, and has no connection limits.
//
// What it guarantees:
//   - Accepting never stops: EMFILE/ENFILE are answered by closing a
//     reserved descriptor, accepting and closing the pending connection,
//     and reopening the reserve; ENOBUFS/ENOMEM back off briefly. Any other
//     accept error is fatal (on_fatal), so a supervisor restarts the master
//     rather than leave it deaf.
//   - Caps: connections in total (--max-connections, below the fd limit),
//     and connections that have not yet made an authenticated call, in
//     total and per peer address. A connection over a cap is closed at once.
//   - A connection that makes no authenticated call within
//     `unauthenticated_timeout` is closed (silent sockets, partial
//     messages, wrong tokens).
//
// To know when gRPC closes a connection, the listener keeps a duplicate of
// each socket in its epoll set (gRPC shuts a socket down when it is done
// with it, which the duplicate sees as a hang-up); so each connection costs
// two descriptors, and the total cap is set from the fd limit accordingly.
//
// Thread-safety: Bind, Start and Stop from one thread; MarkAuthenticated
// and the accessors from any thread.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/server_builder.h>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/sync.h"

namespace taskq {

struct ListenerOptions {
  std::string address;  // HOST:PORT, [V6]:PORT; port 0 picks a free one
  // Connections open at once; 0 = as many as the fd limit allows.
  size_t max_connections = 0;
  // Connections that have not made an authenticated call yet.
  size_t max_unauthenticated = 1024;
  size_t max_unauthenticated_per_ip = 64;
  absl::Duration unauthenticated_timeout = absl::Seconds(10);
  // Called once (from the listener's thread) if accepting fails for good.
  std::function<void(absl::Status)> on_fatal;
};

class Listener {
 public:
  // Resolves and binds every address of options.address (listening, not
  // accepting yet). FAILED_PRECONDITION if the host does not resolve,
  // UNAVAILABLE if the address is in use.
  static absl::StatusOr<std::unique_ptr<Listener>> Bind(ListenerOptions options);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // The bound port, and whether every bound address is a loopback one.
  int port() const { return port_; }
  bool loopback_only() const { return loopback_only_; }
  // The total cap in effect (from the options and the fd limit).
  size_t max_connections() const { return max_connections_; }

  // Starts accepting; every connection goes to `acceptor`, which must stay
  // valid until Stop.
  void Start(grpc::experimental::ExternalConnectionAcceptor* acceptor);
  // Stops accepting and forgets every connection (gRPC closes its own).
  void Stop();

  // A call on the connection `peer` (gRPC's ServerContext::peer()) passed
  // the token check: the connection no longer counts as unauthenticated.
  void MarkAuthenticated(absl::string_view peer);

  // Open connections, and how many of them have not authenticated.
  size_t connections();
  size_t unauthenticated();

 private:
  struct Conn {
    std::string key;  // peer address and port, as PeerKey makes it
    std::string ip;
    absl::Time accepted;
    bool authenticated = false;
  };

  Listener(ListenerOptions options, std::vector<int> fds, int port, bool loopback_only);
  void Loop();
  void AcceptFrom(int listen_fd);
  // Takes a freshly accepted socket: refuses it or tracks and hands it over.
  void Admit(int listen_fd, int fd);
  void Forget(int dup_fd) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `conn` no longer counts as unauthenticated (it authenticated or left).
  void Uncount(const Conn& conn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CloseIdleUnauthenticated();
  void Fatal(absl::Status status);

  const ListenerOptions options_;
  const std::vector<int> listen_fds_;
  const int port_;
  const bool loopback_only_;
  size_t max_connections_ = 0;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;     // eventfd: Stop wakes the loop
  int reserve_fd_ = -1;  // closed to make room when accept says EMFILE
  grpc::experimental::ExternalConnectionAcceptor* acceptor_ = nullptr;
  std::thread thread_;
  bool fatal_ = false;           // loop thread only
  bool accept_backoff_ = false;  // loop thread only: pause accepting briefly

  Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // By the listener's duplicate descriptor of the socket.
  absl::flat_hash_map<int, Conn> conns_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> by_key_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, size_t> unauthenticated_by_ip_ ABSL_GUARDED_BY(mu_);
  // Changed under mu_; read without it by MarkAuthenticated, whose every
  // call (one per authenticated RPC) returns at once while it is 0.
  std::atomic<size_t> unauthenticated_{0};
  // Unauthenticated connections by accept time: (deadline, dup fd, key).
  struct Pending {
    absl::Time deadline;
    int dup_fd;
    std::string key;
  };
  std::deque<Pending> pending_ ABSL_GUARDED_BY(mu_);
};

// "1.2.3.4:5" / "[::1]:5" for gRPC's peer string, to show a person; any
// other peer string as it is.
std::string DisplayPeer(absl::string_view grpc_peer);

// "ip|port" for gRPC's peer string ("ipv4:1.2.3.4:5", "ipv6:[::1]:5",
// "ipv6:%5B::1%5D:5"); "" if it is not an IP peer.
std::string PeerKey(absl::string_view grpc_peer);

}  // namespace taskq
