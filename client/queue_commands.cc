#include "client/queue_commands.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/cluster_view.h"
#include "client/json_format.h"
#include "client/json_writer.h"
#include "client/queue_settings.h"
#include "client/task_format.h"
#include "common/limits.h"

namespace taskq::cli {
namespace {

struct CreateArgs {
  std::string name;
  std::string kind = "fifo";
  QueueSettingsFlags settings;
  bool exist_ok = false;
  std::string on;  // cluster: the master to own it
};

int RunCreate(const GlobalOptions& globals, const CreateArgs& args) {
  v1::QueueConfig config;
  config.set_name(args.name);
  config.set_kind(args.kind == "lifo"       ? v1::QUEUE_KIND_LIFO
                  : args.kind == "priority" ? v1::QUEUE_KIND_PRIORITY
                                            : v1::QUEUE_KIND_FIFO);
  if (auto s = FillConfig(args.settings, &config); !s.ok()) return UsageError(s.message());
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto created = client->CreateQueue(config, args.exist_ok, args.on);
  if (!created.ok()) return ReportError(created.status(), CallKind::kAdmin, globals);
  return kExitOk;
}

void PrintFields(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string out;
  for (const auto& [key, value] : fields) absl::StrAppend(&out, key, ": ", value, "\n");
  out.pop_back();
  PrintLine("", out);
}

struct UpdateArgs {
  std::string name;
  QueueSettingsFlags settings;
};

int RunUpdate(const GlobalOptions& globals, const UpdateArgs& args) {
  auto update = ToUpdate(args.settings);
  if (!update.ok()) return UsageError(update.status().message());
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto stored = client->UpdateQueue(args.name, *update);
  if (!stored.ok()) return ReportError(stored.status(), CallKind::kAdmin, globals);
  PrintFields(ConfigFields(*stored));
  return kExitOk;
}

int RunShutdown(const GlobalOptions& globals, const std::string& name, bool immediate) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto dropped = client->ShutdownQueue(name, immediate);
  if (!dropped.ok()) return ReportError(dropped.status(), CallKind::kAdmin, globals);
  PrintLine("", absl::StrCat(*dropped));
  return kExitOk;
}

// "24h", "1m30s", "500ms"; "-" = never expires.
std::string IdleTtlText(uint64_t ms) {
  if (ms == 0) return "-";
  return absl::FormatDuration(absl::Milliseconds(static_cast<int64_t>(ms)));
}

// One row per queue: across every master in a cluster (each queue once,
// with its master; a down master's queues cannot be listed and a line on
// stderr says so), or the one master's.
int RunList(const GlobalOptions& globals, uint32_t page_size, bool json) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto view = LoadClusterView(*client, page_size);
  if (!view.ok()) return ReportError(view.status(), CallKind::kAdmin, globals);
  std::vector<std::pair<v1::QueueStats, std::string>> listed;
  absl::flat_hash_set<std::string> seen;
  for (MasterView& m : view->masters) {
    if (!m.queues.ok()) {
      PrintError(absl::StrCat("queues of master ", m.master.name(), " not listed: ",
                              m.queues.status().message()));
      continue;
    }
    for (v1::QueueStats& q : *m.queues) {
      if (!seen.insert(q.config().name()).second) continue;
      listed.emplace_back(std::move(q), m.master.name());
    }
  }
  std::sort(listed.begin(), listed.end(), [](const auto& a, const auto& b) {
    return a.first.config().name() < b.first.config().name();
  });
  if (json) {
    std::vector<v1::QueueStats> queues;
    std::vector<std::string> masters;
    for (auto& [q, master] : listed) {
      queues.push_back(std::move(q));
      masters.push_back(std::move(master));
    }
    PrintLine("", QueueListJson(queues, &masters));
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  // New columns go at the end: scripts read the first ones by position.
  rows.push_back({"NAME", "KIND", "READY", "LEASED", "UNFINISHED", "WORKERS", "DELAYED", "DEAD",
                  "PENDING_RESULTS", "IDLE_TTL"});
  if (view->clustered) rows.front().push_back("MASTER");
  for (const auto& [q, master] : listed) {
    rows.push_back({q.config().name(), KindName(q.config().kind()), absl::StrCat(q.ready()),
                    absl::StrCat(q.leased()), absl::StrCat(q.unfinished()),
                    absl::StrCat(q.workers()), absl::StrCat(q.delayed()),
                    absl::StrCat(q.dead()), absl::StrCat(q.pending_results()),
                    IdleTtlText(q.config().idle_ttl_ms())});
    if (view->clustered) rows.back().push_back(master);
  }
  PrintTable(rows);
  return kExitOk;
}

int RunStats(const GlobalOptions& globals, const std::string& name, bool json) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto stats = client->Stats(name);
  if (!stats.ok()) return ReportError(stats.status(), CallKind::kAdmin, globals);
  if (json) {
    PrintLine("", QueueJson(*stats));
    return kExitOk;
  }
  PrintFields(StatsFields(*stats));
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

struct MoveArgs {
  std::string name;
  std::string to;
  double drain_s = kDefaultMoveDrainMs / 1000.0;
  bool json = false;
};

int RunMove(const GlobalOptions& globals, const MoveArgs& args) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  v1::MoveQueueRequest request;
  request.set_queue(args.name);
  request.set_to(args.to);
  request.set_drain_timeout_ms(static_cast<uint32_t>(std::llround(args.drain_s * 1000)));
  if (request.drain_timeout_ms() == 0) request.set_drain_timeout_ms(1);
  auto moved = client->MoveQueue(request);
  if (!moved.ok()) return ReportError(moved.status(), CallKind::kAdmin, globals);
  if (args.json) {
    JsonWriter w;
    w.BeginObject().Key("queues").BeginArray();
    for (const std::string& q : moved->queues()) w.String(q);
    w.EndArray().Key("to").String(args.to).Key("tasks").Uint(moved->tasks());
    w.Key("taken_back").Uint(moved->taken_back()).Key("took_ms").Uint(moved->took_ms());
    w.EndObject();
    PrintLine("", w.str());
    return kExitOk;
  }
  PrintFields({{"moved", absl::StrJoin(moved->queues(), ", ")},
               {"to", args.to},
               {"tasks", absl::StrCat(moved->tasks())},
               {"taken_back", absl::StrCat(moved->taken_back())},
               {"took_ms", absl::StrCat(moved->took_ms())}});
  return kExitOk;
}

}  // namespace

