// How a taskq client (CLI, worker, library user) reaches the master: the
// address (or a list of them), the TLS choice and the credential (a token,
// a client certificate, or both), turned into a gRPC channel plus per-call
// authorization metadata. A join bundle (common/join_bundle.h) fills these
// in one go.
//
// Thread-safety: ConnectOptions is a plain value; the functions are
// stateless. The returned channel is thread-safe (gRPC).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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
  // HOST:PORT. Default: the first of `masters` that connects (see there),
  // else $TASKQ_MASTER, else 127.0.0.1:5000.
  std::string master;
  // Used when `master` is empty: the addresses are tried in order and the
  // first that connects within connect_timeout is used (one that refuses
  // at once is skipped at once). If none does, the first is used, and the
  // calls' own retrying waits for it.
  std::vector<std::string> masters;
  // The token, inline. Used instead of token_file when set.
  std::string token;
  // Path of the token file. Default (when neither `token` nor a client
  // certificate is given): DefaultTokenPath().
  std::string token_file;
  // Use TLS. The master is verified against tls_ca_file (a PEM file), else
  // tls_ca_pem (PEM contents), else the system's root certificates. Either
  // CA, or a client certificate, implies TLS.
  bool tls = false;
  std::string tls_ca_file;
  std::string tls_ca_pem;
  // mTLS: a client certificate chain and its private key (PEM contents),
  // presented to the master. Without a token, nothing else is sent: the
  // master knows the caller by the certificate.
  std::string client_cert_pem;
  std::string client_key_pem;
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

// "HOST:PORT", with an IPv6 address in brackets ("[::1]:5000").
std::string JoinHostPort(absl::string_view host, int port);

// Fills empty fields from the environment and defaults: master from
// $TASKQ_MASTER (unless `masters` is set), token_file from
// DefaultTokenPath() (unless a token or client certificate is set),
// tls_ca_file from $TASKQ_TLS_CA (unless tls_ca_pem is set).
ConnectOptions ResolveConnectOptions(ConnectOptions options);

// Builds a channel to another address with the same TLS, credentials,
// keepalive and timeouts (cluster mode: the master that owns a queue).
using ChannelFactory = std::function<std::shared_ptr<grpc::Channel>(const std::string& address)>;

// A connected-on-demand channel plus the token to send with every call
// (empty for a certificate-only credential).
struct Connection {
  std::shared_ptr<grpc::Channel> channel;
  std::string token;
  // The address the channel goes to (the chosen one of `masters`).
  std::string master;
  // Channels to other masters, built the way `channel` was.
  ChannelFactory dial;
};

// Reads the token file (unless the token is inline or only a certificate
// is given) and builds the channel; with several `masters`, picks one (see
// there), which may take up to connect_timeout per address. Fails with a
// clear message if the token cannot be read or the TLS files are unreadable.
absl::StatusOr<Connection> Connect(const ConnectOptions& options);

// Adds the bearer token to a call (none if `token` is empty) and, if
// timeout is finite, a deadline.
void PrepareContext(grpc::ClientContext* context, const std::string& token,
                    absl::Duration timeout = absl::InfiniteDuration());

}  // namespace taskq
