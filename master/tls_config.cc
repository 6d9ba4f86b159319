#include "master/tls_config.h"

#include <sys/stat.h>

#include <memory>

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "absl/strings/str_cat.h"
#include "common/read_file.h"

namespace taskq {

namespace {

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what) {
  auto text = ReadFileToString(path);
  if (!text.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(what, ": ", text.status().message()));
  }
  return text;
}

// Parses the files the way the handshake will, so that a wrong path or a
// key of another certificate stops the master at start with the file's name.
absl::Status CheckFiles(const ServerTlsFiles& files) {
  auto cert_pem = ReadFile(files.cert, "TLS certificate");
  if (!cert_pem.ok()) return cert_pem.status();
  auto key_pem = ReadFile(files.key, "TLS key");
  if (!key_pem.ok()) return key_pem.status();
  std::unique_ptr<BIO, decltype(&BIO_free)> cert_bio(
      BIO_new_mem_buf(cert_pem->data(), static_cast<int>(cert_pem->size())), BIO_free);
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr), X509_free);
  std::unique_ptr<BIO, decltype(&BIO_free)> key_bio(
      BIO_new_mem_buf(key_pem->data(), static_cast<int>(key_pem->size())), BIO_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr), EVP_PKEY_free);
  absl::Status status;
  if (!cert) {
    status = absl::FailedPreconditionError(
        absl::StrCat("TLS certificate ", files.cert, " holds no PEM certificate"));
  } else if (!key) {
    status = absl::FailedPreconditionError(
        absl::StrCat("TLS key ", files.key, " holds no PEM private key"));
  } else if (X509_check_private_key(cert.get(), key.get()) != 1) {
    status = absl::FailedPreconditionError(absl::StrCat(
        "TLS key ", files.key, " does not belong to the certificate ", files.cert));
  }
  ERR_clear_error();
  if (!status.ok() || files.ca.empty()) return status;
  auto ca_pem = ReadFile(files.ca, "CA certificate");
  if (!ca_pem.ok()) return ca_pem.status();
  std::unique_ptr<BIO, decltype(&BIO_free)> ca_bio(
      BIO_new_mem_buf(ca_pem->data(), static_cast<int>(ca_pem->size())), BIO_free);
  std::unique_ptr<X509, decltype(&X509_free)> ca(
      PEM_read_bio_X509(ca_bio.get(), nullptr, nullptr, nullptr), X509_free);
  ERR_clear_error();
  if (!ca) {
    return absl::FailedPreconditionError(
        absl::StrCat("CA certificate ", files.ca, " holds no PEM certificate"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string TlsDir(const std::string& data_dir) { return absl::StrCat(data_dir, "/", kTlsDirName); }

absl::StatusOr<std::optional<ServerTlsFiles>> FindServerTls(const std::string& data_dir,
                                                            const std::string& cert_flag,
                                                            const std::string& key_flag) {
  const std::string dir = TlsDir(data_dir);
  const std::string ca = absl::StrCat(dir, "/", kCaCertFile);
  ServerTlsFiles files;
  if (!cert_flag.empty() || !key_flag.empty()) {
    if (cert_flag.empty() || key_flag.empty()) {
      return absl::InvalidArgumentError("TLS needs both --tls-cert and --tls-key");
    }
    files = {cert_flag, key_flag, Exists(ca) ? ca : ""};
  } else {
    files = {absl::StrCat(dir, "/", kServerCertFile), absl::StrCat(dir, "/", kServerKeyFile), ca};
    const bool have_cert = Exists(files.cert), have_key = Exists(files.key);
    if (!have_cert && !have_key) return std::nullopt;
    if (!have_cert || !have_key) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir, " has only one of ", kServerCertFile, " and ", kServerKeyFile,
          ": run `taskq-master init --data-dir ", data_dir, " --rotate-server-cert` to make both"));
    }
    if (!Exists(files.ca)) files.ca.clear();
  }
  if (absl::Status s = CheckFiles(files); !s.ok()) return s;
  return files;
}

std::shared_ptr<grpc::ServerCredentials> MakeServerTlsCredentials(
    const ServerTlsFiles& files, bool require_client_certificate) {
  const auto refresh_s = static_cast<unsigned int>(absl::ToInt64Seconds(kTlsRefreshInterval));
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      files.key, files.cert, files.ca, refresh_s);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (files.ca.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(require_client_certificate
                                      ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                      : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace taskq
