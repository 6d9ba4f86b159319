#include "client/top_terminal.h"

#include <cerrno>
#include <csignal>
#include <cstring>

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace taskq::cli {
namespace {

constexpr char kEnterScreen[] = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J";  // alternate screen, hide cursor
constexpr char kLeaveScreen[] = "\x1b[?25h\x1b[?1049l";              // show cursor, main screen

// The SIGWINCH self-pipe: the handler (any thread) writes a byte, the
// drawing thread polls the read end. One screen at a time.
int winch_pipe[2] = {-1, -1};
struct sigaction saved_winch {};

void OnWinch(int) {
  const int saved_errno = errno;
  const char byte = 'w';
  [[maybe_unused]] ssize_t n = ::write(winch_pipe[1], &byte, 1);  // full pipe: a wake-up is pending
  errno = saved_errno;
}

absl::Status WatchResizes() {
  if (::pipe2(winch_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  struct sigaction action {};
  action.sa_handler = OnWinch;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ::sigaction(SIGWINCH, &action, &saved_winch);
  return absl::OkStatus();
}

void StopWatchingResizes() {
  if (winch_pipe[0] < 0) return;
  ::sigaction(SIGWINCH, &saved_winch, nullptr);
  ::close(winch_pipe[0]);
  ::close(winch_pipe[1]);
  winch_pipe[0] = winch_pipe[1] = -1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TerminalScreen>> TerminalScreen::Enter(int in_fd, int out_fd) {
  if (::isatty(out_fd) != 1) return absl::FailedPreconditionError("output is not a terminal");
  std::unique_ptr<TerminalScreen> screen(new TerminalScreen(in_fd, out_fd));
  if (absl::Status s = WatchResizes(); !s.ok()) return s;
  MutexLock lock(&screen->mu_);
  if (::isatty(in_fd) == 1 && ::tcgetattr(in_fd, &screen->saved_in_) == 0) {
    termios raw = screen->saved_in_;
    // cbreak: each key as typed, not echoed; ISIG stays on, so Ctrl-C is
    // still SIGINT (which restores the terminal on its way out).
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    // No Ctrl-Z or Ctrl-\: a stopped or core-dumped top would leave the
    // terminal in this mode.
    raw.c_cc[VSUSP] = _POSIX_VDISABLE;
    raw.c_cc[VQUIT] = _POSIX_VDISABLE;
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    if (::tcsetattr(in_fd, TCSANOW, &raw) == 0) {
      screen->in_cbreak_ = true;
      screen->reads_keys_ = true;
    }
  }
  screen->active_ = true;
  screen->Write(kEnterScreen);
  return screen;
}

TerminalScreen::~TerminalScreen() {
  Restore();
  StopWatchingResizes();
}

void TerminalScreen::Restore() {
  MutexLock lock(&mu_);
  if (active_) {
    Write(kLeaveScreen);
    active_ = false;
  }
  if (in_cbreak_) {
    ::tcsetattr(in_fd_, TCSANOW, &saved_in_);
    in_cbreak_ = false;
  }
}

TerminalScreen::Size TerminalScreen::size() const {
  Size size;
  struct winsize ws {};
  if (::ioctl(out_fd_, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
    size.columns = ws.ws_col;
    size.rows = ws.ws_row;
  }
  return size;
}

void TerminalScreen::Draw(const std::vector<std::string>& lines) {
  std::string frame = "\x1b[H";  // cursor home
  for (size_t i = 0; i < lines.size(); ++i) {
    // Each line clears what a longer previous line left; no newline after
    // the last, which could scroll a full screen.
    absl::StrAppend(&frame, lines[i], "\x1b[K", i + 1 < lines.size() ? "\r\n" : "");
  }
  frame += "\x1b[J";  // clear below
  MutexLock lock(&mu_);
  if (active_) Write(frame);
}

TerminalScreen::Input TerminalScreen::WaitForInput(absl::Duration timeout) {
  Input input;
  pollfd fds[2] = {{winch_pipe[0], POLLIN, 0}, {reads_keys_ ? in_fd_ : -1, POLLIN, 0}};
  const int64_t ms = timeout <= absl::ZeroDuration() ? 0 : absl::ToInt64Milliseconds(
                                                               timeout + absl::Microseconds(999));
  if (::poll(fds, 2, static_cast<int>(std::min<int64_t>(ms, 60'000))) <= 0) return input;
  char buf[64];
  if (fds[0].revents & POLLIN) {
    while (::read(winch_pipe[0], buf, sizeof buf) > 0) {
    }
    input.resized = true;
  }
  if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
    const ssize_t n = ::read(in_fd_, buf, sizeof buf);
    if (n > 0) {
      input.keys.assign(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      reads_keys_ = false;  // the terminal went away: keep showing, stop reading
    }
  }
  return input;
}

void TerminalScreen::Write(const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(out_fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the terminal is gone; nothing useful to do
    done += static_cast<size_t>(n);
  }
}

}  // namespace taskq::cli
