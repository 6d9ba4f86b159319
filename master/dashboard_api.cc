#include "master/dashboard_api.h"

#include <chrono>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <httplib.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/auth.h"
#include "taskq/v1/taskq.grpc.pb.h"

namespace taskq {
namespace {

using Stub = v1::TaskQueue::Stub;
constexpr char kJson[] = "application/json; charset=utf-8";

google::protobuf::util::JsonPrintOptions PrintOptions() {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;    // as in taskq.proto and the CLI's --json
  options.always_print_primitive_fields = true;  // every field present, 0 or "" when unset
  return options;
}

// Makes one call: `json` (the request in proto3 JSON) parsed as Req, the
// answer (after `Trim`) printed into `out`.
using Caller = grpc::Status (*)(Stub& stub, grpc::ClientContext* ctx, const std::string& json,
                                std::string* out);

template <typename Resp>
void KeepAll(Resp*) {}

template <typename Req, typename Resp,
          grpc::Status (Stub::*Method)(grpc::ClientContext*, const Req&, Resp*),
          void (*Trim)(Resp*) = &KeepAll<Resp>>
grpc::Status Call(Stub& stub, grpc::ClientContext* ctx, const std::string& json,
                  std::string* out) {
  Req request;
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = false;  // a misspelt field is an error, not a default
  if (auto s = google::protobuf::util::JsonStringToMessage(json, &request, parse); !s.ok()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("not a valid ", Req::descriptor()->full_name(),
                                     " (fields as in proto/taskq/v1/taskq.proto): ",
                                     s.ToString()));
  }
  Resp response;
  grpc::Status s = (stub.*Method)(ctx, request, &response);
  if (!s.ok()) return s;
  Trim(&response);
  out->clear();
  if (auto printed = google::protobuf::util::MessageToJsonString(response, out, PrintOptions());
      !printed.ok()) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "cannot write the answer as JSON");
  }
  return grpc::Status::OK;
}

// A dead-letter page is for a table: payloads stay on the master (GetTask
// shows one task's).
void DropPayloads(v1::ListDeadResponse* response) {
  for (v1::Task& t : *response->mutable_tasks()) t.clear_payload();
}

struct Endpoint {
  const char* rpc;
  bool post;  // an action: POST with a JSON body; else GET with a query
  Caller call;
};

constexpr Endpoint kEndpoints[] = {
    {"ListQueues", false,
     &Call<v1::ListQueuesRequest, v1::ListQueuesResponse, &Stub::ListQueues>},
    {"GetQueueStats", false,
     &Call<v1::GetQueueStatsRequest, v1::QueueStats, &Stub::GetQueueStats>},
    {"ListWorkers", false,
     &Call<v1::ListWorkersRequest, v1::ListWorkersResponse, &Stub::ListWorkers>},
    {"GetTask", false, &Call<v1::GetTaskRequest, v1::Task, &Stub::GetTask>},
    {"ListDead", false,
     &Call<v1::ListDeadRequest, v1::ListDeadResponse, &Stub::ListDead, &DropPayloads>},
    {"RequeueDead", true,
     &Call<v1::RequeueDeadRequest, v1::RequeueDeadResponse, &Stub::RequeueDead>},
    {"PurgeDead", true, &Call<v1::PurgeDeadRequest, v1::PurgeDeadResponse, &Stub::PurgeDead>},
};

const Endpoint* FindEndpoint(absl::string_view rpc) {
  for (const Endpoint& e : kEndpoints) {
    if (rpc == e.rpc) return &e;
  }
  return nullptr;
}

// {"code":"PERMISSION_DENIED","message":"..."}, with its HTTP status.
void Refuse(httplib::Response& res, grpc::StatusCode code, const std::string& message) {
  google::protobuf::Struct body;
  (*body.mutable_fields())["code"].set_string_value(
      absl::StatusCodeToString(static_cast<absl::StatusCode>(code)));
  (*body.mutable_fields())["message"].set_string_value(message);
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(body, &json);
  res.status = HttpStatusOf(code);
  if (res.status == 401) res.set_header("WWW-Authenticate", "Bearer realm=\"taskq\"");
  res.set_content(json + "\n", kJson);
}

// A GET's query as a JSON object of strings (proto3 JSON reads numbers
// from strings too), so the RPC's own parser checks names and values.
absl::StatusOr<std::string> QueryAsJson(const httplib::Params& params) {
  google::protobuf::Struct object;
  for (const auto& [key, value] : params) {
    if (object.fields().contains(key)) {
      return absl::InvalidArgumentError(absl::StrCat("query parameter ", key, " given twice"));
    }
    (*object.mutable_fields())[key].set_string_value(value);
  }
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(object, &json).ok()) {
    return absl::InvalidArgumentError("query parameters that are not UTF-8");
  }
  return json;
}

