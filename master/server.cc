#include "master/server.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "common/channel.h"
#include "common/limits.h"
#include "common/log.h"
#include "master/cluster/node_number.h"
#include "master/tls_config.h"
#include "master/token_auth.h"

namespace taskq {

namespace {

// Keepalive both ways. The master pings every connection (busy or idle,
// with or without calls) after `keepalive` and closes it when a ping stays
// unanswered as long: a dead worker's Work stream ends within 2 x keepalive
// and its leases go back to ready without waiting for their deadline.
//
// Clients ping too (their --keepalive, at least kMinKeepalive). gRPC counts
// a client ping that comes sooner than MIN_RECV_PING_INTERVAL after the
// previous one, while the master sent no data, as a strike, and closes the
// connection at the third (GOAWAY too_many_pings): an idle worker or a long
// poll, which get no data, are exactly those. With the default (5 min) a
// client pinging every 5 s lost its connection every ~20 s. Allow half the
// smallest client keepalive, so timer jitter never strikes; a client that
// pings faster than that is still cut off.
void AddKeepaliveArguments(absl::Duration keepalive, grpc::ServerBuilder* builder) {
  const int keepalive_ms = static_cast<int>(absl::ToInt64Milliseconds(
      std::clamp(keepalive, kMinKeepalive, kMaxKeepalive)));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, keepalive_ms);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, keepalive_ms);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Keep pinging a worker we send nothing to (gRPC's default stops after
  // two pings without data).
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  builder->AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      static_cast<int>(absl::ToInt64Milliseconds(kMinKeepalive / 2)));
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
}

}  // namespace

size_t MaxRequestBytes(size_t max_payload_bytes) {
  return std::max<size_t>(kMinMaxRequestBytes, 2 * max_payload_bytes + (1 << 20));
}

std::string DefaultDataDir() {
  // systemd's StateDirectory=, then the XDG data home, like the token's
  // default under the XDG config home.
  if (const char* state = std::getenv("STATE_DIRECTORY"); state && *state) {
    return absl::StrCat(state, "/data");
  }
  if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg) {
    return absl::StrCat(xdg, "/taskq");
  }
  const char* home = std::getenv("HOME");
  return absl::StrCat(home && *home ? home : ".", "/.local/share/taskq");
}

std::string BoundAddress(absl::string_view listen, int port) {
  absl::string_view host = listen.substr(0, listen.rfind(':'));
  if (absl::StartsWith(host, "[")) host = host.substr(1, host.size() - 2);
  return JoinHostPort(host, port);
}

absl::Status MasterServer::OpenCredentialsAndAudit(const std::string& data_dir,
                                                   const std::string& master_token) {
  std::error_code ec;
  if (std::filesystem::create_directories(data_dir, ec)) {
    std::filesystem::permissions(data_dir, std::filesystem::perms::owner_all, ec);
  }
  auto credentials = CredentialTable::Open(data_dir + "/credentials", master_token);
  if (!credentials.ok()) return credentials.status();
  credentials_ = *std::move(credentials);
  const std::string audit_path =
      options_.audit_log.empty() ? data_dir + "/audit.log" : options_.audit_log;
  auto audit = AuditLog::Open(audit_path);
  if (!audit.ok()) return audit.status();
  audit_ = *std::move(audit);
  return absl::OkStatus();
}

MasterServer::MasterServer(MasterOptions options)
    : options_(std::move(options)),
      scheduler_({.threads = options_.threads, .name = "master"}),
      timer_(scheduler_, RealClock::Get()) {}

MasterServer::~MasterServer() { Shutdown(); }

absl::Status MasterServer::StartRouter() {
  // The queues in the local store are this master's.
  std::vector<std::string> local;
  v1::ListQueuesRequest page;
  page.set_page_size(10000);
  for (;;) {
    auto queues = engine_->ListQueues(page);
    if (!queues.ok()) return queues.status();
    for (const v1::QueueStats& q : queues->queues()) local.push_back(q.config().name());
    if (queues->next_page_token().empty()) break;
    page.set_page_token(queues->next_page_token());
  }
  cluster_->router()->Start(local);
  return absl::OkStatus();
}

