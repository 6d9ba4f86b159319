#include "master/unary_call.h"

#include <grpcpp/impl/codegen/proto_utils.h>

namespace taskq {

bool ParseRequest(const grpc::ByteBuffer& in, google::protobuf::MessageLite* msg) {
  grpc::ByteBuffer copy(in);  // shares the slices; the reader needs a mutable one
  grpc::ProtoBufferReader reader(&copy);
  if (!reader.status().ok()) return false;
  return msg->ParseFromZeroCopyStream(&reader);
}

grpc::Status SerializeResponse(const google::protobuf::MessageLite& msg, grpc::ByteBuffer* out) {
  bool own_buffer;
  return grpc::GenericSerialize<grpc::ProtoBufferWriter, google::protobuf::MessageLite>(
      msg, out, &own_buffer);
}

}  // namespace taskq