// Whether a browser's Origin (if it sent one) is this server itself.
bool SameOrigin(const httplib::Request& req) {
  if (!req.has_header("Origin")) return true;  // not a browser, or a same-origin GET
  const std::string header = req.get_header_value("Origin");  // a copy: keep it alive
  absl::string_view origin = header;
  if (!absl::ConsumePrefix(&origin, "http://") && !absl::ConsumePrefix(&origin, "https://")) {
    return false;  // "null" (a sandboxed or file page) and anything else
  }
  return absl::EqualsIgnoreCase(origin, req.get_header_value("Host"));
}

bool PrintableAscii(absl::string_view s) {
  for (char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

}  // namespace

int HttpStatusOf(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return 200;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE: return 400;
    case grpc::StatusCode::UNAUTHENTICATED: return 401;
    case grpc::StatusCode::PERMISSION_DENIED: return 403;
    case grpc::StatusCode::NOT_FOUND: return 404;
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::ABORTED: return 409;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return 429;
    case grpc::StatusCode::UNIMPLEMENTED: return 501;
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::UNAVAILABLE: return 503;
    case grpc::StatusCode::DEADLINE_EXCEEDED: return 504;
    default: return 500;
  }
}

void DashboardApi::SetChannel(std::shared_ptr<grpc::Channel> channel) {
  MutexLock lock(&mu_);
  channel_ = std::move(channel);
}

std::shared_ptr<grpc::Channel> DashboardApi::channel() const {
  MutexLock lock(&mu_);
  return channel_;
}

void DashboardApi::Serve(const httplib::Request& req, httplib::Response& res) const {
  res.set_header("Cache-Control", "no-store");
  absl::string_view rpc = req.path;
  absl::ConsumePrefix(&rpc, "/api/");
  const Endpoint* endpoint = FindEndpoint(rpc);
  if (endpoint == nullptr) {
    return Refuse(res, grpc::StatusCode::NOT_FOUND,
                  absl::StrCat("no API endpoint ", req.path,
                               " (ListQueues, GetQueueStats, ListWorkers, GetTask, ListDead, "
                               "RequeueDead, PurgeDead; docs/DASHBOARD.md)"));
  }
  const char* method = endpoint->post ? "POST" : "GET";
  if (req.method != method && !(req.method == "HEAD" && !endpoint->post)) {
    res.set_header("Allow", method);
    Refuse(res, grpc::StatusCode::INVALID_ARGUMENT,
           absl::StrCat(req.path, " takes ", method, ", not ", req.method));
    res.status = 405;
    return;
  }
  std::string json;
  if (endpoint->post) {
    // What a cross-site form can send (urlencoded, multipart, text/plain)
    // is refused, and so is a page of another origin.
    const std::string type = req.get_header_value("Content-Type");
    if (absl::AsciiStrToLower(absl::StripAsciiWhitespace(type.substr(0, type.find(';')))) !=
        "application/json") {
      Refuse(res, grpc::StatusCode::INVALID_ARGUMENT,
             absl::StrCat(req.path, " takes a JSON body: send Content-Type: application/json"));
      res.status = 415;
      return;
    }
    if (!SameOrigin(req)) {
      return Refuse(res, grpc::StatusCode::PERMISSION_DENIED,
                    "cross-origin request refused: actions come only from the dashboard's own "
                    "page");
    }
    if (req.body.size() > kMaxApiBodyBytes) {
      Refuse(res, grpc::StatusCode::INVALID_ARGUMENT,
             absl::StrCat("request body over ", kMaxApiBodyBytes, " bytes"));
      res.status = 413;
      return;
    }
    json = req.body.empty() ? "{}" : req.body;
  } else {
    auto query = QueryAsJson(req.params);
    if (!query.ok()) {
      return Refuse(res, grpc::StatusCode::INVALID_ARGUMENT, std::string(query.status().message()));
    }
    json = *std::move(query);
  }
  std::shared_ptr<grpc::Channel> ch = channel();
  if (ch == nullptr) {
    return Refuse(res, grpc::StatusCode::UNAVAILABLE,
                  "the master is starting: its gRPC service is not up yet; try again");
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(deadline_));
  // Forwarded as it came; the service decides (a header that is not
  // printable ASCII cannot be gRPC metadata, and is no token anyway).
  if (req.has_header("Authorization")) {
    const std::string auth = req.get_header_value("Authorization");
    ctx.AddMetadata(kAuthMetadataKey, PrintableAscii(auth) ? auth : "unprintable");
  }
  auto stub = v1::TaskQueue::NewStub(ch);
  std::string out;
  grpc::Status s = endpoint->call(*stub, &ctx, json, &out);
  if (!s.ok()) return Refuse(res, s.error_code(), s.error_message());
  res.status = 200;
  res.set_content(out, kJson);
}

}  // namespace taskq
