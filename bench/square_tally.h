// The square workload's bookkeeping for the peers' clients in
// bench/compare.sh (redis, beanstalkd), with taskq-square-bench's checks:
// payload "i" for i in [0, N) must come back as exactly one result
// "i * i = i*i"; missing, duplicated, wrong or unknown results fail the
// run. Also the credit window (at most W tasks put with no result yet) and
// each task's latency from its put to its result.
//
// Thread-safety: all methods may be called from any thread (one mutex);
// producers and the collector of one run share one SquareTally.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "bench/bench_report.h"
#include "common/sync.h"

namespace taskq::bench {

// What a worker computes for a task's payload: "n * n = n*n", or "" when
// the payload is no number (the collector then counts it as wrong).
inline std::string SquareResult(absl::string_view payload) {
  uint64_t n = 0;
  if (!absl::SimpleAtoi(payload, &n)) return "";
  return absl::StrCat(n, " * ", n, " = ", n * n);
}

class SquareTally {
 public:
  SquareTally(uint64_t count, uint64_t window)
      : count_(count), window_(window), put_ns_(count, -1), seen_(count, false) {}

  uint64_t count() const { return count_; }

  // Blocks until `n` more tasks fit in the window; false once aborted.
  bool AcquireWindow(uint64_t n) {
    MutexLock lock(&mu_);
    while (abort_.empty() && in_flight_ + n > window_ && in_flight_ > 0) cv_.Wait(&mu_);
    if (!abort_.empty()) return false;
    in_flight_ += n;
    return true;
  }

  // Tasks [begin, end) were sent at `sent_ns`.
  void RecordPut(uint64_t begin, uint64_t end, int64_t sent_ns) {
    MutexLock lock(&mu_);
    for (uint64_t i = begin; i < end; ++i) put_ns_[i] = sent_ns;
  }

  // Results that arrived at `arrival_ns`.
  void RecordResults(const std::vector<std::string>& results, int64_t arrival_ns) {
    MutexLock lock(&mu_);
    uint64_t fresh = 0;
    for (const std::string& result : results) {
      uint64_t i = 0;
      size_t space = result.find(' ');
      if (!absl::SimpleAtoi(absl::string_view(result).substr(0, space), &i) || i >= count_) {
        if (problems_++ < 5) std::fprintf(stderr, "unexpected result '%s'\n", result.c_str());
        ++unexpected_;
        continue;
      }
      if (seen_[i]) {
        if (problems_++ < 5) std::fprintf(stderr, "duplicated result '%s'\n", result.c_str());
        ++duplicated_;
        continue;
      }
      seen_[i] = true;
      ++received_;
      ++fresh;
      if (result != SquareResult(absl::StrCat(i))) {
        if (problems_++ < 5) std::fprintf(stderr, "wrong result '%s'\n", result.c_str());
        ++wrong_;
        continue;
      }
      if (put_ns_[i] >= 0) latencies_ns_.push_back(arrival_ns - put_ns_[i]);
      last_ns_ = std::max(last_ns_, arrival_ns);
    }
    in_flight_ -= std::min(in_flight_, fresh);
    if (fresh > 0) cv_.SignalAll();
  }

  bool Done() {
    MutexLock lock(&mu_);
    return received_ >= count_ || !abort_.empty();
  }

  // Stops the producer and the collector; the first reason wins.
  void Abort(std::string reason) {
    MutexLock lock(&mu_);
    if (abort_.empty()) abort_ = std::move(reason);
    cv_.SignalAll();
  }

  // Prints the problems (stderr) and returns whether every task had its
  // one right result. Call after the producer and collector ended.
  bool Check(const char* what) {
    MutexLock lock(&mu_);
    uint64_t missing = count_ - received_;
    if (!abort_.empty()) std::fprintf(stderr, "%s aborted: %s\n", what, abort_.c_str());
    if (missing + duplicated_ + wrong_ + unexpected_ > 0) {
      std::fprintf(stderr, "%s FAILED: missing=%llu duplicated=%llu wrong=%llu unexpected=%llu\n",
                   what, static_cast<unsigned long long>(missing),
                   static_cast<unsigned long long>(duplicated_),
                   static_cast<unsigned long long>(wrong_),
                   static_cast<unsigned long long>(unexpected_));
    }
    return abort_.empty() && missing == 0 && duplicated_ == 0 && wrong_ == 0 &&
           unexpected_ == 0;
  }

  // When the last right result arrived (NowNs clock), and the latencies.
  int64_t last_ns() {
    MutexLock lock(&mu_);
    return last_ns_;
  }
  std::vector<int64_t> TakeLatencies() {
    MutexLock lock(&mu_);
    return std::move(latencies_ns_);
  }

 private:
  const uint64_t count_;
  const uint64_t window_;
  Mutex mu_;
  CondVar cv_;
  uint64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int64_t> put_ns_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> seen_ ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> latencies_ns_ ABSL_GUARDED_BY(mu_);
  uint64_t received_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t duplicated_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t wrong_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t unexpected_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t problems_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_ns_ ABSL_GUARDED_BY(mu_) = 0;
  std::string abort_ ABSL_GUARDED_BY(mu_);
};


// A collector's stall check: DEADLINE_EXCEEDED once no result has come for
// `seconds`. Used by one thread.
class StallWatch {
 public:
  explicit StallWatch(uint64_t seconds)
      : seconds_(seconds), limit_ns_(static_cast<int64_t>(seconds) * 1'000'000'000),
        last_ns_(NowNs()) {}
  // After each poll: `progressed` if it brought results (at `now_ns`).
  absl::Status Check(bool progressed, int64_t now_ns) {
    if (progressed) {
      last_ns_ = now_ns;
    } else if (now_ns - last_ns_ > limit_ns_) {
      return absl::DeadlineExceededError(absl::StrCat("no result for ", seconds_, " s"));
    }
    return absl::OkStatus();
  }

 private:
  uint64_t seconds_;
  int64_t limit_ns_;
  int64_t last_ns_;
};

// One side of a run (the producer or the collector), on its own thread
// with its own connection. An error aborts the run.
using SquareSide = std::function<absl::Status(SquareTally&)>;

// Runs `warmup` tasks (checked, not measured), then `tasks` measured ones,
// each phase with a fresh tally: `produce` and `collect` on two threads.
// Prints the measured phase's RESULT line; true if both phases passed.
inline bool RunSquarePhases(uint64_t warmup, uint64_t tasks, uint64_t window,
                            const SquareSide& produce, const SquareSide& collect) {
  for (int phase = warmup > 0 ? 0 : 1; phase < 2; ++phase) {
    SquareTally tally(phase == 0 ? warmup : tasks, window);
    int64_t start_ns = NowNs();
    auto side = [&tally](const SquareSide& run) {
      if (absl::Status s = run(tally); !s.ok()) tally.Abort(std::string(s.message()));
    };
    std::thread producer(side, produce);
    side(collect);
    producer.join();
    bool ok = tally.Check(phase == 0 ? "warmup" : "run");
    if (phase == 0 && !ok) return false;
    if (phase == 1) {
      std::vector<int64_t> latencies = tally.TakeLatencies();
      int64_t elapsed_ns = std::max<int64_t>(0, tally.last_ns() - start_ns);
      PrintResult(tasks, static_cast<double>(elapsed_ns) / 1e9, latencies, ok);
      return ok;
    }
  }
  return false;
}

}  // namespace taskq::bench
