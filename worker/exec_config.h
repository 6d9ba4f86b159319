// What the `exec` handler may run, and how: the worker's --allow-exec,
// --allow-exec-args, --exec-env, --exec-timeout and --exec-rlimit-* flags
// (ExecOptions), checked and turned into an ExecConfig.
//
// The model (docs/WORKER.md, "The exec handler"): the operator fixes each
// command line; a task picks one by name and sends only its stdin.
//
//   --allow-exec 'wc=/usr/bin/wc -l'   a task with args ["wc"] runs
//                                      `/usr/bin/wc -l` (argv exactly so)
//   --allow-exec-args wc               lets tasks append arguments to it
//                                      (the program must treat them as
//                                      hostile: `cat FILE` reads any file)
//   --allow-exec /usr/bin/wc           the old form: the name is the path,
//                                      no task arguments (a warning says so)
//   --allow-exec-file FILE             one --allow-exec value per line (for
//                                      systemd, whose $VARS cannot quote);
//                                      blank lines and # comments skipped
//
// A command line is split at blanks; '...' quotes literally, "..." quotes
// with \" and \\ escapes, and a backslash outside quotes escapes the next
// character. Nothing is expanded: no variables, globs or ~.
//
// The child's environment is empty except PATH (kDefaultExecPath), LANG,
// LC_ALL and TZ when the worker has them, and what --exec-env adds: NAME
// passes the worker's value through, NAME=VALUE sets it. TASKQ_* and
// CREDENTIALS_DIRECTORY (where the worker's token is) are refused.
//
// Thread-safety: pure functions; an ExecConfig is immutable once built.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace taskq {

inline constexpr char kDefaultExecPath[] = "/usr/local/bin:/usr/bin:/bin";

// Resource limits set in the child before it execs (setrlimit: soft and
// hard, never above the worker's own hard limit). 0 = not set (inherited).
struct ExecRlimits {
  uint64_t address_space_mb = 0;  // RLIMIT_AS
  uint64_t cpu_seconds = 0;       // RLIMIT_CPU
  uint64_t open_files = 0;        // RLIMIT_NOFILE
  uint64_t file_size_mb = 0;      // RLIMIT_FSIZE
};

// The flags, as given.
struct ExecOptions {
  std::vector<std::string> allow;       // --allow-exec 'NAME=PROGRAM ARG...' (or PROGRAM)
  std::string allow_file;               // --allow-exec-file: more of them, one a line
  std::vector<std::string> allow_args;  // --allow-exec-args NAME
  std::vector<std::string> env;         // --exec-env NAME or NAME=VALUE
  absl::Duration timeout = absl::ZeroDuration();  // --exec-timeout; 0 = none
  ExecRlimits rlimits;
  // --exec-cgroup: "auto" (a cgroup v2 per task when the worker can make
  // one, else process sessions), "off" (sessions), or a directory of a
  // cgroup v2 the worker may create cgroups in (an error if it cannot).
  std::string cgroup = "auto";
};

// One allowed command.
struct ExecCommand {
  std::string name;               // what a task sends as args[0]
  std::vector<std::string> argv;  // argv[0] is the program: a path, or a
                                  // bare name looked up in the worker's PATH
  bool task_args = false;         // --allow-exec-args: append task args
  bool legacy = false;            // given as --allow-exec PROGRAM
};

struct ExecConfig {
  absl::flat_hash_map<std::string, ExecCommand> commands;  // by name
  std::vector<std::string> env;  // "NAME=VALUE", sorted by name
  absl::Duration timeout = absl::ZeroDuration();
  ExecRlimits rlimits;
  std::string cgroup = "auto";
  // Startup warnings to log (old-form entries, task arguments allowed).
  std::vector<std::string> warnings;
};

// Splits a command line as described above. INVALID_ARGUMENT for an
// unterminated quote, a trailing backslash, or a NUL byte.
absl::StatusOr<std::vector<std::string>> SplitCommandLine(absl::string_view line);

// One --allow-exec value. INVALID_ARGUMENT naming the flag and what to
// write instead.
absl::StatusOr<ExecCommand> ParseAllowExec(absl::string_view spec);

// The lines of an --allow-exec-file. FAILED_PRECONDITION if it cannot be
// read, or if anyone but its owner (this user or root) may write it: it
// decides what runs.
absl::StatusOr<std::vector<std::string>> ReadAllowExecFile(const std::string& path);

// Checks every flag (reading --allow-exec-file) and builds the config;
// `environ` is the worker's own environment (NULL-terminated), read for
// PATH/LANG/... pass-through.
absl::StatusOr<ExecConfig> BuildExecConfig(const ExecOptions& options, char** environ);

}  // namespace taskq
