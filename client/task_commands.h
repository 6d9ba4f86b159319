// `taskq status`, `cancel`, and the lease verbs `complete`, `fail` and
// `release` for consumers that lease tasks with `taskq get --lease`:
// everything that addresses one task by its id.
// Thread-safety: used from main's thread only.
#pragma once

#include <vector>

#include <CLI/CLI.hpp>

#include "client/cli_common.h"

namespace taskq::cli {

// Adds the verbs to `app`; appends their runners.
void AddTaskCommands(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs);

}  // namespace taskq::cli
