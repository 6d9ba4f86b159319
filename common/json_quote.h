// JSON string quoting shared by the CLI's --json output (client/json_writer.h)
// and the JSON log lines (common/log.h):
// - strings are escaped per RFC 8259 (`"`, `\`, every control character as
//   \uNNNN or its short form), and also DEL, the C1 controls U+0080..U+009F,
//   U+2028/U+2029 and the bidirectional overrides as \uNNNN, so the text is
//   pure printable UTF-8 that cannot move a terminal's cursor and is safe in
//   JavaScript too;
// - bytes that are not valid UTF-8 become U+FFFD.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace taskq {

// Whether `bytes` is valid UTF-8 (no overlong forms, no surrogates, nothing
// above U+10FFFF).
bool IsValidUtf8(absl::string_view bytes);

// Length of the valid UTF-8 sequence at the start of `s` and its code
// point, or 0 if it does not start with one.
size_t DecodeUtf8(absl::string_view s, uint32_t* code_point);

// `text` as a JSON string literal, quotes included (escaped as described
// above).
std::string JsonQuote(absl::string_view text);

}  // namespace taskq
