#include "worker/exec_handler.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/runtime/io.h"
#include "common/runtime/sleep.h"
#include "common/runtime/when_all.h"

extern char** environ;

namespace taskq {
namespace {

constexpr size_t kChunk = 64 * 1024;
// After the child exits, how long to keep reading pipes that a grandchild
// may still hold open before giving up on them.
constexpr absl::Duration kLingerAfterExit = absl::Seconds(1);

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

// Spawns argv with the given pipe ends as its stdin/stdout/stderr. Returns
// the pid or an errno value.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, bool search_path,
                            int child_in, int child_out, int child_err) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawnattr_init(&attr);
  ::posix_spawn_file_actions_adddup2(&actions, child_in, STDIN_FILENO);
  ::posix_spawn_file_actions_adddup2(&actions, child_out, STDOUT_FILENO);
  ::posix_spawn_file_actions_adddup2(&actions, child_err, STDERR_FILENO);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  // Belt and braces: descriptors opened without O_CLOEXEC by other code in
  // this process (a library) must not leak into the child either.
  ::posix_spawn_file_actions_addclosefrom_np(&actions, 3);
#endif
  // The worker blocks SIGTERM/SIGINT in every thread and ignores SIGPIPE;
  // the child must start with neither inherited.
  sigset_t empty, all;
  sigemptyset(&empty);
  sigfillset(&all);
  ::posix_spawnattr_setsigmask(&attr, &empty);
  ::posix_spawnattr_setsigdefault(&attr, &all);
  ::posix_spawnattr_setpgroup(&attr, 0);
  ::posix_spawnattr_setflags(
      &attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);

  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  pid_t pid = -1;
  int rc = search_path
               ? ::posix_spawnp(&pid, cargv[0], &actions, &attr, cargv.data(), environ)
               : ::posix_spawn(&pid, cargv[0], &actions, &attr, cargv.data(), environ);
  ::posix_spawn_file_actions_destroy(&actions);
  ::posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot start ", argv[0], ": ", std::strerror(rc)));
  }
  return pid;
}

// waitpid that retries on EINTR (only for a child already sent SIGKILL).
void WaitBlocking(pid_t pid, int* status) {
  while (::waitpid(pid, status, 0) < 0 && errno == EINTR) {
  }
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

// Waits for the child to exit and reaps it; returns its wait status. When
// `kill` fires first (the task was told to stop, or stdout overflowed) the
// child's process group gets SIGTERM, then SIGKILL after `grace` (at once
// for an overflow), and is reaped. After a normal exit the pipes get
// kLingerAfterExit more (a grandchild may still hold them), then
// `pipes_stop` gives up on them.
rt::Task<absl::StatusOr<int>> ReapChild(pid_t pid, int pidfd, std::stop_token kill,
                                        std::stop_token pipes_closed,
                                        std::stop_source* pipes_stop,
                                        const std::atomic<bool>* overflowed,
                                        absl::Duration grace, bool* killed) {
  absl::StatusOr<int> status = co_await rt::WaitChildExit(pidfd, kill);
  if (status.ok()) {
    absl::Status lingered = co_await rt::SleepFor(kLingerAfterExit, pipes_closed);
    lingered.IgnoreError();  // CANCELLED: the pipes closed first, as usual
    pipes_stop->request_stop();
    co_return status;
  }
  if (!absl::IsCancelled(status.status())) {
    // Not our child or already reaped: nothing to kill (the pid may not be
    // ours any more).
    pipes_stop->request_stop();
    co_return status;
  }
  *killed = true;
  pipes_stop->request_stop();
  const bool at_once = overflowed->load(std::memory_order_acquire);
  ::kill(-pid, at_once ? SIGKILL : SIGTERM);  // its whole process group
  if (!at_once) {
    status = co_await rt::WaitChildExit(pidfd, {}, absl::Now() + grace);
    if (status.ok()) co_return status;
    ::kill(-pid, SIGKILL);
  }
  status = co_await rt::WaitChildExit(pidfd);
  if (!status.ok()) {
    // The scheduler is shutting down (its waits fail at once): the child
    // has SIGKILL, so a blocking reap is short.
    int wait_status = 0;
    WaitBlocking(pid, &wait_status);
    status = wait_status;
  }
  co_return status;
}

}  // namespace

