#include "client/put_get_commands.h"

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/synchronization/notification.h"
#include "client/interrupt.h"
#include "client/json_format.h"
#include "client/progress.h"
#include "client/schedule_flags.h"

namespace taskq::cli {
namespace {

struct PutArgs {
  std::string queue;
  std::vector<std::string> payloads;
  WaitFlags wait;
  int32_t priority = 0;
  std::string handler;
  std::string reply_to;
  std::vector<std::string> headers;
  ScheduleFlags schedule;
};

int RunPut(const GlobalOptions& globals, const PutArgs& args) {
  v1::TaskSpec shared;
  shared.set_handler(args.handler);
  shared.set_priority(args.priority);
  shared.set_reply_to(args.reply_to);
  auto built = BuildTasks(args.payloads, args.headers, std::move(shared));
  if (!built.ok()) return UsageError(built.status().message());
  std::vector<v1::TaskSpec> tasks = *std::move(built);
  if (tasks.empty()) return kExitOk;  // e.g. `put q -` with empty stdin
  if (auto s = ApplyScheduleFlags(args.schedule, absl::Now(), &tasks); !s.ok()) {
    return UsageError(s.message());
  }
  const std::vector<std::string> keys = DedupKeys(tasks);
  AddRetryDedupKeys(tasks, "put");
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;

  PutOptions options;
  options.nowait = args.wait.nowait;
  options.timeout = args.wait.timeout();
  // More tasks than the queue's maxsize could never fit in one request.
  if (tasks.size() > 1) options.max_batch = PutBatchLimit(*client, args.queue);
  auto receipt = client->PutWithReceipt(args.queue, std::move(tasks), options);
  if (!receipt.ok()) return ReportError(receipt.status(), CallKind::kPut, globals);
  PrintIds(receipt->ids);
  ReportExisting(*receipt, keys);
  return kExitOk;
}

struct GetArgs {
  std::string queue;
  WaitFlags wait;
  uint32_t max = 1;
  bool show_ids = false;
  bool manual_task_done = false;
  bool lease = false;
  bool json = false;
};

// How long a plain get's tasks stay leased while it prints them.
constexpr absl::Duration kGetAckLease = absl::Seconds(30);

int RunGet(const GlobalOptions& globals, const GetArgs& args) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  GetOptions options;
  options.max_tasks = args.max;
  options.nowait = args.wait.nowait;
  options.timeout = args.wait.timeout();
  options.manual_task_done = args.manual_task_done;
  options.lease = args.lease;
  // A take whose reply is lost on the way loses what it took. So a plain
  // get leases, prints, then acknowledges: a reply lost to a cut or a
  // master restart comes again (and the get can safely be retried), at the
  // price that tasks printed but not acknowledged come again too.
  const bool ack_after_print = !args.lease && !args.manual_task_done;
  if (ack_after_print) {
    options.lease = true;
    options.lease_time = kGetAckLease;
  }
  auto got = client->Get(args.queue, options);
  if (!got.ok()) return ReportError(got.status(), CallKind::kGet, globals);
  for (const v1::Delivery& d : *got) {
    const v1::Task& t = d.task();
    if (args.json) {
      PrintLine("", MessageJson(t, args.lease ? &d : nullptr));
      continue;
    }
    // A result message is named by the task it answers, as submit prints.
    std::string prefix =
        args.show_ids ? absl::StrCat(t.result_of() != 0 ? t.result_of() : t.id(), "\t") : "";
    // A leased task needs both ids to be completed, failed or released.
    if (args.lease) prefix = absl::StrCat(t.id(), "\t", d.lease_id(), "\t");
    if (t.outcome() == v1::OUTCOME_FAILED || t.outcome() == v1::OUTCOME_CANCELLED) {
      PrintLine(prefix, absl::StrCat(t.outcome() == v1::OUTCOME_FAILED ? "FAILED" : "CANCELLED",
                                     "\t", absl::StripTrailingAsciiWhitespace(t.error())));
    } else {
      PrintPayload(prefix, t.payload());
    }
  }
  if (ack_after_print) {
    std::fflush(stdout);
    std::vector<v1::LeaseRef> leases;
    for (const v1::Delivery& d : *got) {
      v1::LeaseRef& lease = leases.emplace_back();
      lease.set_task_id(d.task().id());
      lease.set_lease_id(d.lease_id());
    }
    if (auto acked = client->Ack(leases); !acked.ok()) {
      PrintError(absl::StrCat("printed ", leases.size(), " tasks but could not acknowledge them (",
                              acked.status().message(), "): they will be delivered again in ",
                              absl::FormatDuration(kGetAckLease)));
      return ExitCodeFor(acked.status(), CallKind::kGet);
    }
  }
  return kExitOk;
}

struct JoinArgs {
  std::string queue;
  double timeout = -1;
  bool quiet = false;  // no progress line
};

// Join's progress from the queue's counters: every task put since the
// start, plus those unfinished then, is the total; those no longer
// unfinished are done; given up and cancelled ones count as failed.
struct JoinCounts {
  size_t done = 0, failed = 0, total = 0;
};
JoinCounts CountJoin(const v1::QueueStats& start, const v1::QueueStats& now) {
  auto since = [](uint64_t later, uint64_t earlier) { return later > earlier ? later - earlier : 0; };
  JoinCounts c;
  c.total = start.unfinished() + since(now.total_put(), start.total_put());
  c.done = c.total > now.unfinished() ? c.total - now.unfinished() : 0;
  c.failed = since(now.total_failed(), start.total_failed()) +
             since(now.total_cancelled(), start.total_cancelled());
  return c;
}

constexpr absl::Duration kJoinSampleEvery = absl::Milliseconds(250);

int RunJoin(const GlobalOptions& globals, const JoinArgs& args) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  absl::Duration timeout =
      args.timeout < 0 ? absl::InfiniteDuration() : SecondsToDuration(args.timeout);
  // The progress line samples the queue's counters on a thread of its own
  // while Join waits; quick calls without retries, so that a lost master
  // neither delays the end nor repeats the "cannot reach" line.
  std::unique_ptr<Client> sampler =
      client->WithOptions({.call_timeout = absl::Seconds(2), .retry = false});
  std::optional<v1::QueueStats> start;
  if (ShouldShowProgress(/*json=*/false, args.quiet)) {
    if (auto first = sampler->Stats(args.queue); first.ok()) start = *std::move(first);
  }
  ProgressLine progress(start ? CountJoin(*start, *start).total : 0, start.has_value());
  auto sample = [&] {
    auto now = sampler->Stats(args.queue);
    if (!now.ok()) return;
    const JoinCounts c = CountJoin(*start, *now);
    progress.Set(c.done, c.failed, c.total);
  };
  absl::Notification joined;
  std::thread sampling;
  if (start.has_value()) {
    sampling = std::thread([&] {
      while (!joined.WaitForNotificationWithTimeout(kJoinSampleEvery)) sample();
    });
  }
  SetInterruptCleanup([&] { progress.Finish(); });
  absl::Status s = client->Join(args.queue, timeout);
  ClearInterruptCleanup();
  joined.Notify();
  if (sampling.joinable()) sampling.join();
  if (start.has_value() && s.ok()) sample();  // the final counts
  progress.Finish();
  if (!s.ok()) return ReportError(s, CallKind::kWait, globals);
  return kExitOk;
}

