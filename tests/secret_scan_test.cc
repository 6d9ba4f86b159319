// The secret scan every harness cluster runs at shutdown
// (tests/harness_secret_scan.h) finds what it must: a token or private key
// in a log is reported; the same in a CLI's stdout is not.
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/harness.h"
#include "tests/harness_secret_scan.h"

namespace taskq::testing {
namespace {

constexpr char kCredentialToken[] =
    "tq1.0123456789abcdef.AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde";
constexpr char kKeyLine[] = "MHcCAQEEIIr0bGx4S1gHcH0e4Jz1m9x7d3bQ3Zp2a8U1q0yH8rV9oAoGCCqGSM49";

void Write(const std::string& path, const std::string& text) {
  ASSERT_TRUE(WriteFile(path, text, 0600).ok()) << path;
}

TEST(SecretScan, FindsTokensAndKeysInLogsButNotInCliOutput) {
  TempDir dir;
  Write(dir.path() + "/token", "master-token-0123456789abcdefghij\n");
  Write(dir.path() + "/cli-1.out", absl::StrCat("token: ", kCredentialToken, "\n"));
  Write(dir.path() + "/w1.join",
        absl::StrCat("client_key_pem: \"-----BEGIN PRIVATE KEY-----\\n", kKeyLine,
                     "\\n-----END PRIVATE KEY-----\\n\"\n"));
  Write(dir.path() + "/master.err", "INFO serving\n");
  Write(dir.path() + "/worker-1.err", "INFO connected\n");
  EXPECT_TRUE(FindSecretsInLogs(dir.path()).empty());

  Write(dir.path() + "/master.err",
        absl::StrCat("INFO token master-token-0123456789abcdefghij\n"));
  Write(dir.path() + "/worker-1.err", absl::StrCat("ERROR ", kCredentialToken, "\n"));
  std::filesystem::create_directory(dir.path() + "/data");
  Write(dir.path() + "/data/audit.log", absl::StrCat("key ", kKeyLine, "\n"));
  auto leaks = FindSecretsInLogs(dir.path());
  ASSERT_EQ(leaks.size(), 3u);
}

}  // namespace
}  // namespace taskq::testing
