// JsonWriter: builds one JSON text (an object, an array, or lines of them)
// for the CLI's --json output, with the escaping a script and a terminal
// both need:
// - strings are escaped per RFC 8259 (`"`, `\`, every control character
//   as \uNNNN or its short form), and also DEL, the C1 controls
//   U+0080..U+009F, U+2028/U+2029 and the bidirectional overrides as
//   \uNNNN, so the text is pure printable UTF-8 that cannot move a
//   terminal's cursor and is safe in JavaScript too;
// - bytes that are not valid UTF-8 in a string become U+FFFD (a string
//   field of a proto message is UTF-8 already; opaque bytes go through
//   Bytes(), which never loses a byte);
// - integers are written as JSON numbers.
//
// Usage:
//   JsonWriter w;
//   w.BeginObject().Key("id").Uint(17).Key("queue").String(q).EndObject();
//   PrintLine("", w.str());
//
// The writer places commas itself; it does not check that keys and values
// alternate (callers are a few fixed formatters, see client/json_format.h).
//
// Thread-safety: a JsonWriter is used by one thread; the free functions are
// pure.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/json_quote.h"

namespace taskq::cli {

// The string escaping (common/json_quote.h), shared with the JSON log lines.
using ::taskq::DecodeUtf8;
using ::taskq::IsValidUtf8;
using ::taskq::JsonQuote;

class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  JsonWriter& Key(absl::string_view key);
  JsonWriter& String(absl::string_view value);
  JsonWriter& Uint(uint64_t value);
  JsonWriter& Int(int64_t value);
  JsonWriter& Bool(bool value);
  // Opaque bytes under `key`: as a string if they are valid UTF-8, else
  // base64 (RFC 4648, with padding) under `key` + "_base64". Exactly one of
  // the two keys is written.
  JsonWriter& Bytes(absl::string_view key, absl::string_view value);
  // A JSON object of string keys and string values.
  template <typename Map>
  JsonWriter& StringMap(const Map& map) {
    BeginObject();
    for (const auto& [k, v] : map) Key(k).String(v);
    return EndObject();
  }

  const std::string& str() const { return out_; }

 private:
  // A comma before a value or key unless it is the first in its container
  // or follows a key.
  void Separate();

  std::string out_;
  // One entry per open container: whether it has an element yet.
  std::vector<bool> has_element_;
  bool after_key_ = false;
};

}  // namespace taskq::cli
