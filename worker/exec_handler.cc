#include "worker/exec_handler.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/runtime/io.h"
#include "common/runtime/sleep.h"
#include "common/runtime/when_all.h"
#include "worker/exec_spawn.h"

extern char** environ;

namespace taskq {
namespace {

constexpr size_t kChunk = 64 * 1024;
// After the child exits, how long to keep reading pipes that a grandchild
// may still hold open before giving up on them.
constexpr absl::Duration kLingerAfterExit = absl::Seconds(1);
// How long killing a task's processes may take before the task ends anyway
// (a process stuck in the kernel cannot die sooner).
constexpr absl::Duration kKillWait = absl::Seconds(5);

// Writing to a pipe whose reader is gone raises SIGPIPE, which by default
// kills the process. The worker wants EPIPE instead; only a SIG_DFL
// disposition is changed, so an embedding program's own choice stays.
void IgnoreSigpipeOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction old;
    if (::sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) {
      ::signal(SIGPIPE, SIG_IGN);
    }
  });
}

class UniqueFd {
 public:
  UniqueFd() = default;
  ~UniqueFd() { Close(); }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  void Reset(int fd) {
    Close();
    fd_ = fd;
  }
  int get() const { return fd_; }
  bool open() const { return fd_ >= 0; }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// A pipe with both ends close-on-exec, so that no other child the process
// spawns meanwhile inherits them (which would hide EOF from us).
bool MakePipe(UniqueFd* read_end, UniqueFd* write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  read_end->Reset(fds[0]);
  write_end->Reset(fds[1]);
  return true;
}

void SetNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

std::string StderrSuffix(std::string tail) {
  absl::string_view trimmed = absl::StripTrailingAsciiWhitespace(tail);
  if (trimmed.empty()) return "; no stderr output";
  return absl::StrCat("; stderr: ", trimmed);
}

// Where one output pipe goes: stdout keeps up to `limit` bytes (more is an
// overflow), stderr keeps a tail of about `limit` bytes.
struct Sink {
  Sink(size_t limit, bool tail) : limit(limit), tail(tail) {}
  const size_t limit;
  const bool tail;
  std::string data;
  // Atomic: ReapChild reads it while the stdout reader may still set it.
  std::atomic<bool> overflowed{false};
};

// Writes `input` to the child's stdin, then closes it (EOF for the child).
rt::Task<void> FeedStdin(UniqueFd* fd, absl::string_view input, std::stop_token stop) {
  size_t written = 0;
  while (fd->open() && written < input.size()) {
    size_t len = std::min(kChunk, input.size() - written);
    ssize_t w = ::write(fd->get(), input.data() + written, len);
    if (w > 0) {
      written += static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      absl::Status ready = co_await rt::WaitWritable(fd->get(), stop);
      if (!ready.ok()) break;  // told to stop
      continue;
    }
    break;  // EPIPE: the child closed its stdin; it read what it wanted
  }
  fd->Close();
}

// Reads `fd` into `sink` until EOF, an error, an overflow or a stop.
rt::Task<void> Collect(UniqueFd* fd, Sink* sink, std::stop_token stop,
                       std::stop_source* on_overflow) {
  std::string buf(kChunk, '\0');
  for (;;) {
    ssize_t n = ::read(fd->get(), buf.data(), buf.size());
    if (n > 0) {
      sink->data.append(buf.data(), static_cast<size_t>(n));
      if (sink->tail) {
        if (sink->data.size() > 2 * sink->limit) {
          sink->data.erase(0, sink->data.size() - sink->limit);
        }
      } else if (sink->data.size() > sink->limit) {
        sink->overflowed.store(true, std::memory_order_release);
        on_overflow->request_stop();
        break;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      absl::Status ready = co_await rt::WaitReadable(fd->get(), stop);
      if (!ready.ok()) break;  // told to stop
      continue;
    }
    break;  // EOF or error
  }
  fd->Close();
}

// Services stdin, stdout and stderr together, so that a child that writes
// a lot before it reads all its input cannot deadlock against us; then
// says so through `pipes_closed`.
rt::Task<void> PumpPipes(UniqueFd* in, absl::string_view input, UniqueFd* out, Sink* out_sink,
                         UniqueFd* err, Sink* err_sink, std::stop_token stop,
                         std::stop_source* kill, std::stop_source* pipes_closed) {
  co_await rt::WhenAll(FeedStdin(in, input, stop), Collect(out, out_sink, stop, kill),
                       Collect(err, err_sink, stop, kill));
  pipes_closed->request_stop();
}


// Reaps the child behind `pidfd` blocking (only once it has SIGKILL).
int ReapBlocking(int pidfd) {
  siginfo_t info;
  std::memset(&info, 0, sizeof info);
  while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED) < 0 &&
         errno == EINTR) {
  }
  if (info.si_code == CLD_EXITED) return (info.si_status & 0xff) << 8;
  return info.si_status & 0x7f;
}

