#include "client/dlq_commands.h"

#include <algorithm>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/json_format.h"
#include "client/task_format.h"
#include "common/limits.h"

namespace taskq::cli {
namespace {

struct ListArgs {
  std::string queue;
  uint64_t limit = 100;  // 0 = all
  uint64_t after = 0;
  bool json = false;
};

// One row of `dlq list`: ID ORIGIN ATTEMPTS HANDLER LAST_ERROR.
std::string ListRow(const v1::Task& t) {
  return absl::StrCat(t.id(), "\t", t.origin_queue().empty() ? t.queue() : t.origin_queue(), "\t",
                      t.attempt(), "\t", t.handler().empty() ? "-" : t.handler(), "\t",
                      OneLine(t.last_error(), 200));
}

int RunList(const GlobalOptions& globals, const ListArgs& args) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  // Pages of up to kMaxListDead until the limit or the end of the set.
  uint64_t after = args.after;
  uint64_t left = args.limit == 0 ? UINT64_MAX : args.limit;
  bool header = !args.json;  // printed once the queue is known to exist
  while (left > 0) {
    ListDeadOptions options;
    options.after_id = after;
    options.limit = static_cast<uint32_t>(std::min<uint64_t>(left, kMaxListDead));
    auto page = client->ListDead(args.queue, options);
    if (!page.ok()) return ReportError(page.status(), CallKind::kAdmin, globals);
    if (header) {
      PrintLine("", "ID\tORIGIN\tATTEMPTS\tHANDLER\tLAST_ERROR");
      header = false;
    }
    if (page->empty()) break;
    std::string out;
    for (const v1::Task& t : *page) {
      absl::StrAppend(&out, args.json ? TaskJson(t) : ListRow(t), "\n");
      after = std::max(after, t.id());
    }
    out.pop_back();
    PrintLine("", out);
    left -= std::min<uint64_t>(left, page->size());
    // A short page (the master may also stop early at a byte budget) is
    // not necessarily the last: keep going until an empty one.
  }
  return kExitOk;
}

int RunShow(const GlobalOptions& globals, const std::string& queue, uint64_t id, bool json) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  // The first dead task with id >= `id` in this queue's set: the task
  // itself (with its payload) if it is there.
  auto page = client->ListDead(queue, {.limit = 1, .after_id = id - 1});
  if (!page.ok()) return ReportError(page.status(), CallKind::kAdmin, globals);
  if (page->empty() || page->front().id() != id) {
    std::string where;
    if (auto task = client->GetTask(id); task.ok()) {
      where = absl::StrCat(": it is ", StateName(task->state()), " on queue \"", task->queue(), "\"");
      if (task->state() == v1::TASK_STATE_DEAD) {
        where = absl::StrCat(": it is dead, from queue \"", task->origin_queue().empty() ? task->queue() : task->origin_queue(),
                             "\", in another dead-letter set");
      }
    }
    return ReportError(absl::NotFoundError(absl::StrCat("task ", id,
                                                        " is not in the dead-letter set of queue \"",
                                                        queue, "\"", where)),
                       CallKind::kAdmin, globals);
  }
  const v1::Task& task = page->front();
  if (json) {
    PrintLine("", TaskJson(task));
    return kExitOk;
  }
  std::string out;
  for (const std::string& line : TaskStatusLines(task)) absl::StrAppend(&out, line, "\n");
  out.pop_back();
  PrintLine("", out);
  return kExitOk;
}

int RunRequeue(const GlobalOptions& globals, const std::string& queue, uint64_t id) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto requeued = client->RequeueDead(queue, id);
  if (!requeued.ok()) return ReportError(requeued.status(), CallKind::kAdmin, globals);
  PrintLine("", absl::StrCat(*requeued));
  return kExitOk;
}

int RunPurge(const GlobalOptions& globals, const std::string& queue) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto purged = client->PurgeDead(queue);
  if (!purged.ok()) return ReportError(purged.status(), CallKind::kAdmin, globals);
  PrintLine("", absl::StrCat(*purged));
  return kExitOk;
}

}  // namespace

void AddDlqCommands(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs) {
  CLI::App* dlq = app.add_subcommand(
      "dlq",
      "Dead letters: tasks given up after their max attempts (or failed permanently) wait in "
      "the dead-letter set of their queue, or of the queue its --dead-letter names, until "
      "they are requeued or purged (see `taskq dlq VERB --help`)");
  dlq->require_subcommand(1);
  dlq->footer(kVerbFooter);

  auto list = std::make_shared<ListArgs>();
  CLI::App* l = AddVerb(dlq, "list",
                        "List the tasks in QUEUE's dead-letter set by id: a header, then "
                        "ID<TAB>ORIGIN<TAB>ATTEMPTS<TAB>HANDLER<TAB>LAST_ERROR per task");
  l->add_option("QUEUE", list->queue, "Queue whose dead-letter set to list")->required();
  l->add_option("--limit", list->limit, "Show at most N tasks; 0 = all")
      ->capture_default_str()
      ->type_name("N");
  l->add_option("--after", list->after, "Only tasks with an id above ID (to page on)")
      ->type_name("ID");
  l->add_flag("--json", list->json,
              "One JSON object per line and task, as `status --json`, no header (JSON "
              "lines: the listing is paged)");
  verbs->push_back({l, [globals, list] { return RunList(*globals, *list); }});

  struct ShowArgs {
    std::string queue;
    uint64_t id = 0;
    bool json = false;
  };
  auto show = std::make_shared<ShowArgs>();
  CLI::App* s = AddVerb(dlq, "show",
                        "Show one dead task of QUEUE's dead-letter set with its payload, last "
                        "error and attempt history, as `taskq status` does. Exit 5 if it is "
                        "not there");
  s->add_option("QUEUE", show->queue, "Queue whose dead-letter set holds the task")->required();
  s->add_option("ID", show->id, "Task id")->required()->check(CLI::PositiveNumber);
  s->add_flag("--json", show->json,
              "Print the task as one JSON object on one line, as `status --json`");
  verbs->push_back({s, [globals, show] {
                      return RunShow(*globals, show->queue, show->id, show->json);
                    }});

  struct RequeueArgs {
    std::string queue;
    uint64_t id = 0;
    bool all = false;
  };
  auto requeue = std::make_shared<RequeueArgs>();
  CLI::App* r = AddVerb(dlq, "requeue",
                        "Move dead tasks back to the queue they came from, ready, with their "
                        "attempts reset (their history stays). Give one ID or --all; prints "
                        "how many moved");
  r->add_option("QUEUE", requeue->queue, "Queue whose dead-letter set holds the tasks")
      ->required();
  auto* id = r->add_option("ID", requeue->id, "Task id")->check(CLI::PositiveNumber);
  auto* all = r->add_flag("--all", requeue->all, "Requeue every task in the set");
  id->excludes(all);
  verbs->push_back({r, [globals, requeue] {
                      if (!requeue->all && requeue->id == 0) {
                        return UsageError("dlq requeue: give a task ID or --all");
                      }
                      return RunRequeue(*globals, requeue->queue, requeue->all ? 0 : requeue->id);
                    }});

  auto purge = std::make_shared<std::string>();
  CLI::App* p = AddVerb(dlq, "purge",
                        "Drop every task in QUEUE's dead-letter set for good; prints how many");
  p->add_option("QUEUE", *purge, "Queue whose dead-letter set to empty")->required();
  verbs->push_back({p, [globals, purge] { return RunPurge(*globals, *purge); }});
}

}  // namespace taskq::cli
