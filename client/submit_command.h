// `taskq submit`: put one task per argument for a handler, and with --wait
// print each result as it arrives (the seed's task_master.py in one line:
// `taskq submit --queue tasks --handler square --wait 1 2 3`).
// Thread-safety: used from main's thread only.
#pragma once

#include <vector>

#include <CLI/CLI.hpp>

#include "client/cli_common.h"

namespace taskq::cli {

// Adds the verb to `app`; appends its runner.
void AddSubmitCommand(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs);

}  // namespace taskq::cli
