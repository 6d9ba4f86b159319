// The master's TLS: where its certificate, key and CA come from, and the
// gRPC server credentials made of them.
//
// Sources, first that applies:
//   1. --tls-cert and --tls-key (both or neither); the CA for client
//      certificates is <data-dir>/tls/ca.pem if it exists.
//   2. <data-dir>/tls/server.pem and server.key, made by `taskq-master init`,
//      with tls/ca.pem.
//   3. None: the caller serves plaintext (loopback only, or --insecure).
//
// The credentials re-read the files every kTlsRefreshInterval (gRPC's
// FileWatcherCertificateProvider): a certificate replaced on disk (`init
// --rotate-server-cert`) is served to new connections without a restart;
// open connections keep the one they started with. Replace files by
// rename, never by rewriting them in place.
//
// Client certificates are requested, and verified against the CA when a
// client sends one; they are not required (token clients send none). A
// client certificate that does not verify fails the handshake.
//
// Thread-safety: stateless functions, safe from any thread.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace taskq {

// The files under <data-dir>/tls (all 0600 in a 0700 directory).
inline constexpr char kTlsDirName[] = "tls";
inline constexpr char kCaCertFile[] = "ca.pem";
inline constexpr char kCaKeyFile[] = "ca.key";
inline constexpr char kServerCertFile[] = "server.pem";
inline constexpr char kServerKeyFile[] = "server.key";
// The --host names init was given, one a line (the masters of join bundles).
inline constexpr char kHostsFile[] = "hosts";

// How often the served certificate files are checked for a change.
inline constexpr absl::Duration kTlsRefreshInterval = absl::Seconds(1);

// <data_dir>/tls.
std::string TlsDir(const std::string& data_dir);

struct ServerTlsFiles {
  std::string cert;  // PEM chain, leaf first
  std::string key;
  std::string ca;    // empty: client certificates are not requested
};

// Where the master's TLS comes from (see the top of this file), or nullopt
// for none. INVALID_ARGUMENT if only one of the flags is given or only one
// of tls/server.pem and tls/server.key exists; FAILED_PRECONDITION, naming
// the file, if a file cannot be read, does not parse, or the key does not
// belong to the certificate — so a broken setup stops the master at start
// rather than fail every handshake.
absl::StatusOr<std::optional<ServerTlsFiles>> FindServerTls(const std::string& data_dir,
                                                            const std::string& cert_flag,
                                                            const std::string& key_flag);

// TLS server credentials that watch `files` (see the top of this file).
// With `require_client_certificate` (and files.ca set) a client that sends
// no certificate, or one the CA did not sign, fails the handshake (the
// --keda-listen server, master/keda_server.h).
std::shared_ptr<grpc::ServerCredentials> MakeServerTlsCredentials(
    const ServerTlsFiles& files, bool require_client_certificate = false);

}  // namespace taskq
