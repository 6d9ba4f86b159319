// `taskq dlq list|show|requeue|purge QUEUE`: a queue's dead-letter set,
// the tasks given up after their max attempts (or failed permanently).
// Thread-safety: used from main's thread only.
#pragma once

#include <vector>

#include <CLI/CLI.hpp>

#include "client/cli_common.h"

namespace taskq::cli {

// Adds the `dlq` verb and its sub-verbs to `app`; appends their runners.
void AddDlqCommands(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs);

}  // namespace taskq::cli
