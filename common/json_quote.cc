#include "common/json_quote.h"

#include "absl/strings/str_format.h"

namespace taskq {

size_t DecodeUtf8(absl::string_view s, uint32_t* code_point) {
  if (s.empty()) return 0;
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t lead = byte(0);
  if (lead < 0x80) {
    *code_point = lead;
    return 1;
  }
  size_t len;
  uint32_t cp;
  uint32_t min;
  if (lead >= 0xc2 && lead <= 0xdf) {
    len = 2, cp = lead & 0x1f, min = 0x80;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    len = 3, cp = lead & 0x0f, min = 0x800;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    len = 4, cp = lead & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() < len) return 0;
  for (size_t i = 1; i < len; ++i) {
    if ((byte(i) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (byte(i) & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  *code_point = cp;
  return len;
}

bool IsValidUtf8(absl::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    uint32_t cp;
    const size_t len = DecodeUtf8(bytes.substr(i), &cp);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

namespace {

// Code points written as \uNNNN although JSON allows them raw: they could
// steer a terminal (DEL, C1 controls, bidi overrides) or end a line in
// JavaScript (U+2028, U+2029).
bool EscapeAnyway(uint32_t cp) {
  return cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
         (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

}  // namespace

std::string JsonQuote(absl::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out.push_back('"');
  size_t i = 0;
  while (i < text.size()) {
    uint32_t cp = 0;
    size_t len = DecodeUtf8(text.substr(i), &cp);
    if (len == 0) {
      out += "\\ufffd";  // not UTF-8: the replacement character
      ++i;
      continue;
    }
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (cp < 0x20 || EscapeAnyway(cp)) {
          absl::StrAppendFormat(&out, "\\u%04x", cp);
        } else {
          out.append(text.data() + i, len);
        }
    }
    i += len;
  }
  out.push_back('"');
  return out;
}

}  // namespace taskq
