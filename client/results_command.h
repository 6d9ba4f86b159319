// `taskq results QUEUE`: reads the results of a job that `submit --wait`
// left behind (its client went away, or was interrupted), printing each
// task's result once, until every task replying to QUEUE has its result.
// `submit --wait --resume QUEUE` runs the same. PrintResult is how both
// print a result.
//
// Thread-safety: used from main's thread only (PrintResult from any).
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "client/cli_common.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq::cli {

struct ResultsArgs {
  std::string queue;
  double timeout = -1;  // < 0: wait as long as it takes
  bool show_ids = false;
  bool keep = false;    // keep a private _results.* queue once read
  bool json = false;    // every result as a JSON line on stdout
  bool quiet = false;   // no progress line on stderr
};

// A result message as `submit --wait` prints it: the payload on stdout
// (TASKID<TAB> first with show_ids), failures and cancellations on stderr;
// with `json`, every result as one JSON line on stdout (MessageJson).
void PrintResult(const v1::Task& result, bool show_ids, bool json);

// Reads and prints the results in args.queue until none is pending (exit
// 0, or 7 if any failed or was cancelled), or the timeout (exit 8). While
// it waits, a progress line (client/progress.h) counts the results read
// against those the queue still owes, when stderr is a terminal.
int RunResults(const GlobalOptions& globals, const ResultsArgs& args);

void AddResultsCommand(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs);

}  // namespace taskq::cli
