#include "client/cli.h"

#include <cstdio>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"

#include "client/cli_common.h"
#include "client/cluster_commands.h"
#include "client/completion_command.h"
#include "client/credential_commands.h"
#include "client/dlq_commands.h"
#include "client/interrupt.h"
#include "client/put_get_commands.h"
#include "client/queue_commands.h"
#include "client/results_command.h"
#include "client/submit_command.h"
#include "client/task_commands.h"
#include "client/top_command.h"
#include "client/worker_commands.h"
#include "common/grpc_log.h"

namespace taskq::cli {

int Main(int argc, char** argv) {
  // Before any thread exists, so that every thread inherits the mask.
  InstallInterruptHandling();

  CLI::App app(
      "taskq: submit tasks to a taskq master, read results, and manage its queues.\n"
      "Run `taskq VERB --help` for each verb.",
      "taskq");
  // Global options may follow the verb too (`taskq get q --master h:p`).
  app.fallthrough();
  app.require_subcommand(1);
  app.footer(kVerbFooter);
  app.set_version_flag("--version", "taskq 0.1.0");

  GlobalOptions globals;
  AddGlobalOptions(app, &globals);
  std::vector<Verb> verbs;
  AddQueueCommands(app, &globals, &verbs);
  AddPutGetCommands(app, &globals, &verbs);
  AddSubmitCommand(app, &globals, &verbs);
  AddResultsCommand(app, &globals, &verbs);
  AddTaskCommands(app, &globals, &verbs);
  AddDlqCommands(app, &globals, &verbs);
  AddCredentialCommands(app, &globals, &verbs);
  AddWorkerCommands(app, &globals, &verbs);
  AddTopCommand(app, &globals, &verbs);
  AddClusterCommands(app, &globals, &verbs);
  // Last: it reads the tree the others built.
  AddCompletionCommand(app, &verbs);

  if (argc <= 1) {
    std::fputs(app.help().c_str(), stderr);
    return kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with exit code 0.
    if (e.get_exit_code() == 0) return app.exit(e);
    PrintError(absl::StrCat(e.what(), "\nRun `taskq --help` or `taskq VERB --help` for usage."));
    return kExitUsage;
  }
  InitLoggingFromFlags("taskq", globals.log);
  RouteGrpcLogs();
  for (const Verb& verb : verbs) {
    if (verb.app->parsed()) return verb.run();
  }
  return UsageError("no verb given; run `taskq --help`");
}

}  // namespace taskq::cli
