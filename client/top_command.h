// `taskq top`: a live view of the master's queues (depth, rates) and
// connected workers, redrawn in place on a terminal until `q` or Ctrl-C;
// on a pipe, one plain block of lines per refresh (docs/CLI.md, top).
// The view's text comes from client/top_model.h, the terminal handling
// from client/top_terminal.h.
//
// Thread-safety: used from main's thread only.
#pragma once

#include <vector>

#include <CLI/CLI.hpp>

#include "client/cli_common.h"

namespace taskq::cli {

void AddTopCommand(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs);

}  // namespace taskq::cli
