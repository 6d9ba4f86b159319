#include "common/cluster_redirect.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"

namespace taskq {
namespace {

std::optional<v1::QueueOwner> FromDetails(const std::string& details) {
  if (details.empty()) return std::nullopt;
  v1::RpcStatus status;
  if (!status.ParseFromString(details)) return std::nullopt;
  for (const google::protobuf::Any& any : status.details()) {
    v1::QueueOwner owner;
    if (any.Is<v1::QueueOwner>() && any.UnpackTo(&owner)) return owner;
  }
  return std::nullopt;
}

std::string Subject(const v1::QueueOwner& owner) {
  if (!owner.queue().empty()) return absl::StrCat("queue \"", owner.queue(), "\"");
  return absl::StrCat("task ", owner.task_id());
}

}  // namespace

absl::Status RedirectStatus(const v1::QueueOwner& owner) {
  absl::Status status =
      owner.moving()
          ? absl::UnavailableError(absl::StrCat(Subject(owner), " is moving to master \"",
                                                owner.master(), "\"; send the call again"))
      : owner.down()
          ? absl::UnavailableError(
                absl::StrCat(Subject(owner), ": owner ", owner.master(), " is down"))
          : absl::FailedPreconditionError(absl::StrCat(Subject(owner), " is served by master \"",
                                                       owner.master(), "\" at ", owner.address()));
  v1::RpcStatus details;
  details.set_code(static_cast<int>(status.code()));
  details.set_message(std::string(status.message()));
  details.add_details()->PackFrom(owner);
  status.SetPayload(kGrpcStatusDetailsUrl, absl::Cord(details.SerializeAsString()));
  return status;
}

std::optional<v1::QueueOwner> QueueOwnerOf(const absl::Status& status) {
  auto details = status.GetPayload(kGrpcStatusDetailsUrl);  // absl::optional
  if (!details.has_value()) return std::nullopt;
  return FromDetails(std::string(*details));
}

std::optional<v1::QueueOwner> QueueOwnerOf(const grpc::Status& status) {
  return FromDetails(status.error_details());
}

}  // namespace taskq
