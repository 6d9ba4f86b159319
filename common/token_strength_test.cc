#include "common/token_strength.h"

#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace taskq {
namespace {

TEST(TokenStrength, RefusesShortTokens) {
  absl::Status s = CheckTokenStrength("abc", "/etc/taskq/token");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(s.message(), "weak token")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "/etc/taskq/token")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "openssl rand -hex 32")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "head -c 32 /dev/urandom | base64")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "taskq-master creates one")) << s;
  EXPECT_FALSE(CheckTokenStrength("this-is-not-the-token", "t").ok());
  EXPECT_FALSE(CheckTokenStrength("correct horse battery", "t").ok());
  // 31 hex digits: 124 bits.
  EXPECT_FALSE(CheckTokenStrength("3f9a1c07be5d4e2a8c6b0f1d7e3a952", "t").ok());
  // 40 decimal digits: 133 bits; 38: 126.
  EXPECT_TRUE(CheckTokenStrength("8203941675021937465820193847560192837465", "t").ok());
  EXPECT_FALSE(CheckTokenStrength("82039416750219374658201938475601928374", "t").ok());
}

TEST(TokenStrength, AcceptsRandomTokensOfTheRecommendedForms) {
  // openssl rand -hex 16 / -hex 32
  EXPECT_TRUE(CheckTokenStrength("3f9a1c07be5d4e2a8c6b0f1d7e3a9520", "t").ok());
  EXPECT_TRUE(CheckTokenStrength(
                  "c1d95e0f7a3b8264d0e9f1a7b35c82e46f0a9d1b7c3e5f2804a6b9c1d3e7f5a2", "t")
                  .ok());
  // head -c 16 /dev/urandom | base64 (22 characters and padding), and 32 bytes.
  EXPECT_TRUE(CheckTokenStrength("q8Zr3Kx0Vb1Lw9Tn2Yc4Pg==", "t").ok());
  EXPECT_TRUE(CheckTokenStrength("N2v+0xQ7r/Ks1bWc9LmZ3eTgHy8uJpA4fDo6iR5kXlE=", "t").ok());
  // URL-safe base64 and mixed alphanumerics of 22+.
  EXPECT_TRUE(CheckTokenStrength("Xq3_Lp9-Wm2zRt7Yk5Nb8v", "t").ok());
}

TEST(TokenStrength, RefusesLowDiversityAndRepeatedPatterns) {
  EXPECT_LT(EstimateTokenBits(std::string(200, 'a')), 8);
  EXPECT_FALSE(CheckTokenStrength(std::string(200, 'a'), "t").ok());
  EXPECT_FALSE(CheckTokenStrength(std::string(64, 'z'), "t").ok());
  EXPECT_FALSE(CheckTokenStrength(std::string(199, 'q') + "r", "t").ok());
  // A pattern repeated: only one copy counts.
  EXPECT_FALSE(CheckTokenStrength("0123456789abcdef0123456789abcdef", "t").ok());
  EXPECT_FALSE(CheckTokenStrength("passwordpasswordpasswordpasswordpassword", "t").ok());
  std::string abab;
  for (int i = 0; i < 100; ++i) abab += "ab";
  EXPECT_FALSE(CheckTokenStrength(abab, "t").ok());
}

TEST(TokenStrength, RefusesCharactersAGrpcHeaderCannotCarry) {
  std::string token = "3f9a1c07be5d4e2a8c6b0f1d7e3a9520";
  token[5] = '\x01';
  absl::Status s = CheckTokenStrength(token, "t");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "printable ASCII")) << s;
  EXPECT_FALSE(CheckTokenStrength("3f9a1c07be5d4e2a8c6b0f1d7e3a9520\xc3\xa9", "t").ok());
}

TEST(TokenStrength, EstimatesByCharacterClass) {
  EXPECT_NEAR(EstimateTokenBits("3f9a1c07be5d4e2a8c6b0f1d7e3a9520"), 128, 1e-9);
  EXPECT_NEAR(EstimateTokenBits("Xq3_Lp9-Wm2zRt7Yk5Nb8v"), 22 * 6, 1e-9);
  EXPECT_EQ(EstimateTokenBits(""), 0);
}

}  // namespace
}  // namespace taskq
