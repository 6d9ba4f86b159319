// Unit tests of the join bundle file (common/join_bundle.h): the round
// trip, the 0600 mode and atomic replacement, refusals (readable by others,
// too large, malformed, incomplete) that never echo the secret, and how a
// bundle fills ConnectOptions (explicit flags win) and picks a master from
// its fallback list (common/channel.h).
#include "common/join_bundle.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/auth.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "taskq/v1/taskq.grpc.pb.h"

namespace taskq {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kToken[] = "tq1.0123456789abcdef.c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I";

class JoinBundleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/join_bundle_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::system(absl::StrCat("rm -rf ", dir_).c_str()); }

  static v1::JoinBundle TokenBundle() {
    v1::JoinBundle b;
    b.add_master("10.0.0.5:5000");
    b.add_master("10.0.0.6:5000");
    b.set_ca_pem("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    b.set_credential("w1");
    b.set_token(kToken);
    return b;
  }
  void WriteRaw(const std::string& path, const std::string& text, mode_t mode) {
    std::ofstream(path) << text;
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
  }
  static mode_t Mode(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0);
    return st.st_mode & 07777;
  }

  std::string dir_;
};

TEST_F(JoinBundleTest, WriteThenReadGivesTheSameBundleInAPrivateFile) {
  const std::string path = dir_ + "/w1.join";
  ASSERT_TRUE(WriteJoinBundle(path, TokenBundle()).ok());
  EXPECT_EQ(Mode(path), 0600u);
  auto read = ReadJoinBundle(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->SerializeAsString(), TokenBundle().SerializeAsString());
}

TEST_F(JoinBundleTest, WriteReplacesAnOpenFileWholeAndLeavesNoTemporaryFile) {
  const std::string path = dir_ + "/w1.join";
  WriteRaw(path, "old contents", 0644);
  v1::JoinBundle cert = TokenBundle();
  cert.clear_token();
  cert.set_client_cert_pem("CERT");
  cert.set_client_key_pem("KEY");
  ASSERT_TRUE(WriteJoinBundle(path, cert).ok());
  EXPECT_EQ(Mode(path), 0600u);
  auto read = ReadJoinBundle(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->client_key_pem(), "KEY");
  EXPECT_EQ(std::system(absl::StrCat("ls ", dir_, " | grep -q tmp").c_str()) == 0, false);
}

TEST_F(JoinBundleTest, WriteRefusesAnIncompleteBundleAndWritesNothing) {
  const std::string path = dir_ + "/bad.join";
  v1::JoinBundle b = TokenBundle();
  b.clear_token();
  absl::Status s = WriteJoinBundle(path, b);
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
}

TEST_F(JoinBundleTest, ReadRefusesABundleOthersCanReadAndSaysHowToFixIt) {
  const std::string path = dir_ + "/w1.join";
  ASSERT_TRUE(WriteJoinBundle(path, TokenBundle()).ok());
  ASSERT_EQ(::chmod(path.c_str(), 0640), 0);
  auto read = ReadJoinBundle(path);
  EXPECT_TRUE(absl::IsFailedPrecondition(read.status())) << read.status();
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("chmod 600 " + path));
}

TEST_F(JoinBundleTest, ReadOfAMissingFileIsNotFound) {
  auto read = ReadJoinBundle(dir_ + "/none.join");
  EXPECT_TRUE(absl::IsNotFound(read.status())) << read.status();
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("none.join"));
}

TEST_F(JoinBundleTest, ReadRefusesAnOversizedFile) {
  const std::string path = dir_ + "/big.join";
  WriteRaw(path, std::string(kMaxJoinBundleBytes + 1, '#'), 0600);
  auto read = ReadJoinBundle(path);
  EXPECT_TRUE(absl::IsInvalidArgument(read.status())) << read.status();
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("larger than"));
}

TEST_F(JoinBundleTest, AMalformedBundleIsRefusedWithoutEchoingItsSecret) {
  const std::string path = dir_ + "/bad.join";
  // The secret pasted without its quotes.
  WriteRaw(path, "master: \"h:1\"\ntoken: c2VjcmV0LXNlY3JldC1zZWNyZXQ\n", 0600);
  auto read = ReadJoinBundle(path);
  EXPECT_TRUE(absl::IsInvalidArgument(read.status())) << read.status();
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("line 2"));
  EXPECT_THAT(std::string(read.status().message()), Not(HasSubstr("c2VjcmV0")));

  // ... or on a line of its own, where a field name belongs.
  WriteRaw(path, "master: \"h:1\"\nc2VjcmV0LXNlY3JldC1zZWNyZXQ: 1\n", 0600);
  read = ReadJoinBundle(path);
  EXPECT_TRUE(absl::IsInvalidArgument(read.status())) << read.status();
  EXPECT_THAT(std::string(read.status().message()), Not(HasSubstr("c2VjcmV0")));
  // A short typo is shown.
  WriteRaw(path, "mastr: \"h:1\"\n", 0600);
  EXPECT_THAT(std::string(ReadJoinBundle(path).status().message()), HasSubstr("\"mastr\""));
}

