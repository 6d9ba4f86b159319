#include "client/queue_commands.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace taskq::cli {
namespace {

struct CreateArgs {
  std::string name;
  std::string kind = "fifo";
  uint64_t maxsize = 0;
  double lease_seconds = 0;
  uint32_t max_attempts = 0;
  bool exist_ok = false;
};

int RunCreate(const GlobalOptions& globals, const CreateArgs& args) {
  v1::QueueConfig config;
  config.set_name(args.name);
  config.set_kind(args.kind == "lifo"       ? v1::QUEUE_KIND_LIFO
                  : args.kind == "priority" ? v1::QUEUE_KIND_PRIORITY
                                            : v1::QUEUE_KIND_FIFO);
  config.set_maxsize(args.maxsize);
  if (args.lease_seconds > 0) {
    double ms = std::ceil(args.lease_seconds * 1000);
    if (ms > std::numeric_limits<uint32_t>::max()) {
      return UsageError(absl::StrCat("--lease ", args.lease_seconds, " is too long"));
    }
    config.set_lease_ms(static_cast<uint32_t>(ms));
  }
  config.set_max_attempts(args.max_attempts);
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto created = client->CreateQueue(config, args.exist_ok);
  if (!created.ok()) return ReportError(created.status(), CallKind::kAdmin, globals);
  return kExitOk;
}

// Left-aligned columns, two spaces apart, header first.
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    PrintLine("", line);
  }
}

int RunList(const GlobalOptions& globals) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto queues = client->ListQueues();
  if (!queues.ok()) return ReportError(queues.status(), CallKind::kAdmin, globals);
  std::sort(queues->begin(), queues->end(),
            [](const v1::QueueStats& a, const v1::QueueStats& b) {
              return a.config().name() < b.config().name();
            });
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"NAME", "KIND", "READY", "LEASED", "UNFINISHED", "WORKERS"});
  for (const v1::QueueStats& q : *queues) {
    rows.push_back({q.config().name(), KindName(q.config().kind()), absl::StrCat(q.ready()),
                    absl::StrCat(q.leased()), absl::StrCat(q.unfinished()),
                    absl::StrCat(q.workers())});
  }
  PrintTable(rows);
  return kExitOk;
}

int RunStats(const GlobalOptions& globals, const std::string& name) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto stats = client->Stats(name);
  if (!stats.ok()) return ReportError(stats.status(), CallKind::kAdmin, globals);
  const v1::QueueStats& s = *stats;
  const std::pair<const char*, std::string> lines[] = {
      {"name", s.config().name()},
      {"kind", KindName(s.config().kind())},
      {"maxsize", absl::StrCat(s.config().maxsize())},
      {"lease_ms", absl::StrCat(s.config().lease_ms())},
      {"max_attempts", absl::StrCat(s.config().max_attempts())},
      {"ready", absl::StrCat(s.ready())},
      {"leased", absl::StrCat(s.leased())},
      {"unfinished", absl::StrCat(s.unfinished())},
      {"total_put", absl::StrCat(s.total_put())},
      {"total_completed", absl::StrCat(s.total_completed())},
      {"total_failed", absl::StrCat(s.total_failed())},
      {"waiting_consumers", absl::StrCat(s.waiting_consumers())},
      {"waiting_producers", absl::StrCat(s.waiting_producers())},
      {"workers", absl::StrCat(s.workers())},
  };
  for (const auto& [key, value] : lines) PrintLine(absl::StrCat(key, ": "), value);
  return kExitOk;
}

int RunDelete(const GlobalOptions& globals, const std::string& name) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  if (auto s = client->DeleteQueue(name); !s.ok()) {
    return ReportError(s, CallKind::kAdmin, globals);
  }
  return kExitOk;
}

int RunPurge(const GlobalOptions& globals, const std::string& name) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto purged = client->PurgeQueue(name);
  if (!purged.ok()) return ReportError(purged.status(), CallKind::kAdmin, globals);
  PrintLine("", absl::StrCat(*purged));
  return kExitOk;
}

}  // namespace

void AddQueueCommands(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs) {
  CLI::App* queue = app.add_subcommand(
      "queue", "Create, list, inspect, delete and purge queues (see `taskq queue VERB --help`)");
  queue->require_subcommand(1);
  queue->footer(kVerbFooter);

  auto create = std::make_shared<CreateArgs>();
  CLI::App* c = AddVerb(queue, "create",
                        "Create a queue. Queues are also created on first use with the "
                        "master's defaults (unless it runs with --no-auto-create); create one "
                        "explicitly to choose its kind, bound, lease or attempts.");
  c->add_option("NAME", create->name, "Queue name: 1-128 characters of [A-Za-z0-9_.:-]")
      ->required();
  c->add_option("--kind", create->kind,
                "Order tasks come out: fifo (first put first), lifo (last put first), "
                "priority (lowest --priority first)")
      ->check(CLI::IsMember({"fifo", "lifo", "priority"}))
      ->capture_default_str();
  c->add_option("--maxsize", create->maxsize,
                "Most tasks the queue holds (ready + leased); a put on a full queue waits. "
                "0 = unbounded")
      ->capture_default_str();
  c->add_option("--lease", create->lease_seconds,
                "Seconds a worker may hold a task before it is handed out again "
                "(default: the master's --default-lease)")
      ->check(CLI::PositiveNumber)
      ->type_name("SECONDS");
  c->add_option("--max-attempts", create->max_attempts,
                "Deliveries before a task is given up and reported failed "
                "(default: the master's --max-attempts)")
      ->check(CLI::Range(1u, 1000u));
  c->add_flag("--exist-ok", create->exist_ok,
              "Succeed if the queue already exists with the same settings");
  verbs->push_back({c, [globals, create] { return RunCreate(*globals, *create); }});

  CLI::App* l = AddVerb(queue, "list",
                        "List the queues, one row each: NAME KIND READY LEASED UNFINISHED "
                        "WORKERS (header first)");
  verbs->push_back({l, [globals] { return RunList(*globals); }});

  auto stats_name = std::make_shared<std::string>();
  CLI::App* s = AddVerb(queue, "stats",
                        "Show one queue's settings and counters as `key: value` lines");
  s->add_option("NAME", *stats_name, "Queue name")->required();
  verbs->push_back({s, [globals, stats_name] { return RunStats(*globals, *stats_name); }});

  auto delete_name = std::make_shared<std::string>();
  CLI::App* d = AddVerb(queue, "delete",
                        "Delete a queue and every task in it; calls waiting on it fail");
  d->add_option("NAME", *delete_name, "Queue name")->required();
  verbs->push_back({d, [globals, delete_name] { return RunDelete(*globals, *delete_name); }});

  auto purge_name = std::make_shared<std::string>();
  CLI::App* p = AddVerb(queue, "purge",
                        "Drop a queue's ready tasks (leased ones stay) and print how many "
                        "were dropped");
  p->add_option("NAME", *purge_name, "Queue name")->required();
  verbs->push_back({p, [globals, purge_name] { return RunPurge(*globals, *purge_name); }});
}

}  // namespace taskq::cli
