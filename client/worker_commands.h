// `taskq workers`: the workers connected to the master now (their Work
// streams): id, host, address, since, queues, credits and running tasks.
// Thread-safety: used from main's thread only.
#pragma once

#include <vector>

#include <CLI/CLI.hpp>

#include "client/cli_common.h"

namespace taskq::cli {

// Adds the `workers` verb to `app`; appends its runner.
void AddWorkerCommands(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs);

}  // namespace taskq::cli
