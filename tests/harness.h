// Integration-test harness: runs the real taskq-master, taskq-worker and
// taskq (CLI) binaries on 127.0.0.1 with ephemeral ports, captures their
// output, and guarantees that nothing a test starts outlives it.
//
//   Process  one child in its own process group; output goes to files.
//   Cluster  a temp dir + a master (+ workers) + a way to run the CLI.
//
// Every wait is a condition polled with a deadline, never a fixed sleep.
// Thread-safety: none; use each object from the test's own thread.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/channel.h"
#include "common/client.h"

namespace taskq::testing {

// Directory holding the three binaries (the build dir).
std::string BinDir();
// BinDir() + "/" + name.
std::string BinPath(const std::string& name);

// Polls `condition` every `poll` until it is true (returns true) or
// `timeout` has passed (returns false; `condition` is checked once more).
bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout,
             absl::Duration poll = absl::Milliseconds(5));

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on
// destruction unless $TASKQ_KEEP_TEST_DIRS is set.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Reads a whole file ("" if it cannot be read).
std::string ReadFile(const std::string& path);
// The pid written in `file` (a pid file), if it holds a positive number.
std::optional<pid_t> PidIn(const std::string& file);
// True once the process is gone or a zombie.
bool Dead(pid_t pid);
// Writes `contents` to `path` with the given mode (replacing the file).
absl::Status WriteFile(const std::string& path, const std::string& contents, int mode = 0600);

// Splits output into lines (no trailing empty line for a final "\n").
std::vector<std::string> Lines(const std::string& text);

// A pseudo-terminal in raw mode (bytes pass as written: no "\n" -> "\r\n"),
// its master side non-blocking. False (and a test failure) if none could be
// opened. The caller closes both descriptors.
bool OpenRawPty(int* master_fd, int* slave_fd);

struct ProcessOptions {
  std::vector<std::string> argv;  // argv[0] is the program path
  // Variables set on top of the test's environment ("" value = unset).
  std::map<std::string, std::string> env;
  // Fed to the child's stdin (from a file); empty = /dev/null.
  std::string stdin_data;
  // Where <name>.out / <name>.err (and <name>.in) are written.
  std::string output_dir;
  std::string name;
  // If set, stdin, stdout and stderr are this terminal device (a pty's
  // slave, see Cluster::CliOnTerminal) instead of files.
  std::string terminal;
};

// One child process in its own process group. Signals go to the whole
// group, so helpers it starts die with it. The destructor SIGKILLs the group
// if anything in it still runs, reaps it, and fails the test if any member
// of the group survives.
class Process {
 public:
  static absl::StatusOr<std::unique_ptr<Process>> Start(ProcessOptions options);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }  // also the process group id
  const std::string& name() const { return options_.name; }

  // Sends `signal` to the process group (no-op once the group is gone).
  void Kill(int signal);
  // Waits up to `timeout` for the process to end. Returns its exit code,
  // or 128 + signal number if a signal ended it; nullopt if still running.
  std::optional<int> Wait(absl::Duration timeout);
  // True until the process has been reaped (checks without blocking).
  bool Running();
  // SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status as
  // Wait does (128 + 9 if it had to be killed).
  int Stop(absl::Duration grace = absl::Seconds(10));
  // The exit status once reaped.
  std::optional<int> exit_status() const { return exit_status_; }

  std::string Stdout() const;
  std::string Stderr() const;
  const std::string& stdout_path() const { return stdout_path_; }
  const std::string& stderr_path() const { return stderr_path_; }

 private:
  explicit Process(ProcessOptions options) : options_(std::move(options)) {}
  // Non-blocking waitpid on the leader; records the status when reaped.
  bool TryReap();
  // Kills and reaps what is left in the group; true when it is empty.
  bool KillGroupAndReap(absl::Duration timeout);

  ProcessOptions options_;
  std::string stdout_path_, stderr_path_;
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
};

