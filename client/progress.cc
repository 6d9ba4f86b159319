#include "client/progress.h"

#include <algorithm>
#include <cstdio>

#include <sys/ioctl.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli_common.h"

namespace taskq::cli {
namespace {

constexpr absl::Duration kRedrawEvery = absl::Milliseconds(200);
constexpr size_t kBarWidth = 20;

// "850ms" is noise here: "0s", "12s", "4m05s", "2h03m".
std::string ShortDuration(absl::Duration d) {
  const int64_t s = absl::ToInt64Seconds(d);
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
}

size_t TerminalWidth() {
  struct winsize ws {};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

void WriteStderr(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}

}  // namespace

bool ShouldShowProgress(bool json, bool quiet) {
  return !json && !quiet && ::isatty(STDERR_FILENO) == 1;
}

std::string FormatProgress(size_t done, size_t failed, size_t total, absl::Duration elapsed,
                           size_t width) {
  std::string counts = absl::StrCat(done, "/", total, " done, ", failed, " failed");
  const double seconds = absl::ToDoubleSeconds(elapsed);
  if (done > 0 && seconds > 0) {
    const double rate = done / seconds;
    absl::StrAppend(&counts, ", ", rate < 10 ? absl::StrFormat("%.1f", rate)
                                             : absl::StrFormat("%.0f", rate), "/s");
    if (done < total) {
      absl::StrAppend(&counts, ", ETA ", ShortDuration(absl::Seconds((total - done) / rate)));
    }
  }
  absl::StrAppend(&counts, ", ", ShortDuration(elapsed));
  std::string bar;
  if (total > 0) {
    const size_t filled = std::min(kBarWidth, done * kBarWidth / total);
    bar = absl::StrCat("[", std::string(filled, '#'), std::string(kBarWidth - filled, '.'), "] ");
  }
  std::string line = bar.size() + counts.size() < width ? bar + counts : counts;
  // One column spare: a line that fills the last column wraps on some
  // terminals, and a carriage return cannot go back over a wrap.
  if (width > 1 && line.size() > width - 1) line.resize(width - 1);
  return line;
}

ProgressLine::ProgressLine(size_t total, bool enabled)
    : start_(absl::Now()), active_(enabled), total_(total) {
  if (!enabled) return;
  SetStderrGuard([this](const std::function<void()>& write) { Print(Count::kNothing, write); });
  ticker_ = std::thread([this] { Tick(); });
}

ProgressLine::~ProgressLine() { Finish(); }

void ProgressLine::Tick() {
  MutexLock lock(&mu_);
  while (active_) {
    Draw();
    changed_.WaitWithTimeout(&mu_, kRedrawEvery);
  }
}

void ProgressLine::Draw() {
  // Carriage return, the text, erase the rest of the row (a longer
  // previous text).
  WriteStderr(absl::StrCat(
      "\r", FormatProgress(done_, failed_, total_, absl::Now() - start_, TerminalWidth()),
      "\x1b[K"));
  drawn_ = true;
}

void ProgressLine::Erase() {
  if (!drawn_) return;
  WriteStderr("\r\x1b[K");
  drawn_ = false;
}

void ProgressLine::Print(Count count, const std::function<void()>& print) {
  MutexLock lock(&mu_);
  switch (count) {
    case Count::kFailed:
      ++failed_;
      [[fallthrough]];
    case Count::kResult:
      ++done_;
      break;
    case Count::kNotWaited:
      if (total_ > 0) --total_;
      break;
    case Count::kNothing:
      break;
  }
  Erase();  // the ticker draws it again within kRedrawEvery
  print();
}

void ProgressLine::AllIn() {
  MutexLock lock(&mu_);
  total_ = done_;
}

void ProgressLine::SetTotal(size_t total) {
  MutexLock lock(&mu_);
  total_ = std::max(total, done_);
}

void ProgressLine::Set(size_t done, size_t failed, size_t total) {
  MutexLock lock(&mu_);
  done_ = done;
  failed_ = std::min(failed, done);
  total_ = std::max(total, done);
}

void ProgressLine::Finish() {
  {
    MutexLock lock(&mu_);
    if (!active_) return;
    active_ = false;
    changed_.SignalAll();
  }
  ticker_.join();
  SetStderrGuard(nullptr);
  MutexLock lock(&mu_);
  Draw();
  WriteStderr("\n");
  drawn_ = false;
}

}  // namespace taskq::cli
