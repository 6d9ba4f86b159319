#include "common/x509.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace taskq {

namespace {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
};
template <typename T>
using Ptr = std::unique_ptr<T, Free>;

// OpenSSL's error queue as text (and emptied), for INTERNAL statuses.
std::string OpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

absl::Status Internal(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", OpenSslErrors()));
}

Ptr<BIO> MemBio(absl::string_view data) {
  return Ptr<BIO>(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

std::string BioString(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, n > 0 ? static_cast<size_t>(n) : 0);
}

absl::StatusOr<Ptr<EVP_PKEY>> ParsePrivateKey(absl::string_view pem) {
  auto bio = MemBio(pem);
  Ptr<EVP_PKEY> key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not a PEM private key");
  }
  return key;
}

absl::StatusOr<Ptr<EVP_PKEY>> ParsePublicKey(absl::string_view pem) {
  auto bio = MemBio(pem);
  Ptr<EVP_PKEY> key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not a PEM public key");
  }
  return key;
}

absl::StatusOr<Ptr<X509>> ParseCert(absl::string_view pem) {
  auto bio = MemBio(pem);
  Ptr<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not a PEM certificate");
  }
  return cert;
}

absl::StatusOr<Ptr<EVP_PKEY>> NewP256Key() {
  Ptr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key) return Internal("cannot make an EC P-256 key");
  return key;
}

absl::StatusOr<std::string> PrivateKeyToPem(EVP_PKEY* key) {
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr)) {
    return Internal("cannot encode a private key");
  }
  return BioString(bio.get());
}

absl::StatusOr<std::string> CertToPem(X509* cert) {
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509(bio.get(), cert)) return Internal("cannot encode a certificate");
  return BioString(bio.get());
}

// Adds a v3 extension given in OpenSSL's config syntax ("critical,CA:TRUE").
absl::Status AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  Ptr<X509_EXTENSION> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext || !X509_add_ext(cert, ext.get(), -1)) {
    return Internal(absl::StrCat("cannot add extension ", OBJ_nid2sn(nid), "=", value));
  }
  return absl::OkStatus();
}

// A certificate with a random serial, `subject_cn`, the issuer's name (or
// its own when self-signed) and validity from a minute ago, so a peer whose
// clock is slightly behind does not see it as not yet valid.
absl::StatusOr<Ptr<X509>> NewCert(EVP_PKEY* public_key, absl::string_view subject_cn,
                                  X509* issuer, absl::Duration validity) {
  if (validity <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("certificate validity must be positive");
  }
  if (subject_cn.empty() || subject_cn.size() > 64) {
    return absl::InvalidArgumentError("certificate common name must be 1 to 64 characters");
  }
  Ptr<X509> cert(X509_new());
  if (!cert || !X509_set_version(cert.get(), 2)) return Internal("cannot make a certificate");
  // 127 random bits: positive and at most 16 bytes, as RFC 5280 asks.
  std::string serial_bytes = RandomBytes(16);
  serial_bytes[0] = static_cast<char>(serial_bytes[0] & 0x7f);
  Ptr<BIGNUM> serial(BN_bin2bn(reinterpret_cast<const unsigned char*>(serial_bytes.data()),
                               static_cast<int>(serial_bytes.size()), nullptr));
  if (!serial || !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get()))) {
    return Internal("cannot set a serial number");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                  reinterpret_cast<const unsigned char*>(subject_cn.data()),
                                  static_cast<int>(subject_cn.size()), -1, 0)) {
    return Internal("cannot set the subject");
  }
  if (!X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name)) {
    return Internal("cannot set the issuer");
  }
  if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60) ||
      !X509_gmtime_adj(X509_getm_notAfter(cert.get()), absl::ToInt64Seconds(validity))) {
    return Internal("cannot set the validity");
  }
  if (!X509_set_pubkey(cert.get(), public_key)) return Internal("cannot set the public key");
  return cert;
}

absl::Status Sign(X509* cert, EVP_PKEY* key) {
  if (X509_sign(cert, key, EVP_sha256()) <= 0) return Internal("cannot sign a certificate");
  return absl::OkStatus();
}

struct ParsedCa {
  Ptr<X509> cert;
  Ptr<EVP_PKEY> key;
};

absl::StatusOr<ParsedCa> ParseCa(const KeyAndCert& ca) {
  auto cert = ParseCert(ca.cert_pem);
  if (!cert.ok()) return absl::InvalidArgumentError("CA certificate: not a PEM certificate");
  auto key = ParsePrivateKey(ca.key_pem);
  if (!key.ok()) return absl::InvalidArgumentError("CA key: not a PEM private key");
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("the CA key does not belong to the CA certificate");
  }
  return ParsedCa{*std::move(cert), *std::move(key)};
}

bool IsIpAddress(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// RFC 1123 host names (letters, digits, '-', '.'; a '*' label would make a
// wildcard certificate, which init never needs).
bool IsDnsName(const std::string& host) {
  if (host.empty() || host.size() > 253 || host.front() == '.' || host.back() == '.') return false;
  return std::all_of(host.begin(), host.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.';
  });
}

}  // namespace

