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
inline constexpr absl::Duration kDefaultConnectTimeout = absl::Seconds(20);
inline constexpr absl::Duration kDefaultKeepalive = absl::Seconds(5);
// Bounds of --connect-timeout and --keepalive (gRPC's own floor for
// keepalive is 1 s; a timeout below 1 s would fail on any real distance).
inline constexpr absl::Duration kMinConnectTimeout = absl::Seconds(1);
inline constexpr absl::Duration kMinKeepalive = absl::Seconds(1);
inline constexpr absl::Duration kMaxConnectTimeout = absl::Hours(1);
inline constexpr absl::Duration kMaxKeepalive = absl::Hours(1);

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
  // How long one attempt to connect (TCP + TLS handshake + HTTP/2
  // settings) may take before it counts as failed. Over a long or lossy
  // link a handshake takes several round trips: keep this well above them.
  absl::Duration connect_timeout = kDefaultConnectTimeout;
  // Keepalive: a PING is sent after this long without one, and a PING not
  // answered within the same time closes the connection. So a dead link is
  // noticed within 2 x keepalive (the default: 10 s).
  absl::Duration keepalive = kDefaultKeepalive;
};

// Fills empty fields from the environment ($TASKQ_MASTER,
// $TASKQ_TOKEN_FILE, $TASKQ_TLS_CA) and defaults.
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