// Runs `argv` (output in `output_dir`/`name`.out/.err) and waits up to
// `timeout` for it to end: OK on exit 0, else INTERNAL with its stderr.
absl::Status RunToEnd(const std::string& output_dir, const std::string& name,
                      std::vector<std::string> argv, absl::Duration timeout = absl::Seconds(60));

// The last `n` characters of `text` ("..." before them if cut).
std::string Tail(const std::string& text, size_t n);

// Prints `p`'s stderr (its last 6000 characters) to the test log under
// `tag`, e.g. after a failure; nothing for null.
class Process;
void DumpStderr(const char* tag, Process* p);

// What a CLI run produced.
struct CliResult {
  int exit_code = -1;  // -1: killed because it exceeded its deadline
  std::string out;
  std::string err;
  absl::Duration elapsed;
  bool timed_out = false;
};

// Waits up to `timeout` for the CLI run `p` (started at `start`; `what`
// names it in a failure) and collects what it produced; one still running
// then is killed and fails the test.
CliResult FinishCli(Process& p, absl::Time start, absl::Duration timeout, const std::string& what);
// For gtest messages: "exit=N\nstdout:...\nstderr:...".
std::string Describe(const CliResult& r);

// A numeric field of /proc/PID/status ("Threads", or "VmRSS"/"VmHWM" in
// kB); -1 if missing.
long ProcStatus(pid_t pid, const std::string& field);

// True in sanitizer builds, where RSS includes shadow memory and
// quarantine and says nothing about the program's own memory.
bool RssIsMeaningless();

// A TCP port free on 127.0.0.1 just now (bound to port 0, then closed):
// for servers that cannot report the port they bound (Prometheus, etcd).
// Another process may take it before the caller binds it: retry the start.
int FreeLoopbackPort();

// How often `text` occurs in `haystack` (e.g. a log line in a process's output).
size_t Count(const std::string& haystack, const std::string& text);

// A master on 127.0.0.1:<ephemeral>, workers, and the CLI pointed at it.
// Children get HOME and XDG_CONFIG_HOME inside the temp dir and no TASKQ_*
// variables, so nothing touches the user's real token or master.
class Cluster {
 public:
  Cluster();
  // Stops workers (SIGTERM) then the master (SIGTERM), SIGKILL after a
  // deadline; dumps their logs if the test failed.
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // A command the master is started under, e.g. {"prlimit",
  // "--nofile=256:256", "--"} for a low open-file limit. Set before Start.
  void set_master_wrapper(std::vector<std::string> wrapper) {
    master_wrapper_ = std::move(wrapper);
  }

  // Starts the master with --listen 127.0.0.1:0 --port-file --token-file
  // plus `extra_master_args`, and waits for its port file.
  absl::Status Start(std::vector<std::string> extra_master_args = {},
                     absl::Duration timeout = absl::Seconds(30));

  // Stops the master with `signal` (SIGKILL: a crash; SIGTERM: a clean
  // stop) and starts a new one on the same address with the same token
  // file and extra arguments as Start, retrying while the port is not free
  // yet. Workers and CLI calls keep using address(). The old master's
  // output stays in dir() (master.out/.err); the new one's goes to
  // master-restart-N.out/.err. `while_down` runs between the old master's
  // exit and the new one's start (e.g. to damage its data dir).
  absl::Status RestartMaster(int signal, absl::Duration timeout = absl::Seconds(30),
                             const std::function<void()>& while_down = nullptr);

  const std::string& dir() const { return dir_.path(); }
  // The master's --data-dir (unless the test passed --store or --data-dir).
  std::string data_dir() const { return dir_.path() + "/data"; }
  const std::string& address() const { return address_; }
  // A channel + token to this master, for tests that talk raw gRPC.
  absl::StatusOr<Connection> Connect() const;
  // A library client (common/client.h) of this master with its token file;
  // nullptr (and a test failure) if it cannot be made.
  std::unique_ptr<Client> NewClient(ClientOptions options = {}) const;
  std::string token_file() const { return dir() + "/token"; }
  Process* master() { return master_.get(); }
  const std::vector<std::unique_ptr<Process>>& workers() const { return workers_; }