// How the child's run ended.
struct Outcome {
  absl::StatusOr<int> wait_status = 0;  // the child's, waitpid-style
  bool killed = false;                  // ended by us (stop, overflow, timeout)
  bool timed_out = false;
};

// Waits for the child to exit, for `kill` (told to stop, or stdout
// overflowed) or for `deadline` (--exec-timeout). To end it: SIGTERM to
// its process group, and `grace` later (at once for an overflow) SIGKILL
// to every process of the task. After a normal exit the task's other
// processes are killed too (they die with it), and the pipes get
// kLingerAfterExit more before `pipes_stop` gives up on them. The child
// is reaped last, so its pid keeps naming its session until then.
rt::Task<Outcome> Supervise(int pidfd, TaskProcesses* processes, std::stop_token kill,
                            absl::Time deadline, std::stop_token pipes_closed,
                            std::stop_source* pipes_stop, const std::atomic<bool>* overflowed,
                            absl::Duration grace) {
  Outcome outcome;
  absl::Status exited = co_await rt::WaitReadable(pidfd, kill, deadline);
  if (!exited.ok()) {
    outcome.killed = true;
    outcome.timed_out = absl::IsDeadlineExceeded(exited);
    pipes_stop->request_stop();
    // Neither a stop nor the deadline: the scheduler is shutting down.
    const bool at_once = overflowed->load(std::memory_order_acquire) ||
                         (!outcome.timed_out && !kill.stop_requested());
    if (!at_once) {
      processes->Terminate();
      (co_await rt::WaitReadable(pidfd, {}, absl::Now() + grace)).IgnoreError();
    }
  }
  if (!co_await processes->KillAndWait(kKillWait)) {
    LogWarning("exec: some processes of a task did not die within %s of SIGKILL",
               absl::FormatDuration(kKillWait));
  }
  outcome.wait_status = co_await rt::WaitChildExit(pidfd);
  if (!outcome.wait_status.ok() && absl::IsCancelled(outcome.wait_status.status())) {
    // The scheduler is shutting down: the child has SIGKILL, a blocking
    // reap is short.
    outcome.wait_status = ReapBlocking(pidfd);
  }
  if (!outcome.killed) {
    (co_await rt::SleepFor(kLingerAfterExit, pipes_closed)).IgnoreError();
    pipes_stop->request_stop();
  }
  co_return outcome;
}

std::vector<SpawnRequest::Limit> RlimitsOf(const ExecRlimits& r) {
  std::vector<SpawnRequest::Limit> out;
  if (r.address_space_mb > 0) out.push_back({RLIMIT_AS, static_cast<rlim_t>(r.address_space_mb) << 20});
  if (r.cpu_seconds > 0) out.push_back({RLIMIT_CPU, static_cast<rlim_t>(r.cpu_seconds)});
  if (r.open_files > 0) out.push_back({RLIMIT_NOFILE, static_cast<rlim_t>(r.open_files)});
  if (r.file_size_mb > 0) out.push_back({RLIMIT_FSIZE, static_cast<rlim_t>(r.file_size_mb) << 20});
  return out;
}

