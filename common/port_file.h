// The port file a server writes once it listens (`--port-file`): its bound
// HOST:PORT and a newline, so scripts and tests that start it on port 0
// learn where it is. Written to a temporary name and renamed, so a reader
// never sees a half-written line.
//
// Thread-safety: stateless.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace taskq {

// True once `path` holds `address`.
bool WritePortFile(const std::string& path, absl::string_view address);

}  // namespace taskq
