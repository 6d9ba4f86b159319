#include "tests/harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <pty.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/harness_secret_scan.h"
#include "common/runtime/sanitizers.h"

extern char** environ;

namespace taskq::testing {
namespace {

// How long a killed group may take to disappear before the test fails.
constexpr absl::Duration kReapTimeout = absl::Seconds(10);
// How long stopped daemons get between SIGTERM and SIGKILL.
constexpr absl::Duration kStopGrace = absl::Seconds(10);

// Makes this test process adopt orphaned grandchildren (e.g. a helper a
// worker started whose parent was SIGKILLed), so that they can be reaped by
// process group instead of lingering as zombies under a PID 1 that may not
// reap. Linux-only; harmless if it fails.
void BecomeSubreaperOnce() {
  static std::once_flag once;
  std::call_once(once, [] { ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); });
}

std::string ErrnoText(int err) { return std::strerror(err); }

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

std::string Tail(const std::string& text, size_t n) {
  return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

void DumpStderr(const char* tag, Process* p) {
  if (p == nullptr) return;
  std::cerr << "[" << tag << "] ---- " << p->name() << " (pid " << p->pid() << ", exit "
            << (p->exit_status() ? std::to_string(*p->exit_status()) : "?") << ") stderr ----\n"
            << Tail(p->Stderr(), 6000) << "\n";
}

CliResult FinishCli(Process& p, absl::Time start, absl::Duration timeout, const std::string& what) {
  CliResult r;
  std::optional<int> status = p.Wait(timeout);
  r.elapsed = absl::Now() - start;
  if (!status.has_value()) {
    p.Kill(SIGKILL);
    p.Wait(kReapTimeout);
    r.timed_out = true;
    ADD_FAILURE() << "taskq " << what << " still running after " << absl::FormatDuration(timeout)
                  << "; killed";
  } else {
    r.exit_code = *status;
  }
  r.out = p.Stdout();
  r.err = p.Stderr();
  return r;
}

std::string BinDir() { return TASKQ_BIN_DIR; }
std::string BinPath(const std::string& name) { return BinDir() + "/" + name; }

bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout,
             absl::Duration poll) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(poll);  // polling interval, not synchronisation
  }
  return condition();
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = absl::StrCat(base && *base ? base : "/tmp", "/taskq-test-XXXXXX");
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp(" << templ << "): " << ErrnoText(errno);
    return;
  }
  path_ = buf.data();
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  if (std::getenv("TASKQ_KEEP_TEST_DIRS") != nullptr) {
    std::cerr << "[harness] keeping " << path_ << "\n";
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::optional<pid_t> PidIn(const std::string& file) {
  int pid = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadFile(file)), &pid) || pid <= 0) {
    return std::nullopt;
  }
  return pid;
}

// True once the process is gone or a zombie.
bool Dead(pid_t pid) {
  std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  size_t close = stat.rfind(')');
  return stat.empty() || close == std::string::npos || stat.substr(close + 2, 1) == "Z";
}

absl::Status WriteFile(const std::string& path, const std::string& contents, int mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", path, ": ", ErrnoText(errno)));
  bool ok = ::fchmod(fd, mode) == 0;  // the umask may have narrowed `mode`
  size_t done = 0;
  while (ok && done < contents.size()) {
    ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ok = false;
    else done += static_cast<size_t>(n);
  }
  int err = errno;
  ::close(fd);
  if (!ok) return absl::InternalError(absl::StrCat("write ", path, ": ", ErrnoText(err)));
  return absl::OkStatus();
}

int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

// --- Process ---------------------------------------------------------------

absl::Status RunToEnd(const std::string& output_dir, const std::string& name,
                      std::vector<std::string> argv, absl::Duration timeout) {
  ProcessOptions o;
  o.argv = std::move(argv);
  o.output_dir = output_dir;
  o.name = name;
  auto p = Process::Start(std::move(o));
  if (!p.ok()) return p.status();
  std::optional<int> rc = (*p)->Wait(timeout);
  if (rc == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(name, " failed: ", (*p)->Stderr()));
}

