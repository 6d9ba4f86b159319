// DashboardApi: the web dashboard's JSON API, served under /api/ on the
// master's --http-listen (docs/DASHBOARD.md). Each endpoint is one RPC of
// taskq.v1.TaskQueue, made as the caller: the request's
// `Authorization: Bearer <token>` is forwarded as the call's metadata over
// an in-process channel to the master's own gRPC server, so the token check,
// the role table, the audit log, limits and refusals are exactly the gRPC
// API's: the service authenticates every call from its own metadata
// (TaskQueueService::Authenticate, AuthenticateCall of token_auth.h), on
// any transport, as it does under --insecure where gRPC runs no auth
// processor. The API adds no second token or role check.
//
//   GET  /api/ListQueues?page_size=&page_token=   GET /api/GetQueueStats?queue=
//   GET  /api/GetTask?task_id=                    GET /api/ListDead?queue=&limit=&after_id=
//   GET  /api/ListWorkers?limit=
//   POST /api/RequeueDead {"queue":..,"task_id":..}  POST /api/PurgeDead {"queue":..}
//
// Requests and answers are the proto3 JSON mapping of the RPC's messages
// (field names as in taskq.proto, 64-bit integers as strings, every field
// present); a GET's query parameters are the request's fields. ListDead
// answers leave out payloads (a page could be 16 MiB). Refusals: the gRPC
// code mapped to an HTTP status (HttpStatusOf) with
// {"code":"PERMISSION_DENIED","message":"..."}.
//
// Cross-site requests: actions are POSTs that must carry
// `Content-Type: application/json` (415 otherwise) and, when the browser
// sends an Origin, one naming this Host (403 otherwise); with the bearer
// token (never a cookie) a cross-site form or image cannot make one.
// Bodies above kMaxApiBodyBytes are refused (413).
//
// Thread-safety: Serve runs on the HTTP server's threads concurrently;
// SetChannel from any thread.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"
#include "common/sync.h"

namespace httplib {
struct Request;
struct Response;
}  // namespace httplib

namespace taskq {

inline constexpr size_t kMaxApiBodyBytes = 4096;

// The HTTP status for a gRPC code: 401, 403, 404, 400, 409, 429, 503, ...
int HttpStatusOf(grpc::StatusCode code);

class DashboardApi {
 public:
  explicit DashboardApi(absl::Duration deadline = absl::Seconds(10)) : deadline_(deadline) {}

  // The in-process channel to the master's gRPC server
  // (grpc::Server::InProcessChannel), once the server is up; until then
  // every call is answered 503.
  void SetChannel(std::shared_ptr<grpc::Channel> channel);

  // Answers a request whose path starts with /api/.
  void Serve(const httplib::Request& req, httplib::Response& res) const;

 private:
  std::shared_ptr<grpc::Channel> channel() const;

  const absl::Duration deadline_;
  mutable Mutex mu_;
  std::shared_ptr<grpc::Channel> channel_ ABSL_GUARDED_BY(mu_);
};

}  // namespace taskq
