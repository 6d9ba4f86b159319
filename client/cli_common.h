// Pieces every `taskq` verb shares: the global connection options, how a
// verb is registered and run, error reporting with the CLI's exit codes,
// and parsing/printing helpers.
//
// Thread-safety: the printing helpers may be called from any thread (each
// line is written with one stdio call under stdio's lock); the rest is
// used from main's thread only.
#pragma once

#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/exit_codes.h"
#include "common/channel.h"
#include "common/client.h"
#include "common/log_flags.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq::cli {

// --join, --master, --token-file, --tls, --tls-ca, --tls-server-name,
// --connect-timeout, --keepalive, --retry-for, --log-level, --log-format:
// accepted before or after
// the verb. Precedence: a flag, else the join bundle (--join or
// $TASKQ_JOIN), else $TASKQ_MASTER / $TASKQ_TOKEN_FILE / $TASKQ_TLS_CA,
// else the defaults.
struct GlobalOptions {
  std::string join;  // join bundle path (common/join_bundle.h)
  std::string master;
  std::string token_file;
  bool tls = false;
  std::string tls_ca;
  std::string tls_server_name;
  double connect_timeout = absl::ToDoubleSeconds(kDefaultConnectTimeout);
  double keepalive = absl::ToDoubleSeconds(kDefaultKeepalive);
  // How long a call that does not wait (admin, nowait put/get) keeps
  // retrying an unreachable master before exit 6.
  double retry_for = 30;
  // --log-level, --log-format (common/log_flags.h): with json, the error
  // and notice lines on stderr are JSON log lines too.
  LogFlags log;
};

void AddGlobalOptions(CLI::App& app, GlobalOptions* options);

// A verb: its CLI11 subcommand, and what runs when it was chosen (returns
// the exit code). The runner runs after the whole command line is parsed.
struct Verb {
  CLI::App* app;
  std::function<int()> run;
};

// Text appended to every verb's --help.
extern const char kVerbFooter[];

// Adds a verb (subcommand) with the common footer.
CLI::App* AddVerb(CLI::App* parent, const std::string& name, const std::string& description);

// The connection the options resolve to: flags, then the join bundle,
// then the environment and defaults (ResolveConnectOptions). Fails if the
// bundle cannot be read (the message says why and how to fix it).
absl::StatusOr<ConnectOptions> ResolvedConnectOptions(const GlobalOptions& options);

// The master address the options resolve to (flag, join bundle,
// $TASKQ_MASTER, default); a bundle's fallback list is joined by commas.
std::string MasterAddress(const GlobalOptions& options);

// Builds the client; on failure prints why and returns nullptr (exit 1).
// While the master cannot be reached its calls retry (common/call_retry.h)
// and one line on stderr says so, and one more when it is back.
std::unique_ptr<Client> ConnectOrReport(const GlobalOptions& options);

// Prints "taskq: <message>" on stderr (ErrorMessage) and returns the exit
// code for `status`.
int ReportError(const absl::Status& status, CallKind kind, const GlobalOptions& options);

// The message ReportError prints: `status`'s, with a hint for unreachable
// or unauthenticated masters. A put that failed UNAVAILABLE after it may
// have reached the master (not a failed connect) says that its outcome is
// unknown and how to retry without a duplicate, instead of only "cannot
// reach the master".
std::string ErrorMessage(const absl::Status& status, CallKind kind, absl::string_view master);

// Prints "taskq: <message>" on stderr and returns kExitUsage.
int UsageError(absl::string_view message);

// Seconds from the command line as a duration; huge values mean forever.
absl::Duration SecondsToDuration(double seconds);

// Seconds from a flag as whole milliseconds (rounded up, so 0.0001 is
// 1 ms) for a 32-bit millisecond field; INVALID_ARGUMENT naming `flag` if
// it does not fit.
absl::StatusOr<uint32_t> SecondsToMs(double seconds, absl::string_view flag);

// --timeout S / --nowait, shared by put and get: CLI11 options on `app`
// bound to these fields, mutually exclusive.
struct WaitFlags {
  double timeout_seconds = -1;  // < 0: not given (wait forever)
  bool nowait = false;
  absl::Duration timeout() const {
    return timeout_seconds < 0 ? absl::InfiniteDuration() : SecondsToDuration(timeout_seconds);
  }
};
void AddWaitFlags(CLI::App* app, WaitFlags* flags, absl::string_view what_waits);

// Parses repeated --header K=V into a map; K must not be empty.
absl::StatusOr<std::map<std::string, std::string>> ParseHeaders(
    const std::vector<std::string>& headers);

// Expands "-" into the lines of stdin (one payload per line; a trailing
// '\r' is dropped, empty lines are skipped). Other arguments are kept.
std::vector<std::string> ExpandStdin(const std::vector<std::string>& args);

// The tasks of a put or submit: one per payload argument ("-" expands to
// the lines of stdin), each a copy of `shared` (handler, priority,
// reply_to, args) plus the --header flags. INVALID_ARGUMENT for a malformed
// header. Empty if there is nothing to send (e.g. `-` with empty stdin).
absl::StatusOr<std::vector<v1::TaskSpec>> BuildTasks(const std::vector<std::string>& payload_args,
                                                     const std::vector<std::string>& header_flags,
                                                     v1::TaskSpec shared);

// "fifo", "lifo" or "priority".
std::string KindName(v1::QueueKind kind);

// Output. What the CLI prints may hold text from other clients (payloads,
// results, errors, worker ids): on a terminal it goes through
// EscapeForTerminal (client/task_format.h) so it cannot move the cursor or
// change the terminal; on a pipe or file the bytes are written exactly
// (scripts need exact payloads).
//
// Writes `text` to `stream` (stdout or stderr) as described, and flushes.
void WriteText(std::FILE* stream, absl::string_view text);
// Prints "taskq: <message>" and a newline on stderr (WriteText), through
// the stderr guard if one is set.
void PrintError(absl::string_view message);

// While a progress line is drawn on stderr (client/progress.h), PrintError
// calls from any thread (e.g. "cannot reach the master ...; retrying" from
// a gRPC thread) run their write through `guard`, which erases the line
// first. nullptr unsets it. `guard` must not call PrintError.
void SetStderrGuard(std::function<void(const std::function<void()>&)> guard);

// Writes `prefix` + `payload` + "\n" to stdout (WriteText) and flushes, so
// that a reader on a pipe sees each line as it is printed.
void PrintLine(absl::string_view prefix, absl::string_view payload);

// Left-aligned columns, two spaces apart, header first (PrintLine each).
void PrintTable(const std::vector<std::vector<std::string>>& rows);

// Prints task ids, one per line, in one write.
void PrintIds(const std::vector<uint64_t>& ids);

// PrintLine for a task payload or result: one trailing newline of the
// payload itself is dropped (an exec handler's output usually ends with
// one), so that each payload takes one line and no blank lines appear.
void PrintPayload(absl::string_view prefix, absl::string_view payload);

}  // namespace taskq::cli
