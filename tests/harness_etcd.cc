#include "tests/harness_etcd.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "gtest/gtest.h"
#include "taskq/v1/taskq.grpc.pb.h"

namespace taskq::testing {
std::unique_ptr<EtcdClient> EtcdServer::Client(absl::Duration call_timeout) const {
  EtcdOptions options;
  options.endpoint = endpoint_;
  options.call_timeout = call_timeout;
  auto client = EtcdClient::Connect(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

bool EtcdServer::Installed() { return ::access("/usr/bin/etcd", X_OK) == 0; }

absl::Status EtcdServer::Start(absl::Duration timeout) {
  // etcd cannot pick its own ports and say which: free ones are picked
  // here, and another process taking one meanwhile makes the start fail
  // and try others.
  for (int attempt = 0; attempt < 3; ++attempt) {
    const int client_port = FreeLoopbackPort(), peer = FreeLoopbackPort();
    endpoint_ = absl::StrCat("127.0.0.1:", client_port);
    const std::string peer_url = absl::StrCat("http://127.0.0.1:", peer);
    ProcessOptions o;
    o.argv = {"/usr/bin/etcd",
              "--name", "t",
              "--data-dir", absl::StrCat(dir_.path(), "/etcd-", attempt),
              "--listen-client-urls", absl::StrCat("http://", endpoint_),
              "--advertise-client-urls", absl::StrCat("http://", endpoint_),
              "--listen-peer-urls", peer_url,
              "--initial-advertise-peer-urls", peer_url,
              "--initial-cluster", absl::StrCat("t=", peer_url),
              "--log-level", "warn"};
    // Debian's etcd 3.4 on amd64 needs nothing else; the variable keeps it
    // running on other architectures.
    o.env = {{"ETCD_UNSUPPORTED_ARCH", ""}};
    o.output_dir = dir_.path();
    o.name = absl::StrCat("etcd-", attempt);
    auto p = Process::Start(o);
    if (!p.ok()) return p.status();
    process_ = *std::move(p);
    EtcdOptions options;
    options.endpoint = endpoint_;
    options.call_timeout = absl::Seconds(1);
    absl::Status last;
    const bool up = WaitFor(
        [&] {
          if (!process_->Running()) return true;
          // A new channel each time: one that found nothing listening yet
          // would wait out gRPC's reconnect backoff.
          auto client = EtcdClient::Connect(options);
          last = client.ok() ? (*client)->Get("probe").status() : client.status();
          return last.ok();
        },
        timeout, absl::Milliseconds(50));
    if (up && last.ok() && process_->Running()) return absl::OkStatus();
    if (process_->Running()) {
      return absl::DeadlineExceededError(absl::StrCat("etcd did not answer within ",
                                                      absl::FormatDuration(timeout), ": ",
                                                      last.ToString(), "\n", process_->Stderr()));
    }
    // Exited: most likely a port taken meanwhile; try others.
  }
  return absl::UnavailableError(
      absl::StrCat("etcd would not start: ", process_ ? process_->Stderr() : ""));
}

absl::Status StartClusterMaster(Cluster& master, const EtcdServer& etcd, const std::string& name,
                                std::vector<std::string> extra_args, const Cluster* token_from) {
  if (token_from != nullptr) {
    if (absl::Status s = WriteFile(master.token_file(), ReadFile(token_from->token_file()));
        !s.ok()) {
      return s;
    }
  }
  std::vector<std::string> args = {"--cluster", absl::StrCat("etcd://", etcd.endpoint()),
                                   "--name", name, "--advertise", "127.0.0.1:0"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  return master.Start(std::move(args));
}

int MastersUpAsSeenBy(const Cluster& master) {
  auto conn = master.Connect();
  if (!conn.ok()) return -1;
  auto stub = v1::TaskQueue::NewStub(conn->channel);
  grpc::ClientContext ctx;
  PrepareContext(&ctx, conn->token, absl::Seconds(5));
  v1::GetClusterResponse resp;
  if (!stub->GetCluster(&ctx, v1::GetClusterRequest(), &resp).ok()) return -1;
  int up = 0;
  for (const auto& m : resp.masters()) up += m.up() ? 1 : 0;
  return up;
}

absl::Status StartClusterMasters(absl::Span<Cluster> masters, const EtcdServer& etcd,
                                 const std::vector<std::string>& names,
                                 const std::vector<std::string>& extra_args) {
  for (size_t i = 0; i < masters.size(); ++i) {
    absl::Status s = StartClusterMaster(masters[i], etcd, names[i], extra_args,
                                        i == 0 ? nullptr : &masters[0]);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(names[i], ": ", s.message()));
  }
  const int n = static_cast<int>(masters.size());
  for (size_t i = 0; i < masters.size(); ++i) {
    if (!WaitFor([&] { return MastersUpAsSeenBy(masters[i]) == n; }, absl::Seconds(20))) {
      return absl::DeadlineExceededError(
          absl::StrCat(names[i], " does not see ", n, " masters up within 20 s"));
    }
  }
  return absl::OkStatus();
}

}  // namespace taskq::testing