rt::Task<absl::StatusOr<std::string>> RunProgram(std::vector<std::string> argv, bool search_path,
                                                 absl::string_view input, std::stop_token stop,
                                                 ExecLimits limits) {
  if (argv.empty()) co_return absl::InvalidArgumentError("exec: no program given");
  for (const auto& a : argv) {
    if (a.find('\0') != std::string::npos) {
      co_return absl::InvalidArgumentError("exec: an argument contains a NUL byte");
    }
  }
  IgnoreSigpipeOnce();
  UniqueFd in_r, in_w, out_r, out_w, err_r, err_w;
  if (!MakePipe(&in_r, &in_w) || !MakePipe(&out_r, &out_w) || !MakePipe(&err_r, &err_w)) {
    co_return absl::UnavailableError(absl::StrCat("exec: pipe: ", std::strerror(errno)));
  }
  absl::StatusOr<pid_t> spawned = Spawn(argv, search_path, in_r.get(), out_w.get(), err_w.get());
  in_r.Close();
  out_w.Close();
  err_w.Close();
  if (!spawned.ok()) co_return spawned.status();
  const pid_t pid = *spawned;
  const std::string& program = argv[0];
  // Right after spawning, before anything can reap the child.
  absl::StatusOr<int> opened = rt::OpenPidfd(pid);
  if (!opened.ok()) {
    ::kill(-pid, SIGKILL);
    int ignored = 0;
    WaitBlocking(pid, &ignored);
    co_return absl::UnavailableError(
        absl::StrCat("exec: cannot watch ", program, ": ", opened.status().message()));
  }
  UniqueFd pidfd;
  pidfd.Reset(*opened);

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
  bool killed = false;
  auto [pumped, wait_status] = co_await rt::WhenAll(
      PumpPipes(&in_w, input, &out_r, &out, &err_r, &err, pipes_stop.get_token(), &kill,
                &pipes_closed),
      ReapChild(pid, pidfd.get(), kill.get_token(), pipes_closed.get_token(), &pipes_stop,
                &out.overflowed, limits.kill_grace, &killed));
  (void)pumped;

  std::string err_tail = std::move(err.data);
  if (err_tail.size() > limits.stderr_tail) {
    err_tail.erase(0, err_tail.size() - limits.stderr_tail);
  }
  if (killed && stop.stop_requested()) {
    co_return absl::CancelledError(
        absl::StrCat("exec of ", program, " interrupted: the task was told to stop"));
  }
  if (out.overflowed.load(std::memory_order_acquire)) {
    co_return absl::FailedPreconditionError(absl::StrCat(
        program, " wrote more than ", limits.max_output, " bytes to stdout (the result limit)"));
  }
  if (!wait_status.ok()) {
    co_return absl::UnknownError(
        absl::StrCat("cannot wait for ", program, ": ", wait_status.status().message()));
  }
  const int ws = *wait_status;
  if (WIFEXITED(ws)) {
    int code = WEXITSTATUS(ws);
    if (code == 0) co_return std::move(out.data);
    co_return absl::UnknownError(absl::StrCat(program, " exited with status ", code,
                                              StderrSuffix(std::move(err_tail))));
  }
  if (WIFSIGNALED(ws)) {
    int sig = WTERMSIG(ws);
    const char* name = ::strsignal(sig);
    co_return absl::UnknownError(absl::StrCat(program, " was killed by signal ", sig, " (",
                                              name != nullptr ? name : "?", ")",
                                              StderrSuffix(std::move(err_tail))));
  }
  co_return absl::UnknownError(absl::StrCat(program, " ended in an unexpected state"));
}

rt::Task<absl::StatusOr<std::string>> ExecHandler::operator()(HandlerContext& context) const {
  if (context.args().empty()) {
    co_return absl::InvalidArgumentError(
        "exec needs the program in args[0] (e.g. taskq submit --handler exec --arg /bin/cat)");
  }
  const std::string& program = context.args()[0];
  if (std::find(allowed_.begin(), allowed_.end(), program) == allowed_.end()) {
    co_return absl::FailedPreconditionError(
        absl::StrCat("program \"", absl::CHexEscape(program), "\" is not allowed on worker ",
                     context.worker_id(), " (start the worker with --allow-exec ",
                     absl::CHexEscape(program), ")"));
  }
  std::vector<std::string> argv(context.args().begin(), context.args().end());
  bool search_path = program.find('/') == std::string::npos;
  co_return co_await RunProgram(std::move(argv), search_path, context.payload(),
                                context.stop_token(), limits_);
}

}  // namespace taskq
