// TimerQueue: the pending timers of one IoDriver, ordered by deadline.
//
// Why a 4-ary min-heap with index-tracked entries (and not a hierarchical
// timing wheel):
//  - every operation is O(log n) with a small constant: 100k timers are ~9
//    levels of a 4-ary heap; insert and cancel (remove at a known index)
//    never search, and the earliest deadline is at the front, which is all
//    the reactor needs to compute its epoll timeout;
//  - deadlines are exact (nanoseconds on the monotonic clock): no tick
//    granularity, no cascading, no "far future" overflow level to tune;
//  - the heap array stores the deadline next to the node pointer, so sifting
//    compares within one contiguous array (4 children share a cache line or
//    two) without touching the nodes;
//  - equal deadlines fire in insertion order (a sequence number breaks
//    ties), which keeps "sleep(d) then sleep(d)" ordered.
// A wheel would make insert/cancel O(1), but at the ~100k scale the heap's
// ~10 compares per operation are tens of nanoseconds, and it keeps firing
// order exact.
//
// The clock is std::chrono::steady_clock (monotonic): a timer fires after
// its duration has elapsed even if the wall clock is stepped. Wall-clock
// deadlines (absl::Time) are converted once, when the timer is inserted, by
// "remaining = deadline - absl::Now()" (MonotonicDeadline).
//
// Thread-safety: not thread-safe. A TimerQueue and the TimerNodes in it are
// guarded by their owner's lock (IoDriver::mu_).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/time/time.h"

namespace taskq::rt {

// Nanoseconds on std::chrono::steady_clock.
using MonoNanos = int64_t;
inline constexpr MonoNanos kMonoNever = std::numeric_limits<int64_t>::max();

MonoNanos MonotonicNow();
// now + d, saturating (an infinite or huge duration gives kMonoNever).
MonoNanos MonotonicAfter(absl::Duration d, MonoNanos now = MonotonicNow());
// The monotonic instant at which the wall-clock `deadline` is reached,
// assuming the wall clock does not jump (InfiniteFuture: kMonoNever).
MonoNanos MonotonicDeadline(absl::Time deadline);

// An entry in a TimerQueue; embedded in whatever waits (an awaiter, a
// callback timer). The owner sets `when` (and its own `kind`/`owner` tags,
// which the queue ignores) before Insert; the queue maintains the rest.
struct TimerNode {
  static constexpr size_t kNotQueued = std::numeric_limits<size_t>::max();

  MonoNanos when = 0;
  int kind = 0;                  // owner's tag: what `owner` points at
  void* owner = nullptr;
  uint64_t seq = 0;              // insertion order: tie-break for equal `when`
  size_t index = kNotQueued;     // position in the heap, or kNotQueued
  bool queued() const { return index != kNotQueued; }
};

class TimerQueue {
 public:
  TimerQueue() = default;
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  // Adds `node` (not already queued) at node->when. O(log n).
  // Returns true if it is now the earliest timer.
  bool Insert(TimerNode* node);
  // Removes `node` if queued; returns whether it was. O(log n).
  bool Remove(TimerNode* node);
  // The earliest node, or nullptr.
  TimerNode* Top() const { return heap_.empty() ? nullptr : heap_.front().node; }
  MonoNanos TopWhen() const { return heap_.empty() ? kMonoNever : heap_.front().when; }
  // Removes and returns the earliest node if its deadline is <= now.
  TimerNode* PopExpired(MonoNanos now);
  // Removes and returns the earliest node (nullptr if empty).
  TimerNode* Pop();

  size_t size() const { return heap_.size(); }
  bool empty() const { return heap_.empty(); }

 private:
  struct Slot {
    MonoNanos when;
    uint64_t seq;
    TimerNode* node;
  };
  static bool Before(const Slot& a, const Slot& b) {
    return a.when < b.when || (a.when == b.when && a.seq < b.seq);
  }
  void Place(size_t i, const Slot& s) {
    heap_[i] = s;
    s.node->index = i;
  }
  void SiftUp(size_t i);
  void SiftDown(size_t i);
  void RemoveAt(size_t i);

  std::vector<Slot> heap_;
  uint64_t next_seq_ = 0;
};

}  // namespace taskq::rt
