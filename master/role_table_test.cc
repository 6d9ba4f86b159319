// The role table: it covers every RPC of the service, admins may do
// everything, and refusals name the right and the credential.
#include "master/roles.h"

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "taskq/v1/taskq.grpc.pb.h"

namespace taskq {
namespace {

Principal Make(std::string name, v1::Role role, std::vector<std::string> queues) {
  Principal p;
  p.name = std::move(name);
  p.role = role;
  p.queues = std::move(queues);
  return p;
}

TEST(RoleTableTest, CoversExactlyTheServiceMethods) {
  const auto* service = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
      v1::TaskQueue::service_full_name());
  ASSERT_NE(service, nullptr);
  std::set<std::string> methods, rows;
  for (int i = 0; i < service->method_count(); ++i) methods.insert(service->method(i)->name());
  for (const RpcRule& r : RoleTable()) EXPECT_TRUE(rows.insert(r.rpc).second) << r.rpc;
  EXPECT_EQ(methods, rows);
  EXPECT_EQ(FindRule("NoSuchRpc"), nullptr);
}

TEST(RoleTableTest, AdminMayDoEverythingAndCredentialRpcsAreAdminOnly) {
  for (const RpcRule& r : RoleTable()) {
    EXPECT_EQ(r.admin, Access::kAny) << r.rpc;
    EXPECT_EQ(r.For(v1::ROLE_UNSPECIFIED), Access::kDenied) << r.rpc;
    if (absl::StrContains(r.rpc, "Credential")) {
      EXPECT_EQ(r.producer, Access::kDenied);
      EXPECT_EQ(r.worker, Access::kDenied);
      EXPECT_EQ(r.reader, Access::kDenied);
    }
  }
}

TEST(RoleTableTest, RefusalNamesTheRightAndTheCredential) {
  auto w = Make("w1", v1::ROLE_WORKER, {"tasks"});
  absl::Status s = AuthorizeCall(w, *FindRule("DeleteQueue"));
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), "credential \"w1\" (role worker) may not delete queues");
}

TEST(RoleTableTest, PatternsAreGlobsAndOwnedQueuesAreInScope) {
  auto p = Make("p1", v1::ROLE_PRODUCER, {"tasks", "img.*"});
  const RpcRule& put = *FindRule("Put");
  EXPECT_TRUE(Authorize(p, put, {{"tasks", ""}, {"img.big", ""}}).ok());
  absl::Status s = Authorize(p, put, {{"tasks", ""}, {"billing", ""}});
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), "credential \"p1\" may not touch queue \"billing\" (its queues: tasks, img.*)");
  // Its own reply queue is in scope whatever the patterns; another's is not.
  EXPECT_TRUE(Authorize(p, put, {{"tasks", ""}, {"_results.a", "p1"}}).ok());
  EXPECT_FALSE(Authorize(p, put, {{"tasks", ""}, {"_results.b", "p2"}}).ok());
  // '*' is every queue; globs do not treat '/' specially.
  EXPECT_TRUE(InScope(Make("r", v1::ROLE_READER, {"*"}), "anything", ""));
  EXPECT_TRUE(InScope(Make("r", v1::ROLE_READER, {"a*"}), "a/b", ""));
  EXPECT_FALSE(InScope(Make("r", v1::ROLE_READER, {"a?"}), "abc", ""));
}

TEST(RoleTableTest, ProducerReadsAndDeletesOnlyQueuesItCreated) {
  auto p = Make("p1", v1::ROLE_PRODUCER, {"*"});
  for (const char* rpc : {"Get", "DeleteQueue", "Ack"}) {
    EXPECT_TRUE(Authorize(p, *FindRule(rpc), {{"_results.a", "p1"}}).ok()) << rpc;
    absl::Status s = Authorize(p, *FindRule(rpc), {{"tasks", ""}});
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << rpc;
    EXPECT_TRUE(absl::StrContains(s.message(), "only on queues it created")) << s;
    EXPECT_FALSE(Authorize(p, *FindRule(rpc), {{"_results.b", "p2"}}).ok()) << rpc;
  }
}

TEST(RoleTableTest, ProducerCreatesOnlyResultQueues) {
  auto p = Make("p1", v1::ROLE_PRODUCER, {"*"});
  const RpcRule& create = *FindRule("CreateQueue");
  EXPECT_TRUE(Authorize(p, create, {{"_results.x", ""}}).ok());
  EXPECT_TRUE(Authorize(p, create, {{"_results.x", "p1"}}).ok());
  EXPECT_EQ(Authorize(p, create, {{"tasks", ""}}).message(),
            "credential \"p1\" (role producer) may create only _results.* queues, not \"tasks\"");
  EXPECT_TRUE(absl::StrContains(Authorize(p, create, {{"_results.x", "p2"}}).message(),
                                "belongs to another credential"));
}

TEST(RoleTableTest, MarkdownHasARowPerRpc) {
  std::string md = RoleTableMarkdown();
  for (const RpcRule& r : RoleTable()) {
    EXPECT_TRUE(absl::StrContains(md, absl::StrCat("| ", r.rpc, " |"))) << r.rpc;
  }
}

// docs/SECURITY.md shows the table the master enforces: regenerate it from
// RoleTableMarkdown() when a rule changes.
TEST(RoleTableTest, SecurityDocShowsThisTable) {
  std::ifstream in(std::string(TASKQ_SOURCE_DIR) + "/docs/SECURITY.md");
  ASSERT_TRUE(in) << "cannot read docs/SECURITY.md";
  std::stringstream doc;
  doc << in.rdbuf();
  EXPECT_TRUE(absl::StrContains(doc.str(), RoleTableMarkdown()))
      << "docs/SECURITY.md \"Roles\" is out of date; the table is now:\n"
      << RoleTableMarkdown();
}

}  // namespace
}  // namespace taskq
