#include "client/cluster_commands.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/cluster_view.h"
#include "client/json_writer.h"

namespace taskq::cli {
namespace {

std::string ClusterStatusJson(const ClusterView& view) {
  JsonWriter w;
  w.BeginObject();
  w.Key("clustered").Bool(view.clustered);
  w.Key("self").String(view.self);
  w.Key("masters").BeginArray();
  for (const MasterView& m : view.masters) {
    w.BeginObject();
    w.Key("name").String(m.master.name());
    w.Key("address").String(m.master.address());
    w.Key("up").Bool(m.master.up());
    w.Key("node").Uint(m.master.node());
    w.Key("started_unix_ms").Int(m.master.started_unix_ms());
    w.Key("queues").Uint(m.master.queues());
    // Why its queues are not listed ("" when they are).
    w.Key("error").String(m.queues.ok() ? "" : m.queues.status().message());
    w.Key("queue_stats").BeginArray();
    if (m.queues.ok()) {
      for (const v1::QueueStats& q : *m.queues) {
        w.BeginObject();
        w.Key("name").String(q.config().name());
        w.Key("ready").Uint(q.ready());
        w.Key("delayed").Uint(q.delayed());
        w.Key("leased").Uint(q.leased());
        w.Key("unfinished").Uint(q.unfinished());
        w.Key("workers").Uint(q.workers());
        w.EndObject();
      }
    }
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.str();
}

void PrintClusterStatus(const ClusterView& view) {
  std::vector<std::vector<std::string>> masters = {{"NAME", "ADDRESS", "UP", "NODE", "QUEUES"}};
  for (const MasterView& m : view.masters) {
    masters.push_back({m.master.name().empty() ? "-" : m.master.name(), m.master.address(),
                       m.master.up() ? "up" : "down", absl::StrCat(m.master.node()),
                       absl::StrCat(m.master.queues())});
  }
  PrintTable(masters);
  PrintLine("", "");
  std::vector<std::vector<std::string>> queues = {
      {"MASTER", "QUEUE", "READY", "DELAYED", "LEASED", "UNFINISHED", "WORKERS"}};
  for (const MasterView& m : view.masters) {
    const std::string name = m.master.name().empty() ? "-" : m.master.name();
    if (!m.queues.ok()) {
      // Down (or out of reach): its queues cannot be counted.
      queues.push_back({name, "?", "-", "-", "-", "-", "-"});
      continue;
    }
    for (const v1::QueueStats& q : *m.queues) {
      queues.push_back({name, q.config().name(), absl::StrCat(q.ready()),
                        absl::StrCat(q.delayed()), absl::StrCat(q.leased()),
                        absl::StrCat(q.unfinished()), absl::StrCat(q.workers())});
    }
  }
  PrintTable(queues);
}

int RunStatus(const GlobalOptions& globals, bool json) {
  auto client = ConnectOrReport(globals);
  if (!client) return kExitError;
  auto view = LoadClusterView(*client);
  if (!view.ok()) return ReportError(view.status(), CallKind::kAdmin, globals);
  if (json) {
    PrintLine("", ClusterStatusJson(*view));
  } else {
    if (!view->clustered) {
      PrintLine("", absl::StrCat("not clustered: one master at ", client->address()));
    }
    PrintClusterStatus(*view);
  }
  for (const MasterView& m : view->masters) {
    if (!m.queues.ok()) {
      // (A down master's own error names it already.)
      PrintError(m.master.up() ? absl::StrCat("master ", m.master.name(), " (",
                                              m.master.address(), "): ", m.queues.status().message())
                               : std::string(m.queues.status().message()));
    }
  }
  return kExitOk;
}

}  // namespace

void AddClusterCommands(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs) {
  CLI::App* cluster = app.add_subcommand(
      "cluster", "Show the masters of a cluster (docs/CLUSTER.md; see `taskq cluster VERB --help`)");
  cluster->require_subcommand(1);
  cluster->footer(kVerbFooter);

  auto json = std::make_shared<bool>(false);
  CLI::App* s = AddVerb(
      cluster, "status",
      "List the masters — NAME ADDRESS UP NODE QUEUES — then every master's queues: MASTER "
      "QUEUE READY DELAYED LEASED UNFINISHED WORKERS (a down master's queues show as ?). "
      "Works through any master's address; a single master shows as one unnamed master");
  s->add_flag("--json", *json,
              "Print one JSON document: {\"clustered\",\"self\",\"masters\":[{name, address, up, "
              "node, started_unix_ms, queues, error, queue_stats:[...]}]} (docs/CLI.md)");
  verbs->push_back({s, [globals, json] { return RunStatus(*globals, *json); }});
}

}  // namespace taskq::cli
