#include "master/server.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "common/limits.h"
#include "common/log.h"

namespace taskq {

namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", what, " ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

bool IsLoopbackHost(absl::string_view host) {
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

absl::StatusOr<std::pair<std::string, int>> SplitHostPort(absl::string_view address) {
  std::string host;
  absl::string_view port;
  if (absl::StartsWith(address, "[")) {
    size_t close = address.find(']');
    if (close == absl::string_view::npos || close + 1 >= address.size() ||
        address[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("bad address \"", address, "\": want [V6]:PORT"));
    }
    host = std::string(address.substr(1, close - 1));
    port = address.substr(close + 2);
  } else {
    size_t colon = address.rfind(':');
    if (colon == absl::string_view::npos || colon == 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad address \"", address, "\": want HOST:PORT"));
    }
    host = std::string(address.substr(0, colon));
    port = address.substr(colon + 1);
  }
  int port_num;
  if (!absl::SimpleAtoi(port, &port_num) || port_num < 0 || port_num > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in \"", address, "\""));
  }
  return std::make_pair(host, port_num);
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

MasterServer::MasterServer(MasterOptions options)
    : options_(std::move(options)),
      scheduler_({.threads = options_.threads, .name = "master"}),
      timer_(scheduler_, RealClock::Get()) {}

MasterServer::~MasterServer() { Shutdown(); }

absl::StatusOr<std::string> MasterServer::Start() {
  auto host_port = SplitHostPort(options_.listen);
  if (!host_port.ok()) return host_port.status();
  const auto& [host, port] = *host_port;
  bool tls = !options_.tls_cert_file.empty() || !options_.tls_key_file.empty();
  if (tls && (options_.tls_cert_file.empty() || options_.tls_key_file.empty())) {
    return absl::InvalidArgumentError("TLS needs both --tls-cert and --tls-key");
  }
  if (!tls && !IsLoopbackHost(host) && !options_.insecure) {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing to serve plaintext on non-loopback address ", options_.listen,
        ": the token would cross the network in the clear. Give --tls-cert and --tls-key, "
        "or --insecure if the network is trusted"));
  }
  std::string token_path = options_.token_file.empty() ? DefaultTokenPath() : options_.token_file;
  auto token = LoadMasterToken(token_path);
  if (!token.ok()) return token.status();

  std::shared_ptr<grpc::ServerCredentials> creds;
  if (tls) {
    auto cert = ReadFile(options_.tls_cert_file, "TLS certificate");
    if (!cert.ok()) return cert.status();
    auto key = ReadFile(options_.tls_key_file, "TLS key");
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    creds = grpc::SslServerCredentials(ssl);
  } else {
    creds = grpc::InsecureServerCredentials();
  }

  engine_ = std::make_unique<MemoryEngine>(options_.engine, RealClock::Get(),
                                           [this] { timer_.Wake(); });
  if (options_.store == "sqlite") {
    SqliteStoreOptions store_options;
    store_options.dir = options_.data_dir.empty() ? DefaultDataDir() : options_.data_dir;
    store_options.fsync = options_.fsync;
    store_options.fsync_interval = options_.fsync_interval;
    store_options.min_free_bytes = options_.min_free_disk_bytes;
    MemoryEngine* engine = engine_.get();
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
  service_ = std::make_unique<TaskQueueService>(engine_.get(), &scheduler_, *std::move(token));

  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(options_.listen, creds, &bound_port);
  builder.RegisterService(service_.get());
  builder.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  builder.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  // Workers ping every 20 s to notice a dead master; accept that, and ping
  // them too so a dead worker's leases come back without waiting for expiry.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  server_ = builder.BuildAndStart();
  if (!server_ || bound_port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen,
                                               " (address in use or not available)"));
  }
  timer_.Start(engine_.get());
  std::string bound = absl::StrContains(host, ':') ? absl::StrCat("[", host, "]:", bound_port)
                                                    : absl::StrCat(host, ":", bound_port);
  LogInfo("serving taskq.v1 on %s (%s), token file %s", bound, tls ? "TLS" : "plaintext",
          token_path);
  return bound;
}

void MasterServer::Wait() {
  if (server_) server_->Wait();
}

void MasterServer::Shutdown() {
  // Waiting calls first, so the server's shutdown does not wait on them.
  if (engine_) engine_->Shutdown();
  // Waiting calls are answered already; what remains are quick unary calls
  // and worker streams, which would otherwise hold shutdown to the deadline.
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  }
  timer_.Stop();
  // Last: syncs what was written (any policy) and answers waiting replies.
  if (store_) store_->Close();
}

}  // namespace taskq
