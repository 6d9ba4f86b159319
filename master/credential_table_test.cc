// CredentialTable: tokens authenticate by their id and secret, only a salted
// hash is stored, expiry and revocation are reported as such, the file is
// private and survives a reopen, and everything a client sends is bounded.
#include "master/credentials.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace taskq {
namespace {

class CredentialTableTest : public ::testing::Test {
 protected:
  CredentialTableTest() {
    char tmpl[] = "/tmp/taskq-credentials-XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/credentials";
  }
  ~CredentialTableTest() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<CredentialTable> Open(std::string master_token = "") {
    auto t = CredentialTable::Open(path_, std::move(master_token));
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *std::move(t) : nullptr;
  }

  static v1::CreateCredentialRequest Request(std::string name, v1::Role role,
                                             std::vector<std::string> queues = {"*"}) {
    v1::CreateCredentialRequest req;
    req.set_name(std::move(name));
    req.set_role(role);
    for (auto& q : queues) req.add_queues(q);
    return req;
  }

  std::string FileBytes() const {
    std::ifstream in(path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::string dir_, path_;
};

TEST_F(CredentialTableTest, TokenHasTheDocumentedFormatAndAuthenticates) {
  auto table = Open();
  auto made = table->Create(Request("w1", v1::ROLE_WORKER, {"tasks", "img.*"}), "admin", nullptr);
  ASSERT_TRUE(made.ok()) << made.status();
  const std::string& token = made->token();
  ASSERT_EQ(token.size(), 3 + 1 + 16 + 1 + 43u) << token;
  EXPECT_TRUE(absl::StartsWith(token, "tq1."));
  EXPECT_EQ(made->credential().kind(), v1::CREDENTIAL_KIND_TOKEN);
  EXPECT_EQ(made->credential().created_by(), "admin");

  auto who = table->AuthenticateToken(token);
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(who->name, "w1");
  EXPECT_EQ(who->role, v1::ROLE_WORKER);
  EXPECT_EQ(who->queues, (std::vector<std::string>{"tasks", "img.*"}));

  // A secret off by one character, or a made-up token, is unknown.
  std::string wrong = token;
  wrong.back() = wrong.back() == 'A' ? 'B' : 'A';
  EXPECT_EQ(table->AuthenticateToken(wrong).status().message(), "unknown token");
  EXPECT_EQ(table->AuthenticateToken("tq1.0000000000000000.x").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(table->AuthenticateToken("").status().code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(CredentialTableTest, StoresNoSecretAndTheFileIsPrivateAndSurvivesReopen) {
  std::string token;
  {
    auto table = Open();
    auto made = table->Create(Request("p1", v1::ROLE_PRODUCER), "admin", nullptr);
    ASSERT_TRUE(made.ok()) << made.status();
    token = made->token();
  }
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string secret = token.substr(token.rfind('.') + 1);
  EXPECT_FALSE(absl::StrContains(FileBytes(), secret));
  EXPECT_FALSE(std::filesystem::exists(path_ + ".tmp"));

  auto reopened = Open();
  auto who = reopened->AuthenticateToken(token);
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(who->name, "p1");
}

TEST_F(CredentialTableTest, RefusesAFileReadableByOthers) {
  { Open()->Create(Request("p1", v1::ROLE_PRODUCER), "admin", nullptr).IgnoreError(); }
  ASSERT_EQ(::chmod(path_.c_str(), 0644), 0);
  auto t = CredentialTable::Open(path_, "");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(t.status().message(), "chmod 600")) << t.status();
}

TEST_F(CredentialTableTest, ExpiredCredentialSaysWhen) {
  auto table = Open();
  int64_t now = 1'700'000'000'000;
  table->SetClockForTest([&now] { return now; });
  auto req = Request("w1", v1::ROLE_WORKER);
  req.set_expires_in_ms(60'000);
  auto made = table->Create(req, "admin", nullptr);
  ASSERT_TRUE(made.ok());
  EXPECT_TRUE(table->AuthenticateToken(made->token()).ok());
  now += 60'000;
  auto who = table->AuthenticateToken(made->token());
  EXPECT_EQ(who.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(who.status().message(), "credential \"w1\" expired at 2023-11-14T22:14:20Z");
  EXPECT_EQ(table->Find("w1").status().code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(CredentialTableTest, RevokedIsReportedAsRevokedAndListenersHear) {
  auto table = Open();
  std::vector<std::string> heard;
  table->OnRevoked([&heard](const std::string& name) { heard.push_back(name); });
  auto made = table->Create(Request("w1", v1::ROLE_WORKER), "admin", nullptr);
  ASSERT_TRUE(made.ok());
  ASSERT_TRUE(table->Revoke("w1").ok());
  EXPECT_EQ(heard, std::vector<std::string>{"w1"});
  EXPECT_EQ(table->AuthenticateToken(made->token()).status().message(),
            "credential \"w1\" was revoked");
  EXPECT_EQ(table->Find("w1").status().message(), "credential \"w1\" was revoked");
  // Listed only with include_revoked; the name stays taken.
  EXPECT_TRUE(table->List(false).empty());
  ASSERT_EQ(table->List(true).size(), 1u);
  EXPECT_NE(table->List(true)[0].revoked_unix_ms(), 0);
  EXPECT_EQ(table->Create(Request("w1", v1::ROLE_WORKER), "admin", nullptr).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(table->Revoke("nobody").code(), absl::StatusCode::kNotFound);
  // Survives a reopen.
  table.reset();
  EXPECT_EQ(Open()->AuthenticateToken(made->token()).status().message(),
            "credential \"w1\" was revoked");
}

TEST_F(CredentialTableTest, MasterTokenIsAnUnrevocableAdmin) {
  const std::string master = "the-master-token-0123456789abcdef0123456789";
  auto table = Open(master);
  auto who = table->AuthenticateToken(master);
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->name, "master-token");
  EXPECT_EQ(who->role, v1::ROLE_ADMIN);
  EXPECT_EQ(who->kind, v1::CREDENTIAL_KIND_MASTER_TOKEN);
  EXPECT_TRUE(table->Find("master-token").ok());
  EXPECT_EQ(table->Revoke("master-token").code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(table->List(false).size(), 1u);
  EXPECT_EQ(table->List(false)[0].kind(), v1::CREDENTIAL_KIND_MASTER_TOKEN);
  EXPECT_EQ(table->Create(Request("master-token", v1::ROLE_READER), "x", nullptr).status().code(),
            absl::StatusCode::kAlreadyExists);
  // Without a master token the name means nothing.
  auto none = CredentialTable::Open(dir_ + "/other", "");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE((*none)->AuthenticateToken("").ok());
  EXPECT_FALSE((*none)->Find("master-token").ok());
}

TEST_F(CredentialTableTest, ValidatesWhatTheClientSends) {
  auto table = Open();
  auto code = [&](const v1::CreateCredentialRequest& r) {
    return table->Create(r, "admin", nullptr).status().code();
  };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(code(Request("", v1::ROLE_WORKER)), kInvalid);
  EXPECT_EQ(code(Request(std::string(65, 'a'), v1::ROLE_WORKER)), kInvalid);
  EXPECT_EQ(code(Request("a b", v1::ROLE_WORKER)), kInvalid);
  EXPECT_EQ(code(Request("a/b", v1::ROLE_WORKER)), kInvalid);
  EXPECT_EQ(code(Request("w", v1::ROLE_UNSPECIFIED)), kInvalid);
  EXPECT_EQ(code(Request("w", static_cast<v1::Role>(42))), kInvalid);
  EXPECT_EQ(code(Request("w", v1::ROLE_WORKER, {})), kInvalid);
  EXPECT_EQ(code(Request("w", v1::ROLE_WORKER, {""})), kInvalid);
  EXPECT_EQ(code(Request("w", v1::ROLE_WORKER, {std::string(257, 'q')})), kInvalid);
  EXPECT_EQ(code(Request("w", v1::ROLE_WORKER, std::vector<std::string>(65, "q"))), kInvalid);
  EXPECT_EQ(code(Request("w", v1::ROLE_WORKER, {"a\nb"})), kInvalid);
  auto far = Request("w", v1::ROLE_WORKER);
  far.set_expires_in_ms(~uint64_t{0});
  EXPECT_EQ(code(far), kInvalid);
  // A certificate needs a CA.
  auto cert = Request("c", v1::ROLE_WORKER);
  cert.set_public_key_pem("-----BEGIN PUBLIC KEY-----\n");
  EXPECT_EQ(code(cert), absl::StatusCode::kFailedPrecondition);
  // Admins need no patterns; the longest name and the allowed characters work.
  EXPECT_TRUE(table->Create(Request("root", v1::ROLE_ADMIN, {}), "x", nullptr).ok());
  EXPECT_TRUE(table->Create(Request(std::string(64, 'a'), v1::ROLE_READER), "x", nullptr).ok());
  EXPECT_TRUE(table->Create(Request("A-z_0.9", v1::ROLE_READER), "x", nullptr).ok());
}

TEST_F(CredentialTableTest, AFailedWriteLeavesTheTableUnchanged) {
  auto t = CredentialTable::Open(dir_ + "/missing-dir/credentials", "");
  ASSERT_TRUE(t.ok());
  auto made = (*t)->Create(Request("w1", v1::ROLE_WORKER), "admin", nullptr);
  EXPECT_EQ(made.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE((*t)->List(true).empty());
  EXPECT_EQ((*t)->Find("w1").status().code(), absl::StatusCode::kUnauthenticated);
}

}  // namespace
}  // namespace taskq
