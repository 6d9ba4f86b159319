// `taskq put`, `get`, `join` and `task-done`: the seed's queue.put /
// queue.get / task_done / join, one task per command-line payload.
// Thread-safety: used from main's thread only.
#pragma once

#include <vector>

#include <CLI/CLI.hpp>

#include "client/cli_common.h"

namespace taskq::cli {

// Adds the verbs to `app`; appends their runners.
void AddPutGetCommands(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs);

}  // namespace taskq::cli
