#include "client/results_command.h"

#include <cstdio>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/interrupt.h"
#include "client/json_format.h"
#include "client/progress.h"
#include "common/result_reader.h"

namespace taskq::cli {
namespace {

// Every task that replies to the queue has delivered its result, and every
// result in it has been read and acknowledged.
bool AllIn(const v1::QueueStats& stats) {
  return stats.pending_results() == 0 && stats.ready() == 0 && stats.leased() == 0 &&
         stats.delayed() == 0;
}

// Results the queue holds or still owes: with those read (and
// acknowledged) so far, the job's size for the progress line.
size_t ResultsToCome(const v1::QueueStats& stats) {
  return stats.pending_results() + stats.ready() + stats.leased() + stats.delayed();
}

}  // namespace

void PrintResult(const v1::Task& result, bool show_ids, bool json) {
  if (json) {
    PrintLine("", MessageJson(result));
    return;
  }
  if (result.outcome() == v1::OUTCOME_FAILED) {
    absl::string_view error = absl::StripTrailingAsciiWhitespace(result.error());
    WriteText(stderr, absl::StrCat("task ", result.result_of(), " failed: ", error, "\n"));
    return;
  }
  if (result.outcome() == v1::OUTCOME_CANCELLED) {
    absl::string_view why = absl::StripTrailingAsciiWhitespace(result.error());
    WriteText(stderr, absl::StrCat("task ", result.result_of(), " cancelled",
                                   why.empty() ? "" : ": ", why, "\n"));
    return;
  }
  PrintPayload(show_ids ? absl::StrCat(result.result_of(), "\t") : "", result.payload());
}

int RunResults(const GlobalOptions& globals, const ResultsArgs& args) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  const absl::Time deadline = args.timeout < 0 ? absl::InfiniteFuture()
                                               : absl::Now() + SecondsToDuration(args.timeout);
  CallCanceller canceller;
  SetInterruptCleanup([&] { canceller.Cancel(); });
  // An unknown queue is an error, not "nothing pending": a typo must not
  // look like a finished job.
  auto first = client->Stats(args.queue);
  if (!first.ok()) {
    ClearInterruptCleanup();
    return ReportError(first.status(), CallKind::kAdmin, globals);
  }
  ResultReader reader(client.get(), args.queue, {});
  ProgressLine progress(ResultsToCome(*first), ShouldShowProgress(args.json, args.quiet));
  SetInterruptCleanup([&] {
    progress.Finish();
    canceller.Cancel();
  });
  size_t failed = 0;
  for (;;) {
    if (canceller.cancelled()) {
      ClearInterruptCleanup();
      return kExitInterrupted;
    }
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      ClearInterruptCleanup();
      progress.Finish();
      reader.Flush().IgnoreError();
      PrintError(absl::StrCat("timed out waiting for the results in ", args.queue, " (",
                              reader.delivered(), " read)"));
      return kExitTimedOut;
    }
    auto got = reader.Poll(std::min(absl::Seconds(1), deadline - now), &canceller);
    if (got.ok() && !got->empty()) {
      for (const ResultReader::Result& r : *got) {
        const bool bad = r.message.outcome() == v1::OUTCOME_FAILED ||
                         r.message.outcome() == v1::OUTCOME_CANCELLED;
        progress.Print(bad ? ProgressLine::Count::kFailed : ProgressLine::Count::kResult,
                       [&] { PrintResult(r.message, args.show_ids, args.json); });
        if (bad) ++failed;
        reader.Ack(r.lease);
      }
      continue;
    }
    if (!got.ok() && !absl::IsDeadlineExceeded(got.status()) &&
        !absl::IsUnavailable(got.status()) && !absl::IsCancelled(got.status())) {
      ClearInterruptCleanup();
      progress.Finish();
      return ReportError(got.status(), CallKind::kGet, globals);
    }
    // Nothing came: acknowledge what was printed, then see whether the job
    // is over.
    if (!reader.Flush().ok()) continue;
    auto stats = client->Stats(args.queue);
    if (stats.ok() && AllIn(*stats)) break;
    if (stats.ok()) progress.SetTotal(reader.delivered() + ResultsToCome(*stats));
    if (!stats.ok() && absl::IsNotFound(stats.status())) break;  // expired or deleted meanwhile
  }
  ClearInterruptCleanup();
  progress.AllIn();
  progress.Finish();
  if (!args.keep && absl::StartsWith(args.queue, "_results.")) {
    client->DeleteQueue(args.queue).IgnoreError();
  }
  if (failed > 0) {
    std::fprintf(stderr, "taskq: %zu of %zu tasks failed or were cancelled\n", failed,
                 reader.delivered());
    return kExitTaskFailed;
  }
  return kExitOk;
}

void AddResultsCommand(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs) {
  auto args = std::make_shared<ResultsArgs>();
  CLI::App* r = AddVerb(
      &app, "results",
      "Read the results of a job from its reply queue: what `submit --wait` left behind when "
      "it was interrupted or lost the master (it prints the queue's name). Prints each task's "
      "result once, as `submit --wait` does, until every task replying to QUEUE has its "
      "result; then deletes a private _results.* queue. Exits 0, 7 if any task failed or was "
      "cancelled, 8 if --timeout ran out.\n"
      "Example: taskq results _results.4f1c2a9b0e7d3c65");
  r->add_option("QUEUE", args->queue, "The reply queue")->required();
  r->add_option("--timeout", args->timeout, "Give up after this many seconds (exit 8)")
      ->check(CLI::NonNegativeNumber)
      ->type_name("SECONDS");
  r->add_flag("--show-ids", args->show_ids, "Print TASKID<TAB>RESULT");
  r->add_flag("--json", args->json,
              "Print every result, failed and cancelled ones too, as one JSON object per "
              "line on stdout (JSON lines; docs/CLI.md, JSON output)");
  r->add_flag("--keep", args->keep, "Keep a private _results.* queue after reading it");
  r->add_flag("--quiet", args->quiet,
              "No progress line on stderr (it is shown only when stderr is a terminal, and "
              "never with --json)");
  verbs->push_back({r, [globals, args] { return RunResults(*globals, *args); }});
}

}  // namespace taskq::cli
