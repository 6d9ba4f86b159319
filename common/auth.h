// Shared-secret authentication: token files, constant-time comparison and
// the `authorization: Bearer <token>` metadata every RPC carries.
//
// Tokens are secrets: never log them, never take them from argv.
// Thread-safety: all functions are stateless and safe from any thread.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace taskq {

inline constexpr char kAuthMetadataKey[] = "authorization";
inline constexpr char kBearerPrefix[] = "Bearer ";
// Tokens longer than this are refused before comparison.
inline constexpr size_t kMaxTokenBytes = 4096;

// $TASKQ_TOKEN_FILE if set, else $XDG_CONFIG_HOME/taskq/token, else
// ~/.config/taskq/token. Master and CLI on one host agree by default.
std::string DefaultTokenPath();

// Reads a token file (surrounding whitespace trimmed). Fails if the file is
// missing, empty, or readable by group/others (a leaked secret).
absl::StatusOr<std::string> LoadToken(const std::string& path);

// Like LoadToken, but when the file does not exist creates it (and its
// directory, mode 0700) with mode 0600 and a fresh random 256-bit token.
absl::StatusOr<std::string> LoadOrCreateToken(const std::string& path);

// The master's token: LoadOrCreateToken, then refused (FAILED_PRECONDITION,
// saying how to make a good one) if it is weak (common/token_strength.h).
// Workers and the CLI read their copy with LoadToken and do not judge it:
// a token the master accepts always works for them.
absl::StatusOr<std::string> LoadMasterToken(const std::string& path);

// Compares in time that depends only on the lengths, not on where the
// strings differ.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// "Bearer <token>".
std::string BearerValue(absl::string_view token);

// True if `header_value` is "Bearer <expected>" (constant-time).
bool BearerMatches(absl::string_view header_value, absl::string_view expected);

}  // namespace taskq