// Runs one command: `name` for messages, `argv` as given.
rt::Task<absl::StatusOr<std::string>> RunCommand(const ExecConfig& config,
                                                 ExecContainment& containment,
                                                 const ExecLimits& limits, std::string name,
                                                 std::vector<std::string> argv,
                                                 absl::string_view input, std::stop_token stop) {
  IgnoreSigpipeOnce();
  absl::StatusOr<std::unique_ptr<TaskProcesses>> processes = containment.Begin();
  if (!processes.ok()) co_return processes.status();
  UniqueFd in_r, in_w, out_r, out_w, err_r, err_w;
  if (!MakePipe(&in_r, &in_w) || !MakePipe(&out_r, &out_w) || !MakePipe(&err_r, &err_w)) {
    co_return absl::UnavailableError(absl::StrCat("exec: pipe: ", std::strerror(errno)));
  }
  SpawnRequest request;
  const char* worker_path = std::getenv("PATH");
  request.paths = ProgramCandidates(argv[0], worker_path != nullptr ? worker_path : kDefaultExecPath);
  request.argv = std::move(argv);
  request.env = config.env;
  request.stdin_fd = in_r.get();
  request.stdout_fd = out_w.get();
  request.stderr_fd = err_w.get();
  request.cgroup_fd = (*processes)->cgroup_fd();
  request.limits = RlimitsOf(config.rlimits);
  absl::StatusOr<SpawnedProcess> spawned = SpawnProcess(request);
  in_r.Close();
  out_w.Close();
  err_w.Close();
  if (!spawned.ok()) co_return spawned.status();
  (*processes)->SetLeader(spawned->pid);
  UniqueFd pidfd;
  pidfd.Reset(spawned->pidfd);

  SetNonBlocking(in_w.get());
  SetNonBlocking(out_r.get());
  SetNonBlocking(err_r.get());
  if (input.empty()) in_w.Close();

  std::stop_source kill;          // told to stop, or stdout overflowed: end the child
  std::stop_source pipes_stop;    // stop servicing the pipes
  std::stop_source pipes_closed;  // every pipe is done
  std::stop_callback stop_kills(stop, [&kill] { kill.request_stop(); });
  std::stop_callback kill_stops_pipes(kill.get_token(),
                                      [&pipes_stop] { pipes_stop.request_stop(); });
  Sink out(limits.max_output, /*tail=*/false);
  Sink err(limits.stderr_tail, /*tail=*/true);
  const absl::Time deadline = config.timeout > absl::ZeroDuration()
                                  ? absl::Now() + config.timeout
                                  : absl::InfiniteFuture();
  auto [pumped, outcome] = co_await rt::WhenAll(
      PumpPipes(&in_w, input, &out_r, &out, &err_r, &err, pipes_stop.get_token(), &kill,
                &pipes_closed),
      Supervise(pidfd.get(), processes->get(), kill.get_token(), deadline,
                pipes_closed.get_token(), &pipes_stop, &out.overflowed, limits.kill_grace));
  (void)pumped;

  std::string err_tail = std::move(err.data);
  if (err_tail.size() > limits.stderr_tail) {
    err_tail.erase(0, err_tail.size() - limits.stderr_tail);
  }
  if (outcome.killed && stop.stop_requested()) {
    co_return absl::CancelledError(
        absl::StrCat("exec of ", name, " interrupted: the task was told to stop"));
  }
  if (out.overflowed.load(std::memory_order_acquire)) {
    co_return absl::FailedPreconditionError(absl::StrCat(
        name, " wrote more than ", limits.max_output, " bytes to stdout (the result limit)"));
  }
  if (outcome.timed_out) {
    co_return absl::DeadlineExceededError(absl::StrCat(
        name, " ran longer than ", absl::FormatDuration(config.timeout),
        " (--exec-timeout); it and every process it started were killed",
        StderrSuffix(std::move(err_tail))));
  }
  if (!outcome.wait_status.ok()) {
    co_return absl::UnknownError(
        absl::StrCat("cannot wait for ", name, ": ", outcome.wait_status.status().message()));
  }
  const int ws = *outcome.wait_status;
  if (outcome.killed) {
    co_return absl::UnavailableError(
        absl::StrCat("exec of ", name, " interrupted: the worker is stopping"));
  }
  if (WIFEXITED(ws)) {
    int code = WEXITSTATUS(ws);
    if (code == 0) co_return std::move(out.data);
    co_return absl::UnknownError(absl::StrCat(name, " exited with status ", code,
                                              StderrSuffix(std::move(err_tail))));
  }
  if (WIFSIGNALED(ws)) {
    int sig = WTERMSIG(ws);
    const char* signame = ::strsignal(sig);
    co_return absl::UnknownError(absl::StrCat(name, " was killed by signal ", sig, " (",
                                              signame != nullptr ? signame : "?", ")",
                                              StderrSuffix(std::move(err_tail))));
  }
  co_return absl::UnknownError(absl::StrCat(name, " ended in an unexpected state"));
}

}  // namespace

