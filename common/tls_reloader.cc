#include "common/tls_reloader.h"

#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace taskq {

struct CertificateReloader::Pair {
  X509* cert = nullptr;
  STACK_OF(X509)* chain = nullptr;  // the certificates after the first
  EVP_PKEY* key = nullptr;
  ~Pair() {
    X509_free(cert);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
  }
};

namespace {

// "mtime:size" of both files; "" if either is missing.
std::string Stamp(const std::string& cert, const std::string& key) {
  std::string out;
  for (const std::string* path : {&cert, &key}) {
    struct stat st;
    if (::stat(path->c_str(), &st) != 0) return "";
    absl::StrAppend(&out, st.st_ino, ":", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec, ":",
                    st.st_size, ";");
  }
  return out;
}

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const CertificateReloader::Pair>> CertificateReloader::Load(
    const std::string& cert_file, const std::string& key_file) {
  auto pair = std::make_shared<Pair>();
  {
    BIO* bio = BIO_new_file(cert_file.c_str(), "r");
    if (bio == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot read certificate ", cert_file, ": ", OpenSslError()));
    }
    pair->cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    pair->chain = sk_X509_new_null();
    while (X509* more = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
      sk_X509_push(pair->chain, more);
    }
    ERR_clear_error();  // the end of the file reads as an error
    BIO_free(bio);
    if (pair->cert == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("no PEM certificate in ", cert_file));
    }
  }
  {
    BIO* bio = BIO_new_file(key_file.c_str(), "r");
    if (bio == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot read key ", key_file, ": ", OpenSslError()));
    }
    pair->key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    if (pair->key == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("no PEM private key in ", key_file, ": ", OpenSslError()));
    }
  }
  if (X509_check_private_key(pair->cert, pair->key) != 1) {
    ERR_clear_error();
    return absl::FailedPreconditionError(
        absl::StrCat("key ", key_file, " does not match certificate ", cert_file));
  }
  return std::shared_ptr<const Pair>(std::move(pair));
}

CertificateReloader::CertificateReloader(std::string cert_file, std::string key_file,
                                         absl::Duration refresh)
    : cert_file_(std::move(cert_file)), key_file_(std::move(key_file)), refresh_(refresh) {}

CertificateReloader::~CertificateReloader() = default;

absl::StatusOr<std::unique_ptr<CertificateReloader>> CertificateReloader::Install(
    SSL_CTX* ctx, std::string cert_file, std::string key_file, absl::Duration refresh) {
  if (ctx == nullptr) return absl::InternalError("no TLS context");
  std::unique_ptr<CertificateReloader> self(
      new CertificateReloader(std::move(cert_file), std::move(key_file), refresh));
  const std::string stamp = Stamp(self->cert_file_, self->key_file_);
  auto pair = Load(self->cert_file_, self->key_file_);
  if (!pair.ok()) return pair.status();
  {
    MutexLock lock(&self->mu_);
    self->pair_ = *std::move(pair);
    self->stamp_ = stamp;
    self->next_check_ = absl::Now() + refresh;
  }
  SSL_CTX_set_cert_cb(ctx, &CertificateReloader::OnHandshake, self.get());
  return self;
}

std::shared_ptr<const CertificateReloader::Pair> CertificateReloader::Current() {
  MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  if (now < next_check_) return pair_;
  next_check_ = now + refresh_;
  const std::string stamp = Stamp(cert_file_, key_file_);
  if (stamp.empty() || stamp == stamp_) return pair_;
  auto loaded = Load(cert_file_, key_file_);
  if (!loaded.ok()) {
    // Tried again at the next refresh only if the files change again, or
    // when the rest of a rename lands (it changes the stamp).
    LogWarning("HTTPS: keeping the certificate served so far: %s", loaded.status().message());
    stamp_ = stamp;
    return pair_;
  }
  LogInfo("HTTPS: serving the new certificate %s to new connections", cert_file_);
  pair_ = *std::move(loaded);
  stamp_ = stamp;
  return pair_;
}

int CertificateReloader::OnHandshake(SSL* ssl, void* arg) {
  auto* self = static_cast<CertificateReloader*>(arg);
  std::shared_ptr<const Pair> pair = self->Current();
  if (pair == nullptr) return 0;
  // Per connection: the context's certificate is left alone, so a
  // handshake in progress never sees a half-replaced pair.
  return SSL_use_cert_and_key(ssl, pair->cert, pair->key, pair->chain, /*override=*/1) == 1 ? 1
                                                                                           : 0;
}

}  // namespace taskq