TEST_F(JoinBundleTest, ValidationNamesWhatIsMissing) {
  v1::JoinBundle b = TokenBundle();
  b.clear_master();
  EXPECT_THAT(std::string(ValidateJoinBundle(b).message()), HasSubstr("no master"));

  b = TokenBundle();
  b.clear_token();
  EXPECT_THAT(std::string(ValidateJoinBundle(b).message()), HasSubstr("no credential"));

  b.set_client_cert_pem("CERT");
  EXPECT_THAT(std::string(ValidateJoinBundle(b).message()), HasSubstr("without its key"));

  b = TokenBundle();
  b.set_token(absl::StrCat(kToken, " extra"));
  absl::Status s = ValidateJoinBundle(b);
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_THAT(std::string(s.message()), Not(HasSubstr("c2VjcmV0")));

  b = TokenBundle();
  b.add_master("");
  EXPECT_THAT(std::string(ValidateJoinBundle(b).message()), HasSubstr("invalid master"));
}

TEST_F(JoinBundleTest, ABundleFillsOnlyWhatTheFlagsLeftEmpty) {
  ConnectOptions empty;
  ApplyJoinBundle(TokenBundle(), &empty);
  EXPECT_TRUE(empty.tls);
  EXPECT_THAT(empty.masters, ::testing::ElementsAre("10.0.0.5:5000", "10.0.0.6:5000"));
  EXPECT_EQ(empty.token, kToken);
  EXPECT_EQ(empty.tls_ca_pem, TokenBundle().ca_pem());

  ConnectOptions flags;
  flags.master = "other:1";
  flags.token_file = "/some/token";
  flags.tls_ca_file = "/some/ca.pem";
  flags.tls_server_name = "name";
  ApplyJoinBundle(TokenBundle(), &flags);
  EXPECT_EQ(flags.master, "other:1");
  EXPECT_TRUE(flags.masters.empty());
  EXPECT_TRUE(flags.token.empty());  // the credential is the flag's, whole
  EXPECT_TRUE(flags.client_cert_pem.empty());
  EXPECT_TRUE(flags.tls_ca_pem.empty());
  EXPECT_EQ(flags.tls_server_name, "name");
}

TEST_F(JoinBundleTest, TheEnvironmentDoesNotOverrideABundle) {
  ::setenv("TASKQ_MASTER", "env-master:1", 1);
  ::setenv("TASKQ_TLS_CA", "/env/ca.pem", 1);
  ::setenv("TASKQ_TOKEN_FILE", "/env/token", 1);
  ConnectOptions options;
  ApplyJoinBundle(TokenBundle(), &options);
  ConnectOptions resolved = ResolveConnectOptions(options);
  ::unsetenv("TASKQ_MASTER");
  ::unsetenv("TASKQ_TLS_CA");
  ::unsetenv("TASKQ_TOKEN_FILE");
  EXPECT_EQ(resolved.master, "");
  EXPECT_EQ(resolved.masters.size(), 2u);
  EXPECT_EQ(resolved.tls_ca_file, "");
  EXPECT_EQ(resolved.token_file, "");
  EXPECT_EQ(resolved.token, kToken);
}

TEST_F(JoinBundleTest, WithoutABundleTheDefaultsStayAsBefore) {
  ::unsetenv("TASKQ_MASTER");
  ::unsetenv("TASKQ_TLS_CA");
  ConnectOptions resolved = ResolveConnectOptions({});
  EXPECT_EQ(resolved.master, kDefaultMaster);
  EXPECT_EQ(resolved.token_file, DefaultTokenPath());
  EXPECT_FALSE(resolved.tls);
}

// A port nobody listens on (bound, then closed: connecting is refused).
int ClosedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

TEST_F(JoinBundleTest, ConnectUsesTheFirstMasterThatAnswers) {
  grpc::ServerBuilder builder;
  v1::TaskQueue::Service service;  // every method unimplemented: only the connection counts
  builder.RegisterService(&service);
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  const std::string dead = absl::StrCat("127.0.0.1:", ClosedPort());
  const std::string live = absl::StrCat("127.0.0.1:", port);

  ConnectOptions options;
  options.masters = {dead, live};
  options.token = "inline-token";
  options.connect_timeout = absl::Seconds(10);
  const absl::Time start = absl::Now();
  auto conn = Connect(options);
  ASSERT_TRUE(conn.ok()) << conn.status();
  EXPECT_EQ(conn->master, live);
  EXPECT_EQ(conn->token, "inline-token");
  // The refused address is skipped at once, not after the connect timeout.
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));

  // None answers: the first one, for the calls' retrying to wait on.
  options.masters = {dead, absl::StrCat("127.0.0.1:", ClosedPort())};
  conn = Connect(options);
  ASSERT_TRUE(conn.ok()) << conn.status();
  EXPECT_EQ(conn->master, dead);
  server->Shutdown();
}

TEST_F(JoinBundleTest, ACertificateOnlyCredentialNeedsNoTokenFile) {
  ConnectOptions options;
  options.master = "127.0.0.1:1";
  options.client_cert_pem = "CERT";
  options.client_key_pem = "KEY";
  ::setenv("TASKQ_TOKEN_FILE", (dir_ + "/missing").c_str(), 1);
  auto conn = Connect(options);
  ::unsetenv("TASKQ_TOKEN_FILE");
  ASSERT_TRUE(conn.ok()) << conn.status();
  EXPECT_EQ(conn->token, "");
}

}  // namespace
}  // namespace taskq