absl::StatusOr<std::unique_ptr<Process>> Process::Start(ProcessOptions options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("empty argv");
  if (options.output_dir.empty()) return absl::InvalidArgumentError("no output_dir");
  if (options.name.empty()) options.name = "process";
  BecomeSubreaperOnce();

  std::unique_ptr<Process> p(new Process(std::move(options)));
  const ProcessOptions& o = p->options_;
  p->stdout_path_ = absl::StrCat(o.output_dir, "/", o.name, ".out");
  p->stderr_path_ = absl::StrCat(o.output_dir, "/", o.name, ".err");
  std::string stdin_path = "/dev/null";
  if (!o.stdin_data.empty()) {
    stdin_path = absl::StrCat(o.output_dir, "/", o.name, ".in");
    absl::Status s = WriteFile(stdin_path, o.stdin_data, 0600);
    if (!s.ok()) return s;
  }

  // Environment: ours, with the overrides applied ("" = unset).
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string kv = *e;
    size_t eq = kv.find('=');
    if (eq == std::string::npos) continue;
    env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : o.env) {
    if (v.empty()) env.erase(k);
    else env[k] = v;
  }
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env) env_strings.push_back(absl::StrCat(k, "=", v));
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = o.argv;
  std::vector<char*> argv;
  for (auto& s : argv_copy) argv.push_back(s.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!o.terminal.empty()) {
    posix_spawn_file_actions_addopen(&actions, 0, o.terminal.c_str(), O_RDWR | O_NOCTTY, 0);
    posix_spawn_file_actions_adddup2(&actions, 0, 1);
    posix_spawn_file_actions_adddup2(&actions, 0, 2);
  } else {
    posix_spawn_file_actions_addopen(&actions, 0, stdin_path.c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, p->stdout_path_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, p->stderr_path_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
  }

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Own process group (pgid = pid), so Kill reaches everything it starts;
  // default signal handling and an empty mask whatever the test runner set.
  sigset_t defaults, empty;
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2}) {
    sigaddset(&defaults, sig);
  }
  sigemptyset(&empty);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETSIGMASK);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setsigmask(&attr, &empty);

  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("cannot start ", o.argv[0], ": ", ErrnoText(rc)));
  }
  p->pid_ = pid;
  return p;
}

Process::~Process() {
  if (pid_ <= 0) return;
  if (!KillGroupAndReap(kReapTimeout)) {
    ADD_FAILURE() << "process group " << pid_ << " (" << options_.name
                  << ") still has members after SIGKILL";
  }
}

bool Process::TryReap() {
  if (exit_status_.has_value()) return true;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_status_ = DecodeWaitStatus(status);
    return true;
  }
  if (r < 0 && errno == ECHILD) {  // someone else reaped it; should not happen
    exit_status_ = -1;
    return true;
  }
  return false;
}

bool Process::Running() { return !TryReap(); }

void Process::Kill(int signal) {
  if (pid_ > 0) ::kill(-pid_, signal);
}

std::optional<int> Process::Wait(absl::Duration timeout) {
  if (WaitFor([this] { return TryReap(); }, timeout, absl::Milliseconds(2))) {
    return exit_status_;
  }
  return std::nullopt;
}

int Process::Stop(absl::Duration grace) {
  if (!TryReap()) {
    Kill(SIGTERM);
    if (!Wait(grace).has_value()) {
      Kill(SIGKILL);
      Wait(kReapTimeout);
    }
  }
  return exit_status_.value_or(-1);
}

bool Process::KillGroupAndReap(absl::Duration timeout) {
  return WaitFor(
      [this] {
        ::kill(-pid_, SIGKILL);
        TryReap();
        // Members adopted by us (we are a subreaper) are reaped by group.
        int status;
        while (::waitpid(-pid_, &status, WNOHANG) > 0) {
        }
        return exit_status_.has_value() && ::kill(-pid_, 0) != 0 && errno == ESRCH;
      },
      timeout, absl::Milliseconds(2));
}

std::string Process::Stdout() const { return ReadFile(stdout_path_); }
std::string Process::Stderr() const { return ReadFile(stderr_path_); }

long ProcStatus(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) != 0) continue;
    std::vector<std::string> parts =
        absl::StrSplit(line.substr(field.size() + 1), ' ', absl::SkipWhitespace());
    long v;
    if (!parts.empty() && absl::SimpleAtoi(parts[0], &v)) return v;
  }
  return -1;
}

bool RssIsMeaningless() {
  return kUnderSanitizer;
}

size_t Count(const std::string& haystack, const std::string& text) {
  size_t n = 0;
  for (size_t at = haystack.find(text); at != std::string::npos;
       at = haystack.find(text, at + text.size())) {
    ++n;
  }
  return n;
}