int RunTaskDone(const GlobalOptions& globals, const std::string& queue, uint32_t count) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  if (auto s = client->TaskDone(queue, count); !s.ok()) {
    return ReportError(s, CallKind::kAdmin, globals);
  }
  return kExitOk;
}

}  // namespace

void AddPutGetCommands(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs) {
  auto put = std::make_shared<PutArgs>();
  CLI::App* p = AddVerb(&app, "put",
                        "Put one task per PAYLOAD on QUEUE and print their ids, one per line. "
                        "Waits for room while a bounded queue is full. A task deduplicated by "
                        "--dedup-key prints the existing task's id (and a note on stderr). "
                        "Exit 9 if the queue is shut down.");
  p->add_option("QUEUE", put->queue, "Queue to put on")->required();
  p->add_option("PAYLOAD", put->payloads,
                "Task payloads; `-` reads one payload per line from stdin (empty lines "
                "skipped). Use `--` before payloads that start with `-`")
      ->required();
  AddWaitFlags(p, &put->wait, "for room in a full queue");
  p->add_option("--priority", put->priority,
                "Priority on a priority queue: lower runs first (default 0)");
  p->add_option("--handler", put->handler,
                "Handler a worker runs the task with (square, sleep, exec, ...); "
                "empty = plain data for `taskq get`");
  p->add_option("--reply-to", put->reply_to,
                "Queue that receives the task's result message when it completes or fails");
  p->add_option("--header", put->headers, "Metadata KEY=VALUE for the handler (repeatable)")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);  // one value per --header: the rest are payloads
  AddScheduleFlags(p, &put->schedule);
  verbs->push_back({p, [globals, put] { return RunPut(*globals, *put); }});

  auto get = std::make_shared<GetArgs>();
  CLI::App* g = AddVerb(&app, "get",
                        "Take tasks from QUEUE (take-and-acknowledge, as Python's queue.get) "
                        "and print each payload on its own line. Waits for a task; exits 3 if "
                        "none came in time, 9 if the queue is shut down and drained. A failed "
                        "or cancelled task's result message prints as FAILED<TAB>ERROR or "
                        "CANCELLED<TAB>REASON.");
  g->add_option("QUEUE", get->queue, "Queue to take from")->required();
  AddWaitFlags(g, &get->wait, "for a task");
  g->add_option("--max", get->max,
                "Take up to N tasks: all that are ready at once, at least one (1-1000)")
      ->check(CLI::Range(1u, 1000u))
      ->capture_default_str();
  g->add_flag("--show-ids", get->show_ids,
              "Print ID<TAB>PAYLOAD; for a result message, ID is the task it is the "
              "result of");
  auto* manual = g->add_flag("--manual-task-done", get->manual_task_done,
                             "Keep the tasks counted as unfinished (join waits) until `taskq "
                             "task-done` marks them done: Python's get + task_done protocol");
  g->add_flag("--lease", get->lease,
              "Lease the tasks instead of taking them: print ID<TAB>LEASE<TAB>PAYLOAD; each "
              "must then be settled with `taskq complete`, `taskq fail` or `taskq release` "
              "(quoting ID and --lease LEASE) before the queue's lease time, or it is handed "
              "out again")
      ->excludes(manual);
  g->add_flag("--json", get->json,
              "Print each task as one JSON object per line (JSON lines; with --lease it "
              "includes lease_id). docs/CLI.md, JSON output");
  verbs->push_back({g, [globals, get] { return RunGet(*globals, *get); }});

  auto join = std::make_shared<JoinArgs>();
  CLI::App* j = AddVerb(&app, "join",
                        "Wait until every task ever put on QUEUE is done (completed, given "
                        "up, or taken and marked done), as Python's queue.join. On a terminal, "
                        "a progress line on stderr counts the tasks done of those to wait for");
  j->add_option("QUEUE", join->queue, "Queue to wait on")->required();
  j->add_option("--timeout", join->timeout,
                "Give up after this many seconds and exit 8. Default: wait forever")
      ->check(CLI::NonNegativeNumber)
      ->type_name("SECONDS");
  j->add_flag("--quiet", join->quiet,
              "No progress line on stderr (it is shown only when stderr is a terminal)");
  verbs->push_back({j, [globals, join] { return RunJoin(*globals, *join); }});

  struct TaskDoneArgs {
    std::string queue;
    uint32_t count = 1;
  };
  auto done = std::make_shared<TaskDoneArgs>();
  CLI::App* d = AddVerb(&app, "task-done",
                        "Mark tasks taken from QUEUE with manual task_done as done (Python's "
                        "queue.task_done), so that join can return");
  d->add_option("QUEUE", done->queue, "Queue the tasks came from")->required();
  d->add_option("--count", done->count, "How many tasks to mark done")
      ->check(CLI::Range(1u, 4294967295u))
      ->capture_default_str();
  verbs->push_back(
      {d, [globals, done] { return RunTaskDone(*globals, done->queue, done->count); }});
}

}  // namespace taskq::cli
