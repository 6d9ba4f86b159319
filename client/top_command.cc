#include "client/top_command.h"

#include <unistd.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/interrupt.h"
#include "client/top_model.h"
#include "client/top_terminal.h"
#include "common/seconds_validator.h"

namespace taskq::cli {
namespace {

struct TopArgs {
  double interval = 1;
  uint64_t iterations = 0;  // 0 = until q / Ctrl-C
};

// What the samples so far add up to.
struct TopState {
  std::optional<QueueSample> last;      // the latest sample that worked
  std::optional<QueueSample> previous;  // the one before it (for rates)
  std::optional<std::vector<WorkerRow>> workers;
  absl::Status error;  // the latest sample's failure; OK if it worked
};

// Failures no retry mends (a wrong token, a role that may not list
// queues): top says why and exits instead of showing them forever.
bool Permanent(const absl::Status& status) {
  return absl::IsUnauthenticated(status) || absl::IsPermissionDenied(status) ||
         absl::IsInvalidArgument(status) || absl::IsUnimplemented(status);
}

std::vector<WorkerRow> WorkerRows(const v1::ListWorkersResponse& response) {
  std::vector<WorkerRow> rows;
  for (const v1::WorkerInfo& w : response.workers()) {
    rows.push_back({.id = w.worker_id(),
                    .host = w.host().empty() ? w.peer() : w.host(),
                    .since = absl::FromUnixMillis(w.since_unix_ms()),
                    .credits = w.credits(),
                    .running = w.running(),
                    .queues = {w.queues().begin(), w.queues().end()}});
  }
  return rows;
}

void TakeSample(Client& client, TopState* state) {
  auto queues = client.ListQueues();
  const absl::Time at = absl::Now();
  if (!queues.ok()) {
    state->error = queues.status();
    return;
  }
  state->error = absl::OkStatus();
  state->previous = std::move(state->last);
  state->last = QueueSample{*std::move(queues), at};
  auto workers = client.ListWorkers();
  if (workers.ok()) {
    state->workers = WorkerRows(*workers);
  } else if (absl::IsUnimplemented(workers.status()) ||
             absl::IsPermissionDenied(workers.status())) {
    // An older master, or a credential that may list queues but not
    // workers: no workers section.
    state->workers.reset();
  } else {
    state->error = workers.status();  // the last workers seen stay
  }
}

TopView MakeView(const TopState& state, const std::string& master, SortKey sort,
                 bool interactive) {
  TopView view;
  view.master = master;
  view.sort = sort;
  view.now = absl::Now();
  view.interactive = interactive;
  view.workers = state.workers;
  if (state.last.has_value()) {
    view.updated = state.last->at;
    view.queues = QueueRows(*state.last, state.previous ? &*state.previous : nullptr);
    SortRows(sort, &view.queues);
  }
  if (!state.error.ok()) {
    const bool unreachable =
        absl::IsUnavailable(state.error) || absl::IsDeadlineExceeded(state.error);
    view.status = absl::StrCat(unreachable ? "cannot reach the master" : "the master refused",
                               " (", state.error.message(), "); retrying",
                               state.last.has_value() ? ": showing the last sample" : "");
  }
  return view;
}

// Plain mode (stdout is not a terminal): one block per refresh, a blank
// line between blocks, no escape codes; failures on stderr.
int RunPlain(Client& client, const std::string& master, const TopArgs& args) {
  TopState state;
  const absl::Duration interval = SecondsToDuration(args.interval);
  absl::Time next = absl::Now();
  for (uint64_t n = 1;; ++n) {
    TakeSample(client, &state);
    if (Permanent(state.error)) {
      PrintError(ErrorMessage(state.error, CallKind::kAdmin, master));
      return ExitCodeFor(state.error, CallKind::kAdmin);
    }
    const bool last = args.iterations > 0 && n >= args.iterations;
    if (!state.error.ok()) {
      PrintError(ErrorMessage(state.error, CallKind::kAdmin, master) + (last ? "" : "; retrying"));
    } else {
      TopView view = MakeView(state, master, SortKey::kName, /*interactive=*/false);
      view.status.clear();
      std::string block;
      for (const std::string& line : RenderTop(view, 0, 0)) absl::StrAppend(&block, line, "\n");
      if (n > 1) block.insert(0, "\n");
      WriteText(stdout, block);
    }
    if (last) return state.error.ok() ? kExitOk : ExitCodeFor(state.error, CallKind::kAdmin);
    next = std::max(next + interval, absl::Now());
    absl::SleepFor(next - absl::Now());
  }
}

int RunInteractive(Client& client, const std::string& master, const TopArgs& args) {
  auto entered = TerminalScreen::Enter(STDIN_FILENO, STDOUT_FILENO);
  if (!entered.ok()) {
    PrintError(absl::StrCat("cannot use the terminal: ", entered.status().message()));
    return kExitError;
  }
  std::unique_ptr<TerminalScreen> screen = *std::move(entered);
  // Ctrl-C and SIGTERM end the process from the signal thread: put the
  // user's terminal back first.
  TerminalScreen* raw_screen = screen.get();
  SetInterruptCleanup([raw_screen] { raw_screen->Restore(); });

  TopState state;
  SortKey sort = SortKey::kName;
  const absl::Duration interval = SecondsToDuration(args.interval);
  absl::Time next = absl::Now();
  uint64_t samples = 0;
  bool quit = false;
  while (!quit) {
    if (absl::Now() >= next) {
      TakeSample(client, &state);
      ++samples;
      if (Permanent(state.error)) break;
      next = std::max(next + interval, absl::Now());
    }
    const TerminalScreen::Size size = screen->size();
    // One column spare: a full last column makes some terminals wrap.
    screen->Draw(RenderTop(MakeView(state, master, sort, /*interactive=*/true),
                           size.columns > 1 ? size.columns - 1 : 1, size.rows));
    if (args.iterations > 0 && samples >= args.iterations) break;
    const TerminalScreen::Input input = screen->WaitForInput(next - absl::Now());
    for (char key : input.keys) {
      if (key == 'q' || key == 'Q') quit = true;
      if (key == 's') sort = NextSortKey(sort);
      if (auto chosen = SortKeyForKey(key)) sort = *chosen;
    }
  }
  // Restored before the cleanup goes: a Ctrl-C in between must not leave
  // the terminal as it is now.
  screen->Restore();
  ClearInterruptCleanup();
  screen.reset();
  if (Permanent(state.error)) {
    PrintError(ErrorMessage(state.error, CallKind::kAdmin, master));
    return ExitCodeFor(state.error, CallKind::kAdmin);
  }
  return kExitOk;
}

int RunTop(const GlobalOptions& globals, const TopArgs& args) {
  auto connect = ResolvedConnectOptions(globals);
  if (!connect.ok()) {
    PrintError(connect.status().message());
    return kExitError;
  }
  // No retries inside a call and no "cannot reach" lines on stderr (they
  // would scribble over the screen): each refresh is one try, and a
  // failure shows on the status line until a later one gets through.
  ClientOptions options;
  options.retry = false;
  options.call_timeout = std::clamp(SecondsToDuration(args.interval), absl::Seconds(1),
                                    absl::Seconds(5));
  auto client = Client::Connect(*connect, options);
  if (!client.ok()) {
    PrintError(client.status().message());
    return kExitError;
  }
  const std::string master = MasterAddress(globals);
  if (::isatty(STDOUT_FILENO) != 1) return RunPlain(**client, master, args);
  return RunInteractive(**client, master, args);
}

}  // namespace

void AddTopCommand(CLI::App& app, const GlobalOptions* globals, std::vector<Verb>* verbs) {
  auto args = std::make_shared<TopArgs>();
  CLI::App* t = AddVerb(
      &app, "top",
      "Live view of the queues (ready, delayed, leased, dead, workers, puts/s, completions/s, "
      "failures/s) and the connected workers, redrawn in place every --interval seconds. Keys: "
      "q quits; s cycles the sort column; n r l d p c sort by queue name, ready, leased, dead, "
      "put/s, done/s. While the master cannot be reached it keeps the last sample and says so "
      "on its last line. When stdout is not a terminal, prints one plain block per refresh "
      "until interrupted or --iterations.\n"
      "Example: taskq top --interval 2");
  t->add_option("--interval", args->interval, "Seconds between refreshes (0.1 to 3600)")
      ->check(SecondsIn(0.1, 3600))
      ->type_name("SECONDS")
      ->capture_default_str();
  t->add_option("--iterations", args->iterations,
                "Stop after this many refreshes (default: until q or Ctrl-C)")
      ->check(CLI::PositiveNumber)
      ->type_name("N");
  verbs->push_back({t, [globals, args] { return RunTop(*globals, *args); }});
}

}  // namespace taskq::cli
