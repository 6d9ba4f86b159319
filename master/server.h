// MasterServer: wires the master together — the coroutine scheduler, the
// durable store, the queue engine (recovered from the store) and its timer,
// the gRPC server with the TaskQueue service — from MasterOptions.
//
// Thread-safety: Start, then Wait from one thread; Shutdown may be called
// from any other thread (e.g. the signal watcher) once.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "master/audit_log.h"
#include "master/cluster/cluster_member.h"
#include "master/credentials.h"
#include "master/engine/task_engine.h"
#include "master/service.h"
#include "common/runtime/scheduler.h"
#include "master/engine_timer.h"
#include "master/dashboard_api.h"
#include "master/http_server.h"
#include "master/keda_server.h"
#include "master/listener.h"
#include "master/master_metrics.h"
#include "master/sqlite_store.h"

namespace taskq {

inline constexpr absl::Duration kDefaultMasterKeepalive = absl::Seconds(5);

struct MasterOptions {
  std::string listen = "127.0.0.1:5000";
  std::string token_file;  // empty = DefaultTokenPath()
  std::string tls_cert_file;
  std::string tls_key_file;
  // Allow plaintext on a non-loopback address.
  bool insecure = false;
  // Threads of the coroutine scheduler that runs waiting calls' handlers
  // and the engine timer; 0 = one per core.
  int threads = 0;
  EngineOptions engine;
  // "sqlite" (durable, in data_dir) or "memory" (lost on exit).
  std::string store = "sqlite";
  std::string data_dir;  // empty = DefaultDataDir()
  // Audit log (master/audit_log.h): empty = <data-dir>/audit.log, "-" =
  // stderr.
  std::string audit_log;
  FsyncPolicy fsync = FsyncPolicy::kAlways;
  absl::Duration fsync_interval = absl::Milliseconds(10);
  // Writes are refused while the data dir has less free space than this.
  uint64_t min_free_disk_bytes = uint64_t{128} << 20;
  // Connection limits (master/listener.h): 0 = from the open-file limit.
  size_t max_connections = 0;
  size_t max_unauthenticated = 1024;
  size_t max_unauthenticated_per_ip = 64;
  absl::Duration unauthenticated_timeout = absl::Seconds(10);
  // gRPC's memory for connections and messages in flight; under pressure
  // it cancels streams rather than grow.
  size_t grpc_memory_bytes = size_t{1} << 30;
  // Streams one connection may have open at once.
  int max_concurrent_streams = 16384;
  // The master pings every connection after this long and closes it if the
  // answer takes as long again: a worker that vanished without closing its
  // connection (power off, a link turned black hole) is noticed within
  // 2 x keepalive, its Work stream ends and its leases return to ready.
  absl::Duration keepalive = kDefaultMasterKeepalive;
  // Start on a WAL damaged before its end, dropping what follows the damage.
  bool recover_truncate = false;
  // HOST:PORT for GET /metrics (master/http_server.h); empty = none.
  std::string http_listen;
  // HOST:PORT for KEDA's external scaler (master/keda_server.h); empty = none.
  std::string keda_listen;
  KedaServiceOptions keda;
  // Cluster mode (--cluster, docs/CLUSTER.md); cluster.etcd empty = a
  // single master.
  ClusterOptions cluster;
};

// HOST:PORT of `listen` with the port actually bound.
std::string BoundAddress(absl::string_view listen, int port);

// Where the store lives without --data-dir: $STATE_DIRECTORY/data (systemd),
// else $XDG_DATA_HOME/taskq, else ~/.local/share/taskq.
std::string DefaultDataDir();

// The largest request the master accepts: room for one task of
// `max_payload_bytes` with its metadata, and for batches of smaller ones
// (clients split batches by bytes below this).
size_t MaxRequestBytes(size_t max_payload_bytes);

class MasterServer {
 public:
  explicit MasterServer(MasterOptions options);
  ~MasterServer();

  // Loads (or creates) the token, binds and starts serving. Returns the
  // bound address (with the real port when port 0 was asked for).
  absl::StatusOr<std::string> Start();
  // Blocks until Shutdown has completed.
  void Wait();
  // Fails waiting calls, closes streams, stops the server (idempotent).
  void Shutdown();
  // Set (before Wait returns) if the master stopped because it could no
  // longer accept connections: the process should exit non-zero.
  bool failed() const { return failed_.load(); }
  // The --http-listen address as bound ("" without one); after Start.
  std::string http_address() const { return http_ ? http_->address() : std::string(); }
  // The --keda-listen address as bound ("" without one); after Start.
  std::string keda_address() const { return keda_ ? keda_->address() : std::string(); }
  // Called (from the listener's thread) when accepting fails for good.
  void set_on_fatal(std::function<void()> on_fatal) { on_fatal_ = std::move(on_fatal); }

 private:
  // <data-dir>/credentials (the master token is its admin) and the audit log.
  absl::Status OpenCredentialsAndAudit(const std::string& data_dir,
                                       const std::string& master_token);
  // Cluster mode: the router takes the local store's queues as owned.
  absl::Status StartRouter();

  MasterOptions options_;
  rt::Scheduler scheduler_;
  EngineTimer timer_;
  std::unique_ptr<SqliteStore> store_;  // outlives the engine
  std::unique_ptr<ClusterMember> cluster_;  // outlives the service
  std::unique_ptr<TaskEngine> engine_;
  // Outlive the service and the auth processor's calls.
  std::unique_ptr<CredentialTable> credentials_;
  std::unique_ptr<AuditLog> audit_;
  // Cluster mode: queue moves (outlive the service, which calls them).
  std::unique_ptr<MoveWatch> move_watch_;
  std::unique_ptr<QueueMover> mover_;
  std::unique_ptr<TaskQueueService> service_;
  std::unique_ptr<MasterMetrics> metrics_;
  std::unique_ptr<DashboardApi> dashboard_;  // outlives http_, which calls it
  std::unique_ptr<MetricsHttpServer> http_;  // stopped before what metrics_ reads
  std::unique_ptr<KedaServer> keda_;         // stopped before the engine
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor_;
  std::unique_ptr<grpc::Server> server_;
  std::atomic<bool> failed_{false};
  std::function<void()> on_fatal_;
};

}  // namespace taskq
