#include "client/worker_commands.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/json_format.h"

namespace taskq::cli {
namespace {

struct WorkersArgs {
  uint32_t limit = 0;
  bool json = false;
};

// "3m12s" since `since_ms`, to the second.
std::string Uptime(int64_t since_ms) {
  const absl::Duration up = absl::Now() - absl::FromUnixMillis(since_ms);
  return absl::FormatDuration(absl::Trunc(std::max(up, absl::ZeroDuration()), absl::Seconds(1)));
}

// "12,13,+5": the running tasks' ids, and how many more there are.
std::string RunningIds(const v1::WorkerInfo& w) {
  if (w.running() == 0) return "-";
  std::vector<std::string> ids;
  for (const auto& t : w.running_tasks()) ids.push_back(absl::StrCat(t.task_id()));
  std::string out = ids.empty() ? "?" : absl::StrJoin(ids, ",");
  if (w.running() > static_cast<uint32_t>(w.running_tasks_size())) {
    absl::StrAppend(&out, ",+", w.running() - w.running_tasks_size());
  }
  return out;
}

int RunWorkers(const GlobalOptions& globals, const WorkersArgs& args) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto workers = client->ListWorkers(args.limit);
  if (!workers.ok()) return ReportError(workers.status(), CallKind::kAdmin, globals);
  if (args.json) {
    PrintLine("", WorkerListJson(*workers));
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  // New columns go at the end: scripts read the first ones by position.
  rows.push_back({"ID", "HOST", "ADDRESS", "UP", "QUEUES", "CREDITS", "RUNNING", "TASKS"});
  for (const v1::WorkerInfo& w : workers->workers()) {
    rows.push_back({w.worker_id().empty() ? "-" : w.worker_id(), w.host().empty() ? "-" : w.host(),
                    w.peer(), Uptime(w.since_unix_ms()), absl::StrJoin(w.queues(), ","),
                    absl::StrCat(w.credits()), absl::StrCat(w.running()), RunningIds(w)});
  }
  PrintTable(rows);
  if (workers->total() > static_cast<uint32_t>(workers->workers_size())) {
    PrintError(absl::StrCat("showing ", workers->workers_size(), " of ", workers->total(),
                            " workers (--limit)"));
  }
  return kExitOk;
}

}  // namespace

void AddWorkerCommands(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs) {
  auto args = std::make_shared<WorkersArgs>();
  CLI::App* w = AddVerb(&app, "workers",
                        "List the workers connected now, oldest first, one row each: ID HOST "
                        "ADDRESS UP QUEUES CREDITS RUNNING TASKS (header first; CREDITS: free "
                        "task slots; TASKS: ids of running tasks, +N more). A reader "
                        "credential sees the workers on its queues");
  w->add_option("--limit", args->limit, "Show at most N workers (1-10000; default 1000)")
      ->check(CLI::Range(1u, 10000u))
      ->type_name("N");
  w->add_flag("--json", args->json,
              "Print one JSON document: {\"workers\":[...],\"total\":N} (docs/CLI.md, JSON "
              "output)");
  verbs->push_back({w, [globals, args] { return RunWorkers(*globals, *args); }});
}

}  // namespace taskq::cli
