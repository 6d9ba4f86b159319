// Files that hold secrets or must never be seen half-written: credentials,
// join bundles, keys and certificates. Always mode 0600.
//
// Thread-safety: stateless; two writers of one path at once each leave a
// whole file (the last rename wins).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace taskq {

// Replaces (or creates) `path` with `content`, mode 0600, whole: a temp
// file beside it, fsync, rename, fsync of the directory. A reader (e.g. the
// master's certificate file watcher) sees the old file or the new one,
// never a mix; a crash leaves one of them. The error names the path and
// the system's reason (its code from errno).
absl::Status ReplacePrivateFile(const std::string& path, absl::string_view content);

// Creates `path` with `content`, mode 0600; fails (ALREADY_EXISTS) if it
// exists, so a key or certificate is never overwritten. A failed write
// removes the partial file.
absl::Status CreatePrivateFile(const std::string& path, absl::string_view content);

}  // namespace taskq
