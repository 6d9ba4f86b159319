// CertificateReloader: makes an OpenSSL server context serve the
// certificate and key on disk now, as gRPC's FileWatcherCertificateProvider
// does for the master's gRPC port: a certificate replaced on disk (`taskq-
// master init --rotate-server-cert`, or any rename into place) is served to
// new HTTPS connections within `refresh` without a restart; open
// connections keep the one they started with.
//
// It hooks the context's certificate callback (SSL_CTX_set_cert_cb), which
// runs for every handshake: at most once per `refresh` it looks at the two
// files' modification times and, when either changed, loads the pair. A
// pair that does not load or does not match (e.g. the certificate is
// renamed into place before the key) is not used: the previous one is
// served and the files are tried again at the next refresh; one warning is
// logged per change.
//
// Thread-safety: the callback runs on the server's threads; all state is
// behind mu_. Must outlive the context's use (the HTTP server).
#pragma once

#include <memory>
#include <string>

#include <openssl/ssl.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/sync.h"

namespace taskq {

class CertificateReloader {
 public:
  // Loads the pair now (an error if it does not load) and installs the
  // callback on `ctx`.
  static absl::StatusOr<std::unique_ptr<CertificateReloader>> Install(
      SSL_CTX* ctx, std::string cert_file, std::string key_file,
      absl::Duration refresh = absl::Seconds(1));
  ~CertificateReloader();

 private:
  struct Pair;  // a certificate chain and its key
  CertificateReloader(std::string cert_file, std::string key_file, absl::Duration refresh);

  // Reads a PEM certificate chain and its key; an error if they do not
  // load or do not match.
  static absl::StatusOr<std::shared_ptr<const Pair>> Load(const std::string& cert_file,
                                                          const std::string& key_file);
  static int OnHandshake(SSL* ssl, void* self);
  // The pair to serve now, reloaded first if the files changed.
  std::shared_ptr<const Pair> Current();

  const std::string cert_file_, key_file_;
  const absl::Duration refresh_;
  Mutex mu_;
  std::shared_ptr<const Pair> pair_ ABSL_GUARDED_BY(mu_);
  std::string stamp_ ABSL_GUARDED_BY(mu_);  // the files' mtimes when last looked at
  absl::Time next_check_ ABSL_GUARDED_BY(mu_);
};

}  // namespace taskq