std::string Describe(const CliResult& r) {
  return absl::StrCat("exit=", r.exit_code, r.timed_out ? " (timed out)" : "",
                      " after ", absl::FormatDuration(r.elapsed), "\n--- stdout ---\n",
                      Tail(r.out, 4000), "\n--- stderr ---\n", Tail(r.err, 4000));
}

// --- Cluster ---------------------------------------------------------------

Cluster::Cluster() = default;

Cluster::~Cluster() {
  // Workers first (they drain), then the master; one shared deadline.
  for (auto& w : workers_) w->Kill(SIGTERM);
  const absl::Time deadline = absl::Now() + kStopGrace;
  for (auto& w : workers_) {
    if (!w->Wait(std::max(deadline - absl::Now(), absl::ZeroDuration())).has_value()) {
      w->Kill(SIGKILL);
      w->Wait(kReapTimeout);
    }
  }
  if (master_) master_->Stop(kStopGrace);
  DumpLogsIfFailed();
  ExpectNoSecretsInLogs(dir());
  workers_.clear();
  master_.reset();
  old_masters_.clear();
}

void Cluster::DumpLogsIfFailed() {
  if (!::testing::Test::HasFailure()) return;
  auto dump = [](Process* p) { DumpStderr("harness", p); };
  for (auto& m : old_masters_) dump(m.get());
  dump(master_.get());
  for (auto& w : workers_) dump(w.get());
}

std::string Cluster::NextName(const std::string& prefix) {
  return absl::StrCat(prefix, "-", ++counter_);
}

std::map<std::string, std::string> Cluster::ChildEnv() const {
  return {
      {"HOME", dir() + "/home"},
      {"XDG_CONFIG_HOME", dir() + "/config"},
      {"TASKQ_MASTER", ""},
      {"TASKQ_TOKEN_FILE", ""},
      {"TASKQ_TLS_CA", ""},
      {"TASKQ_JOIN", ""},
  };
}

std::unique_ptr<Process> Cluster::Spawn(const std::string& name, std::vector<std::string> argv,
                                        const std::string& stdin_data) {
  ProcessOptions o;
  o.argv = std::move(argv);
  o.env = ChildEnv();
  o.stdin_data = stdin_data;
  o.output_dir = dir();
  o.name = name;
  auto p = Process::Start(std::move(o));
  if (!p.ok()) {
    ADD_FAILURE() << p.status();
    return nullptr;
  }
  return *std::move(p);
}

absl::Status Cluster::Start(std::vector<std::string> extra_master_args, absl::Duration timeout) {
  if (master_) return absl::FailedPreconditionError("cluster already started");
  if (dir().empty()) return absl::InternalError("no temp dir");
  master_extra_args_ = std::move(extra_master_args);
  return StartMasterAs("master", "127.0.0.1:0", timeout);
}

absl::Status Cluster::StartMasterAs(const std::string& name, const std::string& listen,
                                    absl::Duration timeout) {
  const std::string port_file = dir() + "/port";
  std::vector<std::string> argv = {BinPath("taskq-master"), "--listen", listen,
                                   "--port-file", port_file, "--token-file", token_file()};
  // Durable by default, like production: the store lives in the cluster's
  // directory (kept across RestartMaster) unless the test chose otherwise.
  // (Without --data-dir the master's default data dir is under HOME, which
  // is the cluster's own home directory: never the user's.)
  bool store_chosen = false;
  for (const std::string& arg : master_extra_args_) {
    if (absl::StartsWith(arg, "--store") || absl::StartsWith(arg, "--data-dir")) {
      store_chosen = true;
    }
  }
  if (!store_chosen) {
    argv.push_back("--data-dir");
    argv.push_back(data_dir());
  }
  argv.insert(argv.end(), master_extra_args_.begin(), master_extra_args_.end());
  argv.insert(argv.begin(), master_wrapper_.begin(), master_wrapper_.end());
  master_ = Spawn(name, argv);
  if (!master_) return absl::InternalError("cannot spawn taskq-master");

  bool ready = WaitFor(
      [&] {
        std::string s = ReadFile(port_file);
        return (!s.empty() && s.back() == '\n') || !master_->Running();
      },
      timeout);
  std::string port = std::string(absl::StripAsciiWhitespace(ReadFile(port_file)));
  if (!port.empty()) {
    address_ = port;
    return absl::OkStatus();
  }
  if (!master_->Running()) {
    return absl::InternalError(absl::StrCat("taskq-master exited with status ",
                                            master_->exit_status().value_or(-1),
                                            " before writing its port file; stderr:\n",
                                            Tail(master_->Stderr(), 4000)));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("taskq-master wrote no port file within ", absl::FormatDuration(timeout),
                   ready ? "" : " (still running)", "; stderr:\n", Tail(master_->Stderr(), 4000)));
}

