// `taskq cluster status`: the masters of a cluster (docs/CLUSTER.md) —
// name, address, up, node number, queue count — and each master's queues
// with their depth and workers; a down master is shown as down.
//
// Thread-safety: used from main's thread only.
#pragma once

#include <vector>

#include <CLI/CLI.hpp>

#include "client/cli_common.h"

namespace taskq::cli {

// Adds the `cluster` verb group to `app`; appends its runners.
void AddClusterCommands(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs);

}  // namespace taskq::cli
