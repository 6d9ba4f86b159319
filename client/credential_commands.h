// `taskq credential create|list|revoke`: credentials with roles (admin
// only). `create` prints a token once, or writes a join bundle
// (common/join_bundle.h) holding the master's addresses, its CA and the
// new credential; with --cert it makes a key here and has the master sign
// a client certificate for it (the private key never leaves this host).
//
// Thread-safety: used from main's thread only.
#pragma once

#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/cli_common.h"

namespace taskq::cli {

// Adds the `credential` verb and its sub-verbs to `app`; appends their runners.
void AddCredentialCommands(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs);

// --expires: whole numbers with units d, h, m or s, e.g. "30d", "12h",
// "90m", "1d12h". INVALID_ARGUMENT for anything else, zero, or more than
// kMaxCredentialLifetime.
inline constexpr absl::Duration kMaxCredentialLifetime = absl::Hours(24 * 365 * 10);
absl::StatusOr<absl::Duration> ParseExpires(absl::string_view text);

}  // namespace taskq::cli
