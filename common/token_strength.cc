#include "common/token_strength.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace taskq {
namespace {

bool IsBase64Symbol(char c) {
  return c == '+' || c == '/' || c == '=' || c == '-' || c == '_';
}

double BitsPerChar(absl::string_view token) {
  bool lower = false, upper = false, digit = false, base64_symbol = false, other = false;
  bool all_hex = true;
  for (char c : token) {
    if (absl::ascii_islower(c)) {
      lower = true;
    } else if (absl::ascii_isupper(c)) {
      upper = true;
    } else if (absl::ascii_isdigit(c)) {
      digit = true;
    } else if (IsBase64Symbol(c)) {
      base64_symbol = true;
    } else {
      other = true;
    }
    all_hex = all_hex && absl::ascii_isxdigit(c);
  }
  if (digit && !lower && !upper && !base64_symbol && !other) return std::log2(10.0);
  if (all_hex) return 4;
  int alphabet = (lower ? 26 : 0) + (upper ? 26 : 0) + (digit ? 10 : 0) +
                 (base64_symbol ? 2 : 0) + (other ? 32 : 0);
  return std::log2(static_cast<double>(std::max(alphabet, 2)));
}

// Length of the shortest string whose repetition (the last copy possibly
// cut short) is `s`: the KMP failure function of the whole string.
size_t ShortestPeriod(absl::string_view s) {
  if (s.empty()) return 0;
  std::vector<size_t> fail(s.size(), 0);
  for (size_t i = 1, k = 0; i < s.size(); ++i) {
    while (k > 0 && s[i] != s[k]) k = fail[k - 1];
    if (s[i] == s[k]) ++k;
    fail[i] = k;
  }
  return s.size() - fail.back();
}

}  // namespace

double EstimateTokenBits(absl::string_view token) {
  if (token.empty()) return 0;
  const double per_char = BitsPerChar(token);
  const size_t period = ShortestPeriod(token);
  double bits = static_cast<double>(period) * per_char;

  std::array<size_t, 256> counts{};
  for (char c : token) ++counts[static_cast<unsigned char>(c)];
  const double distinct =
      static_cast<double>(std::count_if(counts.begin(), counts.end(), [](size_t n) { return n > 0; }));
  // How many distinct characters a random string of this length over this
  // alphabet has on average. A random token of a length that passes falls
  // under a third of it with a probability below 1e-15 (32 hex digits: at
  // most 4 distinct of the expected 14).
  const double alphabet = std::exp2(per_char);
  const double n = static_cast<double>(token.size());
  const double expected_distinct = alphabet * (1 - std::pow(1 - 1 / alphabet, n));
  if (distinct < expected_distinct / 3) {
    double measured = 0;  // empirical Shannon entropy per character
    for (size_t count : counts) {
      if (count == 0) continue;
      const double p = static_cast<double>(count) / n;
      measured -= p * std::log2(p);
    }
    bits = std::min(bits, measured * n);
  }
  return bits;
}

absl::Status CheckTokenStrength(absl::string_view token, absl::string_view path) {
  const std::string how = absl::StrCat(
      "Make a random one, e.g. `openssl rand -hex 32 > ", path, "` or `head -c 32 /dev/urandom | base64 > ",
      path, "` (then chmod 600 ", path, "), or remove the file and taskq-master creates one; "
      "then copy it to the workers and clients");
  for (char c : token) {
    if (c < 0x20 || c > 0x7e) {
      return absl::FailedPreconditionError(absl::StrCat(
          "token file ", path,
          " holds a character that cannot be sent in a gRPC header (only printable ASCII "
          "can). ",
          how));
    }
  }
  const double bits = EstimateTokenBits(token);
  if (bits < kMinTokenBits) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "token file %s holds a weak token (about %.0f bits of entropy by its length and "
        "characters; at least %.0f are needed, e.g. 32 hex digits or 22 base64 characters of "
        "random data). %s",
        path, bits, kMinTokenBits, how));
  }
  return absl::OkStatus();
}

}  // namespace taskq
