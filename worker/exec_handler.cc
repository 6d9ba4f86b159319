#include "worker/exec_handler.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

extern char** environ;

namespace taskq {
namespace {

constexpr size_t kChunk = 64 * 1024;
// After the child exits, how long to keep reading pipes that a grandchild
// may still hold open before giving up on them.
constexpr absl::Duration kLingerAfterExit = absl::Seconds(1);
constexpr int kPollMillis = 100;  // how often the stop flag is checked

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

// waitpid that retries on EINTR.
void WaitBlocking(pid_t pid, int* status) {
  while (::waitpid(pid, status, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace

absl::StatusOr<std::string> RunProgram(const std::vector<std::string>& argv, bool search_path,
                                       absl::string_view input, const StopSignal* stop,
                                       const ExecLimits& limits) {
  if (argv.empty()) return absl::InvalidArgumentError("exec: no program given");
  for (const auto& a : argv) {
    if (a.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError("exec: an argument contains a NUL byte");
    }
  }
  IgnoreSigpipeOnce();
  UniqueFd in_r, in_w, out_r, out_w, err_r, err_w;
  if (!MakePipe(&in_r, &in_w) || !MakePipe(&out_r, &out_w) || !MakePipe(&err_r, &err_w)) {
    return absl::UnavailableError(absl::StrCat("exec: pipe: ", std::strerror(errno)));
  }
  auto spawned = Spawn(argv, search_path, in_r.get(), out_w.get(), err_w.get());
  in_r.Close();
  out_w.Close();
  err_w.Close();
  if (!spawned.ok()) return spawned.status();
  const pid_t pid = *spawned;
  const std::string& program = argv[0];

  SetNonBlocking(in_w.get());
  SetNonBlocking(out_r.get());
  SetNonBlocking(err_r.get());
  if (input.empty()) in_w.Close();

  std::string output, err_tail;
  size_t written = 0;
  bool stopped = false, too_large = false, exited = false;
  int wait_status = 0;
  absl::Time give_up_reading = absl::InfiniteFuture();
  char buf[kChunk];

  // Reads what is available on `fd` into `sink`; closes it at EOF/error.
  auto drain = [&](UniqueFd& fd, std::string& sink) {
    for (;;) {
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n > 0) {
        sink.append(buf, static_cast<size_t>(n));
        if (&sink == &output && output.size() > limits.max_output) return;
        if (&sink == &err_tail && err_tail.size() > 2 * limits.stderr_tail) {
          err_tail.erase(0, err_tail.size() - limits.stderr_tail);
        }
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      fd.Close();  // EOF or error
      return;
    }
  };

  // Poll stdin, stdout and stderr together so that a child that writes a
  // lot before reading all its input cannot deadlock against us.
  while (in_w.open() || out_r.open() || err_r.open()) {
    if (stop != nullptr && stop->stopped()) {
      stopped = true;
      break;
    }
    if (exited && absl::Now() >= give_up_reading) break;
    pollfd fds[3];
    UniqueFd* owners[3];
    nfds_t n = 0;
    if (in_w.open()) { fds[n] = {in_w.get(), POLLOUT, 0}; owners[n++] = &in_w; }
    if (out_r.open()) { fds[n] = {out_r.get(), POLLIN, 0}; owners[n++] = &out_r; }
    if (err_r.open()) { fds[n] = {err_r.get(), POLLIN, 0}; owners[n++] = &err_r; }
    int ready = ::poll(fds, n, kPollMillis);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) break;  // cannot happen with valid fds; go and reap the child
    if (ready == 0) {
      if (!exited && ::waitpid(pid, &wait_status, WNOHANG) == pid) {
        exited = true;
        give_up_reading = absl::Now() + kLingerAfterExit;
      }
      continue;
    }
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].revents == 0) continue;
      if (owners[i] == &in_w) {
        size_t len = std::min(kChunk, input.size() - written);
        ssize_t w = ::write(in_w.get(), input.data() + written, len);
        if (w > 0) written += static_cast<size_t>(w);
        bool retry = w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
        // Done, or the child closed its stdin (EPIPE): it read what it wanted.
        if (written == input.size() || (w < 0 && !retry)) in_w.Close();
      } else if (owners[i] == &out_r) {
        drain(out_r, output);
        if (output.size() > limits.max_output) too_large = true;
      } else {
        drain(err_r, err_tail);
      }
    }
    if (too_large) break;
  }
  in_w.Close();
  out_r.Close();
  err_r.Close();

  if (!exited) {
    if (stopped || too_large) {
      ::kill(-pid, SIGKILL);  // its whole process group
      WaitBlocking(pid, &wait_status);
    } else {
      // Output is closed; wait for the exit, still honouring a stop.
      absl::Duration step = absl::Milliseconds(1);
      while (::waitpid(pid, &wait_status, WNOHANG) != pid) {
        bool stop_now = stop != nullptr ? stop->WaitUntil(absl::Now() + step)
                                        : (absl::SleepFor(step), false);
        if (stop_now) {
          stopped = true;
          ::kill(-pid, SIGKILL);
          WaitBlocking(pid, &wait_status);
          break;
        }
        step = std::min(step * 2, absl::Milliseconds(kPollMillis));
      }
    }
  }
  if (err_tail.size() > limits.stderr_tail) {
    err_tail.erase(0, err_tail.size() - limits.stderr_tail);
  }

  if (stopped) {
    return absl::CancelledError(
        absl::StrCat("exec of ", program, " interrupted: the worker is stopping"));
  }
  if (too_large) {
    return absl::FailedPreconditionError(absl::StrCat(
        program, " wrote more than ", limits.max_output, " bytes to stdout (the result limit)"));
  }
  if (WIFEXITED(wait_status)) {
    int code = WEXITSTATUS(wait_status);
    if (code == 0) return output;
    return absl::UnknownError(absl::StrCat(program, " exited with status ", code,
                                           StderrSuffix(std::move(err_tail))));
  }
  if (WIFSIGNALED(wait_status)) {
    int sig = WTERMSIG(wait_status);
    const char* name = ::strsignal(sig);
    return absl::UnknownError(absl::StrCat(program, " was killed by signal ", sig, " (",
                                           name != nullptr ? name : "?", ")",
                                           StderrSuffix(std::move(err_tail))));
  }
  return absl::UnknownError(absl::StrCat(program, " ended in an unexpected state"));
}

absl::StatusOr<std::string> ExecHandler::operator()(const HandlerContext& context) const {
  if (context.args().empty()) {
    return absl::InvalidArgumentError(
        "exec needs the program in args[0] (e.g. taskq submit --handler exec --arg /bin/cat)");
  }
  const std::string& program = context.args()[0];
  if (std::find(allowed_.begin(), allowed_.end(), program) == allowed_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("program \"", absl::CHexEscape(program), "\" is not allowed on worker ",
                     context.worker_id(), " (start the worker with --allow-exec ",
                     absl::CHexEscape(program), ")"));
  }
  std::vector<std::string> argv(context.args().begin(), context.args().end());
  bool search_path = program.find('/') == std::string::npos;
  return RunProgram(argv, search_path, context.payload(), context.stop_signal(), limits_);
}

}  // namespace taskq
