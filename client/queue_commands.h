// `taskq queue create|list|stats|update|shutdown|delete|purge`: queue administration.
// Thread-safety: used from main's thread only.
#pragma once

#include <vector>

#include <CLI/CLI.hpp>

#include "client/cli_common.h"

namespace taskq::cli {

// Adds the `queue` verb and its sub-verbs to `app`; appends their runners.
void AddQueueCommands(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs);

}  // namespace taskq::cli
