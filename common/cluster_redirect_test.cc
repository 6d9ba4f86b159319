#include "common/cluster_redirect.h"

#include <gtest/gtest.h>

#include "common/grpc_status.h"

namespace taskq {
namespace {

v1::QueueOwner Owner(bool down) {
  v1::QueueOwner owner;
  owner.set_queue("tasks");
  owner.set_master("m2");
  if (!down) owner.set_address("10.0.0.2:5000");
  owner.set_down(down);
  return owner;
}

TEST(ClusterRedirectTest, OwnerUpIsFailedPreconditionNamingItsAddress) {
  absl::Status s = RedirectStatus(Owner(false));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "queue \"tasks\" is served by master \"m2\" at 10.0.0.2:5000");
  std::optional<v1::QueueOwner> back = QueueOwnerOf(s);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->address(), "10.0.0.2:5000");
  EXPECT_FALSE(back->down());
}

TEST(ClusterRedirectTest, OwnerDownIsUnavailableNamingTheOwner) {
  absl::Status s = RedirectStatus(Owner(true));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s.message(), "queue \"tasks\": owner m2 is down");
  ASSERT_TRUE(QueueOwnerOf(s).has_value());
  EXPECT_TRUE(QueueOwnerOf(s)->down());
}

TEST(ClusterRedirectTest, SurvivesTheTripThroughGrpcStatus) {
  // Server side: absl -> grpc (the trailer); client side: grpc -> absl.
  grpc::Status wire = ToGrpcStatus(RedirectStatus(Owner(false)));
  EXPECT_EQ(wire.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  ASSERT_TRUE(QueueOwnerOf(wire).has_value());
  // google.rpc.Status's own fields are filled too, for other gRPC clients.
  v1::RpcStatus rpc_status;
  ASSERT_TRUE(rpc_status.ParseFromString(wire.error_details()));
  EXPECT_EQ(rpc_status.code(), static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION));
  EXPECT_EQ(rpc_status.details(0).type_url(), "type.googleapis.com/taskq.v1.QueueOwner");
  absl::Status back = ToAbslStatus(wire);
  ASSERT_TRUE(QueueOwnerOf(back).has_value());
  EXPECT_EQ(QueueOwnerOf(back)->master(), "m2");
}

TEST(ClusterRedirectTest, OrdinaryRefusalsNameNoOwner) {
  EXPECT_FALSE(QueueOwnerOf(absl::FailedPreconditionError("lease lost")).has_value());
  EXPECT_FALSE(QueueOwnerOf(grpc::Status(grpc::StatusCode::UNAVAILABLE, "x", "junk")).has_value());
}

TEST(ClusterRedirectTest, ByTaskIdNamesTheTask) {
  v1::QueueOwner owner;
  owner.set_task_id(42);
  owner.set_master("m3");
  owner.set_address("h:1");
  EXPECT_EQ(RedirectStatus(owner).message(), "task 42 is served by master \"m3\" at h:1");
}

}  // namespace
}  // namespace taskq
