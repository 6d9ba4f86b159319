// Text helpers for strings the worker puts into proto3 `string` fields.
//
// Why: proto3 strings must be valid UTF-8, and a C++ peer refuses to parse a
// message that carries invalid UTF-8 in one. A handler's error (for example
// the stderr tail of a child process) is arbitrary bytes, so it is cleaned
// and capped before it goes on the Work stream; otherwise one bad error
// message would break the whole stream.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace taskq {

// Returns `text` with every byte that is not part of a well-formed UTF-8
// sequence replaced by '?', cut to at most `max_bytes` bytes at a character
// boundary (with "..." at the end when something was cut).
std::string CleanUtf8(absl::string_view text, size_t max_bytes);

}  // namespace taskq
