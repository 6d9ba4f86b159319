// TerminalScreen: a full-screen view on a terminal for `taskq top`.
//
// Enter() switches the terminal to the alternate screen with the cursor
// hidden and, when stdin is a terminal, to cbreak mode (no echo, keys
// readable one at a time; Ctrl-C still raises SIGINT). Restore() puts back
// the terminal modes, the cursor and the screen the user had; the
// destructor calls it, and `taskq top` also calls it from its Ctrl-C /
// SIGTERM cleanup (client/interrupt.h), so that every way out restores it.
// Draw() repaints in place: cursor home, each line cleared to its end,
// then the rest of the screen cleared (no flicker, no scrolling).
// WaitForInput() waits for keys or a window size change (SIGWINCH, caught
// through a self-pipe while the screen is entered).
//
// Thread-safety: Restore() may be called from any thread, also while
// another thread draws (Draw and Restore are serialised; Draw after
// Restore does nothing). The other methods are for one thread.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <termios.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/sync.h"

namespace taskq::cli {

class TerminalScreen {
 public:
  // `out_fd` must be a terminal; keys are read from `in_fd` if it is one.
  static absl::StatusOr<std::unique_ptr<TerminalScreen>> Enter(int in_fd, int out_fd);
  ~TerminalScreen();
  TerminalScreen(const TerminalScreen&) = delete;
  TerminalScreen& operator=(const TerminalScreen&) = delete;

  void Restore();

  struct Size {
    size_t columns = 80;
    size_t rows = 24;
  };
  // The window size now (TIOCGWINSZ); 80x24 if the terminal does not say.
  Size size() const;

  // Replaces what is on the screen with `lines` (each must fit a row).
  void Draw(const std::vector<std::string>& lines);

  struct Input {
    std::string keys;      // bytes typed, in order (escape sequences included)
    bool resized = false;  // the window changed size
  };
  // Returns as soon as there is input or a resize, or after `timeout`.
  Input WaitForInput(absl::Duration timeout);

 private:
  TerminalScreen(int in_fd, int out_fd) : in_fd_(in_fd), out_fd_(out_fd) {}
  void Write(const std::string& bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int in_fd_;
  const int out_fd_;
  bool reads_keys_ = false;  // WaitForInput reads in_fd_ (its thread only)
  termios saved_in_{};       // in_fd_'s modes before Enter
  Mutex mu_;
  bool active_ ABSL_GUARDED_BY(mu_) = false;     // the alternate screen is up
  bool in_cbreak_ ABSL_GUARDED_BY(mu_) = false;  // saved_in_ must be put back
};

}  // namespace taskq::cli
