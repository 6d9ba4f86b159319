// How a taskq client (CLI, worker, library user) reaches the master: the
// address, the TLS choice and the token, turned into a gRPC channel plus
// per-call authorization metadata.
//
// Thread-safety: ConnectOptions is a plain value; the functions are
// stateless. The returned channel is thread-safe (gRPC).
#pragma once

#include <memory>
#include <string>

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace taskq {

inline constexpr char kDefaultMaster[] = "127.0.0.1:5000";

struct ConnectOptions {
  // HOST:PORT. Default: $TASKQ_MASTER, else 127.0.0.1:5000.
  std::string master;
  // Path of the token file. Default: DefaultTokenPath().
  std::string token_file;
  // Use TLS. With tls_ca_file empty, the system's root certificates verify
  // the master; otherwise that PEM file does.
  bool tls = false;
  std::string tls_ca_file;
  // Overrides the name checked against the master's certificate.
  std::string tls_server_name;
};

// Fills empty fields from the environment and defaults.
ConnectOptions ResolveConnectOptions(ConnectOptions options);

// A connected-on-demand channel plus the token to send with every call.
struct Connection {
  std::shared_ptr<grpc::Channel> channel;
  std::string token;
};

// Reads the token file and builds the channel. Fails with a clear message if
// the token cannot be read or the TLS files are unreadable.
absl::StatusOr<Connection> Connect(const ConnectOptions& options);

// Adds the bearer token to a call and, if timeout is finite, a deadline.
void PrepareContext(grpc::ClientContext* context, const std::string& token,
                    absl::Duration timeout = absl::InfiniteDuration());

}  // namespace taskq
