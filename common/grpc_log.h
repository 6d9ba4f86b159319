// Routes gRPC's own log lines (gpr_log: e.g. a failed bind, a transport
// error) into our log (common/log.h), so that with --log-format json every
// stderr line is a JSON object, and gRPC's lines are rate-limited per call
// site like ours. Their component is "grpc/" + the gRPC source file's base
// name ("grpc/chttp2_transport"), their message starts with "grpc: ".
// gRPC still decides what it logs (GRPC_VERBOSITY, default ERROR).
//
// Thread-safety: call once from main() before gRPC is used.
#pragma once

namespace taskq {

void RouteGrpcLogs();

}  // namespace taskq
