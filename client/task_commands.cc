#include "client/task_commands.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/json_format.h"
#include "client/task_format.h"

namespace taskq::cli {
namespace {

int RunStatus(const GlobalOptions& globals, uint64_t id, bool json) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto task = client->GetTask(id);
  if (!task.ok()) return ReportError(task.status(), CallKind::kAdmin, globals);
  if (json) {
    PrintLine("", TaskJson(*task));
    return kExitOk;
  }
  std::string out;
  for (const std::string& line : TaskStatusLines(*task)) absl::StrAppend(&out, line, "\n");
  out.pop_back();
  PrintLine("", out);
  return kExitOk;
}

int RunCancel(const GlobalOptions& globals, const std::vector<uint64_t>& ids) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  // Cancel every id given; the exit code is the first failure's.
  int exit_code = kExitOk;
  for (uint64_t id : ids) {
    auto previous = client->CancelTask(id);
    if (!previous.ok()) {
      int code = ReportError(previous.status(), CallKind::kAdmin, globals);
      if (exit_code == kExitOk) exit_code = code;
      // Unreachable stays unreachable: do not repeat the message per id.
      if (code == kExitUnreachable) break;
      continue;
    }
    PrintLine("", absl::StrCat(id, " cancelled (was ", StateName(*previous), ")"));
  }
  return exit_code;
}

struct LeaseArgs {
  uint64_t id = 0;
  uint64_t lease = 0;
  std::string result;           // complete
  std::string error;            // fail
  bool permanent = false;       // fail
  double delay_seconds = 0;     // release
};

int RunComplete(const GlobalOptions& globals, const LeaseArgs& args) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  if (auto s = client->Complete(args.id, args.lease, args.result); !s.ok()) {
    return ReportError(s, CallKind::kAdmin, globals);
  }
  return kExitOk;
}

int RunFail(const GlobalOptions& globals, const LeaseArgs& args) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  if (auto s = client->Fail(args.id, args.lease, args.error, args.permanent); !s.ok()) {
    return ReportError(s, CallKind::kAdmin, globals);
  }
  return kExitOk;
}

int RunRelease(const GlobalOptions& globals, const LeaseArgs& args) {
  // ReleaseRequest.delay_ms is 32 bits: about 49 days.
  auto delay_ms = SecondsToMs(args.delay_seconds, "--delay");
  if (!delay_ms.ok()) return UsageError(delay_ms.status().message());
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  if (auto s = client->Release(args.id, args.lease, absl::Milliseconds(*delay_ms)); !s.ok()) {
    return ReportError(s, CallKind::kAdmin, globals);
  }
  return kExitOk;
}

void AddLeaseOptions(CLI::App* app, LeaseArgs* args) {
  app->add_option("ID", args->id, "Task id (as `taskq get --lease` printed it)")->required();
  app->add_option("--lease", args->lease, "Lease id (as `taskq get --lease` printed it)")
      ->required()
      ->type_name("LEASE");
}

}  // namespace

void AddTaskCommands(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs) {
  struct StatusArgs {
    uint64_t id = 0;
    bool json = false;
  };
  auto status = std::make_shared<StatusArgs>();
  CLI::App* st = AddVerb(
      &app, "status",
      "Show a task by id as `key: value` lines: id, queue, state (delayed, ready, leased, "
      "done, dead, cancelled, failed), handler, priority, attempts, worker (who holds a "
      "leased task), last_error, reply_to, enqueued, not_before, dedup_key, origin_queue, "
      "payload, then its history, one attempt per line: ATTEMPT ENDED WORKER HOW ERROR. "
      "Finished tasks are remembered for a while, without their payload. Exit 5 if the "
      "master does not know the id");
  st->add_option("ID", status->id, "Task id")->required();
  st->add_flag("--json", status->json,
               "Print the task as one JSON object on one line (docs/CLI.md, JSON output)");
  verbs->push_back(
      {st, [globals, status] { return RunStatus(*globals, status->id, status->json); }});

  auto cancel_ids = std::make_shared<std::vector<uint64_t>>();
  CLI::App* c = AddVerb(
      &app, "cancel",
      "Cancel tasks by id: a delayed, ready or dead task is removed at once; a leased one "
      "loses its lease (its result will be refused) and its worker is told to stop. Either "
      "way a CANCELLED result goes to the task's reply-to queue. Prints `ID cancelled (was "
      "STATE)` per task; exit 5 if a task is unknown or already finished (the other ids are "
      "still cancelled)");
  c->add_option("ID", *cancel_ids, "Task ids")->required();
  verbs->push_back({c, [globals, cancel_ids] { return RunCancel(*globals, *cancel_ids); }});

  auto complete = std::make_shared<LeaseArgs>();
  CLI::App* co = AddVerb(&app, "complete",
                         "Complete a task leased with `taskq get --lease`: acknowledges it and "
                         "puts RESULT on its reply-to queue in one step. Exit 5 if the lease "
                         "was lost (expired, released, or the task cancelled)");
  AddLeaseOptions(co, complete.get());
  co->add_option("RESULT", complete->result, "Result payload (default: empty)");
  verbs->push_back({co, [globals, complete] { return RunComplete(*globals, *complete); }});

  auto fail = std::make_shared<LeaseArgs>();
  CLI::App* f = AddVerb(&app, "fail",
                        "Report a task leased with `taskq get --lease` as failed: it is retried "
                        "after the queue's backoff until its max attempts, then given up (dead "
                        "letter + FAILED result). Exit 5 if the lease was lost");
  AddLeaseOptions(f, fail.get());
  f->add_option("--error", fail->error, "Why it failed (kept as the task's last error)")
      ->type_name("TEXT");
  f->add_flag("--permanent", fail->permanent, "Do not retry: give the task up now");
  verbs->push_back({f, [globals, fail] { return RunFail(*globals, *fail); }});

  auto release = std::make_shared<LeaseArgs>();
  CLI::App* r = AddVerb(&app, "release",
                        "Give back a task leased with `taskq get --lease` without counting a "
                        "failure (nack): it is ready again, at once or after --delay. Exit 5 if "
                        "the lease was lost");
  AddLeaseOptions(r, release.get());
  r->add_option("--delay", release->delay_seconds,
                "Keep the task delayed this many seconds before it is ready again")
      ->check(CLI::NonNegativeNumber)
      ->type_name("SECONDS");
  verbs->push_back({r, [globals, release] { return RunRelease(*globals, *release); }});
}

}  // namespace taskq::cli
