// Reading a whole small file (certificates, keys, bundles, host lists)
// into memory.
//
// Thread-safety: stateless.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace taskq {

// The file's bytes. Fails with the path and the system's reason (its code
// from errno: NOT_FOUND, PERMISSION_DENIED, ...), or OUT_OF_RANGE beyond
// `max_bytes` (these files are small; a huge one is a wrong path).
absl::StatusOr<std::string> ReadFileToString(const std::string& path,
                                             size_t max_bytes = size_t{16} << 20);

}  // namespace taskq