absl::StatusOr<std::string> MakePrivateKeyPem() {
  auto key = NewP256Key();
  if (!key.ok()) return key.status();
  return PrivateKeyToPem(key->get());
}

absl::StatusOr<std::string> PublicKeyPem(absl::string_view key_pem) {
  auto key = ParsePrivateKey(key_pem);
  if (!key.ok()) return key.status();
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PUBKEY(bio.get(), key->get())) return Internal("cannot encode a public key");
  return BioString(bio.get());
}

absl::StatusOr<KeyAndCert> MakeCa(absl::string_view common_name, absl::Duration validity) {
  auto key = NewP256Key();
  if (!key.ok()) return key.status();
  auto cert = NewCert(key->get(), common_name, nullptr, validity);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                            std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
                            std::pair{NID_subject_key_identifier, "hash"},
                            std::pair{NID_authority_key_identifier, "keyid:always"}}) {
    if (absl::Status s = AddExtension(c, c, nid, value); !s.ok()) return s;
  }
  if (absl::Status s = Sign(c, key->get()); !s.ok()) return s;
  auto key_pem = PrivateKeyToPem(key->get());
  if (!key_pem.ok()) return key_pem.status();
  auto cert_pem = CertToPem(c);
  if (!cert_pem.ok()) return cert_pem.status();
  return KeyAndCert{*std::move(key_pem), *std::move(cert_pem)};
}

absl::StatusOr<KeyAndCert> MakeServerCert(const KeyAndCert& ca,
                                          const std::vector<std::string>& hosts,
                                          absl::Duration validity) {
  std::vector<std::string> names;
  for (const std::string& host : hosts) {
    if (std::find(names.begin(), names.end(), host) != names.end()) continue;
    if (!IsIpAddress(host) && !IsDnsName(host)) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", host, "\" is neither a host name nor an IP address"));
    }
    names.push_back(host);
  }
  if (names.empty()) return absl::InvalidArgumentError("a server certificate needs a host");
  auto parsed = ParseCa(ca);
  if (!parsed.ok()) return parsed.status();
  auto key = NewP256Key();
  if (!key.ok()) return key.status();
  auto cert = NewCert(key->get(), names.front().substr(0, 64), parsed->cert.get(), validity);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  std::vector<std::string> san;
  for (const std::string& name : names) {
    san.push_back(absl::StrCat(IsIpAddress(name) ? "IP:" : "DNS:", name));
  }
  const std::string san_value = absl::StrJoin(san, ",");
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:FALSE"},
                            std::pair{NID_key_usage, "critical,digitalSignature"},
                            std::pair{NID_ext_key_usage, "serverAuth"},
                            std::pair{NID_subject_key_identifier, "hash"},
                            std::pair{NID_authority_key_identifier, "keyid:always"},
                            std::pair{NID_subject_alt_name, san_value.c_str()}}) {
    if (absl::Status s = AddExtension(c, parsed->cert.get(), nid, value); !s.ok()) return s;
  }
  if (absl::Status s = Sign(c, parsed->key.get()); !s.ok()) return s;
  auto key_pem = PrivateKeyToPem(key->get());
  if (!key_pem.ok()) return key_pem.status();
  auto cert_pem = CertToPem(c);
  if (!cert_pem.ok()) return cert_pem.status();
  return KeyAndCert{*std::move(key_pem), *std::move(cert_pem)};
}

absl::StatusOr<std::string> SignClientCert(const KeyAndCert& ca,
                                           absl::string_view public_key_pem,
                                           absl::string_view common_name,
                                           absl::Duration validity) {
  auto parsed = ParseCa(ca);
  if (!parsed.ok()) return parsed.status();
  auto public_key = ParsePublicKey(public_key_pem);
  if (!public_key.ok()) return public_key.status();
  auto cert = NewCert(public_key->get(), common_name, parsed->cert.get(), validity);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:FALSE"},
                            std::pair{NID_key_usage, "critical,digitalSignature"},
                            std::pair{NID_ext_key_usage, "clientAuth"},
                            std::pair{NID_authority_key_identifier, "keyid:always"}}) {
    if (absl::Status s = AddExtension(c, parsed->cert.get(), nid, value); !s.ok()) return s;
  }
  if (absl::Status s = Sign(c, parsed->key.get()); !s.ok()) return s;
  return CertToPem(c);
}

absl::StatusOr<std::string> CertificateSha256Hex(absl::string_view cert_pem) {
  auto cert = ParseCert(cert_pem);
  if (!cert.ok()) return cert.status();
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!X509_digest(cert->get(), EVP_sha256(), md, &len)) return Internal("cannot hash a certificate");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * len);
  for (unsigned int i = 0; i < len; ++i) {
    hex.push_back(kHex[md[i] >> 4]);
    hex.push_back(kHex[md[i] & 0xf]);
  }
  return hex;
}

std::string Sha256(absl::string_view data) {
  std::string out(SHA256_DIGEST_LENGTH, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(),
         reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (n > 0 && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    // Without entropy no key, token or serial is safe to make: stop.
    std::fprintf(stderr, "taskq: RAND_bytes failed: %s\n", OpenSslErrors().c_str());
    std::abort();
  }
  return out;
}

}  // namespace taskq
