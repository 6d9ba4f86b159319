// X.509 for taskq's private CA (OpenSSL 3 libcrypto): EC P-256 keys, the CA
// `taskq-master init` makes, the master's server certificate, client
// certificates the master signs for certificate credentials, and the hashes
// and random bytes credentials are made of.
//
// Everything is PEM text in memory; files are the caller's business (keys
// are secrets: write them 0600, never log them). Serial numbers are random
// (128 bits), so two certificates from one CA never share one.
//
// Errors: INVALID_ARGUMENT for input that does not parse (a key or
// certificate PEM, a host that is neither a DNS name nor an IP address,
// a non-positive validity); INTERNAL when OpenSSL fails otherwise.
// Thread-safety: all functions are stateless and safe from any thread.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace taskq {

struct KeyAndCert {
  std::string key_pem;   // PKCS#8 private key
  std::string cert_pem;
};

// A fresh EC P-256 private key (PKCS#8 PEM).
absl::StatusOr<std::string> MakePrivateKeyPem();

// The public key (SubjectPublicKeyInfo PEM) of a private key PEM.
absl::StatusOr<std::string> PublicKeyPem(absl::string_view key_pem);

// A self-signed CA: basicConstraints critical CA:TRUE (path length 0),
// keyUsage keyCertSign + cRLSign, subject CN = `common_name`, valid from a
// minute ago (small clock skew) for `validity`.
absl::StatusOr<KeyAndCert> MakeCa(absl::string_view common_name, absl::Duration validity);

// A new key and a server certificate signed by `ca`: subjectAltName with a
// DNS entry per name and an IP entry per address in `hosts` (duplicates
// dropped, at least one host), CN = the first host, extendedKeyUsage
// serverAuth, keyUsage digitalSignature.
absl::StatusOr<KeyAndCert> MakeServerCert(const KeyAndCert& ca,
                                          const std::vector<std::string>& hosts /* DNS names or IPs */,
                                          absl::Duration validity);

// A client certificate for `public_key_pem` (the client keeps its private
// key), CN = `common_name`, extendedKeyUsage clientAuth, signed by `ca`.
absl::StatusOr<std::string> SignClientCert(const KeyAndCert& ca,
                                           absl::string_view public_key_pem,
                                           absl::string_view common_name,
                                           absl::Duration validity);

// SHA-256 of the certificate's DER encoding, 64 lowercase hex characters
// (what `openssl x509 -fingerprint -sha256` shows, without the colons).
// Of a chain, the first certificate.
absl::StatusOr<std::string> CertificateSha256Hex(absl::string_view cert_pem);

// SHA-256 of `data`, the raw 32 bytes.
std::string Sha256(absl::string_view data);

// `n` bytes from OpenSSL's CSPRNG (RAND_bytes); aborts if it fails, which
// only happens when the system cannot give entropy at all.
std::string RandomBytes(size_t n);

}  // namespace taskq