absl::Status Cluster::RestartMaster(int signal, absl::Duration timeout,
                                    const std::function<void()>& while_down) {
  if (!master_) return absl::FailedPreconditionError("cluster not started");
  master_->Kill(signal);
  if (!master_->Wait(kStopGrace).has_value()) {
    master_->Kill(SIGKILL);
    master_->Wait(kReapTimeout);
  }
  old_masters_.push_back(std::move(master_));
  if (while_down) while_down();
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status status;
  // The old listening socket may linger for a moment: retry until bound.
  for (int attempt = 1;; ++attempt) {
    std::remove((dir() + "/port").c_str());
    status = StartMasterAs(NextName("master-restart"), address_, deadline - absl::Now());
    if (status.ok() || absl::Now() >= deadline) return status;
    if (master_) {
      master_->Stop(kStopGrace);
      old_masters_.push_back(std::move(master_));
    }
    // Backs off a little between attempts (a condition we cannot observe).
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(50 * attempt, 500)));
  }
}

Process* Cluster::StartWorker(std::vector<std::string> extra_args) {
  return StartWorkerWithToken(token_file(), std::move(extra_args));
}

Process* Cluster::StartWorkerWithToken(const std::string& token_file,
                                       std::vector<std::string> extra_args) {
  std::vector<std::string> argv = {BinPath("taskq-worker"), "--master", address_,
                                   "--token-file", token_file};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  auto p = Spawn(NextName("worker"), argv);
  if (!p) return nullptr;
  workers_.push_back(std::move(p));
  return workers_.back().get();
}

bool Cluster::WaitWorkerConnected(Process* worker, absl::Duration timeout) {
  if (worker == nullptr) return false;
  return WaitFor([&] { return absl::StrContains(worker->Stderr(), "connected to"); }, timeout,
                 absl::Milliseconds(10));
}

CliResult Cluster::RunCli(std::vector<std::string> argv, const std::string& stdin_data,
                          absl::Duration timeout) {
  CliResult r;
  const absl::Time start = absl::Now();
  std::string what = absl::StrJoin(argv.begin() + 1, argv.end(), " ");
  auto p = Spawn(NextName("cli"), std::move(argv), stdin_data);
  if (!p) return r;
  return FinishCli(*p, start, timeout, what);
}

CliResult Cluster::Cli(std::vector<std::string> args, const std::string& stdin_data,
                       absl::Duration timeout) {
  return CliWithToken(token_file(), std::move(args), stdin_data, timeout);
}

CliResult Cluster::CliWithToken(const std::string& token_file, std::vector<std::string> args,
                                const std::string& stdin_data, absl::Duration timeout) {
  std::vector<std::string> argv = {BinPath("taskq"), "--master", address_, "--token-file",
                                   token_file};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCli(std::move(argv), stdin_data, timeout);
}

CliResult Cluster::CliRaw(std::vector<std::string> args, const std::string& stdin_data,
                          absl::Duration timeout) {
  std::vector<std::string> argv = {BinPath("taskq")};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCli(std::move(argv), stdin_data, timeout);
}

bool OpenRawPty(int* master_fd, int* slave_fd) {
  if (::openpty(master_fd, slave_fd, nullptr, nullptr, nullptr) != 0) {
    ADD_FAILURE() << "openpty: " << ErrnoText(errno);
    return false;
  }
  struct termios mode;
  ::tcgetattr(*slave_fd, &mode);
  ::cfmakeraw(&mode);
  ::tcsetattr(*slave_fd, TCSANOW, &mode);
  ::fcntl(*master_fd, F_SETFL, ::fcntl(*master_fd, F_GETFL) | O_NONBLOCK);
  return true;
}

