#include "common/grpc_coro.h"

#include "common/log.h"

namespace taskq::rt::internal {

grpc::Status InternalErrorFromException(std::exception_ptr e) {
  std::string what = "non-standard exception";
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    what = ex.what();
  } catch (...) {
  }
  LogError("RPC handler threw: %s", what);
  return grpc::Status(grpc::StatusCode::INTERNAL,
                      "internal error in the master (logged); please report it");
}

}  // namespace taskq::rt::internal
