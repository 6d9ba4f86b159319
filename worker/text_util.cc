#include "worker/text_util.h"

namespace taskq {
namespace {

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 if the
// bytes there are not one (overlong forms, surrogates and values past
// U+10FFFF are not well-formed).
size_t SequenceLength(absl::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  }
  return len;
}

}  // namespace

std::string CleanUtf8(absl::string_view text, size_t max_bytes) {
  constexpr absl::string_view kEllipsis = "...";
  std::string out;
  out.reserve(text.size() < max_bytes ? text.size() : max_bytes);
  size_t i = 0;
  while (i < text.size()) {
    size_t len = SequenceLength(text, i);
    size_t take = len == 0 ? 1 : len;
    if (out.size() + take > max_bytes) break;
    if (len == 0) {
      out.push_back('?');
    } else {
      out.append(text.data() + i, len);
    }
    i += take;
  }
  if (i < text.size() && max_bytes >= kEllipsis.size()) {
    // Make room for the ellipsis, dropping whole characters: `out` is valid
    // UTF-8, so a character is its continuation bytes plus one lead byte.
    while (!out.empty() && out.size() + kEllipsis.size() > max_bytes) {
      while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80) {
        out.pop_back();
      }
      if (!out.empty()) out.pop_back();
    }
    out.append(kEllipsis.data(), kEllipsis.size());
  }
  return out;
}

}  // namespace taskq