CliResult Cluster::CliOnTerminal(std::vector<std::string> args, absl::Duration timeout) {
  CliResult r;
  int master_fd = -1, slave_fd = -1;
  if (!OpenRawPty(&master_fd, &slave_fd)) return r;
  std::vector<std::string> argv = {BinPath("taskq"), "--master", address_, "--token-file",
                                   token_file()};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessOptions o;
  o.argv = std::move(argv);
  o.env = ChildEnv();
  o.output_dir = dir();
  o.name = NextName("cli-tty");
  o.terminal = ::ttyname(slave_fd);
  const absl::Time start = absl::Now();
  auto p = Process::Start(std::move(o));
  auto drain = [&] {
    char buf[4096];
    for (ssize_t n; (n = ::read(master_fd, buf, sizeof buf)) > 0;) r.out.append(buf, n);
  };
  if (p.ok()) {
    // Read while it runs: a full terminal buffer would block it. Our copy
    // of the slave stays open, so reads never see EIO before the end.
    bool done = WaitFor(
        [&] {
          drain();
          return !(*p)->Running();
        },
        timeout, absl::Milliseconds(2));
    if (!done) {
      (*p)->Kill(SIGKILL);
      (*p)->Wait(kReapTimeout);
      r.timed_out = true;
      ADD_FAILURE() << "taskq on a terminal still running after "
                    << absl::FormatDuration(timeout) << "; killed";
    } else {
      r.exit_code = (*p)->exit_status().value_or(-1);
    }
    drain();
  } else {
    ADD_FAILURE() << p.status();
  }
  r.elapsed = absl::Now() - start;
  ::close(slave_fd);
  ::close(master_fd);
  return r;
}

std::unique_ptr<Process> Cluster::StartCli(std::vector<std::string> args,
                                           const std::string& stdin_data) {
  std::vector<std::string> argv = {BinPath("taskq"), "--master", address_, "--token-file",
                                   token_file()};
  argv.insert(argv.end(), args.begin(), args.end());
  return Spawn(NextName("cli-bg"), std::move(argv), stdin_data);
}

std::map<std::string, std::string> Cluster::Stats(const std::string& queue) {
  std::map<std::string, std::string> out;
  CliResult r = Cli({"queue", "stats", queue});
  if (r.exit_code != 0) return out;
  for (const std::string& line : Lines(r.out)) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits(':', 1));
    out[std::string(absl::StripAsciiWhitespace(kv.first))] =
        std::string(absl::StripAsciiWhitespace(kv.second));
  }
  return out;
}

long long Cluster::StatNumber(const std::string& queue, const std::string& key) {
  auto stats = Stats(queue);
  auto it = stats.find(key);
  long long v = -1;
  if (it == stats.end() || !absl::SimpleAtoi(it->second, &v)) return -1;
  return v;
}

absl::Status Cluster::InitMaster(std::vector<std::string> args, const std::string& dir) {
  std::vector<std::string> argv = {BinPath("taskq-master"), "init", "--data-dir",
                                   dir.empty() ? data_dir() : dir};
  argv.insert(argv.end(), args.begin(), args.end());
  auto p = Spawn(NextName("init"), argv);
  if (p == nullptr) return absl::InternalError("cannot run taskq-master init");
  const std::optional<int> code = p->Wait(absl::Seconds(60));
  if (code != 0) {
    return absl::InternalError(absl::StrCat("taskq-master init failed: ", p->Stderr()));
  }
  return absl::OkStatus();
}

std::string Cluster::PyJson(const std::string& json, const std::string& expr, bool lines) {
  const std::string load =
      lines ? "d = [json.loads(l) for l in sys.stdin.buffer.read().decode().splitlines()]"
            : "d = json.loads(sys.stdin.buffer.read().decode())";
  const std::string script = absl::StrCat(
      "import base64, json, sys\n", load, "\nv = (", expr,
      ")\n"
      "if isinstance(v, str): v = v.encode('utf-8', 'surrogatepass')\n"
      "elif not isinstance(v, bytes): v = json.dumps(v, sort_keys=True).encode()\n"
      "sys.stdout.buffer.write(v)\n");
  auto p = Spawn("python", {"/usr/bin/python3", "-c", script}, json);
  if (p == nullptr) {
    ADD_FAILURE() << "cannot run python3";
    return "";
  }
  std::optional<int> code = p->Wait(absl::Seconds(30));
  EXPECT_EQ(code, 0) << "python3 on " << json << ": " << p->Stderr();
  return p->Stdout();
}

std::unique_ptr<Client> Cluster::NewClient(ClientOptions options) const {
  ConnectOptions connect;
  connect.master = address_;
  connect.token_file = token_file();
  auto client = Client::Connect(connect, std::move(options));
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

absl::StatusOr<Connection> Cluster::Connect() const {
  ConnectOptions options;
  options.master = address_;
  options.token_file = token_file();
  return taskq::Connect(options);
}

}  // namespace taskq::testing
