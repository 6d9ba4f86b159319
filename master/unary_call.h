// UnaryCall<Req, Resp>: one unary call served on gRPC's raw (ByteBuffer)
// callback API. The master parses requests itself, after the token check,
// so that a malformed message is answered INVALID_ARGUMENT with a message
// (gRPC's typed handlers answer UNIMPLEMENTED with none) and nothing is
// parsed — or logged by libprotobuf — for a caller without a token.
//
// The call owns its request and response. Reply(status) serializes the
// response (when OK) and finishes the call; it must be called exactly once,
// from any thread. The object frees itself once both Reply and gRPC
// (OnDone) are done with it. Its stop token fires when the client cancels
// or its deadline passes, for handlers that wait (rt::ServeUnaryOn).
//
// Thread-safety: Reply and OnCancel/OnDone may run on different threads;
// the reference count and the stop source are thread-safe. The request
// and response belong to whoever is handling the call.
#pragma once

#include <atomic>
#include <memory>
#include <stop_token>

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include "master/revocations.h"
#include "master/rpc_metrics.h"

namespace taskq {

// Parses `in` as `msg`; false if it is not a valid message of that type.
bool ParseRequest(const grpc::ByteBuffer& in, google::protobuf::MessageLite* msg);
// Serializes `msg` into `out`.
grpc::Status SerializeResponse(const google::protobuf::MessageLite& msg, grpc::ByteBuffer* out);

template <typename Req, typename Resp>
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  // `method` (may be null) counts the call's status when it is answered.
  UnaryCall(grpc::CallbackServerContext* ctx, grpc::ByteBuffer* out,
            RpcMetrics::MethodCounts* method = nullptr)
      : ctx_(ctx), out_(out), method_(method) {}

  grpc::CallbackServerContext* context() const { return ctx_; }
  Req& request() { return request_; }
  Resp& response() { return response_; }
  std::stop_token token() const { return stop_.get_token(); }
  // What revoking the caller's credential stops (the same as a cancel).
  std::stop_source stop_source() const { return stop_; }
  // Set before the call starts waiting: once revoked, the call answers
  // with the ticket's status whatever it ended with.
  void set_revocation(std::unique_ptr<Revocations::Ticket> ticket) {
    revocation_ = std::move(ticket);
  }

  void Reply(grpc::Status status) {
    if (revocation_ && revocation_->revoked()) status = revocation_->status();
    if (status.ok()) status = SerializeResponse(response_, out_);
    if (method_ != nullptr) method_->Count(status.error_code());
    Finish(status);
    Unref();
  }
  // For rt::ServeUnaryOn.
  void FinishAndRelease(const grpc::Status& status) { Reply(status); }

  void OnCancel() override { stop_.request_stop(); }
  void OnDone() override { Unref(); }

 private:
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  grpc::CallbackServerContext* const ctx_;
  grpc::ByteBuffer* const out_;
  RpcMetrics::MethodCounts* const method_;
  Req request_;
  Resp response_;
  std::stop_source stop_;
  std::unique_ptr<Revocations::Ticket> revocation_;
  std::atomic<int> refs_{2};  // Reply + OnDone
};

}  // namespace taskq
