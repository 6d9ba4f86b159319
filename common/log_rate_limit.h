// LogRateLimiter: decides per call site (source file + line) whether a log
// line is written. Each site may write `max_lines` lines per `interval`
// (a window that starts with its first line); further lines in the window
// are counted, not written, and once the window is over the site owes one
// summary ("N similar lines suppressed"). Owed summaries are handed out by
// the next Admit of any site after the window ends, or by Flush (at exit).
//
// A fixed table of sites (kSites); a site beyond it shares a slot with
// others that hash alike, so the limit still holds, just more coarsely.
//
// Thread-safety: safe from any thread (one mutex).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "absl/time/time.h"
#include "common/sync.h"

namespace taskq {

class LogRateLimiter {
 public:
  // A summary owed by a call site.
  struct Summary {
    const char* file = nullptr;
    int line = 0;
    int level = 0;  // the LogLevel of the site's last suppressed line
    uint64_t suppressed = 0;
    absl::Duration window;  // how long the window it covers was
  };

  // max_lines 0 = every line is written.
  LogRateLimiter(int max_lines, absl::Duration interval);

  // Counts a line of `level` from (file, line) at `now`; true if it is to
  // be written. Appends to `due` the summaries owed by sites whose window
  // is over (to be written before this line).
  bool Admit(const char* file, int line, int level, absl::Time now, std::vector<Summary>* due);
  // Every owed summary, also of windows not over yet (at exit).
  std::vector<Summary> Flush();

 private:
  static constexpr size_t kSites = 512;
  struct Site {
    const char* file = nullptr;
    int line = 0;
    int level = 0;
    absl::Time window_start;
    int lines_in_window = 0;
    uint64_t suppressed = 0;
  };

  Site& SlotFor(const char* file, int line) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves `site`'s owed summary (if any) into `due` and starts no window.
  void TakeSummary(Site& site, absl::Time now, std::vector<Summary>* due)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int max_lines_;
  const absl::Duration interval_;
  Mutex mu_;
  std::array<Site, kSites> sites_ ABSL_GUARDED_BY(mu_);
  // Sites with suppressed > 0: while none, Admit skips the sweep.
  int owing_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace taskq