  // Starts taskq-worker --master --token-file + `extra_args`. Returns
  // nullptr (and fails the test) if it cannot be spawned.
  Process* StartWorker(std::vector<std::string> extra_args = {});
  // Same with another token file (e.g. a wrong one).
  Process* StartWorkerWithToken(const std::string& token_file,
                                std::vector<std::string> extra_args = {});
  // Waits until the worker logged that its stream is up.
  bool WaitWorkerConnected(Process* worker, absl::Duration timeout = absl::Seconds(20));

  // Runs `taskq --master ADDR --token-file TOKEN args...`; kills it and
  // fails the test if it runs past `timeout`.
  CliResult Cli(std::vector<std::string> args, const std::string& stdin_data = "",
                absl::Duration timeout = absl::Seconds(30));
  // Same with another token file.
  CliResult CliWithToken(const std::string& token_file, std::vector<std::string> args,
                         const std::string& stdin_data = "",
                         absl::Duration timeout = absl::Seconds(30));
  // Runs `taskq args...` with nothing added (for --master/--token-file tests).
  CliResult CliRaw(std::vector<std::string> args, const std::string& stdin_data = "",
                   absl::Duration timeout = absl::Seconds(30));
  // Runs the CLI like Cli, but with stdin, stdout and stderr on a pseudo-
  // terminal (raw mode: no newline translation). `out` receives every byte
  // the terminal got (stdout and stderr interleaved); `err` stays empty.
  CliResult CliOnTerminal(std::vector<std::string> args,
                          absl::Duration timeout = absl::Seconds(30));
  // Starts the CLI in the background (e.g. a blocked get); the caller owns it.
  std::unique_ptr<Process> StartCli(std::vector<std::string> args,
                                    const std::string& stdin_data = "");

  // `taskq queue stats NAME` parsed into key -> value; empty on failure.
  std::map<std::string, std::string> Stats(const std::string& queue);
  // One numeric field of Stats (-1 if missing).
  long long StatNumber(const std::string& queue, const std::string& key);

  // Runs `taskq-master init --data-dir DIR args...` (DIR: data_dir() unless
  // given) and waits for it: TLS files for 127.0.0.1 by default. The error
  // carries init's stderr.
  absl::Status InitMaster(std::vector<std::string> args = {"--host", "127.0.0.1"},
                          const std::string& dir = "");

  // Parses `json` with Python's json module (one document, or with `lines`
  // one per line as `d`, a list) and returns `expr` evaluated on it: a str
  // as UTF-8, bytes as they are, anything else as JSON (sorted keys).
  // Fails the test if it does not parse.
  std::string PyJson(const std::string& json, const std::string& expr, bool lines = false);

  // Environment every child gets on top of the test's own.
  std::map<std::string, std::string> ChildEnv() const;
  // Starts any binary with ChildEnv(), output in dir() as <name>.out/.err.
  std::unique_ptr<Process> Spawn(const std::string& name, std::vector<std::string> argv,
                                 const std::string& stdin_data = "");

 private:
  CliResult RunCli(std::vector<std::string> argv, const std::string& stdin_data,
                   absl::Duration timeout);
  std::string NextName(const std::string& prefix);
  void DumpLogsIfFailed();

  // Spawns a master listening on `listen` as `name`; waits for its port file.
  absl::Status StartMasterAs(const std::string& name, const std::string& listen,
                             absl::Duration timeout);

  TempDir dir_;
  std::string address_;
  std::unique_ptr<Process> master_;
  std::vector<std::string> master_extra_args_;
  std::vector<std::string> master_wrapper_;
  std::vector<std::unique_ptr<Process>> old_masters_;  // replaced by RestartMaster
  std::vector<std::unique_ptr<Process>> workers_;
  int counter_ = 0;
};

}  // namespace taskq::testing