void AddQueueCommands(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs) {
  CLI::App* queue = app.add_subcommand(
      "queue", "Create, list, inspect, update, shut down, delete and purge queues (see `taskq queue "
      "VERB --help`)");
  queue->require_subcommand(1);
  queue->footer(kVerbFooter);

  auto create = std::make_shared<CreateArgs>();
  CLI::App* c = AddVerb(queue, "create",
                        "Create a queue. Queues are also created on first use with the "
                        "master's defaults (unless it runs with --no-auto-create); create one "
                        "explicitly to choose its kind, bound, lease, attempts, retry backoff, "
                        "dead-letter queue or idle TTL.");
  c->add_option("NAME", create->name, "Queue name: 1-128 characters of [A-Za-z0-9_.:-]")
      ->required();
  c->add_option("--kind", create->kind,
                "Order tasks come out: fifo (first put first), lifo (last put first), "
                "priority (lowest --priority first)")
      ->check(CLI::IsMember({"fifo", "lifo", "priority"}))
      ->capture_default_str();
  AddQueueSettingsFlags(c, &create->settings, /*for_update=*/false);
  c->add_flag("--exist-ok", create->exist_ok,
              "Succeed if the queue already exists with the same settings");
  c->add_option("--on", create->on,
                "Cluster mode (docs/CLUSTER.md): the master (by name, as `taskq cluster status` "
                "shows it) that is to own the queue; default: the cluster's choice. Ignored by a "
                "single master")
      ->type_name("MASTER");
  verbs->push_back({c, [globals, create] { return RunCreate(*globals, *create); }});

  struct ListArgs {
    uint32_t page_size = 0;
    bool json = false;
  };
  auto list = std::make_shared<ListArgs>();
  CLI::App* l = AddVerb(queue, "list",
                        "List the queues, one row each: NAME KIND READY LEASED UNFINISHED "
                        "WORKERS DELAYED DEAD PENDING_RESULTS IDLE_TTL (header first; "
                        "PENDING_RESULTS: tasks that still owe this queue a result; IDLE_TTL: "
                        "unused this long, the master deletes it, - = never; in a cluster a last "
                        "column MASTER: the master that owns it). Asks the master a page at a "
                        "time and prints all of them; in a cluster asks every master up");
  l->add_option("--page-size", list->page_size,
                "Queues per call to the master (1-10000; default: the master's, 1000)")
      ->check(CLI::Range(1u, 10000u))
      ->type_name("N");
  l->add_flag("--json", list->json,
              "Print one JSON document: {\"queues\":[...]}, each queue as `queue stats --json` "
              "with \"master\" (docs/CLI.md, JSON output)");
  verbs->push_back(
      {l, [globals, list] { return RunList(*globals, list->page_size, list->json); }});

  struct StatsArgs {
    std::string name;
    bool json = false;
  };
  auto stats = std::make_shared<StatsArgs>();
  CLI::App* s = AddVerb(queue, "stats",
                        "Show one queue's settings and counters as `key: value` lines, "
                        "including Python's qsize (ready + delayed), empty and full");
  s->add_option("NAME", stats->name, "Queue name")->required();
  s->add_flag("--json", stats->json,
              "Print the settings and counters as one JSON object (docs/CLI.md, JSON output)");
  verbs->push_back(
      {s, [globals, stats] { return RunStats(*globals, stats->name, stats->json); }});

  auto update = std::make_shared<UpdateArgs>();
  CLI::App* u = AddVerb(queue, "update",
                        "Change settings of an existing queue: only the flags given change. "
                        "Prints the settings as now stored. Takes effect for the next lease, "
                        "attempt or put (a running lease keeps its deadline)");
  u->add_option("NAME", update->name, "Queue name")->required();
  AddQueueSettingsFlags(u, &update->settings, /*for_update=*/true);
  verbs->push_back({u, [globals, update] { return RunUpdate(*globals, *update); }});

  struct ShutdownArgs {
    std::string name;
    bool immediate = false;
  };
  auto shutdown = std::make_shared<ShutdownArgs>();
  CLI::App* sd = AddVerb(
      queue, "shutdown",
      "Shut a queue down (Python 3.13's Queue.shutdown): from now on puts are refused (exit 9); "
      "gets drain the tasks left, then report the queue shut down (exit 9), waking blocked "
      "gets. Prints how many tasks were dropped. Cannot be undone (delete and re-create the "
      "queue)");
  sd->add_option("NAME", shutdown->name, "Queue name")->required();
  sd->add_flag("--immediate", shutdown->immediate,
               "Also drop every ready and delayed task now (each sends a CANCELLED result to "
               "its reply-to queue); leased tasks may still complete");
  verbs->push_back({sd, [globals, shutdown] {
                      return RunShutdown(*globals, shutdown->name, shutdown->immediate);
                    }});

  auto delete_name = std::make_shared<std::string>();
  CLI::App* d = AddVerb(queue, "delete",
                        "Delete a queue and every task in it; calls waiting on it fail");
  d->add_option("NAME", *delete_name, "Queue name")->required();
  verbs->push_back({d, [globals, delete_name] { return RunDelete(*globals, *delete_name); }});

  auto move = std::make_shared<MoveArgs>();
  CLI::App* m = AddVerb(
      queue, "move",
      "Cluster mode (docs/CLUSTER.md, Moving a queue): hand a queue to another master without "
      "losing or duplicating a task or a result. The queues tied to it (its dead-letter queue, "
      "the queues its tasks send results to, and so on) move with it. Calls on them are "
      "refused with \"moving\" meanwhile (clients send them again); running tasks may end "
      "for --drain seconds, the rest run again on the new master. Prints what moved");
  m->add_option("NAME", move->name, "Queue name")->required();
  m->add_option("--to", move->to,
                "The master to move it to, by name (as `taskq cluster status` shows it)")
      ->type_name("MASTER")
      ->required();
  m->add_option("--drain", move->drain_s,
                "Seconds leased tasks may run to their end before they are taken back "
                "(0.001-3600)")
      ->check(CLI::Range(0.001, kMaxMoveDrainMs / 1000.0))
      ->capture_default_str();
  m->add_flag("--json", move->json,
              "Print one JSON object: {\"queues\":[...],\"to\":...,\"tasks\":N,"
              "\"taken_back\":N,\"took_ms\":N}");
  verbs->push_back({m, [globals, move] { return RunMove(*globals, *move); }});

  auto purge_name = std::make_shared<std::string>();
  CLI::App* p = AddVerb(queue, "purge",
                        "Drop a queue's ready tasks (leased ones stay) and print how many "
                        "were dropped");
  p->add_option("NAME", *purge_name, "Queue name")->required();
  verbs->push_back({p, [globals, purge_name] { return RunPurge(*globals, *purge_name); }});
}

}  // namespace taskq::cli
