// LinkProxy: a loopback TCP forwarder that stands in for the network link
// between a client (a worker) and the master, so an integration test can
// break the link without touching either process.
//
//   auto proxy = LinkProxy::Start(cluster.address());   // 127.0.0.1:<ephemeral>
//   ... start a worker with --master proxy->address() ...
//   proxy->BlackHole();  // nothing is forwarded any more, either way;
//                        // connections stay open (no FIN, no RST), so
//                        // only timeouts can notice: a cable cut, a host
//                        // that lost power
//   proxy->Restore();    // forwards again (what was held goes through)
//
// While black-holed it also accepts no new connections. The kernel still
// acknowledges bytes into the proxy's socket buffers, which is what a
// black hole looks like to gRPC: writes succeed, nothing comes back.
//
// Thread-safety: one forwarding thread per proxy; every method may be
// called from any thread. The destructor stops the thread and closes every
// connection.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace taskq::testing {

class LinkProxy {
 public:
  // Listens on 127.0.0.1:0 and forwards each connection to `target`
  // (HOST:PORT, connected when the client connects).
  static absl::StatusOr<std::unique_ptr<LinkProxy>> Start(const std::string& target);
  ~LinkProxy();
  LinkProxy(const LinkProxy&) = delete;
  LinkProxy& operator=(const LinkProxy&) = delete;

  // 127.0.0.1:PORT to give the client.
  const std::string& address() const { return address_; }
  void BlackHole() { black_hole_ = true; }
  void Restore() { black_hole_ = false; }
  // Connections forwarded so far (accepted and connected to the target).
  int connections_accepted() const { return accepted_; }

 private:
  LinkProxy(int listen_fd, std::string address, std::string target);
  void Run();

  const int listen_fd_;
  const std::string address_;
  const std::string target_;
  int wake_[2] = {-1, -1};  // a pipe: the destructor writes to stop Run()
  std::atomic<bool> black_hole_{false};
  std::atomic<int> accepted_{0};
  std::thread thread_;
};

}  // namespace taskq::testing
