#include "common/x509.h"

#include <memory>
#include <string>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace taskq {
namespace {

using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;

X509Ptr Parse(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free);
}

// X509_verify_cert against `ca` alone, for `purpose` (X509_PURPOSE_*); the
// verification error's text, or "ok".
std::string Verify(const std::string& ca_pem, const std::string& cert_pem, int purpose) {
  X509Ptr ca = Parse(ca_pem), cert = Parse(cert_pem);
  if (!ca || !cert) return "unparsable";
  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(),
                                                                X509_STORE_free);
  X509_STORE_add_cert(store.get(), ca.get());
  std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx(X509_STORE_CTX_new(),
                                                                     X509_STORE_CTX_free);
  X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr);
  X509_STORE_CTX_set_purpose(ctx.get(), purpose);
  if (X509_verify_cert(ctx.get()) == 1) return "ok";
  return X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
}

TEST(X509, ServerCertVerifiesAgainstItsCaAndNamesItsHosts) {
  auto ca = MakeCa("taskq test CA", absl::Hours(24));
  ASSERT_TRUE(ca.ok()) << ca.status();
  auto server = MakeServerCert(*ca, {"master.example", "10.1.2.3", "::1", "master.example"},
                               absl::Hours(1));
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(Verify(ca->cert_pem, server->cert_pem, X509_PURPOSE_SSL_SERVER), "ok");
  // Not good for the other end of a connection.
  EXPECT_NE(Verify(ca->cert_pem, server->cert_pem, X509_PURPOSE_SSL_CLIENT), "ok");

  X509Ptr cert = Parse(server->cert_pem);
  ASSERT_TRUE(cert);
  EXPECT_EQ(X509_check_host(cert.get(), "master.example", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_host(cert.get(), "other.example", 0, 0, nullptr), 0);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "10.1.2.3", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "::1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "10.1.2.4", 0), 0);
  // The key is the certificate's.
  auto public_key = PublicKeyPem(server->key_pem);
  ASSERT_TRUE(public_key.ok()) << public_key.status();
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      X509_get_pubkey(cert.get()), EVP_PKEY_free);
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  PEM_write_bio_PUBKEY(bio.get(), key.get());
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  EXPECT_EQ(std::string(data, static_cast<size_t>(n)), *public_key);
}

TEST(X509, CaIsACaAndCertificatesOfAnotherCaDoNotVerify) {
  auto ca = MakeCa("taskq test CA", absl::Hours(24));
  auto other = MakeCa("another CA", absl::Hours(24));
  ASSERT_TRUE(ca.ok() && other.ok());
  X509Ptr cert = Parse(ca->cert_pem);
  ASSERT_TRUE(cert);
  EXPECT_EQ(X509_check_ca(cert.get()), 1);
  EXPECT_EQ(Verify(ca->cert_pem, ca->cert_pem, X509_PURPOSE_ANY), "ok");
  auto server = MakeServerCert(*other, {"localhost"}, absl::Hours(1));
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_NE(Verify(ca->cert_pem, server->cert_pem, X509_PURPOSE_SSL_SERVER), "ok");
}

TEST(X509, ClientCertIsForClientsWithTheNameAndKeyGiven) {
  auto ca = MakeCa("taskq test CA", absl::Hours(24));
  ASSERT_TRUE(ca.ok()) << ca.status();
  auto key = MakePrivateKeyPem();
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_TRUE(absl::StartsWith(*key, "-----BEGIN PRIVATE KEY-----")) << *key;
  auto public_key = PublicKeyPem(*key);
  ASSERT_TRUE(public_key.ok()) << public_key.status();
  EXPECT_TRUE(absl::StartsWith(*public_key, "-----BEGIN PUBLIC KEY-----"));
  auto cert = SignClientCert(*ca, *public_key, "w1", absl::Hours(1));
  ASSERT_TRUE(cert.ok()) << cert.status();
  EXPECT_EQ(Verify(ca->cert_pem, *cert, X509_PURPOSE_SSL_CLIENT), "ok");
  EXPECT_NE(Verify(ca->cert_pem, *cert, X509_PURPOSE_SSL_SERVER), "ok");
  X509Ptr parsed = Parse(*cert);
  char cn[64] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(parsed.get()), NID_commonName, cn, sizeof cn);
  EXPECT_STREQ(cn, "w1");
  // Two certificates of one CA never share a serial.
  auto again = SignClientCert(*ca, *public_key, "w1", absl::Hours(1));
  ASSERT_TRUE(again.ok());
  X509Ptr second = Parse(*again);
  EXPECT_NE(ASN1_INTEGER_cmp(X509_get0_serialNumber(parsed.get()),
                             X509_get0_serialNumber(second.get())),
            0);
}

TEST(X509, FingerprintIsStableAndDiffersPerCertificate) {
  auto ca = MakeCa("taskq test CA", absl::Hours(24));
  ASSERT_TRUE(ca.ok());
  auto a = CertificateSha256Hex(ca->cert_pem);
  auto b = CertificateSha256Hex(ca->cert_pem);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(a->size(), 64u);
  EXPECT_EQ(a->find_first_not_of("0123456789abcdef"), std::string::npos) << *a;
  // The fingerprint is the hash of the DER encoding.
  X509Ptr cert = Parse(ca->cert_pem);
  unsigned char* der = nullptr;
  int len = i2d_X509(cert.get(), &der);
  std::string digest = Sha256(std::string(reinterpret_cast<char*>(der), len));
  OPENSSL_free(der);
  std::string hex;
  for (unsigned char c : digest) hex += absl::StrCat(absl::Hex(c, absl::kZeroPad2));
  EXPECT_EQ(hex, *a);
  auto server = MakeServerCert(*ca, {"localhost"}, absl::Hours(1));
  ASSERT_TRUE(server.ok());
  EXPECT_NE(*CertificateSha256Hex(server->cert_pem), *a);
}

TEST(X509, RefusesWhatDoesNotParse) {
  auto ca = MakeCa("taskq test CA", absl::Hours(24));
  ASSERT_TRUE(ca.ok());
  EXPECT_EQ(CertificateSha256Hex("junk").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PublicKeyPem("junk").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SignClientCert(*ca, "junk", "w1", absl::Hours(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto bad_host = MakeServerCert(*ca, {"has space"}, absl::Hours(1));
  EXPECT_EQ(bad_host.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(bad_host.status().message(), "has space"));
  EXPECT_FALSE(MakeServerCert(*ca, {}, absl::Hours(1)).ok());
  EXPECT_FALSE(MakeCa("x", absl::ZeroDuration()).ok());
  KeyAndCert mismatched{*MakePrivateKeyPem(), ca->cert_pem};
  EXPECT_EQ(MakeServerCert(mismatched, {"localhost"}, absl::Hours(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(X509, RandomBytesAndSha256) {
  EXPECT_EQ(RandomBytes(32).size(), 32u);
  EXPECT_NE(RandomBytes(32), RandomBytes(32));
  EXPECT_EQ(RandomBytes(0), "");
  // SHA-256("abc"), FIPS 180-2.
  std::string digest = Sha256("abc");
  ASSERT_EQ(digest.size(), 32u);
  EXPECT_EQ(static_cast<unsigned char>(digest[0]), 0xba);
  EXPECT_EQ(static_cast<unsigned char>(digest[31]), 0xad);
}

}  // namespace
}  // namespace taskq