absl::StatusOr<std::string> MasterServer::Start() {
  // --tls-cert/--tls-key, else what `taskq-master init` made in the data
  // dir (master/tls_config.h): once initialised, TLS on every address.
  const std::string data_dir = options_.data_dir.empty() ? DefaultDataDir() : options_.data_dir;
  auto tls_files = FindServerTls(data_dir, options_.tls_cert_file, options_.tls_key_file);
  if (!tls_files.ok()) return tls_files.status();
  const bool tls = tls_files->has_value();
  ListenerOptions listen;
  listen.address = options_.listen;
  listen.max_connections = options_.max_connections;
  listen.max_unauthenticated = options_.max_unauthenticated;
  listen.max_unauthenticated_per_ip = options_.max_unauthenticated_per_ip;
  listen.unauthenticated_timeout = options_.unauthenticated_timeout;
  listen.on_fatal = [this](absl::Status) {
    failed_ = true;
    if (on_fatal_) on_fatal_();
  };
  auto listener = Listener::Bind(std::move(listen));
  if (!listener.ok()) return listener.status();
  listener_ = *std::move(listener);
  // What the name resolves to decides, not how it is spelled.
  if (!tls && !listener_->loopback_only() && !options_.insecure) {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing to serve plaintext on non-loopback address ", options_.listen,
        ": the token would cross the network in the clear. Run `taskq-master init --data-dir ",
        data_dir, "` (or give --tls-cert and --tls-key), or --insecure if the network is trusted"));
  }
  std::string token_path = options_.token_file.empty() ? DefaultTokenPath() : options_.token_file;
  auto token = LoadMasterToken(token_path);
  if (!token.ok()) return token.status();
  // Credentials and the audit log live in the data dir, whatever the store.
  if (absl::Status s = OpenCredentialsAndAudit(data_dir, *token); !s.ok()) return s;

  // TLS, and plaintext on loopback (gRPC's local credentials), check the
  // token on a call's headers, before its message is read
  // (master/token_auth.h); plaintext elsewhere (--insecure) only in the
  // service.
  std::shared_ptr<grpc::ServerCredentials> creds;
  bool token_at_headers = true;
  if (tls) {
    creds = MakeServerTlsCredentials(**tls_files);
    LogInfo("TLS: certificate %s, key %s (re-read when replaced), %s", (*tls_files)->cert,
            (*tls_files)->key,
            (*tls_files)->ca.empty()
                ? std::string("no client certificates")
                : absl::StrCat("client certificates verified against ", (*tls_files)->ca));
  } else if (listener_->loopback_only()) {
    creds = grpc::experimental::LocalServerCredentials(LOCAL_TCP);
  } else {
    creds = grpc::InsecureServerCredentials();
    token_at_headers = false;
  }
  if (token_at_headers) {
    creds->SetAuthMetadataProcessor(
        std::make_shared<CredentialAuthProcessor>(credentials_.get(), audit_.get()));
  }

  // Cluster mode: the node number goes into every task id this master
  // assigns (docs/CLUSTER.md).
  if (!options_.cluster.etcd.empty()) {
    // --advertise HOST:0: the port this master bound (tests, port 0).
    std::string& advertise = options_.cluster.advertise;
    if (absl::EndsWith(advertise, ":0")) {
      advertise = BoundAddress(advertise, listener_->port());
    }
    options_.cluster.place_on_use = options_.engine.auto_create_queues;
    auto member = ClusterMember::Start(options_.cluster, data_dir);
    if (!member.ok()) return member.status();
    cluster_ = *std::move(member);
    options_.engine.task_id_base = TaskIdBase(cluster_->node());
  }
  engine_ = std::make_unique<TaskEngine>(options_.engine, RealClock::Get(),
                                           [this] { timer_.Wake(); });
  if (options_.store == "sqlite") {
    SqliteStoreOptions store_options;
    store_options.dir = data_dir;
    store_options.fsync = options_.fsync;
    store_options.fsync_interval = options_.fsync_interval;
    store_options.min_free_bytes = options_.min_free_disk_bytes;
    store_options.recover_truncate = options_.recover_truncate;
    TaskEngine* engine = engine_.get();
    store_options.on_healthy = [engine] { engine->OnStoreHealthy(); };
    LogInfo("store: %s, fsync %s", store_options.dir, FsyncPolicyName(options_.fsync));
    auto store = SqliteStore::Open(std::move(store_options));
    if (!store.ok()) return store.status();
    store_ = *std::move(store);
    if (absl::Status s = engine_->Recover(store_.get()); !s.ok()) return s;
  } else if (options_.store != "memory") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --store \"", options_.store, "\": use sqlite or memory"));
  } else {
    LogWarning("store: memory only; every task is lost when the master stops");
  }
  if (cluster_) {
    if (absl::Status s = StartRouter(); !s.ok()) return s;
  }
  Listener* listener_ptr = listener_.get();
  ServiceSecurity security;
  security.credentials = credentials_.get();
  security.audit = audit_.get();
  security.tls_dir = TlsDir(data_dir);
  security.port = listener_->port();
  // Shown as given (a name stays a name), with the real port.
  const std::string bound = BoundAddress(options_.listen, listener_->port());
  security.bound_address = bound;
  security.router = cluster_ ? cluster_->router() : nullptr;
  if (cluster_) {
    // Moves talk to the other masters as this one: the master token (the
    // masters share it), TLS against this master's CA (shared too).
    QueueMoverOptions moves;
    std::string ca = options_.cluster.peer_ca_file;
    if (ca.empty() && tls) ca = (*tls_files)->ca;
    moves.connect = [token = *token, tls, ca](const std::string& address) {
      ConnectOptions connect;
      connect.master = address;
      connect.token = token;
      connect.tls = tls;
      connect.tls_ca_file = ca;
      ClientOptions client;
      client.retry = false;  // a move gives up on a failure, and says so
      return Client::Connect(connect, client);
    };
    move_watch_ = std::make_unique<MoveWatch>();
    mover_ = std::make_unique<QueueMover>(engine_.get(), cluster_->router(), move_watch_.get(),
                                          std::move(moves));
    security.mover = mover_.get();
    security.moves = move_watch_.get();
  }
  service_ = std::make_unique<TaskQueueService>(
      engine_.get(), &scheduler_, std::move(security),
      [listener_ptr](absl::string_view peer) { listener_ptr->MarkAuthenticated(peer); });

  if (!options_.http_listen.empty()) {
    metrics_ = std::make_unique<MasterMetrics>(engine_.get(), store_.get());
    HttpServerOptions http;
    http.listen = options_.http_listen;
    http.tls = tls ? &**tls_files : nullptr;
    http.insecure = options_.insecure;
    http.credentials = credentials_.get();
    // Its calls reach the service once the gRPC server is up (below).
    dashboard_ = std::make_unique<DashboardApi>();
    http.dashboard = dashboard_.get();
    MasterMetrics* metrics = metrics_.get();
    auto started = MetricsHttpServer::Start(std::move(http), [metrics] { return metrics->Render(); });
    if (!started.ok()) return started.status();
    http_ = *std::move(started);
    LogInfo("serving /metrics and the dashboard on %s://%s/ (%s; the dashboard's API always "
            "needs a token)",
            http_->https() ? "https" : "http", http_->address(),
            http_->token_required() ? "/metrics needs a bearer token" : "loopback: /metrics needs no token");
  }

  if (!options_.keda_listen.empty()) {
    KedaServerOptions keda;
    keda.listen = options_.keda_listen;
    keda.tls = tls ? &**tls_files : nullptr;
    keda.insecure = options_.insecure;
    keda.engine = engine_.get();
    keda.credentials = credentials_.get();
    keda.service = options_.keda;
    auto started = KedaServer::Start(std::move(keda));
    if (!started.ok()) return started.status();
    keda_ = *std::move(started);
    LogInfo("serving KEDA's external scaler on %s (%s)", keda_->address(), keda_->mode());
  }

  grpc::ServerBuilder builder;
  // Connections come from our own accept loop (master/listener.h).
  acceptor_ = builder.experimental().AddExternalConnectionAcceptor(
      grpc::ServerBuilder::experimental_type::ExternalConnectionType::FROM_FD, creds);
  builder.RegisterService(service_.get());
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(MaxRequestBytes(options_.engine.max_payload_bytes)));
  builder.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  grpc::ResourceQuota quota("taskq-master");
  quota.Resize(options_.grpc_memory_bytes);
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options_.max_concurrent_streams);
  // A connection must finish its TLS handshake and send HTTP/2's opening
  // within this time, or it is closed.
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(
                                 std::min(options_.unauthenticated_timeout, absl::Seconds(10)))));
  AddKeepaliveArguments(options_.keepalive, &builder);
  server_ = builder.BuildAndStart();
  if (!server_) return absl::UnavailableError("cannot start the gRPC server");
  // The dashboard calls the service as its users, in process; answers as
  // large as the CLI's (a page of dead letters can be 16 MiB).
  if (dashboard_) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
    dashboard_->SetChannel(server_->InProcessChannel(args));
  }
  listener_->Start(acceptor_.get());
  timer_.Start(engine_.get());
  LogInfo("serving taskq.v1 on %s (%s), token file %s; up to %d connections (%d not yet "
          "authenticated, %d per address, %s to authenticate)",
          bound,
          tls ? "TLS" : listener_->loopback_only() ? "plaintext, loopback" : "plaintext, --insecure",
          token_path, listener_->max_connections(), options_.max_unauthenticated,
          options_.max_unauthenticated_per_ip,
          absl::FormatDuration(options_.unauthenticated_timeout));
  return bound;
}

void MasterServer::Wait() {
  if (server_) server_->Wait();
}

void MasterServer::Shutdown() {
  // No new connections, then waiting calls, so the server's shutdown does
  // not wait on them.
  if (listener_) listener_->Stop();
  if (http_) http_->Stop();
  if (keda_) keda_->Stop();
  // A move under way gives up (or, past its switch in etcd, stops as it
  // is); its caller is answered.
  if (mover_) mover_->Stop();
  if (engine_) engine_->Shutdown();
  // Waiting calls are answered already; what remains are quick unary calls
  // and worker streams, which would otherwise hold shutdown to the deadline.
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  }
  timer_.Stop();
  // Last: syncs what was written (any policy) and answers waiting replies.
  if (store_) store_->Close();
  // Leaves the cluster: other masters see its queues' owner down at once.
  if (cluster_) cluster_->Leave();
}

}  // namespace taskq