absl::StatusOr<ExecHandler> ExecHandler::Create(const ExecOptions& options, ExecLimits limits) {
  absl::StatusOr<ExecConfig> config = BuildExecConfig(options, environ);
  if (!config.ok()) return config.status();
  ExecHandler handler;
  handler.limits_ = limits;
  if (!config->commands.empty()) {
    absl::StatusOr<std::shared_ptr<ExecContainment>> containment =
        ExecContainment::Create(config->cgroup);
    if (!containment.ok()) return containment.status();
    handler.containment_ = *std::move(containment);
    for (const std::string& warning : config->warnings) LogWarning("%s", warning);
    std::vector<std::string> names;
    for (const auto& [name, command] : config->commands) names.push_back(name);
    std::sort(names.begin(), names.end());
    LogInfo("exec: commands %s; processes contained by %s", absl::StrJoin(names, ", "),
            handler.containment_->description());
  }
  handler.config_ = std::make_shared<const ExecConfig>(*std::move(config));
  return handler;
}

rt::Task<absl::StatusOr<std::string>> ExecHandler::operator()(HandlerContext& context) const {
  const auto& args = context.args();
  if (args.empty()) {
    co_return absl::InvalidArgumentError(
        "exec needs a command name in args[0] (e.g. taskq submit --handler exec --arg wc)");
  }
  const std::string& name = args[0];
  const ExecCommand* command = nullptr;
  if (config_ != nullptr) {
    auto it = config_->commands.find(name);
    if (it != config_->commands.end()) command = &it->second;
  }
  if (command == nullptr || containment_ == nullptr) {
    co_return absl::FailedPreconditionError(absl::StrCat(
        "exec command \"", absl::CHexEscape(name), "\" is not allowed on worker ",
        context.worker_id(), " (its operator allows one with --allow-exec 'NAME=PROGRAM ARG...')"));
  }
  if (args.size() > 1 && !command->task_args) {
    co_return absl::FailedPreconditionError(absl::StrCat(
        "exec command \"", absl::CHexEscape(name), "\" takes no arguments from tasks (this task sent ",
        args.size() - 1, "): worker ", context.worker_id(),
        " fixes its command line with --allow-exec; its operator can let tasks append "
        "arguments with --allow-exec-args ", absl::CHexEscape(name), " (see docs/WORKER.md)"));
  }
  std::vector<std::string> argv = command->argv;
  for (int i = 1; i < args.size(); ++i) argv.push_back(args[i]);
  for (const auto& a : argv) {
    if (a.find('\0') != std::string::npos) {
      co_return absl::InvalidArgumentError("exec: an argument contains a NUL byte");
    }
  }
  co_return co_await RunCommand(*config_, *containment_, limits_, name, std::move(argv),
                                context.payload(), context.stop_token());
}

}  // namespace taskq
