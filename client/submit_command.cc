#include "client/submit_command.h"

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/interrupt.h"
#include "client/progress.h"
#include "client/results_command.h"
#include "client/schedule_flags.h"
#include "common/result_waiter.h"

namespace taskq::cli {
namespace {

struct SubmitArgs {
  std::string queue;
  std::string handler;
  std::string reply_to;
  bool wait = false;
  double wait_timeout = -1;  // < 0: not given
  int32_t priority = 0;
  std::vector<std::string> handler_args;
  std::vector<std::string> headers;
  bool show_ids = false;
  bool json = false;
  bool quiet = false;  // no progress line
  std::vector<std::string> payloads;
  ScheduleFlags schedule;
  std::string resume;  // --resume JOB: read JOB's results instead
};

// Without --wait: put and print the ids.
int SubmitNoWait(const GlobalOptions& globals, Client& client, const SubmitArgs& args,
                 std::vector<v1::TaskSpec> tasks) {
  PutOptions options;
  options.max_batch = PutBatchLimit(client, args.queue);
  const std::vector<std::string> keys = DedupKeys(tasks);
  AddRetryDedupKeys(tasks, "submit");
  auto receipt = client.PutWithReceipt(args.queue, std::move(tasks), options);
  if (!receipt.ok()) return ReportError(receipt.status(), CallKind::kPut, globals);
  PrintIds(receipt->ids);
  ReportExisting(*receipt, keys);
  return kExitOk;
}

void PrintToStderr(const std::string& line) { WriteText(stderr, line); }

int SubmitAndWaitForResults(const GlobalOptions& globals, Client& client, const SubmitArgs& args,
                            std::vector<v1::TaskSpec> tasks) {
  SubmitOptions options;
  options.queue = args.queue;
  options.reply_to = args.reply_to;
  if (args.wait_timeout >= 0) options.timeout = SecondsToDuration(args.wait_timeout);
  // A cleanup call must not hold up Ctrl-C or an error exit for long.
  std::unique_ptr<Client> quick = client.WithOptions({.call_timeout = absl::Seconds(5)});

  const bool private_queue = options.reply_to.empty();
  if (private_queue) options.reply_to = RandomResultQueueName();
  // Set by this thread, read by the signal thread on Ctrl-C.
  std::atomic<bool> created{false};
  auto delete_private_queue = [&] {
    if (!created.exchange(false)) return;
    if (auto s = quick->DeleteQueue(options.reply_to); !s.ok()) {
      PrintError(absl::StrCat("could not delete results queue ", options.reply_to, ": ",
                              s.message()));
    }
  };
  // Leaving early (Ctrl-C, timeout, error): the results still to come keep
  // arriving in the queue, which the master expires once unread for its
  // --results-ttl; say how to read them.
  auto keep_private_queue = [&] {
    if (!created.exchange(false)) return;
    PrintError(absl::StrCat("results still to come go to queue ", options.reply_to,
                            ": read them with `taskq results ", options.reply_to, "`"));
  };

  // On stderr while it waits, if that is a terminal; every line printed
  // meanwhile goes through it.
  ProgressLine progress(tasks.size(), ShouldShowProgress(args.json, args.quiet));

  // A payload deduplicated onto a task whose result goes elsewhere.
  const std::vector<std::string> keys = DedupKeys(tasks);
  options.on_not_waited = [&keys, &progress](size_t index, uint64_t id,
                                             const absl::StatusOr<v1::Task>& existing) {
    std::string where = !existing.ok() ? absl::StrCat("cannot be looked up (",
                                                      existing.status().message(), ")")
                        : existing->reply_to().empty()
                            ? std::string("has no reply-to queue")
                            : absl::StrCat("reports to queue \"", existing->reply_to(), "\"");
    progress.Print(ProgressLine::Count::kNotWaited, [&] {
      PrintToStderr(absl::StrCat("taskq: task ", id, " already exists with dedup key \"",
                                 absl::CHexEscape(index < keys.size() ? keys[index] : ""),
                                 "\" and ", where, ": not waiting for its result\n"));
    });
  };
  ResultWaiter waiter(&client, options);
  SetInterruptCleanup([&] {
    progress.Finish();
    waiter.Cancel();
    keep_private_queue();
  });
  if (private_queue) {
    // exist_ok: sent again after a lost reply, the create must not fail on
    // the queue it made (the name is random: nobody else's). In a cluster,
    // on the master of the task queue.
    auto made = CreateReplyQueue(client, options.reply_to, options.queue);
    if (!made.ok()) {
      ClearInterruptCleanup();
      progress.Finish();
      return ReportError(made, CallKind::kAdmin, globals);
    }
    created = true;
  }
  absl::Status status = waiter.Run(
      std::move(tasks), [&](size_t, const v1::Task& result) {
        const bool failed = result.outcome() == v1::OUTCOME_FAILED ||
                            result.outcome() == v1::OUTCOME_CANCELLED;
        progress.Print(failed ? ProgressLine::Count::kFailed : ProgressLine::Count::kResult,
                       [&] { PrintResult(result, args.show_ids, args.json); });
      });
  ClearInterruptCleanup();  // from here on, Ctrl-C simply exits
  if (status.ok()) progress.AllIn();
  progress.Finish();
  if (status.ok()) {
    delete_private_queue();
  } else {
    keep_private_queue();
  }

  const SubmitSummary summary = waiter.summary();
  if (summary.duplicates > 0) {
    std::fprintf(stderr,
                 "taskq: warning: %zu duplicate results received (each task should yield "
                 "exactly one: a bug in the master)\n",
                 summary.duplicates);
  }
  if (!status.ok()) return ReportError(status, CallKind::kSubmit, globals);
  if (summary.failed > 0 || summary.cancelled > 0) {
    std::string what;
    if (summary.failed > 0) absl::StrAppend(&what, summary.failed, " failed");
    if (summary.cancelled > 0) {
      absl::StrAppend(&what, what.empty() ? "" : ", ", summary.cancelled, " cancelled");
    }
    std::fprintf(stderr, "taskq: %s of %zu tasks\n", what.c_str(), summary.results);
    return kExitTaskFailed;
  }
  return kExitOk;
}

int RunSubmit(const GlobalOptions& globals, const SubmitArgs& args) {
  if (!args.resume.empty()) {
    if (!args.payloads.empty()) return UsageError("--resume reads a job's results: give no payloads");
    return RunResults(globals, {.queue = args.resume,
                                .timeout = args.wait_timeout,
                                .show_ids = args.show_ids,
                                .keep = false,
                                .json = args.json,
                                .quiet = args.quiet});
  }
  if (args.payloads.empty()) return UsageError("ARGS is required: one payload per task");
  v1::TaskSpec shared;
  shared.set_handler(args.handler);
  shared.set_priority(args.priority);
  shared.set_reply_to(args.reply_to);
  for (const std::string& a : args.handler_args) shared.add_args(a);
  auto built = BuildTasks(args.payloads, args.headers, std::move(shared));
  if (!built.ok()) return UsageError(built.status().message());
  std::vector<v1::TaskSpec> tasks = *std::move(built);
  if (tasks.empty()) return kExitOk;  // `-` with empty stdin: nothing to do
  if (auto s = ApplyScheduleFlags(args.schedule, absl::Now(), &tasks); !s.ok()) {
    return UsageError(s.message());
  }
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;

  if (!args.wait) return SubmitNoWait(globals, *client, args, std::move(tasks));
  return SubmitAndWaitForResults(globals, *client, args, std::move(tasks));
}

}  // namespace

void AddSubmitCommand(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs) {
  auto args = std::make_shared<SubmitArgs>();
  CLI::App* s = AddVerb(
      &app, "submit",
      "Submit one task per ARG (the payload) for a handler that workers run. Without --wait "
      "prints the task ids. With --wait prints each result on its own line as it arrives "
      "(not in submission order), failures as `task ID failed: ERROR` and cancelled tasks as "
      "`task ID cancelled: REASON` on stderr, and exits when every task has a result: 0 if "
      "all succeeded, 7 if any failed or was cancelled, 8 if --wait-timeout ran out, 9 if "
      "the queue is shut down. With --wait, a network cut or a master restart is waited "
      "out (a line on stderr says so) and each result is printed exactly once; if it stops "
      "early, it names the queue its results go to (read them with `taskq results`).\n"
      "Example: taskq submit --queue tasks --handler square --wait 1 2 3");
  s->add_option("--queue", args->queue, "Queue the tasks go to (workers serve it)")->required();
  s->add_option("--handler", args->handler,
                "Handler workers run each task with: square, sleep, exec, or one a worker "
                "registered")
      ->required();
  s->add_option("--reply-to", args->reply_to,
                "Queue for the results. With --wait and no --reply-to, a private queue "
                "_results.<random> is created and deleted at the end");
  auto* wait = s->add_flag("--wait", args->wait, "Wait for the results and print them");
  s->add_option("--wait-timeout", args->wait_timeout,
                "With --wait: give up after this many seconds and exit 8. Default: forever")
      ->check(CLI::NonNegativeNumber)
      ->type_name("SECONDS")
      ->needs(wait);
  s->add_flag("--quiet", args->quiet,
              "With --wait: no progress line on stderr (it is shown only when stderr is a "
              "terminal, and never with --json)")
      ->needs(wait);
  s->add_option("--priority", args->priority,
                "Priority on a priority queue: lower runs first (default 0)");
  s->add_option("--arg", args->handler_args,
                "Handler argument (repeatable). For exec: the name of a command the worker "
                "allows (--allow-exec NAME=...); more arguments only if the worker allows them "
                "for it (--allow-exec-args); ARG is its stdin")
      ->type_name("A")
      ->allow_extra_args(false);  // one value per --arg: the rest are payloads
  s->add_option("--header", args->headers, "Metadata KEY=VALUE for the handler (repeatable)")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);  // one value per --header: the rest are payloads
  s->add_flag("--show-ids", args->show_ids, "With --wait: print TASKID<TAB>RESULT");
  s->add_flag("--json", args->json,
              "With --wait: print every result, failed and cancelled ones too, as one JSON "
              "object per line on stdout (JSON lines; docs/CLI.md, JSON output)")
      ->needs(wait);
  AddScheduleFlags(s, &args->schedule);
  s->add_option("ARGS", args->payloads,
                "Task payloads, one task each; `-` reads one per line from stdin (empty lines "
                "skipped). Use `--` before payloads that start with `-`");
  s->add_option("--resume", args->resume,
                "With --wait: read the results of an earlier `submit --wait` that was "
                "interrupted or lost the master, from the queue it named (as `taskq results "
                "JOB`)")
      ->type_name("JOB")
      ->needs(wait);
  verbs->push_back({s, [globals, args] { return RunSubmit(*globals, *args); }});
}

}  // namespace taskq::cli
