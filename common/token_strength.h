// How guessable a shared-secret token is: a conservative estimate of its
// entropy from its length and the characters it uses, and the master's
// start-up check that refuses tokens under 128 bits.
//
// The estimate cannot know how a token was made; it only catches tokens
// that are short, drawn from few characters or built from a repeated
// pattern ("abc", "aaaa...", "0123456789abcdef" twice). A random token from
// `openssl rand -hex 32`, `head -c 32 /dev/urandom | base64` or the one
// taskq-master creates passes with room to spare.
//
// Thread-safety: pure functions.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace taskq {

// Bits a token needs for the master to accept it.
inline constexpr double kMinTokenBits = 128;

// Entropy estimate in bits (see the header comment):
// - bits per character from the character classes used: only digits
//   log2(10); only hex digits 4; otherwise log2 of the sum of the classes
//   present (lower 26, upper 26, digits 10, base64's "+/=-_" 2, any other
//   punctuation 32);
// - a token that repeats a shorter string counts only that string;
// - a token with far fewer distinct characters than a random string of
//   its length would have (under a third of the expected number) counts
//   its measured per-character entropy instead.
double EstimateTokenBits(absl::string_view token);

// OK if `token` has at least kMinTokenBits by EstimateTokenBits and only
// printable ASCII (what a gRPC header can carry); otherwise
// FAILED_PRECONDITION saying why and how to make a good token (naming
// `path`, the token file).
absl::Status CheckTokenStrength(absl::string_view token, absl::string_view path);

}  // namespace taskq
