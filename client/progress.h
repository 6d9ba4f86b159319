// ProgressLine: the line `taskq submit --wait`, `taskq results` and
// `taskq join` keep redrawn in place on stderr while they wait, when
// stderr is a terminal:
//
//   [#######.............] 37/100 done, 2 failed, 12.3/s, ETA 5s, 3s
//
// (results in / tasks, how many of them failed or were cancelled, results
// per second so far, the time left at that rate, the time since the
// start). A ticker thread redraws it every 200 ms, so the clock moves while
// no result comes; result lines are printed through Print(), which erases
// the line first so that they start at the left edge and never mix with
// it. Finish() draws it a last time and ends it with a newline.
//
// Disabled (ShouldShowProgress false: stderr is not a terminal, or --json,
// or --quiet), it draws nothing, starts no thread, and Print() just prints.
//
// Thread-safety: every method may be called from any thread; draws and
// the prints they wrap are serialised by one mutex.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "common/sync.h"

namespace taskq::cli {

// Whether a progress line belongs on stderr: it is a terminal, and the user
// did not ask for machine output (--json) or silence (--quiet).
bool ShouldShowProgress(bool json, bool quiet);

// The line's text (no control characters) for `width` columns: the bar is
// dropped when the line would not fit, and the rest cut to width - 1.
std::string FormatProgress(size_t done, size_t failed, size_t total, absl::Duration elapsed,
                           size_t width);

class ProgressLine {
 public:
  ProgressLine(size_t total, bool enabled);
  ~ProgressLine();  // Finish()
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // What a Print call counts: a result, a failed (or cancelled) result, a
  // task that will not be waited for (it leaves the total), or nothing.
  enum class Count { kResult, kFailed, kNotWaited, kNothing };
  // Counts as `count` says and runs `print`, which writes its lines, with
  // the progress line erased.
  void Print(Count count, const std::function<void()>& print);
  // Every task waited for has its result: the total becomes the results
  // counted (payloads deduplicated onto one task of the same submission
  // yield one result between them).
  void AllIn();
  // The total as learnt since (`taskq results` reads it from the queue's
  // counters); never below the results counted.
  void SetTotal(size_t total);
  // All three counts at once, for a wait that counts by sampling the
  // master's counters instead of results printed (`taskq join`).
  void Set(size_t done, size_t failed, size_t total);
  // Stops the ticker, draws the final state and ends the line. Idempotent;
  // later Print calls just print.
  void Finish();

 private:
  void Tick();
  void Draw() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Erase() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const absl::Time start_;
  Mutex mu_;
  CondVar changed_;
  bool active_ ABSL_GUARDED_BY(mu_);  // drawing (enabled and not finished)
  bool drawn_ ABSL_GUARDED_BY(mu_) = false;  // the line is on the screen
  size_t total_ ABSL_GUARDED_BY(mu_);
  size_t done_ ABSL_GUARDED_BY(mu_) = 0;
  size_t failed_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread ticker_;  // set in the constructor, joined in Finish
};

}  // namespace taskq::cli
