// A real etcd (Debian's etcd-server) for tests: one member on 127.0.0.1
// with free ports and a data dir in a temp dir, started and waited for
// (a read answers), always stopped by the destructor.
//
// Thread-safety: use from the test's thread.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "tests/harness.h"

namespace taskq::testing {

class EtcdServer {
 public:
  EtcdServer() = default;
  ~EtcdServer() = default;

  // True if /usr/bin/etcd exists (tests skip with a reason otherwise).
  static bool Installed();

  absl::Status Start(absl::Duration timeout = absl::Seconds(30));
  // HOST:PORT of its client URL.
  const std::string& endpoint() const { return endpoint_; }
  Process* process() { return process_.get(); }

 private:
  TempDir dir_;
  std::string endpoint_;
  std::unique_ptr<Process> process_;
};

}  // namespace taskq::testing
