#include "common/call_retry.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace taskq {
namespace {

absl::Status ConnectFailure(const char* last_error) {
  return absl::UnavailableError(
      absl::StrCat("failed to connect to all addresses; last error: ", last_error));
}

// What gRPC 1.51 prints for each case (taken from real runs).
TEST(ClassifyTlsRefusal, TlsVerificationFailuresAreNotRetried) {
  const absl::Status wrong_ca = ConnectFailure(
      "UNKNOWN: ipv4:127.0.0.1:1: Ssl handshake failed: SSL_ERROR_SSL: error:0A000086:SSL "
      "routines::certificate verify failed");
  EXPECT_EQ(ClassifyTlsRefusal(wrong_ca), TlsRefusal::kUntrustedCertificate);
  EXPECT_FALSE(ShouldRetry(Retry::kAlways, wrong_ca));
  const absl::Status wrong_name =
      ConnectFailure("UNKNOWN: ipv4:127.0.0.1:1: Peer name nope is not in peer certificate");
  EXPECT_EQ(ClassifyTlsRefusal(wrong_name), TlsRefusal::kWrongName);
  EXPECT_FALSE(ShouldRetry(Retry::kAlways, wrong_name));
  const absl::Status plaintext_master = ConnectFailure(
      "UNKNOWN: ipv4:127.0.0.1:1: Ssl handshake failed: SSL_ERROR_SSL: error:0A00010B:SSL "
      "routines::wrong version number");
  EXPECT_EQ(ClassifyTlsRefusal(plaintext_master), TlsRefusal::kHandshakeRefused);
  EXPECT_FALSE(ShouldRetry(Retry::kAlways, plaintext_master));
}

TEST(ClassifyTlsRefusal, SlowLinksCutsAndClosedPortsAreStillRetried) {
  for (const absl::Status& s :
       {ConnectFailure("UNAVAILABLE: ipv4:127.0.0.1:1: Handshake read failed"),
        ConnectFailure("UNAVAILABLE: ipv4:127.0.0.1:1: Connection refused"),
        ConnectFailure("DEADLINE_EXCEEDED: ipv4:127.0.0.1:1: Deadline Exceeded"),
        ConnectFailure("UNKNOWN: ipv4:127.0.0.1:1: Ssl handshake failed: SSL_ERROR_SYSCALL"),
        // Nothing listens on port 1: the probe finds no TLS server.
        ConnectFailure("UNAVAILABLE: ipv4:127.0.0.1:1: Socket closed"),
        absl::UnavailableError("Socket closed")}) {
    EXPECT_EQ(ClassifyTlsRefusal(s), TlsRefusal::kNone) << s;
    EXPECT_TRUE(ShouldRetry(Retry::kAlways, s)) << s;
  }
  EXPECT_EQ(ClassifyTlsRefusal(absl::PermissionDeniedError("certificate verify failed")),
            TlsRefusal::kNone);
}

}  // namespace
// A master stopping says it did nothing: any call may go again (to the
// master that comes back); a master's other answers end the call.
TEST(ShouldRetry, AMasterShuttingDownDidNothingSoAnyCallGoesAgain) {
  const absl::Status stopping = absl::UnavailableError("master is shutting down");
  EXPECT_TRUE(MasterShuttingDown(stopping));
  EXPECT_FALSE(MasterAnswered(stopping));
  EXPECT_TRUE(ShouldRetry(Retry::kIfNotSent, stopping));
  EXPECT_TRUE(ShouldRetry(Retry::kAlways, stopping));
  EXPECT_FALSE(ShouldRetry(Retry::kNever, stopping));
  const absl::Status unknown =
      absl::UnavailableError("outcome unknown: the change was made but storing it failed");
  EXPECT_TRUE(MasterAnswered(unknown));
  EXPECT_FALSE(MasterShuttingDown(unknown));
  EXPECT_FALSE(ShouldRetry(Retry::kIfNotSent, unknown));
}

}  // namespace taskq
