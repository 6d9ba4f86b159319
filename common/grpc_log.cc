#include "common/grpc_log.h"

#include <grpc/support/log.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace taskq {
namespace {

void GrpcLog(gpr_log_func_args* args) {
  LogLevel level = LogLevel::kError;
  if (args->severity == GPR_LOG_SEVERITY_DEBUG) level = LogLevel::kDebug;
  if (args->severity == GPR_LOG_SEVERITY_INFO) level = LogLevel::kInfo;
  if (!LogEnabled(level)) return;
  const char* file = args->file != nullptr ? args->file : "grpc";
  // "grpc/" + the base name without extension: gRPC's paths are its own.
  absl::string_view base(file);
  if (size_t slash = base.rfind('/'); slash != absl::string_view::npos) base.remove_prefix(slash + 1);
  if (size_t dot = base.rfind('.'); dot != absl::string_view::npos) base = base.substr(0, dot);
  const std::string component = absl::StrCat("grpc/", base);
  LogEvent(level, absl::StrCat("grpc: ", args->message != nullptr ? args->message : ""), {},
           LogSite{file, args->line, component.c_str()});
}

}  // namespace

void RouteGrpcLogs() { gpr_set_log_function(&GrpcLog); }

}  // namespace taskq
