// `taskq completion bash`: prints a bash completion script for taskq,
// generated from the CLI's own verb and option tables, so it never lists a
// verb or flag the binary does not have.
//
// The script completes verbs and sub-verbs, each verb's flags (and the
// global ones), the choices of flags that have a fixed set (--kind, --role),
// file names for FILE/PATH options, and queue names where a queue is
// expected (QUEUE arguments, --queue, --reply-to, --dead-letter): those it
// asks the master for with `taskq queue list` (passing on the connection
// flags of the line being completed; at most a 2 s connect attempt and no
// retry, so an unreachable master only means no queue names).
//
// Thread-safety: used from main's thread only.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "client/cli_common.h"

namespace taskq::cli {

// The script for `root` (the whole taskq command tree).
std::string BashCompletionScript(const CLI::App& root);

// Registers `completion bash`; `root` must outlive the verbs' runs.
void AddCompletionCommand(CLI::App& root, std::vector<Verb>* verbs);

}  // namespace taskq::cli
